"""Badges: small flat SVGs with accessible text (``role="img"``, ``aria-label``, ``<title>``).

Every text is escaped; widths come from a fixed per-character estimate, so a
badge costs the same whatever it says.
"""

from __future__ import annotations

from html import escape

#: Colour per monitor state; "unknown" (no such page or monitor, no data) is neutral grey.
COLOURS = {
    "up": "#2e7d32",
    "down": "#c62828",
    "degraded": "#ef6c00",
    "maintenance": "#1565c0",
    "paused": "#757575",
    "pending": "#9e9e9e",
    "unknown": "#9e9e9e",
}
_CHAR_WIDTH = 7
_PAD = 10
MAX_TEXT = 40


def _width(text: str) -> int:
    return len(text) * _CHAR_WIDTH + 2 * _PAD


def svg(label: str, message: str, colour: str) -> str:
    """A two-part badge ``label | message`` on ``colour``."""
    label, message = label[:MAX_TEXT], message[:MAX_TEXT]
    lw, mw = _width(label), _width(message)
    total = lw + mw
    text = escape(f"{label}: {message}")
    lab, msg = escape(label), escape(message)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{text}"><title>{text}</title>'
        f'<rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{mw}" height="20" fill="{escape(colour)}"/>'
        f'<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{_PAD}" y="14">{lab}</text>'
        f'<text x="{lw + _PAD}" y="14">{msg}</text></g></svg>'
    )


def colour_for_uptime(ratio: float | None) -> str:
    if ratio is None:
        return COLOURS["unknown"]
    if ratio >= 0.999:
        return COLOURS["up"]
    if ratio >= 0.99:
        return "#9e9d24"
    if ratio >= 0.95:
        return COLOURS["degraded"]
    return COLOURS["down"]


def percent(ratio: float | None) -> str:
    return "unknown" if ratio is None else f"{ratio * 100:.2f}%"
