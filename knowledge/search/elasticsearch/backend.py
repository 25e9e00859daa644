"""Elasticsearch backend (8.x server; ``elasticsearch.dsl`` builds mappings and queries).

- Versioned concrete indexes ``<alias>-v<timestamp>`` behind the alias; reindexing
  builds a new one and swaps the alias in one ``_aliases`` call.
- Korean text analysis (``analysis.py``): ``nori`` when the plugin is installed, else
  character bigrams the platform computes (as the local backend scores them); decided
  when an index is created, recorded in the mapping's ``_meta`` and shown in the admin.
  No painless, no rrf retriever: fusion happens in the application.
- One search = one ``_msearch`` round trip carrying the BM25 query and the kNN
  query, the same metadata filters inside both (the kNN ``filter`` pre-filters the
  HNSW search, so filtered queries still get k results).
- The request path uses ``AsyncElasticsearch``: one client per process and event
  loop (an async client is bound to the loop that created it). Writes use one
  thread-safe sync client. Timeouts and retries come from settings; transport and
  server failures surface as ``SearchUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured
from elasticsearch import (
    ApiError,
    AsyncElasticsearch,
    Elasticsearch,
    NotFoundError,
    TransportError,
    helpers,
)
from elasticsearch.dsl import AsyncMultiSearch, Index, Q, Search

from config.local_cache import MISSING, LocalCache
from knowledge.errors import IndexMissing, SearchUnavailable
from knowledge.search.base import (
    BaseSearchBackend,
    IndexedChunk,
    IndexInfo,
    SearchHit,
    SearchQuery,
    SearchResult,
    new_index_name,
)
from knowledge.search.elasticsearch.analysis import (
    BIGRAM,
    NAMES_FIELD,
    SOURCE_EXCLUDES,
    TERMS_FIELD,
    bigram_terms,
    has_nori,
    lexical_query,
    mapping,
    names_of,
    names_query,
    own_script_count,
    resolve_analyzer,
)
from knowledge.search.elasticsearch.partial import described, searched
from knowledge.text import NameLookup, is_name, name_lookups
from knowledge.types import ChunkRef, SearchFilters
from monitoring.health import Degraded

logger = logging.getLogger(__name__)

ANALYZER_CACHE_S = 60.0
NAME_VERDICT_CACHE_S = 300.0


def _recorded_analyzer(mapping_body: dict[str, Any]) -> str:
    """The analyzer in the ``_meta`` of a get-mapping answer (indexes made before it was recorded: standard)."""
    metas = [m["mappings"].get("_meta", {}) for m in mapping_body.values()]
    return str(metas[0].get("analyzer") or "standard") if metas else "standard"


def _bodies(responses: list) -> list[dict[str, Any]]:
    """The JSON bodies of an ``_msearch``'s responses (``elasticsearch.dsl`` wraps them)."""
    return [response.to_dict() for response in responses]


@contextlib.contextmanager
def _translate_errors(what: str) -> Iterator[None]:
    try:
        yield
    except NotFoundError as exc:
        raise IndexMissing(f"Elasticsearch {what}: index not found ({exc.message})") from exc
    except ApiError as exc:
        status, reason = described(exc)
        raise SearchUnavailable(f"Elasticsearch {what} failed ({status}): {reason}") from exc
    except TransportError as exc:
        raise SearchUnavailable(f"Elasticsearch {what} failed: {type(exc).__name__}: {exc.message}") from exc


class SearchBackend(BaseSearchBackend):
    name = "elasticsearch"

    def __init__(self, params) -> None:
        super().__init__(params)
        urls = self.params.get("URLS") or []
        if not urls or not all(urls):
            raise ImproperlyConfigured("The elasticsearch search backend needs URLS (set ES_URL).")
        self.urls: list[str] = list(urls)
        self.timeout = float(self.params.get("TIMEOUT", 5.0))
        self.write_timeout = float(self.params.get("WRITE_TIMEOUT", 60.0))
        self.max_retries = int(self.params.get("MAX_RETRIES", 2))
        self.shards = int(self.params.get("SHARDS", 3))
        self.replicas = int(self.params.get("REPLICAS", 1))
        self.analyzer_setting = str(self.params.get("ANALYZER", "auto"))
        self.num_candidates = int(self.params.get("KNN_NUM_CANDIDATES", 100))
        self.refresh_on_write = self.params.get("REFRESH", "wait_for")
        self._sync_client: Elasticsearch | None = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncElasticsearch] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # Index (or alias) name -> the analyzer it was built with (read from its _meta). Short-lived:
        # another process's rebuild may point the alias at an index with another analysis.
        self._analyzers: LocalCache[str, str] = LocalCache("es_index_analyzer", ttl=lambda: ANALYZER_CACHE_S)
        # Question word (its own-script family) -> whether it is a name in this index.
        self._name_verdicts: LocalCache[str, bool] = LocalCache("es_name_verdicts", ttl=lambda: NAME_VERDICT_CACHE_S)

    # --- clients --------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        return {
            "hosts": self.urls,
            "max_retries": self.max_retries,
            "retry_on_timeout": True,
            "retry_on_status": (502, 503, 504),
        }

    @property
    def client(self) -> Elasticsearch:
        if self._sync_client is None:
            with self._lock:
                if self._sync_client is None:
                    self._sync_client = Elasticsearch(request_timeout=self.write_timeout, **self._client_options())
        return self._sync_client

    def async_client(self) -> AsyncElasticsearch:
        """The client of the running event loop (created on first use in that loop)."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            # httpx (a declared dependency) rather than aiohttp for the async transport.
            client = AsyncElasticsearch(request_timeout=self.timeout, node_class="httpxasync", **self._client_options())
            self._async_clients[loop] = client
        return client

    async def aclose(self) -> None:
        with contextlib.suppress(RuntimeError):
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
            if client is not None:
                await client.close()

    def close(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    # --- index management -------------------------------------------------------------

    def detect_analyzer(self) -> str:
        """The analysis of new indexes: see ``analysis.resolve_analyzer``."""
        with _translate_errors("analyzer check"):
            return resolve_analyzer(self.analyzer_setting, nori_available=lambda: has_nori(self.client))

    def create_index(self) -> str:
        name = new_index_name(self.alias)
        index = Index(name)
        index.settings(number_of_shards=self.shards, number_of_replicas=self.replicas)
        index.mapping(mapping(self.detect_analyzer()))
        with _translate_errors("create index"):
            index.create(using=self.client)
        return name

    def _alias_targets(self) -> list[str]:
        try:
            return sorted(self.client.indices.get_alias(name=self.alias).body)
        except NotFoundError:
            return []

    def ensure_index(self) -> str:
        with _translate_errors("ensure index"):
            targets = self._alias_targets()
            if targets:
                return targets[0]
            if self.client.indices.exists(index=self.alias):
                raise ImproperlyConfigured(
                    f"'{self.alias}' is a concrete index, not an alias; delete it or set SEARCH_INDEX_ALIAS."
                )
            name = self.create_index()
            self.client.indices.update_aliases(actions=[{"add": {"index": name, "alias": self.alias}}])
            # Two processes may race here; both keep the oldest index and drop the other.
            targets = self._alias_targets()
            if len(targets) > 1:
                for extra in targets[1:]:
                    self.client.indices.update_aliases(actions=[{"remove": {"index": extra, "alias": self.alias}}])
                    self.client.indices.delete(index=extra, ignore_unavailable=True)
            return targets[0]

    def swap_alias(self, index: str, *, delete_old: bool = True) -> list[str]:
        with _translate_errors("alias swap"):
            old = [name for name in self._alias_targets() if name != index]
            actions: list[dict[str, Any]] = [{"remove": {"index": name, "alias": self.alias}} for name in old]
            actions.append({"add": {"index": index, "alias": self.alias}})
            # One _aliases call: searches see the old index or the new one, never neither.
            self.client.indices.update_aliases(actions=actions)
            self._analyzers.pop(self.alias)
            if delete_old:
                for name in old:
                    self.client.indices.delete(index=name, ignore_unavailable=True)
        return old

    def delete_index(self, index: str) -> None:
        with _translate_errors("delete index"):
            self.client.indices.delete(index=index, ignore_unavailable=True)

    def list_indexes(self) -> list[str]:
        with _translate_errors("list indexes"):
            names = set(self.client.indices.get(index=f"{self.alias}-v*", expand_wildcards="all").body)
            return sorted(names | set(self._alias_targets()))

    def refresh(self, index: str | None = None) -> None:
        with _translate_errors("refresh"):
            self.client.indices.refresh(index=index or self.alias)

    def info(self) -> IndexInfo:
        with _translate_errors("index info"):
            targets = self._alias_targets()
            others = [n for n in self.list_indexes() if n not in targets]
            if not targets:
                return IndexInfo(self.name, self.alias, None, None, None, None, 0, 0, others)
            concrete = targets[0]
            meta = self.client.indices.get_mapping(index=concrete)[concrete]["mappings"].get("_meta", {})
            count = self.client.count(index=concrete)["count"]
            aggs = self.client.search(
                index=concrete,
                size=0,
                aggs={"docs": {"cardinality": {"field": "document_id", "precision_threshold": 40000}}},
            )
            health = self.client.cluster.health(index=concrete)
            return IndexInfo(
                backend=self.name,
                alias=self.alias,
                concrete_index=concrete,
                analyzer=meta.get("analyzer"),
                embedding_model=meta.get("embedding_model"),
                embedding_dim=meta.get("embedding_dim"),
                chunk_count=count,
                document_count=aggs["aggregations"]["docs"]["value"],
                other_indexes=others,
                extra={
                    "cluster_status": health["status"],
                    "shards": self.shards,
                    "replicas": self.replicas,
                    "created_at": meta.get("created_at"),
                },
            )

    # --- writes -------------------------------------------------------------------

    def _source(self, chunk: IndexedChunk, analyzer: str) -> dict[str, Any]:
        source = {
            "chunk_id": chunk.chunk_id,
            "document_id": chunk.document_id,
            "collection_id": chunk.collection_id,
            "ordinal": chunk.ordinal,
            "language": chunk.language,
            "title": chunk.title,
            "content": chunk.text,
            "embedding": np.asarray(chunk.embedding, dtype=np.float32).tolist(),
            "metadata": {
                "source": chunk.source,
                "category": chunk.category,
                "timestamp": chunk.timestamp.isoformat() if chunk.timestamp else None,
            },
        }
        if analyzer == BIGRAM:
            source[TERMS_FIELD] = bigram_terms(chunk.title, chunk.text)
        source[NAMES_FIELD] = names_of(chunk.title, chunk.text)
        return source

    def add_bulk(self, chunks: Iterable[IndexedChunk], *, index: str | None = None) -> int:
        if index is None:
            # Through the alias (never a resolved concrete name, which a concurrent swap
            # may delete: ES would auto-create it). require_alias refuses to create an
            # index named like the alias if the alias vanished.
            self.ensure_index()
            options: dict[str, Any] = {"refresh": self.refresh_on_write, "require_alias": True}
        else:
            # Building a new index: refreshed once, before the alias swap.
            options = {"refresh": False}
        target = index or self.alias
        analyzer = self.index_analyzer(target)
        actions = (
            {"_op_type": "index", "_index": target, "_id": str(c.chunk_id), "_source": self._source(c, analyzer)}
            for c in chunks
        )
        with _translate_errors("bulk index"):
            ok, errors = helpers.bulk(self.client, actions, chunk_size=500, raise_on_error=False, **options)
        if errors:
            raise SearchUnavailable(f"Elasticsearch refused {len(errors)} chunks: {str(errors[0])[:500]}")
        return ok

    def _delete_where(self, query: dict[str, Any], index: str | None) -> None:
        """Delete the chunks matching ``query``: find their ids, then one bulk delete.

        Not ``_delete_by_query``: it lives in the reindex module, which minimal
        distributions (the integ-test zip) do not ship; ids + bulk work everywhere.
        """
        if index is None:
            self.ensure_index()
        target = index or self.alias
        with _translate_errors("delete"):
            ids: list[str] = []
            after = None
            while True:
                body = self.client.search(
                    index=target, query=query, size=1000, source=False, sort=[{"chunk_id": "asc"}],
                    search_after=after, track_total_hits=False,
                )  # fmt: skip
                hits = body["hits"]["hits"]
                ids.extend(hit["_id"] for hit in hits)
                if len(hits) < 1000:
                    break
                after = hits[-1]["sort"]
            if not ids:
                return
            actions = ({"_op_type": "delete", "_index": target, "_id": i} for i in ids)
            _, errors = helpers.bulk(self.client, actions, chunk_size=1000, raise_on_error=False, refresh=True)
        real = [e for e in errors if e.get("delete", {}).get("status") != 404]
        if real:
            raise SearchUnavailable(f"Elasticsearch refused to delete {len(real)} chunks: {str(real[0])[:500]}")

    def delete(self, chunk_ids: Iterable[int], *, index: str | None = None) -> None:
        ids = [int(i) for i in chunk_ids]
        if ids:
            self._delete_where({"terms": {"chunk_id": ids}}, index)

    def delete_document(self, document_id: int, *, index: str | None = None) -> None:
        self._delete_where({"term": {"document_id": document_id}}, index)

    def document_chunk_counts(self, *, index: str | None = None) -> dict[int, int]:
        target = index or self.ensure_index()
        counts: dict[int, int] = {}
        after = None
        with _translate_errors("document counts"):
            while True:
                composite: dict[str, Any] = {"size": 1000, "sources": [{"d": {"terms": {"field": "document_id"}}}]}
                if after:
                    composite["after"] = after
                body = self.client.search(index=target, size=0, aggs={"docs": {"composite": composite}})
                agg = body["aggregations"]["docs"]
                counts.update({b["key"]["d"]: b["doc_count"] for b in agg["buckets"]})
                after = agg.get("after_key")
                if not agg["buckets"] or not after:
                    return counts

    # --- reads --------------------------------------------------------------------

    @staticmethod
    def _filters(filters: SearchFilters) -> list[Q]:
        clauses: list[Q] = []
        if filters.collection_ids is not None:
            clauses.append(Q("terms", collection_id=list(filters.collection_ids)))
        if filters.source:
            clauses.append(Q("term", **{"metadata.source": filters.source}))
        if filters.category:
            clauses.append(Q("term", **{"metadata.category": filters.category}))
        if filters.date_from or filters.date_to:
            bounds = {}
            if filters.date_from:
                bounds["gte"] = filters.date_from.isoformat()
            if filters.date_to:
                bounds["lte"] = filters.date_to.isoformat()
            clauses.append(Q("range", **{"metadata.timestamp": bounds}))
        return clauses

    def _searches(self, query: SearchQuery, analyzer: str, names: list[NameLookup]) -> list[Search]:
        filters = self._filters(query.filters)
        searches = []
        if query.lexical:
            searches.append(
                Search(index=self.alias)
                .query(Q("bool", must=[lexical_query(analyzer, query.text)], filter=filters))
                .source(excludes=SOURCE_EXCLUDES)
                .extra(size=query.size, timeout=f"{int(self.timeout * 1000)}ms")
            )
        if query.vector is not None:
            semantic = (
                Search(index=self.alias)
                .knn(
                    field="embedding",
                    k=query.size,
                    num_candidates=max(self.num_candidates, query.size),
                    query_vector=np.asarray(query.vector, dtype=np.float32).tolist(),
                    filter=Q("bool", filter=filters) if filters else None,
                )
                .source(excludes=SOURCE_EXCLUDES)
                .extra(size=query.size)
            )
            searches.append(semantic)
        if query.lexical and names:
            searches.append(
                Search(index=self.alias)
                .query(Q("bool", must=[names_query(names)], filter=filters))
                .source(excludes=SOURCE_EXCLUDES)
                .extra(size=query.size, timeout=f"{int(self.timeout * 1000)}ms")
            )
        return searches

    @staticmethod
    def _hits(response) -> list[SearchHit]:
        hits = []
        for hit in response.hits:
            src = hit.to_dict()
            meta = src.get("metadata") or {}
            ts = meta.get("timestamp")
            hits.append(
                SearchHit(
                    ChunkRef(
                        chunk_id=int(src["chunk_id"]),
                        document_id=int(src["document_id"]),
                        collection_id=int(src["collection_id"]),
                        ordinal=int(src.get("ordinal", 0)),
                        text=src.get("content", ""),
                        title=src.get("title", ""),
                        source=meta.get("source") or "",
                        category=meta.get("category") or "",
                        language=src.get("language") or "",
                        timestamp=dt.datetime.fromisoformat(ts) if ts else None,
                    ),
                    float(hit.meta.score),
                )
            )
        return hits

    def _result(self, query: SearchQuery, responses: list, names: list[NameLookup]) -> SearchResult:
        found = iter(responses)
        lexical = self._hits(next(found)) if query.lexical else []
        semantic = self._hits(next(found)) if query.vector is not None else []
        by_name = self._hits(next(found)) if query.lexical and names else []
        return SearchResult(lexical, semantic, by_name)

    async def with_texts(self, chunks: list[ChunkRef]) -> list[ChunkRef]:
        """The kept hits' text, in one search by chunk id (the rankings left it out)."""
        missing = [c.chunk_id for c in chunks if not c.text]
        if not missing:
            return chunks
        with _translate_errors("chunk texts"):
            body, _ = await searched(
                "texts",
                lambda: self.async_client().search(
                    index=self.alias,
                    query={"terms": {"chunk_id": missing}},
                    source=["chunk_id", "content"],
                    size=len(missing),
                    timeout=f"{int(self.timeout * 1000)}ms",
                ),
                lambda answer: [answer.body],
            )
        texts = {int(h["_source"]["chunk_id"]): h["_source"].get("content", "") for h in body["hits"]["hits"]}
        return [replace(c, text=texts.get(c.chunk_id, c.text)) if not c.text else c for c in chunks]

    async def search(self, query: SearchQuery) -> SearchResult:
        if query.filters.collection_ids is not None and not query.filters.collection_ids:
            return SearchResult([], [])
        analyzer = await self.live_analyzer()
        names = await self._name_words(query.text) if query.lexical else []
        multi = AsyncMultiSearch(index=self.alias, using=self.async_client())
        for search in self._searches(query, analyzer, names):
            multi = multi.add(search)
        with _translate_errors("search"):
            responses, _ = await searched("search", lambda: multi.execute(ignore_cache=True), _bodies)
        return self._result(query, responses, names)

    async def _name_words(self, text: str) -> list[NameLookup]:
        """The question's words that are names (``knowledge.text.is_name``), counted once per word and cached.

        Most questions repeat common words, whose verdict is cached; new words cost one
        ``_msearch`` of count searches (and a total count) before the search itself.
        """
        lookups = name_lookups(text)
        unknown = [lk for lk in lookups if self._name_verdicts.get(lk.own) is MISSING]
        if unknown:
            client = self.async_client()
            with _translate_errors("name counts"):
                answer, whole = await searched(
                    "names", lambda: client.msearch(body=self._count_body(unknown)), lambda a: a["responses"]
                )
            self._remember_verdicts(unknown, answer["responses"], whole)
        return [lk for lk in lookups if self._name_verdicts.get(lk.own) is True]

    def _count_body(self, lookups: list[NameLookup]) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = [{"index": self.alias}, {"size": 0, "track_total_hits": True}]
        for lookup in lookups:
            body += [{"index": self.alias}, own_script_count(lookup)]
        return body

    def _remember_verdicts(self, lookups: list[NameLookup], responses: list[dict[str, Any]], whole: bool) -> None:
        """Each word's verdict, cached; from partial counts, for this question only (a word stays unknown)."""
        total = responses[0].get("hits", {}).get("total", {}).get("value", 0)
        for lookup, response in zip(lookups, responses[1:], strict=True):
            same_script = response.get("hits", {}).get("total", {}).get("value", 0)
            if whole:
                self._name_verdicts.set(lookup.own, is_name(same_script, total))

    # --- the analysis an index was built with ------------------------------------------

    def index_analyzer(self, index: str) -> str:
        """The analyzer recorded in an index's ``_meta`` (alias or concrete name), cached per name.

        Also the write path's upgrade of an index made by an older version: a missing
        ``names`` field is added to the mapping (a new keyword field is an online change), so
        writes carry it; chunks written before only match by name after ``manage.py reindex``.
        """
        cached = self._analyzers.get(index)
        if cached is MISSING:
            with _translate_errors("index mapping"):
                body = self.client.indices.get_mapping(index=index).body
                for concrete, mapping in body.items():
                    if NAMES_FIELD not in mapping["mappings"].get("properties", {}):
                        self.client.indices.put_mapping(index=concrete, properties={NAMES_FIELD: {"type": "keyword"}})
                        logger.warning(
                            "index %s had no %s field (made by an older version): added; run `manage.py reindex` "
                            "so its existing chunks match cross-script names too",
                            concrete,
                            NAMES_FIELD,
                        )
            cached = self._analyzers.set(index, _recorded_analyzer(body))
        return cached

    async def live_analyzer(self) -> str:
        """``index_analyzer`` of the alias for the request path: one mapping read per process, then
        the cache; ``swap_alias`` forgets it (a rebuild may change the analysis)."""
        cached = self._analyzers.get(self.alias)
        if cached is not MISSING:
            return cached
        with _translate_errors("index mapping"):
            body = (await self.async_client().indices.get_mapping(index=self.alias)).body
        return self._analyzers.set(self.alias, _recorded_analyzer(body))

    async def ping(self) -> str:
        client = self.async_client()
        with _translate_errors("ping"):
            # Cluster health, not GET / (minimal distributions do not serve the root endpoint).
            health = await client.cluster.health()
            has_alias = await client.indices.exists_alias(name=self.alias)
        state = "alias ok" if has_alias else "alias missing"
        detail = f"elasticsearch {health['status']} ({health['number_of_nodes']} nodes), {self.alias}: {state}"
        if health["status"] == "red":  # a primary shard is unassigned: searches miss documents
            raise SearchUnavailable(detail)
        if health["status"] == "yellow":  # every shard served, a replica missing (a node down)
            raise Degraded(detail)
        return detail

    def server_version(self) -> str:
        with _translate_errors("version"):
            nodes = self.client.nodes.info(node_id="_local", filter_path="nodes.*.version")["nodes"]
        return next(iter(nodes.values()))["version"]
