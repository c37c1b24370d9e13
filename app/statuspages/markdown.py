"""Limited Markdown for status posts: CommonMark with raw HTML off and links checked.

markdown-it-py escapes every ``<``, ``&`` and quote of the source, so a post can
only produce the tags CommonMark itself emits. Links and images keep only
``http``, ``https`` and ``mailto`` targets (and relative ones); anything else
(``javascript:``, ``data:``, ``vbscript:``) is left as plain text. Images are
not rendered as images (a post cannot make viewers fetch third-party content).
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlsplit

from markdown_it import MarkdownIt

_SAFE_SCHEMES = ("http", "https", "mailto", "")
#: Longest body rendered (the model's limit); longer input is cut before parsing.
MAX_SOURCE = 5000


def _validate_link(url: str) -> bool:
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return False
    return scheme in _SAFE_SCHEMES and not url.strip().lower().startswith("//")


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")
    md.validateLink = _validate_link  # type: ignore[method-assign]
    return md


_md = _parser()


def render(text: str, fmt: str) -> str:
    """Safe HTML for a post body: escaped paragraphs for ``text``, limited Markdown otherwise."""
    text = text[:MAX_SOURCE]
    if fmt == "markdown":
        html: str = _md.render(text)
        # Links open outside the page and pass no referrer or opener.
        return html.replace("<a href=", '<a rel="nofollow noopener noreferrer" href=')
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "".join(f"<p>{escape(p).replace(chr(10), '<br>')}</p>\n" for p in paragraphs)
