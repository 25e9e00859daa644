"""The browser chat's websocket (/ws/chat/): a thin adapter over chat.services.

Protocol (docs/chat.md has the full table):

client -> server  {"type": "message", "content": "...", "conversation_id"?: "<uuid>", "model"?: "<name>"}
                  {"type": "regenerate", "conversation_id": "<uuid>", "model"?: "<name>"}
                  {"type": "stop"}   {"type": "ping"}
server -> client  start, sources, token, end, error, pong, heartbeat

One answer at a time per socket: the answer runs in its own task so that
``stop`` and a disconnect can cancel it (the service then stores the partial
answer and closes the upstream request).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import aclosing
from typing import Any

import orjson
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from chat import services
from chat.asyncdb import db
from chat.errors import (
    AuthenticationRequired,
    Busy,
    InternalError,
    PlatformError,
    RateLimited,
    StorageUnavailable,
    ValidationFailed,
)
from chat.gateway import services as gateway
from chat.gateway.auth import client_ip, subject_for
from chat.gateway.types import Subject
from chat.gateway.validation import ANSWER_MODES, MAX_MODEL_CHARS, validate_user_message
from chat.renderers.websocket import (
    end_frame,
    error_frame,
    failed_frame,
    sources_frame,
    start_frame,
    stopped_frame,
    token_frame,
)
from chat.types import End, Error, Sources, Start, Token
from chat.ws_auth import AUTH_UNAVAILABLE
from monitoring import tracing
from monitoring.metrics import CHAT_STREAM_ERRORS, CHAT_WEBSOCKET_ANSWERS, WEBSOCKET_CONNECTIONS
from monitoring.outages import is_unreachable_error

log = logging.getLogger(__name__)

# Close codes in the 4000 range (application-defined).
CLOSE_UNAUTHENTICATED = 4401
# RFC 6455 "try again later": who the user is cannot be read now (database unreachable).
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_RATE_LIMITED = 4429
CLOSE_TOO_BIG = 1009


class ChatConsumer(AsyncJsonWebsocketConsumer):
    # No channel layer: nothing is sent to a socket from outside it, and each subscription
    # would hold a blocking Redis connection per open socket.
    channel_layer_alias = "__no_channel_layer__"
    subject: Subject | None = None
    answer: asyncio.Task | None = None
    # True from a message until its end/error frame is sent (the task may still be settling
    # its bookkeeping afterwards; the client may ask again as soon as it has the end frame).
    answering = False
    heartbeat: asyncio.Task | None = None

    # -- connection ---------------------------------------------------------------------

    async def connect(self) -> None:
        user = self.scope.get("user")
        session = self.scope.get("session")
        authenticated = user is not None and user.is_authenticated
        if self.scope.get(AUTH_UNAVAILABLE):
            # Signed in or not, we cannot tell: refuse rather than chat as the wrong owner (chat.ws_auth).
            await self._refuse_for_now()
            return
        if session is not None and not session.session_key and (authenticated or settings.CHAT_ANONYMOUS_ENABLED):
            # The page view normally creates the session; a bare client gets one for this socket,
            # within its address's budget of new sessions (a cookie-less flood gets no fresh budgets).
            if not authenticated:
                try:
                    await gateway.check_action(gateway.session_checks(client_ip(self.scope)))
                except RateLimited as exc:
                    await self.accept()
                    await self.send_json(error_frame(exc))
                    await self.close(code=CLOSE_RATE_LIMITED)
                    return
            try:
                await db(session.save)()
            except Exception as exc:
                if not is_unreachable_error(exc):
                    raise
                await self._refuse_for_now()
                return
        if authenticated or (settings.CHAT_ANONYMOUS_ENABLED and session is not None):
            self.subject = subject_for(
                principal=None,
                user=user,
                ip=client_ip(self.scope),
                session_key=getattr(session, "session_key", None),
            )
        await self.accept()
        if self.subject is None:
            await self.send_json(error_frame(AuthenticationRequired("Log in to chat.")))
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        WEBSOCKET_CONNECTIONS.inc()
        self.connected = True
        self.heartbeat = asyncio.create_task(self._heartbeat())

    async def _refuse_for_now(self) -> None:
        await self.accept()
        await self.send_json(error_frame(StorageUnavailable(), retry_after=5))
        await self.close(code=CLOSE_TRY_AGAIN_LATER)

    async def disconnect(self, code: int) -> None:
        if not getattr(self, "connected", False):
            return
        self.connected = False
        WEBSOCKET_CONNECTIONS.dec()
        if self.heartbeat:
            self.heartbeat.cancel()
        if self.answer and not self.answer.done():
            # Cancel the answer: the service stores the partial text and closes the upstream stream.
            self.answer.cancel()
            await asyncio.wait([self.answer], timeout=15)

    async def _heartbeat(self) -> None:
        interval = settings.CHAT_WS_HEARTBEAT_S
        while True:
            await asyncio.sleep(interval)
            await self.send_json({"type": "heartbeat"})

    # -- frames -------------------------------------------------------------------------

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return orjson.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return orjson.dumps(content).decode()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if len(text_data or bytes_data or "") > settings.CHAT_WS_MAX_FRAME_BYTES:
            # The production server refuses such a frame itself (config/workers.py); any other server
            # gets the same answer here: 1009, "message too big".
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            content = await self.decode_json(text_data or "")
        except orjson.JSONDecodeError:
            await self.send_json(error_frame(ValidationFailed("Frames must be JSON objects.")))
            return
        if not isinstance(content, dict):
            await self.send_json(error_frame(ValidationFailed("Frames must be JSON objects.")))
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "stop":
            if self.answering and self.answer and not self.answer.done():
                self.answer.cancel()
        elif kind in ("message", "regenerate"):
            await self._start_answer(content, regenerate=kind == "regenerate")
        else:
            await self.send_json(error_frame(ValidationFailed(f"Unknown frame type {kind!r}.")))

    async def _start_answer(self, content: dict[str, Any], *, regenerate: bool) -> None:
        if self.answering:
            await self.send_json(error_frame(Busy()))
            return
        try:
            text = "" if regenerate else validate_user_message(content.get("content"))
            answer_mode = content.get("answer_mode")
            if answer_mode is not None and answer_mode not in ANSWER_MODES:
                raise ValidationFailed(f"answer_mode must be one of {', '.join(ANSWER_MODES)}.")
            model = content.get("model")
            if model is not None and (not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_CHARS):
                raise ValidationFailed("model must be a model name.")
            conversation_id = content.get("conversation_id")
            if conversation_id is not None:
                conversation_id = uuid.UUID(str(conversation_id))
            elif regenerate:
                raise ValidationFailed("regenerate needs a conversation_id.")
        except ValueError:
            await self.send_json(error_frame(ValidationFailed("conversation_id must be a UUID.")))
            return
        except PlatformError as exc:
            await self.send_json(error_frame(exc))
            return
        self.answering = True
        CHAT_WEBSOCKET_ANSWERS.inc()
        self.answer = asyncio.create_task(self._answer(text, conversation_id, regenerate, answer_mode, model))

    # One trace per answer, not per socket: a new root span, whatever the connection did before.
    @tracing.root_span("chat.answer", **{"chat.channel": "websocket"})
    async def _answer(
        self,
        text: str,
        conversation_id: uuid.UUID | None,
        regenerate: bool,
        answer_mode: str | None = None,
        model: str | None = None,
    ) -> None:
        assert self.subject is not None
        started: Start | None = None
        parts: list[str] = []
        try:
            events = services.reply(
                subject=self.subject,
                content=text,
                conversation_id=conversation_id,
                regenerate=regenerate,
                options=services.ChatOptions(principal=self.scope.get("user"), answer_mode=answer_mode, model=model),
            )
            async with aclosing(events) as stream:
                async for event in stream:
                    if type(event) is Token:
                        parts.append(event.text)
                        await self.send_json(token_frame(event.text))
                    elif isinstance(event, Start):
                        started = event
                        await self.send_json(start_frame(event))
                    elif isinstance(event, Sources):
                        await self.send_json(sources_frame(event.sources))
                    elif isinstance(event, End):
                        self.answering = False
                        await self.send_json(end_frame(event))
                    elif isinstance(event, Error):
                        self.answering = False
                        CHAT_STREAM_ERRORS.labels("websocket", f"{event.error.http_status // 100}xx").inc()
                        await self.send_json(
                            failed_frame(event.error, message_id=event.message_id, partial=event.partial)
                        )
        except asyncio.CancelledError:
            # stop (or disconnect): the service has stored the partial answer by now.
            self.answering = False
            if getattr(self, "connected", False) and started is not None:
                await self.send_json(stopped_frame(started, "".join(parts)))
        except Exception:
            log.exception("websocket answer failed")
            CHAT_STREAM_ERRORS.labels("websocket", "5xx").inc()
            self.answering = False
            if getattr(self, "connected", False):
                await self.send_json(error_frame(InternalError()))
        finally:
            self.answering = False
