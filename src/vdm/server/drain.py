"""Draining before the signal: ``/ready`` answers 503 while requests still flow.

A load balancer (or a Kubernetes Service) stops sending new requests to an
instance some time after its readiness check fails; SIGTERM's drain stops
accepting at once.  So a rolling update first runs ``vdm server drain``
(a Kubernetes ``preStop`` hook): it puts a marker file beside the gateway's
other runtime files, every worker's ``/ready`` sees it and answers
``{"status": "draining"}`` with 503, and only then does SIGTERM come.  The
marker is per port, and removed when the gateway starts (a restarted
container serves again).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vdm.auth.token_store import state_dir

ENV = "VDM_DRAIN_MARKER"  # set by vdm.server.runner for the app (and its workers)


def marker(port: int, env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_RUNTIME_DIR/vdm/draining-<port>``, else under ``$XDG_STATE_HOME/vdm/``."""
    runtime = env.get("XDG_RUNTIME_DIR")
    return (Path(runtime) / "vdm" if runtime else state_dir(env)) / f"draining-{port}"


def begin(port: int, env: Mapping[str, str] = os.environ) -> Path:
    path = marker(port, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def clear(port: int, env: Mapping[str, str] = os.environ) -> None:
    marker(port, env).unlink(missing_ok=True)
