"""Which address X-Forwarded-For may name (pure function; the end-to-end tests are in
tests/test_identity_http.py)."""

from __future__ import annotations

import pytest

from app.forwarded import client_address
from app.settings import parse_networks

PROXIES = parse_networks("10.0.0.0/8, fd00::/8")


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("203.0.113.5", "1.2.3.4", "203.0.113.5"),  # untrusted peer: header ignored
        ("10.0.0.2", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # left of the client is the client's word
        ("10.0.0.2", "198.51.100.7, 10.0.0.9", "198.51.100.7"),  # through two trusted proxies
        ("10.0.0.2", "10.0.0.8, 10.0.0.9", "10.0.0.8"),  # all trusted: the farthest
        ("10.0.0.2", "198.51.100.7:4711", "198.51.100.7"),
        ("10.0.0.2", "[2001:db8::1]:4711", "2001:db8::1"),
        ("fd00::2", "2001:db8::1", "2001:db8::1"),
        ("10.0.0.2", "not-an-address", "10.0.0.2"),
        ("10.0.0.2", "1.2.3.4, garbage, 10.0.0.9", "10.0.0.9"),
        ("10.0.0.2", "", "10.0.0.2"),
        ("10.0.0.2", "1.2.3.4\x00", "10.0.0.2"),
    ],
)
def test_client_address(peer: str, header: str, expected: str) -> None:
    assert client_address(peer, header, PROXIES) == expected


def test_nobody_is_trusted_by_default() -> None:
    assert client_address("127.0.0.1", "1.2.3.4", parse_networks("", allow_any=True)) == "127.0.0.1"


def test_star_trusts_every_peer() -> None:
    assert client_address("203.0.113.5", "1.2.3.4", parse_networks("*", allow_any=True)) == "1.2.3.4"


def test_a_padded_header_is_read_from_the_right_only() -> None:
    header = ", ".join(["10.0.0.1"] * 10_000 + ["198.51.100.7"])
    assert client_address("10.0.0.2", header, PROXIES) == "198.51.100.7"
