"""The delivery worker: drains the outbox on every instance.

``create_app`` builds one :class:`DeliveryWorker` per instance (unless
``DELIVERY_WORKERS_ENABLED=false``), calls :meth:`DeliveryWorker.start` in the
lifespan and :meth:`DeliveryWorker.stop` at shutdown. The loop:

1. claim a batch of due deliveries under a lease (``outbox.claim``);
2. send them concurrently, each bounded by ``delivery_timeout``;
3. record each attempt and move the delivery on (``outbox.record_attempt``);
4. when nothing was due, sleep ``delivery_poll_interval``; every
   ``reminder_scan_interval`` also add due "still down" reminders, and every
   ``escalation_scan_interval`` send due escalation steps and held dependent
   alerts into the outbox (``app.alerting.escalation.run_due``).

Stopping waits for in-flight sends up to their timeout, then hands back any
lease still held, so a restarted (or another) instance picks those rows up at
once instead of after the lease expires.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.alerting import escalation, metrics, outbox, prepare, senders
from app.alerting.backoff import RetryPolicy
from app.alerting.outbox import Claimed
from app.alerting.senders import SendResult, Transport
from app.egress import EgressPolicy
from app.models.base import utcnow
from app.storage.db import Database

if TYPE_CHECKING:
    from app.context import Services
    from app.settings import Settings

log = logging.getLogger("watchpost.alerting")


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """Tuning for one worker; ``from_settings`` reads the DELIVERY_* settings."""

    timeout: float = 10.0
    poll_interval: float = 1.0
    batch: int = 20
    lease: float = 120.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    flag_after: int = 5
    reminder_interval: float = 30.0
    #: Finished deliveries older than this are purged (on the reminder scan's schedule).
    retention_days: int = 30
    #: PUBLIC_URL: the dashboard link alert templates get.
    public_url: str = ""
    #: Seconds between escalation scans (ESCALATION_SCAN_INTERVAL).
    escalation_interval: float = 5.0
    #: Seconds a dependent monitor's alert waits for its parent (ALERT_DEPENDENCY_HOLD).
    dependency_hold: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryOptions:
        timeout = settings.delivery_timeout
        return cls(
            timeout=timeout,
            poll_interval=settings.delivery_poll_interval,
            batch=settings.delivery_batch,
            # Far longer than one send, so a live worker never loses its lease.
            lease=max(settings.delivery_lease, timeout * 4 + 10),
            policy=RetryPolicy(
                base=settings.delivery_backoff_base,
                cap=settings.delivery_backoff_cap,
                max_attempts=settings.delivery_max_attempts,
            ),
            flag_after=settings.channel_flag_after,
            reminder_interval=settings.reminder_scan_interval,
            retention_days=settings.delivery_retention_days,
            public_url=settings.public_url,
            escalation_interval=settings.escalation_scan_interval,
            dependency_hold=settings.alert_dependency_hold,
        )


def worker_id() -> str:
    """Unique per process start: a restarted instance never mistakes old leases for its own."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DeliveryWorker:
    def __init__(
        self,
        db: Database,
        options: DeliveryOptions | None = None,
        *,
        owner: str | None = None,
        smtp_ssl_context: ssl.SSLContext | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.db = db
        #: ALERT_DENY_NETWORKS: where sends (and CHANNEL_TEST through this worker) may connect.
        self.egress = egress or EgressPolicy(setting="ALERT_DENY_NETWORKS")
        self.options = options or DeliveryOptions()
        self.owner = owner or worker_id()
        self._smtp_ssl_context = smtp_ssl_context
        self._transport: Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._next_reminder_scan = 0.0
        self._next_escalation_scan = 0.0

    @property
    def transport(self) -> Transport:
        """The shared HTTP client and timeout (CHANNEL_TEST borrows it); valid after ``start``."""
        if self._transport is None:
            self._transport = Transport(
                senders.make_http_client(self.egress),
                self.options.timeout,
                smtp_ssl_context=self._smtp_ssl_context,
                egress=self.egress,
            )
        return self._transport

    async def start(self) -> None:
        """Begin draining the outbox in the background; call once from the app lifespan."""
        if self._task is not None:
            return
        _ = self.transport
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="delivery-worker")
        log.info("delivery worker %s started", self.owner)

    def wake(self) -> None:
        """Look for due deliveries now instead of after the poll interval."""
        self._wake.set()

    async def stop(self) -> None:
        """Finish in-flight sends (bounded by the send timeout), then release leases and close."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.options.timeout * 3 + 5)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            released = await outbox.release(self.db, self.owner)
            if released:
                log.info("delivery worker %s handed back %s leases", self.owner, released)
        except Exception:
            log.exception(
                "delivery worker %s could not release its leases; they expire on their own", self.owner
            )
        if self._transport is not None:
            await self._transport.http.aclose()
            self._transport = None

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._housekeeping()
                await self._escalations()
                handled = await self.run_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                # Typically the database is briefly unreachable: back off, keep going.
                failures += 1
                log.exception("delivery worker %s: pass failed (%s in a row)", self.owner, failures)
                await self._sleep(min(30.0, self.options.poll_interval * 2**failures))
                continue
            if handled < self.options.batch:
                await self._sleep(self.options.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def _escalations(self) -> None:
        """Queue due escalation steps and held alerts (their deliveries are due at once)."""
        now = time.monotonic()
        if now < self._next_escalation_scan:
            return
        self._next_escalation_scan = now + self.options.escalation_interval
        await escalation.run_due(self.db, hold=self.options.dependency_hold)

    async def _housekeeping(self) -> None:
        """Periodic housekeeping: queue due reminders, purge old finished deliveries."""
        now = time.monotonic()
        if now < self._next_reminder_scan:
            return
        self._next_reminder_scan = now + self.options.reminder_interval
        added = await outbox.enqueue_reminders(self.db)
        if added:
            log.info("queued %s reminder deliveries", added)
        cutoff = utcnow() - dt.timedelta(days=self.options.retention_days)
        purged = 0
        # Bounded batches, a few per pass, so one pass never holds the database long.
        for _ in range(10):
            n = await outbox.purge_finished(self.db, older_than=cutoff)
            purged += n
            if n < 1000:
                break
        if purged:
            log.info("purged %s finished deliveries older than %s days", purged, self.options.retention_days)

    async def run_once(self) -> int:
        """Claim one batch and deliver it; returns how many deliveries were handled."""
        claimed = await outbox.claim(
            self.db, self.owner, limit=self.options.batch, lease_seconds=self.options.lease
        )
        if claimed:
            # One monitor's alerts to one channel go out in order (a PagerDuty
            # trigger before its resolve); everything else concurrently.
            groups: dict[tuple[int | None, int | None], list[Claimed]] = {}
            for c in claimed:
                groups.setdefault((c.channel.id, c.delivery.monitor_id), []).append(c)
            await asyncio.gather(*(self._deliver_in_order(g) for g in groups.values()))
        return len(claimed)

    async def _deliver_in_order(self, claimed: list[Claimed]) -> None:
        for c in claimed:
            await self._deliver(c)

    async def _deliver(self, claimed: Claimed) -> None:
        channel = claimed.channel
        if not channel.enabled:
            await outbox.cancel(
                self.db, claimed, self.owner, "the channel was disabled before the alert was sent"
            )
            return
        prepared = await prepare.prepare(self.db, claimed, public_url=self.options.public_url, now=utcnow())
        if prepared.held_until is not None and claimed.delivery.kind == "reminder":
            # A reminder repeats anyway; one held all night would arrive with the rest.
            await outbox.cancel(
                self.db, claimed, self.owner, "reminder skipped: inside the channel's quiet hours"
            )
            metrics.FINISHED.labels(kind=channel.kind, status="cancelled").inc()
            return
        if prepared.held_until is not None:
            # Quiet hours: back to pending until the window ends, no attempt counted.
            metrics.HELD.labels(kind=channel.kind).inc()
            await outbox.hold(
                self.db,
                claimed,
                self.owner,
                prepared.held_until,
                f"{outbox.HELD_PREFIX} until {prepared.held_until.isoformat()}",
            )
            return
        started_at = utcnow()
        t0 = time.perf_counter()
        try:
            result = await senders.send(channel.kind, channel.config, prepared.alert, self.transport)
        except Exception as exc:
            # A sender bug must not strand the row in "sending"; record it as transient.
            log.exception("sender for channel %s raised (delivery %s)", channel.id, claimed.delivery.id)
            result = SendResult(
                ok=False, error=f"internal error in the {channel.kind} sender ({type(exc).__name__})"
            )
        duration_ms = (time.perf_counter() - t0) * 1000
        verdict = "ok" if result.ok else "permanent" if result.permanent else "transient"
        metrics.ATTEMPTS.labels(kind=channel.kind, result=verdict).inc()
        metrics.DURATION.labels(kind=channel.kind).observe(duration_ms / 1000)
        outcome = await outbox.record_attempt(
            self.db,
            claimed,
            self.owner,
            result,
            started_at=started_at,
            duration_ms=duration_ms,
            policy=self.options.policy,
            flag_after=self.options.flag_after,
        )
        if outcome is not None and outcome.status in ("delivered", "failed"):
            metrics.FINISHED.labels(kind=channel.kind, status=outcome.status).inc()
        if outcome is not None and outcome.channel_flagged:
            metrics.FLAGGED.inc()
        if outcome is None:
            log.warning(
                "delivery %s: lease lost during the send; another worker owns it now", claimed.delivery.id
            )
        elif outcome.status == "failed":
            log.warning(
                "delivery %s to channel %s failed for good after %s attempts: %s",
                claimed.delivery.id,
                channel.id,
                claimed.delivery.attempts + 1,
                result.error,
            )
        elif outcome.status == "pending":
            log.info(
                "delivery %s to channel %s will be retried at %s: %s",
                claimed.delivery.id,
                channel.id,
                outcome.next_attempt_at,
                result.error,
            )


async def start_delivery_workers(services: Services) -> None:
    """Lifespan hook: start this instance's worker unless DELIVERY_WORKERS_ENABLED=false."""
    settings = services.settings
    if not settings.delivery_workers_enabled:
        log.info("delivery workers disabled on this instance (DELIVERY_WORKERS_ENABLED=false)")
        return
    worker = DeliveryWorker(
        services.db, DeliveryOptions.from_settings(settings), egress=EgressPolicy.for_alerts(settings)
    )
    await worker.start()
    services.delivery_worker = worker


async def stop_delivery_workers(services: Services) -> None:
    """Lifespan hook: finish in-flight sends and hand back leases; call before the database closes."""
    worker, services.delivery_worker = services.delivery_worker, None
    if worker is not None:
        await worker.stop()
