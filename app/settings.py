"""Typed settings read from the environment, validated at start.

Every setting has a conservative default so that with nothing configured the
server runs embedded: SQLite, in-process broker and limits, local users.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields
from typing import Any


class SettingsError(ValueError):
    """A setting has a value the server cannot run with; the message names it."""


def _env_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


@dataclass(frozen=True, kw_only=True)
class Settings:
    # --- server
    host: str = "127.0.0.1"
    port: int = 8000
    environment: str = "development"
    log_level: str = "INFO"
    #: "text" or "json" (one JSON object per line).
    log_format: str = "text"
    #: Per-request log lines: "errors" (every answer that is not OK, and slow ones),
    #: "all" (every request; costs about as much CPU as the request) or "off".
    log_requests: str = "errors"
    #: With LOG_REQUESTS=errors, successful requests slower than this are logged too (0 = never).
    log_slow_request_ms: float = 1000.0
    # --- storage
    database_url: str = "sqlite+aiosqlite:///./watchpost.db"
    #: None = in-process broker and limits (embedded default).
    redis_url: str | None = None
    redis_prefix: str = "wp:"
    #: Connections each Redis client pool (broker commands, limits) may open; the
    #: broker's pub/sub connection comes on top. Beyond it, callers queue for a free one.
    redis_max_connections: int = 50
    #: Seconds a caller waits for a pooled Redis connection before the operation fails
    #: (SUBSCRIBE answers 10 UNAVAILABLE; limits apply LIMITS_FAIL_OPEN).
    redis_pool_timeout: float = 5.0
    # --- identity
    #: HS256 key for local JWTs; None = generated once and stored in the database.
    jwt_secret: str | None = None
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    admin_username: str = "admin"
    admin_password: str | None = None
    #: Seconds before expiry at which EVENT_AUTH_EXPIRING (904) is sent.
    auth_expiring_notice: int = 60
    keycloak_base_url: str | None = None
    keycloak_realm: str = "watchpost"
    keycloak_client_id: str = "watchpost-dashboard"
    keycloak_client_secret: str | None = None
    keycloak_admin_role: str = "admin"
    keycloak_timeout: float = 5.0
    #: Seconds between introspection checks of live Keycloak sessions (0 = off).
    keycloak_introspect_interval: int = 60
    #: Expected ``iss``; None = read from the realm's discovery document (Keycloak
    #: stamps its public KC_HOSTNAME, which may differ from KEYCLOAK_BASE_URL).
    keycloak_issuer: str | None = None
    #: Required audience (``aud``); None = the client id (``azp`` equal to it also passes).
    keycloak_audience: str | None = None
    #: Clock skew allowed on ``exp``/``nbf``/``iat``, seconds.
    keycloak_leeway: float = 10.0
    #: Unknown ``kid`` refreshes the realm keys at most this often, seconds.
    keycloak_jwks_min_refresh_interval: float = 5.0
    #: The role file (least role per package and route); None = the actions.json shipped with the server.
    actions_path: str | None = None
    #: Seconds a handshake's reading of a local session or API token is reused by the next
    #: handshakes with the same credential (0 = off). Control messages (revocation, role change,
    #: member removal) drop entries at once; this bounds only changes no control message announced.
    auth_cache_ttl: float = 30.0
    # --- websocket limits (close codes: docs/protocol.md, "Connecting")
    ws_max_frame_bytes: int = 64 * 1024
    ws_send_queue_max: int = 1000
    ws_send_queue_bytes: int = 1024 * 1024
    ws_max_in_flight: int = 16
    ws_handler_timeout: float = 10.0
    ws_ping_interval: float = 25.0
    ws_ping_timeout: float = 10.0
    ws_max_topics: int = 100
    ws_per_message_deflate: bool = False
    ws_drain_timeout: float = 10.0
    #: Seconds a closing frame (e.g. 4009 slow consumer) gets to drain before the socket is aborted.
    ws_close_grace: float = 5.0
    #: Deepest JSON nesting accepted in a frame's ``data``; deeper is refused with 2 before any schema.
    ws_max_json_depth: int = 32
    # --- rate limits (names kept from the package-router template)
    rate_limit_enabled: bool = True
    ws_max_connections_per_user: int = 20
    ws_message_rate_limit: int = 600
    rate_limit_per_minute: int = 60
    rate_limit_burst: int = 10
    limits_fail_open: bool = True
    #: Anonymous status-page sockets (/web?status_page=<slug>) from one address, at once.
    status_page_max_per_address: int = 20
    #: Anonymous sockets on one status page at once (all addresses together).
    status_page_max_viewers: int = 10000
    #: Comma-separated peer addresses/CIDRs whose X-Forwarded-For is trusted ("" = none, "*" = any).
    forwarded_allow_ips: str = ""
    #: Largest HTTP request body (/login, /refresh, /logout), bytes; larger is answered 413 unread.
    http_max_body_bytes: int = 16 * 1024
    #: Longest password accepted at login (characters); longer is refused before hashing.
    password_max_length: int = 1024
    # --- per-tenant quotas (a platform administrator can raise them for one tenant)
    quota_monitors: int = 10_000
    quota_channels: int = 200
    quota_api_tokens: int = 100
    # --- events
    event_history_size: int = 300
    event_history_ttl: int = 600
    #: What this process runs (``python -m app serve --role`` overrides it): ``web`` (the
    #: socket, login and pages), ``collector`` (checks and housekeeping), ``delivery``
    #: (alert sends); comma-separated. Every process serves /health and /metrics.
    roles: str = "web,collector,delivery"
    # --- monitoring and alerting (used by app.monitoring / app.alerting)
    collector_enabled: bool = True
    collector_concurrency: int = 200
    #: Seconds between claims; each claim takes what falls due within the next tick and
    #: starts every check at its own due time. Claimed-but-waiting checks hold a
    #: COLLECTOR_CONCURRENCY slot, so throughput is at most concurrency / (tick + check time).
    collector_tick: float = 0.25
    #: A claim's lease lasts the check timeout plus this many seconds; a crashed
    #: instance's checks are taken over once it passes.
    collector_lease_seconds: float = 30.0
    #: A new or resumed monitor's first check is spread over up to this many seconds.
    collector_jitter: float = 10.0
    monitor_min_interval: int = 10
    #: Largest check timeout a monitor may ask for, seconds.
    check_timeout_max: float = 60.0
    #: Bytes of an HTTP check's response body read at most (the keyword is searched in these).
    check_max_body_bytes: int = 1024 * 1024
    #: Comma-separated CIDRs checks may not reach (after DNS, on every redirect); "" = none.
    check_deny_networks: str = ""
    #: ICMP for ping monitors: "auto" (unprivileged ICMP sockets where the host allows them,
    #: else raw sockets when the process may open them), "unprivileged", "privileged" or "off".
    check_ping: str = "auto"
    #: Comma-separated CIDRs alert deliveries and CHANNEL_TEST may not reach; "" = none.
    alert_deny_networks: str = ""
    retention_days: int = 7
    #: Seconds between rollup + retention passes.
    rollup_interval: int = 300
    delivery_workers_enabled: bool = True
    #: Overall time budget of one alert send, seconds (email: three times this).
    delivery_timeout: float = 10.0
    #: Seconds between outbox claims when nothing is due (also the alert latency).
    delivery_poll_interval: float = 1.0
    #: Deliveries one worker claims and sends at once.
    delivery_batch: int = 20
    #: A claim's lease, seconds; a crashed instance's sends are retried once it passes.
    delivery_lease: float = 120.0
    #: Retries: first ceiling DELIVERY_BACKOFF_BASE s, doubling to DELIVERY_BACKOFF_CAP s, full jitter.
    delivery_max_attempts: int = 10
    delivery_backoff_base: float = 10.0
    delivery_backoff_cap: float = 900.0
    #: Failed deliveries in a row after which a channel is flagged.
    channel_flag_after: int = 5
    #: Seconds between scans for due "still down" reminders.
    reminder_scan_interval: float = 30.0
    #: Finished deliveries (and their attempt logs) older than this many days are deleted.
    delivery_retention_days: int = 30
    #: The address people open Watchpost at (e.g. https://watch.example.com); alert
    #: templates get ``links.dashboard`` from it. "" = no links.
    public_url: str = ""
    #: Seconds between scans for due escalation steps and held dependent alerts (alert latency
    #: of an escalation step).
    escalation_scan_interval: float = 5.0
    #: Seconds a dependent monitor's "down" alert waits for its parent (depends_on, covering
    #: group) to go down too; if it does, the alert is folded into the parent's outage.
    alert_dependency_hold: float = 60.0
    # --- probes (docs/probes.md)
    #: Seconds beyond a monitor's interval after which a location's latest result is unknown.
    probe_grace: float = 90.0
    #: Results per PROBE_REPORT.
    probe_report_max: int = 500
    #: Seconds between the heartbeats a probe is asked for (silent for three: offline).
    probe_heartbeat: float = 15.0
    # --- extra settings added by later modules without touching this class
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def role_set(self) -> frozenset[str]:
        """The roles of this process (see ``roles``); an unknown name is refused by validate()."""
        return parse_roles(self.roles)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def keycloak_enabled(self) -> bool:
        return bool(self.keycloak_base_url)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``WATCHPOST``-less upper-case names (``DATABASE_URL``, ``PORT`` …)."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = source.get(f.name.upper())
            if raw is None:
                continue
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            try:
                values[f.name] = _convert(kind, raw)
            except ValueError as exc:
                raise SettingsError(f"{f.name.upper()}: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        problems = []
        if not (0 <= self.port <= 65535):
            problems.append("PORT must be 0-65535")
        if self.log_format not in ("text", "json"):
            problems.append("LOG_FORMAT must be 'text' or 'json'")
        if self.log_requests not in ("errors", "all", "off"):
            problems.append("LOG_REQUESTS must be 'errors', 'all' or 'off'")
        if self.log_slow_request_ms < 0:
            problems.append("LOG_SLOW_REQUEST_MS must be >= 0")
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            problems.append("DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append("REDIS_URL must be a redis:// or rediss:// URL")
        for name in (
            "ws_max_frame_bytes",
            "ws_send_queue_max",
            "ws_send_queue_bytes",
            "ws_max_in_flight",
            "ws_max_connections_per_user",
            "status_page_max_per_address",
            "status_page_max_viewers",
            "ws_message_rate_limit",
            "rate_limit_per_minute",
            "event_history_size",
            "access_token_ttl",
            "redis_max_connections",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{name.upper()} must be positive")
        if self.auth_cache_ttl < 0:
            problems.append("AUTH_CACHE_TTL must be >= 0 (0 turns the credential cache off)")
        if self.ws_handler_timeout <= 0:
            problems.append("WS_HANDLER_TIMEOUT must be positive")
        if self.redis_pool_timeout <= 0:
            problems.append("REDIS_POOL_TIMEOUT must be positive")
        try:
            parse_roles(self.roles)
        except ValueError as exc:
            problems.append(f"ROLES: {exc}")
        if self.collector_concurrency <= 0 or self.collector_tick <= 0 or self.rollup_interval <= 0:
            problems.append("COLLECTOR_CONCURRENCY, COLLECTOR_TICK and ROLLUP_INTERVAL must be positive")
        if self.monitor_min_interval < 1 or self.retention_days < 1:
            problems.append("MONITOR_MIN_INTERVAL and RETENTION_DAYS must be at least 1")
        if (
            min(self.delivery_timeout, self.delivery_poll_interval, self.delivery_lease) <= 0
            or min(
                self.delivery_batch,
                self.delivery_max_attempts,
                self.channel_flag_after,
                self.delivery_retention_days,
            )
            < 1
        ):
            problems.append(
                "DELIVERY_TIMEOUT, DELIVERY_POLL_INTERVAL, DELIVERY_LEASE must be positive; DELIVERY_BATCH, "
                "DELIVERY_MAX_ATTEMPTS, CHANNEL_FLAG_AFTER, DELIVERY_RETENTION_DAYS at least 1"
            )
        if (
            not 0 < self.delivery_backoff_base <= self.delivery_backoff_cap
            or self.reminder_scan_interval <= 0
        ):
            problems.append(
                "DELIVERY_BACKOFF_BASE must be positive and at most DELIVERY_BACKOFF_CAP; "
                "REMINDER_SCAN_INTERVAL must be positive"
            )
        if self.escalation_scan_interval <= 0 or self.alert_dependency_hold < 0:
            problems.append("ESCALATION_SCAN_INTERVAL must be positive and ALERT_DEPENDENCY_HOLD >= 0")
        if self.probe_grace <= 0 or self.probe_heartbeat <= 0 or not 1 <= self.probe_report_max <= 5000:
            problems.append(
                "PROBE_GRACE and PROBE_HEARTBEAT must be positive and PROBE_REPORT_MAX between 1 and 5000"
            )
        if self.ws_close_grace < 0 or self.ws_max_json_depth < 2:
            problems.append("WS_CLOSE_GRACE must be >= 0 and WS_MAX_JSON_DEPTH at least 2")
        if self.check_timeout_max <= 0 or self.check_max_body_bytes <= 0:
            problems.append("CHECK_TIMEOUT_MAX and CHECK_MAX_BODY_BYTES must be positive")
        if self.check_ping not in ("auto", "unprivileged", "privileged", "off"):
            problems.append("CHECK_PING must be 'auto', 'unprivileged', 'privileged' or 'off'")
        if self.http_max_body_bytes < 1024 or self.password_max_length < 8:
            problems.append("HTTP_MAX_BODY_BYTES must be at least 1024 and PASSWORD_MAX_LENGTH at least 8")
        if min(self.quota_monitors, self.quota_channels, self.quota_api_tokens) < 0:
            problems.append("QUOTA_MONITORS, QUOTA_CHANNELS and QUOTA_API_TOKENS must be >= 0")
        for name in ("check_deny_networks", "alert_deny_networks", "forwarded_allow_ips"):
            try:
                parse_networks(getattr(self, name), allow_any=name == "forwarded_allow_ips")
            except ValueError as exc:
                problems.append(f"{name.upper()}: {exc}")
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            problems.append("JWT_SECRET must be at least 32 characters")
        if self.keycloak_base_url and not self.keycloak_base_url.startswith(("http://", "https://")):
            problems.append("KEYCLOAK_BASE_URL must be an http:// or https:// URL")
        if self.keycloak_base_url and not (self.keycloak_realm and self.keycloak_client_id):
            problems.append("KEYCLOAK_REALM and KEYCLOAK_CLIENT_ID must be set in Keycloak mode")
        if self.keycloak_timeout <= 0 or self.keycloak_leeway < 0 or self.keycloak_introspect_interval < 0:
            problems.append(
                "KEYCLOAK_TIMEOUT must be positive; KEYCLOAK_LEEWAY and KEYCLOAK_INTROSPECT_INTERVAL >= 0"
            )
        if problems:
            raise SettingsError("; ".join(problems))


def parse_networks(
    raw: str, *, allow_any: bool = False
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse a comma-separated list of addresses/CIDRs ("*" = every address when ``allow_any``)."""
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for part in raw.replace(" ", "").split(","):
        if not part:
            continue
        if part == "*" and allow_any:
            out += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR network") from None
    return tuple(out)


ROLES = ("web", "collector", "delivery")


def parse_roles(value: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    """``"web,collector"`` (or a list of such, as repeated ``--role`` give) -> the role names.

    Raises ValueError naming the unknown role; an empty list is refused too."""
    items = [value] if isinstance(value, str) else list(value)
    names = [n.strip().lower() for item in items for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROLES]
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r}; choose from {', '.join(ROLES)}")
    if not names:
        raise ValueError(f"at least one role is needed, out of {', '.join(ROLES)}")
    return frozenset(names)


def _convert(kind: str, raw: str) -> Any:
    if "bool" in kind:
        return _env_bool(raw)
    if "int" in kind and "None" not in kind:
        return int(raw)
    if "float" in kind:
        return float(raw)
    if "None" in kind and raw.strip() == "":
        return None
    return raw
