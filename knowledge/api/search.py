"""Hybrid search over REST (a POST that only reads)."""

from __future__ import annotations

import time

from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from knowledge.api.base import KnowledgeAPIView, knowledge_schema, resolve_collections
from knowledge.api.serializers import SearchHitOut, SearchIn, SearchOut
from knowledge.permissions import SCOPE_READ
from knowledge.search import get_search_backend
from knowledge.selectors import readable_collection_ids
from knowledge.services import retrieve_sync
from knowledge.types import SearchFilters


class SearchView(KnowledgeAPIView):
    read_methods = ("POST",)
    parser_classes = [JSONParser]

    @knowledge_schema(
        operation_id="knowledge_search",
        summary="Hybrid search (BM25 + kNN, RRF, optional rerank) over collections you may read",
        scope=SCOPE_READ,
        request=SearchIn,
        responses={200: SearchOut},
        errors={
            400: "Invalid fields or an unknown collection (`fields`).",
            503: "The search engine is unavailable (`search_unavailable`); retry later.",
        },
    )
    def post(self, request: Request) -> Response:
        started = time.perf_counter()
        data = SearchIn(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        principal = self.principal
        if params.get("collections"):
            collection_ids = tuple(c.pk for c in resolve_collections(params["collections"], principal))
        else:
            collection_ids = readable_collection_ids(principal)
        filters = SearchFilters(
            collection_ids=collection_ids,
            source=params.get("source") or None,
            category=params.get("category") or None,
            date_from=params.get("date_from"),
            date_to=params.get("date_to"),
        )
        results = retrieve_sync(params["query"], filters=filters, top_k=params["top_k"], rerank=params["rerank"])
        hits = []
        for r in results:
            hit = SearchHitOut(r).data
            hit["url"] = request.build_absolute_uri(r.url)
            hits.append(hit)
        return Response(
            {
                "results": hits,
                "backend": get_search_backend().name,
                "took_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )
