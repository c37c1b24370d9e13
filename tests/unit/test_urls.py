"""The one URL check for monitor targets and alert destinations (pure, no I/O)."""

from __future__ import annotations

import httpx
import pytest

from app.urls import BadURL, check_http_url, mask_credentials

GOOD = [
    "http://example.com",
    "https://example.com/health?x=1#frag",
    "http://127.0.0.1:8080/x",
    "http://[::1]:8080/x",
    "https://user:pw@example.com/",
    "http://my_service.internal./ok",
    "https://xn--bcher-kva.example/",
]
BAD = [
    "http://host/x\r\nX-Injected: 1",
    "http://host/x\tY",
    "http://host/x\x7f",
    "http://host/a b",
    "http://[::1/",
    "http://[not-v6]/",
    "ftp://example.com/",
    "example.com/health",
    "http:///path",
    "http://host:99999/",
    "http://host:/",
    "http://-bad-.example/",
    "http://bücher.example/",
    "http://a..b/",
    "",
]


@pytest.mark.parametrize("url", GOOD)
def test_valid_urls_are_kept_and_httpx_can_send_them(url: str) -> None:
    assert check_http_url(url) == url
    httpx.URL(url)  # never raises for what we accept


@pytest.mark.parametrize("url", BAD)
def test_invalid_urls_are_refused(url: str) -> None:
    with pytest.raises(BadURL):
        check_http_url(url)


def test_refusal_never_echoes_the_url() -> None:
    with pytest.raises(BadURL) as info:
        check_http_url("http://user:secret@host/\x00")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://user:pw@example.com/x", "https://***@example.com/x"),
        ("https://token@example.com", "https://***@example.com"),
        ("https://example.com/a@b", "https://example.com/a@b"),
        ("https://u:p@h/path?q=a@b", "https://***@h/path?q=a@b"),
        ("https://example.com", "https://example.com"),
        (None, None),
    ],
)
def test_credentials_are_masked(url: str | None, masked: str | None) -> None:
    assert mask_credentials(url) == masked
