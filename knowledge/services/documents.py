"""Collections and documents: uploads, metadata, replacing a file, deleting, asking for a reindex.

Writes store the rows and queue jobs in one transaction (``knowledge.jobs.enqueue``
dispatches on commit); the slow work (parse, embed, index) is the jobs' (``ingest``).
Deleting removes the chunks from the index first, then the rows; if the index is down
the rows still go and a job retries the index deletion.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from knowledge import jobs
from knowledge.errors import InvalidUpload, KnowledgeError
from knowledge.models import Collection, Document, Job
from knowledge.parsing import detect_file_type, validate_upload
from knowledge.search import get_search_backend
from knowledge.selectors import document_find_duplicate

logger = logging.getLogger(__name__)


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
        files = [{"file": name, "code": e.code, "message": e.message} for name, e in errors]
        super().__init__("; ".join(e.message for _, e in errors), files=files)
        self.code = first.code if len(errors) == 1 else "invalid_upload"
        self.http_status = first.http_status if len(errors) == 1 else 400


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
    for result in results:
        if result.job is not None:
            # Under KNOWLEDGE_JOBS_INLINE the job ran when the upload committed.
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
    return job


def document_request_reindex(*, document: Document) -> Job:
    """Queue a re-index (re-push stored chunks, or re-ingest the file when there are none)."""
    return jobs.enqueue(kind=Job.Kind.REINDEX_DOCUMENT, document=document)


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
        if index_failed:
            jobs.enqueue(kind=Job.Kind.DELETE_FROM_INDEX, payload={"document_id": document_id})
    if file_name:
        storage.delete(file_name)
