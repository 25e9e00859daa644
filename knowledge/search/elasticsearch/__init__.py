"""The Elasticsearch search backend (``SEARCH_BACKENDS["elasticsearch"]``).

- ``backend``: ``SearchBackend`` (indexes behind an alias, writes, the ``_msearch`` of a search);
- ``analysis``: Korean analysis (nori, or platform-computed character bigrams) and the mapping.
"""

from knowledge.search.elasticsearch.backend import SearchBackend

__all__ = ["SearchBackend"]
