"""Install a CLI from npm into ``<repo>/.cache/<name>`` once, for end-to-end tests.

Shared by the Claude Code and Codex helpers: one install per cache directory
(a file lock makes parallel runs wait and reuse it), an existing install used
whatever its version, None when npm is missing (the test skips, or fails
under ``CI=true``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 300.0


@dataclass(frozen=True)
class NpmCli:
    package: str  # e.g. "@openai/codex"
    version: str  # the default version spec
    version_env: str  # the variable that overrides it (a version, a range or "latest")
    cache: str  # directory name under .cache/
    binary: str  # the executable's name in node_modules/.bin

    @property
    def prefix(self) -> Path:
        return REPO / ".cache" / self.cache

    @property
    def path(self) -> Path:
        return self.prefix / "node_modules" / ".bin" / self.binary


def _works(binary: Path) -> bool:
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure(cli: NpmCli) -> Path | None:
    """The CLI's binary, installed with npm if missing.

    Returns None when ``npm`` is not on PATH; raises RuntimeError when npm is there but the
    install fails or the installed binary does not run.  Safe to call from parallel runs.
    """
    if cli.path.exists():
        return cli.path
    npm = shutil.which("npm")
    if npm is None:
        return None
    cli.prefix.mkdir(parents=True, exist_ok=True)
    spec = os.environ.get(cli.version_env) or cli.version
    with (cli.prefix / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install; the others wait and reuse it
        if cli.path.exists():
            return cli.path
        command = [
            npm,
            "install",
            "--prefix",
            str(cli.prefix),
            "--no-audit",
            "--no-fund",
            f"{cli.package}@{spec}",
        ]
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
                f"npm install of {cli.package} timed out after {exc.timeout}s"
            ) from exc
        if done.returncode != 0 or not cli.path.exists():
            raise RuntimeError(
                f"npm install of {cli.package}@{spec} failed "
                f"(exit {done.returncode}):\n{done.stderr[-2000:]}"
            )
        if not _works(cli.path):
            raise RuntimeError(f"{cli.path} was installed but `{cli.binary} --version` fails")
    return cli.path


def require(cli: NpmCli) -> Path:
    """For a fixture: the binary, or skip (npm missing) — but fail under ``CI=true``."""
    binary = ensure(cli)
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"npm is required under CI=true for the {cli.binary} end-to-end test")
        pytest.skip(f"npm is not installed: cannot install {cli.package}")
    return binary


LOOPBACK = "127.0.0.1,localhost,::1"


def no_proxy_for_loopback(env: dict[str, str]) -> None:
    """A proxy set for the registries must not catch requests to local servers."""
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, [env.get(name), LOOPBACK]))
