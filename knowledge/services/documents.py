"""Collections and documents: uploads, metadata, replacing a file, deleting, asking for a reindex.

Writes store the rows and queue jobs in one transaction (``knowledge.jobs.enqueue``
dispatches on commit); the slow work (parse, embed, index) is the jobs' (``ingest``).
Deleting removes the chunks from the index first, then the rows; if the index is down
the rows still go and a job retries the index deletion.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from config.errors import NotFound
from knowledge import jobs
from knowledge.errors import InvalidUpload, KnowledgeError
from knowledge.models import Collection, Document, Job
from knowledge.parsing import detect_file_type, validate_upload
from knowledge.search import get_search_backend
from knowledge.selectors import document_find_duplicate
from knowledge.services.generation import index_generation_advance

logger = logging.getLogger(__name__)


class DuplicateDocument(InvalidUpload):
    code = "duplicate_document"
    http_status = 409


class CollectionExists(KnowledgeError):
    code = "collection_exists"
    http_status = 409
    message = "A collection with this name or slug already exists."


class InvalidCollection(KnowledgeError):
    code = "invalid_collection"
    http_status = 400
    message = "The collection's name or slug is invalid."


class InvalidExternalId(KnowledgeError):
    code = "invalid_external_id"
    http_status = 400
    message = "An external id is 1-200 characters, without '/' or control characters, not starting with '.' or a space."


class ExternalIdTaken(KnowledgeError):
    code = "duplicate_external_id"
    http_status = 409
    message = "Another document in this collection has this external id."


# --- collections ---------------------------------------------------------------------

COLLECTION_FIELDS = ("name", "description", "is_public")


def collection_create(
    *, name: str, slug: str | None = None, description: str = "", is_public: bool = False, creator: Any = None
) -> Collection:
    """A new collection. A creator who is not staff is granted it (so they see what they made).

    Raises ``CollectionExists`` (409) for a taken name or slug, ``InvalidCollection`` (400)
    for a name that gives no slug.
    """
    name = name.strip()
    # A name may be twice as long as a slug may be: the derived slug is cut to the column.
    slug_max = Collection._meta.get_field("slug").max_length
    slug = (slug or slugify(name, allow_unicode=True)[:slug_max].rstrip("-_")).strip()
    if not name or not slug:
        raise InvalidCollection("Give the collection a name (and a slug when the name has no letters or digits).")
    if Collection.objects.filter(name=name).exists() or Collection.objects.filter(slug=slug).exists():
        raise CollectionExists(f"A collection named {name!r} or with the slug {slug!r} already exists.")
    try:
        with transaction.atomic():
            collection = Collection.objects.create(name=name, slug=slug, description=description, is_public=is_public)
            if creator is not None and getattr(creator, "is_authenticated", False) and not creator.is_staff:
                collection.readers.add(creator)
    except IntegrityError:  # a concurrent create won the unique name/slug
        raise CollectionExists(f"A collection named {name!r} or with the slug {slug!r} already exists.") from None
    return collection


def collection_update(*, collection: Collection, **fields: Any) -> Collection:
    """Change name, description or visibility (``is_public``). The index holds none of them: no job."""
    unknown = set(fields) - set(COLLECTION_FIELDS)
    if unknown:
        raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
    if "name" in fields:
        fields["name"] = fields["name"].strip()
        if not fields["name"]:
            raise InvalidCollection("The name cannot be blank.")
        if Collection.objects.filter(name=fields["name"]).exclude(pk=collection.pk).exists():
            raise CollectionExists(f"A collection named {fields['name']!r} already exists.")
    for name, value in fields.items():
        setattr(collection, name, value)
    try:
        with transaction.atomic():
            collection.save()
            if "is_public" in fields:  # who may read it changed: answers cached over it are stale
                index_generation_advance(reason=f"collection {collection.pk} visibility")
    except IntegrityError:
        raise CollectionExists("A collection with this name already exists.") from None
    return collection


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


TEXT_FORMATS = {"text": "txt", "markdown": "md"}


def text_upload(
    *, text: str, text_format: str = "text", title: str = "", name_hint: str = "", **metadata: Any
) -> UploadFile:
    """Plain text or Markdown sent as a string, as an upload (the same checks and pipeline as a file).

    The file name comes from the title, else ``name_hint`` (an external id): ``<name>.md``,
    so citations and the admin show something recognisable.
    """
    extension = TEXT_FORMATS[text_format]
    stem = slugify(title or name_hint, allow_unicode=True)[:100] or "document"
    return UploadFile(filename=f"{stem}.{extension}", data=text.encode(), title=title, **metadata)


@dataclass(frozen=True, slots=True)
class SyncResult:
    document: Document
    created: bool  # a new document for this external id
    changed: bool  # False: same bytes and metadata as stored, nothing was done
    job: Job | None  # the ingestion (new bytes) or re-index (new metadata) job queued, if any


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


def _new_document(
    collection: Collection,
    upload: UploadFile,
    filename: str,
    file_type: str,
    digest: str,
    user: Any,
    stored_files: list[tuple[Any, str]],
    external_id: str = "",
) -> Document:
    """Store the file and the row (inside the caller's transaction); ``stored_files`` lists what to
    delete should that transaction roll back."""
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
        external_id=external_id,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    document.file.save(filename, ContentFile(upload.data), save=False)
    stored_files.append((document.file.storage, document.file.name))
    document.save()
    return document


def _delete_files(stored_files: list[tuple[Any, str]]) -> None:
    for storage, name in stored_files:  # no orphan files for a rolled-back write
        storage.delete(name)


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
                document = _new_document(collection, upload, filename, file_type, digest, user, stored_files)
                seen[digest] = document
                results.append(UploadResult(document, True, jobs.enqueue(kind=Job.Kind.INGEST, document=document)))
    except BaseException:
        _delete_files(stored_files)
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


def _lock_row(document_id: int) -> bool:
    """Lock a document's row for the caller's transaction; False when it is gone.

    Every write to an existing document takes this lock first, so a delete and a write of one
    document run one after the other. Without it, a write that lost the race to a delete either
    failed a queued job's foreign key at commit (a 500) or, through ``save()``'s INSERT fallback,
    brought the deleted row back.
    """
    return bool(list(Document.objects.select_for_update().filter(pk=document_id).values_list("pk", flat=True)))


def _gone(document: Document) -> NotFound:
    return NotFound(f"Document {document.pk} was deleted while this request ran.")


def _swap_file(
    document: Document, filename: str, file_type: str, digest: str, data: bytes, stored_files: list[tuple[Any, str]]
) -> Job:
    """Point the row at new bytes and queue their ingestion (inside the caller's transaction);
    the old file is deleted once that transaction commits."""
    old_file = document.file.name
    storage = document.file.storage
    document.file.save(filename, ContentFile(data), save=False)
    stored_files.append((storage, document.file.name))
    if old_file and old_file != document.file.name:
        transaction.on_commit(lambda: storage.delete(old_file))
    document.original_filename = filename
    document.file_type = file_type
    document.size_bytes = len(data)
    document.content_hash = digest
    document.status = Document.Status.PENDING
    document.error = ""
    document.save()
    return jobs.enqueue(kind=Job.Kind.INGEST, document=document)


def document_replace_file(*, document: Document, filename: str, data: bytes, content_type: str | None = None) -> Job:
    """Upload a new version of a document: its chunks are replaced when the job runs."""
    filename, file_type, digest = _checked(UploadFile(filename, data, content_type))
    other = document_find_duplicate(collection_id=document.collection_id, content_hash=digest)
    if other is not None and other.pk != document.pk:
        raise DuplicateDocument(f"This file is already in the collection as document {other.pk} ({other}).")
    stored_files: list[tuple[Any, str]] = []
    try:
        with transaction.atomic():
            if not _lock_row(document.pk):
                raise _gone(document)
            job = _swap_file(document, filename, file_type, digest, data, stored_files)
    except BaseException:
        _delete_files(stored_files)
        raise
    return job


# Metadata the index holds a copy of (a change re-pushes the chunks); external_id lives only in the database.
INDEXED_METADATA = ("title", "source", "category", "language", "timestamp")
METADATA_FIELDS = (*INDEXED_METADATA, "external_id")
_EXTERNAL_ID_RE = re.compile(r"[^/.\s\x00-\x1f\x7f][^/\x00-\x1f\x7f]{0,199}")
# The same rule for the OpenAPI schema (path parameter and fields).
EXTERNAL_ID_PATTERN = r"^[^/.\s\x00-\x1f\x7f][^/\x00-\x1f\x7f]{0,199}$"


def validate_external_id(value: str) -> str:
    """The external id, or ``InvalidExternalId``: it must fit in one URL path segment (no '/', no dot names)."""
    if not isinstance(value, str) or not _EXTERNAL_ID_RE.fullmatch(value):
        raise InvalidExternalId()
    return value


def _changed_metadata(document: Document, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields whose value differs from the stored row (not the in-memory object, which a form
    may already have changed)."""
    unknown = set(fields) - set(METADATA_FIELDS)
    if unknown:
        raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
    if document.pk is None:
        return dict(fields)
    stored = Document.objects.filter(pk=document.pk).values(*fields).first() or {}
    return {name: value for name, value in fields.items() if stored.get(name) != value}


def _apply_metadata(document: Document, fields: Mapping[str, Any]) -> bool:
    """Set the fields on the document and save; True when the index copy needs refreshing."""
    changed = _changed_metadata(document, fields)
    if changed.get("external_id"):
        external_id = validate_external_id(changed["external_id"])
        taken = Document.objects.filter(collection_id=document.collection_id, external_id=external_id)
        if taken.exclude(pk=document.pk).exists():
            raise ExternalIdTaken(f"Another document in this collection has the external id {external_id!r}.")
    for name, value in fields.items():
        setattr(document, name, value)
    document.save()
    return any(name in INDEXED_METADATA for name in changed)


def document_update_metadata(*, document: Document, **fields: Any) -> Job | None:
    """Change title/source/category/language/timestamp/external_id.

    The index holds a copy of the first five: when one of them really changed on an indexed
    document, a ``reindex_document`` job refreshes it; otherwise nothing is queued.
    """
    try:
        with transaction.atomic():
            if document.pk is not None and not _lock_row(document.pk):
                raise _gone(document)
            refresh = _apply_metadata(document, fields)
            job = (
                jobs.enqueue(kind=Job.Kind.REINDEX_DOCUMENT, document=document)
                if refresh and document.chunk_count
                else None
            )
    except IntegrityError:  # a concurrent write took the external id
        raise ExternalIdTaken() from None
    return job


def document_sync(
    *,
    collection: Collection,
    external_id: str,
    upload: UploadFile,
    metadata: Mapping[str, Any] | None = None,
    user: Any = None,
) -> SyncResult:
    """Create or replace the document with this external id: the idempotent sync of an integrator.

    - no document has the id: the bytes are stored as a new document (ingestion queued) - or,
      when the collection already holds the same bytes without an external id, that document
      takes the id (the same bytes never make two documents);
    - the stored bytes are the same: only metadata that differs is saved (a re-index is queued
      if the index holds it); same metadata too: nothing is written, no job (``changed=False``);
    - new bytes: the file is replaced and re-ingested; the job swaps the chunks, so the old
      chunks leave the index when the new ones enter it.

    ``metadata``: the fields given (title, source, category, language, timestamp); fields not
    given keep their stored value. Raises ``InvalidUpload`` subclasses for bad bytes and
    ``DuplicateDocument`` (409) when another document with another external id has these bytes.
    """
    external_id = validate_external_id(external_id)
    metadata = dict(metadata or {})
    filename, file_type, digest = _checked(upload)
    for attempt in (1, 2):
        try:
            return _sync(collection, external_id, upload, metadata, user, filename, file_type, digest)
        except IntegrityError:
            # A concurrent sync of the same id (or bytes) committed first; the retry finds its row.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _sync(
    collection: Collection,
    external_id: str,
    upload: UploadFile,
    metadata: dict[str, Any],
    user: Any,
    filename: str,
    file_type: str,
    digest: str,
) -> SyncResult:
    stored_files: list[tuple[Any, str]] = []
    try:
        with transaction.atomic():
            rows = Document.objects.select_for_update().filter(collection=collection)
            document = rows.filter(external_id=external_id).first()
            if document is None:
                same_bytes = document_find_duplicate(collection_id=collection.pk, content_hash=digest)
                if same_bytes is None:
                    fields = {name: metadata.get(name, "") for name in ("title", "source", "category", "language")}
                    new = UploadFile(
                        filename, upload.data, upload.content_type, timestamp=metadata.get("timestamp"), **fields
                    )
                    document = _new_document(
                        collection, new, filename, file_type, digest, user, stored_files, external_id=external_id
                    )
                    return SyncResult(document, True, True, jobs.enqueue(kind=Job.Kind.INGEST, document=document))
                if same_bytes.external_id:
                    raise DuplicateDocument(
                        f"These bytes are already document {same_bytes.pk} with the external id "
                        f"{same_bytes.external_id!r}; one content, one document."
                    )
                document = same_bytes  # uploaded before without an id: it takes this one
                metadata["external_id"] = external_id
            if document.content_hash == digest:
                if not _changed_metadata(document, metadata):
                    return SyncResult(document, False, False, None)
                refresh = _apply_metadata(document, metadata)
                job = None
                if refresh and document.chunk_count:
                    job = jobs.enqueue(kind=Job.Kind.REINDEX_DOCUMENT, document=document)
                return SyncResult(document, False, True, job)
            other = document_find_duplicate(collection_id=collection.pk, content_hash=digest)
            if other is not None and other.pk != document.pk:
                raise DuplicateDocument(f"These bytes are already document {other.pk} ({other}) in the collection.")
            _apply_metadata(document, metadata)  # the ingestion below re-indexes with it
            job = _swap_file(document, filename, file_type, digest, upload.data, stored_files)
            return SyncResult(document, False, True, job)
    except BaseException:
        _delete_files(stored_files)
        raise


def document_request_reindex(*, document: Document) -> Job | None:
    """Queue a re-index (re-push stored chunks, or re-ingest the file when there are none);
    None when the document was deleted meanwhile."""
    with transaction.atomic():
        # A delete that comes meanwhile waits for the job to be queued (the job then outlives it, skipped).
        if not _lock_row(document.pk):
            return None
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
        # A job queued for the document meanwhile commits before this delete collects its jobs (and
        # is kept, document unset), not after (its foreign key then failed this delete at commit).
        _lock_row(document_id)
        document.delete()
        if index_failed:
            jobs.enqueue(kind=Job.Kind.DELETE_FROM_INDEX, payload={"document_id": document_id})
        else:  # out of the index and the database: no answer made before now may be served again
            index_generation_advance(reason=f"document {document_id} deleted")
    if file_name:
        storage.delete(file_name)
