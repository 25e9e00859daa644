"""The index as a whole: rebuild it from the stored chunks, reconcile it with the database.

Both repair drift between PostgreSQL (the truth) and the search index; neither needs
the embedding service (chunks keep their vectors).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice

from django.db.models import Count
from django.utils import timezone

from knowledge.models import Chunk, Document
from knowledge.search import get_search_backend
from knowledge.search.base import BaseSearchBackend
from knowledge.services.generation import index_generation_advance
from knowledge.services.ingest import indexed_chunk, push_stored_chunks


@dataclass(frozen=True, slots=True)
class RebuildReport:
    index: str
    chunks: int
    replaced: list[str]
    reconciled: int
    seconds: float


def _batched(iterable: Iterable, size: int) -> Iterable[list]:
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def index_rebuild(
    *,
    backend: BaseSearchBackend | None = None,
    batch_size: int = 500,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> RebuildReport:
    """Build a fresh concrete index from the stored chunks and swap the alias to it.

    Search keeps answering from the old index until the atomic swap. Writes made
    while the build runs land in the old index; ``index_reconcile`` afterwards copies
    them (documents changed or deleted meanwhile) into the new one.
    """
    backend = backend or get_search_backend()
    started = time.perf_counter()
    since = timezone.now()
    new_index = backend.create_index()
    try:
        chunks = (
            Chunk.objects.filter(document__status=Document.Status.INDEXED).select_related("document").order_by("pk")
        )
        if on_start:
            on_start(chunks.count())
        written = 0
        for batch in _batched(chunks.iterator(chunk_size=batch_size), batch_size):
            written += backend.add_bulk([indexed_chunk(c, c.document) for c in batch], index=new_index)
            if on_batch:
                on_batch(len(batch))
        backend.refresh(new_index)
        replaced = backend.swap_alias(new_index)
    except BaseException:
        backend.delete_index(new_index)
        raise
    reconciled = index_reconcile(backend=backend, changed_since=since)
    index_generation_advance(reason="index rebuilt")
    return RebuildReport(new_index, written, replaced, reconciled, time.perf_counter() - started)


def index_reconcile(*, backend: BaseSearchBackend | None = None, changed_since=None) -> int:
    """Make the live index match the database; return how many documents were fixed.

    Documents being ingested right now are left alone (their job writes both sides).
    """
    backend = backend or get_search_backend()
    in_index = backend.document_chunk_counts()
    busy = set(Document.objects.filter(status__in=[Document.Status.INDEXING]).values_list("pk", flat=True))
    expected = dict(
        Chunk.objects.exclude(document_id__in=busy)
        .values("document_id")
        .annotate(n=Count("id"))
        .values_list("document_id", "n")
    )
    changed = set()
    if changed_since is not None:
        changed = set(Document.objects.filter(updated_at__gte=changed_since).values_list("pk", flat=True))
    fixed = 0
    for document_id in set(in_index) - set(expected) - busy:
        backend.delete_document(document_id)
        fixed += 1
    for document in Document.objects.filter(pk__in=set(expected)).exclude(pk__in=busy):
        if in_index.get(document.pk) != expected[document.pk] or document.pk in changed:
            push_stored_chunks(backend, document, list(document.chunks.all()))
            fixed += 1
    if fixed:
        index_generation_advance(reason=f"index reconciled ({fixed} documents)")
    return fixed
