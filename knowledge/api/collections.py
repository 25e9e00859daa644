"""Collections over REST: list (with document counts), create, get, update, delete."""

from __future__ import annotations

from typing import Literal

from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from knowledge.api.base import KnowledgeAPIView, collection_or_404, knowledge_schema
from knowledge.api.serializers import CollectionIn, CollectionOut, CollectionPatchIn
from knowledge.errors import WriteForbidden
from knowledge.models import Collection
from knowledge.permissions import SCOPE_READ, SCOPE_WRITE
from knowledge.selectors import (
    collection_list_with_counts,
    may_manage_collections,
    request_principal,
)
from knowledge.services import collection_create, collection_delete, collection_update

COLLECTION_PARAMETER = OpenApiParameter("collection", str, OpenApiParameter.PATH, description="Collection id or slug.")


def _may_manage(request: Request, collection: Collection | None, action: Literal["add", "change", "delete"]) -> None:
    """Creating needs staff or ``knowledge.add_collection``; changing or deleting also needs a
    grant on the collection (``knowledge.selectors.may_manage_collections``)."""
    if not may_manage_collections(request_principal(request), action, collection):
        what = "create collections" if collection is None else f"{action} the collection '{collection.slug}'"
        raise WriteForbidden(
            f"You may not {what}: it needs staff or the knowledge.{action}_collection permission"
            + ("" if collection is None else " and a grant on the collection")
            + " (an API key has its owner's)."
        )


class CollectionListView(KnowledgeAPIView):
    @knowledge_schema(
        operation_id="knowledge_collections_list",
        summary="Collections you may read, with document counts",
        scope=SCOPE_READ,
        responses={200: CollectionOut(many=True)},
        description="Not paginated: collections are few (only writers make them).",
    )
    def get(self, request: Request) -> Response:
        return Response(CollectionOut(collection_list_with_counts(principal=self.principal), many=True).data)

    @knowledge_schema(
        operation_id="knowledge_collections_create",
        summary="Create a collection",
        scope=SCOPE_WRITE,
        request=CollectionIn,
        responses={201: CollectionOut},
        errors={400: "Invalid name or slug (`fields`).", 409: "The name or slug is taken (`collection_exists`)."},
        description="A creator who is not staff is granted the new collection (reads it; writes with "
        "`knowledge.add_document`).",
    )
    def post(self, request: Request) -> Response:
        _may_manage(request, None, "add")
        body = CollectionIn(data=request.data)
        body.is_valid(raise_exception=True)
        collection = collection_create(**body.validated_data, creator=request.user)
        collection = collection_list_with_counts(principal=self.principal).get(pk=collection.pk)
        return Response(CollectionOut(collection).data, status=status.HTTP_201_CREATED)


class CollectionDetailView(KnowledgeAPIView):
    @knowledge_schema(
        operation_id="knowledge_collections_retrieve",
        summary="One collection (id or slug)",
        scope=SCOPE_READ,
        parameters=[COLLECTION_PARAMETER],
        responses={200: CollectionOut},
        errors={404: "No such collection, or one you may not read."},
    )
    def get(self, request: Request, collection: str) -> Response:
        return Response(CollectionOut(collection_or_404(request, collection)).data)

    @knowledge_schema(
        operation_id="knowledge_collections_update",
        summary="Change a collection's name, description or visibility",
        scope=SCOPE_WRITE,
        parameters=[COLLECTION_PARAMETER],
        request=CollectionPatchIn,
        responses={200: CollectionOut},
        errors={
            400: "Invalid fields (`fields`).",
            404: "No such collection, or one you may not read.",
            409: "The name is taken.",
        },
        description="The slug never changes (integrations address collections by it). Embeddings are the "
        "deployment's (one model for every collection, `INFERENCE_EMBEDDING_MODEL_NAME`), so there is no "
        "per-collection embedding setting to change.",
    )
    def patch(self, request: Request, collection: str) -> Response:
        found = collection_or_404(request, collection)
        _may_manage(request, found, "change")
        body = CollectionPatchIn(data=request.data)
        body.is_valid(raise_exception=True)
        collection_update(collection=found, **body.validated_data)
        return Response(CollectionOut(collection_or_404(request, str(found.pk))).data)

    @knowledge_schema(
        operation_id="knowledge_collections_destroy",
        summary="Delete a collection with its documents (they leave the search index at once)",
        scope=SCOPE_WRITE,
        parameters=[COLLECTION_PARAMETER],
        responses={204: None},
        errors={404: "No such collection, or one you may not read."},
    )
    def delete(self, request: Request, collection: str) -> Response:
        found = collection_or_404(request, collection)
        _may_manage(request, found, "delete")
        collection_delete(collection=found)
        return Response(status=status.HTTP_204_NO_CONTENT)
