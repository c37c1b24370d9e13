"""EgressPolicy's verdict on an address, as CHECK_DENY_NETWORKS and ALERT_DENY_NETWORKS give it
(the connections that obey it, over real sockets: tests/test_egress.py)."""

from __future__ import annotations

import ipaddress

from app.egress import EgressPolicy
from app.settings import parse_networks

PRIVATE = "127.0.0.2"
DENY_PRIVATE = EgressPolicy(parse_networks(f"{PRIVATE}/32"), "CHECK_DENY_NETWORKS")
DENY_LOOPBACK = EgressPolicy(parse_networks("127.0.0.0/8, ::1/128"), "CHECK_DENY_NETWORKS")


def test_the_policy_judges_addresses_including_ipv4_mapped_ones() -> None:
    assert DENY_PRIVATE.denies(PRIVATE)
    assert DENY_PRIVATE.denies(f"::ffff:{PRIVATE}")  # the same socket destination, spelled in IPv6
    assert not DENY_PRIVATE.denies("127.0.0.1")
    assert not DENY_PRIVATE.denies("::1")
    assert DENY_LOOPBACK.denies("::1") and DENY_LOOPBACK.denies("127.1.2.3")
    assert not EgressPolicy().active and not EgressPolicy().denies(PRIVATE)
    assert str(DENY_PRIVATE.refusal(PRIVATE, "db.internal")) == (
        f"destination {PRIVATE} (db.internal) is blocked by CHECK_DENY_NETWORKS"
    )
    assert isinstance(DENY_PRIVATE.refusal(PRIVATE), OSError)
    assert ipaddress.ip_address(PRIVATE) in DENY_PRIVATE.deny[0]
