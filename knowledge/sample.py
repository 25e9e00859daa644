"""Corpora described by a ``manifest.json`` (a collection and its documents), loaded through ingestion.

The sample knowledge of the one-command run is ``knowledge/fixtures/sample``; the evaluation's
second corpus (``knowledge/evaluation/dataset/corpus``) has the same shape.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from knowledge import jobs
from knowledge.models import Collection, Document, Job
from knowledge.services import document_request_reindex, document_upload

SAMPLE_DIR = Path(__file__).resolve().parent / "fixtures" / "sample"


@dataclass
class SampleReport:
    collection: Collection
    created: int = 0
    existing: int = 0
    lines: list[str] = field(default_factory=list)


def load_sample_knowledge(*, run_jobs: bool = False) -> SampleReport:
    """Create the public sample collection and upload its documents; a second run adds nothing."""
    return load_manifest_dir(SAMPLE_DIR, run_jobs=run_jobs)


def load_manifest_dir(directory: Path, *, run_jobs: bool = False) -> SampleReport:
    """Create the manifest's collection and upload its documents; a second run adds nothing.

    ``run_jobs`` runs the ingestion jobs in this process (otherwise the worker, or
    KNOWLEDGE_JOBS_INLINE, does). Documents that failed before are queued again.
    """
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    spec = manifest["collection"]
    collection, _ = Collection.objects.get_or_create(
        slug=spec["slug"],
        defaults={"name": spec["name"], "description": spec["description"], "is_public": spec["is_public"]},
    )
    report = SampleReport(collection)
    for item in manifest["documents"]:
        path = directory / item["file"]
        result = document_upload(
            collection=collection,
            filename=path.name,
            data=path.read_bytes(),
            title=item.get("title", ""),
            source=item.get("source", ""),
            category=item.get("category", ""),
            language=item.get("language", ""),
            timestamp=dt.datetime.fromisoformat(item["timestamp"]) if item.get("timestamp") else None,
        )
        job = result.job
        if result.created:
            report.created += 1
        else:
            report.existing += 1
            if result.document.status == Document.Status.FAILED:
                job = document_request_reindex(document=result.document)
        if run_jobs and job is not None:
            jobs.dispatch(job, now=True)
        document = Document.objects.get(pk=result.document.pk)
        report.lines.append(f"{'new     ' if result.created else 'present '} {document.status:9} {path.name}")
    if run_jobs:
        # Anything still queued for these documents (e.g. from an earlier run without a worker).
        for job in Job.objects.filter(document__collection=collection, status=Job.Status.QUEUED):
            jobs.dispatch(job, now=True)
    return report
