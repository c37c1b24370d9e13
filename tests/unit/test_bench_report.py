"""The bench's bookkeeping, which judges every run: percentiles, the fan-out tracker, the
integrity targets and the results file (the smoke run itself: tests/test_bench_smoke.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.bench.connect import FRESH_JWT
from app.bench.fanout import _Tracker
from app.bench.report import baseline_summary, evaluate, integrity_problems, markdown
from app.bench.stats import percentile, summarize_ns


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([], 0.5) == 0
    summary = summarize_ns([1_000_000, 2_000_000, 30_000_000])
    assert summary["p50_ms"] == 2.0 and summary["max_ms"] == 30.0
    assert sum(summary["histogram"].values()) == 3


def test_fanout_tracker_counts_duplicates_and_strays() -> None:
    tracker = _Tracker(subscribers=2, event_pkg_id=902, topic="monitors")
    tracker.current = None
    event = b'{"pkg_id":902,"req_id":null,"status_code":0,"topic":"monitors","seq":7,"data":{}}'
    tracker.on_frame(0, event)  # no round in progress: stray
    assert tracker.stray == 1
    tracker.on_frame(0, event)  # same seq again on the same subscriber: duplicate
    assert tracker.duplicated == 1
    tracker.on_frame(1, b'{"pkg_id":900,"req_id":null,"status_code":0,"topic":"monitors","seq":8,"data":{}}')
    assert tracker.stray == 2


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"lost": 3, "duplicated_or_unexpected": 0, "errors": 0}, "lost=3"),
        ({"lost": 0, "duplicated_or_unexpected": 2, "errors": 0}, "duplicated_or_unexpected=2"),
        ({"lost": 0, "duplicated_or_unexpected": 0, "errors": 1}, "errors=1"),
    ],
)
def test_any_loss_or_error_fails_the_integrity_target(row: dict[str, int], expected: str) -> None:
    scenarios = {
        "rpc": {"echo": [], "watchpost": [{"operation": "ping", "connections": 2, "in_flight": 2, **row}]}
    }
    problems = list(integrity_problems(scenarios))
    assert len(problems) == 1 and expected in problems[0]
    (verdict,) = evaluate(scenarios)
    assert verdict["met"] is False


def test_results_show_a_baseline_and_notes(tmp_path: Path) -> None:
    """--baseline puts each target's earlier value beside the new one; --notes is copied in."""

    def results(p99: float, commit: str) -> dict[str, object]:
        scenarios = {
            "fanout": {
                "echo": [],
                "watchpost": [
                    {
                        "subscribers": 5000,
                        "delivered": 10,
                        "expected": 10,
                        "duplicated": 0,
                        "timed_out_rounds": 0,
                        "time_to_last_delivery": {"p99_ms": p99},
                    }
                ],
            }
        }
        return {
            "started_at": "2026-11-22T00:00:00Z",
            "command": "python -m app.bench",
            "machine": {
                "nproc": 2,
                "cpu_model": "cpu",
                "memory_gib": 1,
                "kernel": "k",
                "python": "3.11",
                "git_commit": commit,
                "load_average_at_start": [0, 0, 0],
            },
            "settings": {"plan": {"name": "full"}, "cpus": "pinned"},
            "elapsed_s": 1.0,
            "scenarios": {},  # the tables are not under test here, only the targets
            "targets": evaluate(scenarios),
            "errors": [],
        }

    before = tmp_path / "before.json"
    before.write_text(json.dumps(results(759.2, "aaaaaaa")))
    after = results(162.0, "bbbbbbb")
    after["baseline"] = baseline_summary(before)
    after["notes"] = "## Profiling\n\ngc.freeze: 759 -> 162 ms"
    text = markdown(after)
    (row,) = [line for line in text.splitlines() if line.startswith("| fanout to 5000")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "p99_ms 759.2" in cells[2] and cells[3] == "**NO**", cells
    assert "p99_ms 162.0" in cells[4] and cells[5] == "yes", cells
    assert "commit aaaaaaa" in text and "## Profiling" in text and "759 -> 162 ms" in text


def test_connect_is_judged_by_its_slowest_credential() -> None:
    """The connect target needs every credential kind at 1,000 handshakes/s, not the fastest one."""

    def row(credential: str, rate: float, connections: int = 1000) -> dict[str, object]:
        return {
            "credential": credential,
            "connections": connections,
            "concurrency": 8,
            "elapsed_s": 0.1,
            "handshakes_per_s": rate,
            "server_cpu_us_per_handshake": 500.0,
            "capacity_per_core_s": 2000,
        }

    def verdict(jwt: float, api: float, fresh: float = 400) -> dict[str, object]:
        scenarios = {
            "connect": {
                "echo": row("none (echo)", 3000),
                "watchpost": [row("local JWT", jwt), row("API token", api), row(FRESH_JWT, fresh)],
            }
        }
        (check, integrity) = evaluate(scenarios)
        assert integrity["met"] is True
        return check

    # The uncached row is reported beside the verdict, not judged.
    passed = verdict(1200, 1100)
    assert passed["met"] is True and "400/s uncached" in str(passed["detail"])
    failed = verdict(1200, 900)
    assert failed["met"] is False and failed["measured"] == {"local JWT": 1200, "API token": 900}
    text = markdown(
        {
            "started_at": "2026-12-05T00:00:00Z",
            "command": "python -m app.bench --scenario connect",
            "elapsed_s": 1,
            "machine": {
                k: "-"
                for k in (
                    "nproc",
                    "cpu_model",
                    "memory_gib",
                    "kernel",
                    "python",
                    "git_commit",
                    "load_average_at_start",
                )
            },
            "settings": {"plan": {"name": "smoke"}, "cpus": "-"},
            "targets": [failed],
            "scenarios": {
                "connect": {"echo": row("none (echo)", 3000), "watchpost": [row("API token", 900)]}
            },
        }
    )
    assert "## connect" in text and "| watchpost | API token | 1000 | 8 | 900 |" in text
    # A smoke-sized run (a few handshakes) measures start-up, not a rate: no verdict.
    smoke = {"echo": row("none (echo)", 30, 20), "watchpost": [row("local JWT", 10, 20)]}
    assert [t["target"] for t in evaluate({"connect": smoke})] == ["nothing lost or duplicated; no errors"]


def _summary_row(**change: object) -> dict[str, object]:
    row: dict[str, object] = {
        "monitors": 10000,
        "total_reported": 10000,
        "received": 10000,
        "distinct": 10000,
        "pages": 5,
        "bytes": 1_900_000,
        "bytes_per_monitor": 190.0,
        "first_page_ms": 25.0,
        "complete_ms": 100.0,
        "server_cpu_ms": 60.0,
        "open_after": True,
    }
    return row | change


@pytest.mark.parametrize(
    ("change", "met"),
    [
        ({}, True),
        ({"received": 9999, "distinct": 9999}, False),  # a monitor missing
        ({"received": 10001}, False),  # a monitor twice (a page boundary repeated)
        ({"total_reported": 9000}, False),  # the whole-tenant total disagrees
        ({"open_after": False}, False),  # closed as a slow consumer
        ({"first_page_ms": 2500.0}, False),  # the dashboard waits too long for its first rows
    ],
)
def test_summary_needs_every_monitor_once_on_an_open_connection_fast(
    change: dict[str, object], met: bool
) -> None:
    scenarios = {"summary": {"watchpost": [_summary_row(**change)]}}
    check, integrity = evaluate(scenarios)
    assert check["target"] == "STATUS_SUMMARY at 10000 monitors"
    assert check["met"] is met, check
    assert integrity["met"] is True
    assert "| 10000 | " in markdown(
        {
            "started_at": "2026-12-05T00:00:00Z",
            "command": "python -m app.bench --scenario summary",
            "machine": {
                "nproc": 2,
                "cpu_model": "cpu",
                "memory_gib": 1,
                "kernel": "k",
                "python": "3.11",
                "git_commit": "c",
                "load_average_at_start": [0, 0, 0],
            },
            "settings": {"plan": {"name": "quick"}, "cpus": "pinned"},
            "elapsed_s": 1.0,
            "scenarios": scenarios,
            "targets": [check, integrity],
            "errors": [],
        }
    )


@pytest.mark.parametrize(
    ("codes", "recovered", "replayed", "met"),
    [
        ({"0": 3000}, 3000, 3000, True),
        ({"0": 102, "10": 2898}, 102, 102, False),  # the failure: UNAVAILABLE from the pool
        ({"0": 2999, "no answer": 1}, 2999, 2999, False),  # one never answered
        ({"0": 3000}, 2990, 2990, False),  # answered 0 but without recovery
        ({"0": 3000}, 3000, 2999, False),  # recovered but replayed the wrong events
    ],
)
def test_storm_needs_every_subscribe_answered_0_and_recovered(
    codes: dict[str, int], recovered: int, replayed: int, met: bool
) -> None:
    row = {
        "subscribers": 3000,
        "missed_events": 3,
        "answers_by_code": codes,
        "answered_0": codes.get("0", 0),
        "recovered": recovered,
        "replayed_exactly": replayed,
        "all_answered_s": 0.4,
        "answer_time": {"p50_ms": 290.0, "p99_ms": 370.0},
        "server_cpu_s": 0.4,
        "not_ok_samples": [],
    }
    check, integrity = evaluate({"storm": {"watchpost": [row]}})
    assert check["met"] is met, check
    assert check["target"].startswith("storm: 3000 simultaneous SUBSCRIBEs")
    assert integrity["met"] is True


@pytest.mark.parametrize(
    ("answers", "lost", "duplicated", "met", "integrity"),
    [
        ({"0": 2500, "recovered": 2500}, 0, 0, True, True),
        ({"0": 2400, "10": 100, "recovered": 2400}, 0, 0, False, True),  # UNAVAILABLE on resubscribe
        ({"0": 2500, "recovered": 2000}, 0, 0, False, True),  # the history no longer covered the gap
        ({"0": 2500, "recovered": 2500}, 3, 0, False, False),  # an event missed across the move
        ({"0": 2500, "recovered": 2500}, 0, 2, False, False),  # an event delivered twice
    ],
)
def test_storm_drain_needs_every_moved_client_resubscribed_with_nothing_lost(
    answers: dict[str, int], lost: int, duplicated: int, met: bool, integrity: bool
) -> None:
    drain = {
        "subscribers": 5000,
        "moved": 2500,
        "events": 20,
        "close_codes": {"1001": 2500},
        "resubscribe_answers": answers,
        "all_resubscribed_s": 4.6,
        "resubscribed": {"p50_ms": 2000.0, "p99_ms": 4500.0},
        "lost": lost,
        "duplicated": duplicated,
    }
    check, verdict = evaluate({"storm": {"watchpost": [], "drain": drain}})
    assert check["target"] == "storm: drain 1 of 2 instances, 2500 of 5000 subscribers move"
    assert check["met"] is met, check
    assert verdict["met"] is integrity, verdict


def test_probes_targets_need_due_checks_kept_and_every_report_accepted() -> None:
    lag = summarize_ns([5_000_000, 9_000_000])
    probe = {"monitors": 1000, "interval_s": 60, "checks_per_s": 16.5, "due_per_s": 16.7,
             "probe_cpu_share": 0.12, "start_lag": lag}  # fmt: skip
    answer = summarize_ns([3_000_000, 40_000_000])
    server = {"probes": 20, "monitors_per_probe": 1000, "interval_s": 60, "due_results_per_s": 333.3,
              "results_per_s": 333.0, "accepted": 9990, "sent": 9990, "server_cpu_share": 0.3,
              "report_answer": answer, "kept_up": True}  # fmt: skip
    checks = [
        c for c in evaluate({"probes": {"probe": [probe], "server": [server]}}) if "probes" in c["target"]
    ]
    assert [c["met"] for c in checks] == [True, True]
    slow = {**probe, "checks_per_s": 12.0}
    behind = {**server, "kept_up": False}
    checks = [
        c for c in evaluate({"probes": {"probe": [slow], "server": [behind]}}) if "probes" in c["target"]
    ]
    assert [c["met"] for c in checks] == [False, False]
    assert checks[0]["target"] == "probes: one probe, 1000 HTTP monitors at 60 s"
