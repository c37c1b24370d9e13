"""The probe program: one WebSocket to ``/web``, its assignments, its checks and its reports.

On every (re)connect (:meth:`Agent.on_open`, run by :class:`WatchpostClient` instead
of its PING): PROBE_HELLO with ``since`` = the last assignment seq applied; when the
answer says ``recovered: false`` the snapshot is loaded with PROBE_ASSIGNMENTS pages,
and the 906 events that arrived meanwhile are applied after it, in order. Events
later arrive on the ``probe.<location id>`` topic the hello attached (the client's
``on_event`` hook) and are applied at once; a gap in their seqs, or a ``reload`` event
(sent after a large import), reloads the snapshot.

Checks run from :class:`~app.probe.schedule.Scheduler` whether connected or not;
each result goes to the :class:`~app.probe.spool.Spool` (disk) before the reporter
sends it. The reporter sends the oldest pending results in PROBE_REPORT batches
(every second, or at once when a batch is full) and forgets each batch when the
server answers: ``accepted``, ``duplicates`` and ``refused`` all count as
acknowledged (refused ones are logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from app.client import WatchpostClient
from app.client.client import LinkCaller
from app.client.constants import PkgID
from app.client.errors import (
    AuthenticationFailed,
    ConnectionLost,
    InvalidData,
    PermissionDenied,
    RequestTimeout,
    WatchpostError,
)
from app.client.subscription import Event
from app.monitoring.checks import HttpClients
from app.monitoring.collector import probe as run_check
from app.probe import assignments
from app.probe.schedule import Definition, Scheduler
from app.probe.spool import Spool

log = logging.getLogger("app.probe")

VERSION = "1.0"
#: Results per PROBE_REPORT (capped by the hello's ``report_max``).
BATCH = 200
#: Seconds between reports while fewer than a batch are pending.
REPORT_EVERY = 1.0
#: Monitor fields a definition may carry that the runners read (the rest are ignored).
_MONITOR_FIELDS = frozenset(
    {
        "id", "name", "kind", "interval", "timeout", "version", "url", "method", "headers", "body",
        "auth", "expected_status", "keyword", "conditions", "verify_tls", "follow_redirects",
        "max_redirects", "degraded_latency_ms", "host", "port", "options",
    }
)  # fmt: skip


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds and a Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_monitor(definition: Definition) -> Any:
    """A transient Monitor (never stored) for the runners, from an assignment definition."""
    from app.models.monitor import Monitor

    fields = {k: v for k, v in definition.items() if k in _MONITOR_FIELDS and v is not None}
    return Monitor(tenant_id=0, **fields)


class Agent:
    """Assignments, checks, spool and reports of one probe process."""

    def __init__(
        self,
        url: str,
        token: str,
        spool: Spool,
        *,
        location: str | None = None,
        concurrency: int = 200,
        timeout_max: float = 60.0,
        max_body_bytes: int = 1024 * 1024,
        batch: int = BATCH,
        report_every: float = REPORT_EVERY,
    ) -> None:
        self.location = location
        self.spool = spool
        self.batch = batch
        self.report_every = report_every
        self.timeout_max = timeout_max
        self.max_body_bytes = max_body_bytes
        self.scheduler = Scheduler(self._check, concurrency=concurrency)
        self.client = WatchpostClient(
            url, token, on_open=self.on_open, on_event=self.on_event, backoff_max=10.0
        )
        #: Unique per process run: keys ``<run>:<n>`` never repeat across restarts.
        self.run_id = uuid.uuid4().hex
        self._counter = 0
        #: Last assignment seq applied (None: nothing loaded yet).
        self.seq: int | None = None
        self.hello: dict[str, Any] = {}
        #: A snapshot reload failed: the next hello omits ``since`` to get a full one.
        self._need_snapshot = False
        #: 906 events held while a snapshot loads (None: apply at once).
        self._held: list[Event] | None = None
        self._report_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: HttpClients | None = None
        self.reported = 0
        self.refused = 0
        self.stopped = asyncio.Event()
        self.fatal: BaseException | None = None
        #: The assigned set or its seq changed since it was last saved to the state directory.
        self._dirty = False

    # -- connection ------------------------------------------------------------------

    async def on_open(self, caller: LinkCaller) -> None:
        """Hello, then the snapshot when the server could not replay what was missed.

        Events arriving meanwhile are held and applied afterwards; if this connect
        fails half-way nothing changes (the next one starts from the same ``since``).
        """
        self._held = []
        try:
            data: dict[str, Any] = {"version": VERSION}
            if self.location:
                data["location"] = self.location
            if self.seq is not None and not self._need_snapshot:
                data["since"] = self.seq
            hello = await caller.call(PkgID.PROBE_HELLO, data)
            self.hello = hello if isinstance(hello, dict) else {}
            if not self.hello.get("recovered"):
                snapshot_seq = await self._load_snapshot(caller.call)
                current = self.hello.get("seq")
                # Held events after the hello's seq are applied on top of the snapshot; some
                # may already be in it, and applying an upsert or remove twice changes nothing.
                self.seq = current if isinstance(current, int) else snapshot_seq
                self._need_snapshot = False
                self._dirty = True
        except BaseException:
            self._held = None
            raise
        held, self._held = self._held, None
        for event in held:
            self._apply(event)
        log.info(
            "connected as location %s (probe %s): %d monitors, %s",
            self.hello.get("location"),
            self.hello.get("probe_id"),
            len(self.scheduler.definitions),
            "changes replayed" if self.hello.get("recovered") else "snapshot loaded",
        )
        self._report_wake.set()

    async def _load_snapshot(self, call: Any) -> int | None:
        """Load every PROBE_ASSIGNMENTS page and make it the assigned set; return the first page's seq."""
        definitions: list[Definition] = []
        after: int | None = 0
        snapshot_seq: int | None = None
        while after is not None:
            page = await call(PkgID.PROBE_ASSIGNMENTS, {"after_id": after, "limit": 500})
            if snapshot_seq is None and isinstance(page.get("seq"), int):
                snapshot_seq = page["seq"]
            definitions.extend(d for d in page.get("monitors") or [] if isinstance(d, dict) and "id" in d)
            nxt = page.get("next_after_id")
            after = int(nxt) if isinstance(nxt, int) else None
        self.scheduler.replace(definitions)
        return snapshot_seq

    def on_event(self, event: Event) -> None:
        if event.pkg_id != PkgID.EVENT_PROBE_ASSIGNMENT:
            log.debug("ignoring event %s on %s", event.pkg_id, event.topic)
            return
        if self._held is not None:
            self._held.append(event)
        else:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        if self.seq is not None and event.seq <= self.seq:
            return  # already applied (replayed, or older than the snapshot)
        if self.seq is not None and event.seq > self.seq + 1 and self._held is None:
            log.warning(
                "assignment events %d..%d missed: reloading the snapshot", self.seq + 1, event.seq - 1
            )
            self._spawn(self._resync())
        data = event.data if isinstance(event.data, dict) else {}
        op = data.get("op")
        if op == "upsert" and isinstance(data.get("monitor"), dict):
            self.scheduler.upsert(data["monitor"])
        elif op == "remove" and data.get("monitor_id") is not None:
            self.scheduler.remove(int(data["monitor_id"]))
        elif op == "reload":
            # Many monitors changed at once (a large import): one event instead of one per monitor.
            log.info("the server asks for a reload of the assignments")
            self._spawn(self._resync())
        else:
            log.warning("ignoring an assignment event I do not understand: %.200r", data)
        self.seq = event.seq
        self._dirty = True

    async def _resync(self) -> None:
        if self._held is not None:
            return  # a load is already under way
        self._held = []
        base = self.seq
        try:
            await self._load_snapshot(self.client.call)
        except WatchpostError as exc:
            log.warning("snapshot reload failed (%s); the next reconnect loads it", exc)
            self._need_snapshot = True
        held, self._held = self._held or [], None
        self.seq = base
        self._dirty = True
        for event in held:
            self._apply(event)

    # -- checks ----------------------------------------------------------------------

    async def _check(self, definition: Definition, due: float) -> None:
        started = time.time()
        ok: bool
        latency: float | None
        status: int | None
        error: str | None
        try:
            monitor = build_monitor(definition)
        except Exception as exc:  # noqa: BLE001 - a definition the runners cannot use is a failed result
            ok, latency, status, error = False, None, None, f"invalid definition: {exc}"[:300]
        else:
            outcome = await run_check(
                monitor, self._clients, timeout_max=self.timeout_max, max_body_bytes=self.max_body_bytes
            )
            ok, latency, status, error = outcome.ok, outcome.latency_ms, outcome.status_code, outcome.error
        self._counter += 1
        result = {
            "key": f"{self.run_id}:{self._counter}",
            "monitor_id": int(definition["id"]),
            "ts": iso(started),
            "ok": bool(ok),
            "latency_ms": None if latency is None else round(float(latency), 3),
            "status_code": status,
            "error": None if ok else (error or "failed")[:300],
        }
        self.spool.append([result])
        if len(self.spool) >= self.batch:
            self._report_wake.set()

    # -- reports and heartbeats ----------------------------------------------------------

    async def _report_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_wake.wait(), self.report_every)
            self._report_wake.clear()
            if self.client.fatal is not None:
                raise self.client.fatal
            while len(self.spool) and self.client.connected:
                size = min(self.batch, int(self.hello.get("report_max") or self.batch))
                batch = self.spool.oldest(size)
                if not await self._send(batch) or len(self.spool) < size:
                    break

    async def _send(self, batch: list[dict[str, Any]]) -> bool:
        """One PROBE_REPORT; True when the server acknowledged it (the batch is forgotten)."""
        try:
            answer = await self.client.call(PkgID.PROBE_REPORT, {"results": batch}, timeout=30.0)
        except InvalidData as exc:
            # The whole report was refused by the schema: resending it cannot help.
            log.error("the server refused a report of %d results as malformed (%s); dropped", len(batch), exc)
            self.spool.ack([r["key"] for r in batch])
            return True
        except AuthenticationFailed:
            raise
        except (ConnectionLost, RequestTimeout) as exc:
            log.info("report not acknowledged (%s); it stays in the spool", exc)
            return False
        except WatchpostError as exc:
            log.warning("report failed (%s); retrying later", exc)
            await asyncio.sleep(1.0)
            return False
        refused = answer.get("refused") or [] if isinstance(answer, dict) else []
        for item in refused:
            log.warning("result refused for monitor %s: %s", item.get("monitor_id"), item.get("reason"))
        self.refused += len(refused)
        self.reported += len(batch)
        self.spool.ack([r["key"] for r in batch])
        return True

    async def _heartbeat_loop(self) -> None:
        while True:
            interval = float(self.hello.get("heartbeat_interval") or 15.0)
            await asyncio.sleep(interval)
            if not self.client.connected:
                continue
            data = {
                "buffered": len(self.spool),
                "lag_ms": self.scheduler.lag_p50(interval) or 0.0,
                "monitors": len(self.scheduler.definitions),
            }
            try:
                await self.client.call(PkgID.PROBE_HEARTBEAT, data)
            except WatchpostError as exc:
                log.info("heartbeat failed: %s", exc)

    # -- lifecycle -------------------------------------------------------------------

    def restore(self) -> int:
        """Take up the assignments saved by an earlier run (checked until the server says otherwise)."""
        seq, definitions = assignments.load(self.spool.dir)
        if definitions:
            self.scheduler.replace(definitions)
            self.seq = seq
            log.info("resuming %d assigned monitors saved at seq %s", len(definitions), seq)
        return len(definitions)

    def save(self) -> None:
        if self._dirty:
            self._dirty = False
            assignments.save(self.spool.dir, self.seq, list(self.scheduler.definitions.values()))

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.save()

    async def run(self) -> None:
        """Check and report until :meth:`stop`; raises AuthenticationFailed for a refused token and
        PermissionDenied/InvalidData when the first PROBE_HELLO is refused."""
        self._clients = HttpClients()
        self.restore()
        self.scheduler.start()
        self._spawn(self._save_loop())
        try:
            self._spawn(self._connect_first())
            await self.stopped.wait()
            if self.fatal is not None:
                raise self.fatal
        finally:
            await self.shutdown()

    async def _connect_first(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.client.connect()
                self._spawn(self._report_loop())
                self._spawn(self._heartbeat_loop())
                return
            except (AuthenticationFailed, PermissionDenied, InvalidData):
                raise  # the same answer will come again: a wrong token or location
            except WatchpostError as exc:
                log.warning("cannot connect yet (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("probe task stopped: %s", exc)
            self.fatal = exc
            self.stopped.set()

    def stop(self) -> None:
        self.stopped.set()

    async def shutdown(self) -> None:
        await self.scheduler.stop()
        self.save()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()
        if self._clients is not None:
            await self._clients.aclose()
            self._clients = None
