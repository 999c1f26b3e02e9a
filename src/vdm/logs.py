"""Logging set-up: one line per event, to stderr, secrets never included."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_vdm", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._vdm = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own loggers go through ours; its access log is replaced by vdm.access.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
