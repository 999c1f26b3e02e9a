"""What the workers of one ``vdm server start --workers N`` share.

The supervisor (:mod:`vdm.server.runner`) makes one directory per start and
names it to its workers in ``VDM_WORKERS_DIR``; a process that finds it set is
one of them:

* its ``/metrics`` covers them all (:mod:`vdm.worker_metrics` writes and
  reads there);
* its gRPC service shares the port with the other workers (``SO_REUSEPORT``;
  ``vdm server start`` checked that the port was free before the start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

ENV = "VDM_WORKERS_DIR"


@contextlib.contextmanager
def shared_directory() -> Iterator[Path]:
    """A directory for this start's workers, named in ``VDM_WORKERS_DIR``
    (which the workers inherit); removed when the supervisor ends."""
    path = Path(tempfile.mkdtemp(prefix="vdm-workers-"))
    previous = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def directory_from_env(env: Mapping[str, str]) -> Path | None:
    """The shared directory of this worker, if it is one; a value that is not
    a directory stops the start with the reason."""
    value = env.get(ENV)
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        raise ValueError(f"environment variable {ENV}: {value!r} is not a directory")
    return path
