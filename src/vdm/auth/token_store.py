"""Where tokens are remembered, for now: two small files in the user's state dir.

``$XDG_STATE_HOME/vdm/`` (default ``~/.local/state/vdm/``):

* ``revoked-tokens`` — one revoked ``jti`` per line (``#`` comments allowed);
* ``tokens.jsonl`` — what ``vdm token generate`` issued: ``jti``, ``sub``,
  ``iat``, ``exp`` per line; never the token itself.

The server keeps the revoked set in memory (:meth:`RevocationList.is_revoked`
is a set lookup on every call) and a background task reloads it when the
file changes, so ``vdm token revoke`` takes effect within
``REFRESH_SECONDS`` without a restart.  A later issue moves tokens into the
database behind the same small interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("vdm.auth")

REFRESH_SECONDS = 1.0


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local" / "state"
    )
    return Path(base) / "vdm"


class RevocationList:
    """The revoked token ids, read at start and refreshed when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._revoked: frozenset[str] = frozenset()
        self._stamp: tuple[int, int] | None = None

    @classmethod
    def default(cls, env: Mapping[str, str] | None = None) -> RevocationList:
        return cls(state_dir(env) / "revoked-tokens")

    def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    @property
    def revoked(self) -> frozenset[str]:
        return self._revoked

    def load(self) -> None:
        """Read the file if it changed since the last read (blocking: start-up or a thread)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._revoked, self._stamp = frozenset(), None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        lines = self.path.read_text().splitlines()
        self._revoked = frozenset(
            line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
        )
        self._stamp = stamp

    async def watch(self, interval: float = REFRESH_SECONDS) -> None:
        """Reload on change until cancelled (file access off the event loop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.load)
            except OSError as exc:  # keep the last good list
                log.warning("cannot read the revocation list %s: %s", self.path, exc.strerror)

    def revoke(self, jti: str) -> bool:
        """Add ``jti`` (CLI); False when it was already revoked."""
        self.load()
        if jti in self._revoked:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(jti + "\n")
        self.load()
        return True


class IssuedTokens:
    """What was issued (metadata only), for ``vdm token list``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls, env: Mapping[str, str] | None = None) -> IssuedTokens:
        return cls(state_dir(env) / "tokens.jsonl")

    def record(self, claims: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {k: claims[k] for k in ("jti", "sub", "iat", "exp")}
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with contextlib.suppress(FileNotFoundError), self.path.open() as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict) and isinstance(entry.get("jti"), str):
                        out.append(entry)
        return out


def is_expired(entry: Mapping[str, Any], now: float | None = None) -> bool:
    exp = entry.get("exp")
    return isinstance(exp, int) and exp <= (time.time() if now is None else now)
