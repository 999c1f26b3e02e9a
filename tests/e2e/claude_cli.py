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

import os
import subprocess
from pathlib import Path

from tests.e2e.npm_cli import NpmCli, ensure, no_proxy_for_loopback

CLAUDE_CODE_VERSION = "2.1.197"
"""The version the fixtures in ``tests/fixtures/claude_code`` were captured from.

Set ``VDM_CLAUDE_CODE_VERSION`` (a version, a range or ``latest``) to install another;
an existing install in ``.cache/claude-code`` is used whatever its version.
"""

CLAUDE_CODE = NpmCli(
    "@anthropic-ai/claude-code",
    CLAUDE_CODE_VERSION,
    "VDM_CLAUDE_CODE_VERSION",
    "claude-code",
    "claude",
)
PREFIX = CLAUDE_CODE.prefix
BINARY = CLAUDE_CODE.path

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


def ensure_claude_cli() -> Path | None:
    """The ``claude`` binary, installed with npm into ``<repo>/.cache/claude-code`` if missing
    (None when npm is missing; see :func:`tests.e2e.npm_cli.ensure`)."""
    return ensure(CLAUDE_CODE)


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
    no_proxy_for_loopback(env)
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
