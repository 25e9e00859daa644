"""What every knowledge REST view shares: authentication and scopes, pagination, the error schema.

Views raise platform errors (``config.errors``, ``knowledge.errors``); ``config.drf`` renders
them. Nothing here builds an error body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db.models import Q
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import AuthenticationRequired, NotFound, PayloadTooLarge, ValidationFailed
from knowledge import permissions
from knowledge.models import Collection
from knowledge.permissions import SCOPE_READ, SCOPE_WRITE
from knowledge.selectors import collection_get, collection_list, request_principal

# A page is at most this many rows, whatever ``limit`` asks (callers may be anonymous attackers).
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


class KnowledgeAPIView(APIView):
    """Auth and permission classes come from knowledge.permissions (read per request)."""

    # Methods that only read, besides GET/HEAD/OPTIONS (search is a POST that reads).
    read_methods: tuple[str, ...] = ()

    def get_authenticators(self) -> list[Any]:
        return permissions.authenticators()

    def get_permissions(self) -> list[Any]:
        method = self.request.method if self.request else "GET"
        return permissions.permissions_for(method or "GET", read_methods=self.read_methods)

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> None:
        if request.authenticators and not request.successful_authenticator:
            challenge = self.get_authenticate_header(request)
            if challenge:
                raise AuthenticationRequired(
                    "Send an API key (Authorization: Bearer vhk_...) or sign in to use the knowledge API.",
                    headers={"WWW-Authenticate": challenge},
                )
        super().permission_denied(request, message=message, code=code)

    def handle_exception(self, exc: Exception) -> Response:
        # Django refuses oversized or abusive bodies while DRF parses them; they are the caller's fault.
        if isinstance(exc, RequestDataTooBig):
            exc = PayloadTooLarge(
                "The request body is too large; send large documents as a multipart file upload instead."
            )
        elif isinstance(exc, SuspiciousOperation):
            exc = ValidationFailed("The request is malformed or has too many fields or files.")
        return super().handle_exception(exc)

    @property
    def principal(self) -> Any:
        return request_principal(self.request)


def collection_or_404(request: Request, ref: str) -> Collection:
    """The collection named in the URL (id or slug), if the caller may read it."""
    collection = collection_get(principal=request_principal(request), ref=ref)
    if collection is None:
        raise NotFound(f"No collection {ref!r} that you may read.")
    return collection


def resolve_collections(refs: list[str], principal: Any) -> list[Collection]:
    """Collections named in a body or a filter (ids or slugs); an unknown or unreadable one is a 400."""
    ids = [int(r) for r in refs if str(r).isdigit()]
    slugs = [r for r in refs if not str(r).isdigit()]
    found = list(collection_list(principal=principal).filter(Q(pk__in=ids) | Q(slug__in=slugs)))
    known = {str(c.pk) for c in found} | {c.slug for c in found}
    missing = [r for r in refs if str(r) not in known]
    if missing:
        raise serializers.ValidationError({"collections": [f"unknown collection: {', '.join(missing)}"]})
    return found


# --- pagination --------------------------------------------------------------------------


class PageQuery(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE, help_text="Rows per page."
    )
    offset = serializers.IntegerField(required=False, min_value=0, default=0, help_text="Rows to skip.")


class Pagination(LimitOffsetPagination):
    default_limit = DEFAULT_PAGE_SIZE
    max_limit = MAX_PAGE_SIZE


def paginated(name: str, item: serializers.Serializer) -> type[serializers.Serializer]:
    """The schema of a page: ``{count, next, previous, results: [item]}``."""
    return type(
        name,
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(help_text="Rows in all pages."),
            "next": serializers.URLField(allow_null=True, help_text="The next page, or null."),
            "previous": serializers.URLField(allow_null=True, help_text="The previous page, or null."),
            "results": item,
        },
    )


def paginate(view: APIView, request: Request, rows: Any, render: Callable[[list[Any]], list[Any]]) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(rows, request, view=view)
    return paginator.get_paginated_response(render(page or []))


# --- schema --------------------------------------------------------------------------------


class ErrorBodyOut(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable: branch on it.")
    message = serializers.CharField(help_text="What went wrong and what to fix, safe to show.")
    fields = serializers.DictField(
        child=serializers.JSONField(), required=False, help_text="Per-field problems of the request."
    )
    files = serializers.ListField(
        child=serializers.DictField(), required=False, help_text="Per-file problems of an upload."
    )
    reason = serializers.CharField(required=False, help_text="A finer code (e.g. missing_scope, unknown_key).")
    scope = serializers.CharField(required=False, help_text="The scope the API key lacks (with missing_scope).")


class ErrorOut(serializers.Serializer):
    error = ErrorBodyOut()

    class Meta:
        ref_name = "KnowledgeError"


_COMMON_ERRORS = {
    401: "No, unknown, expired or revoked credentials (`WWW-Authenticate: Bearer`).",
    403: "The API key lacks the scope (`reason: missing_scope`), or the caller may not do this.",
}


def knowledge_schema(
    *,
    summary: str,
    scope: str,
    responses: dict[Any, Any],
    errors: dict[int, str] | None = None,
    description: str = "",
    **kwargs: Any,
) -> Callable[[Any], Any]:
    """``extend_schema`` with the knowledge API's conventions: the tag, the scope an API key needs
    (in the text and as ``x-required-scopes``) and the error responses every operation can give."""
    assert scope in (SCOPE_READ, SCOPE_WRITE)
    granted_by = f"`{SCOPE_READ}` or `{SCOPE_WRITE}`" if scope == SCOPE_READ else f"`{SCOPE_WRITE}`"
    text = f"API-key scope: {granted_by}. Browser sessions use the signed-in user's rights."
    all_errors = {**_COMMON_ERRORS, **(errors or {})}
    error_responses = {status: ErrorOut for status in all_errors}
    error_text = "\n".join(f"- **{status}**: {why}" for status, why in sorted(all_errors.items()))
    return extend_schema(
        tags=["knowledge"],
        summary=summary,
        description=f'{description}\n\n{text}\n\nErrors (`{{"error": {{code, message, ...}}}}`):\n{error_text}'.strip(),
        responses={**error_responses, **responses},
        extensions={"x-required-scopes": [scope]},
        **kwargs,
    )
