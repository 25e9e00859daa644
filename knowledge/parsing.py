"""File type detection, upload validation and text extraction (txt, md, html, pdf, docx).

``validate_upload`` runs in the web request and must stay cheap: it checks the type,
the size and that the file opens (PDF cross-reference table, docx package, text
encoding). ``extract_text`` does the full extraction in the background job.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePath

from charset_normalizer import from_bytes
from django.conf import settings

from knowledge.errors import (
    CorruptFile,
    EmptyFile,
    FileTooLarge,
    NoTextExtracted,
    UndecodableText,
    UnsupportedFileType,
)
from knowledge.text import normalize_text

logger = logging.getLogger(__name__)

_EXTENSIONS = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
_CONTENT_TYPES = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}
SUPPORTED_TYPES = ("txt", "md", "html", "pdf", "docx")


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    text: str  # normalised
    title: str = ""


def detect_file_type(filename: str, content_type: str | None = None) -> str:
    """The file type from the extension (or, without one, the declared content type)."""
    suffix = PurePath(filename or "").suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if not suffix and content_type:
        kind = _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
        if kind:
            return kind
    shown = suffix or "no extension"
    raise UnsupportedFileType(
        f"Unsupported file type ({shown}) for '{filename}'. Supported: .txt, .md, .html, .pdf, .docx."
    )


def validate_upload(data: bytes, *, filename: str, file_type: str) -> None:
    """Raise an InvalidUpload subclass when the file is clearly unusable (synchronous checks)."""
    if len(data) > settings.KNOWLEDGE_MAX_UPLOAD_BYTES:
        raise too_large(filename, len(data))
    if not data.strip():
        raise EmptyFile(f"'{filename}' is empty.")
    if file_type in ("txt", "md", "html"):
        decode_text(data, filename=filename)
    elif file_type == "pdf":
        _open_pdf(data, filename=filename)
    elif file_type == "docx":
        _open_docx(data, filename=filename)


def human_size(n: int) -> str:
    for unit, size in (("MiB", 1_048_576), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def too_large(filename: str, size: int) -> FileTooLarge:
    limit = settings.KNOWLEDGE_MAX_UPLOAD_BYTES
    return FileTooLarge(
        f"'{filename}' is {human_size(size)}; the limit is {human_size(limit)} (KNOWLEDGE_MAX_UPLOAD_MB)."
    )


def extract_text(data: bytes, *, filename: str, file_type: str) -> ParsedDocument:
    """Full text extraction, normalised. Raises InvalidUpload when nothing usable comes out."""
    if file_type == "txt":
        parsed = ParsedDocument(normalize_text(decode_text(data, filename=filename)))
    elif file_type == "md":
        parsed = _parse_markdown(decode_text(data, filename=filename))
    elif file_type == "html":
        parsed = _parse_html(decode_text(data, filename=filename))
    elif file_type == "pdf":
        parsed = _parse_pdf(data, filename=filename)
    elif file_type == "docx":
        parsed = _parse_docx(data, filename=filename)
    else:
        raise UnsupportedFileType(f"Unsupported file type '{file_type}'.")
    if not parsed.text:
        raise NoTextExtracted(f"No text could be extracted from '{filename}' (a scanned image or an empty file?).")
    return parsed


# --- text ------------------------------------------------------------------------


def decode_text(data: bytes, *, filename: str) -> str:
    """UTF-8 (with or without BOM) first; otherwise the encoding charset-normalizer finds.

    Korean files in the wild are often CP949/EUC-KR; charset-normalizer detects those.
    Binary data (NUL bytes, or no coherent encoding) is refused.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UndecodableText(f"'{filename}' looks like binary data, not text.")
    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        raise UndecodableText(f"Cannot detect the text encoding of '{filename}'; save it as UTF-8.")
    # charset-normalizer picks *some* single-byte codec for any noise; refuse results
    # that are mostly symbols rather than letters.
    text = str(best)
    letters = sum(1 for ch in text if ch.isalnum() or ch.isspace())
    if len(text) == 0 or letters / len(text) < 0.6 or best.chaos > 0.3:
        raise UndecodableText(f"Cannot decode '{filename}' as text (tried {best.encoding}); save it as UTF-8.")
    return text


_MD_HEADING = re.compile(r"^\s{0,3}#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_MD_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)


def _parse_markdown(raw: str) -> ParsedDocument:
    # Markdown is readable as text: keep it (headings and list markers help the
    # sentence splitter); drop front matter and link targets, which are noise for search.
    text = _MD_FRONT_MATTER.sub("", raw.replace("\r\n", "\n"))
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"^\s{0,3}#{1,6}\s+", "", text, flags=re.MULTILINE)
    text = re.sub(r"(\*\*|__|`)", "", text)
    heading = _MD_HEADING.search(raw)
    return ParsedDocument(normalize_text(text), normalize_text(heading.group(1)) if heading else "")


_HTML_BLOCKS = (
    "p", "div", "section", "article", "li", "tr", "br", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "ul", "ol", "blockquote", "pre", "dd", "dt", "header", "footer", "main",
)  # fmt: skip


def _parse_html(raw: str) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "nav", "svg", "iframe"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.title:
        soup.title.decompose()
    if not title and (h1 := soup.find("h1")):
        title = h1.get_text(" ", strip=True)
    # Block elements become line breaks so that sentences and list items stay apart.
    for tag in soup.find_all(_HTML_BLOCKS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    body = soup.body or soup
    return ParsedDocument(normalize_text(body.get_text()), normalize_text(title))


# --- pdf -------------------------------------------------------------------------


def _open_pdf(data: bytes, *, filename: str):
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if b"%PDF-" not in data[:1024]:  # the spec allows leading bytes before the header
        raise CorruptFile(f"'{filename}' is not a PDF file (no %PDF header).")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise CorruptFile(f"'{filename}' is encrypted; upload a PDF without a password.")
        if len(reader.pages) == 0:
            raise CorruptFile(f"'{filename}' has no pages.")
    except CorruptFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise CorruptFile(f"'{filename}' is not a readable PDF: {exc}") from exc
    return reader


def _parse_pdf(data: bytes, *, filename: str) -> ParsedDocument:
    reader = _open_pdf(data, filename=filename)
    pages: list[str] = []
    for number, page in enumerate(reader.pages, start=1):
        try:
            pages.append(page.extract_text() or "")
        except Exception as exc:  # pypdf raises many types on damaged content streams
            raise CorruptFile(f"'{filename}': page {number} cannot be read: {exc}") from exc
    title = ""
    try:
        title = str((reader.metadata or {}).get("/Title") or "")
    except Exception:  # broken metadata does not make the text unusable
        logger.info("unreadable PDF metadata in %s", filename)
    return ParsedDocument(normalize_text("\n\n".join(pages)), normalize_text(title))


# --- docx ------------------------------------------------------------------------


def _open_docx(data: bytes, *, filename: str):
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise CorruptFile(f"'{filename}' is not a .docx file (not a ZIP package).")
    try:
        return docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CorruptFile(f"'{filename}' is not a readable .docx file: {exc}") from exc
    except Exception as exc:  # lxml errors on a damaged document.xml
        raise CorruptFile(f"'{filename}' is not a readable .docx file: {exc}") from exc


def _parse_docx(data: bytes, *, filename: str) -> ParsedDocument:
    document = _open_docx(data, filename=filename)
    blocks: list[str] = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            cells = [cell.text.strip() for cell in row.cells]
            blocks.append(" | ".join(c for c in cells if c))
    title = document.core_properties.title or ""
    if not title:
        title = next((p.text for p in document.paragraphs if p.style.name.startswith(("Title", "Heading"))), "")
    return ParsedDocument(normalize_text("\n".join(blocks)), normalize_text(title))
