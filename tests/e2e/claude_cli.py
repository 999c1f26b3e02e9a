"""Install and run the real Claude Code CLI, offline, against a local base URL."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

CLAUDE_CODE_VERSION = "2.1.197"  # the version the fixtures were captured from
REPO = Path(__file__).resolve().parents[2]
PREFIX = REPO / ".cache" / "claude-code"
BINARY = PREFIX / "node_modules" / ".bin" / "claude"

# Headless, no prompts: as root --dangerously-skip-permissions is refused, so
# the tools a test needs are allowed by name.
CLAUDE_FLAGS = ["--allowedTools", "Write"]

_OFFLINE = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


def ensure_claude_cli() -> Path | None:
    """The ``claude`` binary, installed into ``.cache/claude-code`` if missing.

    None when npm is not on PATH; RuntimeError when npm fails.
    """
    if BINARY.exists():
        return BINARY
    npm = shutil.which("npm")
    if npm is None:
        return None
    PREFIX.mkdir(parents=True, exist_ok=True)
    with (PREFIX / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs install once
        if not BINARY.exists():
            result = subprocess.run(
                [npm, "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund",
                 f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"],
                capture_output=True, text=True, timeout=300,
            )
            if result.returncode != 0 or not BINARY.exists():
                raise RuntimeError(f"npm install of Claude Code failed:\n{result.stderr[-2000:]}")
    return BINARY


def claude_env(base_url: str, home: Path, api_key: str = "test-key") -> dict[str, str]:
    """Environment for an offline headless run with a private HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(_OFFLINE)
    env.update(HOME=str(home), ANTHROPIC_BASE_URL=base_url, ANTHROPIC_API_KEY=api_key)
    return env


def run_claude(
    binary: Path, prompt: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "-p", prompt, *CLAUDE_FLAGS],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )
