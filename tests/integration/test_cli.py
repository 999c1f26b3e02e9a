"""The ``vdm`` command: version, start-up summary, configuration errors."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.support.cli import run_vdm
from tests.support.gateway import run_gateway


def vdm(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_vdm(args, env, cwd=cwd, timeout=30)


def test_version(tmp_path: Path) -> None:
    from vdm import __version__

    result = vdm("version", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"vdm {__version__}"


def test_start_up_summary_shows_providers_and_key_prefixes_only(tmp_path: Path) -> None:
    secret = "sk-live-very-secret-value"
    env = {
        "OPENAI_API_KEY": secret,
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "ZED_API_KEY": "k2",
        "ZED_BASE_URL": "http://127.0.0.1:9",
        "ZED_API_FORMAT": "anthropic",
        "OPENAI_ALIAS_FAST": "gpt-fast",
    }
    with run_gateway(env, tmp_path) as gateway:
        pass
    out = gateway.log()
    assert secret not in out
    assert "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:8] in out
    assert f"http://127.0.0.1:{gateway.url.rsplit(':', 1)[1]}" in out
    assert "default provider: openai" in out
    lines = out.splitlines()
    assert any(
        line.split()[:2] == ["zed", "anthropic"] and "http://127.0.0.1:9" in line
        for line in lines
        if line.strip()
    )
    assert any(line.split()[:2] == ["openai", "openai"] for line in lines if line.strip())
    assert "fast → gpt-fast" in out
    assert "sonnet → gpt-4o" in out  # package fallback alias


def test_with_no_keys_it_says_it_serves_echo(tmp_path: Path) -> None:
    with run_gateway({}, tmp_path) as gateway:
        pass
    out = gateway.log()
    assert "default provider: echo" in out
    assert "offline" in out


def test_configuration_errors_name_their_source_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "vdm.toml").write_text('[server]\nport = 8082\ncolour = "blue"\n')
    result = vdm(
        "server",
        "start",
        env={"HOME": str(tmp_path), "BAD_API_KEY": "k", "BAD_API_FORMAT": "soap"},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "vdm.toml" in result.stderr and "colour" in result.stderr
    assert "BAD_API_FORMAT" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_port_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = vdm("server", "start", "--port", "70000", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_other_tools_keys_do_not_stop_a_start(tmp_path: Path) -> None:
    env = {"PINECONE_API_KEY": "pc-secret-value", "HF_API_KEY": "hf-x", "LOG_LEVEL": "DEBUG"}
    with run_gateway(env, tmp_path) as gateway:
        pass
    out = gateway.log()
    assert "default provider: echo" in out
    ignored = [line for line in out.splitlines() if "ignored" in line]
    assert len(ignored) == 1 and "PINECONE_API_KEY, HF_API_KEY" in ignored[0]
    assert "pc-secret-value" not in out
