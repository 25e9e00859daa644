"""Conversations, their messages, feedback on answers, and the answer settings (a singleton).

PostgreSQL is the source of truth; Redis keeps a copy of recent history
(``history:{conversation_id}``) for the request path (see chat/history.py).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

DEFAULT_SYSTEM_PROMPT = """당신은 빈집 정책 상담 도우미입니다. 빈집 관련 정책, 지원금, 신고·정비 절차에 대해 시민의 질문에 답합니다.

규칙:
- 아래에 번호가 매겨진 참고 자료([1], [2] …)에 근거해서만 답하세요.
- 자료에서 가져온 내용 뒤에는 해당 번호를 [1]처럼 표시하세요.
- 자료에 답이 없으면 모른다고 말하고, 담당 지자체(시·군·구청) 빈집 담당 부서에 문의하도록 안내하세요.
- 질문한 언어로, 쉽고 정중하게, 핵심부터 간결하게 답하세요. 필요하면 목록을 사용하세요.
- 금액, 기한, 자격 요건은 자료에 적힌 그대로 옮기고 추측하지 마세요."""


DEFAULT_NOT_FOUND_MESSAGE = (
    "등록된 자료에서 이 질문에 대한 답을 찾지 못했습니다. 정확한 내용은 빈집이 있는 시·군·구청의 빈집 담당 부서"
    "(건축과 또는 도시재생과)나 민원 상담 전화 110으로 문의해 주세요."
)


class AnswerMode(models.TextChoices):
    """How an answer is made (ChatSettings.answer_mode, or per request)."""

    GENERATIVE = "generative", _("Generative: the model writes the answer from the sources")
    EXTRACTIVE = "extractive", _("Extractive: quote the best sentences of the sources, no model call")
    GENERATIVE_FALLBACK = "generative_fallback", _("Generative, extractive when the model is unavailable")


class Conversation(models.Model):
    """A chat thread, owned by a user or (anonymous browser chat) by a session."""

    class Channel(models.TextChoices):
        WEB = "web", _("browser")
        API = "api", _("REST API")
        OPENAI = "openai", _("OpenAI-compatible API")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="conversations",
        verbose_name=_("user"),
    )
    session_key = models.CharField(_("session"), max_length=64, blank=True, db_index=True)
    title = models.CharField(_("title"), max_length=200, blank=True)
    channel = models.CharField(_("channel"), max_length=10, choices=Channel.choices, default=Channel.WEB)
    # Retrieval scope: knowledge collection ids; empty = every collection the owner may read.
    collection_ids = models.JSONField(_("collections"), default=list, blank=True)
    model = models.CharField(_("model"), max_length=200, blank=True)
    endpoint = models.CharField(_("endpoint"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        indexes = [
            models.Index(fields=["user", "-updated_at"], name="chat_conv_user_recent"),
            models.Index(fields=["session_key", "-updated_at"], name="chat_conv_session_recent"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(session_key=""), name="chat_conversation_has_owner"
            )
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", _("user")
        ASSISTANT = "assistant", _("assistant")

    class Status(models.TextChoices):
        # The assistant row exists from the start of generation; it stays "streaming" only
        # if the process died before the final write (readers treat it as partial).
        STREAMING = "streaming", _("streaming")
        COMPLETE = "complete", _("complete")
        PARTIAL = "partial", _("partial")
        ERROR = "error", _("error")

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", verbose_name=_("conversation")
    )
    role = models.CharField(_("role"), max_length=10, choices=Role.choices)
    content = models.TextField(_("content"), blank=True)
    # The numbered sources given to the model: [{n, title, snippet, url, document_id,
    # chunk_id, score, cited}] (``cited``: the answer contains its [n] marker).
    citations = models.JSONField(_("citations"), default=list, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.COMPLETE)
    error_code = models.CharField(_("error code"), max_length=50, blank=True)
    model = models.CharField(_("model"), max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(_("prompt tokens"), default=0)
    completion_tokens = models.PositiveIntegerField(_("completion tokens"), default=0)
    ttft_ms = models.PositiveIntegerField(_("time to first token (ms)"), null=True, blank=True)
    total_ms = models.PositiveIntegerField(_("total time (ms)"), null=True, blank=True)
    cached = models.BooleanField(_("from the response cache"), default=False)
    # A regenerated answer replaces this one (kept for the record, left out of history).
    superseded = models.BooleanField(_("superseded"), default=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    # While "streaming": the last time the process writing it said it is alive (every
    # checkpoint round). A row whose writer went quiet is swept as interrupted within
    # seconds instead of half an hour (chat.services.answer_recovery).
    alive_at = models.DateTimeField(_("last sign of life"), null=True, blank=True, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="chat_msg_conv_created"),
            # Only the few rows being generated: finds answers a crashed process left
            # "streaming" (chat.services.answer_recovery) without scanning every message.
            models.Index(fields=["created_at"], name="chat_msg_streaming", condition=models.Q(status="streaming")),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"


class Feedback(models.Model):
    """A thumbs up/down on an answer: one per user (or session) per message, updatable."""

    class Rating(models.TextChoices):
        UP = "up", _("helpful")
        DOWN = "down", _("not helpful")

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    session_key = models.CharField(max_length=64, blank=True)
    rating = models.CharField(_("rating"), max_length=4, choices=Rating.choices)
    comment = models.TextField(_("comment"), blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("feedback")
        verbose_name_plural = _("feedback")
        constraints = [
            models.UniqueConstraint(
                fields=["message", "user"], condition=Q(user__isnull=False), name="chat_feedback_one_per_user"
            ),
            models.UniqueConstraint(
                fields=["message", "session_key"],
                condition=Q(user__isnull=True),
                name="chat_feedback_one_per_session",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rating} on {self.message_id}"


class ChatSettings(models.Model):
    """How answers are made: one row (pk=1), edited in the admin, cached per process (chat/config.py)."""

    system_prompt = models.TextField(_("system prompt"), default=DEFAULT_SYSTEM_PROMPT)
    retrieval_enabled = models.BooleanField(_("retrieval"), default=True)
    top_k = models.PositiveSmallIntegerField(_("sources per answer (top k)"), default=5)
    rerank_enabled = models.BooleanField(_("rerank"), default=False)
    history_token_budget = models.PositiveIntegerField(
        _("history token budget"), default=1500, help_text=_("At most this many tokens of earlier turns.")
    )
    context_window = models.PositiveIntegerField(
        _("context window (tokens)"),
        null=True,
        blank=True,
        help_text=_(
            "Context window of models that state none (the model group's setting, else its endpoints', comes first). "
            "Blank: CHAT_CONTEXT_WINDOW."
        ),
    )
    default_model = models.ForeignKey(
        "inference.ModelGroup",
        verbose_name=_("default model"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        limit_choices_to={"kind": "generation"},
        related_name="+",
        help_text=_(
            "The model browser chat (and requests that name none) use. Blank: the environment's model "
            "(VLLM_MODEL, else the local model)."
        ),
    )
    temperature = models.FloatField(_("temperature"), default=0.2)
    max_tokens = models.PositiveIntegerField(_("max tokens per answer"), default=512)
    answer_mode = models.CharField(
        _("answer mode"),
        max_length=32,
        choices=AnswerMode.choices,
        blank=True,
        default="",
        help_text=_("Blank: the CHAT_ANSWER_MODE setting (make run: extractive, for its small model)."),
    )
    not_found_message = models.TextField(
        _("not-found reply"),
        default=DEFAULT_NOT_FOUND_MESSAGE,
        help_text=_("Said when the documents do not answer the question: say where to ask instead."),
    )
    relevance_floor = models.FloatField(
        _("relevance floor"),
        default=0.87,
        help_text=_(
            "Similarity (0-1) the best source must reach for a generated answer; below it the not-found reply is "
            "given. Set by the evaluation (docs/answer-quality.md)."
        ),
    )
    curated_threshold = models.FloatField(
        _("curated reply threshold"),
        default=0.95,
        help_text=_(
            "Similarity (0-1) of a question to a curated reply's question for that reply to be given verbatim."
        ),
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("chat settings")
        verbose_name_plural = _("chat settings")

    def __str__(self) -> str:
        return str(_("Chat settings"))

    def save(self, *args, **kwargs) -> None:
        self.pk = 1  # a singleton
        super().save(*args, **kwargs)


class CuratedReply(models.Model):
    """An operator's answer to a frequent question, given verbatim (and cited) without calling the model.

    Matched by the similarity of the question to ``question`` (embedding, above
    ChatSettings.curated_threshold); the vector is computed when the reply is saved.
    """

    question = models.TextField(_("question"))
    answer = models.TextField(_("answer"), help_text=_("Given as written (Markdown)."))
    source = models.ForeignKey(
        "knowledge.Document",
        verbose_name=_("source document"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="curated_replies",
        help_text=_("The document the answer rests on: cited under it."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    embedding = models.BinaryField(editable=False, default=b"")
    embedding_model = models.CharField(max_length=100, editable=False, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("curated reply")
        verbose_name_plural = _("curated replies")
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.question[:80]
