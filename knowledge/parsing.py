"""File type detection, upload validation and text extraction (txt, md, html, pdf, docx).

``validate_upload`` runs in the web request and must stay cheap and safe: the type, the
size, the text encoding, and the structure a file shows without being opened (a PDF's
header and trailer, a docx package's directory of parts). It never decompresses
anything: a zip bomb costs the web process a directory listing.

``extract_text`` does the full extraction, in the worker and inside limits (``ParseLimits``):
an archive's declared unpacked size and compression ratio are checked before it is
opened, a PDF's pages are counted before they are read, and Markdown is cleaned from
markdown-it's tokens (linear in the input) instead of regexes over the raw text. The job
runs it in a child process with a wall-clock and memory bound (``knowledge.sandbox``).
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePath

from charset_normalizer import from_bytes
from django.conf import settings
from markdown_it import MarkdownIt
from markdown_it.token import Token

from knowledge.errors import (
    ArchiveTooLarge,
    CorruptFile,
    EmptyFile,
    FileTooLarge,
    NoTextExtracted,
    ParseLimitExceeded,
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


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What one parse may cost (the settings' values; the sandbox passes them to its child)."""

    max_unpacked_bytes: int = 200 * 1024 * 1024
    max_compression_ratio: int = 100
    max_archive_members: int = 10_000
    max_pdf_pages: int = 2000

    @classmethod
    def from_settings(cls) -> ParseLimits:
        return cls(
            max_unpacked_bytes=settings.KNOWLEDGE_MAX_UNPACKED_MB * 1024 * 1024,
            max_compression_ratio=settings.KNOWLEDGE_MAX_COMPRESSION_RATIO,
            max_pdf_pages=settings.KNOWLEDGE_MAX_PDF_PAGES,
        )


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
        _check_pdf_structure(data, filename=filename)
    elif file_type == "docx":
        _docx_members(data, filename=filename)


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


def extract_text(data: bytes, *, filename: str, file_type: str, limits: ParseLimits | None = None) -> ParsedDocument:
    """Full text extraction, normalised, within ``limits`` (default: the settings').

    Raises InvalidUpload when nothing usable comes out or the file needs more than the limits.
    In a job, call it through ``knowledge.sandbox.extract_text_isolated`` (time and memory bound).
    """
    limits = limits or ParseLimits.from_settings()
    if file_type == "txt":
        parsed = ParsedDocument(normalize_text(decode_text(data, filename=filename)))
    elif file_type == "md":
        parsed = _parse_markdown(decode_text(data, filename=filename))
    elif file_type == "html":
        parsed = _parse_html(decode_text(data, filename=filename))
    elif file_type == "pdf":
        parsed = _parse_pdf(data, filename=filename, limits=limits)
    elif file_type == "docx":
        parsed = _parse_docx(data, filename=filename, limits=limits)
    else:
        raise UnsupportedFileType(f"Unsupported file type '{file_type}'.")
    if not parsed.text:
        raise NoTextExtracted(f"No text could be extracted from '{filename}' (a scanned image or an empty file?).")
    if not any(ch.isalnum() for ch in parsed.text):  # one linear pass; only punctuation or markup left
        raise NoTextExtracted(f"'{filename}' has no words or numbers to search, only symbols or markup.")
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


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # Raw HTML stays text (html=False); tables are read cell by cell.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _strip_front_matter(text: str) -> str:
    """YAML front matter (``---`` ... ``---`` at the top) is metadata, not text: one find, linear."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 3)
        if end != -1:
            return text[end + 5 :]
    return text


def _inline_text(children: list[Token]) -> str:
    """An inline token's text: link and image targets dropped (an image keeps its alt text), breaks kept."""
    out: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline", "image", "html_inline"):
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            out.append("\n")
    return "".join(out)


def _parse_markdown(raw: str) -> ParsedDocument:
    # Markdown is readable as text: keep it (headings and list items stay on lines of their own,
    # which helps the sentence splitter); drop front matter, emphasis marks and link targets,
    # which are noise for search. Built from markdown-it's tokens: linear in the input, where
    # regexes over the raw text were quadratic on e.g. 80 KB of "![" (22.7 s).
    lines: list[str] = []
    title = ""
    heading = ""
    row: list[str] | None = None
    item_marks: list[str] = []  # the marker of the list item being read, per open list
    numbers: list[int | None] = []  # per open list: the last item number (None: bullets)
    for token in _markdown().parse(_strip_front_matter(raw.replace("\r\n", "\n"))):
        kind = token.type
        if kind == "heading_open":
            heading = token.tag
        elif kind == "bullet_list_open":
            item_marks.append("- ")
            numbers.append(None)
        elif kind == "ordered_list_open":
            item_marks.append("")
            numbers.append(int(token.attrGet("start") or 1) - 1)
        elif kind == "list_item_open" and numbers and numbers[-1] is not None:
            numbers[-1] += 1
            item_marks[-1] = f"{numbers[-1]}. "
        elif kind in ("bullet_list_close", "ordered_list_close") and item_marks:
            item_marks.pop()
            numbers.pop()
            if not item_marks:
                lines.append("")
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close" and row is not None:
            lines.append(" | ".join(cell for cell in row if cell))
            row = None
        elif kind == "inline":
            text = _inline_text(token.children or [])
            if row is not None:
                row.append(text.strip())
                continue
            if heading == "h1" and not title:
                title = text
            mark = item_marks[-1] if item_marks else ""
            lines.append(mark + text)
        elif kind in ("fence", "code_block"):
            lines.append(token.content)
        elif kind in ("heading_close", "paragraph_close"):
            heading = ""
            if not item_marks:
                lines.append("")  # a blank line between blocks, as in the source
    return ParsedDocument(normalize_text("\n".join(lines)), normalize_text(title))


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


def _check_pdf_structure(data: bytes, *, filename: str) -> None:
    """Header and trailer, read as bytes (nothing parsed or inflated): what the web request checks."""
    if b"%PDF-" not in data[:1024]:  # the spec allows leading bytes before the header
        raise CorruptFile(f"'{filename}' is not a PDF file (no %PDF header).")
    tail = data[-4096:]
    if b"%%EOF" not in tail or b"startxref" not in tail:
        raise CorruptFile(f"'{filename}' is not a readable PDF: it has no trailer (cut short?).")


def _open_pdf(data: bytes, *, filename: str):
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    _check_pdf_structure(data, filename=filename)
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


def _parse_pdf(data: bytes, *, filename: str, limits: ParseLimits) -> ParsedDocument:
    reader = _open_pdf(data, filename=filename)
    if len(reader.pages) > limits.max_pdf_pages:
        raise ParseLimitExceeded(
            f"'{filename}' has {len(reader.pages)} pages; the limit is {limits.max_pdf_pages} (KNOWLEDGE_MAX_PDF_PAGES)."
        )
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


# The parts every Word package has ([Content_Types].xml names the others).
DOCX_REQUIRED_PARTS = ("[Content_Types].xml", "word/document.xml")


def _docx_members(data: bytes, *, filename: str) -> list[zipfile.ZipInfo]:
    """The package's directory of parts (the central directory only: nothing is decompressed)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            members = package.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise CorruptFile(f"'{filename}' is not a .docx file (not a ZIP package).") from None
    names = {m.filename for m in members}
    missing = [part for part in DOCX_REQUIRED_PARTS if part not in names]
    if missing:
        raise CorruptFile(f"'{filename}' is not a readable .docx file: it has no {', '.join(missing)}.")
    return members


def check_archive(members: list[zipfile.ZipInfo], *, filename: str, limits: ParseLimits) -> None:
    """Refuse a package that would unpack too big or too fast, before anything is opened.

    The sizes are the directory's own claims; zipfile never inflates a member past its
    claimed size (and then fails its CRC), so a package that lies about them fails too.
    """
    if len(members) > limits.max_archive_members:
        raise ArchiveTooLarge(f"'{filename}' holds {len(members)} files; the limit is {limits.max_archive_members}.")
    total = sum(m.file_size for m in members)
    if total > limits.max_unpacked_bytes:
        raise ArchiveTooLarge(
            f"'{filename}' unpacks to {human_size(total)}; the limit is {human_size(limits.max_unpacked_bytes)} "
            "(KNOWLEDGE_MAX_UNPACKED_MB)."
        )
    for m in members:
        # Small parts compress well legitimately; a bomb is a large part from a few bytes.
        if m.file_size > 1024 * 1024 and m.file_size > limits.max_compression_ratio * max(m.compress_size, 1):
            ratio = m.file_size // max(m.compress_size, 1)
            raise ArchiveTooLarge(
                f"'{filename}': {m.filename} is compressed {ratio}:1; the limit is "
                f"{limits.max_compression_ratio}:1 (KNOWLEDGE_MAX_COMPRESSION_RATIO), a decompression bomb?"
            )


def _open_docx(data: bytes, *, filename: str, limits: ParseLimits):
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    check_archive(_docx_members(data, filename=filename), filename=filename, limits=limits)
    try:
        return docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CorruptFile(f"'{filename}' is not a readable .docx file: {exc}") from exc
    except Exception as exc:  # lxml errors on a damaged document.xml
        raise CorruptFile(f"'{filename}' is not a readable .docx file: {exc}") from exc


def _parse_docx(data: bytes, *, filename: str, limits: ParseLimits) -> ParsedDocument:
    document = _open_docx(data, filename=filename, limits=limits)
    blocks: list[str] = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            cells = [cell.text.strip() for cell in row.cells]
            blocks.append(" | ".join(c for c in cells if c))
    title = document.core_properties.title or ""
    if not title:
        title = next((p.text for p in document.paragraphs if p.style.name.startswith(("Title", "Heading"))), "")
    return ParsedDocument(normalize_text("\n".join(blocks)), normalize_text(title))
