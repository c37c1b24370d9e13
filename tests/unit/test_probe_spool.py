"""The probe's spool: on disk before sending, forgotten once acknowledged, bounded, replayed in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.probe.spool import SPOOL_FILE, Spool, StateDirBusy


def _results(start: int, n: int) -> list[dict[str, object]]:
    return [
        {"key": f"run:{i}", "monitor_id": i % 7, "ts": "2026-01-01T00:00:00.000Z", "ok": True,
         "latency_ms": 1.5, "status_code": 200, "error": None}
        for i in range(start, start + n)
    ]  # fmt: skip


def _keys(results: list[dict[str, object]]) -> list[object]:
    return [r["key"] for r in results]


def test_results_come_back_oldest_first_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1000)
    assert spool.open() == 0
    spool.append(_results(0, 5))
    spool.append(_results(5, 5))
    spool.close()  # like a kill: nothing else is written on the way out

    again = Spool(tmp_path, 1000)
    assert again.open() == 10
    assert again.oldest(100) == _results(0, 10)
    assert _keys(again.oldest(3)) == ["run:0", "run:1", "run:2"]


def test_acknowledged_results_are_forgotten_on_disk_too(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1000)
    spool.open()
    spool.append(_results(0, 10))
    spool.ack(["run:0", "run:1", "run:5", "not-pending"])
    assert len(spool) == 7
    spool.close()

    again = Spool(tmp_path, 1000)
    assert again.open() == 7
    assert _keys(again.oldest(100)) == [f"run:{i}" for i in (2, 3, 4, 6, 7, 8, 9)]


def test_the_oldest_are_dropped_beyond_the_bound_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 5)
    spool.open()
    spool.append(_results(0, 3))
    spool.append(_results(3, 4))
    assert spool.dropped == 2
    assert _keys(spool.oldest(10)) == [f"run:{i}" for i in range(2, 7)]
    spool.close()

    again = Spool(tmp_path, 5)
    assert again.open() == 5  # the drop was written down
    assert _keys(again.oldest(10)) == [f"run:{i}" for i in range(2, 7)]


def test_a_smaller_bound_on_restart_keeps_the_newest(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100)
    spool.open()
    spool.append(_results(0, 10))
    spool.close()
    again = Spool(tmp_path, 4)
    assert again.open() == 4
    assert again.dropped == 6
    assert _keys(again.oldest(10)) == [f"run:{i}" for i in range(6, 10)]


def test_a_torn_last_line_is_skipped_and_everything_before_it_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100)
    spool.open()
    spool.append(_results(0, 3))
    spool.close()
    with (tmp_path / SPOOL_FILE).open("ab") as fh:
        fh.write(b'{"r":{"key":"run:3","monitor_')  # killed in the middle of a write

    again = Spool(tmp_path, 100)
    assert again.open() == 3
    again.append(_results(4, 1))
    again.close()
    third = Spool(tmp_path, 100)
    assert third.open() == 4  # the torn line did not swallow the next one (compacted away on open)
    assert _keys(third.oldest(10)) == ["run:0", "run:1", "run:2", "run:4"]


def test_the_file_is_compacted_once_acknowledgements_outgrow_what_is_pending(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100_000)
    spool.open()
    for start in range(0, 30_000, 200):
        batch = _results(start, 200)
        spool.append(batch)
        spool.ack([str(k) for k in _keys(batch)])
    spool.append(_results(30_000, 3))
    # Without compaction the file would hold 30,000 results and their acks (over 4 MB).
    assert spool.file_size() < 2_000_000
    spool.close()
    again = Spool(tmp_path, 100_000)
    assert again.open() == 3


def test_two_probes_cannot_share_a_state_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path, 10)
    first.open()
    with pytest.raises(StateDirBusy, match="another probe"):
        Spool(tmp_path, 10).open()
    first.close()
    second = Spool(tmp_path, 10)
    second.open()  # free again once the first one is gone
    second.close()


def test_a_bound_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Spool(tmp_path, 0)


def test_assignments_are_saved_privately_and_read_back(tmp_path: Path) -> None:
    from app.probe import assignments

    assert assignments.load(tmp_path) == (None, [])
    definitions = [{"id": 3, "kind": "http", "url": "https://x.invalid/", "headers": {"Authorization": "s"}}]
    assignments.save(tmp_path, 42, definitions)
    assert assignments.load(tmp_path) == (42, definitions)
    assert (tmp_path / assignments.ASSIGNMENTS_FILE).stat().st_mode & 0o077 == 0  # it holds secrets
    (tmp_path / assignments.ASSIGNMENTS_FILE).write_bytes(b'{"seq": 4')  # damaged
    assert assignments.load(tmp_path) == (None, [])


def test_the_spool_file_is_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10)
    spool.open()
    spool.append(_results(0, 1))
    assert (tmp_path / SPOOL_FILE).stat().st_mode & 0o077 == 0
    spool.close()
