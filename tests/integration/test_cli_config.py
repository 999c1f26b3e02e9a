"""``vdm config show / validate / setup`` as real subprocesses (setup also
driven interactively through a pseudo-terminal with pexpect)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.support.cli import run_vdm
from tests.support.gateway import clean_env, free_port


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def env_for(work: Path, **extra: str) -> dict[str, str]:
    home = work.parent / "home"
    return {**clean_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **extra}


def vdm(work: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_vdm(args, env_for(work, **extra), cwd=work, timeout=30)


def test_validate_lists_every_problem_with_file_and_key(work: Path) -> None:
    user = work.parent / "home/.config/vdm"
    user.mkdir(parents=True)
    (user / "vdm.toml").write_text('[providers.ghost.aliases]\nfast = "m"\n')
    (work / "vdm.toml").write_text(
        '[server]\ncolour = "blue"\n[providers.mine]\napi-key = "k"\nbase-url = "ftp://x"\n'
        '[providers.fmt]\napi-key = "k"\nbase-url = "http://h"\napi-format = "soap"\n'
    )
    (work / ".env").write_text("LOG_FORMAT=yaml\n")
    result = vdm(work, "config", "validate", NOPE_ALIAS_FAST="m")
    assert result.returncode == 1
    err = result.stderr
    local = str(work / "vdm.toml")
    assert f"{local}: unknown key 'server.colour'" in err
    assert "LOG_FORMAT" in err and "log format" in err
    assert "Traceback" not in err
    # with the unknown key fixed, the other layers' problems show too
    (work / "vdm.toml").write_text(
        '[providers.mine]\napi-key = "k"\nbase-url = "ftp://x"\n'
        '[providers.fmt]\napi-key = "k"\nbase-url = "http://h"\napi-format = "soap"\n'
    )
    result = vdm(work, "config", "validate", NOPE_ALIAS_FAST="m")
    err = result.stderr
    assert result.returncode == 1
    assert "providers.mine.base-url: not an http(s) URL" in err and local in err
    assert "providers.fmt.api-format: api format must be" in err
    assert (
        f"{user / 'vdm.toml'}: providers.ghost.aliases: provider 'ghost' is not configured" in err
    )
    assert "NOPE_ALIAS_FAST" in err and "'nope'" in err
    assert "problem(s)" in err


def test_an_unknown_middleware_stops_validate_and_start_with_the_known_names(
    work: Path,
) -> None:
    """The settings take the middleware names from the chain (vdm.validate):
    both entry points still refuse a name the chain does not know."""
    (work / "vdm.toml").write_text('[middleware]\nenabled = ["request-log", "nope"]\n')
    checked = vdm(work, "config", "validate")
    assert checked.returncode == 1
    assert f"{work / 'vdm.toml'}: middleware.enabled: unknown middleware 'nope'" in checked.stderr
    assert "known: request-log, gemini-thought-signatures" in checked.stderr
    started = vdm(work, "server", "start", "--port", str(free_port()))
    assert started.returncode == 2
    assert "unknown middleware 'nope'" in started.stderr and "Traceback" not in started.stderr


def test_validate_accepts_a_good_configuration(work: Path) -> None:
    result = vdm(work, "config", "validate", OPENAI_API_KEY="sk-x")
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout and "openai" in result.stdout


def test_show_names_each_source_and_masks_secrets(work: Path) -> None:
    secret, proxy = "sk-very-secret-1", "proxy-secret-2"
    (work / "vdm.toml").write_text("[server]\nport = 9001\n")
    (work / ".env").write_text(f"OPENAI_API_KEY={secret}\n")
    result = vdm(
        work,
        "config",
        "show",
        "--json",
        PROXY_API_KEY=proxy,
        REDIS_URL="redis://user:pw-secret@host:6379/0",
        REDIS_NAMESPACE="team-a",
        CACHE_MODELS="openai:gpt-4o=120",
    )
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout and proxy not in result.stdout
    assert "pw-secret" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["server.port"] == {"value": 9001, "source": str(work / "vdm.toml")}
    assert shown["server.host"] == {"value": "127.0.0.1", "source": "default"}
    assert shown["server.proxy-api-key"]["source"] == "env PROXY_API_KEY"
    assert shown["server.proxy-api-key"]["value"].startswith("sha256:")
    assert shown["providers.openai.api-key"]["source"] == f"{work / '.env'}: OPENAI_API_KEY"
    assert shown["providers.openai.base-url"]["source"] == "defaults.toml"
    assert shown["server.max-retries"]["source"] == "default"
    assert shown["server.redis-namespace"] == {"value": "team-a", "source": "env REDIS_NAMESPACE"}
    assert shown["cache.backend"]["value"] == "redis"  # the default with REDIS_URL
    assert shown["cache.models"] == {"value": {"openai:gpt-4o": 120}, "source": "env CACHE_MODELS"}
    table = vdm(work, "config", "show")
    assert table.returncode == 0 and "server.port" in table.stdout and secret not in table.stdout


def test_setup_from_flags_writes_files_that_load(work: Path) -> None:
    result = vdm(
        work,
        "config",
        "setup",
        "--yes",
        "--provider",
        "local",
        "--api-key",
        "sk-local",
        "--base-url",
        "http://127.0.0.1:11434/v1",
        "--port",
        "9100",
    )
    assert result.returncode == 0, result.stderr
    assert "sk-local" not in result.stdout
    toml = (work / "vdm.toml").read_text()
    assert 'default-provider = "local"' in toml and "port = 9100" in toml
    assert 'base-url = "http://127.0.0.1:11434/v1"' in toml and "sk-local" not in toml
    assert (work / ".env").read_text() == 'LOCAL_API_KEY="sk-local"\n'
    assert oct((work / ".env").stat().st_mode & 0o777) == "0o600"
    shown = json.loads(vdm(work, "config", "show", "--json").stdout)
    assert shown["default-provider"]["value"] == "local"
    assert shown["server.port"]["value"] == 9100

    again = vdm(work, "config", "setup", "--yes", "--provider", "local", "--api-key", "k")
    assert again.returncode == 1 and "--force" in again.stderr
    missing = vdm(
        work, "config", "setup", "--yes", "--force", "--provider", "custom", "--api-key", "k"
    )
    assert missing.returncode == 1 and "--base-url" in missing.stderr


def test_setup_interactive_wizard(work: Path) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "vdm", "config", "setup"],
        cwd=str(work),
        env=env_for(work, COLUMNS="200"),
        encoding="utf-8",
        timeout=20,
    )
    child.expect(r"Provider \[openai\]:")
    child.sendline("openrouter")
    child.expect(r"Base URL \[https://openrouter.ai/api/v1\]:")
    child.sendline("")
    child.expect("API key for openrouter:")
    child.sendline("sk-or-typed")
    child.expect(r"Make openrouter the default provider\? \[Y/n\]:")
    child.sendline("y")
    child.expect(r"Host \[127.0.0.1\]:")
    child.sendline("")
    child.expect(r"Port \[8082\]:")
    child.sendline("8200")
    child.expect("configuration is valid")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "sk-or-typed" not in (child.before or "")
    toml = (work / "vdm.toml").read_text()
    assert 'default-provider = "openrouter"' in toml and "port = 8200" in toml
    assert "base-url" not in toml  # the built-in one was kept
    assert (work / ".env").read_text() == 'OPENROUTER_API_KEY="sk-or-typed"\n'


def test_setup_checks_before_it_writes_and_writes_atomically(work: Path) -> None:
    (work / ".env").write_text("OTHER=kept\n")
    (work / ".env").chmod(0o644)
    flags = ("config", "setup", "--yes", "--provider", "local", "--api-key", "sk-local")
    bad = vdm(work, *flags, "--base-url", "ftp://nowhere")
    assert bad.returncode == 1
    assert f"{work / 'vdm.toml'}: providers.local.base-url: not an http(s) URL" in bad.stderr
    assert "nothing written" in bad.stderr
    assert not (work / "vdm.toml").exists()  # nothing half-written to refuse next time
    assert (work / ".env").read_text() == "OTHER=kept\n"
    assert sorted(p.name for p in work.iterdir()) == [".env"]

    good = vdm(work, *flags, "--base-url", "http://127.0.0.1:11434/v1")  # no --force needed
    assert good.returncode == 0, good.stderr
    assert (work / ".env").read_text() == 'OTHER=kept\nLOCAL_API_KEY="sk-local"\n'
    assert oct((work / ".env").stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in work.iterdir()) == [".env", "vdm.toml"]  # no temp file left
    assert vdm(work, "config", "validate").returncode == 0

    (work / "vdm.toml").unlink()  # (its good base URL would win over the user file's)
    user = vdm(work, *flags, "--user", "--base-url", "gopher://x")
    assert user.returncode == 1 and "nothing written" in user.stderr
    assert not (work.parent / "home/.config/vdm/vdm.toml").exists()


def test_validate_reports_provider_prefixes_that_look_like_typos(work: Path) -> None:
    (work / "vdm.toml").write_text(
        '[fallbacks]\n"sonnet" = ["fakaei:model", "fakeai:fine"]\n'
        '"opus" = ["groq:llama-3.3-70b"]\n'
        "[providers.fakeai.aliases]\n"
        'fast = "fakaie:mini"\n'
        "[grpc]\n"
        'default-model = "fakeia:large"\n'
    )
    env = {"FAKEAI_API_KEY": "k", "FAKEAI_BASE_URL": "http://127.0.0.1:9/v1"}
    result = vdm(work, "config", "validate", **env)
    assert result.returncode == 1, result.stdout
    err = result.stderr
    assert "fallbacks.sonnet: 'fakaei:model': no provider 'fakaei'; did you mean 'fakeai'?" in err
    assert "fakeai:fine" not in err
    assert "providers.fakeai.aliases.fast: 'fakaie:mini'" in err
    assert "grpc.default-model: 'fakeia:large'" in err
    assert "'groq:llama-3.3-70b' names provider 'groq', which is not configured" in err
    assert str(work / "vdm.toml") in err
    assert "4 configuration problem(s)" in err


def test_unknown_keys_get_a_did_you_mean(work: Path) -> None:
    (work / "vdm.toml").write_text(
        "[server]\nprot = 9000\n[cache]\nmax-tll = 5\n"
        '[providers.mine]\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    result = vdm(work, "config", "validate")
    assert result.returncode == 1
    err = result.stderr
    assert "unknown key 'server.prot'; did you mean 'server.port'?" in err
    assert "unknown key 'cache.max-tll'; did you mean 'cache.max-ttl'?" in err
    assert "unknown key 'providers.mine.base_url'; did you mean 'providers.mine.base-url'?" in err


def test_show_lists_every_section_whole_when_piped_and_typed_in_json(work: Path) -> None:
    long_url = "http://127.0.0.1:9/" + "/".join(["a-rather-long-path-segment"] * 5) + "/v1"
    env = {
        "LONG_API_KEY": "sk-long-secret",
        "LONG_BASE_URL": long_url,
        "MANAGEMENT_TOKEN": "management-token-0123456789",
        "DATABASE_URL": "postgresql://vdm:db-password@db.internal:5432/vdm",
        "GRPC_PORT": "50061",
        "CACHE_MODELS": "long:m=60",
        "VDM_FALLBACKS": "sonnet=long:a,long:b",
    }
    table = vdm(work, "config", "show", **env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert f"providers.long.base-url\t{long_url}\tenv LONG_BASE_URL" in lines  # whole
    for section in ("server.", "grpc.", "tenants.", "cache.", "middleware.", "providers."):
        assert any(line.startswith(section) for line in lines), section
    assert "grpc.port\t50061\tenv GRPC_PORT" in lines
    assert "tenants.database-url\tpostgresql://vdm:***@db.internal:5432/vdm\tenv DATABASE_URL" in (
        lines
    )
    for secret in ("sk-long-secret", "management-token-0123456789", "db-password"):
        assert secret not in table.stdout

    shown = json.loads(vdm(work, "config", "show", "--json", **env).stdout)
    assert shown["server.port"]["value"] == 8082
    assert shown["server.request-timeout"]["value"] == 90.0
    assert shown["server.models-prefetch"]["value"] is True
    assert shown["server.max-tokens-limit"]["value"] is None
    assert shown["grpc.port"]["value"] == 50061
    assert shown["cache.shared"]["value"] is False
    assert shown["cache.models"]["value"] == {"long:m": 60}
    assert shown["fallbacks.sonnet"]["value"] == ["long:a", "long:b"]
    assert shown["providers.long.api-key"]["value"][0].startswith("sha256:")
    assert shown["tenants.management-token"]["value"].startswith("sha256:")
    assert shown["tenants.database-url"]["value"] == "postgresql://vdm:***@db.internal:5432/vdm"
    assert shown["middleware.enabled"]["value"] == []
