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

import logging
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from elasticsearch import (
    AsyncElasticsearch,
    Elasticsearch,
    NotFoundError,
    helpers,
)
from elasticsearch.dsl import AsyncMultiSearch, Index

from config.local_cache import MISSING, LocalCache
from config.per_loop import PerLoop
from knowledge.errors import SearchUnavailable
from knowledge.search.base import (
    BaseSearchBackend,
    IndexedChunk,
    IndexInfo,
    SearchQuery,
    SearchResult,
    new_index_name,
)
from knowledge.search.elasticsearch.analysis import (
    NAMES_FIELD,
    has_nori,
    mapping,
    resolve_analyzer,
)
from knowledge.search.elasticsearch.failures import answer_bodies, searched, translated
from knowledge.search.elasticsearch.wire import (
    chunk_source,
    name_count_searches,
    name_verdicts,
    question_searches,
    recorded_analyzer,
    search_result,
)
from knowledge.text import NameLookup, name_lookups
from knowledge.types import ChunkRef
from monitoring.health import Degraded

logger = logging.getLogger(__name__)

ANALYZER_CACHE_S = 60.0
NAME_VERDICT_CACHE_S = 300.0


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
        # httpx (a declared dependency) rather than aiohttp for the async transport.
        self._async_clients: PerLoop[AsyncElasticsearch] = PerLoop(
            lambda: AsyncElasticsearch(request_timeout=self.timeout, node_class="httpxasync", **self._client_options())
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
        return self._async_clients.get()

    async def aclose(self) -> None:
        client = self._async_clients.pop()
        if client is not None:
            await client.close()

    def close(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    # --- index management -------------------------------------------------------------

    def detect_analyzer(self) -> str:
        """The analysis of new indexes: see ``analysis.resolve_analyzer``."""
        with translated("analyzer check"):
            return resolve_analyzer(self.analyzer_setting, nori_available=lambda: has_nori(self.client))

    def create_index(self) -> str:
        name = new_index_name(self.alias)
        index = Index(name)
        index.settings(number_of_shards=self.shards, number_of_replicas=self.replicas)
        index.mapping(mapping(self.detect_analyzer()))
        with translated("create index"):
            index.create(using=self.client)
        return name

    def _alias_targets(self) -> list[str]:
        try:
            return sorted(self.client.indices.get_alias(name=self.alias).body)
        except NotFoundError:
            return []

    def ensure_index(self) -> str:
        with translated("ensure index"):
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
        with translated("alias swap"):
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
        with translated("delete index"):
            self.client.indices.delete(index=index, ignore_unavailable=True)

    def list_indexes(self) -> list[str]:
        with translated("list indexes"):
            names = set(self.client.indices.get(index=f"{self.alias}-v*", expand_wildcards="all").body)
            return sorted(names | set(self._alias_targets()))

    def refresh(self, index: str | None = None) -> None:
        with translated("refresh"):
            self.client.indices.refresh(index=index or self.alias)

    def info(self) -> IndexInfo:
        with translated("index info"):
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
            {"_op_type": "index", "_index": target, "_id": str(c.chunk_id), "_source": chunk_source(c, analyzer)}
            for c in chunks
        )
        with translated("bulk index"):
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
        with translated("delete"):
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
        with translated("document counts"):
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

    # --- reads (the queries and their hits: wire.py) ------------------------------------

    async def with_texts(self, chunks: list[ChunkRef]) -> list[ChunkRef]:
        """The kept hits' text, in one search by chunk id (the rankings left it out)."""
        missing = [c.chunk_id for c in chunks if not c.text]
        if not missing:
            return chunks
        with translated("chunk texts"):
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
        searches = question_searches(
            self.alias, query, analyzer, names, timeout_s=self.timeout, num_candidates=self.num_candidates
        )
        for search in searches:
            multi = multi.add(search)
        with translated("search"):
            responses, _ = await searched("search", lambda: multi.execute(ignore_cache=True), answer_bodies)
        return search_result(query, responses, names)

    async def _name_words(self, text: str) -> list[NameLookup]:
        """The question's words that are names (``knowledge.text.is_name``), counted once per word and cached.

        Most questions repeat common words, whose verdict is cached; new words cost one
        ``_msearch`` of count searches (and a total count) before the search itself.
        """
        lookups = name_lookups(text)
        unknown = [lk for lk in lookups if self._name_verdicts.get(lk.own) is MISSING]
        if unknown:
            client = self.async_client()
            body = name_count_searches(self.alias, unknown)
            with translated("name counts"):
                answer, whole = await searched("names", lambda: client.msearch(body=body), lambda a: a["responses"])
            if whole:  # verdicts from partial counts serve this question only (its words stay unknown)
                for word, verdict in name_verdicts(unknown, answer["responses"]).items():
                    self._name_verdicts.set(word, verdict)
        return [lk for lk in lookups if self._name_verdicts.get(lk.own) is True]

    # --- the analysis an index was built with ------------------------------------------

    def index_analyzer(self, index: str) -> str:
        """The analyzer recorded in an index's ``_meta`` (alias or concrete name), cached per name.

        Also the write path's upgrade of an index made by an older version: a missing
        ``names`` field is added to the mapping (a new keyword field is an online change), so
        writes carry it; chunks written before only match by name after ``manage.py reindex``.
        """
        cached = self._analyzers.get(index)
        if cached is MISSING:
            with translated("index mapping"):
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
            cached = self._analyzers.set(index, recorded_analyzer(body))
        return cached

    async def live_analyzer(self) -> str:
        """``index_analyzer`` of the alias for the request path: one mapping read per process, then
        the cache; ``swap_alias`` forgets it (a rebuild may change the analysis)."""
        cached = self._analyzers.get(self.alias)
        if cached is not MISSING:
            return cached
        with translated("index mapping"):
            body = (await self.async_client().indices.get_mapping(index=self.alias)).body
        return self._analyzers.set(self.alias, recorded_analyzer(body))

    async def ping(self) -> str:
        client = self.async_client()
        with translated("ping"):
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
        with translated("version"):
            nodes = self.client.nodes.info(node_id="_local", filter_path="nodes.*.version")["nodes"]
        return next(iter(nodes.values()))["version"]
