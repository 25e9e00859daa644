"""REST API for conversations (DRF, thin views over chat.services / chat.selectors).

Authentication: the classes in ``authentication_classes()`` (session, plus API keys
when the gateway's ``APIKeyAuthentication`` is installed); anonymous callers act
through their session when CHAT_ANONYMOUS_ENABLED. Someone else's conversation
is a 404. ``POST .../messages/`` answers with JSON, or streams Server-Sent Events
when ``"stream": true`` or ``Accept: text/event-stream`` (docs/chat.md).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from chat import selectors, services
from chat.asyncdb import call_async
from chat.errors import NotFound
from chat.gateway import services as gateway
from chat.gateway.auth import Principal, client_ip, subject_for
from chat.gateway.validation import validate_chat_request
from chat.markdown import answer_html
from chat.models import Conversation, Feedback, Message
from chat.renderers.sse import sse_stream
from chat.types import End, Error, Owner
from config.drf import error_response

# --- who is asking ---------------------------------------------------------------------


def authentication_classes() -> list[type]:
    """The ONE list of authenticators of the chat API: DRF's defaults + API keys (when installed)."""
    classes = list(api_settings.DEFAULT_AUTHENTICATION_CLASSES)
    try:
        from chat.gateway.auth import APIKeyAuthentication
    except ImportError:  # the gateway app without API keys
        return classes
    if APIKeyAuthentication not in classes:
        classes.insert(0, APIKeyAuthentication)
    return classes


def ensure_session(request: Any) -> str:
    """The anonymous caller's session key, creating (and so sending a cookie for) a session if needed.

    A new session counts against its address's CHAT_ANONYMOUS_SESSIONS_PER_IP (RateLimited, 429):
    a client that drops its cookie on every request does not get a fresh budget each time.
    """
    session = request.session
    if not session.session_key or not session.get("chat"):
        gateway.check_action_sync(gateway.session_checks(client_ip(request.META)))
        session["chat"] = True  # non-empty + modified: SessionMiddleware sends the cookie
        session.save()
    return session.session_key


def owner_of(request: Request, *, create_session: bool = False) -> Owner:
    principal = request.auth if isinstance(request.auth, Principal) else None
    if principal is not None:
        return Owner(user_id=principal.user_id)
    if request.user.is_authenticated:
        return Owner(user_id=request.user.pk)
    key = ensure_session(request) if create_session else request.session.session_key
    return Owner(session_key=key)


def subject_of(request: Request) -> Any:
    principal = request.auth if isinstance(request.auth, Principal) else None
    session_key = None if principal else (request.session.session_key or None)
    return subject_for(principal=principal, user=request.user, ip=client_ip(request.META), session_key=session_key)


class ChatParticipant(BasePermission):
    """Signed in (session or an API key with the ``chat`` scope), or anonymous when anonymous chat is on."""

    message = "Log in (or send an API key with the chat scope) to use the chat API."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, Principal):
            return request.auth.has_scopes("chat")
        return bool(request.user and request.user.is_authenticated) or settings.CHAT_ANONYMOUS_ENABLED


class ChatAPIView(APIView):
    authentication_classes = authentication_classes()
    permission_classes = [ChatParticipant]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not request.user.is_authenticated and request.method not in ("GET", "HEAD", "OPTIONS"):
            # DRF checks CSRF only for logged-in sessions; anonymous chat rides on a session too.
            SessionAuthentication().enforce_csrf(request)


# --- serializers -------------------------------------------------------------------------


class ConversationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = ["id", "title", "channel", "collection_ids", "model", "created_at", "updated_at"]
        read_only_fields = fields


class ConversationCreateSerializer(serializers.Serializer):
    title = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    collection_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, default=list)


class MessageSerializer(serializers.ModelSerializer):
    html = serializers.SerializerMethodField(help_text="The content as sanitised HTML (Markdown rendered).")
    feedback = serializers.SerializerMethodField(help_text="Your rating of this answer: up, down or null.")

    class Meta:
        model = Message
        fields = [
            "id",
            "role",
            "content",
            "html",
            "citations",
            "status",
            "error_code",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "ttft_ms",
            "total_ms",
            "cached",
            "feedback",
            "created_at",
        ]
        read_only_fields = fields

    def get_html(self, obj: Message) -> str:
        if obj.role == Message.Role.USER:
            return ""
        return answer_html(obj.content, obj.pk)

    def get_feedback(self, obj: Message) -> str | None:
        return (self.context.get("ratings") or {}).get(obj.pk)


class MessageCreateSerializer(serializers.Serializer):
    """Documentation of the body (validated by chat.gateway.validation, one place for every adapter)."""

    message = serializers.CharField(help_text="The question.", required=False)
    stream = serializers.BooleanField(required=False, default=False, help_text="Answer as Server-Sent Events.")
    regenerate = serializers.BooleanField(
        required=False, default=False, help_text="Answer the last question again (no `message`)."
    )
    retrieval = serializers.BooleanField(required=False, help_text="Search the knowledge base (default: settings).")
    collection = serializers.CharField(required=False, help_text="Limit retrieval to one collection (id or slug).")
    answer_mode = serializers.ChoiceField(
        choices=["generative", "extractive", "generative_fallback"],
        required=False,
        help_text="How the answer is made (default: the admin's chat settings).",
    )
    model = serializers.CharField(
        required=False, help_text="A model name or alias you may use (default: the chat settings' default model)."
    )
    temperature = serializers.FloatField(required=False, min_value=0, max_value=2)
    max_tokens = serializers.IntegerField(required=False, min_value=1)


class FeedbackSerializer(serializers.Serializer):
    rating = serializers.ChoiceField(choices=Feedback.Rating.choices)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


AnswerSerializer = inline_serializer(
    "ChatAnswer",
    {
        "conversation_id": serializers.UUIDField(),
        "message": MessageSerializer(),
        "usage": serializers.DictField(child=serializers.IntegerField()),
        "latency": serializers.DictField(child=serializers.IntegerField(allow_null=True)),
    },
)
ConversationPageSerializer = inline_serializer(
    "PaginatedConversationList",
    {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": ConversationSerializer(many=True),
    },
)
ErrorSerializer = inline_serializer(
    "ChatError",
    {
        "error": inline_serializer(
            "ChatErrorBody", {"code": serializers.CharField(), "message": serializers.CharField()}
        )
    },
)


# --- views -------------------------------------------------------------------------------


def _conversation_or_404(request: Request, conversation_id: uuid.UUID) -> Conversation:
    conversation = selectors.conversation_get(owner=owner_of(request), conversation_id=conversation_id)
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


class ConversationListView(ChatAPIView):
    @extend_schema(
        tags=["chat"],
        operation_id="conversations_list",
        summary="Your conversations, newest first (paginated)",
        responses=ConversationPageSerializer,
    )
    def get(self, request: Request) -> Response:
        paginator = api_settings.DEFAULT_PAGINATION_CLASS()
        page = paginator.paginate_queryset(selectors.conversation_list(owner=owner_of(request)), request, view=self)
        return paginator.get_paginated_response(ConversationSerializer(page, many=True).data)

    @extend_schema(
        tags=["chat"],
        summary="Start a conversation",
        request=ConversationCreateSerializer,
        # 429: new conversations per caller (CHAT_CONVERSATIONS_PER_WINDOW), new sessions per address.
        responses={201: ConversationSerializer, 400: ErrorSerializer, 429: ErrorSerializer},
    )
    def post(self, request: Request) -> Response:
        body = ConversationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        owner = owner_of(request, create_session=True)
        # An empty conversation costs no model call (so admit() never sees it) but it is a row.
        gateway.check_action_sync(gateway.conversation_checks(subject_of(request)))
        conversation = services.conversation_create(
            owner=owner,
            title=body.validated_data["title"],
            channel=Conversation.Channel.API,
            collection_ids=body.validated_data["collection_ids"],
        )
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)


class ConversationDetailView(ChatAPIView):
    @extend_schema(
        tags=["chat"],
        summary="One of your conversations",
        responses={200: ConversationSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        return Response(ConversationSerializer(_conversation_or_404(request, conversation_id)).data)

    @extend_schema(tags=["chat"], summary="Delete a conversation", responses={204: None, 404: ErrorSerializer})
    def delete(self, request: Request, conversation_id: uuid.UUID) -> Response:
        deleted = services.conversation_delete(owner=owner_of(request), conversation_id=conversation_id)
        from chat.history import drop_history

        call_async(drop_history, deleted)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageListView(ChatAPIView):
    @extend_schema(
        tags=["chat"],
        summary="The conversation's messages, oldest first",
        responses={200: MessageSerializer(many=True), 404: ErrorSerializer},
    )
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        conversation = _conversation_or_404(request, conversation_id)
        messages = list(selectors.message_list(conversation=conversation))
        ratings = selectors.feedback_for(owner=owner_of(request), message_ids=[m.pk for m in messages])
        return Response(MessageSerializer(messages, many=True, context={"ratings": ratings}).data)

    @extend_schema(
        tags=["chat"],
        summary="Ask a question in the conversation (JSON answer, or SSE stream)",
        description=(
            "With `stream: true` or `Accept: text/event-stream` the answer streams as Server-Sent Events "
            "`start`, `sources`, `token`*, then `end` or `error` (each `data:` is JSON; see docs/chat.md). "
            "Otherwise the stored answer is returned when complete."
        ),
        request=MessageCreateSerializer,
        responses={
            200: OpenApiResponse(AnswerSerializer, description="The answer (JSON), or an SSE stream."),
            404: ErrorSerializer,
            422: ErrorSerializer,
            429: ErrorSerializer,
            503: ErrorSerializer,
        },
        examples=[OpenApiExample("question", value={"message": "빈집 철거 지원금은 얼마인가요?", "stream": True})],
    )
    def post(self, request: Request, conversation_id: uuid.UUID) -> Any:
        conversation = _conversation_or_404(request, conversation_id)
        payload = request.data if isinstance(request.data, dict) else None
        regenerate = bool(payload and payload.get("regenerate") is True)
        if regenerate:
            payload = {k: v for k, v in payload.items() if k != "regenerate"} | {"message": "-"}
        validated = validate_chat_request(payload, openai=False)
        if validated.conversation_id is not None and str(validated.conversation_id) != str(conversation.pk):
            raise NotFound("conversation_id does not match the URL.")
        options = services.ChatOptions(
            retrieval=payload.get("retrieval") if isinstance(payload.get("retrieval"), bool) else None,
            collections=(validated.collection,) if validated.collection is not None else None,
            params=validated.params,
            model=validated.model,
            principal=request.auth if isinstance(request.auth, Principal) else request.user,
            answer_mode=validated.answer_mode,
        )
        events = services.reply(
            subject=subject_of(request),
            content=validated.last_user_message,
            conversation_id=conversation.pk,
            regenerate=regenerate,
            channel=Conversation.Channel.API,
            options=options,
        )
        wants_sse = validated.stream or "text/event-stream" in request.META.get("HTTP_ACCEPT", "")
        if wants_sse:
            first = call_async(_first_event, events)
            if isinstance(first, Error):
                return error_response(first.error)
            response = StreamingHttpResponse(sse_stream(first, events), content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
            for name, value in getattr(first, "headers", {}).items():  # X-RateLimit-*, X-Budget-*
                response[name] = value
            return response
        final = call_async(services.collect, events)
        if isinstance(final, Error) and final.message_id is None:
            return error_response(final.error)
        body = {"conversation_id": conversation.pk, "message": MessageSerializer(_answer_row(final)).data}
        if isinstance(final, End):
            body |= {"usage": final.usage, "latency": final.latency}
        else:
            body |= final.error.as_dict()
        return Response(body, status=200 if isinstance(final, End) else final.error.http_status)


def _answer_row(final: End | Error) -> Message:
    """The stored answer; if the database went away after the answer was made (its write is
    deferred, chat.services.answer_recovery), the answer as made, not a 503 for an answer we have."""
    try:
        return Message.objects.get(pk=final.message_id)
    except DatabaseError:
        if not isinstance(final, End):
            raise
        return Message(
            pk=final.message_id,
            conversation_id=final.conversation_id,
            role=Message.Role.ASSISTANT,
            content=final.content,
            citations=final.citations,
            status=final.status,
            model=final.model,
            prompt_tokens=final.usage.get("prompt_tokens", 0),
            completion_tokens=final.usage.get("completion_tokens", 0),
            ttft_ms=final.latency.get("ttft_ms"),
            total_ms=final.latency.get("total_ms"),
            cached=final.cached,
        )


async def _first_event(events: AsyncIterator[Any]) -> Any:
    # Not closed here: the stream continues in sse_stream (same event loop under ASGI).
    return await events.__anext__()


class FeedbackView(ChatAPIView):
    @extend_schema(
        tags=["chat"],
        summary="Rate an answer (thumbs up/down); sending again updates your rating",
        request=FeedbackSerializer,
        responses={
            200: inline_serializer(
                "FeedbackResult", {"message_id": serializers.IntegerField(), "rating": serializers.CharField()}
            ),
            400: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    def put(self, request: Request, message_id: int) -> Response:
        body = FeedbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        feedback = services.feedback_set(
            owner=owner_of(request, create_session=False),
            message_id=message_id,
            rating=body.validated_data["rating"],
            comment=body.validated_data["comment"],
        )
        return Response({"message_id": feedback.message_id, "rating": feedback.rating})

    post = put
