"""Public interface of the knowledge app: writes (``<entity>_<action>``) and retrieval.

- ``documents``: collections and documents (uploads, metadata, replace, delete, reindex requests);
- ``ingest``: parse, chunk, embed and index one document (job bodies; never enqueue);
- ``index_maintenance``: rebuild the index from the stored chunks, reconcile it with the database;
- ``retrieval``: hybrid search for chat and the REST API.

Chat codes against ``retrieve``; the REST API, the admin, the worker and the management
commands are thin adapters over the functions re-exported here.
"""

from knowledge.errors import SearchUnavailable
from knowledge.services.documents import (
    EXTERNAL_ID_PATTERN,
    METADATA_FIELDS,
    TEXT_FORMATS,
    CollectionExists,
    DuplicateDocument,
    ExternalIdTaken,
    InvalidCollection,
    InvalidExternalId,
    SyncResult,
    UploadFile,
    UploadRejected,
    UploadResult,
    collection_create,
    collection_delete,
    collection_update,
    document_delete,
    document_replace_file,
    document_request_reindex,
    document_sync,
    document_update_metadata,
    document_upload,
    document_upload_many,
    text_upload,
    validate_external_id,
)
from knowledge.services.generation import generation_key, index_generation_advance, on_index_change
from knowledge.services.index_maintenance import RebuildReport, index_rebuild, index_reconcile
from knowledge.services.ingest import document_delete_from_index, document_ingest, document_reindex
from knowledge.services.retrieval import retrieve, retrieve_sync

__all__ = [
    "EXTERNAL_ID_PATTERN",
    "METADATA_FIELDS",
    "TEXT_FORMATS",
    "CollectionExists",
    "DuplicateDocument",
    "ExternalIdTaken",
    "InvalidCollection",
    "InvalidExternalId",
    "RebuildReport",
    "SearchUnavailable",
    "SyncResult",
    "UploadFile",
    "UploadRejected",
    "UploadResult",
    "collection_create",
    "collection_delete",
    "collection_update",
    "document_delete",
    "document_delete_from_index",
    "document_ingest",
    "document_reindex",
    "document_replace_file",
    "document_request_reindex",
    "document_sync",
    "document_update_metadata",
    "document_upload",
    "document_upload_many",
    "generation_key",
    "index_generation_advance",
    "index_rebuild",
    "index_reconcile",
    "on_index_change",
    "retrieve",
    "retrieve_sync",
    "text_upload",
    "validate_external_id",
]
