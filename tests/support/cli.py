"""The ``vdm`` command as the tests run it: a real subprocess, the test
process's environment without anything that configures vdm (plus what a test
gives), nothing on stdin."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.gateway import clean_env

# A client that ``vdm wrap`` runs: one Anthropic request through the base URL
# and key the wrapper gave it, both base URLs and the answer printed, its exit
# code its first argument.
WRAPPED_CLIENT = """
import json, os, sys, urllib.request
base = os.environ["ANTHROPIC_BASE_URL"]
body = json.dumps({"model": "m", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "wrapped hello"}]}).encode()
req = urllib.request.Request(base + "/v1/messages", data=body,
                             headers={"content-type": "application/json",
                                      "x-api-key": os.environ["ANTHROPIC_API_KEY"]})
answer = json.load(urllib.request.urlopen(req, timeout=10))
print("BASE", base, os.environ["OPENAI_BASE_URL"], answer["content"][0]["text"])
sys.exit(int(sys.argv[1]))
"""


def run_vdm(
    args: tuple[str, ...] | list[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``vdm *args`` with ``env`` over the clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "vdm", *args],
        env={**clean_env(), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def vdm(tmp: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``vdm *args`` run by an operator whose home, state and working
    directory are under ``tmp`` (no model prefetch, a short drain)."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {
        "HOME": str(home),
        "XDG_STATE_HOME": str(tmp / "state"),
        "MODELS_PREFETCH": "false",
        "SHUTDOWN_TIMEOUT": "5",
        **extra,
    }
    return run_vdm(args, env, cwd=tmp)


def wrap(tmp: Path, url: str, *command: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``vdm wrap`` onto the gateway at ``url`` (its port), running ``command``."""
    return vdm(tmp, "wrap", "--port", url.rsplit(":", 1)[1], *command, **extra)
