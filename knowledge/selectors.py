"""Reads of the knowledge app, access decisions included.

Access hook: ``readable_collections(principal)`` / ``writable_collections(principal)``
return querysets of collection ids. A principal is whatever the request
authenticated as: a user, ``AnonymousUser``, or (once the gateway adds API keys) a
key object. Other apps teach these selectors about their own principal types with
``register_principal_resolver``; the first resolver that answers (not None) wins,
then the user rules apply:

- staff (or superuser): every collection;
- authenticated user: public collections + those granted to the user or one of their groups;
- anonymous: public collections only.

Writing needs the ``knowledge.add_document`` permission (staff alone is not enough;
superusers have it), and for a non-staff user a grant on the collection (public is not
enough). A principal that is not a user but has a
``user_id`` (the gateway's API-key principal) gets its user's rights unless a
resolver says otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Literal

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from knowledge.models import Chunk, Collection, Document, Job

Access = Literal["read", "write"]
# A resolver returns a queryset/list of collection ids, or None when it does not handle the principal.
PrincipalResolver = Callable[[Any, Access], "QuerySet[Collection] | list[int] | None"]

_resolvers: list[PrincipalResolver] = []


def register_principal_resolver(resolver: PrincipalResolver) -> None:
    """Plug in another principal type (e.g. an API key with ``knowledge:read`` / ``knowledge:write`` scopes)."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def request_principal(request) -> Any:
    """``request.auth`` when an authentication class set one (an API key), else ``request.user``."""
    auth = getattr(request, "auth", None)
    return auth if auth is not None else getattr(request, "user", None)


def _granted(user) -> Q:
    return Q(readers=user) | Q(reader_groups__in=user.groups.all())


def _as_user(principal: Any) -> Any:
    """A user, AnonymousUser or None; a principal that speaks for a user (``user_id``) becomes that user."""
    if principal is None or hasattr(principal, "is_authenticated"):
        return principal
    user_id = getattr(principal, "user_id", None)
    if user_id is None:
        return None
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk=user_id, is_active=True).first()


def _collection_ids(principal: Any, access: Access):
    for resolver in _resolvers:
        answer = resolver(principal, access)
        if answer is not None:
            return answer
    collections = Collection.objects.all()
    # Without a resolver of its own, an API-key principal reads what its user reads
    # (the key's scopes are checked by the REST permission classes).
    user = _as_user(principal)
    if user is None or not getattr(user, "is_authenticated", False):
        if access == "write":
            return collections.none().values_list("id", flat=True)
        return collections.filter(is_public=True).values_list("id", flat=True)
    if access == "write":
        # Fail-closed: writing needs the permission, staff or not (a superuser has it).
        if not user.has_perm("knowledge.add_document"):
            return collections.none().values_list("id", flat=True)
        if user.is_staff or user.is_superuser:
            return collections.values_list("id", flat=True)
        return collections.filter(_granted(user)).values_list("id", flat=True).distinct()
    if user.is_staff or user.is_superuser:
        return collections.values_list("id", flat=True)
    return collections.filter(Q(is_public=True) | _granted(user)).values_list("id", flat=True).distinct()


def readable_collections(principal: Any):
    """Ids of the collections ``principal`` may search and read (a lazy queryset or a list)."""
    return _collection_ids(principal, "read")


def writable_collections(principal: Any):
    """Ids of the collections ``principal`` may upload to and delete from."""
    return _collection_ids(principal, "write")


def readable_collection_ids(principal: Any) -> tuple[int, ...]:
    return tuple(sorted(set(readable_collections(principal))))


def principal_user(principal: Any) -> Any:
    """The user whose rights ``principal`` has (itself, or an API key's owner); None when there is none."""
    return _as_user(principal)


def may_manage_collections(
    principal: Any, action: Literal["add", "change", "delete"], collection: Collection | None = None
) -> bool:
    """Staff; or the ``knowledge.<action>_collection`` model permission (a key: its owner's) and,
    for an existing collection, a grant on it (readers / reader groups)."""
    user = _as_user(principal)
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if not user.has_perm(f"knowledge.{action}_collection"):
        return False  # fail-closed: staff without the permission may not either
    if user.is_staff or user.is_superuser:
        return True
    return collection is None or Collection.objects.filter(_granted(user), pk=collection.pk).exists()


def collection_list(*, principal: Any) -> QuerySet[Collection]:
    return Collection.objects.filter(id__in=readable_collections(principal))


def collection_list_with_counts(*, principal: Any) -> QuerySet[Collection]:
    """Readable collections with ``document_count`` and ``indexed_count`` (one query)."""
    return collection_list(principal=principal).annotate(
        document_count=Count("documents"),
        indexed_count=Count("documents", filter=Q(documents__status=Document.Status.INDEXED)),
    )


def collection_get(*, principal: Any, ref: str | int) -> Collection | None:
    """A readable collection by id or slug (None for unknown and unreadable alike: ids cannot be probed)."""
    collections = collection_list_with_counts(principal=principal)
    if isinstance(ref, int) or str(ref).isdigit():
        return collections.filter(pk=int(ref)).first()
    return collections.filter(slug=ref).first()


def collection_is_writable(*, principal: Any, collection: Collection) -> bool:
    return Collection.objects.filter(pk=collection.pk, id__in=writable_collections(principal)).exists()


def _latest_job(field: str) -> Subquery:
    return Subquery(Job.objects.filter(document=OuterRef("pk")).order_by("-created_at", "-pk").values(field)[:1])


def document_list(
    *,
    principal: Any,
    collection_id: int | None = None,
    status: str | None = None,
    category: str | None = None,
    source: str | None = None,
    updated_since: dt.datetime | None = None,
    external_id: str | None = None,
) -> QuerySet[Document]:
    """Documents in readable collections, newest first, each with its latest job
    (``latest_job_id``, ``latest_job_status``: two correlated subqueries, no N+1)."""
    documents = (
        Document.objects.filter(collection_id__in=readable_collections(principal))
        .select_related("collection")
        .annotate(latest_job_id=_latest_job("pk"), latest_job_status=_latest_job("status"))
        .order_by("-created_at", "-pk")
    )
    if collection_id is not None:
        documents = documents.filter(collection_id=collection_id)
    if status:
        documents = documents.filter(status=status)
    if category:
        documents = documents.filter(category=category)
    if source:
        documents = documents.filter(source=source)
    if updated_since is not None:
        documents = documents.filter(updated_at__gte=updated_since)
    if external_id:
        documents = documents.filter(external_id=external_id)
    return documents


def document_get(*, principal: Any, document_id: int) -> Document | None:
    return document_list(principal=principal).filter(pk=document_id).first()


def document_by_external_id(*, principal: Any, collection: Collection, external_id: str) -> Document | None:
    return document_list(principal=principal, collection_id=collection.pk, external_id=external_id).first()


def job_get(*, principal: Any, job_id: int) -> Job | None:
    """A job of a document the principal may read; jobs whose document is gone: staff only."""
    user = _as_user(principal)
    jobs = Job.objects.filter(pk=job_id)
    if user is None or not (getattr(user, "is_staff", False) or getattr(user, "is_superuser", False)):
        jobs = jobs.filter(document__collection_id__in=readable_collections(principal))
    return jobs.first()


def document_chunks(*, document: Document) -> QuerySet[Chunk]:
    return document.chunks.defer("embedding").order_by("ordinal")


def document_find_duplicate(*, collection_id: int, content_hash: str) -> Document | None:
    return Document.objects.filter(collection_id=collection_id, content_hash=content_hash).first()
