"""Install and run the real Claude Code CLI, offline and headless, against a local base URL.

What a run needs (found with Claude Code 2.1.197 against a recording server):

* no config in ``HOME``: ``claude -p`` needs no onboarding or trust entry, it only
  writes its own ``~/.claude.json`` and ``~/.claude/`` there;
* ``--dangerously-skip-permissions`` (and ``--permission-mode bypassPermissions``) are
  refused as root, so the tools a test needs are allowed by name (``CLAUDE_FLAGS``);
  without that a ``Write`` is silently denied and the run still exits 0;
* stdin must not be an open pipe: ``-p`` waits 3 s for piped input otherwise;
* before its first request the CLI sends ``HEAD /`` to the base URL (any status does).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

CLAUDE_CODE_VERSION = "2.1.197"
"""The version the fixtures in ``tests/fixtures/claude_code`` were captured from.

Set ``VDM_CLAUDE_CODE_VERSION`` (a version, a range or ``latest``) to install another;
an existing install in ``.cache/claude-code`` is used whatever its version.
"""

REPO = Path(__file__).resolve().parents[2]
PREFIX = REPO / ".cache" / "claude-code"
BINARY = PREFIX / "node_modules" / ".bin" / "claude"
INSTALL_TIMEOUT = 300.0

CLAUDE_FLAGS: list[str] = ["--allowedTools", "Write"]
"""Flags for a headless ``claude -p`` run that may use ``Write`` without a prompt, also as root."""

OFFLINE_ENV: dict[str, str] = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    # also drops the session-title side request and the DesignSync tool
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_NON_ESSENTIAL_MODEL_CALLS": "1",
}
_LOOPBACK = "127.0.0.1,localhost,::1"


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


def ensure_claude_cli() -> Path | None:
    """The ``claude`` binary, installed with npm into ``<repo>/.cache/claude-code`` if missing.

    Returns None when ``npm`` is not on PATH; raises RuntimeError when npm is there but the
    install fails or the installed binary does not run.  Safe to call from parallel runs.
    """
    if BINARY.exists():
        return BINARY
    npm = shutil.which("npm")
    if npm is None:
        return None
    PREFIX.mkdir(parents=True, exist_ok=True)
    spec = os.environ.get("VDM_CLAUDE_CODE_VERSION") or CLAUDE_CODE_VERSION
    with (PREFIX / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install; the others wait and reuse it
        if BINARY.exists():
            return BINARY
        command = [
            npm,
            "install",
            "--prefix",
            str(PREFIX),
            "--no-audit",
            "--no-fund",
            f"@anthropic-ai/claude-code@{spec}",
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
                f"npm install of Claude Code timed out after {exc.timeout}s"
            ) from exc
        if done.returncode != 0 or not BINARY.exists():
            raise RuntimeError(
                f"npm install of @anthropic-ai/claude-code@{spec} failed "
                f"(exit {done.returncode}):\n{done.stderr[-2000:]}"
            )
        if not _works(BINARY):
            raise RuntimeError(f"{BINARY} was installed but `claude --version` fails")
    return BINARY


def claude_env(base_url: str, home: Path, api_key: str = "test-key") -> dict[str, str]:
    """The environment for an offline headless run with ``home`` as a private HOME.

    Starts from os.environ without any ANTHROPIC_* or CLAUDE_* variable, so a developer's
    own key, model or provider settings never leak into the run.  ``home`` is created; a
    headless run needs no config in it.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(OFFLINE_ENV)
    env.update(HOME=str(home), ANTHROPIC_BASE_URL=base_url, ANTHROPIC_API_KEY=api_key)
    for name in ("NO_PROXY", "no_proxy"):  # a proxy set for the registries must not catch us
        env[name] = ",".join(filter(None, [env.get(name), _LOOPBACK]))
    return env


def run_claude(
    binary: Path, prompt: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``claude -p PROMPT`` with ``CLAUDE_FLAGS`` in ``cwd``; stdout and stderr captured.

    A run against a local server takes under a second; ``timeout`` raises TimeoutExpired.
    """
    return subprocess.run(
        [str(binary), "-p", prompt, *CLAUDE_FLAGS],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
