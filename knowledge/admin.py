"""Operators' knowledge admin: collections, documents (multi-file upload, re-index, delete), jobs, index status.

Every write goes through knowledge.services, so the admin keeps the database and
the search index together exactly like the REST API does.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from config.errors import NotFound
from knowledge.errors import KnowledgeError
from knowledge.models import Chunk, Collection, Document, Job
from knowledge.parsing import SUPPORTED_TYPES
from knowledge.search import get_search_backend
from knowledge.selectors import writable_collections
from knowledge.services import (
    UploadFile,
    UploadRejected,
    collection_delete,
    document_delete,
    document_request_reindex,
    document_update_metadata,
    document_upload_many,
    index_generation_advance,
    index_reconcile,
)

_STATUS_COLOURS = {"pending": "#8a6d00", "indexing": "#1f5fa8", "indexed": "#21793a", "failed": "#b42318"}


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_public", "document_count", "updated_at"]
    list_filter = ["is_public"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["readers", "reader_groups"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_documents=Count("documents"))

    @admin.display(description=_("documents"), ordering="_documents")
    def document_count(self, obj: Collection) -> int:
        return obj._documents

    def delete_model(self, request, obj: Collection) -> None:
        collection_delete(collection=obj)

    def save_related(self, request, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change and {"is_public", "readers", "reader_groups"} & set(form.changed_data):
            # Who may read it changed: answers cached over it must not be served to the others.
            index_generation_advance(reason=f"collection {form.instance.pk} access")

    def delete_queryset(self, request, queryset) -> None:
        for collection in queryset:
            collection_delete(collection=collection)


class ChunkInline(admin.TabularInline):
    model = Chunk
    fields = ["ordinal", "preview", "token_count", "char_start", "char_end", "embedding_model"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    classes = ["collapse"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("embedding")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("text"))
    def preview(self, obj: Chunk) -> str:
        return obj.text if len(obj.text) <= 300 else obj.text[:300] + " …"


class JobInline(admin.TabularInline):
    model = Job
    fields = ["kind", "status", "progress", "message", "attempts", "error", "created_at", "finished_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ",".join(f".{t}" for t in SUPPORTED_TYPES)}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data]
        return [single(data, initial)]


class UploadForm(forms.Form):
    collection = forms.ModelChoiceField(queryset=Collection.objects.none())
    files = MultipleFileField(
        help_text=_("One or more .txt, .md, .html, .pdf or .docx files (max %(mb)s MiB each).")
        % {"mb": settings.KNOWLEDGE_MAX_UPLOAD_BYTES // 1_048_576}
    )
    source = forms.CharField(required=False, max_length=300)
    category = forms.CharField(required=False, max_length=100)
    language = forms.ChoiceField(required=False, choices=[("", _("detect")), ("ko", "한국어"), ("en", "English")])
    timestamp = forms.DateTimeField(required=False, label=_("document date"), help_text="YYYY-MM-DD HH:MM")

    def __init__(self, *args, collections=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if collections is not None:
            self.fields["collection"].queryset = collections


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["display_title", "collection", "status_badge", "chunk_count", "file_type", "category", "updated_at"]
    list_filter = ["status", "collection", "file_type", "category", "language"]
    search_fields = ["title", "original_filename", "source", "category", "content_hash", "external_id"]
    list_select_related = ["collection"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "collection", "external_id", "file", "original_filename", "file_type", "size_bytes", "content_hash",
        "status_badge", "error", "chunk_count", "embedding_model", "indexed_at", "created_by", "created_at",
        "updated_at",
    ]  # fmt: skip
    fields = ["title", "source", "category", "language", "timestamp", *readonly_fields]
    inlines = [JobInline, ChunkInline]
    actions = ["reindex_documents", "delete_documents"]
    change_list_template = "admin/knowledge/document/change_list.html"

    @admin.display(description=_("title"), ordering="title")
    def display_title(self, obj: Document) -> str:
        return obj.display_title

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Document) -> str:
        colour = _STATUS_COLOURS.get(obj.status, "#555")
        badge = format_html('<b style="color:{}">{}</b>', colour, obj.get_status_display())
        if obj.status == Document.Status.FAILED and obj.error:
            return format_html('{} <span title="{}">⚠</span>', badge, obj.error[:500])
        return badge

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Django's bulk delete would skip the index; ours goes through the service.
        actions.pop("delete_selected", None)
        return actions

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("upload/", self.admin_site.admin_view(self.upload_view), name="{}_{}_upload".format(*info)),
            path("index-status/", self.admin_site.admin_view(self.index_status_view), name="{}_{}_index".format(*info)),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        # Documents are created by uploading files (one or many), never by a bare form.
        return redirect("admin:knowledge_document_upload")

    def save_model(self, request, obj: Document, form, change: bool) -> None:
        changed = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
        if changed:
            try:
                document_update_metadata(document=obj, **changed)
            except NotFound as exc:  # deleted by someone else while this form was open
                self.message_user(request, str(exc), messages.ERROR)

    def delete_model(self, request, obj: Document) -> None:
        document_delete(document=obj)

    @admin.action(description=_("Re-index selected documents"), permissions=["change"])
    def reindex_documents(self, request, queryset) -> None:
        queued = sum(document_request_reindex(document=document) is not None for document in queryset)
        self.message_user(request, _("%(n)d re-index job(s) queued.") % {"n": queued}, messages.SUCCESS)

    @admin.action(description=_("Delete selected documents (and their index entries)"), permissions=["delete"])
    def delete_documents(self, request, queryset) -> None:
        count = 0
        for document in queryset:
            document_delete(document=document)
            count += 1
        self.message_user(request, _("%(n)d document(s) deleted.") % {"n": count}, messages.SUCCESS)

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        collections = Collection.objects.filter(id__in=writable_collections(request.user))
        form = UploadForm(request.POST or None, request.FILES or None, collections=collections)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            files = [
                UploadFile(
                    filename=f.name,
                    data=f.read(),
                    content_type=f.content_type,
                    source=data["source"],
                    category=data["category"],
                    language=data["language"],
                    timestamp=data["timestamp"],
                )
                for f in data["files"]
            ]
            try:
                results = document_upload_many(collection=data["collection"], files=files, user=request.user)
            except UploadRejected as exc:
                for name, error in exc.errors:
                    form.add_error("files", f"{name}: {error}")
            else:
                created = sum(r.created for r in results)
                self.message_user(
                    request,
                    _("%(new)d file(s) queued for ingestion, %(dup)d already in the collection.")
                    % {"new": created, "dup": len(results) - created},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:knowledge_document_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Upload documents"),
            "form": form,
            "jobs_inline": settings.KNOWLEDGE_JOBS_INLINE,
        }
        return TemplateResponse(request, "admin/knowledge/upload.html", context)

    def index_status_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        backend = get_search_backend()
        if request.method == "POST" and self.has_change_permission(request):
            try:
                fixed = index_reconcile(backend=backend)
                self.message_user(request, _("%(n)d document(s) repaired in the index.") % {"n": fixed})
            except KnowledgeError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.path)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Search index status"),
            "backend_name": backend.name,
            "db_documents": Document.objects.count(),
            "db_indexed": Document.objects.filter(status=Document.Status.INDEXED).count(),
            "db_chunks": Chunk.objects.count(),
            "status_counts": dict(Document.objects.values_list("status").annotate(n=Count("id"))),
            "queued_jobs": Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).count(),
            "now": timezone.now(),
        }
        try:
            from inference.services import embedding_dim, embedding_model_name

            context["expected_model"] = f"{embedding_model_name()} ({embedding_dim()} dims)"
            info = backend.info()
            context["info"] = info
            if info.concrete_index:
                in_index = backend.document_chunk_counts()
                expected = dict(
                    Chunk.objects.values("document_id").annotate(n=Count("id")).values_list("document_id", "n")
                )
                ids = set(in_index) | set(expected)
                titles = dict(Document.objects.filter(pk__in=ids).values_list("pk", "title"))
                context["mismatches"] = [
                    {
                        "id": d,
                        "title": titles.get(d, "— deleted —"),
                        "db": expected.get(d, 0),
                        "index": in_index.get(d, 0),
                    }
                    for d in sorted(ids)
                    if expected.get(d, 0) != in_index.get(d, 0)
                ][:200]
        except KnowledgeError as exc:
            context["error"] = str(exc)
        return TemplateResponse(request, "admin/knowledge/index_status.html", context)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "document",
        "status",
        "progress_bar",
        "attempts",
        "message",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["message", "error", "document__title", "document__original_filename"]
    list_select_related = ["document"]
    readonly_fields = [f.name for f in Job._meta.fields]
    actions = ["retry_now"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description=_("progress"))
    def progress_bar(self, obj: Job) -> str:
        return format_html('<progress max="100" value="{}"></progress> {}%', obj.progress, obj.progress)

    @admin.action(description=_("Retry now"), permissions=["change"])
    def retry_now(self, request, queryset) -> None:
        n = queryset.exclude(status__in=[Job.Status.RUNNING, Job.Status.DONE]).update(
            status=Job.Status.QUEUED, run_after=timezone.now(), attempts=0, message="queued again by an operator"
        )
        self.message_user(request, _("%(n)d job(s) queued again.") % {"n": n})
