"""Ingestion: parse a document's file, chunk it, embed the chunks and write them to the index.

The bodies of the ingest and reindex jobs (slow; never run in a web request, never
enqueue). Consistency between the database (truth) and the index: the new chunks and
vectors are computed first, then one database transaction replaces the chunks and
rewrites the document's index entries; when the index write fails the transaction
rolls back and the previous chunks are put back in the index from their stored vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import PurePath

import numpy as np
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inference import services as inference
from knowledge.errors import KnowledgeError
from knowledge.models import Chunk, Document, vector_to_bytes
from knowledge.sandbox import extract_text_isolated
from knowledge.search import get_search_backend
from knowledge.search.base import BaseSearchBackend, IndexedChunk
from knowledge.services.generation import index_generation_advance
from knowledge.text import chunk_text, detect_language
from monitoring.metrics import DOCUMENTS_INDEXED

logger = logging.getLogger(__name__)

Progress = Callable[[int, str], None]  # (percent, message)


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
        push_stored_chunks(backend, document, chunks)
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
        # In a bounded child process: time, memory, archive and page limits (knowledge/sandbox.py).
        parsed = extract_text_isolated(data, filename=document.original_filename, file_type=document.file_type)
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
        # New or replaced chunks are searchable now: answers cached over the old ones are stale.
        index_generation_advance(reason=f"document {doc.pk} indexed")
        return doc
    except Exception as exc:
        _mark_failed(document.pk, _describe(exc))
        raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KnowledgeError):
        return f"{exc.code}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def push_stored_chunks(backend: BaseSearchBackend, document: Document, chunks: list[Chunk]) -> None:
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
    push_stored_chunks(get_search_backend(), document, chunks)
    index_generation_advance(reason=f"document {document.pk} re-indexed")
    return document


def document_delete_from_index(*, document_id: int) -> None:
    get_search_backend().delete_document(document_id)
    index_generation_advance(reason=f"document {document_id} removed from the index")
