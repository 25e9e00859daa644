"""Who may call the knowledge REST API: the ONE place the views take their auth classes from.

Two kinds of caller:

- a browser session (Django login, CSRF-checked writes): reads when signed in, writes with
  staff or the ``knowledge`` model permissions; which collections is decided by
  ``knowledge.selectors``;
- a token credential (the gateway's API key): ``request.auth`` is a principal that speaks
  for a user (``user_id``) and carries ``scopes``. ``knowledge:read`` lists, gets and
  searches; ``knowledge:write`` also creates, changes and deletes (and so implies read).
  A key acts with its owner's collection grants, never more.

Fail-closed: a credential whose principal has no ``scopes`` grants nothing, and a key
without the scope an operation needs is refused with a 403 naming that scope, whichever
app authenticated it. The scope check lives here, not in the authenticating app, so an
authentication class plugged in without its own permission classes cannot open the API.

The gateway plugs its authentication in from its ``AppConfig.ready``
(``register_authentication(APIKeyAuthentication)``); the lists are read on every request
(never copied at import), so the order of app loading does not matter. Entries are
classes or ready instances.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.settings import api_settings

from config.errors import PermissionDenied

SCOPE_READ = "knowledge:read"
SCOPE_WRITE = "knowledge:write"

# Scopes that let a key do each kind of operation (write implies read).
ACCEPTED_SCOPES: dict[str, tuple[str, ...]] = {"read": (SCOPE_READ, SCOPE_WRITE), "write": (SCOPE_WRITE,)}


def token_scopes(request: Any) -> frozenset[str] | None:
    """The scopes of a token-authenticated request; None for a session (or anonymous) request.

    A credential that carries no ``scopes`` gets the empty set: it may do nothing here.
    """
    auth = getattr(request, "auth", None)
    if auth is None:
        return None
    return frozenset(getattr(auth, "scopes", None) or ())


def require_scope(request: Any, access: str) -> None:
    """Raise a 403 naming the missing scope when a token request may not do ``access`` ("read"/"write")."""
    scopes = token_scopes(request)
    if scopes is None:
        return
    accepted = ACCEPTED_SCOPES[access]
    if not scopes.intersection(accepted):
        raise PermissionDenied(
            f"This API key lacks the scope {accepted[0]!r}; ask an operator for a key that has it.",
            reason="missing_scope",
            scope=accepted[0],
        )


def _signed_in(request: Any) -> bool:
    return bool(getattr(request.user, "is_authenticated", False))


class CanReadKnowledge(BasePermission):
    """A signed-in user, or a key with ``knowledge:read`` (or ``knowledge:write``)."""

    message = "Sign in or send an API key (Authorization: Bearer vhk_...) to use the knowledge API."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not _signed_in(request):
            return False  # DRF answers 401 (no or unknown credentials)
        require_scope(request, "read")
        return True


class CanWriteKnowledge(BasePermission):
    """A key with ``knowledge:write``, or a signed-in user with a knowledge model permission.

    Which collections (and whether creating collections) is decided per operation by the
    views through ``knowledge.selectors`` with the caller's (the key owner's) rights.
    """

    message = "You may not change the knowledge base."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not _signed_in(request):
            return False
        if token_scopes(request) is not None:
            require_scope(request, "write")
            return True
        user = request.user
        # Fail-closed: being staff (admin access) is not a write right; a knowledge model
        # permission is (a superuser has every permission).
        return any(user.has_perm(p) for p in WRITE_MODEL_PERMISSIONS)


WRITE_MODEL_PERMISSIONS = (
    "knowledge.add_document",
    "knowledge.add_collection",
    "knowledge.change_collection",
    "knowledge.delete_collection",
)

# None: REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] (sessions).
AUTHENTICATION_CLASSES: list[Any] | None = None
READ_PERMISSION_CLASSES: list[Any] = [CanReadKnowledge]
WRITE_PERMISSION_CLASSES: list[Any] = [CanWriteKnowledge]


def register_authentication(authentication_class: Any) -> None:
    """Put a token authentication class in front of the default ones (idempotent).

    First in the list, so that DRF answers an unauthenticated request with a 401 and its
    ``WWW-Authenticate`` challenge rather than a bare 403.
    """
    global AUTHENTICATION_CLASSES
    current = list(AUTHENTICATION_CLASSES or api_settings.DEFAULT_AUTHENTICATION_CLASSES)
    if authentication_class not in current:
        current.insert(0, authentication_class)
    AUTHENTICATION_CLASSES = current


def authenticators() -> list[Any]:
    return instantiate(AUTHENTICATION_CLASSES or api_settings.DEFAULT_AUTHENTICATION_CLASSES)


def permissions_for(method: str, *, read_methods: tuple[str, ...] = ()) -> list[Any]:
    reading = method in SAFE_METHODS or method in read_methods
    return instantiate(READ_PERMISSION_CLASSES if reading else WRITE_PERMISSION_CLASSES)


def instantiate(entries: list[Any]) -> list[Any]:
    return [entry() if isinstance(entry, type) else entry for entry in entries]
