"""Admin: read-only conversation transcripts (with citations and feedback) and the ChatSettings singleton."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from chat.markdown import render_markdown
from chat.models import ChatSettings, Conversation, CuratedReply, Feedback, Message
from chat.services.curated_replies import curated_reply_save


class ReadOnlyAdmin(admin.ModelAdmin):
    """Transcripts are records: operators read them, the chat writes them."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _citations_html(message: Message):
    if not message.citations:
        return "—"
    return format_html(
        "<ol>{}</ol>",
        format_html_join(
            "",
            '<li{}><a href="{}" target="_blank" rel="noopener">{}</a> <small>(doc {}, score {})</small><br><small>{}</small></li>',
            (
                (
                    mark_safe(' style="font-weight:bold"') if c.get("cited") else "",
                    c.get("url", ""),
                    c.get("title", ""),
                    c.get("document_id", ""),
                    c.get("score", ""),
                    c.get("snippet", ""),
                )
                for c in message.citations
            ),
        ),
    )


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ["created_at", "role", "answer", "sources", "status", "error_code", "tokens", "latency", "ratings"]
    readonly_fields = fields
    ordering = ["created_at", "id"]

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description=_("content"))
    def answer(self, obj: Message):
        if obj.role == Message.Role.USER:
            return format_html('<div style="white-space:pre-wrap;max-width:40em">{}</div>', obj.content)
        # Sanitised like in the browser: model output is untrusted.
        return format_html('<div style="max-width:40em">{}</div>', mark_safe(render_markdown(obj.content)))

    @admin.display(description=_("citations"))
    def sources(self, obj: Message):
        return _citations_html(obj) if obj.role == Message.Role.ASSISTANT else ""

    @admin.display(description=_("tokens"))
    def tokens(self, obj: Message) -> str:
        return f"{obj.prompt_tokens} / {obj.completion_tokens}" if obj.role == Message.Role.ASSISTANT else ""

    @admin.display(description=_("latency"))
    def latency(self, obj: Message) -> str:
        if obj.role != Message.Role.ASSISTANT:
            return ""
        return f"TTFT {obj.ttft_ms} ms, {obj.total_ms} ms" + (" (cached)" if obj.cached else "")

    @admin.display(description=_("feedback"))
    def ratings(self, obj: Message):
        items = list(obj.feedback.all())
        if not items:
            return ""
        return format_html_join(
            "", "<div>{} {}</div>", ((("👍" if f.rating == "up" else "👎"), f.comment) for f in items)
        )


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ["title", "owner", "channel", "model", "message_count", "negative_feedback", "updated_at"]
    list_filter = ["channel", "model", "updated_at"]
    search_fields = ["title", "id", "user__username", "messages__content"]
    date_hierarchy = "updated_at"
    fields = [
        "id",
        "title",
        "user",
        "session_key",
        "channel",
        "collection_ids",
        "model",
        "endpoint",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest):
        return (
            super()
            .get_queryset(request)
            .select_related("user")
            .annotate(
                n_messages=Count("messages", distinct=True),
                n_down=Count("messages__feedback", filter=Q(messages__feedback__rating="down"), distinct=True),
            )
        )

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser

    @admin.display(description=_("owner"))
    def owner(self, obj: Conversation) -> str:
        return obj.user.get_username() if obj.user else _("anonymous")

    @admin.display(description=_("messages"), ordering="n_messages")
    def message_count(self, obj: Conversation) -> int:
        return obj.n_messages

    @admin.display(description="👎", ordering="n_down")
    def negative_feedback(self, obj: Conversation) -> int:
        return obj.n_down


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "conversation_link",
        "role",
        "short",
        "status",
        "error_code",
        "completion_tokens",
        "ttft_ms",
        "total_ms",
        "created_at",
    ]
    list_filter = ["role", "status", "error_code", "cached", "created_at"]
    search_fields = ["content", "conversation__id"]
    list_select_related = ["conversation"]
    exclude = ["citations"]
    readonly_fields = ["citations_list"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description=_("content"))
    def short(self, obj: Message) -> str:
        return obj.content[:80]

    @admin.display(description=_("conversation"))
    def conversation_link(self, obj: Message):
        url = reverse("admin:chat_conversation_change", args=[obj.conversation_id])
        return format_html('<a href="{}">{}</a>', url, obj.conversation)

    @admin.display(description=_("citations"))
    def citations_list(self, obj: Message):
        return _citations_html(obj)


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdmin):
    list_display = ["message", "rating", "comment", "user", "updated_at"]
    list_filter = ["rating", "updated_at"]
    search_fields = ["comment", "message__content"]
    list_select_related = ["message", "user"]


@admin.register(ChatSettings)
class ChatSettingsAdmin(admin.ModelAdmin):
    """One row: the changelist opens it directly."""

    fieldsets = [
        (None, {"fields": ["system_prompt", "answer_mode"]}),
        (_("Retrieval"), {"fields": ["retrieval_enabled", "top_k", "rerank_enabled"]}),
        (
            _("When the documents do not answer"),
            {"fields": ["not_found_message", "relevance_floor", "curated_threshold"]},
        ),
        (
            _("Generation"),
            {"fields": ["default_model", "temperature", "max_tokens", "context_window", "history_token_budget"]},
        ),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not ChatSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        row, _created = ChatSettings.objects.get_or_create(pk=1)
        return HttpResponseRedirect(reverse("admin:chat_chatsettings_change", args=[row.pk]))


@admin.register(CuratedReply)
class CuratedReplyAdmin(admin.ModelAdmin):
    """Operators' verbatim answers to frequent questions (matched by meaning, given without the model)."""

    list_display = ["question", "source", "enabled", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["question", "answer"]
    autocomplete_fields = ["source"]
    fields = ["question", "answer", "source", "enabled"]

    def save_model(self, request: HttpRequest, obj: CuratedReply, form, change) -> None:
        # The question's vector is computed here: the reply is matched by it.
        curated_reply_save(reply=obj)
