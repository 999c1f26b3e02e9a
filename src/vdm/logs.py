"""Logging set-up: one line per event, to stderr, secrets never included.

Two formats (``LOG_FORMAT``): ``console`` (human-readable, the default) and
``json`` (one JSON object a line: ``ts``, ``level``, ``logger``,
``request_id``, ``message``, and ``exc`` for a traceback; an access record
adds its fields, :mod:`vdm.server.access`).  ``--systemd`` sends
the lines to the journal through ``/dev/log`` with the identifier ``vdm``, and
falls back to stderr, with one warning, where there is no journal.  The
choice is kept in the environment (``VDM_LOG_JOURNAL``) so that uvicorn's
worker and reload processes log the same way as the one that started them.

Every line carries ``request_id=...``: the id of the request being served
(a ``ContextVar`` set by the server for each request, so the access log,
warnings and middleware lines of one request share it) or ``-`` outside a
request.  A filter on vdm's handler adds it to each record: no per-request
logger objects, nothing to pass around.

A line is one line: control characters in a message (a path with ``%0a``, a
model name or header with a newline, an upstream's error text) are written as
escapes (``\\n``, ``\\x1b``), so nothing a client sends can start a line that
looks like the gateway's own or drive the terminal.  (The JSON format's
encoder escapes them already; a traceback keeps its own lines.)
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import socket
import sys
import time
from contextvars import ContextVar

import msgspec

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s request_id=%(request_id)s: %(message)s"
# The journal has its own timestamps and priorities.
_JOURNAL_FORMAT = "%(levelname)s %(name)s request_id=%(request_id)s: %(message)s"
JOURNAL_SOCKET = "/dev/log"
JOURNAL_ENV = "VDM_LOG_JOURNAL"

# The id of the request this task is serving ("-" outside a request).
request_id: ContextVar[str] = ContextVar("vdm_request_id", default="-")

# A client's x-request-id is reused only when it is this plain (it goes into
# logs and headers verbatim).
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def client_request_id(value: str | None) -> str | None:
    """The client's ``x-request-id`` if it is safe to reuse, else None."""
    if value is not None and _SANE_ID.fullmatch(value):
        return value
    return None


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_ESCAPES = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))},
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape."""
    if text.isprintable():  # (the usual case: one C scan)
        return text
    return text.translate(_ESCAPES)


class ConsoleFormatter(logging.Formatter):
    """The console and journal lines: one line per record, whatever its
    arguments held (a traceback follows on its own lines, as usual)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` from the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line; the message is formatted first, so its
    arguments never reach the line unformatted."""

    _encode = msgspec.json.Encoder().encode

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        fields = getattr(record, "access", None)  # an access record's (vdm.server.access)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return self._encode(line).decode()


def _journal_handler() -> logging.Handler | None:
    """A handler writing to the journal's syslog socket, or None without one."""
    if not os.path.exists(JOURNAL_SOCKET):
        return None
    try:
        handler = logging.handlers.SysLogHandler(address=JOURNAL_SOCKET, socktype=socket.SOCK_DGRAM)
    except OSError:
        return None
    handler.ident = f"vdm[{os.getpid()}]: "  # the journal's SYSLOG_IDENTIFIER is "vdm"
    return handler


def configure(level: str, fmt: str = "console", *, systemd: bool = False) -> None:
    """Install vdm's one handler on the root logger (once per process)."""
    root = logging.getLogger()
    if not any(getattr(h, "_vdm", False) for h in root.handlers):
        journal = systemd or os.environ.get(JOURNAL_ENV) == "1"
        handler = _journal_handler() if journal else None
        fallback = journal and handler is None
        if handler is not None:
            os.environ[JOURNAL_ENV] = "1"  # for uvicorn's worker / reload processes
            text = _JOURNAL_FORMAT
        else:
            handler = logging.StreamHandler(sys.stderr)
            text = _FORMAT
        handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter(text))
        handler.addFilter(RequestIdFilter())
        handler._vdm = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        if fallback:
            os.environ.pop(JOURNAL_ENV, None)
            logging.getLogger("vdm").warning(
                "--systemd: no journal at %s; logging to the console", JOURNAL_SOCKET
            )
    root.setLevel(level)
    # uvicorn's own loggers go through ours; its access log is replaced by vdm.access.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic tells of its context and each migration step at INFO: only at DEBUG here.
    logging.getLogger("alembic").setLevel(
        logging.NOTSET if logging.getLevelName(level) <= logging.DEBUG else logging.WARNING
    )
