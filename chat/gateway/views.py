"""The gateway's own endpoint: ``GET /api/gateway/whoami``.

A tiny request protected exactly like a chat request (bearer key or session, the
subject's rate limits, the Redis fail mode) that never calls a model. Integrators use it
to check a key and read their current limit headers; the multi-process tests use it to
prove that replicas share one limit.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from chat.errors import PlatformError
from chat.gateway.auth import authenticate_bearer, client_ip, subject_for
from chat.gateway.services import admit, settle


@require_GET
async def whoami(request: HttpRequest) -> JsonResponse:
    try:
        principal = await authenticate_bearer(request.headers.get("Authorization"))
        user = None if principal else await request.auser()
        subject = subject_for(
            principal=principal, user=user, ip=client_ip(request.META), session_key=request.session.session_key
        )
        admission = await admit(subject, cache_key=None)
        if not admission.allowed:
            raise admission.as_error()
        try:
            body = {
                "user_id": subject.user_id,
                "api_key": principal.prefix if principal else None,
                "scopes": sorted(principal.scopes) if principal else None,
                "anonymous": subject.is_anonymous,
                "limit_scope": admission.scope,
            }
        finally:
            await settle(subject, admission, prompt_tokens=0, completion_tokens=0)
        return JsonResponse(body, headers=admission.headers())
    except PlatformError as exc:
        return JsonResponse(exc.as_dict(), status=exc.http_status, headers=exc.headers)
