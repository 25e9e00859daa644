"""Public interface of the knowledge app: writes (``<entity>_<action>``) and retrieval.

Chat codes against ``retrieve``; the REST API, the admin, the worker and the
management commands are thin adapters over the functions here.

Consistency between the database (truth) and the search index:
- ingesting or updating a document computes the new chunks and vectors first, then
  replaces the chunks in one database transaction that also rewrites the document's
  chunks in the index; when the index write fails the transaction rolls back and the
  previous chunks are put back in the index (from their stored vectors);
- deleting removes the chunks from the index, then the rows; if the index is down
  the rows still go and a job retries the index deletion;
- ``index_rebuild`` and ``index_reconcile`` repair any remaining drift.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import PurePath
from typing import Any

import numpy as np
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.text import slugify

from inference import services as inference
from knowledge import jobs
from knowledge.errors import InvalidUpload, KnowledgeError, SearchUnavailable
from knowledge.models import Chunk, Collection, Document, Job, document_url, vector_to_bytes
from knowledge.parsing import detect_file_type, extract_text, validate_upload
from knowledge.search import get_search_backend
from knowledge.search.base import BaseSearchBackend, IndexedChunk, SearchQuery
from knowledge.search.fusion import FusedHit, reciprocal_rank_fusion
from knowledge.selectors import document_find_duplicate
from knowledge.text import chunk_text, detect_language, normalize_text
from knowledge.types import RetrievedChunk, SearchFilters
from monitoring.metrics import DOCUMENTS_INDEXED, RETRIEVAL_DURATION

logger = logging.getLogger(__name__)

Progress = Callable[[int, str], None]  # (percent, message)


class DuplicateDocument(InvalidUpload):
    code = "duplicate_document"
    http_status = 409


# --- collections ---------------------------------------------------------------------


def collection_create(
    *, name: str, slug: str | None = None, description: str = "", is_public: bool = False
) -> Collection:
    return Collection.objects.create(
        name=name, slug=slug or slugify(name, allow_unicode=True), description=description, is_public=is_public
    )


def collection_delete(*, collection: Collection) -> None:
    """Delete a collection with its documents, removing their chunks from the index."""
    for document in collection.documents.all():
        document_delete(document=document)
    collection.delete()


# --- documents -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadResult:
    document: Document
    created: bool  # False: the same bytes were already in the collection (nothing new stored)
    job: Job | None


@dataclass(frozen=True, slots=True)
class UploadFile:
    """One file of an upload, with the metadata to store on its document."""

    filename: str
    data: bytes
    content_type: str | None = None
    title: str = ""
    source: str = ""
    category: str = ""
    language: str = ""
    timestamp: Any = None


class UploadRejected(InvalidUpload):
    """One or more files of a multi-file upload are invalid; nothing was stored."""

    def __init__(self, errors: list[tuple[str, InvalidUpload]]) -> None:
        self.errors = errors
        first = errors[0][1]
        self.code = first.code if len(errors) == 1 else "invalid_upload"
        self.http_status = first.http_status if len(errors) == 1 else 400
        super().__init__("; ".join(str(e) for _, e in errors))


def _content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checked(upload: UploadFile) -> tuple[str, str, str]:
    """(safe filename, file type, content hash) or an InvalidUpload."""
    filename = PurePath(upload.filename or "upload").name[:255] or "upload"
    file_type = detect_file_type(filename, upload.content_type)
    validate_upload(upload.data, filename=filename, file_type=file_type)
    return filename, file_type, _content_hash(upload.data)


def document_upload_many(
    *, collection: Collection, files: Sequence[UploadFile], user: Any = None
) -> list[UploadResult]:
    """Store uploaded files and queue their ingestion: all of them, or none.

    Synchronous checks (type, size, emptiness, the file opens, the text decodes) run
    on every file first; if any fails, ``UploadRejected`` lists each bad file and
    nothing is stored. Bytes the collection already holds return the existing
    document (``created=False``); the same bytes twice in one upload count once.
    """
    checked: list[tuple[UploadFile, str, str, str]] = []
    errors: list[tuple[str, InvalidUpload]] = []
    for upload in files:
        try:
            checked.append((upload, *_checked(upload)))
        except InvalidUpload as exc:
            errors.append((upload.filename, exc))
    if errors:
        raise UploadRejected(errors)
    for attempt in (1, 2):
        try:
            results = _store_uploads(collection, checked, user)
            break
        except IntegrityError:
            # A concurrent upload of the same bytes won the unique (collection, hash)
            # race; the second attempt finds its document.
            if attempt == 2:
                raise
    # Outside the transaction: under KNOWLEDGE_JOBS_INLINE the jobs run now.
    for result in results:
        if result.job is not None:
            jobs.dispatch(result.job)
            result.document.refresh_from_db()
    return results


def _store_uploads(
    collection: Collection, checked: list[tuple[UploadFile, str, str, str]], user: Any
) -> list[UploadResult]:
    results: list[UploadResult] = []
    stored_files: list[tuple[Any, str]] = []
    try:
        with transaction.atomic():
            seen: dict[str, Document] = {}
            for upload, filename, file_type, digest in checked:
                existing = seen.get(digest) or document_find_duplicate(collection_id=collection.pk, content_hash=digest)
                if existing is not None:
                    results.append(UploadResult(existing, False, None))
                    continue
                document = Document(
                    collection=collection,
                    title=upload.title.strip()[:300],
                    source=upload.source.strip()[:300],
                    category=upload.category.strip()[:100],
                    language=upload.language.strip()[:8],
                    timestamp=upload.timestamp,
                    original_filename=filename,
                    file_type=file_type,
                    size_bytes=len(upload.data),
                    content_hash=digest,
                    created_by=user if getattr(user, "is_authenticated", False) else None,
                )
                document.file.save(filename, ContentFile(upload.data), save=False)
                stored_files.append((document.file.storage, document.file.name))
                document.save()
                seen[digest] = document
                results.append(UploadResult(document, True, jobs.enqueue(kind=Job.Kind.INGEST, document=document)))
    except BaseException:
        for storage, name in stored_files:  # no orphan files for a rolled-back upload
            storage.delete(name)
        raise
    return results


def document_upload(
    *,
    collection: Collection,
    filename: str,
    data: bytes,
    content_type: str | None = None,
    title: str = "",
    source: str = "",
    category: str = "",
    language: str = "",
    timestamp: Any = None,
    user: Any = None,
) -> UploadResult:
    """One file: see ``document_upload_many``. Raises the file's own InvalidUpload subclass."""
    upload = UploadFile(filename, data, content_type, title, source, category, language, timestamp)
    try:
        return document_upload_many(collection=collection, files=[upload], user=user)[0]
    except UploadRejected as exc:
        raise exc.errors[0][1] from None


def document_replace_file(*, document: Document, filename: str, data: bytes, content_type: str | None = None) -> Job:
    """Upload a new version of a document: its chunks are replaced when the job runs."""
    filename, file_type, digest = _checked(UploadFile(filename, data, content_type))
    other = document_find_duplicate(collection_id=document.collection_id, content_hash=digest)
    if other is not None and other.pk != document.pk:
        raise DuplicateDocument(f"This file is already in the collection as document {other.pk} ({other}).")
    old_file = document.file.name
    with transaction.atomic():
        document.file.save(filename, ContentFile(data), save=False)
        document.original_filename = filename
        document.file_type = file_type
        document.size_bytes = len(data)
        document.content_hash = digest
        document.status = Document.Status.PENDING
        document.error = ""
        document.save()
        job = jobs.enqueue(kind=Job.Kind.INGEST, document=document)
    if old_file and old_file != document.file.name:
        document.file.storage.delete(old_file)
    jobs.dispatch(job)
    return job


def document_update_metadata(*, document: Document, **fields: Any) -> Job | None:
    """Change title/source/category/language/timestamp; the index copy is refreshed by a job."""
    allowed = {"title", "source", "category", "language", "timestamp"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(document, name, value)
    with transaction.atomic():
        document.save()
        job = jobs.enqueue(kind=Job.Kind.REINDEX_DOCUMENT, document=document) if document.chunk_count else None
    if job:
        jobs.dispatch(job)
    return job


def document_request_reindex(*, document: Document) -> Job:
    """Queue a re-index (re-push stored chunks, or re-ingest the file when there are none)."""
    job = jobs.enqueue(kind=Job.Kind.REINDEX_DOCUMENT, document=document)
    jobs.dispatch(job)
    return job


def document_delete(*, document: Document) -> None:
    """Remove a document from the index and the database (its file too)."""
    document_id = document.pk
    try:
        get_search_backend().delete_document(document_id)
        index_failed = False
    except KnowledgeError as exc:
        logger.warning("index delete of document %s failed, queued for retry: %s", document_id, exc)
        index_failed = True
    file_name = document.file.name
    storage = document.file.storage
    with transaction.atomic():
        document.delete()
        job = (
            jobs.enqueue(kind=Job.Kind.DELETE_FROM_INDEX, payload={"document_id": document_id})
            if index_failed
            else None
        )
    if file_name:
        storage.delete(file_name)
    if job:
        jobs.dispatch(job)


def _embed(texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
    """Passage vectors in batches of KNOWLEDGE_EMBED_BATCH_SIZE through the inference layer."""
    batch_size = settings.KNOWLEDGE_EMBED_BATCH_SIZE
    dim = inference.embedding_dim()
    out = np.zeros((len(texts), dim), dtype=np.float32)
    embed = async_to_sync(inference.embed_passages)
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        vectors = np.asarray(embed(batch), dtype=np.float32)
        if vectors.shape != (len(batch), dim) or not np.isfinite(vectors).all():
            raise KnowledgeError(f"the embedding service returned shape {vectors.shape}, expected {(len(batch), dim)}")
        out[start : start + len(batch)] = vectors
        if progress:
            done = start + len(batch)
            progress(10 + int(80 * done / len(texts)), f"embedded {done}/{len(texts)} chunks")
    return out


def indexed_chunk(chunk: Chunk, document: Document) -> IndexedChunk:
    return IndexedChunk(
        chunk_id=chunk.pk,
        document_id=document.pk,
        collection_id=document.collection_id,
        ordinal=chunk.ordinal,
        text=chunk.text,
        title=document.display_title,
        source=document.source,
        category=document.category,
        language=document.language,
        timestamp=document.timestamp,
        embedding=chunk.vector,
    )


def _restore_index(backend: BaseSearchBackend, document: Document, chunks: list[Chunk]) -> None:
    try:
        _push_stored_chunks(backend, document, chunks)
    except Exception:  # the engine is down: index_reconcile repairs it later
        logger.exception("could not restore the index copy of document %s", document.pk)


def _mark_failed(document_id: int, error: str) -> None:
    Document.objects.filter(pk=document_id).update(
        status=Document.Status.FAILED, error=error[:4000], updated_at=timezone.now()
    )


def document_ingest(*, document: Document, progress: Progress | None = None) -> Document:
    """Parse, chunk, embed and index a document (the ingest job's body; slow, never in a request).

    On failure the document is marked failed with the error and the exception re-raised;
    the chunks stay as they were (none for a new document, the previous version for an update).
    """
    backend = get_search_backend()
    Document.objects.filter(pk=document.pk).update(status=Document.Status.INDEXING, error="")
    try:
        with document.file.open("rb") as fh:
            data = fh.read()
        if progress:
            progress(2, "parsing")
        parsed = extract_text(data, filename=document.original_filename, file_type=document.file_type)
        pieces = chunk_text(parsed.text)
        if progress:
            progress(10, f"{len(pieces)} chunks")
        vectors = _embed([p.text for p in pieces], progress)
        model_name = inference.embedding_model_name()
        old_chunks = list(document.chunks.all())
        try:
            with transaction.atomic():
                # Lock the row: two jobs for one document never interleave their writes.
                doc = Document.objects.select_for_update().get(pk=document.pk)
                doc.chunks.all().delete()
                new_chunks = Chunk.objects.bulk_create(
                    [
                        Chunk(
                            document=doc,
                            ordinal=p.ordinal,
                            text=p.text,
                            token_count=p.token_count,
                            char_start=p.char_start,
                            char_end=p.char_end,
                            embedding_model=model_name,
                            embedding=vector_to_bytes(vectors[i]),
                        )
                        for i, p in enumerate(pieces)
                    ],
                    batch_size=500,
                )
                if any(c.pk is None for c in new_chunks):  # databases that do not return ids
                    new_chunks = list(doc.chunks.all())
                doc.title = doc.title or parsed.title[:300] or PurePath(doc.original_filename).stem[:300]
                doc.language = doc.language or detect_language(parsed.text)
                doc.status = Document.Status.INDEXED
                doc.error = ""
                doc.chunk_count = len(new_chunks)
                doc.embedding_model = model_name
                doc.indexed_at = timezone.now()
                doc.save()
                if progress:
                    progress(92, "writing the index")
                backend.delete_document(doc.pk)
                backend.add_bulk([indexed_chunk(c, doc) for c in new_chunks])
        except Exception:
            _restore_index(backend, document, old_chunks)
            raise
        DOCUMENTS_INDEXED.labels(backend=backend.name).inc(len(new_chunks))
        return doc
    except Exception as exc:
        _mark_failed(document.pk, _describe(exc))
        raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KnowledgeError):
        return f"{exc.code}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _push_stored_chunks(backend: BaseSearchBackend, document: Document, chunks: list[Chunk]) -> None:
    backend.delete_document(document.pk)
    if chunks:
        backend.add_bulk([indexed_chunk(c, document) for c in chunks])


def document_reindex(*, document: Document, progress: Progress | None = None) -> Document:
    """Write an indexed document's stored chunks (vectors included) to the index again.

    A document that is not indexed (failed, pending), has no chunks, or whose chunks
    were embedded by another model is ingested from its file instead.
    """
    chunks = list(document.chunks.all())
    model_name = inference.embedding_model_name()
    if document.status != Document.Status.INDEXED or not chunks or any(c.embedding_model != model_name for c in chunks):
        return document_ingest(document=document, progress=progress)
    _push_stored_chunks(get_search_backend(), document, chunks)
    return document


def document_delete_from_index(*, document_id: int) -> None:
    get_search_backend().delete_document(document_id)


# --- the index as a whole ---------------------------------------------------------------


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
            _push_stored_chunks(backend, document, list(document.chunks.all()))
            fixed += 1
    return fixed


# --- retrieval -----------------------------------------------------------------------


def _to_retrieved(hit: FusedHit, score: float) -> RetrievedChunk:
    c = hit.chunk
    return RetrievedChunk(
        chunk_id=c.chunk_id,
        document_id=c.document_id,
        collection_id=c.collection_id,
        ordinal=c.ordinal,
        text=c.text,
        score=score,
        title=c.title,
        source=c.source,
        category=c.category,
        language=c.language,
        url=document_url(c.document_id),
        timestamp=c.timestamp,
        lexical_rank=hit.lexical_rank,
        semantic_rank=hit.semantic_rank,
    )


async def retrieve(
    query: str,
    *,
    filters: SearchFilters | None = None,
    top_k: int = 5,
    rerank: bool | None = None,
) -> list[RetrievedChunk]:
    """Hybrid BM25 + kNN retrieval, fused with RRF, optionally reranked. Best first.

    ``filters.collection_ids=None`` searches every collection: callers acting for a
    user pass ``readable_collection_ids(principal)``. ``rerank=None`` follows
    KNOWLEDGE_RERANK_DEFAULT; reranking runs only when the inference layer has a
    reranker and degrades to the fused order when it fails. When the query cannot be
    embedded the search is lexical only. Raises ``SearchUnavailable`` when the search
    engine fails. Never touches the database with the Elasticsearch backend.
    """
    started = time.perf_counter()
    query = normalize_text(query or "")[: settings.KNOWLEDGE_MAX_QUERY_CHARS]
    if not query:
        return []
    top_k = max(1, min(int(top_k), settings.KNOWLEDGE_MAX_TOP_K))
    filters = filters or SearchFilters()
    backend = get_search_backend()
    try:
        vector = await inference.embed_query(query)
    except Exception as exc:  # the embedding service is down: lexical search still answers
        logger.warning("query embedding failed, searching lexically only: %s", exc)
        vector = None
    candidates = max(settings.KNOWLEDGE_SEARCH_CANDIDATES, top_k)
    t0 = time.perf_counter()
    result = await backend.search(SearchQuery(query, vector, filters, candidates))
    RETRIEVAL_DURATION.labels(stage="search", backend=backend.name).observe(time.perf_counter() - t0)
    fused = reciprocal_rank_fusion(
        result,
        k=settings.KNOWLEDGE_RRF_K,
        lexical_weight=settings.KNOWLEDGE_RRF_LEXICAL_WEIGHT,
        semantic_weight=settings.KNOWLEDGE_RRF_SEMANTIC_WEIGHT,
    )
    ranked = [(hit, hit.score) for hit in fused]
    use_rerank = settings.KNOWLEDGE_RERANK_DEFAULT if rerank is None else rerank
    if use_rerank and ranked and inference.reranker_available():
        pool = ranked[: max(top_k, settings.KNOWLEDGE_RERANK_CANDIDATES)]
        t1 = time.perf_counter()
        try:
            scores = await inference.rerank(query, [hit.chunk.text for hit, _ in pool])
            if len(scores) != len(pool):
                raise ValueError(f"{len(scores)} scores for {len(pool)} passages")
            ranked = sorted(((hit, float(s)) for (hit, _), s in zip(pool, scores, strict=True)), key=lambda p: -p[1])
        except Exception as exc:  # reranking is an improvement, not a requirement
            logger.warning("rerank failed, keeping the fused order: %s", exc)
        RETRIEVAL_DURATION.labels(stage="rerank", backend=backend.name).observe(time.perf_counter() - t1)
    RETRIEVAL_DURATION.labels(stage="total", backend=backend.name).observe(time.perf_counter() - started)
    return [_to_retrieved(hit, score) for hit, score in ranked[:top_k]]


def retrieve_sync(query: str, **kwargs: Any) -> list[RetrievedChunk]:
    """``retrieve`` for synchronous callers (REST views, commands)."""
    return async_to_sync(retrieve)(query, **kwargs)


__all__ = [
    "DuplicateDocument",
    "RebuildReport",
    "SearchUnavailable",
    "UploadResult",
    "collection_create",
    "collection_delete",
    "document_delete",
    "document_ingest",
    "document_reindex",
    "document_replace_file",
    "document_request_reindex",
    "document_update_metadata",
    "document_upload",
    "document_upload_many",
    "index_rebuild",
    "index_reconcile",
    "retrieve",
    "retrieve_sync",
]
