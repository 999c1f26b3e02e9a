"""Logging set-up: one line per event, to stderr, secrets never included.

Every line carries ``request_id=...``: the id of the request being served
(a ``ContextVar`` set by the server for each request, so the access log,
warnings and middleware lines of one request share it) or ``-`` outside a
request.  A filter on vdm's handler adds it to each record: no per-request
logger objects, nothing to pass around.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s request_id=%(request_id)s: %(message)s"

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


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` from the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_vdm", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(RequestIdFilter())
        handler._vdm = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own loggers go through ours; its access log is replaced by vdm.access.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
