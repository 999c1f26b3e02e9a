"""Secrets vdm generates for itself (the JWT secret, the credentials' encryption
key): one file each, mode 0600, in the user's config dir.

Start-up only (file I/O).  A file appears whole: it is written under a name of
its own and linked into place, which fails if it exists, so two processes
starting at once (the workers of ``--workers N``) agree on one secret and
neither reads a half-written one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The secret in ``path``; made with ``make`` and written there (0600) when the
    file does not exist.  The flag says whether it was made now."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = make()
    fd, own_name = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)  # mode 0600
    own = Path(own_name)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    try:
        os.link(own, path)
    except FileExistsError:  # another process won the race: use its secret
        return path.read_text().strip(), False
    finally:
        own.unlink()
    return secret, True
