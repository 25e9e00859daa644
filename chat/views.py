"""The browser chat page. Everything after the first paint talks to /ws/chat/ and /api/."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import ensure_csrf_cookie

from chat.api import ensure_session
from chat.asyncdb import call_async
from chat.config import get_config_sync
from chat.errors import RateLimited
from chat.gateway.auth import subject_for
from chat.services.model_routing import chat_model_picker


def ui_strings() -> dict[str, str]:
    """Texts the script shows, translated for the request's language (rendered as a JSON blob)."""
    return {
        "you": _("You"),
        "assistant": _("Assistant"),
        "sources": _("Sources"),
        "noSources": _("No sources were found for this answer."),
        "thinking": _("Searching the documents…"),
        "stopped": _("Stopped. The answer so far was saved."),
        "helpful": _("Helpful"),
        "notHelpful": _("Not helpful"),
        "thanks": _("Thanks for the feedback."),
        "regenerate": _("Regenerate"),
        "copy": _("Copy"),
        "untitled": _("New conversation"),
        "connecting": _("Connecting…"),
        "reconnecting": _("Connection lost. Reconnecting in {s} s…"),
        "connected": _("Connected."),
        "rateLimited": _("Too many questions right now. Please try again in {s} seconds."),
        "modelUnavailable": _("The answer service is unavailable right now. Please try again in a moment."),
        "busy": _("Please wait until the current answer is finished, or press Stop."),
        "tooLong": _("Your message is too long."),
        "notFound": _("This conversation no longer exists."),
        "genericError": _("Something went wrong. Please try again."),
        "deleteConfirm": _("Delete this conversation?"),
        "deleted": _("Conversation deleted."),
        "partial": _("(answer interrupted)"),
        "loadFailed": _("Could not load the conversation."),
        "modelNotFound": _("That model is not available to you. Choose another one."),
        "budgetExceeded": _("Your monthly usage allowance is spent. Please contact the site's operators."),
    }


@ensure_csrf_cookie
def index(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        if not settings.CHAT_ANONYMOUS_ENABLED:
            return redirect_to_login(request.get_full_path())
        # The websocket identifies an anonymous visitor by this session.
        try:
            ensure_session(request)
        except RateLimited as exc:  # too many new sessions from this address
            response = HttpResponse(exc.message, status=exc.http_status, content_type="text/plain; charset=utf-8")
            for name, value in exc.headers.items():
                response[name] = value
            return response
    config = {
        "wsPath": "/ws/chat/",
        "apiBase": "/api/",
        "heartbeatS": settings.CHAT_WS_HEARTBEAT_S,
        "strings": ui_strings(),
    }
    # The model picker: shown when the visitor may use more than one chat model.
    subject = subject_for(principal=None, user=request.user, session_key=request.session.session_key)
    models, chosen = call_async(chat_model_picker, subject, default=get_config_sync().default_model)
    return render(
        request,
        "chat/index.html",
        {"chat_config": config, "chat_models": models, "chat_default_model": chosen},
    )
