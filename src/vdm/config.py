"""Settings: package defaults < user TOML < local TOML < .env < environment.

Everything is read and validated once, at start-up, into an immutable
:class:`Settings`; nothing on the request path reads the environment or a
file.  Every problem is a :class:`ConfigError` naming its source (the file
and key, or the environment variable).

Providers are discovered from ``{NAME}_API_KEY`` (and ``api-key`` in TOML);
their other settings come from ``{NAME}_BASE_URL``, ``{NAME}_API_FORMAT``,
``{NAME}_API_VERSION``, ``{NAME}_CUSTOM_HEADER_{HEADER}`` and
``{NAME}_ALIAS_{ALIAS}``, or the same keys under ``[providers.NAME]``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from dotenv import dotenv_values

ApiFormat = Literal["openai", "anthropic", "echo"]
API_FORMATS = ("openai", "anthropic")
PASSTHROUGH_KEY = "!PASSTHRU"
ECHO = "echo"

# Environment names that end in _API_KEY but are not providers.
_NOT_PROVIDERS = frozenset({"PROXY", "VDM"})
_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """One or more configuration problems, each naming where it comes from."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    api_format: ApiFormat
    base_url: str
    api_keys: tuple[str, ...] = ()
    api_version: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    max_tokens_field: str = "max_tokens"
    supports_reasoning: bool = False

    @property
    def has_key(self) -> bool:
        return bool(self.api_keys) or self.api_format == ECHO

    @property
    def key_fingerprints(self) -> list[str]:
        """Keys as short SHA-256 prefixes: safe to print or log."""
        return [fingerprint(k) for k in self.api_keys]


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8082
    log_level: str = "INFO"
    request_timeout: float = 90.0
    max_tokens_limit: int | None = None
    max_body_size: int = 32 * 1024 * 1024
    max_upload_size: int = 512 * 1024 * 1024
    proxy_api_key: str | None = None
    # vdm.passthrough.Rule entries; None: the package default allowlist.
    passthrough_allow: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    providers: Mapping[str, ProviderSettings]  # in discovery order, echo last
    default_provider: str
    default_provider_source: str
    aliases: Mapping[str, Mapping[str, str]]  # provider -> alias -> model (user-defined)
    fallback_aliases: Mapping[str, Mapping[str, str]]  # provider -> alias -> model
    sources: Mapping[str, str] = field(default_factory=dict)


def fingerprint(secret: str) -> str:
    if secret == PASSTHROUGH_KEY:
        return PASSTHROUGH_KEY
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:8]


# ---------------------------------------------------------------- TOML layers

_TOP_KEYS = {"default-provider", "server", "providers"}
_SERVER_KEYS = {
    "host", "port", "log-level", "request-timeout", "max-tokens-limit", "max-body-size",
    "max-upload-size", "proxy-api-key", "passthrough-allow",
}
_PROVIDER_KEYS = {
    "base-url", "api-format", "api-key", "api-version", "headers", "aliases",
    "fallback-aliases", "max-tokens-field", "supports-reasoning",
}


def user_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "vdm" / "vdm.toml"


def _read_toml(path: Path, source: str, problems: list[str]) -> dict[str, Any]:
    """One TOML layer; its problems are added to ``problems`` (all are reported)."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{source}: cannot read: {exc}")
        return {}
    found = _check_toml_keys(data, source)
    problems += found
    return {} if found else data


def _check_toml_keys(data: dict[str, Any], source: str) -> list[str]:
    problems = [f"{source}: unknown key '{k}'" for k in data if k not in _TOP_KEYS]
    server = data.get("server", {})
    if not isinstance(server, dict):
        problems.append(f"{source}: 'server' must be a table")
    else:
        problems += [f"{source}: unknown key 'server.{k}'" for k in server if k not in _SERVER_KEYS]
    providers = data.get("providers", {})
    if not isinstance(providers, dict):
        problems.append(f"{source}: 'providers' must be a table")
        return problems
    for name, table in providers.items():
        if not isinstance(table, dict):
            problems.append(f"{source}: 'providers.{name}' must be a table")
            continue
        if not _PROVIDER_NAME.match(name):
            problems.append(f"{source}: provider name '{name}' must be lowercase [a-z0-9_]")
        problems += [
            f"{source}: unknown key 'providers.{name}.{k}'"
            for k in table if k not in _PROVIDER_KEYS
        ]
    return problems


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- loading


def load_settings(
    env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Settings:
    """Read every layer and return validated settings (or raise ConfigError)."""
    cwd = cwd or Path.cwd()
    if env is None:
        dotenv = {k: v for k, v in dotenv_values(cwd / ".env").items() if v is not None}
        env = {**dotenv, **os.environ}
    sources: dict[str, str] = {}
    problems: list[str] = []

    defaults_text = resources.files("vdm").joinpath("defaults.toml").read_text()
    layers: list[tuple[str, dict[str, Any]]] = [("defaults.toml", tomllib.loads(defaults_text))]
    user_path = user_config_path(env)
    layers.append((str(user_path), _read_toml(user_path, str(user_path), problems)))
    local_path = cwd / "vdm.toml"
    layers.append((str(local_path), _read_toml(local_path, str(local_path), problems)))

    merged: dict[str, Any] = {}
    for source, layer in layers:
        _record_sources(layer, source, sources)
        merged = _merge(merged, layer)

    server = _server_settings(merged.get("server", {}), env, sources, problems)
    providers, aliases, fallbacks = _providers(merged.get("providers", {}), env, sources, problems)
    default, default_source = _default_provider(merged, env, sources, providers, problems)
    if problems:
        raise ConfigError(problems)
    return Settings(
        server=server,
        providers=providers,
        default_provider=default,
        default_provider_source=default_source,
        aliases=aliases,
        fallback_aliases=fallbacks,
        sources=sources,
    )


def _record_sources(layer: dict[str, Any], source: str, sources: dict[str, str]) -> None:
    def walk(prefix: str, table: dict[str, Any]) -> None:
        for key, value in table.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and key not in ("headers",):
                walk(path + ".", value)
            else:
                sources[path] = source

    walk("", layer)


def _server_settings(
    table: dict[str, Any], env: Mapping[str, str], sources: dict[str, str], problems: list[str]
) -> ServerSettings:
    def pick(key: str, env_name: str) -> tuple[Any, str]:
        if env_name in env and env[env_name] != "":
            sources[f"server.{key}"] = f"env {env_name}"
            return env[env_name], f"environment variable {env_name}"
        return table.get(key), f"{sources.get(f'server.{key}', 'defaults.toml')}: server.{key}"

    host, _ = pick("host", "HOST")
    port = _as_int(*pick("port", "PORT"), problems, low=1, high=65535)
    level, level_src = pick("log-level", "LOG_LEVEL")
    level = str(level or "INFO").upper()
    if level not in _LOG_LEVELS:
        problems.append(f"{level_src}: log level must be one of {', '.join(_LOG_LEVELS)}")
    timeout = _as_float(*pick("request-timeout", "REQUEST_TIMEOUT"), problems)
    limit = _as_int(*pick("max-tokens-limit", "MAX_TOKENS_LIMIT"), problems, low=1)
    body = _as_int(*pick("max-body-size", "MAX_BODY_SIZE"), problems, low=1024)
    upload = _as_int(*pick("max-upload-size", "MAX_UPLOAD_SIZE"), problems, low=1024)
    proxy_key, _ = pick("proxy-api-key", "PROXY_API_KEY")
    allow = _allowlist(*pick("passthrough-allow", "PASSTHROUGH_ALLOW"), problems)
    return ServerSettings(
        host=str(host or "127.0.0.1"),
        port=port or 8082,
        log_level=level,
        request_timeout=timeout or 90.0,
        max_tokens_limit=limit,
        max_body_size=body or 32 * 1024 * 1024,
        max_upload_size=upload or 512 * 1024 * 1024,
        proxy_api_key=str(proxy_key) if proxy_key else None,
        passthrough_allow=allow,
    )


def _allowlist(value: Any, source: str, problems: list[str]) -> tuple[Any, ...] | None:
    """``passthrough-allow``: the syntax of :mod:`vdm.passthrough` as one string
    (``;``-separated) or, in TOML, an array of entries."""
    if value is None:
        return None
    from vdm.passthrough import parse_allowlist  # imports the provider layer

    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "; ".join(value)
    if not isinstance(value, str):
        problems.append(f"{source}: expected a string like 'GET,POST /v1/files; POST "
                        f"/v1/embeddings' (or an array of such entries), got {value!r}")
        return None
    try:
        return parse_allowlist(value)
    except ValueError as exc:
        problems.append(f"{source}: invalid passthrough allowlist: {exc}")
        return None


def _as_int(
    value: Any, source: str, problems: list[str], *, low: int | None = None,
    high: int | None = None,
) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        bounds = f" between {low} and {high}" if high else (f" >= {low}" if low else "")
        problems.append(f"{source}: expected an integer{bounds}, got {value!r}")
        return None
    return number


def _as_float(value: Any, source: str, problems: list[str]) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.append(f"{source}: expected a number of seconds, got {value!r}")
        return None
    if number <= 0:
        problems.append(f"{source}: expected a positive number of seconds, got {value!r}")
        return None
    return number


def _bool(value: Any, source: str, problems: list[str]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    problems.append(f"{source}: expected true or false, got {value!r}")
    return False


def _providers(
    tables: dict[str, Any], env: Mapping[str, str], sources: dict[str, str], problems: list[str]
) -> tuple[dict[str, ProviderSettings], dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    # Discovery order: environment keys (as the environment lists them), then
    # TOML tables with an api-key.  echo is always there, last.
    names: list[str] = []
    for var in env:
        if var.endswith("_API_KEY") and env[var].strip():
            prefix = var[: -len("_API_KEY")]
            if prefix and prefix not in _NOT_PROVIDERS and "__" not in prefix:
                name = prefix.lower()
                if _PROVIDER_NAME.match(name) and name not in names:
                    names.append(name)
    for name, table in tables.items():
        if isinstance(table, dict) and table.get("api-key") and name not in names:
            names.append(name)

    providers: dict[str, ProviderSettings] = {}
    aliases: dict[str, dict[str, str]] = {}
    fallbacks: dict[str, dict[str, str]] = {}
    for name in names:
        if name == ECHO:
            problems.append("provider name 'echo' is reserved for the built-in offline provider")
            continue
        table = tables.get(name, {})
        provider = _provider(name, table, env, sources, problems)
        if provider is None:
            continue
        providers[name] = provider
        aliases[name] = _aliases(name, table, env, sources, problems)
        fallbacks[name] = _alias_table(table.get("fallback-aliases", {}), name, problems)
    providers[ECHO] = ProviderSettings(name=ECHO, api_format=ECHO, base_url="builtin:echo")
    aliases[ECHO] = _aliases(ECHO, tables.get(ECHO, {}), env, sources, problems)
    fallbacks[ECHO] = {}
    return providers, aliases, fallbacks


def _provider(
    name: str, table: dict[str, Any], env: Mapping[str, str], sources: dict[str, str],
    problems: list[str],
) -> ProviderSettings | None:
    upper = name.upper()

    def pick(key: str, suffix: str) -> tuple[Any, str]:
        var = f"{upper}_{suffix}"
        if env.get(var):
            sources[f"providers.{name}.{key}"] = f"env {var}"
            return env[var], f"environment variable {var}"
        return table.get(key), (
            f"{sources.get(f'providers.{name}.{key}', 'config')}: providers.{name}.{key}"
        )

    raw_key, key_src = pick("api-key", "API_KEY")
    keys = tuple(str(raw_key).split()) if raw_key else ()
    fmt, fmt_src = pick("api-format", "API_FORMAT")
    fmt = str(fmt or "openai").lower()
    if fmt not in API_FORMATS:
        problems.append(f"{fmt_src}: api format must be 'openai' or 'anthropic', got {fmt!r}")
        return None
    base_url, url_src = pick("base-url", "BASE_URL")
    if not base_url:
        problems.append(
            f"provider '{name}': no base URL; set {upper}_BASE_URL "
            f"(or base-url under [providers.{name}])"
        )
        return None
    base_url = str(base_url).rstrip("/")
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        problems.append(f"{url_src}: not an http(s) URL: {base_url!r}")
        return None
    version, _ = pick("api-version", "API_VERSION")
    headers = {str(k): str(v) for k, v in (table.get("headers") or {}).items()}
    header_prefix = f"{upper}_CUSTOM_HEADER_"
    for var, value in env.items():
        if var.startswith(header_prefix) and len(var) > len(header_prefix):
            headers[var[len(header_prefix):].replace("_", "-").lower()] = value
    reasoning_raw, reasoning_src = pick("supports-reasoning", "SUPPORTS_REASONING")
    reasoning = _bool(reasoning_raw, reasoning_src, problems) if reasoning_raw is not None else False
    field_name, field_src = pick("max-tokens-field", "MAX_TOKENS_FIELD")
    field_name = str(field_name or "max_tokens")
    if field_name not in ("max_tokens", "max_completion_tokens"):
        problems.append(
            f"{field_src}: expected 'max_tokens' or 'max_completion_tokens', got {field_name!r}"
        )
    del key_src
    return ProviderSettings(
        name=name,
        api_format=fmt,  # type: ignore[arg-type]
        base_url=base_url,
        api_keys=keys,
        api_version=str(version) if version else None,
        headers=headers,
        max_tokens_field=field_name,
        supports_reasoning=reasoning,
    )


def _alias_table(table: Any, provider: str, problems: list[str]) -> dict[str, str]:
    if not isinstance(table, dict):
        problems.append(f"providers.{provider}: aliases must be a table of name = model")
        return {}
    out = {}
    for alias, model in table.items():
        if not isinstance(model, str) or not model:
            problems.append(f"providers.{provider}.aliases.{alias}: expected a model name")
            continue
        out[str(alias)] = model
    return out


def _aliases(
    name: str, table: dict[str, Any], env: Mapping[str, str], sources: dict[str, str],
    problems: list[str],
) -> dict[str, str]:
    out = _alias_table(table.get("aliases", {}), name, problems)
    prefix = f"{name.upper()}_ALIAS_"
    for var, model in env.items():
        if var.startswith(prefix) and len(var) > len(prefix) and model:
            alias = var[len(prefix):].lower()  # env names are upper-case by habit
            out[alias] = model
            sources[f"providers.{name}.aliases.{alias}"] = f"env {var}"
    return out


def _default_provider(
    merged: dict[str, Any], env: Mapping[str, str], sources: dict[str, str],
    providers: Mapping[str, ProviderSettings], problems: list[str],
) -> tuple[str, str]:
    if env.get("VDM_DEFAULT_PROVIDER"):
        name, source = env["VDM_DEFAULT_PROVIDER"].lower(), "env VDM_DEFAULT_PROVIDER"
    else:
        name = str(merged.get("default-provider", ECHO)).lower()
        source = sources.get("default-provider", "defaults.toml")
    if name in providers:
        return name, source
    if source != "defaults.toml":
        problems.append(
            f"{source}: default provider '{name}' is not configured "
            f"(configured: {', '.join(providers)}); set {name.upper()}_API_KEY or pick another"
        )
        return ECHO, source
    # The package default is only a preference: take the first configured one.
    first = next(iter(providers))
    return first, f"first configured provider ({source} names '{name}', which has no key)"
