"""Background jobs over REST: poll an ingestion or re-index job."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response

from config.errors import NotFound
from knowledge.api.base import KnowledgeAPIView, knowledge_schema
from knowledge.api.serializers import JobOut
from knowledge.permissions import SCOPE_READ
from knowledge.selectors import job_get


class JobDetailView(KnowledgeAPIView):
    @knowledge_schema(
        operation_id="knowledge_jobs_retrieve",
        summary="A job: status (queued, running, done, failed), progress, error, timestamps",
        scope=SCOPE_READ,
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH, description="Job id.")],
        responses={200: JobOut},
        errors={404: "No such job for a document you may read."},
        description="Poll until `status` is `done` or `failed` (a failed attempt that will be retried is "
        "`queued` again, with `message` saying when). The document's own `status` says whether it is searchable.",
    )
    def get(self, request: Request, pk: int) -> Response:
        job = job_get(principal=self.principal, job_id=pk)
        if job is None:
            raise NotFound(f"No job {pk} for a document you may read.")
        return Response(JobOut(job, context={"request": request}).data)
