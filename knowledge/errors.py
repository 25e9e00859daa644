"""Typed knowledge errors. Each carries a stable ``code`` and the HTTP status the API renders.

``InvalidUpload`` subclasses are the caller's fault (4xx, nothing is stored);
``SearchUnavailable`` means the search engine failed (5xx, retrying may help).
"""

from __future__ import annotations


class KnowledgeError(Exception):
    code = "knowledge_error"
    http_status = 500
    message = "The knowledge base failed."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)

    @property
    def detail(self) -> str:
        return str(self)


class InvalidUpload(KnowledgeError):
    """The uploaded file cannot be ingested; the message says why (shown to the uploader)."""

    code = "invalid_upload"
    http_status = 400
    message = "The file cannot be ingested."


class UnsupportedFileType(InvalidUpload):
    code = "unsupported_file_type"
    http_status = 415


class EmptyFile(InvalidUpload):
    code = "empty_file"


class FileTooLarge(InvalidUpload):
    code = "file_too_large"
    http_status = 413


class CorruptFile(InvalidUpload):
    code = "corrupt_file"


class UndecodableText(InvalidUpload):
    code = "undecodable_text"


class NoTextExtracted(InvalidUpload):
    """The file parsed but holds no text (a scanned PDF without a text layer, an empty page)."""

    code = "no_text"


class SearchUnavailable(KnowledgeError):
    """The search engine did not answer or refused the request; retrieval cannot run."""

    code = "search_unavailable"
    http_status = 503
    message = "The search engine is unavailable."


class IndexMissing(SearchUnavailable):
    code = "search_index_missing"
    message = "The search index does not exist yet (run `manage.py reindex`)."
