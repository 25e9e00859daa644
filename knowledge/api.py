"""REST API of the knowledge base (mounted at /api/knowledge/). Thin adapters over services/selectors.

Errors have the platform's one shape: ``{"error": {"code", "message", ...}}``.
Callers only ever see collections that ``readable_collections`` grants them.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NotFound
from knowledge import permissions
from knowledge.errors import NoFile, TooManyFiles, WriteForbidden
from knowledge.models import Collection, Document
from knowledge.parsing import too_large
from knowledge.search import get_search_backend
from knowledge.selectors import (
    collection_list,
    document_get,
    document_list,
    readable_collection_ids,
    request_principal,
    writable_collections,
)
from knowledge.services import (
    UploadFile,
    UploadRejected,
    document_delete,
    document_replace_file,
    document_update_metadata,
    document_upload_many,
    retrieve_sync,
)
from knowledge.types import SearchFilters


class KnowledgeAPIView(APIView):
    """Auth and permission classes come from knowledge.permissions (read per request)."""

    # Methods that only read, besides GET/HEAD/OPTIONS (search is a POST that reads).
    read_methods: tuple[str, ...] = ()

    def get_authenticators(self):
        if permissions.AUTHENTICATION_CLASSES is not None:
            return permissions.instantiate(permissions.AUTHENTICATION_CLASSES)
        return super().get_authenticators()

    def get_permissions(self):
        method = self.request.method if self.request else "GET"
        reading = method in SAFE_METHODS or method in self.read_methods
        return permissions.instantiate(
            permissions.READ_PERMISSION_CLASSES if reading else permissions.WRITE_PERMISSION_CLASSES
        )


# --- serializers ---------------------------------------------------------------------


class CollectionOut(serializers.ModelSerializer):
    class Meta:
        model = Collection
        fields = ["id", "name", "slug", "description", "is_public"]


class DocumentOut(serializers.ModelSerializer):
    collection = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Document
        fields = [
            "id", "collection", "title", "source", "category", "language", "timestamp", "original_filename",
            "file_type", "size_bytes", "content_hash", "status", "error", "chunk_count", "embedding_model",
            "indexed_at", "created_at", "updated_at", "url",
        ]  # fmt: skip

    def get_url(self, obj: Document) -> str:
        request = self.context.get("request")
        path = obj.get_absolute_url()
        return request.build_absolute_uri(path) if request else path


class MetadataIn(serializers.Serializer):
    title = serializers.CharField(required=False, allow_blank=True, max_length=300)
    source = serializers.CharField(required=False, allow_blank=True, max_length=300)
    category = serializers.CharField(required=False, allow_blank=True, max_length=100)
    language = serializers.ChoiceField(required=False, allow_blank=True, choices=["", "ko", "en"])
    timestamp = serializers.DateTimeField(required=False, allow_null=True)


class UploadMetaIn(MetadataIn):
    collection = serializers.CharField(help_text="Collection id or slug.")


class UploadIn(UploadMetaIn):
    """The documented form; files are read from request.FILES and checked by the service
    (so an empty or bad file gets its own error code, not a generic field error)."""

    files = serializers.ListField(
        child=serializers.FileField(), required=False, help_text="One or more files (.txt .md .html .pdf .docx)."
    )
    file = serializers.FileField(required=False, help_text="A single file (alternative to files).")


class UploadResultOut(serializers.Serializer):
    document = DocumentOut()
    created = serializers.BooleanField(help_text="False: the same file was already in the collection.")
    job_id = serializers.IntegerField(allow_null=True)


class SearchIn(serializers.Serializer):
    query = serializers.CharField(max_length=2000, trim_whitespace=True)
    top_k = serializers.IntegerField(required=False, default=5, min_value=1)
    collections = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Collection ids or slugs (default: all readable)."
    )
    source = serializers.CharField(required=False, allow_blank=True)
    category = serializers.CharField(required=False, allow_blank=True)
    date_from = serializers.DateTimeField(required=False)
    date_to = serializers.DateTimeField(required=False)
    rerank = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate_top_k(self, value: int) -> int:
        if value > settings.KNOWLEDGE_MAX_TOP_K:
            raise serializers.ValidationError(f"at most {settings.KNOWLEDGE_MAX_TOP_K}")
        return value


class SearchHitOut(serializers.Serializer):
    """A ``RetrievedChunk``, flattened: the chunk's fields next to its score and ranks."""

    chunk_id = serializers.IntegerField(source="chunk.chunk_id")
    document_id = serializers.IntegerField(source="chunk.document_id")
    collection_id = serializers.IntegerField(source="chunk.collection_id")
    ordinal = serializers.IntegerField(source="chunk.ordinal")
    text = serializers.CharField(source="chunk.text")
    score = serializers.FloatField()
    title = serializers.CharField(source="chunk.title")
    source = serializers.CharField(source="chunk.source")
    category = serializers.CharField(source="chunk.category")
    language = serializers.CharField(source="chunk.language")
    url = serializers.CharField()
    timestamp = serializers.DateTimeField(source="chunk.timestamp", allow_null=True)
    lexical_rank = serializers.IntegerField(allow_null=True)
    semantic_rank = serializers.IntegerField(allow_null=True)


class SearchOut(serializers.Serializer):
    results = SearchHitOut(many=True)
    backend = serializers.CharField()
    took_ms = serializers.FloatField()


ErrorOut = inline_serializer(
    "KnowledgeError",
    {
        "error": inline_serializer(
            "KnowledgeErrorBody", {"code": serializers.CharField(), "message": serializers.CharField()}
        )
    },
)


def _resolve_collections(refs: list[str], principal: Any) -> list[Collection]:
    ids = [int(r) for r in refs if str(r).isdigit()]
    slugs = [r for r in refs if not str(r).isdigit()]
    found = list(collection_list(principal=principal).filter(Q(pk__in=ids) | Q(slug__in=slugs)))
    known = {str(c.pk) for c in found} | {c.slug for c in found}
    missing = [r for r in refs if str(r) not in known]
    if missing:
        raise serializers.ValidationError({"collections": [f"unknown collection: {', '.join(missing)}"]})
    return found


# --- views -------------------------------------------------------------------------


class CollectionListView(KnowledgeAPIView):
    @extend_schema(summary="Collections you may read", responses={200: CollectionOut(many=True)})
    def get(self, request: Request) -> Response:
        return Response(CollectionOut(collection_list(principal=request_principal(request)), many=True).data)


class DocumentListView(KnowledgeAPIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        summary="Documents in collections you may read",
        parameters=[
            OpenApiParameter("collection", str, description="Collection id or slug"),
            OpenApiParameter("status", str, enum=[s.value for s in Document.Status]),
            OpenApiParameter("category", str),
            OpenApiParameter("source", str),
        ],
        responses={200: DocumentOut(many=True)},
    )
    def get(self, request: Request) -> Response:
        principal = request_principal(request)
        params = request.query_params
        collection_id = None
        if params.get("collection"):
            collection_id = _resolve_collections([params["collection"]], principal)[0].pk
        documents = document_list(
            principal=principal,
            collection_id=collection_id,
            status=params.get("status"),
            category=params.get("category"),
            source=params.get("source"),
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(documents, request, view=self)
        return paginator.get_paginated_response(DocumentOut(page, many=True, context={"request": request}).data)

    @extend_schema(
        summary="Upload one or many files (ingested in the background)",
        request={"multipart/form-data": UploadIn},
        responses={202: UploadResultOut(many=True), 200: UploadResultOut(many=True), 400: ErrorOut, 413: ErrorOut},
    )
    def post(self, request: Request) -> Response:
        principal = request_principal(request)
        data = UploadMetaIn(data=request.data)
        data.is_valid(raise_exception=True)
        meta = data.validated_data
        collection = _resolve_collections([meta["collection"]], principal)[0]
        if not writable_collections(principal).filter(pk=collection.pk).exists():
            raise WriteForbidden(f"You may not upload to '{collection.slug}'.")
        uploaded = request.FILES.getlist("files") + request.FILES.getlist("file")
        if not uploaded:
            raise NoFile()
        if len(uploaded) > settings.KNOWLEDGE_MAX_FILES_PER_UPLOAD:
            raise TooManyFiles(f"At most {settings.KNOWLEDGE_MAX_FILES_PER_UPLOAD} files per upload.")
        files = []
        for item in uploaded:
            # Refuse oversized files before reading them into memory.
            if item.size > settings.KNOWLEDGE_MAX_UPLOAD_BYTES:
                raise UploadRejected([(item.name, too_large(item.name, item.size))])
            files.append(
                UploadFile(
                    filename=item.name,
                    data=item.read(),
                    content_type=item.content_type,
                    title=meta.get("title", "") if len(uploaded) == 1 else "",
                    source=meta.get("source", ""),
                    category=meta.get("category", ""),
                    language=meta.get("language", ""),
                    timestamp=meta.get("timestamp"),
                )
            )
        results = document_upload_many(collection=collection, files=files, user=request.user)
        body = [
            {
                "document": DocumentOut(r.document, context={"request": request}).data,
                "created": r.created,
                "job_id": r.job.pk if r.job else None,
            }
            for r in results
        ]
        queued = any(r.job is not None for r in results)
        return Response(body, status=status.HTTP_202_ACCEPTED if queued else status.HTTP_200_OK)


class DocumentDetailView(KnowledgeAPIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def _get(self, request: Request, pk: int, *, write: bool = False) -> Document:
        principal = request_principal(request)
        document = document_get(principal=principal, document_id=pk)
        if document is None:
            raise NotFound(f"No document {pk} in a collection you may read.")
        if write and not writable_collections(principal).filter(pk=document.collection_id).exists():
            raise WriteForbidden("You may not change this document.")
        return document

    @extend_schema(summary="One document", responses={200: DocumentOut, 404: ErrorOut})
    def get(self, request: Request, pk: int) -> Response:
        document = self._get(request, pk)
        return Response(DocumentOut(document, context={"request": request}).data)

    @extend_schema(
        summary="Update metadata, or replace the file (multipart 'file'): chunks are replaced in the background",
        request={"application/json": MetadataIn, "multipart/form-data": UploadIn},
        responses={200: DocumentOut, 202: DocumentOut, 400: ErrorOut, 404: ErrorOut},
    )
    def patch(self, request: Request, pk: int) -> Response:
        document = self._get(request, pk, write=True)
        data = MetadataIn(data=request.data)
        data.is_valid(raise_exception=True)
        code = status.HTTP_200_OK
        if data.validated_data:
            if document_update_metadata(document=document, **data.validated_data):
                code = status.HTTP_202_ACCEPTED
        upload = request.FILES.get("file")
        if upload is not None:
            if upload.size > settings.KNOWLEDGE_MAX_UPLOAD_BYTES:
                raise too_large(upload.name, upload.size)
            document_replace_file(
                document=document, filename=upload.name, data=upload.read(), content_type=upload.content_type
            )
            code = status.HTTP_202_ACCEPTED
        document.refresh_from_db()
        return Response(DocumentOut(document, context={"request": request}).data, status=code)

    @extend_schema(summary="Delete a document (and its chunks from the index)", responses={204: None, 404: ErrorOut})
    def delete(self, request: Request, pk: int) -> Response:
        document = self._get(request, pk, write=True)
        document_delete(document=document)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SearchView(KnowledgeAPIView):
    read_methods = ("POST",)
    parser_classes = [JSONParser]

    @extend_schema(
        summary="Hybrid search (BM25 + kNN, RRF, optional rerank) over collections you may read",
        request=SearchIn,
        responses={200: SearchOut, 400: ErrorOut, 503: ErrorOut},
    )
    def post(self, request: Request) -> Response:
        started = time.perf_counter()
        data = SearchIn(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        principal = request_principal(request)
        if params.get("collections"):
            collection_ids = tuple(c.pk for c in _resolve_collections(params["collections"], principal))
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
