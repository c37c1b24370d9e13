"""Start and stop the monitoring background work from the app lifespan.

``create_app``'s ``_start_components`` calls :func:`start_monitoring`, and
``_stop_components`` calls :func:`stop_monitoring`. With ``COLLECTOR_ENABLED``
off (API-only instances) nothing is started; handlers still work, and
CHECK_NOW still runs checks inline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from app.monitoring.collector import Collector
from app.monitoring.retention import housekeeping_loop

if TYPE_CHECKING:
    from app.context import Services

log = logging.getLogger("watchpost.monitoring")


async def start_monitoring(services: Services) -> None:
    settings = services.settings
    if not settings.collector_enabled:
        log.info("collector disabled (COLLECTOR_ENABLED=false): this instance runs no checks")
        return
    collector = Collector(
        services.db,
        services.events,
        concurrency=settings.collector_concurrency,
        tick=settings.collector_tick,
        lease_margin=settings.collector_lease_seconds,
        jitter=settings.collector_jitter,
        timeout_max=settings.check_timeout_max,
        max_body_bytes=settings.check_max_body_bytes,
        probe_grace=settings.probe_grace,
    )
    await collector.start()
    services.collector = collector
    services.housekeeping = asyncio.create_task(
        housekeeping_loop(
            services.db,
            every=float(settings.rollup_interval),
            retention=timedelta(days=settings.retention_days),
        ),
        name="monitoring-housekeeping",
    )


async def stop_monitoring(services: Services) -> None:
    task, services.housekeeping = services.housekeeping, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    collector, services.collector = services.collector, None
    if collector is not None:
        await collector.stop()
