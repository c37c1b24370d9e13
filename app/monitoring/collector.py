"""The collector: claims due monitors from the database, checks them with
bounded concurrency, and records each outcome with a compare-and-set.

Work sharing (N instances, one database):

- PostgreSQL: each tick claims up to ``free slots`` due rows with
  ``SELECT … FOR UPDATE SKIP LOCKED`` and stamps them with this instance's
  ``lease_owner`` and ``lease_expires_at`` (check timeout + lease margin) in the
  same transaction, so concurrent claimers never get the same row. Recording
  releases the lease and moves ``next_check_at`` one interval on. A crashed
  instance's leases expire and the rows become claimable again.
- SQLite: the same statements without row locks; one instance per database file.

Recording is a compare-and-set on ``state_seq`` and ``lease_owner``: if a push,
a CHECK_NOW, a PAUSE or another instance (after our lease expired) wrote
first, our result is dropped and nothing is announced twice.

Fair sharing between tenants: the slots of one instance are shared so that one
tenant's slow or hanging targets cannot hold them all. While ``n`` tenants have
checks in flight on this instance, each may hold at most
``max(1, COLLECTOR_CONCURRENCY // (n + 1))`` of them; a claim skips tenants at
their cap. The ``+ 1`` keeps a share free for a tenant that has nothing in
flight yet, so its due checks start at the next tick instead of waiting for a
hanging check to time out (at most CHECK_TIMEOUT_MAX).

Failure containment: a runner that raises records a ``down`` result carrying
"internal check error: <type>: <message>", like any other failure. If even
recording fails, the lease is released with a growing back-off (30 s doubling
to an hour) and one log line, so a bad row cannot loop.

Scheduling keeps a fixed cadence (``next = previous due time + interval``) and
only resets to ``now + interval`` when the collector has fallen behind. A new
monitor's first check is spread over ``COLLECTOR_JITTER`` seconds (capped at
its interval) so a bulk import does not fire on one second forever after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlmodel import col

from app import metrics
from app.models.base import utcnow
from app.models.monitor import Monitor
from app.monitoring import http_probe, kinds, locations, recorder
from app.monitoring.checks import (
    MAX_BODY_BYTES,
    CheckOutcome,
    HttpClients,
    run_http_check,
    run_tcp_check,
    scrub_text,
)
from app.monitoring.conditions import parse_all
from app.monitoring.definition import effective_timeout, http_spec, kind_values
from app.monitoring.state import UP_LIKE, group_state

if TYPE_CHECKING:
    from app.events import EventBus
    from app.storage.db import Database

log = logging.getLogger("watchpost.collector")

#: Beyond its own timeout a runner gets this long before the collector gives up on it
#: (the runners bound themselves; this catches one that does not, e.g. a stuck resolver).
PROBE_SLACK = 5.0
#: Claim rounds per tick: each round fills the free slots or finds another tenant at its cap.
MAX_CLAIM_ROUNDS = 8
#: Back-off after a failed recording: 30 s, doubling, at most an hour.
RECORD_BACKOFF_FIRST = 30.0
RECORD_BACKOFF_MAX = 3600.0
#: At most this many HTTP/TCP outcomes are recorded in one transaction.
RECORD_BATCH_MAX = 100
#: A writer waits this long after the first outcome of a batch for others to join (seconds).
#: Only the recording waits; the latency was measured before.
RECORD_GATHER = 0.02
#: Batches recorded at once (each on its own pooled connection): one writer would make
#: every check wait for the database round trips of all the others.
RECORD_WRITERS = 4
#: The monitor fields :func:`recorder.record` writes into its snapshot; restored when a
#: batch is rolled back, so each outcome can be recorded again on its own.
_RECORDED_FIELDS = (
    "state",
    "state_seq",
    "fail_streak",
    "ok_streak",
    "last_checked_at",
    "last_latency_ms",
    "last_status_code",
    "last_error",
    "cert_expires_at",
    "state_changed_at",
    "lease_owner",
    "lease_expires_at",
    "next_check_at",
)

_Pending = tuple[Monitor, CheckOutcome, "asyncio.Future[recorder.Recording | None]"]


def instance_id() -> str:
    """A lease owner name unique to this process (host:pid:random)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def due_condition(now: datetime, until: datetime | None = None) -> ColumnElement[bool]:
    """Monitors the collector may claim at ``now``: enabled, due by ``until`` (default ``now``),
    and not leased by a live check."""
    return and_(
        col(Monitor.enabled).is_(True),
        col(Monitor.next_check_at) <= (now if until is None else until),
        or_(col(Monitor.lease_expires_at).is_(None), col(Monitor.lease_expires_at) < now),
    )


async def due_count(db: Database) -> int:
    """How many monitors are waiting for a collector right now (the ``collector_lag`` gauge)."""
    async with db.session() as s:
        return int(
            await s.scalar(select(func.count()).select_from(Monitor).where(due_condition(utcnow()))) or 0
        )


def next_due(monitor: Monitor, now: datetime) -> datetime:
    """When the monitor should run next after a check that ran at ``now``."""
    step = timedelta(seconds=monitor.interval)
    if monitor.kind == "push":
        return now + step  # another missed-push result each interval until a push arrives
    nxt = monitor.next_check_at + step
    return nxt if nxt > now else now + step


async def probe(
    monitor: Monitor,
    clients: HttpClients | None,
    *,
    timeout_max: float = 60.0,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> CheckOutcome:
    """Run the monitor's check (http/tcp); push and group are decided by the caller.

    Never raises (except cancellation): a runner failing for an unexpected reason, e.g. a
    row stored before validation was strict, gives a failed outcome naming the error.
    """
    timeout = effective_timeout(monitor.timeout, timeout_max)
    try:
        async with asyncio.timeout(timeout + PROBE_SLACK):
            if monitor.kind == "http":
                spec = http_spec(monitor, timeout_max=timeout_max, max_body_bytes=max_body_bytes)
                fast = http_probe.plan(spec)
                if fast is not None:
                    outcome = await http_probe.run(fast, spec)
                    if outcome is not None:
                        return outcome
                    # A redirect to follow or an unusual answer: the full client starts over.
                return await run_http_check(spec, clients)
            if monitor.kind == "tcp":
                return await run_tcp_check(
                    str(monitor.host),
                    int(monitor.port or 0),
                    timeout,
                    conditions=parse_all(monitor.conditions),
                )
            if monitor.kind in kinds.NAMES:
                return await kinds.run(monitor.kind, kind_values(monitor), timeout)
            raise ValueError(f"{monitor.kind!r} monitors are not probed")
    except TimeoutError:
        return CheckOutcome(False, None, None, f"timed out after {timeout:g} s")
    except Exception as exc:  # noqa: BLE001 - any runner failure becomes a recorded result
        return internal_error(exc, monitor.url, monitor.options)


def internal_error(exc: BaseException, url: str | None, options: Any = None) -> CheckOutcome:
    """A failed outcome for an exception no runner turned into a sentence (secrets masked)."""
    text = scrub_secrets(f"internal check error: {type(exc).__name__}: {exc}", url, options)
    return CheckOutcome(False, None, None, text[:300])


def scrub_secrets(text: str, url: str | None, options: Any = None) -> str:
    """``text`` without the URL's credentials nor the secret options (connection strings, headers)."""
    text = scrub_text(text, url)
    for secret in kinds.secrets(options if isinstance(options, dict) else None):
        text = text.replace(secret, "***")
    return text


def missed_push(monitor: Monitor) -> CheckOutcome:
    return CheckOutcome(False, None, None, f"no push received within {monitor.interval + monitor.grace} s")


def group_outcome(monitor: Monitor, members: list[str]) -> CheckOutcome:
    state = group_state(members, monitor.min_up)
    up = sum(1 for s in members if s in UP_LIKE)
    ok = state in UP_LIKE
    text = f"{up} of {len(members)} members up, {monitor.min_up} needed"
    return CheckOutcome(ok, None, None, None if ok else text)


class Collector:
    """One per app instance; ``start()`` from the lifespan, ``stop()`` on shutdown."""

    def __init__(
        self,
        db: Database,
        events: EventBus | None,
        *,
        concurrency: int = 200,
        tick: float = 0.25,
        lease_margin: float = 30.0,
        jitter: float = 10.0,
        owner: str | None = None,
        timeout_max: float = 60.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        probe_grace: float = 90.0,
    ) -> None:
        self.db = db
        #: PROBE_GRACE: a location's latest result older than interval + this is unknown.
        self.probe_grace = probe_grace
        self.events = events
        self.concurrency = max(1, concurrency)
        self.tick = tick
        self.lease_margin = lease_margin
        self.jitter = jitter
        self.owner = owner or instance_id()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._clients: HttpClients | None = None
        self.timeout_max = timeout_max
        self.max_body_bytes = max_body_bytes
        #: Checks in flight on this instance per tenant (only tenants with at least one).
        self._per_tenant: Counter[int] = Counter()
        #: Consecutive failed recordings per monitor id, for the back-off.
        self._record_failures: dict[int, int] = {}
        #: Claimed checks still waiting for their start time (monitor id -> task).
        self._waiting: dict[int, asyncio.Task[None]] = {}
        #: Probed HTTP/TCP outcomes waiting for the batch writer (while started).
        self._outbox: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writers: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._clients = HttpClients()
        self._writers = [
            asyncio.create_task(self._write_loop(), name=f"collector-writer-{n}")
            for n in range(RECORD_WRITERS)
        ]
        self._loop_task = asyncio.create_task(self._run_loop(), name="collector")
        log.info("collector %s started (concurrency %d)", self.owner, self.concurrency)

    async def stop(self, deadline: float = 5.0) -> None:
        """Stop claiming, give in-flight checks ``deadline`` seconds, cancel the rest.

        Claimed checks that have not started yet are given back at once (another
        instance runs them on time); cancelled running checks keep their lease and
        another instance re-runs them once it expires.
        """
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        await self._give_back_waiting()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for writer in self._writers:
            writer.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
        self._writers = []
        if self._clients is not None:
            await self._clients.aclose()
            self._clients = None

    async def _give_back_waiting(self) -> None:
        waiting = dict(self._waiting)
        if not waiting:
            return
        for task in waiting.values():
            task.cancel()
        await asyncio.gather(*waiting.values(), return_exceptions=True)
        try:
            async with self.db.session() as session:
                await session.execute(
                    update(Monitor)
                    .where(col(Monitor.id).in_(list(waiting)), col(Monitor.lease_owner) == self.owner)
                    .values(lease_owner=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False)
                )
                await session.commit()
        except Exception as exc:  # noqa: BLE001 - the leases expire on their own
            log.warning(
                "collector %s: could not give back %d unstarted checks (%s)", self.owner, len(waiting), exc
            )

    def wake(self) -> None:
        """Claim now instead of at the next tick (a monitor became due early)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- claiming ----------------------------------------------------------------------------
    async def _run_loop(self) -> None:
        failures = 0
        while True:
            free = self.concurrency - len(self._tasks)
            claimed: list[Monitor] = []
            if free > 0:
                try:
                    claimed = await self.claim(free)
                    failures = 0
                except Exception:
                    # The database is down or refusing: back off (up to 30 s) instead of
                    # logging a traceback every tick; checks resume once it answers.
                    failures += 1
                    log.exception(
                        "collector %s: claiming due monitors failed (%d in a row)", self.owner, failures
                    )
                    await asyncio.sleep(min(30.0, self.tick * 2**failures))
                    continue
            self._schedule(claimed)
            if claimed and len(claimed) == free:
                await asyncio.sleep(0)  # more may be due; claim again once slots free up
                if len(self._tasks) >= self.concurrency:
                    await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick)

    def _schedule(self, claimed: list[Monitor]) -> None:
        """Start each claimed check at its own due time, never all at the tick's instant.

        A claim takes what falls due within the next tick; due times are spread (first
        checks are jittered, then keep their cadence), so starting each at its due time
        spreads the work evenly. Checks already overdue (a backlog, a restart) are spread
        evenly over one tick instead of being started together: a burst of simultaneous
        connects queues on the event loop and on the target, and the recorded latency
        would measure that queue instead of the target.
        """
        if not claimed:
            return
        now = utcnow()
        step = self.tick / len(claimed)
        for index, monitor in enumerate(sorted(claimed, key=lambda m: m.next_check_at)):
            due_in = (monitor.next_check_at - now).total_seconds()
            self._start(monitor, max(due_in, index * step))

    def _start(self, monitor: Monitor, delay: float = 0.0) -> None:
        tenant = monitor.tenant_id
        key = monitor.id or 0
        self._per_tenant[tenant] += 1
        task = asyncio.create_task(self._check(monitor, delay), name=f"check-{monitor.id}")
        self._tasks.add(task)
        if delay > 0:
            self._waiting[key] = task

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._waiting.get(key) is t:
                del self._waiting[key]
            self._per_tenant[tenant] -= 1
            if self._per_tenant[tenant] <= 0:
                del self._per_tenant[tenant]

        task.add_done_callback(done)

    def tenant_cap(self, busy_tenants: int) -> int:
        """Slots one tenant may hold while ``busy_tenants`` tenants (itself included) have
        checks in flight: a fair share that leaves one share free for a newcomer."""
        return max(1, self.concurrency // (busy_tenants + 1))

    async def claim(self, limit: int) -> list[Monitor]:
        """Lease up to ``limit`` monitors due within the next tick to this instance; returns
        detached snapshots (the caller starts each at its due time).

        Tenants at their cap (see :meth:`tenant_cap`) are skipped; a round that meets a
        tenant reaching its cap queries again without it, so one tenant's thousands of
        due rows cannot hide another tenant's single due row.
        """
        now = utcnow()
        until = now + timedelta(seconds=self.tick)
        counts = Counter(self._per_tenant)
        taken: list[Monitor] = []
        seen: list[int] = []
        async with self.db.session() as session:
            for _round in range(MAX_CLAIM_ROUNDS):
                want = limit - len(taken)
                if want <= 0:
                    break
                skip = [t for t, n in counts.items() if n >= self.tenant_cap(len(counts))]
                stmt = select(Monitor).where(due_condition(now, until))
                if skip:
                    stmt = stmt.where(col(Monitor.tenant_id).not_in(skip))
                if seen:
                    # Rows this transaction already locked are not skipped by SKIP LOCKED.
                    stmt = stmt.where(col(Monitor.id).not_in(seen))
                stmt = stmt.order_by(col(Monitor.next_check_at)).limit(want)
                if not self.db.is_sqlite:
                    stmt = stmt.with_for_update(skip_locked=True)
                rows = list((await session.execute(stmt)).scalars().all())
                capped = False
                for m in rows:
                    seen.append(m.id or 0)
                    busy = len(counts) + (0 if counts[m.tenant_id] else 1)
                    if counts[m.tenant_id] >= self.tenant_cap(busy):
                        capped = True
                        continue
                    counts[m.tenant_id] += 1
                    taken.append(m)
                if len(rows) < want or not capped:
                    break
            if not taken:
                await session.rollback()
                return []
            longest = max(effective_timeout(m.timeout, self.timeout_max) for m in taken)
            expires = until + timedelta(seconds=longest + PROBE_SLACK + self.lease_margin)
            ids = [m.id for m in taken]
            await session.execute(
                update(Monitor)
                .where(col(Monitor.id).in_(ids))
                .values(lease_owner=self.owner, lease_expires_at=expires)
                .execution_options(synchronize_session=False)
            )
            await session.commit()
            for m in taken:
                session.expunge(m)
                m.lease_owner, m.lease_expires_at = self.owner, expires
            return taken

    # -- checking ----------------------------------------------------------------------------
    async def _check(self, monitor: Monitor, delay: float = 0.0) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
            self._waiting.pop(monitor.id or 0, None)
        try:
            await self.check_claimed(monitor)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged in one line by _back_off
            await self._back_off(monitor, exc)
        else:
            self._record_failures.pop(monitor.id or 0, None)

    async def _back_off(self, monitor: Monitor, exc: Exception) -> None:
        """Recording failed (a bad row, a database error): release the lease later and later,
        with one log line each time, instead of a traceback every lease period."""
        key = monitor.id or 0
        failures = self._record_failures.get(key, 0) + 1
        self._record_failures[key] = failures
        delay = min(RECORD_BACKOFF_MAX, RECORD_BACKOFF_FIRST * 2 ** min(failures - 1, 20))
        reason = scrub_secrets(f"{type(exc).__name__}: {exc}", monitor.url, monitor.options)[:300]
        log.warning(
            "collector %s: recording monitor %s failed %d time(s) in a row (%r); next try in %g s",
            self.owner,
            monitor.id,
            failures,
            reason,
            delay,
        )
        try:
            async with self.db.session() as session:
                await session.execute(
                    update(Monitor)
                    .where(col(Monitor.id) == monitor.id, col(Monitor.lease_owner) == self.owner)
                    .values(
                        lease_owner=None,
                        lease_expires_at=None,
                        next_check_at=utcnow() + timedelta(seconds=delay),
                    )
                    .execution_options(synchronize_session=False)
                )
                await session.commit()
        except Exception as release_exc:  # noqa: BLE001 - logged; nothing else to do
            # The database itself is failing: the lease expires on its own.
            log.warning(
                "collector %s: could not release monitor %s (%s); its lease expires on its own",
                self.owner,
                monitor.id,
                type(release_exc).__name__,
            )

    async def check_claimed(self, monitor: Monitor) -> recorder.Recording | None:
        """Run and record one leased monitor; returns the recording, or None if it lost the race."""
        outcome: CheckOutcome | None = None
        if monitor.kind not in ("push", "group"):
            if locations.is_default(monitor.locations):
                started = time.perf_counter()
                outcome = await probe(
                    monitor, self._clients, timeout_max=self.timeout_max, max_body_bytes=self.max_body_bytes
                )
                metrics.CHECK_DURATION.labels(kind=monitor.kind).observe(time.perf_counter() - started)
            else:
                outcome = await self._quorum(monitor)
                if outcome is None:  # every location unknown: nothing to record this interval
                    await self._release(monitor, utcnow())
                    await self._revisit(monitor, None)
                    return None
                rec = await self._record(monitor, outcome)
                if rec is not None:
                    await self._revisit(monitor, outcome)
                return rec
        return await self._record(monitor, outcome)

    async def _record(self, monitor: Monitor, outcome: CheckOutcome | None) -> recorder.Recording | None:
        if self._writers and outcome is not None and monitor.kind not in ("push", "group"):
            # Recorded with the other outcomes of the moment in one transaction: one
            # pooled connection, one maintenance-window read and one commit per batch
            # instead of per check (at hundreds of checks/s the per-check transaction,
            # not the probe, was the cost).
            done: asyncio.Future[recorder.Recording | None] = asyncio.get_running_loop().create_future()
            self._outbox.put_nowait((monitor, outcome, done))
            return await done
        return await self._record_one(monitor, outcome)

    async def _revisit(self, monitor: Monitor, decided: CheckOutcome | None) -> None:
        """A probe's report that changed a location while this decision was in flight made
        the monitor due at once, but the recording or release (which moves the due time an
        interval on) came after it. Read the locations again: if they now decide the other
        way (or decide at all, where every location was unknown), the monitor is due now, so
        the change is not left waiting for an interval."""
        async with self.db.session() as session:
            latest = await locations.latest(session, monitor.id or 0)
            now = utcnow()
            fresh = locations.decide(monitor, latest, now=now, grace=self.probe_grace, local=None)
            if fresh is None or (decided is not None and fresh.ok == decided.ok):
                await session.rollback()
                return
            await session.execute(
                update(Monitor)
                .where(col(Monitor.id) == monitor.id, col(Monitor.next_check_at) > now)
                .values(next_check_at=now)
                .execution_options(synchronize_session=False)
            )
            await session.commit()
        self.wake()

    async def _quorum(self, monitor: Monitor) -> CheckOutcome | None:
        """The outcome of a monitor checked from several locations (docs/probes.md, "How the
        state is decided"); None when every location is unknown."""
        local: CheckOutcome | None = None
        started_at = utcnow()
        if locations.LOCAL in (monitor.locations or []):
            started = time.perf_counter()
            local = await probe(
                monitor, self._clients, timeout_max=self.timeout_max, max_body_bytes=self.max_body_bytes
            )
            metrics.CHECK_DURATION.labels(kind=monitor.kind).observe(time.perf_counter() - started)
        outcome, events = await locations.decide_from_locations(
            self.db, monitor, local, started_at=started_at, grace=self.probe_grace
        )
        await self.publish(events)
        return outcome

    async def _record_one(self, monitor: Monitor, outcome: CheckOutcome | None) -> recorder.Recording | None:
        now = utcnow()
        async with self.db.session() as session:
            members: list[str] | None = None
            if monitor.kind == "group":
                members = await recorder.group_member_states(session, monitor)
                outcome = group_outcome(monitor, members)
            elif monitor.kind == "push":
                outcome = missed_push(monitor)
            assert outcome is not None
            metrics.CHECKS.labels(kind=monitor.kind, result="up" if outcome.ok else "down").inc()
            windows = await recorder.active_windows(session, {monitor.tenant_id}, now)
            rec = await recorder.record(
                session,
                monitor,
                outcome,
                now=now,
                in_maintenance=recorder.covered(monitor, windows),
                next_check_at=next_due(monitor, now),
                lease_owner=self.owner,
                members=members,
            )
            if rec is None:
                await session.rollback()
                await self._release(monitor, now)
                return None
            await session.commit()
        await self.publish(rec.events)
        return rec

    # -- batched recording -------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            if self._outbox.qsize() < RECORD_BATCH_MAX - 1:
                # Let the outcomes of the next few milliseconds join: a batch's statements
                # cost about the same for 1 outcome as for 50, and at hundreds of checks/s
                # a writer that starts at once writes batches of two or three.
                await asyncio.sleep(RECORD_GATHER)
            while len(batch) < RECORD_BATCH_MAX and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            await self._write_batch(batch)

    async def _write_batch(self, batch: list[_Pending]) -> None:
        saved = [{f: getattr(m, f) for f in _RECORDED_FIELDS} for m, _o, _d in batch]
        try:
            recordings = await self._record_batch([(m, o) for m, o, _d in batch])
        except Exception as batch_exc:  # noqa: BLE001 - retried one by one below
            # One bad row must not cost the others their results: record each on its
            # own, so only the bad one fails (and backs off with its own log line, see
            # _back_off).
            failed = 0
            for (monitor, outcome, done), fields in zip(batch, saved, strict=True):
                for name, value in fields.items():
                    setattr(monitor, name, value)
                try:
                    rec = await self._record_one(monitor, outcome)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting check
                    failed += 1
                    if not done.done():
                        done.set_exception(exc)
                else:
                    if not done.done():
                        done.set_result(rec)
            if not failed:
                # Every outcome recorded on its own: the batch path itself is failing,
                # which would otherwise only show as lost throughput.
                log.warning(
                    # The type only: a database error's text quotes the statement's parameters.
                    "collector %s: recording a batch of %d failed (%s) although each outcome "
                    "recorded on its own",
                    self.owner,
                    len(batch),
                    type(batch_exc).__name__,
                )
            return
        for (_m, _o, done), rec in zip(batch, recordings, strict=True):
            if not done.done():
                done.set_result(rec)
        for rec in recordings:
            if rec is not None:
                await self.publish(rec.events)

    async def _record_batch(
        self, items: list[tuple[Monitor, CheckOutcome]]
    ) -> list[recorder.Recording | None]:
        """Record HTTP/TCP outcomes in one transaction; None for each that lost its compare-and-set."""
        now = utcnow()
        out: list[recorder.Recording | None] = [None] * len(items)
        async with self.db.session() as session:
            windows = await recorder.active_windows(session, {m.tenant_id for m, _o in items}, now)
            steady: list[tuple[int, tuple[Monitor, CheckOutcome, bool, datetime]]] = []
            changing: list[tuple[int, Monitor, CheckOutcome, bool]] = []
            transitions = []
            for index, (monitor, outcome) in enumerate(items):
                in_maintenance = recorder.covered(monitor, windows)
                transition = recorder.decide(
                    monitor, outcome.ok, in_maintenance=in_maintenance, degraded=outcome.degraded
                ).transition
                transitions.append(transition)
                if not recorder.certificate_steady(monitor, outcome, now, in_maintenance):
                    # A new certificate, or a threshold to alert: the one-by-one path.
                    changing.append((index, monitor, outcome, in_maintenance))
                elif transition is None:
                    steady.append((index, (monitor, outcome, in_maintenance, next_due(monitor, now))))
                else:
                    changing.append((index, monitor, outcome, in_maintenance))
            if changing:
                # Open incidents in one read; then the quiet transitions (a fleet's first
                # checks: pending -> up, nothing to open, resolve or alert) join the batch.
                await recorder.prefetch_open_incidents(session, [m.id or 0 for _i, m, _o, _mt in changing])
                loud = []
                for index, monitor, outcome, in_maintenance in changing:
                    transition = transitions[index]
                    if transition is not None and await recorder.is_quiet(session, monitor, transition):
                        steady.append((index, (monitor, outcome, in_maintenance, next_due(monitor, now))))
                    else:
                        loud.append((index, monitor, outcome, in_maintenance))
                changing = loud
            # Most outcomes change nothing but streaks and last_*: one UPDATE and one INSERT
            # for all of them. State changes (incidents, groups, alerting) go one by one.
            recorded = await recorder.record_steady(
                session,
                [item for _i, item in steady],
                now=now,
                lease_owner=self.owner,
                is_sqlite=self.db.is_sqlite,
            )
            lost = []
            for (index, item), rec in zip(steady, recorded, strict=True):
                out[index] = rec
                if rec is None:
                    lost.append(item[0])
            for index, monitor, outcome, in_maintenance in changing:
                rec = await recorder.record(
                    session,
                    monitor,
                    outcome,
                    now=now,
                    in_maintenance=in_maintenance,
                    next_check_at=next_due(monitor, now),
                    lease_owner=self.owner,
                )
                out[index] = rec
                if rec is None:
                    lost.append(monitor)
            for monitor in lost:  # nothing was written for it: give the lease back
                await session.execute(
                    update(Monitor)
                    .where(col(Monitor.id) == monitor.id, col(Monitor.lease_owner) == self.owner)
                    .values(lease_owner=None, lease_expires_at=None, next_check_at=next_due(monitor, now))
                    .execution_options(synchronize_session=False)
                )
            await session.commit()
        for (monitor, outcome), rec in zip(items, out, strict=True):
            if rec is not None:
                metrics.CHECKS.labels(kind=monitor.kind, result="up" if outcome.ok else "down").inc()
        return out

    async def _release(self, monitor: Monitor, now: datetime) -> None:
        """Give back a lease whose recording lost the compare-and-set."""
        values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
        if monitor.kind != "push":  # a push that beat us already set the next deadline
            values["next_check_at"] = next_due(monitor, now)
        async with self.db.session() as session:
            await session.execute(
                update(Monitor)
                .where(col(Monitor.id) == monitor.id, col(Monitor.lease_owner) == self.owner)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            await session.commit()

    async def publish(self, events: list[recorder.Event]) -> None:
        if self.events is None:
            return
        for tenant_id, topic, pkg_id, data in events:
            await self.events.publish(tenant_id, topic, pkg_id, data)
