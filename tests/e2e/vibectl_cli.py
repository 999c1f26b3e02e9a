"""Install and run the real ``vibectl`` client (PyPI) in its own virtualenv.

vibectl pulls in ~70 packages (kubernetes, llm, acme, ...; ~200 MB) and pins
``httpx<0.28``, so it does not go into the dev extras: it is installed on
first use into ``<repo>/.cache/vibectl`` (about 1.5 minutes from the package
mirror) and reused afterwards.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

VIBECTL_VERSION = "0.11.6"
"""The version this interop test was written against; ``VDM_VIBECTL_VERSION``
(a pip version specifier such as ``==0.11.5``, or ``latest``) picks another."""

REPO = Path(__file__).resolve().parents[2]
PREFIX = REPO / ".cache" / "vibectl"
BINARY = PREFIX / "bin" / "vibectl"
INSTALL_TIMEOUT = 600.0


def ensure_vibectl() -> Path:
    """The ``vibectl`` binary, installed with pip if missing; RuntimeError says why not."""
    if BINARY.exists():
        return BINARY
    PREFIX.parent.mkdir(parents=True, exist_ok=True)
    with (PREFIX.parent / ".vibectl.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install; parallel runs wait and reuse it
        if BINARY.exists():
            return BINARY
        spec = os.environ.get("VDM_VIBECTL_VERSION") or f"=={VIBECTL_VERSION}"
        requirement = "vibectl" if spec == "latest" else f"vibectl{spec}"
        steps = [
            [sys.executable, "-m", "venv", str(PREFIX)],
            [
                str(PREFIX / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                requirement,
            ],
        ]
        for command in steps:
            try:
                done = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    stdin=subprocess.DEVNULL,
                    timeout=INSTALL_TIMEOUT,
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(
                    f"installing {requirement} timed out after {exc.timeout:.0f} s"
                ) from exc
            if done.returncode != 0:
                raise RuntimeError(
                    f"`{' '.join(command[-2:])}` failed (exit {done.returncode}):"
                    f"\n{done.stderr[-2000:]}"
                )
        if not BINARY.exists():
            raise RuntimeError(f"{requirement} installed no {BINARY}")
    return BINARY


def vibectl_env(home: Path) -> dict[str, str]:
    """A private HOME/config dir, wide output, no proxy for loopback."""
    home.mkdir(parents=True, exist_ok=True)
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        COLUMNS="200",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def run_vibectl(
    binary: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
