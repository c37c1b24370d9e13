"""Secrets never reach a log line: app.logs.mask, and its shortcut for lines that cannot hold one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.logs import _SECRET_PATTERNS, mask


def _every_substitution(text: str) -> str:
    """What mask() wrote before it had a shortcut: all four substitutions, always."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ("api token wpt_abcdefgh1234 used", "api token wpt_*** used"),
        ("refresh wpr_ABCDEFGH_-12 kept", "refresh wpr_*** kept"),
        ("jwt eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl end", "jwt <jwt> end"),
        ("Authorization: Bearer abcdefgh.ijk", "Authorization: Bearer ***"),
        ('{"password": "hunter22", "user": "x"}', '{"password": "***", "user": "x"}'),
        ("SECRET=s3cr3t, next", "SECRET=***, next"),
        ("/web?token=abc123", "/web?token=***"),
        # Case-insensitive matching folds these as the patterns do: still masked.
        ("\u017fecret=abc", "\u017fecret=***"),
        ("to\u212aen=abc", "to\u212aen=***"),
    ],
)
def test_secrets_are_masked(line: str, masked: str) -> None:
    assert mask(line) == masked == _every_substitution(line)


@pytest.mark.parametrize(
    "line",
    [
        "connected c12.ab34 user=admin tenant=default kind=local addr=127.0.0.1:5555",
        "disconnected c12.ab34",
        "wp_ eyj beare passwor secre toke",  # near misses
        "é 中 \u2028 unicode without a keyword",
        "",
    ],
)
def test_lines_without_a_secret_come_back_as_they_were(line: str) -> None:
    assert mask(line) is line
    assert _every_substitution(line) == line


_FRAGMENTS = st.sampled_from(
    [
        "wpt_", "wpr_", "wp", "t_", "eyJ", "eyj", "e", "yJ", ".",
        "bearer", "Bearer ", "BEARER.", "bear", "er",
        "password", "PassWord", "secret", "token", "TOKEN", "tok", "en", "\u017f", "\u212a", "\u0131",
        '"', ":", "=", " ", ",", "}", "\n", "abcdefgh", "ABC123_-", "é", "中", "user=admin",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=12).map("".join))
def test_the_shortcut_never_changes_what_is_masked(line: str) -> None:
    assert mask(line) == _every_substitution(line)
