"""The gateway's log lines: text or JSON (``[gateway] log_format``), and the request ID.

Every request gets an ID: the client's ``X-Request-Id`` when it is well-formed (a load
balancer or a CI system may set one to follow a call through), else a fresh one. The gateway
returns it as ``X-Request-Id`` on the answer (gateway/app.py), sends it to the agent on every
call made for the request (gateway/agentclient.py), and writes it on every log line written
while the request is served. It lives in a context variable, which gevent keeps per greenlet,
so concurrent requests in one worker never see each other's.

One line per request is written to the logger ``moorage.access`` (gateway/app.py) with these
fields, which the JSON format writes as keys of their own:

    request_id, method, path, operation (Docker's operation ID), status, duration_ms (to the
    answer's start, as moorage_request_duration_seconds), project, stream (a streamed or
    hijacked answer)

The JSON format writes one object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, ``pid``, ``request_id`` when there is one, those fields, and ``exception`` (the
traceback) for a logged exception. gunicorn's own lines go through the same handler and
format (gateway/server.py).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import json
import logging
import re
import secrets

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s %(request_id_text)s%(message)s"

_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("moorage_request_id", default="")
# What an incoming ID may be: what load balancers and tracing headers use (UUIDs, hex, base64url,
# dotted or colon-separated parts), short enough for a log line. Anything else is replaced.
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/=-]{0,127}")
# The fields of a request's line (and any other ``extra=`` a caller passes with these names).
FIELDS = ("method", "path", "operation", "status", "duration_ms", "project", "stream", "instance")


def request_id() -> str:
    """The ID of the request being served in this greenlet ("" outside a request)."""
    return _REQUEST_ID.get()


def begin_request(presented: str | None) -> str:
    """Start a request's ID: ``presented`` if well-formed, else a fresh one; returns it."""
    rid = presented if presented and _WELL_FORMED.fullmatch(presented) else secrets.token_hex(16)
    _REQUEST_ID.set(rid)
    return rid


class _RequestIdFilter(logging.Filter):
    """Puts the current request ID on every record (for both formats)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", None) or _REQUEST_ID.get()
        record.request_id = rid
        record.request_id_text = f"[{rid}] " if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        rid = getattr(record, "request_id", None) or _REQUEST_ID.get()
        if rid:
            entry["request_id"] = rid
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    if log_format not in FORMATS:
        raise ValueError(f"[gateway] log_format: expected one of {', '.join(FORMATS)}, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def use(handlers, log_format: str, level: int = logging.INFO) -> None:
    """Write the gateway's log lines (every ``moorage.*`` logger, through the root logger)
    with ``handlers`` in ``log_format``; gunicorn passes its error log's handlers, so its own
    lines and the gateway's share one destination and one format."""
    fmt = formatter(log_format)
    # Neither format writes where a line was logged from (file, function, line), nor its
    # thread or process name: the logging module is told not to find them for each record
    # (the logging HOWTO's "Optimization"), a walk of the stack per access line otherwise.
    logging._srcfile = None  # pyright: ignore[reportAttributeAccessIssue]
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in _installed:  # gunicorn set its logger up again (a reload): its new handlers only
        if old not in handlers:
            root.removeHandler(old)
    _installed[:] = list(handlers)
    for handler in handlers:
        handler.setFormatter(fmt)
        if not any(isinstance(f, _RequestIdFilter) for f in handler.filters):
            handler.addFilter(_RequestIdFilter())
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


_installed: list[logging.Handler] = []
