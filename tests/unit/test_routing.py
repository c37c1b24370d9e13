"""PackageRouter.dispatch without a server: the real router, Context, Policy and error tree,
with the database session and the services object stood in by tests.unit.fakes.

Each case registers small test packages (ids 9001+, outside the real registry) and reads the
one encoded response that dispatch returns, plus what reached the fake database and bus.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
import pytest

from app import errors
from app.context import Context
from app.models.audit import AuditEntry
from app.protocol import Request, RSPCode
from app.rbac import Policy, load_policy
from app.routing import PackageRouter, obj
from app.schema_errors import MAX_ERRORS
from app.storage.pagination import Page
from tests.unit.fakes import FakeServices, context, identity, router_with

ECHO, OPEN, RAISE, BOOM, LIST, WIDE, AUDITED, AUDITED_TX, QUIET = range(9001, 9010)
WIDE_FIELDS = 30

# Every exception of the error tree, with the status its class promises the client.
ERROR_CODES: dict[type[errors.WatchpostError], RSPCode] = {
    errors.WatchpostError: RSPCode.ERROR,
    errors.InvalidData: RSPCode.INVALID_DATA,
    errors.PermissionDenied: RSPCode.PERMISSION_DENIED,
    errors.NotFound: RSPCode.NOT_FOUND,
    errors.Conflict: RSPCode.CONFLICT,
    errors.RateLimited: RSPCode.RATE_LIMITED,
    errors.Unauthenticated: RSPCode.UNAUTHENTICATED,
    errors.Unavailable: RSPCode.UNAVAILABLE,
}
BY_NAME = {cls.__name__: cls for cls in ERROR_CODES}


def _build() -> tuple[FakeServices, list[str]]:
    """A router with the test packages; ``calls`` records which handlers ran."""
    router = PackageRouter()
    calls: list[str] = []

    @router.package(ECHO, schema=obj({"n": {"type": "integer", "minimum": 1}}, ["n"]))
    async def echo(req: Request, ctx: Context) -> dict[str, Any]:
        calls.append("echo")
        return {"n": req.data["n"]}

    @router.package(OPEN)
    async def open_(req: Request, ctx: Context) -> dict[str, Any]:
        calls.append("open")
        return {"role": ctx.identity.role}

    @router.package(RAISE, schema=obj({"kind": {"type": "string"}}, ["kind"]))
    async def raise_(req: Request, ctx: Context) -> None:
        calls.append("raise")
        cls = BY_NAME[req.data["kind"]]
        raise cls(f"{cls.__name__} says what to do", errors=[{"path": "x", "msg": "x: bad"}], hint=1)

    @router.package(BOOM)
    async def boom(req: Request, ctx: Context) -> None:
        calls.append("boom")
        raise RuntimeError("connection to postgres://app:hunter2@db failed")

    @router.package(LIST)
    async def list_(req: Request, ctx: Context) -> Page:
        return Page(items=[{"id": 1}, {"id": 2}], meta={"page": 1, "per_page": 2, "total": 5})

    fields = {f"f{i:02d}": {"type": "integer"} for i in range(WIDE_FIELDS)}

    @router.package(WIDE, schema=obj(fields, list(fields)))
    async def wide(req: Request, ctx: Context) -> None:
        calls.append("wide")

    @router.package(AUDITED, audit=True, schema=obj({"fail": {"type": "string"}}))
    async def audited(req: Request, ctx: Context) -> dict[str, Any]:
        ctx.audit_target = "17"
        ctx.audit_details = {"name": "db"}
        fail = req.data.get("fail")
        if fail == "conflict":
            raise errors.Conflict("name taken; choose another")
        if fail == "crash":
            raise ZeroDivisionError
        return {"done": True}

    @router.package(AUDITED_TX, audit=True, schema=obj({"fail": {"type": "boolean"}}))
    async def audited_tx(req: Request, ctx: Context) -> dict[str, Any]:
        async with ctx.tx() as session:
            session.add("monitor row")
            ctx.publish("monitors", 900, {"id": 17})
            if req.data.get("fail"):
                raise errors.NotFound("monitor 17 not found")
        return {"id": 17}

    @router.package(QUIET)
    async def quiet(req: Request, ctx: Context) -> dict[str, Any]:
        return {}

    real = load_policy()
    policy = Policy(
        roles=real.roles,
        ws={
            ECHO: "viewer",
            OPEN: "authenticated",
            RAISE: "viewer",
            BOOM: "viewer",
            LIST: "viewer",
            WIDE: "viewer",
            AUDITED: "editor",
            AUDITED_TX: "editor",
            QUIET: "viewer",
        },
        topics=real.topics,
    )
    return router_with(policy, router), calls


async def _dispatch(
    services: FakeServices, pkg_id: int, data: dict[str, Any] | None = None, role: str | None = "editor"
) -> dict[str, Any]:
    req = Request(pkg_id=pkg_id, req_id=str(uuid.uuid4()), data=data or {})
    raw = await services.router.dispatch(req, context(services, req, identity(role)))
    body: dict[str, Any] = orjson.loads(raw)
    assert (body["pkg_id"], body["req_id"]) == (pkg_id, req.req_id), "every answer names its request"
    return body


def _audit_rows(services: FakeServices) -> list[AuditEntry]:
    return [row for row in services.db.committed_rows() if isinstance(row, AuditEntry)]


async def test_a_valid_request_is_answered_ok_with_the_handlers_data() -> None:
    services, calls = _build()
    body = await _dispatch(services, ECHO, {"n": 3})
    assert (body["status_code"], body["data"], calls) == (RSPCode.OK, {"n": 3}, ["echo"])
    assert "meta" not in body


async def test_an_unknown_pkg_id_is_6_naming_the_id() -> None:
    services, _ = _build()
    body = await _dispatch(services, 9999)
    assert body["status_code"] == RSPCode.UNKNOWN_PKG_ID
    assert body["data"] == {"msg": "unknown pkg_id 9999"}


async def test_a_role_below_the_packages_is_3_naming_both_roles() -> None:
    services, calls = _build()
    body = await _dispatch(services, AUDITED, role="viewer")
    assert body["status_code"] == RSPCode.PERMISSION_DENIED
    assert body["data"]["msg"] == "AUDITED needs role 'editor'; you have 'viewer'"
    no_tenant = await _dispatch(services, ECHO, {"n": 1}, role=None)
    assert no_tenant["status_code"] == RSPCode.PERMISSION_DENIED
    assert no_tenant["data"]["msg"] == "ECHO needs role 'viewer'; you have None"
    assert calls == [], "a refused request never reaches its handler"
    assert _audit_rows(services) == []


async def test_an_authenticated_package_needs_no_tenant_role() -> None:
    services, _ = _build()
    body = await _dispatch(services, OPEN, role=None)
    assert (body["status_code"], body["data"]) == (RSPCode.OK, {"role": None})


async def test_schema_errors_are_2_and_the_list_is_bounded() -> None:
    services, calls = _build()
    body = await _dispatch(services, ECHO, {"n": 0})
    assert body["status_code"] == RSPCode.INVALID_DATA
    assert body["data"]["msg"] == "invalid data for ECHO: n: 0 is less than the minimum of 1"
    assert body["data"]["errors"] == [{"path": "n", "msg": "n: 0 is less than the minimum of 1"}]

    wide = await _dispatch(services, WIDE, {})
    assert wide["status_code"] == RSPCode.INVALID_DATA
    assert len(wide["data"]["errors"]) == MAX_ERRORS < WIDE_FIELDS, "the answer never grows with the mistakes"
    assert wide["data"]["msg"] == "invalid data for WIDE: 'f00' is a required property"
    assert calls == []


@pytest.mark.parametrize("cls", list(ERROR_CODES), ids=lambda cls: cls.__name__)
async def test_each_error_of_the_tree_is_answered_with_its_code(cls: type[errors.WatchpostError]) -> None:
    services, _ = _build()
    body = await _dispatch(services, RAISE, {"kind": cls.__name__})
    assert body["status_code"] == ERROR_CODES[cls] == cls.code
    assert body["data"] == {
        "msg": f"{cls.__name__} says what to do",
        "errors": [{"path": "x", "msg": "x: bad"}],
        "hint": 1,
    }


def test_the_cases_cover_the_whole_error_tree() -> None:
    def tree(cls: type[errors.WatchpostError]) -> set[type[errors.WatchpostError]]:
        return {cls}.union(*(tree(sub) for sub in cls.__subclasses__()))

    assert tree(errors.WatchpostError) == set(ERROR_CODES)


async def test_an_unexpected_exception_is_1_quoting_the_req_id_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    services, _ = _build()
    with caplog.at_level(logging.ERROR, logger="watchpost.router"):
        body = await _dispatch(services, BOOM)
    assert body["status_code"] == RSPCode.ERROR
    assert body["data"] == {"msg": f"internal error; quote req_id {body['req_id']} to the operator"}
    assert "hunter2" not in orjson.dumps(body).decode()
    logged = [r for r in caplog.records if body["req_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None, "the operator finds the traceback by req_id"


async def test_a_page_result_is_answered_with_its_meta() -> None:
    services, _ = _build()
    body = await _dispatch(services, LIST)
    assert body["status_code"] == RSPCode.OK
    assert body["data"] == [{"id": 1}, {"id": 2}]
    assert body["meta"] == {"page": 1, "per_page": 2, "total": 5}


async def test_an_audited_success_writes_one_row_saying_who_did_what() -> None:
    services, _ = _build()
    body = await _dispatch(services, AUDITED)
    assert body["status_code"] == RSPCode.OK
    [row] = _audit_rows(services)
    assert (row.action, row.pkg_id, row.status_code) == (str(AUDITED), AUDITED, 0)
    assert (row.actor, row.tenant_id, row.req_id) == ("user:ada", 7, body["req_id"])
    assert (row.target_id, row.details, row.client_addr) == ("17", {"name": "db"}, "203.0.113.9")


@pytest.mark.parametrize(
    ("fail", "code"), [("conflict", RSPCode.CONFLICT), ("crash", RSPCode.ERROR)], ids=["error", "crash"]
)
async def test_an_audited_failure_writes_one_row_with_the_answered_code(fail: str, code: RSPCode) -> None:
    services, _ = _build()
    body = await _dispatch(services, AUDITED, {"fail": fail})
    assert body["status_code"] == code
    [row] = _audit_rows(services)
    assert (row.status_code, row.req_id, row.target_id) == (code, body["req_id"], "17")


async def test_a_transaction_audits_once_and_publishes_after_its_commit() -> None:
    services, _ = _build()
    body = await _dispatch(services, AUDITED_TX)
    assert body["status_code"] == RSPCode.OK
    [tx] = services.db.sessions
    assert tx.committed and tx.added[0] == "monitor row"
    assert [row.status_code for row in _audit_rows(services)] == [0], "in the transaction, not again after"
    assert services.events.published == [(7, "monitors", 900, {"id": 17})]


async def test_a_failed_transaction_rolls_back_publishes_nothing_and_audits_the_failure() -> None:
    services, _ = _build()
    body = await _dispatch(services, AUDITED_TX, {"fail": True})
    assert body["status_code"] == RSPCode.NOT_FOUND
    assert body["data"] == {"msg": "monitor 17 not found"}
    tx = services.db.sessions[0]
    assert tx.rolled_back and not tx.committed
    assert "monitor row" not in services.db.committed_rows()
    assert [row.status_code for row in _audit_rows(services)] == [RSPCode.NOT_FOUND]
    assert services.events.published == []


async def test_a_package_that_is_not_audited_writes_nothing() -> None:
    services, _ = _build()
    for pkg_id, data in ((QUIET, {}), (ECHO, {"n": 1}), (BOOM, {}), (RAISE, {"kind": "Conflict"})):
        await _dispatch(services, pkg_id, data)
    assert services.db.sessions == []


async def test_every_request_that_reaches_a_handler_is_timed() -> None:
    services, _ = _build()
    timed: list[int] = []
    services.router.on_handled = lambda pkg_id, seconds: timed.append(pkg_id)
    await _dispatch(services, ECHO, {"n": 1})
    await _dispatch(services, BOOM)
    await _dispatch(services, ECHO, {"n": 0})
    await _dispatch(services, 9999)
    assert timed == [ECHO, BOOM]
