"""Input and output shapes of the knowledge REST API (one schema object each: it validates and documents)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from knowledge.api.base import PageQuery
from knowledge.errors import InvalidUpload
from knowledge.models import Collection, Document, Job
from knowledge.services import EXTERNAL_ID_PATTERN, TEXT_FORMATS

# --- public error text ------------------------------------------------------------------------

# "<code>: <message>" as recorded for a failure (knowledge.errors codes).
_CODED = re.compile(r"^([a-z][a-z_]{2,40}): (.+)")
_RETRYING = re.compile(r"^(attempt \d+ failed, retrying in [\d.]+s)")


def _caller_fault_codes() -> frozenset[str]:
    """Codes of InvalidUpload and its subclasses: the file's own faults, whose messages are written for the caller."""
    codes, pending = set(), [InvalidUpload]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return frozenset(codes)


def public_error(text: str) -> str:
    """What a document's or job's recorded error may show an integrator.

    A fault of the file itself is recorded as ``code: message`` and shown as it is (the
    message is written for the uploader). Anything else (a search engine or embedding
    failure, an exception of ours) may carry internal detail (addresses, upstream messages,
    a traceback): only its code, or a summary, is shown; operators read the rest in the admin.
    """
    first = text.strip().splitlines()[0] if text and text.strip() else ""
    if not first:
        return ""
    if m := _RETRYING.match(first):
        return f"{m.group(1)} (a service the ingestion needs failed)"
    m = _CODED.match(first)
    if m and m.group(1) in _caller_fault_codes():
        return f"{m.group(1)}: {m.group(2)}"[:1000]
    if m:
        return f"{m.group(1)}: the ingestion failed on our side; operators see the detail in the admin"
    return "internal_error: the ingestion failed on our side; operators see the detail in the admin"


def absolute(request: Any, path: str) -> str:
    return request.build_absolute_uri(path) if request is not None else path


# --- collections -----------------------------------------------------------------------------


class CollectionOut(serializers.ModelSerializer):
    # Not a SlugField here: its schema pattern (\w) means ASCII to most validators, and slugs may be Korean.
    slug = serializers.CharField(read_only=True)
    document_count = serializers.IntegerField(read_only=True, help_text="Documents in the collection.")
    indexed_count = serializers.IntegerField(read_only=True, help_text="Of which searchable (status indexed).")

    class Meta:
        model = Collection
        fields = ["id", "name", "slug", "description", "is_public", "document_count", "indexed_count"]


class CollectionIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(
        max_length=100, required=False, allow_unicode=True, help_text="Default: made from the name. Cannot change."
    )
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    is_public = serializers.BooleanField(
        required=False, default=False, help_text="Readable by anyone, including anonymous browser chat."
    )


class CollectionPatchIn(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    is_public = serializers.BooleanField(required=False)


# --- jobs ------------------------------------------------------------------------------------


class JobOut(serializers.ModelSerializer):
    document_id = serializers.IntegerField(allow_null=True, read_only=True)
    error = serializers.SerializerMethodField(help_text="Why it failed (empty unless it did).")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "kind", "status", "progress", "message", "error", "attempts", "max_attempts", "document_id",
            "created_at", "started_at", "finished_at", "run_after", "url",
        ]  # fmt: skip

    def get_error(self, obj: Job) -> str:
        return public_error(obj.error)

    def get_url(self, obj: Job) -> str:
        return absolute(self.context.get("request"), reverse("knowledge:job-detail", args=[obj.pk]))


class JobLinkOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Job.Status.choices)
    url = serializers.URLField(help_text="Poll it: GET returns the job's progress.")


# --- documents -------------------------------------------------------------------------------


class DocumentOut(serializers.ModelSerializer):
    collection = serializers.SlugRelatedField(slug_field="slug", read_only=True, help_text="The collection's slug.")
    collection_id = serializers.IntegerField(read_only=True)
    error = serializers.SerializerMethodField(help_text="Why ingestion failed (with status failed), or is retrying.")
    latest_job = serializers.SerializerMethodField(help_text="The newest ingestion or re-index job, or null.")
    # In UTC: a date before 1908 in Asia/Seoul has a local-mean-time offset with seconds (+08:27:52),
    # which is not RFC 3339.
    timestamp = serializers.DateTimeField(read_only=True, allow_null=True, default_timezone=dt.UTC)
    url = serializers.SerializerMethodField(help_text="The document's page (what citations link to).")

    class Meta:
        model = Document
        fields = [
            "id", "collection", "collection_id", "external_id", "title", "source", "category", "language",
            "timestamp", "original_filename", "file_type", "size_bytes", "content_hash", "status", "error",
            "chunk_count", "embedding_model", "indexed_at", "created_at", "updated_at", "latest_job", "url",
        ]  # fmt: skip

    def get_error(self, obj: Document) -> str:
        return public_error(obj.error)

    @extend_schema_field(JobLinkOut(allow_null=True))
    def get_latest_job(self, obj: Document) -> dict[str, Any] | None:
        if hasattr(obj, "latest_job_id"):  # annotated by knowledge.selectors.document_list
            job_id, job_status = obj.latest_job_id, obj.latest_job_status
        else:
            job = obj.jobs.order_by("-created_at", "-pk").values("pk", "status").first()
            job_id, job_status = (job["pk"], job["status"]) if job else (None, None)
        if job_id is None:
            return None
        url = absolute(self.context.get("request"), reverse("knowledge:job-detail", args=[job_id]))
        return {"id": job_id, "status": job_status, "url": url}

    def get_url(self, obj: Document) -> str:
        return absolute(self.context.get("request"), obj.get_absolute_url())


class DocumentListQuery(PageQuery):
    collection = serializers.CharField(required=False, help_text="Collection id or slug.")
    status = serializers.ChoiceField(required=False, choices=Document.Status.choices)
    category = serializers.CharField(required=False, max_length=100)
    source = serializers.CharField(required=False, max_length=300)
    updated_since = serializers.DateTimeField(
        required=False, help_text="Only documents changed at or after this time (ISO 8601), for incremental syncs."
    )
    external_id = serializers.CharField(required=False, max_length=200)


class MetadataIn(serializers.Serializer):
    title = serializers.CharField(required=False, allow_blank=True, max_length=300)
    source = serializers.CharField(required=False, allow_blank=True, max_length=300)
    category = serializers.CharField(required=False, allow_blank=True, max_length=100)
    language = serializers.ChoiceField(required=False, allow_blank=True, choices=["", "ko", "en"])
    timestamp = serializers.DateTimeField(required=False, allow_null=True, help_text="The document's own date.")


class MetadataPatchIn(MetadataIn):
    external_id = serializers.RegexField(
        EXTERNAL_ID_PATTERN,
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="Your id for the document, unique in its collection; blank removes it.",
    )


class UploadMetaIn(MetadataIn):
    collection = serializers.CharField(help_text="Collection id or slug.")


class UploadIn(UploadMetaIn):
    """The documented form; files are read from request.FILES and checked by the service
    (so an empty or bad file gets its own error code, not a generic field error)."""

    files = serializers.ListField(
        child=serializers.FileField(), required=False, help_text="One or more files (.txt .md .html .pdf .docx)."
    )
    file = serializers.FileField(required=False, help_text="A single file (alternative to files).")


class TextIn(MetadataIn):
    text = serializers.CharField(
        trim_whitespace=False,
        help_text="The document's content (UTF-8; up to KNOWLEDGE_MAX_UPLOAD_MB, and 2.5 MB of JSON body).",
    )
    format = serializers.ChoiceField(
        choices=sorted(TEXT_FORMATS), default="text", help_text="How the text is written: plain text or Markdown."
    )

    def validate_text(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The text is empty.")
        if len(value.encode()) > settings.KNOWLEDGE_MAX_UPLOAD_BYTES:
            raise serializers.ValidationError(f"At most {settings.KNOWLEDGE_MAX_UPLOAD_BYTES} bytes (UTF-8).")
        return value


class TextDocumentIn(TextIn):
    collection = serializers.CharField(help_text="Collection id or slug.")


class SyncFileIn(MetadataIn):
    file = serializers.FileField(help_text="The document's file (.txt .md .html .pdf .docx).")


class UploadResultOut(serializers.Serializer):
    document = DocumentOut()
    created = serializers.BooleanField(help_text="False: the same bytes were already in the collection.")
    job_id = serializers.IntegerField(allow_null=True, help_text="The ingestion job, or null when nothing was queued.")


class SyncResultOut(UploadResultOut):
    created = serializers.BooleanField(help_text="True: a new document for this external id.")
    changed = serializers.BooleanField(help_text="False: same bytes and metadata as stored; nothing was done.")


# --- search ----------------------------------------------------------------------------------


class SearchIn(serializers.Serializer):
    query = serializers.CharField(max_length=2000, trim_whitespace=True)
    top_k = serializers.IntegerField(
        required=False, default=5, min_value=1, help_text="Results, at most KNOWLEDGE_MAX_TOP_K (default 50)."
    )
    collections = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        max_length=100,
        help_text="Collection ids or slugs (default: all readable).",
    )
    source = serializers.CharField(required=False, allow_blank=True)
    category = serializers.CharField(required=False, allow_blank=True)
    date_from = serializers.DateTimeField(required=False)
    date_to = serializers.DateTimeField(required=False)
    rerank = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate_top_k(self, value: int) -> int:
        # Read per request: KNOWLEDGE_MAX_TOP_K may differ from its value at import (tests, reloads).
        if value > settings.KNOWLEDGE_MAX_TOP_K:
            raise serializers.ValidationError(f"at most {settings.KNOWLEDGE_MAX_TOP_K}")
        return value


class SearchHitOut(serializers.Serializer):
    """A ``RetrievedChunk``, flattened: the chunk's fields next to its score and ranks."""

    chunk_id = serializers.IntegerField(source="chunk.chunk_id")
    document_id = serializers.IntegerField(source="chunk.document_id")
    collection_id = serializers.IntegerField(source="chunk.collection_id")
    ordinal = serializers.IntegerField(source="chunk.ordinal")
    text = serializers.CharField(source="chunk.text")
    score = serializers.FloatField()
    title = serializers.CharField(source="chunk.title")
    source = serializers.CharField(source="chunk.source")
    category = serializers.CharField(source="chunk.category")
    language = serializers.CharField(source="chunk.language")
    url = serializers.CharField()
    timestamp = serializers.DateTimeField(source="chunk.timestamp", allow_null=True, default_timezone=dt.UTC)
    lexical_rank = serializers.IntegerField(allow_null=True)
    semantic_rank = serializers.IntegerField(allow_null=True)


class SearchOut(serializers.Serializer):
    results = SearchHitOut(many=True)
    backend = serializers.CharField()
    took_ms = serializers.FloatField()
