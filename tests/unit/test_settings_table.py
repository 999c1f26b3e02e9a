"""The settings table: every declared setting loads from a TOML file and from
its environment variable, to the value its example says (not its default)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vdm.config import Settings, load_settings
from vdm.settings.provider import PROVIDER_SETTINGS, for_provider
from vdm.settings.spec import Setting
from vdm.settings_table import SECTIONS, SETTINGS, TOP

SECTION_ROWS = [row for row in SETTINGS if row.section in {s.SECTION for s in SECTIONS}]

# Settings that are only valid beside another one, in the same layer.
COMPANIONS: dict[str, dict[str, Any]] = {
    "grpc.tls-cert": {"tls-key": "FILE"},
    "grpc.tls-key": {"tls-cert": "FILE"},
    "cache.backend": {"server.redis-url": "redis://127.0.0.1:6379/0"},
}
ENV_COMPANIONS: dict[str, dict[str, str]] = {
    "grpc.tls-cert": {"GRPC_TLS_KEY": "FILE"},
    "grpc.tls-key": {"GRPC_TLS_CERT": "FILE"},
    "cache.backend": {"REDIS_URL": "redis://127.0.0.1:6379/0"},
}


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans are spelled alike


def example(row: Setting, tmp_path: Path) -> Any:
    """The row's example; a path that must exist becomes a real file."""
    if row.path in ("grpc.tls-cert", "grpc.tls-key"):
        return str(_file(tmp_path, "pem", "-----BEGIN-----"))
    if row.path == "grpc.jwt-secret-file":
        return str(_file(tmp_path, "jwt", "j" * 40))
    return row.example


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def section_value(settings: Settings, row: Setting) -> Any:
    assert row.field is not None
    return getattr(getattr(settings, row.section), row.field)


def expected(row: Setting, value: Any) -> Any:
    problems: list[str] = []
    parsed = row.kind.parse(value, "example", problems)
    assert not problems
    return parsed


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[dict[str, str], Path]:
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}, cwd


def test_the_table_lists_each_setting_once_with_help_and_an_example() -> None:
    paths = [row.path for row in SETTINGS]
    envs = [row.env for row in SETTINGS if row.env]
    assert len(paths) == len(set(paths)) and len(envs) == len(set(envs))
    for row in SETTINGS:
        assert row.help.endswith("."), row.path
        assert row.example is not None and row.example != row.default, row.path


@pytest.mark.parametrize("row", [r for r in SECTION_ROWS if r.key], ids=lambda r: r.path)
def test_every_key_loads_from_toml(
    row: Setting, dirs: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, cwd = dirs
    value = example(row, tmp_path)
    lines = [f"[{row.section}]", f"{row.key} = {toml_value(value)}"]
    for key, extra in COMPANIONS.get(row.path, {}).items():
        extra = example(row, tmp_path) if extra == "FILE" else extra
        section, _, name = key.rpartition(".")
        lines = [*lines, f"{name} = {toml_value(extra)}"] if not section else lines
        if section:
            lines = [f"[{section}]", f"{name} = {toml_value(extra)}", *lines]
    (cwd / "vdm.toml").write_text("\n".join(lines) + "\n")
    settings = load_settings(env=env, cwd=cwd)
    assert section_value(settings, row) == expected(row, value)
    assert settings.sources[row.path] == str(cwd / "vdm.toml")


@pytest.mark.parametrize("row", [r for r in SECTION_ROWS if r.env], ids=lambda r: r.path)
def test_every_variable_loads_from_the_environment(
    row: Setting, dirs: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, cwd = dirs
    assert row.env is not None
    text = row.kind.env_text(example(row, tmp_path))
    companions = {
        var: (str(example(row, tmp_path)) if value == "FILE" else value)
        for var, value in ENV_COMPANIONS.get(row.path, {}).items()
    }
    settings = load_settings(env={**env, row.env: text, **companions}, cwd=cwd)
    assert section_value(settings, row) == expected(row, row.kind.from_env(text))
    assert settings.sources[row.path] == f"env {row.env}"


TOP_VALUES: dict[str, tuple[str, Callable[[Settings], Any], Any]] = {
    "default-provider": ("echo", lambda s: s.default_provider, "echo"),
    "fallbacks": ("echo:a=echo:b", lambda s: dict(s.fallbacks), {"echo:a": ("echo:b",)}),
}


@pytest.mark.parametrize("row", TOP, ids=lambda r: r.path)
def test_top_level_settings_load_from_toml_and_the_environment(
    row: Setting, dirs: tuple[dict[str, str], Path]
) -> None:
    env, cwd = dirs
    assert row.key is not None and row.env is not None
    text, value_of, want = TOP_VALUES[row.key]
    with_key = {**env, "OPENAI_API_KEY": "k"}  # the package default provider has a key
    if isinstance(row.example, dict):
        (cwd / "vdm.toml").write_text(f"[{row.key}]\n" + toml_value(row.example)[1:-1] + "\n")
    else:
        (cwd / "vdm.toml").write_text(f"{row.key} = {toml_value(row.example)}\n")
    assert value_of(load_settings(env=with_key, cwd=cwd)) == want
    (cwd / "vdm.toml").unlink()
    assert value_of(load_settings(env={**with_key, row.env: text}, cwd=cwd)) == want


# provider setting -> (what it reads as, extra TOML keys / variables it needs)
PROVIDER_VALUES: dict[str, tuple[Callable[[Settings], Any], Any, dict[str, str]]] = {
    "api-key": (lambda s: s.providers["foo"].api_keys, ("sk-1", "sk-2"), {}),
    "base-url": (lambda s: s.providers["foo"].base_url, "https://llm.example/v1", {}),
    "api-format": (lambda s: s.providers["foo"].api_format, "anthropic", {}),
    "api-version": (lambda s: s.providers["foo"].api_version, "2024-01-01", {}),
    "headers": (lambda s: dict(s.providers["foo"].headers), {"x-team": "blue"}, {}),
    "aliases": (lambda s: s.aliases["foo"], {"fast": "small-model"}, {}),
    "fallback-aliases": (lambda s: s.fallback_aliases["foo"], {"haiku": "small-model"}, {}),
    "max-tokens-field": (
        lambda s: s.providers["foo"].max_tokens_field,
        "max_completion_tokens",
        {},
    ),
    "supports-reasoning": (lambda s: s.providers["foo"].supports_reasoning, True, {}),
    "deployments": (
        lambda s: dict(s.providers["foo"].deployments),
        {"gpt-4o": "prod-4o"},
        {"api-format": "azure"},
    ),
    "responses-api": (lambda s: s.providers["foo"].responses_api, "native", {}),
    "forward-organization": (lambda s: s.providers["foo"].forward_organization, True, {}),
    "structured-output": (lambda s: s.providers["foo"].structured_output, "tool", {}),
    "max-connections": (lambda s: s.providers["foo"].max_connections, 8, {}),
    "prices": (
        lambda s: {m: dict(p) for m, p in s.providers["foo"].prices.items()},
        {"my-model": {"input": 0.5, "output": 1.5}},
        {},
    ),
}


def test_every_provider_setting_is_checked_here() -> None:
    assert set(PROVIDER_VALUES) == set(PROVIDER_SETTINGS)


@pytest.mark.parametrize("key", list(PROVIDER_SETTINGS))
def test_every_provider_key_loads_from_toml(key: str, dirs: tuple[dict[str, str], Path]) -> None:
    env, cwd = dirs
    row = PROVIDER_SETTINGS[key]
    value_of, want, extra = PROVIDER_VALUES[key]
    table = {"api-key": "k", "base-url": "https://foo.example/v1", **extra, key: row.example}
    lines = ["[providers.foo]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += [f"[providers.foo.{k}]", *(f'"{n}" = {toml_value(x)}' for n, x in v.items())]
    (cwd / "vdm.toml").write_text("\n".join(lines) + "\n")
    assert value_of(load_settings(env=env, cwd=cwd)) == want


@pytest.mark.parametrize("key", [k for k, r in PROVIDER_SETTINGS.items() if r.env])
def test_every_provider_variable_loads_from_the_environment(
    key: str, dirs: tuple[dict[str, str], Path]
) -> None:
    env, cwd = dirs
    row = for_provider(PROVIDER_SETTINGS[key], "foo")
    assert row.env is not None
    value_of, want, extra = PROVIDER_VALUES[key]
    variables = {"FOO_API_KEY": "k", "FOO_BASE_URL": "https://foo.example/v1"}
    variables |= {f"FOO_{k.upper().replace('-', '_')}": v for k, v in extra.items()}
    if "{" in row.env:  # one variable per entry: FOO_ALIAS_{ALIAS}
        for name, value in row.example.items():
            variables[row.env.split("{")[0] + name.upper().replace("-", "_")] = value
    elif key == "deployments":
        variables[row.env] = ",".join(f"{m}={d}" for m, d in row.example.items())
    else:
        variables[row.env] = row.kind.env_text(row.example)
    assert value_of(load_settings(env={**env, **variables}, cwd=cwd)) == want
