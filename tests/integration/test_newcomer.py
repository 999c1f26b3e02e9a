"""The README's first steps in a fresh clone, with an ordinary developer's
shell: other tools' keys, and Claude Code / OpenAI clients already pointed at
the gateway's own address.  The gateway starts and the echo provider answers
the README's first request, as the README shows it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.gateway import Gateway, _wait_ready, clean_env, free_port

ROOT = Path(__file__).resolve().parents[2]


def _clone(tmp: Path) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("the newcomer test needs git and a git checkout")
        pytest.skip("the newcomer test needs git and a git checkout")
    dest = tmp / "vdm"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, timeout=60)
    return dest


def _first_request(readme: str) -> tuple[str, dict[str, object]]:
    """The path and JSON body of the README's first request (its curl command)."""
    section = readme.split("## The first request", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"curl -s localhost:8082(/\S+).*?-d '(\{.*?\})'", section, re.DOTALL)
    assert found, "the README's first request is a curl command with a JSON body"
    return found.group(1), json.loads(found.group(2))


def test_fresh_clone_messy_shell_first_request(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    port = free_port()
    own = f"http://127.0.0.1:{port}"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **clean_env(),
        "PYTHONPATH": str(clone / "src"),  # the clone's code, this venv's dependencies
        "HOME": str(home),
        "PINECONE_API_KEY": "pc-0000",
        "HF_API_KEY": "hf_0000",
        "ANTHROPIC_BASE_URL": own,
        "OPENAI_BASE_URL": own + "/v1",
    }
    where = subprocess.run(
        [sys.executable, "-c", "import vdm; print(vdm.__file__)"],
        env=env,
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(clone))
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vdm", "server", "start", "--port", str(port)],
            env=env,
            cwd=clone,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway = Gateway(own, process, log_path)
    try:
        _wait_ready(gateway, 20)
        path, body = _first_request((clone / "README.md").read_text(encoding="utf-8"))
        request = urllib.request.Request(
            own + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["x-vdm-provider"] == "echo"
            answer = json.load(response)
    finally:
        process.terminate()
        process.wait(15)
    messages = body["messages"]
    assert isinstance(messages, list)
    assert answer["content"][0]["text"] == messages[-1]["content"]  # echo: the user's text
    out = gateway.log()
    assert "default provider: echo" in out
    assert "pc-0000" not in out and "Traceback" not in out
