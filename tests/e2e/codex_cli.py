"""Install and run the real Codex CLI, headless, against a local base URL.

What a run needs (found with Codex CLI 0.169.0 against a recording server):

* a private ``CODEX_HOME`` whose ``config.toml`` names a custom provider:
  ``base_url`` (Codex posts to ``{base_url}/responses``), ``env_key`` (the variable
  holding the key it sends as a bearer token) and ``wire_api = "responses"``, the only
  wire Codex still speaks;
* ``codex exec --skip-git-repo-check`` (the work directory is no git repository) and
  ``--dangerously-bypass-approvals-and-sandbox``, so ``exec_command`` runs without a
  prompt or a sandbox the test machine may not offer;
* a model Codex has no metadata for only earns a warning; it is sent as given.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.e2e.npm_cli import NpmCli, no_proxy_for_loopback

CODEX_VERSION = "0.169.0"
"""The version the fixtures in ``tests/fixtures/codex`` were captured from
(``VDM_CODEX_VERSION`` installs another; an existing install in ``.cache/codex`` is used)."""

CODEX = NpmCli("@openai/codex", CODEX_VERSION, "VDM_CODEX_VERSION", "codex", "codex")
KEY_VARIABLE = "VDM_CODEX_TEST_KEY"


def codex_env(base_url: str, home: Path, model: str, api_key: str = "test-key") -> dict[str, str]:
    """The environment of a run with ``home`` as ``CODEX_HOME`` (and ``HOME``), its
    ``config.toml`` pointing ``model`` at ``base_url`` (which ends in ``/v1``).

    Starts from os.environ without any OPENAI_* or CODEX_* variable, so a developer's
    own key or settings never leak into the run."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "vdm"\n'
        "[model_providers.vdm]\n"
        'name = "vdm"\n'
        f'base_url = "{base_url}"\n'
        f'env_key = "{KEY_VARIABLE}"\n'
        'wire_api = "responses"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update(CODEX_HOME=str(home), HOME=str(home), **{KEY_VARIABLE: api_key})
    no_proxy_for_loopback(env)
    return env


def run_codex(
    binary: Path, prompt: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``codex exec PROMPT`` in ``cwd``, without approvals or sandbox; output captured."""
    return subprocess.run(
        [
            str(binary),
            "exec",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            prompt,
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
