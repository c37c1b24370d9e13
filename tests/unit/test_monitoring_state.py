"""The pure state machine and group rule (no I/O)."""

from __future__ import annotations

import pytest

from app.monitoring.state import State, group_state, step


def run(
    outcomes: list[bool], *, fail: int = 1, recover: int = 1, start: State = State.PENDING
) -> list[State]:
    state, fails, oks = start, 0, 0
    seen = []
    for ok in outcomes:
        result = step(state, fails, oks, ok, fail_threshold=fail, recover_threshold=recover)
        state, fails, oks = result.state, result.fail_streak, result.ok_streak
        seen.append(state)
    return seen


def test_defaults_decide_on_first_result() -> None:
    assert run([True]) == [State.UP]
    assert run([False]) == [State.DOWN]


def test_down_only_after_fail_threshold_consecutive_failures() -> None:
    assert run([True, False, False, True, False, False, False], fail=3) == [
        State.UP,
        State.UP,
        State.UP,
        State.UP,
        State.UP,
        State.UP,
        State.DOWN,
    ]


def test_up_only_after_recover_threshold_successes() -> None:
    assert run([False, True, True, False, True, True], recover=2) == [
        State.DOWN,
        State.DOWN,
        State.UP,
        State.DOWN,
        State.DOWN,
        State.UP,
    ]


def test_transition_reported_once() -> None:
    first = step(State.UP, 0, 5, False)
    assert first.transition == (State.UP, State.DOWN)
    second = step(first.state, first.fail_streak, first.ok_streak, False)
    assert second.transition is None and second.state == State.DOWN


def test_pause_clears_counters_and_resume_is_pending_logic() -> None:
    paused = step(State.DOWN, 4, 0, None, paused=True)
    assert paused.state == State.PAUSED and paused.transition == (State.DOWN, State.PAUSED)
    assert (paused.fail_streak, paused.ok_streak) == (0, 0)
    after = step(State.PAUSED, 0, 0, True, recover_threshold=2)
    assert after.state == State.PENDING and after.transition == (State.PAUSED, State.PENDING)


def test_maintenance_hides_failures_but_keeps_counting() -> None:
    inside = step(State.UP, 0, 3, False, in_maintenance=True)
    assert inside.state == State.MAINTENANCE and inside.fail_streak == 1
    still = step(
        inside.state, inside.fail_streak, inside.ok_streak, False, in_maintenance=True, fail_threshold=2
    )
    assert still.state == State.MAINTENANCE and still.transition is None
    # The window ends while the target is still failing: down at once.
    out = step(still.state, still.fail_streak, still.ok_streak, False, fail_threshold=2)
    assert out.transition == (State.MAINTENANCE, State.DOWN)


def test_window_end_without_outcome_reports_undecided_as_pending() -> None:
    out = step(State.MAINTENANCE, 0, 0, None)
    assert out.state == State.PENDING


@pytest.mark.parametrize(
    ("members", "min_up", "expected"),
    [
        (["up", "up", "up"], 2, State.UP),
        (["up", "up", "down"], 2, State.DEGRADED),
        (["up", "down", "down"], 2, State.DOWN),
        (["up", "pending", "down"], 2, State.PENDING),
        (["pending", "pending"], 1, State.PENDING),
        ([], 1, State.PENDING),
        (["up", "paused", "up"], 2, State.UP),
        (["up", "paused", "paused"], 2, State.DOWN),
        (["degraded", "up"], 2, State.UP),
        (["maintenance", "down", "up"], 1, State.DEGRADED),
    ],
)
def test_group_rule(members: list[str], min_up: int, expected: State) -> None:
    assert group_state(members, min_up) == expected


def test_sixteen_orchestrators_rule() -> None:
    members = ["up"] * 16 + ["down"] * 4
    assert group_state(members, 16) == State.DEGRADED
    members[0] = "down"
    assert group_state(members, 16) == State.DOWN
