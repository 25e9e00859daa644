"""REST API of the knowledge base (mounted at /api/knowledge/). Thin adapters over services/selectors.

Errors have the platform's one shape: ``{"error": {"code", "message", ...}}`` (raised as
platform errors, rendered by ``config.drf``). Callers only ever see collections that
``readable_collections`` grants them; API keys need the ``knowledge:*`` scopes
(``knowledge.permissions``). Guide: docs/api.md; reference: docs/knowledge.md.
"""

from knowledge.api.collections import CollectionDetailView, CollectionListView
from knowledge.api.documents import DocumentDetailView, DocumentListView, DocumentReindexView, DocumentSyncView
from knowledge.api.jobs import JobDetailView
from knowledge.api.search import SearchView

__all__ = [
    "CollectionDetailView",
    "CollectionListView",
    "DocumentDetailView",
    "DocumentListView",
    "DocumentReindexView",
    "DocumentSyncView",
    "JobDetailView",
    "SearchView",
]
