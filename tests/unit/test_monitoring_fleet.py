"""The fleet planner and the chunk buffer of MONITOR_IMPORT, as pure functions."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.errors import InvalidData, RateLimited
from app.monitoring import fleet
from app.monitoring.definition import normalise, with_defaults
from app.monitoring.fleet_upload import Uploads

TIMEOUT_MAX = 60.0


def stored(mid: int, row: dict[str, Any]) -> fleet.Stored:
    values = normalise(with_defaults(row, timeout_max=TIMEOUT_MAX))
    return fleet.Stored(mid, row["name"], {k: values[k] for k in fleet.FIELDS})


def plan(rows: list[dict[str, Any]], have: list[fleet.Stored], **kw: Any) -> fleet.Plan:
    return fleet.plan(
        rows,
        have,
        {"ops": 7},
        delete_missing=kw.pop("delete_missing", False),
        min_interval=10,
        timeout_max=TIMEOUT_MAX,
    )


def test_groups_are_created_after_the_new_monitors_they_name() -> None:
    rows = [
        {"name": "top", "kind": "group", "members": ["mid"]},
        {"name": "mid", "kind": "group", "members": ["leaf", "old"]},
        {"name": "leaf", "kind": "push"},
    ]
    p = plan(rows, [stored(5, {"name": "old", "kind": "push"})])
    assert [[c.name for c in layer] for layer in p.create_layers()] == [["leaf"], ["mid"], ["top"]]
    mid = next(c for c in p.create if c.name == "mid")
    assert mid.values["members"] == ["leaf", 5]  # a new name, an existing id


def test_a_stored_monitor_reimported_from_its_export_is_unchanged() -> None:
    have = [
        stored(
            1,
            {
                "name": "a",
                "kind": "http",
                "url": "https://u:pw@a.invalid/",
                "interval": 20,
                "tags": ["y", "x"],
            },
        ),
        stored(2, {"name": "g", "kind": "group", "members": [1], "channels": [7]}),
    ]
    names = {1: "a", 2: "g"}
    rows = [
        fleet.to_row(
            s.definition, s.name, member_names=names, channel_names={7: "ops"}, timeout_max=TIMEOUT_MAX
        )
        for s in have
    ]
    assert rows[0] == {
        "name": "a",
        "kind": "http",
        "url": "https://***@a.invalid/",
        "interval": 20,
        "tags": ["x", "y"],
    }
    assert rows[1] == {"name": "g", "kind": "group", "members": ["a"], "channels": ["ops"]}
    p = plan(rows, have)
    assert (p.create, p.update, p.unchanged) == ([], [], 2)


def test_a_missing_field_means_its_default_and_only_differences_are_changes() -> None:
    have = [
        stored(1, {"name": "a", "kind": "http", "url": "https://a.invalid/", "interval": 20, "keyword": "ok"})
    ]
    p = plan([{"name": "a", "kind": "http", "url": "https://a.invalid/", "interval": 20}], have)
    assert [(c.name, c.changes) for c in p.update] == [("a", {"keyword": None})]


def test_delete_missing_and_references_to_deleted_monitors() -> None:
    have = [stored(1, {"name": "a", "kind": "push"}), stored(2, {"name": "b", "kind": "push"})]
    assert plan([{"name": "a", "kind": "push"}], have).delete == []
    assert [s.name for s in plan([{"name": "a", "kind": "push"}], have, delete_missing=True).delete] == ["b"]
    with pytest.raises(InvalidData) as exc:
        plan([{"name": "g", "kind": "group", "members": ["b"]}], have, delete_missing=True)
    assert exc.value.errors == [
        {
            "path": "monitors[0].members",
            "name": "g",
            "msg": "row 0 ('g'): member 'b' is not in the file and delete_missing removes it",
        }
    ]


def test_cycles_through_a_stored_group_are_refused() -> None:
    have = [
        stored(1, {"name": "a", "kind": "push"}),
        stored(2, {"name": "outer", "kind": "group", "members": [3]}),
    ]
    have.append(stored(3, {"name": "inner", "kind": "group", "members": [1]}))
    with pytest.raises(InvalidData) as exc:
        plan([{"name": "inner", "kind": "group", "members": ["a", "outer"]}], have)
    assert exc.value.errors is not None and exc.value.errors[0]["path"] == "monitors[0].members"
    assert "cycle" in exc.value.msg


def test_every_bad_row_is_listed_up_to_the_limit() -> None:
    rows = [{"name": f"m{i}", "kind": "http", "url": "ftp://x"} for i in range(30)]
    with pytest.raises(InvalidData) as exc:
        plan(rows, [])
    assert exc.value.errors is not None and len(exc.value.errors) == fleet.MAX_ERRORS
    assert exc.value.errors[3]["path"] == "monitors[3].url"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_uploads_are_bounded_in_rows_open_imports_and_idle_time() -> None:
    clock = Clock()
    up = Uploads(max_rows=5, max_bytes=1000, max_open=2, idle=10, clock=clock)
    assert up.add((1, "u"), "x", 0, 1, [1, 2], 10) == [1, 2]  # one chunk: applied at once, nothing held
    assert len(up) == 0
    assert up.add((1, "u"), "x", 0, 2, [1, 2, 3], 10) is None
    with pytest.raises(InvalidData, match="at most 5 monitors"):
        up.add((1, "u"), "x", 1, 2, [4, 5, 6], 10)
    assert len(up) == 0  # dropped
    assert up.add((1, "u"), "y", 0, 2, [1], 10) is None
    assert up.add((1, "v"), "y", 0, 2, [1], 10) is None
    with pytest.raises(RateLimited):
        up.add((2, "w"), "z", 0, 2, [1], 10)
    clock.now = 11
    assert up.add((2, "w"), "z", 0, 2, [1], 10) is None  # the idle ones expired
    with pytest.raises(InvalidData, match="from chunk 0"):
        up.add((1, "u"), "y", 1, 2, [2], 10)
    with pytest.raises(InvalidData, match="expected chunk 1 of 2"):
        up.add((2, "w"), "z", 1, 3, [2], 10)  # another chunk count
    assert up.add((3, "t"), "q", 0, 2, [1], 990) is None
    with pytest.raises(InvalidData, match="MiB of JSON"):
        up.add((3, "t"), "q", 1, 2, [2], 20)


def test_a_refusal_quotes_huge_bad_rows_only_in_part() -> None:
    from app.handlers.fleet import _check_rows

    huge = {"name": "x" * 60_000, "kind": "push", "description": "y" * 60_000}
    with pytest.raises(InvalidData) as exc:
        _check_rows([huge] * 30)  # an import may hold 8 MiB of such rows
    errors = exc.value.errors or []
    assert len(errors) == fleet.MAX_ERRORS
    assert errors[0]["path"] in ("monitors[0].name", "monitors[0].description")
    assert len(orjson.dumps(exc.value.to_data())) < 32 * 1024  # far below the 1 MiB send queue


def test_dependencies_and_policies_resolve_by_name_and_export_by_name() -> None:
    have = [stored(1, {"name": "a", "kind": "push"})]
    rows = [
        {"name": "x", "kind": "push", "depends_on": ["y", "a"], "escalation_policy": "night"},
        {"name": "y", "kind": "push", "depends_on": [1]},
    ]
    p = fleet.plan(
        rows, have, {}, delete_missing=False, min_interval=10, timeout_max=TIMEOUT_MAX, policies={"night": 3}
    )
    x, y = p.create
    assert x.values["depends_on"] == ["y", 1]  # a new name (its id comes after insert), an existing id
    assert x.values["escalation_policy"] == 3
    assert y.values["depends_on"] == [1] and y.values["covers_members"] is False
    definition = {**x.values, "depends_on": [1, 99], "escalation_policy": 3}
    row = fleet.to_row(
        definition, "x", member_names={1: "a"}, channel_names={}, policy_names={3: "night"}, timeout_max=60
    )
    # 99 is no monitor any more: a dependency on nothing is left out.
    assert (row["depends_on"], row["escalation_policy"]) == (["a"], "night")
    assert "covers_members" not in row


def test_two_monitors_depending_on_each_other_are_refused_with_a_stored_one_too() -> None:
    a = stored(1, {"name": "a", "kind": "push"})
    have = [
        fleet.Stored(1, "a", {**a.definition, "depends_on": [2]}),
        stored(2, {"name": "b", "kind": "push"}),
    ]
    with pytest.raises(InvalidData) as err:
        plan([{"name": "b", "kind": "push", "depends_on": ["a"]}], have)
    assert [e["path"] for e in err.value.errors or []] == ["monitors[0].depends_on"]
    assert "'a' depends on this monitor (a cycle)" in str(err.value)
    # A chain (c -> a -> b) is allowed, as with MONITOR_CREATE/UPDATE.
    p = plan([{"name": "b", "kind": "push"}, {"name": "c", "kind": "push", "depends_on": ["a"]}], have)
    assert [c.name for c in p.create] == ["c"] and p.unchanged == 1
