"""Answers as safe HTML: Markdown with raw HTML disabled, then sanitised.

Model output and document text are untrusted. Two layers keep script out:
markdown-it with ``html=False`` escapes any HTML in the text and refuses
``javascript:``-style links; nh3 (the ammonia sanitiser) then allows only a
small set of tags, attributes and URL schemes. ``[n]`` citation markers become
links to the numbered sources under the answer.

Links are clickable only where the platform sends people: its own source pages
(``/knowledge/...``), anchors in the page, and the domains an operator allows
(CHAT_LINK_ALLOWED_DOMAINS). Any other link, whether the model wrote it or a document
planted it, is rendered as its text: an answer cannot carry a citizen to a look-alike site.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

import nh3
from django.conf import settings
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.rules_core import StateCore

_CITE = re.compile(r"\[(\d{1,3})\]")

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "a", "sup",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title", "class"}, "sup": {"class"}, "ol": {"start"}}


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])

    def render_text(renderer, tokens, idx, options, env) -> str:
        text = escapeHtml(tokens[idx].content)
        prefix = env.get("cite_prefix")
        if prefix is None:
            return text
        return _CITE.sub(lambda m: f'<sup class="cite"><a href="#{prefix}{m.group(1)}">[{m.group(1)}]</a></sup>', text)

    md.add_render_rule("text", render_text)
    md.core.ruler.push("unlink_foreign", _unlink_foreign)
    return md


# The platform's own pages an answer may link to (the source pages of knowledge documents).
OWN_PATH_PREFIXES = ("/knowledge/",)


def link_allowed(href: str | None) -> bool:
    """True for an anchor, a path under OWN_PATH_PREFIXES, or http(s) to CHAT_LINK_ALLOWED_DOMAINS."""
    href = (href or "").strip()
    if href.startswith("#"):
        return True
    if href.startswith(OWN_PATH_PREFIXES) and not href.startswith("//"):
        return True
    parts = urlsplit(href)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in settings.CHAT_LINK_ALLOWED_DOMAINS)


def _unlink_foreign(state: StateCore) -> None:
    """Drop the link_open/link_close pair of every link that ``link_allowed`` refuses (its text stays)."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        kept, open_links = [], []
        for token in block.children:
            if token.type == "link_open":
                allowed = link_allowed(str(token.attrGet("href") or ""))
                open_links.append(allowed)
                if allowed:
                    kept.append(token)
            elif token.type == "link_close":
                if open_links.pop() if open_links else False:
                    kept.append(token)
            else:
                kept.append(token)
        block.children = kept


def render_markdown(text: str, *, cite_prefix: str | None = None) -> str:
    """Safe HTML for an answer. ``cite_prefix``: ``[n]`` links to ``#{cite_prefix}{n}``."""
    prefix = re.sub(r"[^A-Za-z0-9_-]", "", cite_prefix) if cite_prefix is not None else None
    html = _parser().render(text or "", {"cite_prefix": prefix})
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def cite_prefix(message_id: int | None) -> str:
    """The id prefix of an answer's source list items: ``[n]`` links to ``#src-<message id>-<n>``.

    The browser (chat/static/chat/chat.js) builds the same ids for the list it renders.
    """
    return f"src-{message_id}-"


def answer_html(content: str, message_id: int | None) -> str:
    """An answer as safe HTML, its citations linked to the sources listed under it."""
    return render_markdown(content, cite_prefix=cite_prefix(message_id))
