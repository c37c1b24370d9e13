"""The ``apprise`` channel kind: one or more Apprise URLs (Telegram, Teams, ntfy, Pushover…).

Apprise (https://github.com/caronc/apprise) knows well over a hundred services
by URL scheme; a channel holds 1–10 of its URLs. Each URL is a secret (tokens
live in the user, host, path or query), so answers show only its scheme.

Apprise is synchronous (``requests``), so a send runs the plugins in a thread
of this module's own pool (16 threads, apart from the event loop's default
executor that DNS lookups use), bounded as a whole by the transport's timeout
and with Apprise's connect and read timeouts set below it. Where it may connect:
every TCP connection ``requests``/``urllib3`` opens in that thread passes
through :func:`_guarded_create_connection`, which resolves the name, refuses
addresses in ALERT_DENY_NETWORKS and connects to the very address it checked
(redirects and rebinding included), exactly like the HTTP senders; with a deny
list, HTTP(S)_PROXY from the environment is ignored for these sends too. Plugins that
do not speak HTTP(S) (mail, syslog, desktop, MQTT, XMPP, IRC…) bypass urllib3,
so they are refused when the channel is saved.

Apprise reports only success or failure; the reason comes through its log. Each
send collects the warnings its own thread logs, takes an ``error=<status>`` from
them when there is one (4xx other than 429 is permanent, like the webhook
sender) and scrubs every URL part from the text. A connection refused by the
egress policy is permanent. Anything else (timeouts, 5xx, connection errors,
unexplained failures) is transient and retried.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import socket
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import apprise
import requests.sessions
import requests.utils
import urllib3.util.connection

from app.alerting import message
from app.alerting.message import Alert
from app.egress import EgressDenied, EgressPolicy

MASK = "***"
MAX_URLS = 10

#: Apprise sends run here, not in the loop's default executor: slow services must not
#: hold up DNS lookups and other threads the rest of the server waits on.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="apprise")

#: Plugin modules that do not go through urllib3 (so the egress gate would not see
#: them) or that only make sense on a desktop; refused at CHANNEL_CREATE/UPDATE.
_REFUSED_MODULES = frozenset(
    {
        "amqp",
        "aprs",
        "blink1",
        "dbus",
        "deltachat",
        "email",
        "glib",
        "gnome",
        "growl",
        "irc",
        "macosx",
        "mqtt",
        "nostr",
        "rsyslog",
        "smpp",
        "syslog",
        "windows",
        "xmpp",
    }
)

_STATUS = re.compile(r"error=(\d{3})")

# Per-thread state of a send: the egress policy in force, the warnings Apprise
# logged, and the refusal the egress gate raised (if any).
_local = threading.local()


class _ThreadCapture(logging.Handler):
    """Keeps Apprise's warnings for the send running in the logging thread."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(_local, "warnings", None)
        if sink is not None and record.levelno >= logging.WARNING and len(sink) < 20:
            try:
                sink.append(record.getMessage())
            except (TypeError, ValueError):  # pragma: no cover - a malformed record must not break a send
                pass


_apprise_log = logging.getLogger("apprise")
# Apprise logs URLs and tokens at several levels; none of it reaches the server
# log raw. Senders put a scrubbed summary in the attempt log instead.
_apprise_log.propagate = False
_apprise_log.setLevel(logging.WARNING)
_apprise_log.addHandler(_ThreadCapture())

_original_create_connection = urllib3.util.connection.create_connection


def _guarded_create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
    """urllib3's connect, with the policy of the current Apprise send (if any) in front."""
    policy: EgressPolicy | None = getattr(_local, "policy", None)
    if policy is None or not policy.active:
        return _original_create_connection(address, *args, **kwargs)
    host, port = address
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allowed = [a for a in addresses if not policy.denies(a)]
    if addresses and not allowed:
        refusal = policy.refusal(addresses[0], host)
        _local.denied = refusal
        raise refusal
    last: OSError = OSError(f"{host} has no address")
    for ip in allowed:
        try:
            return _original_create_connection((ip, port), *args, **kwargs)
        except OSError as exc:
            last = exc
    raise last


# urllib3 looks the function up on this module at every connect.
urllib3.util.connection.create_connection = _guarded_create_connection  # type: ignore[assignment]

_original_environ_proxies = requests.utils.get_environ_proxies


def _environ_proxies(url: str, no_proxy: str | None = None) -> dict[str, str]:
    """No HTTP(S)_PROXY from the environment while a deny list is in force (as for the other
    kinds): a proxy would connect to the destination on our behalf, unchecked."""
    policy: EgressPolicy | None = getattr(_local, "policy", None)
    if policy is not None and policy.active:
        return {}
    return _original_environ_proxies(url, no_proxy=no_proxy)


# requests looks these up on its modules at every request (and redirect).
requests.utils.get_environ_proxies = _environ_proxies
requests.sessions.get_environ_proxies = _environ_proxies  # type: ignore[attr-defined]


def instantiate(url: str) -> Any:
    """The Apprise plugin for ``url``, or None when Apprise does not understand it."""
    try:
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)
    except Exception:  # noqa: BLE001 - a plugin's URL parser may raise anything; the URL is unusable
        return None


def scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep and re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]{0,31}", head) else ""


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be an alert destination (None: it can). Never quotes the URL."""
    plugin = instantiate(url)
    if plugin is None:
        named = scheme(url)
        return (
            f"Apprise does not understand this {named}:// URL (check its format)"
            if named
            else "is not an Apprise URL (service://…)"
        )
    module = type(plugin).__module__.removeprefix("apprise.plugins.").split(".")[0]
    if module in _REFUSED_MODULES:
        return (
            f"Apprise {scheme(url)}:// is not supported here (it does not send over HTTP(S)"
            + ("; use the email channel kind" if module == "email" else "")
            + ")"
        )
    return None


def masked(url: str) -> str:
    """What answers show of an Apprise URL: the service, nothing of its tokens."""
    named = scheme(url)
    return f"{named}://{MASK}" if named else MASK


def secrets_of(urls: Sequence[str]) -> list[str]:
    """Each URL and every piece of it that may be a token, for scrubbing error text."""
    found: list[str] = []
    for url in urls:
        found.append(url)
        rest = url.partition("://")[2]
        found.append(rest)
        parts = urllib.parse.urlsplit(url)
        # Short pieces (a host named "ntfy") would mask ordinary words of the error.
        for piece in (parts.username, parts.password, parts.hostname, parts.netloc):
            if piece and len(piece) >= 4:
                found.append(piece)
        found += [seg for seg in parts.path.split("/") if len(seg) >= 4]
        found += [v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 4]
        found += [urllib.parse.unquote(s) for s in list(found) if "%" in s]
    return found


def _notify_one(url: str, title: str, body: str, timeout: float, policy: EgressPolicy) -> dict[str, Any]:
    """One URL, in a worker thread: sends and says how it went (error text unscrubbed)."""
    _local.policy = policy
    _local.warnings = []
    _local.denied = None
    try:
        plugin = instantiate(url)
        if plugin is None:
            return {"ok": False, "permanent": True, "error": "Apprise no longer understands this URL"}
        plugin.socket_connect_timeout = timeout
        plugin.socket_read_timeout = timeout
        try:
            ok = bool(plugin.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT))
        except EgressDenied as exc:
            _local.denied = exc
            ok = False
        denied: EgressDenied | None = _local.denied
        if ok:
            return {"ok": True}
        if denied is not None:
            return {"ok": False, "permanent": True, "error": f"{denied}; update the channel"}
        warnings: list[str] = list(_local.warnings)
        status = None
        for line in warnings:
            found = _STATUS.search(line)
            if found:
                status = int(found.group(1))
        permanent = status is not None and 400 <= status < 500 and status != 429
        detail = message.clean(" ".join(warnings), 300) if warnings else "no reason given"
        return {"ok": False, "permanent": permanent, "status": status, "error": detail}
    finally:
        _local.policy = None
        _local.warnings = None
        _local.denied = None


async def notify(
    urls: Sequence[str], title: str, body: str, *, timeout: float, policy: EgressPolicy
) -> dict[str, Any]:
    """Send to every URL (concurrently, each in a thread); the whole is bounded by ``timeout``.

    Returns ``{"ok", "permanent", "status", "error"}`` with the error still
    unscrubbed; :func:`app.alerting.senders.send_apprise` scrubs it. Delivered
    to some URLs but not all counts as delivered (a retry would repeat it for
    the others), with the failures named in ``error`` — as email does with
    refused recipients.
    """
    per_url = max(1.0, timeout - 0.5)
    loop = asyncio.get_running_loop()
    jobs = [loop.run_in_executor(_POOL, _notify_one, url, title, body, per_url, policy) for url in urls]
    try:
        async with asyncio.timeout(timeout):
            results = await asyncio.gather(*jobs)
    except TimeoutError:
        return {"ok": False, "permanent": False, "error": f"the service did not answer within {timeout:g}s"}
    failed = [(i, r) for i, r in enumerate(results) if not r["ok"]]
    if not failed:
        return {"ok": True}
    described = "; ".join(f"URL {i + 1} ({masked(urls[i])}): {r['error']}" for i, r in failed)
    if len(failed) < len(results):
        return {"ok": True, "error": f"delivered to some URLs, not to: {described}"}
    statuses = [r.get("status") for _, r in failed]
    return {
        "ok": False,
        "permanent": all(r.get("permanent") for _, r in failed),
        "status": statuses[0] if len(set(statuses)) == 1 else None,
        "error": described,
    }


def title_and_body(alert: Alert) -> tuple[str, str]:
    """The headline as title; the body is the channel's template body, else the default
    plain-text lines below the headline."""
    if alert.custom_text is not None:
        return message.subject(alert), alert.custom_text
    return message.subject(alert), message.text(alert).split("\n", 1)[1]


def config_urls(config: Mapping[str, Any]) -> list[str]:
    return [str(u) for u in config.get("urls") or []]
