"""How the Elasticsearch index analyses Korean text, and the mapping that follows from it.

``ES_ANALYZER``:

- ``auto`` (default): ``nori`` when the cluster has a nori analyzer (the official
  analysis-nori plugin, or ours from ``deploy/elasticsearch/analysis-nori``, which
  ``deploy/local`` builds and installs), else ``char-bigram``;
- ``nori``: demand it (an index cannot be created without it);
- ``char-bigram``: the platform computes the terms itself (``knowledge.text.lexical_terms``:
  Latin words whole, Hangul as overlapping character bigrams, exactly what the local backend
  scores) into a ``terms`` field analysed by ``whitespace``, which every distribution has
  (the minimal one has no ``analysis-common``, so no ``cjk`` bigram filter). Never
  ``standard`` by default: it keeps particles on the tokens (철거를 / 철거는 / 철거 would
  never match each other);
- any other name: that built-in analyzer on ``title`` and ``content`` (e.g. ``standard``,
  for comparison in the evaluation).
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from elasticsearch import BadRequestError, Elasticsearch
from elasticsearch.dsl import Date, Keyword, Mapping, Q

from knowledge.text import NameLookup, lexical_terms, name_terms

NORI = "nori"
BIGRAM = "char-bigram"
TERMS_FIELD = "terms"
# Cross-script name terms (knowledge.text.name_terms): keywords, so prefix queries and counts work.
NAMES_FIELD = "names"
# Never returned by searches: the vector is big, the bigram and name terms are only for matching,
# and the text of ~100 candidates (~150 KB a search) is fetched only for the few that are kept
# (``SearchBackend.with_texts``).
SOURCE_EXCLUDES = ["embedding", TERMS_FIELD, NAMES_FIELD, "content"]


def has_nori(client: Elasticsearch) -> bool:
    try:
        client.indices.analyze(analyzer=NORI, text="빈집 정비")
    except BadRequestError:
        return False
    return True


def resolve_analyzer(setting: str, *, nori_available: Callable[[], bool]) -> str:
    """The analysis a new index gets for ``ES_ANALYZER=setting``."""
    if setting not in ("auto", NORI):
        return setting
    if nori_available():
        return NORI
    if setting == NORI:
        raise ImproperlyConfigured(
            "ES_ANALYZER=nori but the cluster has no nori analyzer: install the analysis-nori plugin "
            "(deploy/elasticsearch/analysis-nori builds one) or set ES_ANALYZER=auto."
        )
    return BIGRAM


def names_of(title: str, text: str) -> list[str]:
    return sorted(set(name_terms(f"{title}\n{text}")))


def bigram_terms(title: str, text: str) -> str:
    """The ``terms`` field of a chunk: the title counts as part of every chunk, as in the local backend."""
    return " ".join(lexical_terms(f"{title}\n{text}"))


def lexical_query(analyzer: str, text: str) -> Q:
    """The BM25 query of a search under the index's analysis."""
    if analyzer == BIGRAM:
        return Q("match", **{TERMS_FIELD: {"query": " ".join(lexical_terms(text)) or text}})
    return Q("multi_match", query=text, fields=["content", "title^0.5"])


def mapping(analyzer: str) -> Mapping:
    from inference.services import embedding_dim, embedding_model_name

    m = Mapping()
    m.meta("dynamic", "strict")
    m.meta(
        "_meta",
        {
            "analyzer": analyzer,
            "embedding_model": embedding_model_name(),
            "embedding_dim": embedding_dim(),
            "created_at": timezone.now().isoformat(),
        },
    )
    m.field("chunk_id", "long")
    m.field("document_id", "long")
    m.field("collection_id", "long")
    m.field("ordinal", "integer")
    m.field("language", "keyword")
    if analyzer == BIGRAM:
        # Stored for the hits, matched through the terms field only.
        m.field("title", "text", index=False)
        m.field("content", "text", index=False)
        m.field(TERMS_FIELD, "text", analyzer="whitespace")
    else:
        m.field("title", "text", analyzer=analyzer)
        m.field("content", "text", analyzer=analyzer)
    m.field(NAMES_FIELD, "keyword")
    m.field("embedding", "dense_vector", dims=embedding_dim(), index=True, similarity="cosine")
    m.field("metadata", "object", properties={"source": Keyword(), "category": Keyword(), "timestamp": Date()})
    return m


def own_script_count(lookup: NameLookup) -> dict:
    """A count search: how many chunks hold the word in its own script (``is_name`` decides)."""
    clause = {"prefix": {NAMES_FIELD: lookup.own}} if lookup.own_is_prefix else {"term": {NAMES_FIELD: lookup.own}}
    return {"size": 0, "track_total_hits": True, "query": clause}


def names_query(lookups: list[NameLookup]) -> Q:
    """One clause per name word (its best match counts once): Latin words by prefix, Hangul by terms."""
    clauses = []
    for lookup in lookups:
        match = (
            Q("prefix", **{NAMES_FIELD: lookup.prefix})
            if lookup.prefix
            else Q("terms", **{NAMES_FIELD: list(lookup.terms)})
        )
        clauses.append(Q("constant_score", filter=match, boost=1.0))
    return Q("bool", should=clauses, minimum_should_match=1)
