"""Documents over REST: upload (files or text), list, get, update, replace, delete, reindex, sync by external id."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from config.errors import NotFound
from knowledge.api.base import (
    KnowledgeAPIView,
    collection_or_404,
    knowledge_schema,
    paginate,
    paginated,
    resolve_collections,
)
from knowledge.api.collections import COLLECTION_PARAMETER
from knowledge.api.serializers import (
    DocumentListQuery,
    DocumentOut,
    JobOut,
    MetadataPatchIn,
    SyncFileIn,
    SyncResultOut,
    TextDocumentIn,
    TextIn,
    UploadIn,
    UploadMetaIn,
    UploadResultOut,
)
from knowledge.errors import NoFile, TooManyFiles, WriteForbidden
from knowledge.models import Collection, Document
from knowledge.parsing import too_large
from knowledge.permissions import SCOPE_READ, SCOPE_WRITE
from knowledge.selectors import (
    collection_is_writable,
    document_by_external_id,
    document_get,
    document_list,
    request_principal,
)
from knowledge.services import (
    EXTERNAL_ID_PATTERN,
    UploadFile,
    UploadRejected,
    document_delete,
    document_replace_file,
    document_request_reindex,
    document_sync,
    document_update_metadata,
    document_upload_many,
    text_upload,
    validate_external_id,
)

UPLOAD_ERRORS = {
    400: "Invalid fields, an unknown collection, an empty, corrupt or undecodable file (`files[]` per file; "
    "nothing is stored).",
    413: "A file is larger than KNOWLEDGE_MAX_UPLOAD_MB (or a JSON body than 2.5 MB).",
    415: "An unsupported file type (.txt .md .html .pdf .docx are).",
}
DOCUMENT_PARAMETER = OpenApiParameter("id", int, OpenApiParameter.PATH, description="Document id.")
EXTERNAL_ID_PARAMETER = OpenApiParameter(
    "external_id",
    str,
    OpenApiParameter.PATH,
    pattern=EXTERNAL_ID_PATTERN,
    description="Your id for the document: 1-200 characters, no '/', not starting with '.' or a space "
    "(percent-encode it in the URL).",
)

DocumentPage = paginated("PaginatedDocumentList", DocumentOut(many=True))


def _render(request: Request, documents: list[Document]) -> list[dict[str, Any]]:
    return DocumentOut(documents, many=True, context={"request": request}).data


def _one(request: Request, document: Document) -> dict[str, Any]:
    """A document as the API shows it, re-read so that its status and latest job are current."""
    fresh = document_get(principal=request_principal(request), document_id=document.pk)
    return DocumentOut(fresh or document, context={"request": request}).data


def _writable(principal: Any, collection: Collection) -> Collection:
    if not collection_is_writable(principal=principal, collection=collection):
        raise WriteForbidden(f"You may not write to '{collection.slug}' (an API key has its owner's grants).")
    return collection


def _read_upload(item: Any, **metadata: Any) -> UploadFile:
    # Refuse oversized files before reading them into memory.
    if item.size > settings.KNOWLEDGE_MAX_UPLOAD_BYTES:
        raise UploadRejected([(item.name, too_large(item.name, item.size))])
    return UploadFile(filename=item.name, data=item.read(), content_type=item.content_type, **metadata)


def _is_json(request: Request) -> bool:
    return (request.content_type or "").split(";")[0].strip().lower() == "application/json"


def _upload_results(request: Request, results: list[Any]) -> Response:
    body = [
        {"document": _one(request, r.document), "created": r.created, "job_id": r.job.pk if r.job else None}
        for r in results
    ]
    queued = any(r.job is not None for r in results)
    return Response(body, status=status.HTTP_202_ACCEPTED if queued else status.HTTP_200_OK)


class DocumentListView(KnowledgeAPIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @knowledge_schema(
        operation_id="knowledge_documents_list",
        summary="Documents in collections you may read (filtered, paginated, newest first)",
        scope=SCOPE_READ,
        parameters=[DocumentListQuery],
        responses={200: DocumentPage},
        errors={400: "An invalid filter, `limit` or `offset`, or an unknown collection (`fields`)."},
    )
    def get(self, request: Request) -> Response:
        query = DocumentListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        collection_id = None
        if params.get("collection"):
            collection_id = resolve_collections([params["collection"]], self.principal)[0].pk
        documents = document_list(
            principal=self.principal,
            collection_id=collection_id,
            status=params.get("status"),
            category=params.get("category"),
            source=params.get("source"),
            updated_since=params.get("updated_since"),
            external_id=params.get("external_id"),
        )
        return paginate(self, request, documents, lambda page: _render(request, page))

    @knowledge_schema(
        operation_id="knowledge_documents_create",
        summary="Add documents: upload files (multipart, several at once) or send text / Markdown (JSON)",
        scope=SCOPE_WRITE,
        request={"multipart/form-data": UploadIn, "application/json": TextDocumentIn},
        responses={
            202: OpenApiResponse(UploadResultOut(many=True), description="Stored; ingestion jobs queued."),
            200: OpenApiResponse(UploadResultOut(many=True), description="Every file was already there."),
        },
        errors=UPLOAD_ERRORS,
        description="Bytes the collection already holds return the existing document (`created: false`); "
        "ingestion runs in the background: poll `latest_job.url` or `GET /api/knowledge/jobs/{id}/`.",
    )
    def post(self, request: Request) -> Response:
        principal = self.principal
        if _is_json(request):
            text = TextDocumentIn(data=request.data)
            text.is_valid(raise_exception=True)
            data = dict(text.validated_data)
            collection = _writable(principal, resolve_collections([data.pop("collection")], principal)[0])
            upload = text_upload(text=data.pop("text"), text_format=data.pop("format"), **data)
            results = document_upload_many(collection=collection, files=[upload], user=request.user)
            return _upload_results(request, results)
        form = UploadMetaIn(data=request.data)
        form.is_valid(raise_exception=True)
        meta = dict(form.validated_data)
        collection = _writable(principal, resolve_collections([meta.pop("collection")], principal)[0])
        uploaded = request.FILES.getlist("files") + request.FILES.getlist("file")
        if not uploaded:
            raise NoFile()
        if len(uploaded) > settings.KNOWLEDGE_MAX_FILES_PER_UPLOAD:
            raise TooManyFiles(f"At most {settings.KNOWLEDGE_MAX_FILES_PER_UPLOAD} files per upload.")
        title = meta.pop("title", "") if len(uploaded) == 1 else ""
        meta.pop("title", None)
        files = [_read_upload(item, title=title, **meta) for item in uploaded]
        return _upload_results(request, document_upload_many(collection=collection, files=files, user=request.user))


class DocumentDetailView(KnowledgeAPIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def _get(self, request: Request, pk: int, *, write: bool = False) -> Document:
        document = document_get(principal=self.principal, document_id=pk)
        if document is None:
            raise NotFound(f"No document {pk} in a collection you may read.")
        if write:
            _writable(self.principal, document.collection)
        return document

    @knowledge_schema(
        operation_id="knowledge_documents_retrieve",
        summary="One document: status, chunk count, error, latest job",
        scope=SCOPE_READ,
        parameters=[DOCUMENT_PARAMETER],
        responses={200: DocumentOut},
        errors={404: "No such document in a collection you may read."},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(DocumentOut(self._get(request, pk), context={"request": request}).data)

    @knowledge_schema(
        operation_id="knowledge_documents_update",
        summary="Update metadata (JSON), or replace the file (multipart `file`)",
        scope=SCOPE_WRITE,
        parameters=[DOCUMENT_PARAMETER],
        request={"application/json": MetadataPatchIn, "multipart/form-data": SyncFileIn},
        responses={
            200: OpenApiResponse(DocumentOut, description="Saved; nothing to re-index."),
            202: OpenApiResponse(DocumentOut, description="Saved; a re-index or ingestion job was queued."),
        },
        errors={
            **UPLOAD_ERRORS,
            404: "No such document in a collection you may read.",
            409: "Another document has these bytes or this external id.",
        },
        description="Metadata the index holds (title, source, category, language, timestamp) is re-pushed "
        "by a job; a new file is re-ingested and its chunks replace the old ones in one step.",
    )
    def patch(self, request: Request, pk: int) -> Response:
        document = self._get(request, pk, write=True)
        data = MetadataPatchIn(data=request.data)
        data.is_valid(raise_exception=True)
        code = status.HTTP_200_OK
        if data.validated_data and document_update_metadata(document=document, **data.validated_data):
            code = status.HTTP_202_ACCEPTED
        upload = request.FILES.get("file")
        if upload is not None:
            if upload.size > settings.KNOWLEDGE_MAX_UPLOAD_BYTES:
                raise too_large(upload.name, upload.size)
            document_replace_file(
                document=document, filename=upload.name, data=upload.read(), content_type=upload.content_type
            )
            code = status.HTTP_202_ACCEPTED
        return Response(_one(request, document), status=code)

    @knowledge_schema(
        operation_id="knowledge_documents_destroy",
        summary="Delete a document: it leaves search at once, then the database and its file",
        scope=SCOPE_WRITE,
        parameters=[DOCUMENT_PARAMETER],
        responses={204: None},
        errors={404: "No such document in a collection you may read."},
    )
    def delete(self, request: Request, pk: int) -> Response:
        document_delete(document=self._get(request, pk, write=True))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DocumentReindexView(KnowledgeAPIView):
    @knowledge_schema(
        operation_id="knowledge_documents_reindex",
        summary="Re-index a document (re-push its chunks, or re-ingest its file when it has none)",
        scope=SCOPE_WRITE,
        parameters=[DOCUMENT_PARAMETER],
        request=None,
        responses={202: JobOut},
        errors={404: "No such document in a collection you may read."},
    )
    def post(self, request: Request, pk: int) -> Response:
        document = document_get(principal=self.principal, document_id=pk)
        if document is None:
            raise NotFound(f"No document {pk} in a collection you may read.")
        _writable(self.principal, document.collection)
        job = document_request_reindex(document=document)
        if job is None:  # deleted since it was read
            raise NotFound(f"No document {pk} in a collection you may read.")
        job.refresh_from_db()
        return Response(JobOut(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class DocumentSyncView(KnowledgeAPIView):
    """``/collections/{collection}/documents/by-external-id/{external_id}/``: the integrator's own ids."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def _document(self, request: Request, collection: str, external_id: str) -> tuple[Collection, Document | None]:
        found = collection_or_404(request, collection)
        validate_external_id(external_id)
        return found, document_by_external_id(principal=self.principal, collection=found, external_id=external_id)

    @knowledge_schema(
        operation_id="knowledge_documents_by_external_id_retrieve",
        summary="The document with your external id",
        scope=SCOPE_READ,
        parameters=[COLLECTION_PARAMETER, EXTERNAL_ID_PARAMETER],
        responses={200: DocumentOut},
        errors={400: "An invalid external id.", 404: "No such collection or document."},
    )
    def get(self, request: Request, collection: str, external_id: str) -> Response:
        _, document = self._document(request, collection, external_id)
        if document is None:
            raise NotFound(f"No document with the external id {external_id!r} in '{collection}'.")
        return Response(DocumentOut(document, context={"request": request}).data)

    @knowledge_schema(
        operation_id="knowledge_documents_by_external_id_sync",
        summary="Create or replace the document with your external id (idempotent sync)",
        scope=SCOPE_WRITE,
        parameters=[COLLECTION_PARAMETER, EXTERNAL_ID_PARAMETER],
        request={"application/json": TextIn, "multipart/form-data": SyncFileIn},
        responses={
            201: OpenApiResponse(SyncResultOut, description="A new document; its ingestion job is queued."),
            202: OpenApiResponse(SyncResultOut, description="New bytes or metadata; a job is queued."),
            200: OpenApiResponse(
                SyncResultOut,
                description="Same bytes and metadata, or metadata the index does not hold: no job (`job_id: null`).",
            ),
        },
        errors={
            **UPLOAD_ERRORS,
            404: "No such collection, or one you may not read.",
            409: "Another document (with another external id) has these bytes.",
        },
        description="Send the content as JSON `text` (plain or Markdown) or a multipart `file`. The same bytes "
        "as stored do nothing (no job), so a nightly job can push everything and only changes cost work. New "
        "bytes replace the content: the job swaps the chunks, the old ones leave the index. Metadata fields you "
        "omit keep their value.",
    )
    def put(self, request: Request, collection: str, external_id: str) -> Response:
        found, _ = self._document(request, collection, external_id)
        _writable(self.principal, found)
        if _is_json(request):
            body = TextIn(data=request.data)
            body.is_valid(raise_exception=True)
            metadata = dict(body.validated_data)
            upload = text_upload(text=metadata.pop("text"), text_format=metadata.pop("format"), name_hint=external_id)
        else:
            body = SyncFileIn(data=request.data)
            body.is_valid(raise_exception=True)
            metadata = {k: v for k, v in body.validated_data.items() if k != "file"}
            upload = _read_upload(request.FILES["file"])
        result = document_sync(
            collection=found, external_id=external_id, upload=upload, metadata=metadata, user=request.user
        )
        code = status.HTTP_201_CREATED if result.created else status.HTTP_202_ACCEPTED if result.job else 200
        body_out = {
            "document": _one(request, result.document),
            "created": result.created,
            "changed": result.changed,
            "job_id": result.job.pk if result.job else None,
        }
        return Response(body_out, status=code)

    @knowledge_schema(
        operation_id="knowledge_documents_by_external_id_destroy",
        summary="Delete the document with your external id (it leaves search at once)",
        scope=SCOPE_WRITE,
        parameters=[COLLECTION_PARAMETER, EXTERNAL_ID_PARAMETER],
        responses={204: None},
        errors={400: "An invalid external id.", 404: "No such collection or document."},
    )
    def delete(self, request: Request, collection: str, external_id: str) -> Response:
        found, document = self._document(request, collection, external_id)
        _writable(self.principal, found)
        if document is None:
            raise NotFound(f"No document with the external id {external_id!r} in '{collection}'.")
        document_delete(document=document)
        return Response(status=status.HTTP_204_NO_CONTENT)
