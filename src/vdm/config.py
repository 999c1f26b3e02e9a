"""Settings: package defaults < user TOML < local TOML < .env < environment.

Everything is read and validated once, at start-up, into an immutable
:class:`Settings`; nothing on the request path reads the environment or a
file.  Every problem is a :class:`ConfigError` naming its source (the file
and key, or the environment variable).

Each setting is declared once (:mod:`vdm.settings`: section, key, variable,
kind, default, help); this module reads the layers, lets each section read
its settings from them, and assembles the result.  Providers come from
``{NAME}_API_KEY`` variables and ``[providers.NAME]`` tables
(:mod:`vdm.settings.providers`).

Middleware are named, in order, by ``MIDDLEWARE`` (comma-separated) or
``[middleware] enabled``; ``GEMINI_THOUGHT_SIGNATURES_ENABLED=true`` adds
``gemini-thought-signatures`` when it is not listed.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from vdm import loops
from vdm.cache.settings import CacheSettings, cache_settings
from vdm.dirs import user_config_path
from vdm.settings.load import Read, merge, read_section, read_toml, record_sources
from vdm.settings.provider import (
    API_FORMATS,
    AZURE,
    AZURE_DEFAULT_API_VERSION,
    ECHO,
    PASSTHROUGH_KEY,
    RESPONSES_APIS,
    STRUCTURED_OUTPUTS,
    ApiFormat,
    ProviderSettings,
    StructuredOutput,
    fingerprint,
)
from vdm.settings.providers import (
    AZURE_DEPLOYMENT_NAME,
    AZURE_HOST_SUFFIXES,
    PROVIDER_NAME,
    env_providers,
    is_azure_host,
    providers_of,
)
from vdm.settings.sections import (
    GEMINI_THOUGHT_SIGNATURES,
    JWT_SECRET_MIN_LENGTH,
    LOG_FORMATS,
    LOG_LEVELS,
    GrpcSettings,
    MiddlewareSettings,
    ServerSettings,
    jwt_secret,
)
from vdm.settings.spec import ConfigError, rows
from vdm.settings_table import unknown_keys
from vdm.tenants.settings import TenantSettings, tenant_settings

__all__ = [
    "API_FORMATS",
    "AZURE",
    "AZURE_DEFAULT_API_VERSION",
    "AZURE_DEPLOYMENT_NAME",
    "AZURE_HOST_SUFFIXES",
    "ECHO",
    "JWT_SECRET_MIN_LENGTH",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "PASSTHROUGH_KEY",
    "RESPONSES_APIS",
    "STRUCTURED_OUTPUTS",
    "ApiFormat",
    "ConfigError",
    "GrpcSettings",
    "MiddlewareSettings",
    "ProviderSettings",
    "ServerSettings",
    "Settings",
    "StructuredOutput",
    "env_providers",
    "fingerprint",
    "is_azure_host",
    "key_id",
    "lint",
    "load_settings",
    "user_config_path",
]


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    providers: Mapping[str, ProviderSettings]  # in discovery order, echo last
    default_provider: str
    default_provider_source: str
    aliases: Mapping[str, Mapping[str, str]]  # provider -> alias -> model (user-defined)
    fallback_aliases: Mapping[str, Mapping[str, str]]  # provider -> alias -> model
    sources: Mapping[str, str] = field(default_factory=dict)
    # model or alias -> ordered alternatives (model strings), tried when it fails
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # *_API_KEY variables that named no provider (not known, no base URL): ignored.
    ignored_keys: tuple[str, ...] = ()
    middleware: MiddlewareSettings = field(default_factory=MiddlewareSettings)
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    tenants: TenantSettings = field(default_factory=TenantSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)

    @property
    def operator_key(self) -> str | None:
        """The operator's credential (``/metrics``, ``/health`` in full, the
        dashboard): ``MANAGEMENT_TOKEN`` when set, else ``PROXY_API_KEY``."""
        return self.tenants.management_token or self.server.proxy_api_key


def key_id(provider: str, secret: str) -> str:
    """A provider key's name in logs and shared state (Redis): a hash, never the key."""
    return f"{provider}:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- TOML layers


def _read_toml(path: Path, source: str, problems: list[str]) -> dict[str, Any]:
    """One TOML layer; its problems are added to ``problems`` (all are reported)."""
    data = read_toml(path, source, problems)
    if data is None:
        return {}
    found = unknown_keys(data, source, PROVIDER_NAME)
    problems += found
    return {} if found else data


# ---------------------------------------------------------------- loading


def load_settings(
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    *,
    middleware: Collection[str] | None = None,
) -> Settings:
    """Read every layer and return validated settings (or raise ConfigError).

    ``middleware``: the names a ``[middleware]`` list may hold (the chain's, given
    by :func:`vdm.validate.load_settings`); None takes the names as written."""
    cwd = cwd or Path.cwd()
    from_dotenv: set[str] = set()
    if env is None:
        dotenv = {k: v for k, v in dotenv_values(cwd / ".env").items() if v is not None}
        from_dotenv = set(dotenv) - set(os.environ)
        env = {**dotenv, **os.environ}
    sources: dict[str, str] = {}
    problems: list[str] = []

    layers: list[tuple[str, dict[str, Any]]] = [("defaults.toml", _package_defaults())]
    user_path = user_config_path(env)
    layers.append((str(user_path), _read_toml(user_path, str(user_path), problems)))
    local_path = cwd / "vdm.toml"
    layers.append((str(local_path), _read_toml(local_path, str(local_path), problems)))

    merged: dict[str, Any] = {}
    for source, layer in layers:
        record_sources(layer, source, sources)
        merged = merge(merged, layer)

    server = _server_settings(merged.get("server", {}), env, sources, problems)
    chain = _middleware_settings(merged.get("middleware", {}), env, sources, problems, middleware)
    grpc = _grpc_settings(merged.get("grpc", {}), env, sources, problems, server)
    tables = merged.get("providers", {})
    env_names, ignored = env_providers(env, tables if isinstance(tables, dict) else {})
    providers, aliases, fallbacks = providers_of(tables, env_names, env, sources, problems)
    default, default_source = _default_provider(merged, env, sources, providers, problems)
    tenants = tenant_settings(merged.get("tenants", {}), env, sources, problems)
    cache = cache_settings(merged.get("cache", {}), env, sources, problems, server.redis_url)
    model_fallbacks = _fallbacks(merged.get("fallbacks", {}), env, sources, problems)
    if not problems:
        _check_fallbacks(model_fallbacks, providers, default, aliases, fallbacks, problems)
    if problems:
        raise ConfigError(problems)
    for key, source in sources.items():  # "env X" that only ./.env set
        if source.startswith("env ") and source[4:] in from_dotenv:
            sources[key] = f"{cwd / '.env'}: {source[4:]}"
    server, providers = _loop_guard(server, providers, sources, layers[0][1])
    return Settings(
        server=server,
        providers=providers,
        default_provider=default,
        default_provider_source=default_source,
        aliases=aliases,
        fallback_aliases=fallbacks,
        sources=sources,
        fallbacks=model_fallbacks,
        ignored_keys=ignored,
        middleware=chain,
        grpc=grpc,
        tenants=tenants,
        cache=cache,
    )


def _loop_guard(
    server: ServerSettings,
    providers: dict[str, ProviderSettings],
    sources: Mapping[str, str],
    defaults: dict[str, Any],
) -> tuple[ServerSettings, dict[str, ProviderSettings]]:
    """The deployment's hop id, and each provider whose base URL is the
    gateway's own address marked with the explanation (:mod:`vdm.loops`)."""
    own = loops.gateway_id((n, p.base_url) for n, p in providers.items())
    catalogue = defaults.get("providers", {})
    for name, provider in providers.items():
        if provider.api_format != ECHO and loops.is_own_address(
            provider.base_url, server.host, server.port
        ):
            upstream = catalogue.get(name, {}).get("base-url")
            source = sources.get(f"providers.{name}.base-url", "")
            message = loops.loop_message(name, provider.base_url, source, upstream)
            providers[name] = replace(provider, loops_back=message)
    return replace(server, gateway_id=own), providers


def _package_defaults() -> dict[str, Any]:
    """The package's ``defaults.toml`` (the catalogue of known providers)."""
    return tomllib.loads(resources.files("vdm").joinpath("defaults.toml").read_text())


def _server_settings(
    table: dict[str, Any], env: Mapping[str, str], sources: dict[str, str], problems: list[str]
) -> ServerSettings:
    read = read_section(rows(ServerSettings), table, env, sources, problems)
    return ServerSettings(**read.values)


def _middleware_settings(
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
    known: Collection[str] | None,
) -> MiddlewareSettings:
    read = read_section(rows(MiddlewareSettings), table, env, sources, problems)
    enabled = read.values["enabled"]
    if known is not None and read.given("enabled"):
        for name in enabled:
            if name not in known:
                problems.append(
                    f"{read.where['enabled']}: unknown middleware {name!r} "
                    f"(known: {', '.join(known)})"
                )
    if read.values["gemini_thought_signatures"] and GEMINI_THOUGHT_SIGNATURES not in enabled:
        read.values["enabled"] = (*enabled, GEMINI_THOUGHT_SIGNATURES)
    return MiddlewareSettings(**read.values)


def _grpc_settings(
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
    server: ServerSettings,
) -> GrpcSettings:
    read = read_section(rows(GrpcSettings), table, env, sources, problems, {"server": server})
    if read.given("tls_cert") != read.given("tls_key"):
        problems.append(
            "grpc TLS needs both GRPC_TLS_CERT and GRPC_TLS_KEY "
            "(tls-cert and tls-key under [grpc]), or neither"
        )
    read.values["jwt_secret"] = _jwt_secret(read, problems)
    return GrpcSettings(**read.values)


def _jwt_secret(read: Read, problems: list[str]) -> str | None:
    """``VDM_JWT_SECRET`` > ``VDM_JWT_SECRET_FILE`` > ``[grpc] jwt-secret`` >
    ``[grpc] jwt-secret-file``; the secret itself never appears in a message."""
    secret, path = read.values["jwt_secret"], read.values["jwt_secret_file"]
    if read.from_env("jwt_secret") or (secret and not read.from_env("jwt_secret_file")):
        return str(secret) if secret else None
    if not path:
        return None
    where = read.where["jwt_secret_file"]
    try:
        text = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        problems.append(f"{where}: cannot read the secret file: {exc.strerror}")
        return None
    return jwt_secret(text, where, problems)


def _fallbacks(
    table: Any, env: Mapping[str, str], sources: dict[str, str], problems: list[str]
) -> dict[str, tuple[str, ...]]:
    """``[fallbacks]`` (``"model" = ["alt", ...]``) overlaid by ``VDM_FALLBACKS``
    (``model=alt1,alt2; other=alt3``)."""
    out: dict[str, tuple[str, ...]] = {}
    if not isinstance(table, dict):
        problems.append("fallbacks: must be a table of model = [alternatives]")
        table = {}
    for model, alternatives in table.items():
        source = f"{sources.get('fallbacks.' + model, 'config')}: fallbacks.{model}"
        if (
            not isinstance(alternatives, list)
            or not alternatives
            or not all(isinstance(a, str) and a.strip() for a in alternatives)
        ):
            problems.append(f"{source}: expected a non-empty list of model names")
            continue
        out[model.strip()] = tuple(a.strip() for a in alternatives)
    spec = env.get("VDM_FALLBACKS", "").strip()
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        model, sep, rest = entry.partition("=")
        alternatives = tuple(a.strip() for a in rest.split(",") if a.strip())
        if not sep or not model.strip() or not alternatives:
            problems.append(
                f"environment variable VDM_FALLBACKS: {entry!r} is not "
                "'model=alternative[,alternative...]' (entries separated by ';')"
            )
            continue
        out[model.strip()] = alternatives
        sources[f"fallbacks.{model.strip()}"] = "env VDM_FALLBACKS"
    return out


def _check_fallbacks(
    fallbacks: Mapping[str, tuple[str, ...]],
    providers: Mapping[str, ProviderSettings],
    default: str,
    aliases: Mapping[str, Mapping[str, str]],
    fallback_aliases: Mapping[str, Mapping[str, str]],
    problems: list[str],
) -> None:
    """Every model named in a fallback chain must route somewhere."""
    from vdm.errors import InvalidRequest
    from vdm.routing import Router

    router = Router(list(providers), default, aliases, fallback_aliases)
    for model, alternatives in fallbacks.items():
        for name in (model, *alternatives):
            try:
                router.resolve(name)
            except InvalidRequest as exc:
                problems.append(f"fallbacks.{model}: {exc.message}")


def _default_provider(
    merged: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    providers: Mapping[str, ProviderSettings],
    problems: list[str],
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


def lint(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[str]:
    """Problems ``vdm config validate`` reports beyond those that stop start-up:
    settings of a provider that has no key (so they are silently unused), such
    as aliases to a provider that is not configured."""
    cwd = cwd or Path.cwd()
    if env is None:
        dotenv = {k: v for k, v in dotenv_values(cwd / ".env").items() if v is not None}
        env = {**dotenv, **os.environ}
    problems: list[str] = []
    known: dict[str, Any] = dict(_package_defaults().get("providers", {}))
    for path in (user_config_path(env), cwd / "vdm.toml"):
        tables = _read_toml(path, str(path), []).get("providers", {})
        if isinstance(tables, dict):
            known.update(tables)
    keyed = set(env_providers(env, known)[0])
    keyed |= {n for n, t in known.items() if isinstance(t, dict) and t.get("api-key")}
    keyed.add(ECHO)
    for path in (user_config_path(env), cwd / "vdm.toml"):
        tables = _read_toml(path, str(path), []).get("providers", {})
        for name, table in tables.items():
            if isinstance(table, dict) and name not in keyed and table.get("aliases"):
                problems.append(
                    f"{path}: providers.{name}.aliases: provider '{name}' is not "
                    f"configured (no api-key and no {name.upper()}_API_KEY)"
                )
    for var in env:
        prefix, sep, _ = var.partition("_ALIAS_")
        if sep and prefix and prefix.lower() not in keyed and PROVIDER_NAME.match(prefix.lower()):
            problems.append(
                f"environment variable {var}: alias of provider '{prefix.lower()}', "
                f"which is not configured (no {prefix}_API_KEY)"
            )
    return problems


def model_typos(settings: Settings) -> list[str]:
    """Model names whose ``provider:`` prefix looks meant for a provider but
    is not a configured one: a typo (``fakaei:model``, close to ``fakeai``)
    or a known provider without a key.  The router would send such a name,
    prefix and all, to the default provider as a model name, so nothing
    fails until a request does.  Checked in fallbacks, aliases and the
    defaults (gRPC's default model, per-model cache TTLs)."""
    configured = list(settings.providers)
    known = set(_package_defaults().get("providers", {})) - set(configured)
    named: list[tuple[str, str]] = []
    for model, alternatives in settings.fallbacks.items():
        named += [(f"fallbacks.{model}", name) for name in (model, *alternatives)]
    for provider, table in settings.aliases.items():
        named += [(f"providers.{provider}.aliases.{a}", m) for a, m in table.items()]
    if settings.grpc.default_model:
        named.append(("grpc.default-model", settings.grpc.default_model))
    named += [("cache.models", m) for m in settings.cache.models]
    problems = []
    for where, model in named:
        prefix, sep, _ = model.partition(":")
        prefix = prefix.strip().lower()
        if not sep or not prefix or prefix in configured:
            continue
        source = settings.sources.get(where, "")
        at = f"{source}: {where}" if source else where
        if prefix in known:
            problems.append(
                f"{at}: '{model}' names provider '{prefix}', which is not configured "
                f"(no {prefix.upper()}_API_KEY); it would reach "
                f"'{settings.default_provider}' as a model name"
            )
            continue
        close = difflib.get_close_matches(prefix, configured, n=1, cutoff=0.75)
        if close:
            problems.append(
                f"{at}: '{model}': no provider '{prefix}'; did you mean '{close[0]}'? "
                f"(as written it reaches '{settings.default_provider}' as a model name)"
            )
    return problems
