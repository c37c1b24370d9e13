"""The monitor state machine: pure functions, no I/O.

The collector calls :func:`step` with a monitor's stored state and counters
and one new outcome, then writes the returned :class:`Step` back with a
compare-and-set UPDATE; when ``step.transition`` is not None it also publishes
EVENT_MONITOR_STATUS and opens or resolves an incident.

States (docs/monitoring.md has the full table):

- ``pending``: created or resumed, not enough results yet to decide.
- ``up``: ``recover_threshold`` consecutive successes (default 1).
- ``down``: ``fail_threshold`` consecutive failures (default 1). Failures below
  the threshold keep the previous state ("retrying"), they never flap to down.
- ``paused``: checks are not scheduled; counters are cleared.
- ``maintenance``: inside a maintenance window. Checks still run and counters
  still move (so the state is known the moment the window ends), but the
  visible state stays ``maintenance`` and no incident or alert is raised.
- ``degraded``: a group with at least ``min_up`` members up, but not all; or a
  check that passed with a warning (a ``warn:`` condition that did not hold, or
  a response slower than ``degraded_latency_ms``). Neither up nor down: it counts
  as up for uptime and groups, opens no incident, and alerts channels that
  subscribe to ``degraded``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class State(enum.StrEnum):
    PENDING = "pending"
    UP = "up"
    DOWN = "down"
    PAUSED = "paused"
    MAINTENANCE = "maintenance"
    DEGRADED = "degraded"


#: States that count as "up" for a group's ``min_up`` and for uptime.
UP_LIKE = frozenset({State.UP, State.DEGRADED})


@dataclass(frozen=True, slots=True)
class Step:
    """What :func:`step` decided; ``transition`` is ``(old, new)`` or None."""

    state: State
    fail_streak: int
    ok_streak: int
    transition: tuple[State, State] | None


def step(
    current: State | str,
    fail_streak: int,
    ok_streak: int,
    ok: bool | None,
    *,
    fail_threshold: int = 1,
    recover_threshold: int = 1,
    in_maintenance: bool = False,
    paused: bool = False,
    degraded: bool = False,
) -> Step:
    """Apply one outcome (``ok``; None means "no new outcome", e.g. a window
    boundary or a pause) to a monitor and return its new state and counters.

    ``degraded`` (with ``ok``): the check passed with a warning. Successes count
    towards ``recover_threshold`` whether degraded or not; once it is reached the
    state is ``degraded`` or ``up`` as the latest outcome says. A failure below
    ``fail_threshold`` keeps a degraded monitor degraded ("retrying")."""
    current = State(current)
    if paused:
        return _result(current, State.PAUSED, 0, 0)
    if ok is True:
        ok_streak, fail_streak = ok_streak + 1, 0
    elif ok is False:
        fail_streak, ok_streak = fail_streak + 1, 0
    if in_maintenance:
        return _result(current, State.MAINTENANCE, fail_streak, ok_streak)
    # Leaving pause or maintenance re-derives the state from the counters,
    # exactly like a fresh monitor, so a target that failed throughout a window
    # goes down on the first check after it.
    base = State.PENDING if current in (State.PAUSED, State.MAINTENANCE) else current
    new = base
    if fail_streak >= max(1, fail_threshold):
        new = State.DOWN
    elif ok_streak >= max(1, recover_threshold):
        if ok is None:
            new = base if base in UP_LIKE else State.UP
        else:
            new = State.DEGRADED if (ok and degraded) else State.UP
    return _result(current, new, fail_streak, ok_streak)


def _result(current: State, new: State, fail_streak: int, ok_streak: int) -> Step:
    return Step(new, fail_streak, ok_streak, None if new == current else (current, new))


def group_state(member_states: Iterable[State | str], min_up: int) -> State:
    """The derived state of a group from its members' current states.

    - ``up``: every counted member is up (or degraded, for nested groups);
    - ``degraded``: at least ``min_up`` are up, but not all;
    - ``down``: fewer than ``min_up`` are up and the pending ones cannot close the gap;
    - ``pending``: undecided (too many members still pending), or no members.

    Paused members and members in maintenance are not counted at all: pausing a
    member must not take its group down.
    """
    up = pending = counted = 0
    for raw in member_states:
        state = State(raw)
        if state in (State.PAUSED, State.MAINTENANCE):
            continue
        counted += 1
        if state in UP_LIKE:
            up += 1
        elif state == State.PENDING:
            pending += 1
    if counted == 0:
        return State.PENDING
    # Not clamped to ``counted``: with 6 of 20 members paused, "at least 16 up"
    # cannot hold, and the group must say so.
    needed = max(1, min_up)
    if up >= needed and up == counted:
        return State.UP
    if up >= needed:
        return State.DEGRADED
    if up + pending >= needed:
        return State.PENDING
    return State.DOWN
