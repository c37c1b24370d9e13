"""PackageRouter: pkg_id → handler, with RBAC and a JSON Schema compiled once.

Handler modules in ``app.handlers`` each build a router and register packages::

    router = PackageRouter()

    @router.package(PkgID.PING, schema=obj({}))
    async def ping(req: Request, ctx: Context) -> dict[str, Any]:
        return {"pong": True}

``app.handlers.build_router`` includes them all into one. A handler returns the
response ``data`` (or a :class:`~app.storage.pagination.Page` to add ``meta``)
and raises :mod:`app.errors` exceptions for failures; ``dispatch`` maps those to
an ``RSPCode`` here and nowhere else. Dispatch never trusts client text beyond a
dict lookup of the integer id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fastjsonschema
from jsonschema import Draft202012Validator

from app.auth.identity import PAGE_VIEWER
from app.errors import WatchpostError
from app.ids import ID, MAX_ID, VERSION
from app.protocol import PkgID, Request, RSPCode, encode_response
from app.rbac import PAGE_VIEWER_PACKAGES
from app.schema_errors import BoundedValidator, schema_errors
from app.storage.pagination import Page

if TYPE_CHECKING:
    from app.context import Context
    from app.rbac import Policy

log = logging.getLogger("watchpost.router")

Handler = Callable[["Request", "Context"], Awaitable[Any]]


# Handlers take the id schemas from here, next to obj(); they live in app.ids.
__all__ = ["ID", "MAX_ID", "VERSION", "PackageRouter", "obj"]


def obj(
    properties: dict[str, Any], required: Iterable[str] = (), *, additional: bool = False
) -> dict[str, Any]:
    """Shorthand for an object schema (no unknown keys unless ``additional``)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": additional}
    req = list(required)
    if req:
        schema["required"] = req
    return schema


@dataclass(slots=True)
class PackageSpec:
    pkg_id: int
    name: str
    handler: Handler
    schema: dict[str, Any] | None
    #: None when the schema accepts anything (validation skipped on the hot path).
    validator: SchemaCheck | None
    #: Mutating packages write an audit row.
    audit: bool
    #: Example response data, for the generated protocol reference.
    response_example: Any = None
    summary: str = ""


class DuplicatePackage(RuntimeError):
    pass


class PackageRouter:
    def __init__(self) -> None:
        self._specs: dict[int, PackageSpec] = {}
        self.policy: Policy | None = None
        #: Optional hook called with (pkg_id, seconds) after each dispatch (metrics).
        self.on_handled: Callable[[int, float], None] | None = None

    def package(
        self,
        pkg_id: int,
        *,
        schema: dict[str, Any] | None = None,
        audit: bool = False,
        response_example: Any = None,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated coroutine for ``pkg_id``; the schema is checked and compiled now."""

        def decorator(fn: Handler) -> Handler:
            self._add(
                PackageSpec(
                    pkg_id=int(pkg_id),
                    name=_name(pkg_id, fn),
                    handler=fn,
                    schema=schema,
                    validator=_compile(schema),
                    audit=audit,
                    response_example=response_example,
                    summary=(fn.__doc__ or "").strip().split("\n")[0],
                )
            )
            return fn

        return decorator

    def _add(self, spec: PackageSpec) -> None:
        if spec.pkg_id in self._specs:
            other = self._specs[spec.pkg_id].handler
            raise DuplicatePackage(
                f"pkg_id {spec.pkg_id} registered twice: {other.__module__}.{other.__qualname__} "
                f"and {spec.handler.__module__}.{spec.handler.__qualname__}"
            )
        self._specs[spec.pkg_id] = spec

    def include(self, other: PackageRouter) -> None:
        for spec in other._specs.values():
            self._add(spec)

    @property
    def specs(self) -> dict[int, PackageSpec]:
        return dict(self._specs)

    def is_audited(self, pkg_id: int) -> bool:
        spec = self._specs.get(pkg_id)
        return spec is not None and spec.audit

    async def dispatch(self, req: Request, ctx: Context) -> bytes:
        """Answer one request; always returns exactly one encoded response."""
        spec = self._specs.get(req.pkg_id)
        if spec is None:
            return encode_response(
                req.pkg_id, req.req_id, RSPCode.UNKNOWN_PKG_ID, {"msg": f"unknown pkg_id {req.pkg_id}"}
            )
        assert self.policy is not None, "create_app sets the policy before serving"
        if ctx.identity.kind == PAGE_VIEWER:
            # An anonymous status-page socket: its own short list, never the role ladder.
            if req.pkg_id not in PAGE_VIEWER_PACKAGES:
                return encode_response(
                    req.pkg_id,
                    req.req_id,
                    RSPCode.PERMISSION_DENIED,
                    {"msg": f"{spec.name} is not available on a status page connection"},
                )
        elif not self.policy.allows(req.pkg_id, ctx.identity.role):
            needed = self.policy.required_role(req.pkg_id)
            return encode_response(
                req.pkg_id,
                req.req_id,
                RSPCode.PERMISSION_DENIED,
                {"msg": f"{spec.name} needs role {needed!r}; you have {ctx.identity.role!r}"},
            )
        if spec.validator is not None:
            errors = spec.validator.errors(req.data)
            if errors:
                return encode_response(
                    req.pkg_id,
                    req.req_id,
                    RSPCode.INVALID_DATA,
                    {"msg": f"invalid data for {spec.name}: {errors[0]['msg']}", "errors": errors},
                )
        started = time.perf_counter()
        try:
            result = await spec.handler(req, ctx)
        except WatchpostError as exc:
            await self._audit_failure(spec, ctx, int(exc.code))
            return encode_response(req.pkg_id, req.req_id, exc.code, exc.to_data())
        except Exception:
            log.exception("handler %s failed (req_id=%s)", spec.name, req.req_id)
            await self._audit_failure(spec, ctx, int(RSPCode.ERROR))
            return encode_response(
                req.pkg_id,
                req.req_id,
                RSPCode.ERROR,
                {"msg": f"internal error; quote req_id {req.req_id} to the operator"},
            )
        finally:
            if self.on_handled is not None:
                self.on_handled(req.pkg_id, time.perf_counter() - started)
        if ctx._events:  # handler published without a transaction
            await ctx.flush_events()
        if spec.audit and not ctx.audited:
            await self._write_audit(ctx, 0)
        if isinstance(result, Page):
            return encode_response(req.pkg_id, req.req_id, RSPCode.OK, result.items, result.meta)
        return encode_response(req.pkg_id, req.req_id, RSPCode.OK, result)

    async def _audit_failure(self, spec: PackageSpec, ctx: Context, code: int) -> None:
        if spec.audit:
            await self._write_audit(ctx, code)

    async def _write_audit(self, ctx: Context, code: int) -> None:
        """Audit outside the handler's transaction (failures, handlers without writes)."""
        try:
            async with ctx.services.db.session() as s:
                s.add(ctx.audit_entry(code))
                await s.commit()
        except Exception:
            log.exception("could not write audit row (req_id=%s)", ctx.req_id)


def _name(pkg_id: int, fn: Handler) -> str:
    try:
        return PkgID(pkg_id).name
    except ValueError:
        return fn.__name__.upper()


class SchemaCheck:
    """A package's data schema, checked in two steps.

    jsonschema (draft 2020-12) is the judge and writes the error list, but
    walking its validator costs tens of microseconds even for ``{"id": 1}``.
    fastjsonschema compiles the same schema to plain Python; data it accepts
    is accepted at once. Anything it rejects goes to jsonschema, whose verdict
    stands (fastjsonschema is stricter in places, e.g. ``format``, never
    looser for the keywords our schemas use — ``tests/unit/test_routing_schema_check.py``
    holds the two to that over every registered schema).
    """

    __slots__ = ("fast", "validator")

    def __init__(self, schema: dict[str, Any]) -> None:
        Draft202012Validator.check_schema(schema)
        # Draft 2020-12 with bounded error reports (see app.schema_errors).
        self.validator = BoundedValidator(schema)
        # use_default=False: validation must never change the request's data.
        self.fast: Callable[[Any], Any] = fastjsonschema.compile(schema, use_default=False)

    def errors(self, data: Any) -> list[dict[str, str]]:
        """[] when ``data`` is valid; else up to 5 ``{"path", "msg"}`` errors."""
        try:
            self.fast(data)
        except fastjsonschema.JsonSchemaException:
            return schema_errors(self.validator, data)
        return []


def _compile(schema: dict[str, Any] | None) -> SchemaCheck | None:
    if not schema or schema == {"type": "object"}:
        return None
    return SchemaCheck(schema)
