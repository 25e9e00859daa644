"""Answers render as safe HTML: no script from model output or document text (no services)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from chat.markdown import ALLOWED_TAGS, render_markdown

pytestmark = pytest.mark.fast

ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](vbscript:msgbox(1))",
    "![img](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<iframe src="https://evil.example"></iframe>',
    "<svg onload=alert(1)>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "``` \n</code><script>alert(1)</script>\n```",
]


class Elements(HTMLParser):
    """Every element and attribute a browser would build from the HTML (text is inert)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(html)
    return parser.found


@pytest.mark.parametrize("attack", ATTACKS)
def test_it_never_emits_active_content(attack):
    html = render_markdown(f"답변입니다. {attack} [1]", cite_prefix="src-1-")
    for tag, attrs in elements(html):
        assert tag in ALLOWED_TAGS, (attack, html)
        assert not any(name.startswith("on") or name == "style" for name in attrs), (attack, html)
        href = (attrs.get("href") or "").strip().lower()
        assert not href or href.startswith(("#", "http://", "https://", "mailto:")), (attack, html)


def test_it_renders_markdown_and_citation_links():
    html = render_markdown("**중요**: 신청 기한은 30일입니다 [2].\n\n- 하나\n- 둘", cite_prefix="src-9-")
    assert "<strong>중요</strong>" in html
    assert '<sup class="cite"><a href="#src-9-2"' in html
    assert "<li>하나</li>" in html


def test_it_keeps_links_to_allowed_domains_with_rel_noopener(settings):
    settings.CHAT_LINK_ALLOWED_DOMAINS = ["gov.kr"]
    html = render_markdown("[정부24](https://www.gov.kr)")
    assert 'href="https://www.gov.kr"' in html and "noopener" in html


def test_links_elsewhere_are_only_text(settings):
    """Model- or document-written links to other sites are not clickable; own source pages and anchors are."""
    settings.CHAT_LINK_ALLOWED_DOMAINS = ["gov.kr"]
    html = render_markdown(
        "[신청](https://gov.kr.evil.example/x) <https://evil.example/y> [원문](/knowledge/documents/3/) "
        "[x](//evil.example/z) [j](javascript:alert(1)) [1]",
        cite_prefix="src-1-",
    )
    hrefs = [attrs.get("href") for tag, attrs in elements(html) if tag == "a"]
    assert hrefs == ["/knowledge/documents/3/", "#src-1-1"]
    assert "신청" in html and "https://evil.example/y" in html  # the text stays, as text


def test_it_sanitises_the_citation_prefix():
    html = render_markdown("[1]", cite_prefix='x" onmouseover="alert(1)')
    assert elements(html)[2] == ("a", {"href": "#xonmouseoveralert11", "rel": "noopener noreferrer nofollow"})


def test_it_escapes_html_in_code():
    html = render_markdown("`<b>x</b>`")
    assert "<code>&lt;b&gt;x&lt;/b&gt;</code>" in html
