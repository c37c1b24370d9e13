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
from typing import Any

from app.monitoring.collector import Collector
from app.monitoring.retention import housekeeping_loop

log = logging.getLogger("watchpost.monitoring")


def _setting(settings: Any, name: str, default: Any) -> Any:
    return getattr(settings, name, default)


async def start_monitoring(services: Any) -> None:
    settings = services.settings
    if not settings.collector_enabled:
        log.info("collector disabled (COLLECTOR_ENABLED=false): this instance runs no checks")
        return
    collector = Collector(
        services.db,
        services.events,
        concurrency=settings.collector_concurrency,
        tick=float(_setting(settings, "collector_tick", 1.0)),
        lease_margin=float(_setting(settings, "collector_lease_seconds", 30.0)),
        jitter=float(_setting(settings, "collector_jitter", 10.0)),
        timeout_max=float(settings.check_timeout_max),
        max_body_bytes=int(settings.check_max_body_bytes),
    )
    await collector.start()
    services.extras["collector"] = collector
    services.extras["monitoring_housekeeping"] = asyncio.create_task(
        housekeeping_loop(
            services.db,
            every=float(_setting(settings, "rollup_interval", 300)),
            retention=timedelta(days=settings.retention_days),
        ),
        name="monitoring-housekeeping",
    )


async def stop_monitoring(services: Any) -> None:
    task = services.extras.pop("monitoring_housekeeping", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    collector = services.extras.pop("collector", None)
    if collector is not None:
        await collector.stop()
