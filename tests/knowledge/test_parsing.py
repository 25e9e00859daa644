"""Type detection, synchronous upload checks and text extraction for every format."""

from __future__ import annotations

import io
import zipfile

import pytest

from knowledge.errors import (
    CorruptFile,
    EmptyFile,
    FileTooLarge,
    NoTextExtracted,
    UndecodableText,
    UnsupportedFileType,
)
from knowledge.parsing import detect_file_type, extract_text, validate_upload
from tests.knowledge.files import make_docx, make_pdf

pytestmark = pytest.mark.fast


def parse(data: bytes, filename: str):
    file_type = detect_file_type(filename)
    validate_upload(data, filename=filename, file_type=file_type)
    return extract_text(data, filename=filename, file_type=file_type)


@pytest.mark.parametrize(
    ("filename", "content_type", "expected"),
    [
        ("a.TXT", None, "txt"),
        ("b.markdown", None, "md"),
        ("c.htm", None, "html"),
        ("d.pdf", None, "pdf"),
        ("e.docx", None, "docx"),
        ("noextension", "application/pdf", "pdf"),
    ],
)
def test_it_detects_supported_types(filename, content_type, expected):
    assert detect_file_type(filename, content_type) == expected


@pytest.mark.parametrize("filename", ["scan.png", "old.doc", "sheet.xlsx", "noextension"])
def test_it_refuses_unsupported_types(filename):
    with pytest.raises(UnsupportedFileType, match=r"Supported: \.txt, \.md, \.html, \.pdf, \.docx"):
        detect_file_type(filename, "application/octet-stream")


def test_text_in_utf8_with_bom_and_in_cp949():
    assert parse("\ufeff빈집 안내입니다.".encode(), "a.txt").text == "빈집 안내입니다."
    legacy = "빈집 철거 보조금은 시청 건축과에 신청합니다. 서류는 신청서와 건축물대장입니다.".encode("cp949")
    assert parse(legacy, "b.txt").text.startswith("빈집 철거 보조금은")


def test_markdown_keeps_text_and_finds_the_title():
    parsed = parse(
        "---\nlayout: x\n---\n# 빈집은행 안내\n\n**빈집은행**은 [온라인 창구](http://example.org)입니다.\n".encode(),
        "a.md",
    )
    assert parsed.title == "빈집은행 안내"
    assert parsed.text == "빈집은행 안내\n\n빈집은행은 온라인 창구입니다."


def test_html_drops_scripts_and_keeps_blocks_apart():
    html = (
        "<html><head><title>실태조사</title><style>p{}</style></head><body><nav>메뉴</nav>"
        "<h1>빈집 실태조사</h1><p>5년마다 조사합니다.</p><ul><li>1등급</li><li>2등급</li></ul>"
        "<script>alert(1)</script></body></html>"
    )
    parsed = parse(html.encode(), "a.html")
    assert parsed.title == "실태조사"
    assert [line for line in parsed.text.split("\n") if line] == [
        "빈집 실태조사",
        "5년마다 조사합니다.",
        "1등급",
        "2등급",
    ]


def test_pdf_text_and_title_in_korean():
    parsed = parse(make_pdf(["빈집 세제 혜택", "취득세를 최대 50% 감면받습니다."], title="세제 혜택"), "a.pdf")
    assert parsed.text == "빈집 세제 혜택\n취득세를 최대 50% 감면받습니다."
    assert parsed.title == "세제 혜택"


def test_docx_paragraphs_tables_and_title():
    data = make_docx(
        ["빈집은행은 중개 창구입니다."], title="빈집은행", table=[["항목", "금액"], ["리모델링", "2,000만 원"]]
    )
    parsed = parse(data, "a.docx")
    assert parsed.title == "빈집은행"
    assert "빈집은행은 중개 창구입니다." in parsed.text and "리모델링 | 2,000만 원" in parsed.text


def test_bad_files_are_refused_with_a_reason(settings):
    settings.KNOWLEDGE_MAX_UPLOAD_BYTES = 1000
    with pytest.raises(FileTooLarge, match="limit is"):
        validate_upload(b"x" * 1001, filename="big.txt", file_type="txt")
    with pytest.raises(EmptyFile, match="empty"):
        validate_upload(b" \n\t ", filename="blank.txt", file_type="txt")
    with pytest.raises(UndecodableText):
        validate_upload(bytes(range(256)) * 3, filename="binary.txt", file_type="txt")
    with pytest.raises(CorruptFile, match="not a PDF"):
        validate_upload(b"hello", filename="fake.pdf", file_type="pdf")
    with pytest.raises(CorruptFile, match="not a readable PDF"):
        validate_upload(make_pdf(["빈집"])[:300], filename="cut.pdf", file_type="pdf")
    with pytest.raises(CorruptFile, match="ZIP"):
        validate_upload(b"not a zip at all", filename="fake.docx", file_type="docx")
    other_zip = io.BytesIO()
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(CorruptFile, match=r"not a readable \.docx"):
        validate_upload(other_zip.getvalue(), filename="zip.docx", file_type="docx")


def test_a_pdf_without_text_is_refused_at_extraction():
    data = make_pdf([" "])
    validate_upload(data, filename="scan.pdf", file_type="pdf")  # opens fine: found by the job
    with pytest.raises(NoTextExtracted, match="No text"):
        extract_text(data, filename="scan.pdf", file_type="pdf")
