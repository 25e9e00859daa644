"""Who may call the knowledge REST API: the ONE place the views take their auth classes from.

The gateway plugs API keys in here without touching the views, e.g. in its
``AppConfig.ready``::

    from knowledge import permissions
    permissions.AUTHENTICATION_CLASSES[:] = [ApiKeyAuthentication, SessionAuthentication]
    permissions.READ_PERMISSION_CLASSES.append(HasScope("knowledge:read"))   # all must pass
    permissions.WRITE_PERMISSION_CLASSES.append(HasScope("knowledge:write"))
    knowledge.selectors.register_principal_resolver(api_key_collections)

The lists are read on every request (not copied at import), so the order of app
loading does not matter. Entries are permission classes or ready instances.
Which collections a caller sees is decided by ``knowledge.selectors.readable_collections``.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission


def _has_credentials(request) -> bool:
    # An authentication class that set request.auth (an API key) vouches for the caller.
    return bool(getattr(request.user, "is_authenticated", False) or getattr(request, "auth", None) is not None)


class CanReadKnowledge(BasePermission):
    message = "Sign in or send an API key to use the knowledge API."

    def has_permission(self, request, view) -> bool:
        return _has_credentials(request)


class CanWriteKnowledge(BasePermission):
    """Staff, users with ``knowledge.add_document``, or an API key (its scope is checked by the gateway)."""

    message = "You may not change the knowledge base."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if getattr(request, "auth", None) is not None:
            return True
        return bool(
            getattr(user, "is_authenticated", False) and (user.is_staff or user.has_perm("knowledge.add_document"))
        )


# None: REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"].
AUTHENTICATION_CLASSES: list[Any] | None = None
READ_PERMISSION_CLASSES: list[Any] = [CanReadKnowledge]
WRITE_PERMISSION_CLASSES: list[Any] = [CanWriteKnowledge]


def instantiate(entries: list[Any]) -> list[Any]:
    return [entry() if isinstance(entry, type) else entry for entry in entries]
