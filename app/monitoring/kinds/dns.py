"""The ``dns`` kind: resolve ``host`` for one record type and check the answer.

Options: ``record_type`` (A, AAAA, CNAME, MX, TXT, NS, SRV; default A), ``resolver``
(an IP address; default the system's resolvers) and ``resolver_port`` (default 53),
``expected`` (values the answer must hold) with ``match`` ``any`` (default: one of
them is enough) or ``all``. Without ``expected`` any non-empty answer is up.

Values are compared in a normal form: names lower-case without the final dot,
MX as ``"10 mail.example.com"``, SRV as ``"priority weight port target"``, TXT as
its strings joined. Latency is the resolve time. The resolver's address is the
destination CHECK_DENY_NETWORKS judges.

After ``expected``, the monitor's ``conditions`` see the answer's values (sorted, in
that normal form): ``body`` is them one per line, ``$`` the JSON list of them
(``$ contains "192.0.2.10"``, ``$[0] == "10 mail.example.com"``), and ``response_time``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver

from app.egress import EgressPolicy
from app.monitoring.checks import CheckOutcome, judge_answer
from app.monitoring.conditions import parse_all, values_answer
from app.monitoring.kinds.common import Bad, failed, is_ip, known_options, passed, seconds, with_deadline
from app.urls import valid_hostname

RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV")
OPTIONS = {"record_type", "resolver", "resolver_port", "expected", "match"}
_NAMES = ("CNAME", "NS")

SCHEMA: dict[str, Any] = {
    "record_type": {"enum": list(RECORD_TYPES)},
    "resolver": {"type": ["string", "null"], "maxLength": 64},
    "resolver_port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "expected": {
        "type": "array",
        "maxItems": 50,
        "items": {"type": "string", "minLength": 1, "maxLength": 500},
    },
    "match": {"enum": ["any", "all"]},
}


def validate(values: Mapping[str, Any], bad: Bad) -> None:
    options = values.get("options") or {}
    known_options("dns", options, OPTIONS, bad)
    host = values.get("host")
    if not host:
        bad("host", "a dns monitor needs the name to resolve in host, e.g. example.com")
    elif is_ip(host) or not _domain(host):
        bad("host", "host: must be a domain name to resolve, without scheme, port or path")
    resolver = options.get("resolver")
    if resolver is not None and not is_ip(resolver):
        bad("options.resolver", "options.resolver: must be the IP address of a DNS server, e.g. 1.1.1.1")


def _domain(name: str) -> bool:
    """A domain name; unlike a host name its labels may hold "_" (``_sip._tcp.example.com``)."""
    return valid_hostname(name.replace("_", "a"))


def _text(rtype: str, rdata: Any) -> str:
    if rtype in ("A", "AAAA"):
        return str(rdata.address)
    if rtype in _NAMES:
        return _name(rdata.target)
    if rtype == "MX":
        return f"{rdata.preference} {_name(rdata.exchange)}"
    if rtype == "SRV":
        return f"{rdata.priority} {rdata.weight} {rdata.port} {_name(rdata.target)}"
    if rtype == "TXT":
        return "".join(s.decode("utf-8", "replace") for s in rdata.strings)
    return str(rdata.to_text())


def _name(name: Any) -> str:
    return str(name.to_text()).rstrip(".").lower()


def _normal(rtype: str, value: str) -> str:
    if rtype == "TXT":
        return value
    return " ".join(value.split()).rstrip(".").lower()


async def run(values: Mapping[str, Any], timeout: float, policy: EgressPolicy) -> CheckOutcome:
    started = time.perf_counter()
    return await with_deadline(timeout, started, _resolve(values, timeout, policy, started))


async def _resolve(
    values: Mapping[str, Any], timeout: float, policy: EgressPolicy, started: float
) -> CheckOutcome:
    options = values.get("options") or {}
    name = str(values.get("host"))
    rtype = str(options.get("record_type") or "A")
    server = options.get("resolver")
    resolver = dns.asyncresolver.Resolver(configure=server is None)
    if server is not None:
        resolver.nameservers = [str(server)]
        resolver.port = int(options.get("resolver_port") or 53)
    allowed = [str(ns) for ns in resolver.nameservers if not policy.active or not policy.denies(str(ns))]
    if not allowed:
        first = str(resolver.nameservers[0]) if resolver.nameservers else "the system resolver"
        return failed(started, str(policy.refusal(first)))
    resolver.nameservers = allowed
    resolver.lifetime = timeout
    resolver.timeout = timeout
    try:
        answer = await resolver.resolve(name, rtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return failed(started, f"{name} does not exist (NXDOMAIN)")
    except dns.resolver.LifetimeTimeout:
        return failed(started, f"timed out after {seconds(timeout)}")
    except dns.resolver.NoNameservers as exc:
        return failed(started, f"no name server answered for {name} ({_first_line(exc)})")
    except dns.exception.DNSException as exc:
        return failed(started, f"resolving {name} failed: {_first_line(exc)}")
    except OSError as exc:
        return failed(started, f"resolving {name} failed: {exc.strerror or exc}")
    outcome = passed(started)
    got = sorted(_text(rtype, r) for r in answer.rrset) if answer.rrset is not None else []
    if not got:
        return failed(started, f"no {rtype} records for {name}")
    expected = list(options.get("expected") or [])
    if expected:
        have = {_normal(rtype, v) for v in got}
        missing = [e for e in expected if _normal(rtype, e) not in have]
        if options.get("match") == "all" and missing:
            return failed(started, f"{rtype} answer {_listed(got)} lacks {_listed(missing)}")
        if len(missing) == len(expected):
            return failed(started, f"{rtype} answer {_listed(got)} has none of {_listed(expected)}")
    return judge_answer(outcome, parse_all(values.get("conditions")), values_answer(got))


def _listed(values: list[str]) -> str:
    shown = ", ".join(values[:5]) + (f" (+{len(values) - 5} more)" if len(values) > 5 else "")
    return f"[{shown}]"


def _first_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]
