"""Knowledge base: collections of documents, their chunks, the ingestion job table, the local index.

The database is the source of truth. A chunk keeps its embedding (float32 bytes) so
that reindexing and the local search backend never re-embed.
"""

from __future__ import annotations

import numpy as np
from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Collection(models.Model):
    """A named knowledge base: the unit of access control and of search filtering."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    slug = models.SlugField(_("slug"), max_length=100, unique=True, allow_unicode=True)
    description = models.TextField(_("description"), blank=True)
    is_public = models.BooleanField(
        _("public"), default=False, help_text=_("Readable by anyone, including anonymous browser chat.")
    )
    readers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="readable_collections", verbose_name=_("readers")
    )
    reader_groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="readable_collections", verbose_name=_("reader groups")
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("collection")
        verbose_name_plural = _("collections")

    def __str__(self) -> str:
        return self.name


class Document(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        INDEXING = "indexing", _("indexing")
        INDEXED = "indexed", _("indexed")
        FAILED = "failed", _("failed")

    class FileType(models.TextChoices):
        TXT = "txt", "Text"
        MD = "md", "Markdown"
        HTML = "html", "HTML"
        PDF = "pdf", "PDF"
        DOCX = "docx", "Word (docx)"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(_("title"), max_length=300, blank=True)
    source = models.CharField(_("source"), max_length=300, blank=True, help_text=_("Issuer or origin."))
    category = models.CharField(_("category"), max_length=100, blank=True)
    language = models.CharField(_("language"), max_length=8, blank=True, help_text=_("Detected when blank."))
    timestamp = models.DateTimeField(_("document date"), null=True, blank=True)
    file = models.FileField(_("file"), upload_to="knowledge/%Y/%m/", max_length=500)
    original_filename = models.CharField(max_length=255)
    file_type = models.CharField(max_length=8, choices=FileType.choices)
    size_bytes = models.PositiveBigIntegerField(default=0)
    content_hash = models.CharField(max_length=64, help_text=_("SHA-256 of the file bytes."))
    # The integrator's own id for the document (unique within the collection, blank: none),
    # so a sync job can push the same record again and only changed bytes cost work.
    external_id = models.CharField(_("external id"), max_length=200, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    embedding_model = models.CharField(max_length=100, blank=True)
    indexed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("document")
        verbose_name_plural = _("documents")
        constraints = [
            # Re-uploading the same bytes into the same collection finds the existing row.
            models.UniqueConstraint(fields=["collection", "content_hash"], name="knowledge_document_unique_hash"),
            models.UniqueConstraint(
                fields=["collection", "external_id"],
                condition=~models.Q(external_id=""),
                name="knowledge_document_unique_external_id",
            ),
        ]
        indexes = [
            # The REST list's "updated since" filter (incremental syncs poll it).
            models.Index(fields=["updated_at"], name="knowledge_doc_updated"),
        ]

    def __str__(self) -> str:
        return self.display_title

    def get_absolute_url(self) -> str:
        return document_url(self.pk)

    @property
    def display_title(self) -> str:
        return self.title or self.original_filename


def document_url(document_id: int) -> str:
    """Where a citation links to (needs no database row, so search hits can build it)."""
    try:
        return reverse("knowledge-pages:document", args=[document_id])
    except Exception:  # the HTML page is not mounted: fall back to the REST detail
        return reverse("knowledge:document-detail", args=[document_id])


class Chunk(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField()
    char_start = models.PositiveIntegerField()
    char_end = models.PositiveIntegerField()
    embedding_model = models.CharField(max_length=100)
    # float32 little-endian bytes, L2-normalised (dims = len / 4).
    embedding = models.BinaryField()

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["document", "ordinal"], name="knowledge_chunk_unique_ordinal")]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"

    @property
    def vector(self) -> np.ndarray:
        return vector_from_bytes(self.embedding)


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def vector_from_bytes(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(data), dtype="<f4")


class Job(models.Model):
    """A background job (the database is the queue; see docs/knowledge.md, "Jobs")."""

    class Kind(models.TextChoices):
        INGEST = "ingest", _("ingest document")
        REINDEX_DOCUMENT = "reindex_document", _("re-index document")
        DELETE_FROM_INDEX = "delete_from_index", _("delete from index")

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    kind = models.CharField(max_length=20, choices=Kind.choices)
    document = models.ForeignKey(Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    progress = models.PositiveSmallIntegerField(default=0, help_text=_("Percent done."))
    message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    run_after = models.DateTimeField(default=timezone.now)
    locked_by = models.CharField(max_length=100, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "run_after"], name="knowledge_job_claim")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"


class LocalIndex(models.Model):
    """A concrete index of the local search backend; ``alias`` is set on the live one."""

    name = models.CharField(max_length=200, unique=True)
    alias = models.CharField(max_length=200, blank=True)
    # Bumped on every write so that each process reloads its in-memory copy.
    generation = models.PositiveBigIntegerField(default=0)
    analyzer = models.CharField(max_length=50, default="char-bigram")
    embedding_model = models.CharField(max_length=100)
    embedding_dim = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["alias"], condition=~models.Q(alias=""), name="knowledge_localindex_alias")
        ]

    def __str__(self) -> str:
        return self.name


class LocalIndexEntry(models.Model):
    """One chunk in a local index (denormalised like an Elasticsearch document)."""

    index = models.ForeignKey(LocalIndex, on_delete=models.CASCADE, related_name="entries")
    chunk_id = models.BigIntegerField()
    document_id = models.BigIntegerField(db_index=True)
    collection_id = models.BigIntegerField()
    ordinal = models.PositiveIntegerField()
    title = models.CharField(max_length=300, blank=True)
    text = models.TextField()
    source = models.CharField(max_length=300, blank=True)
    category = models.CharField(max_length=100, blank=True)
    language = models.CharField(max_length=8, blank=True)
    timestamp = models.DateTimeField(null=True, blank=True)
    embedding = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["index", "chunk_id"], name="knowledge_localentry_unique")]

    def __str__(self) -> str:
        return f"{self.index_id}:{self.chunk_id}"
