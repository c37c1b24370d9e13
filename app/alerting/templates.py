"""Per-channel message templates: Jinja2 in a sandbox, bounded in size and cost.

A channel's ``template`` is ``{"subject": …, "body": …}`` (either may be left
out: the default message is used for it). Templates are checked when the
channel is saved (:func:`validate`): a syntax error is refused with its line and
column, and so is anything outside the small language alerts need.

What bounds the cost of one rendering:

- the source: ``subject`` up to 500 characters, ``body`` up to 4000;
- the language: no macros, ``call`` blocks, includes, imports, ``extends`` or
  ``set`` blocks, and loops nest at most two deep; ``range`` gives at most
  100 items (the other iterables are the short strings of the message);
- values: only an allow-list of filters and of methods (``upper``, ``split``…;
  not ``ljust``, ``format`` or ``%`` formatting, which could build huge
  strings); a filter, method, ``*``, ``**`` or ``+`` whose result would be
  longer than 10,000 characters (or a power with an exponent above 64) is
  refused;
- the output: rendering stops at 10,000 characters (``subject`` at 200, on one
  line: control characters fold to spaces).

Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment` keeps templates away from
attributes that could reach Python internals; templates only see the plain
values of :func:`variables` (documented in docs/alerting.md).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from app.alerting import message
from app.alerting.message import Alert

SUBJECT_MAX = 500
BODY_MAX = 4000
OUTPUT_MAX = 10_000
SUBJECT_OUTPUT_MAX = 200
_RANGE_MAX = 100
_LOOP_DEPTH = 2

FIELDS: dict[str, Any] = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "subject": {"type": ["string", "null"], "maxLength": SUBJECT_MAX},
        "body": {"type": ["string", "null"], "maxLength": BODY_MAX},
    },
}

_ALLOWED_FILTERS = (
    *("abs", "capitalize", "count", "default", "d", "first", "float", "int", "join", "last"),
    *("length", "lower", "replace", "round", "string", "title", "trim", "truncate", "upper"),
)
_REFUSED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Macro,
    nodes.CallBlock,
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.Extends,
    nodes.AssignBlock,
    nodes.FilterBlock,
    nodes.Block,
)


class TemplateProblem(ValueError):
    """A template that cannot be used; ``line``/``column`` point into its source when known."""

    def __init__(self, msg: str, line: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.line = line


def _too_long(value: Any) -> bool:
    if isinstance(value, int):
        return value.bit_length() > 4096  # arithmetic on huge integers costs time too
    return isinstance(value, (str, list, tuple)) and len(value) > OUTPUT_MAX


def _bounded_filter(name: str, fn: Any) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if _too_long(out):
            raise SecurityError(f"the {name} filter made a value longer than {OUTPUT_MAX} characters")
        return out

    # Keep Jinja's pass_context / pass_environment markers.
    for marker in ("jinja_pass_arg",):
        if hasattr(fn, marker):
            setattr(wrapped, marker, getattr(fn, marker))
    return wrapped


def _range(*args: int) -> range:
    r = range(*args)
    if len(r) > _RANGE_MAX:
        raise SecurityError(f"range() may give at most {_RANGE_MAX} items")
    return r


#: Methods templates may call on values (others could build huge strings: ``ljust``,
#: ``center``, ``format``…).
_ALLOWED_METHODS = frozenset(
    {"upper", "lower", "title", "capitalize", "strip", "lstrip", "rstrip", "startswith", "endswith"}
    | {"split", "items", "keys", "values", "get", "cycle"}
)


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if __obj is not _range and getattr(__obj, "__name__", None) not in _ALLOWED_METHODS:
            name = getattr(__obj, "__name__", type(__obj).__name__)
            raise SecurityError(f"calling {name}() is not allowed in alert templates")
        out = super().call(__context, __obj, *args, **kwargs)
        if _too_long(out):
            raise SecurityError(f"a value longer than {OUTPUT_MAX} characters")
        return out

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("string formatting with % is not allowed in alert templates")
        if operator == "**" and (
            (isinstance(right, (int, float)) and abs(right) > 64)
            or (isinstance(left, int) and left.bit_length() > 64)
        ):
            raise SecurityError("exponents above 64 (or of numbers above 2**64) are not allowed in templates")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(times, int)
                    and len(seq) * times > OUTPUT_MAX
                ):
                    raise SecurityError(f"a value longer than {OUTPUT_MAX} characters")
        out = super().call_binop(context, operator, left, right)
        if _too_long(out):
            raise SecurityError(f"a value longer than {OUTPUT_MAX} characters")
        return out


def _environment() -> _Sandbox:
    env = _Sandbox(autoescape=False, undefined=jinja2.ChainableUndefined, keep_trailing_newline=False)
    defaults = env.filters
    env.filters = {name: _bounded_filter(name, defaults[name]) for name in _ALLOWED_FILTERS}
    env.tests = {name: env.tests[name] for name in ("defined", "undefined", "none", "equalto", "eq", "in")}
    env.globals = {"range": _range}
    return env


_ENV = _environment()


def _check_tree(tree: nodes.Node) -> None:
    for node in tree.find_all(_REFUSED_NODES):
        name = type(node).__name__.lower()
        raise TemplateProblem(f"{name} is not allowed in alert templates", node.lineno)
    _check_loops(tree, 0)


def _check_loops(node: nodes.Node, depth: int) -> None:
    for child in node.iter_child_nodes():
        inner = depth + 1 if isinstance(child, nodes.For) else depth
        if inner > _LOOP_DEPTH:
            raise TemplateProblem(f"loops may nest at most {_LOOP_DEPTH} deep", child.lineno)
        _check_loops(child, inner)


def compile_template(source: str) -> jinja2.Template:
    """The compiled template, or :class:`TemplateProblem` with the line of the error."""
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"line {exc.lineno}: {exc.message}", exc.lineno) from None
    try:
        _check_tree(tree)
    except TemplateProblem as exc:
        raise TemplateProblem(f"line {exc.line}: {exc.msg}", exc.line) from None
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:  # unknown filters and tests, among others
        raise TemplateProblem(f"line {exc.lineno}: {exc.message}", exc.lineno) from None
    except SecurityError as exc:  # constant expressions are evaluated while compiling
        raise TemplateProblem(f"refused: {exc}") from None


def validate(template: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The template to store (empty parts dropped), or InvalidData-ready ``TemplateProblem``
    carrying the part (``subject``/``body``) in ``args[1]``."""
    if not template:
        return None
    out: dict[str, str] = {}
    for part in ("subject", "body"):
        source = template.get(part)
        if source is None or source == "":
            continue
        try:
            compile_template(str(source))
        except TemplateProblem as exc:
            raise PartProblem(part, exc) from None
        out[part] = str(source)
    if out:
        # A trial rendering with a sample alert catches what only shows at run time
        # (a range too long, a value too large, dividing by zero).
        render(out, sample_alert())
    return out or None


def sample_alert(**overrides: Any) -> Alert:
    """The incident CHANNEL_TEST renders templates with (and :func:`validate` tries them on)."""
    at = overrides.pop("at", None) or dt.datetime.now(dt.UTC).replace(microsecond=0)
    fields: dict[str, Any] = {
        "monitor_name": "checkout-api",
        "monitor_id": 0,
        "state": "down",
        "previous_state": "up",
        "reason": "HTTP 503",
        "at": at,
        "kind": "test",
        "incident_id": 0,
        "incident_opened_at": at,
    }
    fields.update(overrides)
    return Alert(**fields)


class PartProblem(ValueError):
    """Which part of a template (``subject`` or ``body``) is wrong, and how."""

    def __init__(self, part: str, problem: TemplateProblem) -> None:
        super().__init__(f"{part}: {problem.msg}")
        self.part = part
        self.problem = problem


def tzinfo(name: str | None) -> dt.tzinfo:
    if not name:
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def local_time(at: dt.datetime, tz_name: str | None) -> str:
    """``at`` in the tenant's timezone, e.g. ``2026-11-22 05:30:05 CET``."""
    return at.astimezone(tzinfo(tz_name)).strftime("%Y-%m-%d %H:%M:%S %Z")


def variables(alert: Alert) -> dict[str, Any]:
    """What templates see (docs/alerting.md lists it); plain values only."""
    tz = alert.timezone or "UTC"
    return {
        "kind": alert.kind,
        "monitor": {
            "id": alert.monitor_id,
            "name": message.clean(alert.monitor_name),
            "critical": alert.critical,
        },
        "state": alert.state,
        "previous_state": alert.previous_state,
        "reason": message.clean(alert.reason, 500) if alert.reason else None,
        "incident": (
            {
                "id": alert.incident_id,
                "opened_at": local_time(alert.incident_opened_at, tz) if alert.incident_opened_at else None,
            }
            if alert.incident_id is not None
            else None
        ),
        "links": {"dashboard": alert.dashboard_url},
        "tenant": {"id": alert.tenant_id, "name": alert.tenant_name, "timezone": tz},
        "time": local_time(alert.at, tz),
        "time_iso": alert.at.astimezone(tzinfo(tz)).isoformat(),
        "time_utc": message.format_time(alert.at),
        "default_subject": message.default_subject(alert),
        "default_body": message.default_text(alert),
    }


def _render(source: str, context: Mapping[str, Any], limit: int) -> str:
    template = compile_template(source)
    out: list[str] = []
    size = 0
    try:
        for chunk in template.generate(**context):
            out.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    except SecurityError as exc:
        raise TemplateProblem(f"refused while rendering: {exc}") from None
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
        raise TemplateProblem(f"rendering failed: {type(exc).__name__}: {exc}") from None
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(template: Mapping[str, Any] | None, alert: Alert) -> tuple[str | None, str | None]:
    """``(subject, body)`` for ``alert``; None for a part the channel leaves at the default.

    Raises :class:`PartProblem` when a stored template fails to render (the
    sender then uses the default message and says so)."""
    if not template:
        return None, None
    context = variables(alert)
    subject = body = None
    if template.get("subject"):
        try:
            subject = message.clean(
                _render(str(template["subject"]), context, OUTPUT_MAX), SUBJECT_OUTPUT_MAX
            )
        except TemplateProblem as exc:
            raise PartProblem("subject", exc) from None
    if template.get("body"):
        try:
            body = _render(str(template["body"]), context, OUTPUT_MAX).strip("\n")
        except TemplateProblem as exc:
            raise PartProblem("body", exc) from None
    return subject, body
