"""Logging set-up: one line per event, text or JSON (LOG_FORMAT=json).

Secrets never reach a log line: the access log is ours (path without query
string, so ``?token=`` is never written) and a filter masks anything that looks
like a bearer token, API token or password field.

One event is one line: text logs write control characters in the message as
backslash escapes (a newline becomes the two characters backslash and n), so a
value a client chose can never start a forged line; JSON logs are escaped by the
encoder.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_SECRET_PATTERNS = [
    (re.compile(r"(wp[tr]_)[A-Za-z0-9_\-]{8,}"), r"\1***"),
    (re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"), "<jwt>"),
    (re.compile(r"(?i)(bearer\.?\s*)[A-Za-z0-9_\-\.]{8,}"), r"\1***"),
    (re.compile(r'(?i)("?(?:password|secret|token)"?\s*[:=]\s*"?)[^"\s,}]+'), r"\1***"),
]


#: C0 and C1 controls, DEL and the Unicode line/paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    known = _ESCAPES.get(char)
    if known is not None:
        return known
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` on one line: control characters written as backslash escapes."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape_char, text)


#: What every secret pattern above needs somewhere in the text, with the same flags:
#: a line without any of it has nothing to mask. (Case-insensitive as above, so it
#: folds the same characters the patterns do, e.g. "ſecret" matches "secret".)
_MAY_HOLD_SECRET = re.compile(r"wp[tr]_|eyJ|(?i:bearer|password|secret|token)")


def _may_hold_secret(text: str) -> bool:
    if text.isascii():
        # ASCII folds as str.lower() does; five times cheaper than the search below.
        lower = text.lower()
        return (
            "wpt_" in text
            or "wpr_" in text
            or "eyJ" in text
            or "bearer" in lower
            or "password" in lower
            or "secret" in lower
            or "token" in lower
        )
    return _MAY_HOLD_SECRET.search(text) is not None


def mask(text: str) -> str:
    # Most lines ("connected c1 user=... kind=local") hold none of the patterns' keywords:
    # a few substring tests instead of four substitutions for each of them.
    if not _may_hold_secret(text):
        return text
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Always replaced by the formatted line: the formatter then uses it as it is
        # instead of formatting the message a second time.
        record.msg, record.args = mask(record.getMessage()), None
        return True


class _HandshakeEchoFilter(logging.Filter):
    """Drops uvicorn's two lines per WebSocket handshake ("[accepted]", "connection open").

    Watchpost writes its own line for every handshake, with more in it: "connected"
    (connection id, user, tenant, credential kind, client address) or "refused"
    (close code, reason, client address); uvicorn's repeat the fact twice at the
    cost of two more log records per handshake.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in _UVICORN_HANDSHAKE_LINES


_UVICORN_HANDSHAKE_LINES = frozenset({'%s - "WebSocket %s" [accepted]', "connection open"})


class _ClientFrameFilter(logging.Filter):
    """uvicorn logs a text frame that is not UTF-8 as an ERROR with a traceback.

    It is the client's fault and the connection is already closed with 1007
    (RFC 6455): one warning line says so, no traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.error" and str(record.msg).startswith("Invalid UTF-8"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = (
                "client sent a text frame that is not valid UTF-8; closed with 1007",
                None,
            )
            record.exc_info, record.exc_text = None, None
        return True


class TextFormatter(logging.Formatter):
    """The text format, with the message escaped onto one line (tracebacks stay as they are)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        safe = escape(message)
        if safe is message:
            return super().formatMessage(record)
        record.message = safe
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


#: Fields a request line may carry (``extra=``), written when set.
_JSON_FIELDS = ("req_id", "pkg_id", "conn_id", "user", "tenant", "status_code", "duration_ms")
#: What ``json.dumps(out, default=str)`` builds anew for every call, built once.
_JSON = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        for key in _JSON_FIELDS:
            value = fields.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = mask(self.formatException(record.exc_info))
        return _JSON.encode(out)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    handler.addFilter(_ClientFrameFilter())
    handler.addFilter(_MaskingFilter())
    # Neither format writes a record's caller (file, line, function), thread or process:
    # not collecting them makes each record about a third cheaper ("Optimization" in
    # the logging HOWTO), and the server writes a few per WebSocket handshake.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HandshakeEchoFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(_HandshakeEchoFilter())
    logging.getLogger("uvicorn.access").disabled = True
