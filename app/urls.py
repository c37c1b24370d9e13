"""Outbound URLs (monitor targets, alert destinations): one strict check, one mask.

Both are pure functions. :func:`check_http_url` is the only place that decides
whether a URL a client sent may be stored and later fetched: scheme http or
https, no whitespace or control characters anywhere, a host that is a valid
name or IP literal, and a port in 1-65535. Anything it accepts, httpx can send.
:func:`mask_credentials` replaces a ``user:password@`` part with ``***`` for
every answer and log line.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

#: C0 controls, space, DEL and the C1 controls: never valid inside a URL we send.
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f]")
#: One DNS label: letters, digits, hyphen, underscore (seen in real service names), not
#: starting or ending with a hyphen. Non-ASCII names must be sent in their IDNA (xn--) form.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
MASK = "***"


class BadURL(ValueError):
    """The URL cannot be stored; the message says why, without echoing the URL."""


def check_http_url(url: str) -> str:
    """``url`` unchanged when it is a valid absolute http(s) URL; else :class:`BadURL`."""
    if not isinstance(url, str) or not url:
        raise BadURL("must be a non-empty string")
    if len(url) > 2048:
        raise BadURL("must be at most 2048 characters")
    if _FORBIDDEN.search(url):
        raise BadURL("must not contain spaces or control characters (encode them, e.g. %20)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadURL(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadURL("must be an absolute http:// or https:// URL")
    host = _host(parts)
    if not host:
        raise BadURL("must name a host, e.g. https://example.com/health")
    if port is not None and not 1 <= port <= 65535:
        raise BadURL("port must be 1-65535")
    if parts.netloc.endswith(":"):
        raise BadURL("has an empty port")
    if "[" in parts.netloc or host.count(":"):
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise BadURL("host is not a valid IPv6 address") from None
        if "%" in host:
            raise BadURL("IPv6 zone ids are not supported")
        return url
    if not valid_hostname(host):
        raise BadURL("host is not a valid host name or IP address")
    return url


def valid_hostname(host: str) -> bool:
    """A DNS name (ASCII labels, optional trailing dot) or an IPv4/IPv6 address."""
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return all(_LABEL.fullmatch(label) for label in labels)


def _host(parts: SplitResult) -> str:
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise BadURL("has an unclosed [ in its host")
        return netloc[1:end]
    return parts.hostname or ""


def mask_credentials(url: str | None) -> str | None:
    """``url`` with any ``user:password@`` replaced by ``***@`` (other parts unchanged)."""
    if not url or "@" not in url:
        return url
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    start = scheme_end + 3
    end = len(url)
    for sep in "/?#":
        at = url.find(sep, start)
        if at >= 0:
            end = min(end, at)
    at_sign = url.rfind("@", start, end)
    if at_sign < 0:
        return url
    return url[:start] + MASK + url[at_sign:]
