"""Typed knowledge errors: the knowledge app's branch of the platform's one error family.

``InvalidUpload`` subclasses are the caller's fault (4xx, nothing is stored);
``SearchUnavailable`` means the search engine failed (5xx, retrying may help).
"""

from __future__ import annotations

from config.errors import PlatformError


class KnowledgeError(PlatformError):
    code = "knowledge_error"
    http_status = 500
    message = "The knowledge base failed."


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


class ParseLimitExceeded(InvalidUpload):
    """The file needs more than a parse may take (pages, time, memory): knowledge/sandbox.py."""

    code = "parse_limit_exceeded"
    http_status = 413


class ArchiveTooLarge(ParseLimitExceeded):
    """A package (docx) that would unpack past KNOWLEDGE_MAX_UNPACKED_MB or the ratio cap."""

    code = "archive_too_large"


class ParseTimeout(ParseLimitExceeded):
    code = "parse_timeout"


class UndecodableText(InvalidUpload):
    code = "undecodable_text"


class NoTextExtracted(InvalidUpload):
    """The file parsed but holds no text (a scanned PDF without a text layer, an empty page)."""

    code = "no_text"


class NoFile(InvalidUpload):
    code = "no_file"
    message = "Attach one or more files as 'files' (or 'file')."


class TooManyFiles(InvalidUpload):
    code = "too_many_files"


class WriteForbidden(KnowledgeError):
    """The caller may read the collection (or document) but not change it."""

    code = "forbidden"
    http_status = 403
    message = "You may not change this collection."


class SearchUnavailable(KnowledgeError):
    """The search engine did not answer or refused the request; retrieval cannot run."""

    code = "search_unavailable"
    http_status = 503
    message = "The search engine is unavailable."


class IndexMissing(SearchUnavailable):
    code = "search_index_missing"
    message = "The search index does not exist yet (run `manage.py reindex`)."
