"""The condition language: what a check's answer must say, one line per condition.

A monitor's ``conditions`` is a list of short texts, each ``[warn:] SUBJECT OPERATOR VALUE``::

    status == 200
    response_time < 800
    body contains "ok"
    body not contains "error"
    $.status == "UP"
    $.queue.depth < 100
    $.items[0].name != null
    header.content-type contains "json"
    cert_days >= 14
    warn: response_time < 300

Subjects: ``status`` (HTTP status code), ``response_time`` (milliseconds),
``body`` (the text read, at most CHECK_MAX_BODY_BYTES), ``$…`` (a JSON path into
the body: ``.name`` or ``["name"]`` for members, ``[n]`` for list items),
``header.NAME`` (a response header, name case-insensitive), ``cert_days``
(whole days until the earliest certificate of the chain expires).
Operators: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``contains``,
``not contains``. Values: a number, a double-quoted string (``\\"`` and
``\\\\`` escapes), ``true``, ``false`` or ``null``.

Each kind offers the subjects that make sense for it (``CONDITION_SUBJECTS`` in
:mod:`app.monitoring.definition`): http all of them; websocket ``body``, ``$…`` and
``response_time`` on its first answer; dns the same on its answer's values
(:func:`values_answer`: ``body`` one per line, ``$`` the list); tcp ``response_time``.

A condition prefixed ``warn:`` does not fail the check: when it does not hold
the monitor is ``degraded`` (up for uptime, alertable on its own).

:func:`parse` runs at MONITOR_CREATE/UPDATE and raises :class:`ConditionError`
with the 1-based column of the problem; :func:`evaluate` runs on every check
against a :class:`Answer`, which any kind can fill with what it has (status,
time, body, headers, certificate), and returns one sentence per failing
condition (``$.status: expected "UP", got "DEGRADED"``). This is a small
hand-written parser: no ``eval``, bounded text length and path depth, so a
rejected or evaluated condition costs bounded time and memory.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Longest condition text, most conditions per monitor, deepest JSON path.
MAX_CONDITION_LENGTH = 500
MAX_CONDITIONS = 50
MAX_PATH_DEPTH = 32

SUBJECTS = ("status", "response_time", "body", "cert_days")
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
OPERATORS = (*COMPARISONS, "contains", "not contains")
_MISSING = object()


class ConditionError(ValueError):
    """A condition that does not parse; ``position`` is the 1-based column."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"column {position}: {message}")
        self.position = position
        self.reason = message


@dataclass(frozen=True, slots=True)
class Condition:
    text: str
    #: "status", "response_time", "body", "cert_days", "json" or "header"
    subject: str
    #: JSON path steps (str: member, int: item) or the header name (lower case).
    path: tuple[str | int, ...]
    operator: str
    value: Any
    warn: bool = False

    @property
    def label(self) -> str:
        """How a failure names what was looked at: ``status``, ``$.a.b``, ``header.x``."""
        if self.subject == "json":
            return _path_text(self.path)
        if self.subject == "header":
            return f"header.{self.path[0]}"
        return self.subject


@dataclass(slots=True)
class Answer:
    """What a check saw; a kind fills what it has and leaves the rest None."""

    status_code: int | None = None
    latency_ms: float | None = None
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    cert_days: int | None = None
    #: True when the body was cut at the read limit (said in body failures).
    truncated: bool = False
    _json: Any = _MISSING

    def json(self) -> Any:
        """The body as JSON, parsed once; raises ValueError when it is not JSON."""
        if self._json is _MISSING:
            if self.body is None:
                raise ValueError("no body")
            try:
                self._json = json.loads(self.body)
            except (ValueError, RecursionError) as exc:
                self._json = ValueError(f"the body is not JSON ({type(exc).__name__})")
        if isinstance(self._json, ValueError):
            raise self._json
        return self._json


def values_answer(values: Sequence[str], latency_ms: float | None = None) -> Answer:
    """An answer that is a list of texts (a dns answer's values): ``body`` is the values one
    per line, ``$`` the list itself (``$ contains "192.0.2.10"`` is an exact member)."""
    return Answer(latency_ms=latency_ms, body="\n".join(values).encode(), _json=list(values))


# --------------------------------------------------------------------------- parsing


def parse_all(texts: Sequence[Any] | None) -> tuple[Condition, ...]:
    """Parse a monitor's list; ``ValueError`` names the index (``conditions[1]: column 9: …``).

    Every check of a monitor parses the same texts: the parsed lists are cached
    (bounded), so the collector pays for parsing once per definition, not per check."""
    if not texts:
        return ()
    if all(isinstance(t, str) for t in texts):
        return _parse_cached(tuple(texts))
    return _parse_list(texts)


@functools.lru_cache(maxsize=4096)
def _parse_cached(texts: tuple[str, ...]) -> tuple[Condition, ...]:
    return _parse_list(texts)


def _parse_list(texts: Sequence[Any]) -> tuple[Condition, ...]:
    if len(texts) > MAX_CONDITIONS:
        raise ValueError(f"at most {MAX_CONDITIONS} conditions")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"conditions[{i}]: a condition is a text like 'status == 200'")
        try:
            out.append(parse(text))
        except ConditionError as exc:
            raise IndexedConditionError(i, exc) from None
    return tuple(out)


class IndexedConditionError(ValueError):
    """A :class:`ConditionError` with the index of the condition in its list."""

    def __init__(self, index: int, error: ConditionError) -> None:
        super().__init__(f"conditions[{index}]: {error}")
        self.index = index
        self.position = error.position


def parse(text: str) -> Condition:
    if len(text) > MAX_CONDITION_LENGTH:
        raise ConditionError(
            f"a condition is at most {MAX_CONDITION_LENGTH} characters", MAX_CONDITION_LENGTH + 1
        )
    s = _Scanner(text)
    s.skip()
    warn = False
    if text.startswith("warn:", s.i):
        warn = True
        s.i += len("warn:")
        s.skip()
    if s.done():
        raise ConditionError("empty condition; write e.g. status == 200", s.col())
    subject, path = _subject(s)
    s.skip()
    op_at = s.col()
    operator = _operator(s)
    if subject in ("status", "response_time", "cert_days") and operator in ("contains", "not contains"):
        raise ConditionError(f"{subject} is a number: compare it with ==, !=, <, <=, > or >=", op_at)
    if subject == "body" and operator not in ("contains", "not contains", "==", "!="):
        raise ConditionError("body takes contains, not contains, == or !=", op_at)
    s.skip()
    value_at = s.col()
    value = _value(s)
    s.skip()
    if not s.done():
        raise ConditionError(f"unexpected {text[s.i : s.i + 10]!r} after the value", s.col())
    if subject in ("status", "response_time", "cert_days") and not _is_number(value):
        raise ConditionError(f"{subject} is compared with a number", value_at)
    if operator in ("<", "<=", ">", ">=") and not _is_number(value):
        raise ConditionError(f"{operator} compares numbers; the value must be a number", value_at)
    if operator in ("contains", "not contains") and not isinstance(value, str):
        raise ConditionError(f"{operator} takes a quoted text", value_at)
    if subject == "body" and not isinstance(value, str):
        raise ConditionError("body is compared with a quoted text", value_at)
    return Condition(text.strip(), subject, path, operator, value, warn)


class _Scanner:
    __slots__ = ("i", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def done(self) -> bool:
        return self.i >= len(self.text)

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def col(self) -> int:
        return self.i + 1

    def skip(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in " \t":
            self.i += 1

    def word(self) -> str:
        start = self.i
        while self.i < len(self.text) and (self.text[self.i].isalnum() or self.text[self.i] in "_-"):
            self.i += 1
        return self.text[start : self.i]


def _subject(s: _Scanner) -> tuple[str, tuple[str | int, ...]]:
    at = s.col()
    if s.peek() == "$":
        s.i += 1
        return "json", _json_path(s)
    name = s.word()
    if name == "header":
        if s.peek() != ".":
            raise ConditionError("write header.NAME, e.g. header.content-type", s.col())
        s.i += 1
        header_at = s.col()
        header = s.word()
        if not header:
            raise ConditionError("a header name is letters, digits, - and _", header_at)
        return "header", (header.lower(),)
    if name in SUBJECTS:
        return name, ()
    shown = name or s.peek()
    raise ConditionError(
        f"unknown subject {shown!r}; use status, response_time, body, cert_days, header.NAME"
        " or a $.json.path",
        at,
    )


def _json_path(s: _Scanner) -> tuple[str | int, ...]:
    steps: list[str | int] = []
    while s.peek() in (".", "["):
        if len(steps) >= MAX_PATH_DEPTH:
            raise ConditionError(f"a JSON path has at most {MAX_PATH_DEPTH} steps", s.col())
        if s.peek() == ".":
            s.i += 1
            at = s.col()
            name = s.word()
            if not name:
                raise ConditionError("expected a member name after '.'", at)
            steps.append(name)
            continue
        s.i += 1  # [
        at = s.col()
        if s.peek() == '"':
            steps.append(_string(s))
        else:
            digits = s.word()
            if not digits.isdigit() or len(digits) > 9:
                raise ConditionError('expected a list index like [0] or a quoted name like ["a b"]', at)
            steps.append(int(digits))
        if s.peek() != "]":
            raise ConditionError("expected ']'", s.col())
        s.i += 1
    if s.peek() not in (" ", "\t", ""):
        raise ConditionError('a JSON path goes on with .name, [n] or ["name"]', s.col())
    return tuple(steps)


def _operator(s: _Scanner) -> str:
    at = s.col()
    for op in COMPARISONS:
        if s.text.startswith(op, s.i):
            s.i += len(op)
            return op
    word = s.word()
    if word == "contains":
        return "contains"
    if word == "not":
        s.skip()
        if s.word() == "contains":
            return "not contains"
    raise ConditionError("expected an operator: ==, !=, <, <=, >, >=, contains or not contains", at)


def _value(s: _Scanner) -> Any:
    at = s.col()
    c = s.peek()
    if c == "":
        raise ConditionError('expected a value: a number, a "quoted text", true, false or null', at)
    if c == '"':
        return _string(s)
    start = s.i
    while s.i < len(s.text) and s.text[s.i] not in " \t":
        s.i += 1
    word = s.text[start : s.i]
    if word in ("true", "false"):
        return word == "true"
    if word == "null":
        return None
    try:
        number = float(word) if any(ch in word for ch in ".eE") else int(word)
    except ValueError:
        raise ConditionError(
            f'{word[:20]!r} is not a value; quote texts ("UP"), numbers as 100 or 0.5', at
        ) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConditionError("numbers must be finite", at)
    return number


def _string(s: _Scanner) -> str:
    at = s.col()
    s.i += 1  # opening quote
    out: list[str] = []
    while True:
        if s.done():
            raise ConditionError('the text is not closed with "', at)
        c = s.text[s.i]
        if c == "\\":
            nxt = s.text[s.i + 1 : s.i + 2]
            if nxt not in ('"', "\\"):
                raise ConditionError('only \\" and \\\\ are escapes in a text', s.col())
            out.append(nxt)
            s.i += 2
            continue
        s.i += 1
        if c == '"':
            return "".join(out)
        out.append(c)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _path_text(path: Sequence[str | int]) -> str:
    out = "$"
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif step.replace("_", "").replace("-", "").isalnum():
            out += f".{step}"
        else:
            out += "[" + json.dumps(step) + "]"
    return out


# ------------------------------------------------------------------------ evaluation


@dataclass(frozen=True, slots=True)
class Verdict:
    """Failing conditions as sentences: ``failed`` fail the check, ``warned`` degrade it."""

    failed: tuple[str, ...] = ()
    warned: tuple[str, ...] = ()


def evaluate(conditions: Sequence[Condition], answer: Answer) -> Verdict:
    failed: list[str] = []
    warned: list[str] = []
    for condition in conditions:
        problem = check(condition, answer)
        if problem is not None:
            (warned if condition.warn else failed).append(problem)
    return Verdict(tuple(failed), tuple(warned))


def check(condition: Condition, answer: Answer) -> str | None:
    """None when ``condition`` holds for ``answer``, else why not (one line)."""
    label = condition.label
    op, want = condition.operator, condition.value
    subject = condition.subject
    got: Any
    if subject == "status":
        got = answer.status_code
    elif subject == "response_time":
        got = None if answer.latency_ms is None else round(answer.latency_ms, 1)
    elif subject == "cert_days":
        got = answer.cert_days
        if got is None:
            return f"cert_days: expected {op} {_show(want)}, got no certificate"
    elif subject == "header":
        got = _header(answer.headers, str(condition.path[0]))
        if got is None:
            return f"{label}: expected {_expect(op, want)}, got no such header"
    elif subject == "body":
        if answer.body is None:
            return "body: no body was read"
        body = answer.body.decode("utf-8", "replace")
        where = " (in the first bytes read)" if answer.truncated else ""
        if op == "contains":
            return None if want in body else f"body: expected to contain {_show(want)}{where}"
        if op == "not contains":
            return None if want not in body else f"body: expected not to contain {_show(want)}{where}"
        got = body
    else:
        try:
            document = answer.json()
        except ValueError as exc:
            return f"{label}: {exc}"
        got = _walk(document, condition.path)
        if got is _MISSING:
            return f"{label}: expected {_expect(op, want)}, got nothing (no such path)"
    if _holds(op, got, want):
        return None
    return f"{label}: expected {_expect(op, want)}, got {_show(got)}"


def _expect(op: str, want: Any) -> str:
    return _show(want) if op == "==" else f"{op} {_show(want)}"


def _holds(op: str, got: Any, want: Any) -> bool:
    if op in ("contains", "not contains"):
        inside = isinstance(got, str | list) and want in got
        return inside if op == "contains" else not inside
    if op in ("==", "!="):
        same = _equal(got, want)
        return same if op == "==" else not same
    number = _number(got)
    if number is None:
        return False
    limit = float(want)
    if op == "<":
        return number < limit
    if op == "<=":
        return number <= limit
    if op == ">":
        return number > limit
    return number >= limit


def _equal(got: Any, want: Any) -> bool:
    if _is_number(want):
        number = _number(got)
        return number is not None and number == want
    if isinstance(want, bool) or want is None:
        return got is want
    return isinstance(got, str) and got == want


def _number(value: Any) -> float | None:
    """Numbers, and numeric texts (a header value, a JSON "42"), as numbers."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str) and len(value) <= 40:
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _walk(document: Any, path: Sequence[str | int]) -> Any:
    node = document
    for step in path:
        if isinstance(step, int) and isinstance(node, list):
            if step >= len(node):
                return _MISSING
            node = node[step]
        elif isinstance(step, str) and isinstance(node, dict):
            if step not in node:
                return _MISSING
            node = node[step]
        else:
            return _MISSING
    return node


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _show(value: Any) -> str:
    """A value in a failure sentence, JSON-like and short (a body may be large)."""
    if isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"))[:60]
        return text if len(text) < 60 else text + "…"
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:60] + "…"
        return json.dumps(shown, ensure_ascii=False)
    return json.dumps(value)
