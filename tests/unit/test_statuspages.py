"""Pure parts of status pages: limited Markdown, badge SVGs, slugs and the headline state."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from app.statuspages import badges, markdown
from app.statuspages.view import overall, valid_slug

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "[x](javascript:alert(1))",
        "[x](JAVASCRIPT:alert(1))",
        "[x]( javascript:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](vbscript:msgbox)",
        "![x](https://tracker.example/p.gif)",
        "<a href='javascript:alert(1)'>x</a>",
        "[x](//evil.example/)",
    ],
)
def test_markdown_leaves_no_active_content(source: str) -> None:
    html = markdown.render(source, "markdown")
    assert "<script" not in html and "<img" not in html
    assert 'href="javascript' not in html.lower() and 'href="data:' not in html
    assert 'href="vbscript' not in html and 'href="//' not in html


def test_markdown_keeps_what_posts_need() -> None:
    html = markdown.render("**bold** *it* `code`\n\n- one\n- two\n\n[a](https://x.example/a)", "markdown")
    assert "<strong>bold</strong>" in html and "<em>it</em>" in html and "<code>code</code>" in html
    assert "<li>one</li>" in html
    assert '<a rel="nofollow noopener noreferrer" href="https://x.example/a">a</a>' in html


def test_plain_text_is_escaped_with_its_paragraphs() -> None:
    assert markdown.render("a <b>\nc\n\n**d**", "text") == "<p>a &lt;b&gt;<br>c</p>\n<p>**d**</p>\n"


def test_long_bodies_are_cut_before_parsing() -> None:
    assert len(markdown.render("x" * 100_000, "text")) < markdown.MAX_SOURCE + 20


def test_badge_is_accessible_svg_with_escaped_text() -> None:
    svg = ET.fromstring(badges.svg('up <"&>', "99.9%", "#2e7d32"))
    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert svg.get("aria-label") == 'up <"&>: 99.9%'
    title = svg.find(f"{SVG}title")
    assert title is not None and title.text == 'up <"&>: 99.9%'
    long = ET.fromstring(badges.svg("x" * 500, "y" * 500, "#000"))
    assert int(long.get("width") or 0) < 1000  # bounded whatever it is given


def test_uptime_text_and_colour() -> None:
    assert badges.percent(None) == "unknown" and badges.percent(0.99912) == "99.91%"
    assert badges.colour_for_uptime(None) == badges.COLOURS["unknown"]
    assert badges.colour_for_uptime(1.0) == badges.COLOURS["up"]
    assert badges.colour_for_uptime(0.5) == badges.COLOURS["down"]


@pytest.mark.parametrize("slug", ["a", "acme", "acme-eu-1", "0x", "a" * 64])
def test_valid_slugs(slug: str) -> None:
    assert valid_slug(slug)


@pytest.mark.parametrize("slug", ["", "-a", "a-", "Acme", "a_b", "a/b", "../x", "a" * 65, "é"])
def test_invalid_slugs(slug: str) -> None:
    assert not valid_slug(slug)


def test_headline_takes_the_worst_state() -> None:
    assert overall([]) == "unknown"
    assert overall(["up", "up"]) == "up"
    assert overall(["up", "maintenance"]) == "maintenance"
    assert overall(["maintenance", "degraded", "up"]) == "degraded"
    assert overall(["degraded", "down"]) == "down"
    assert overall(["paused", "pending"]) == "unknown"
