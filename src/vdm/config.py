"""Settings: package defaults < user TOML < local TOML < .env < environment.

Everything is read and validated once, at start-up, into an immutable
:class:`Settings`; nothing on the request path reads the environment or a
file.  Every problem is a :class:`ConfigError` naming its source (the file
and key, or the environment variable).

Providers are discovered from ``{NAME}_API_KEY`` (and ``api-key`` in TOML),
but a key in the environment makes a provider only when ``NAME`` is a known
one (a ``[providers.NAME]`` table: the package catalogue in ``defaults.toml``
or the user's own TOML) or when ``{NAME}_BASE_URL`` (or ``{NAME}_API_FORMAT``)
says where it is: other tools' keys (``PINECONE_API_KEY``, ``HF_API_KEY``)
are ignored (:func:`env_providers`), never a reason to refuse to start.
Their other settings come from ``{NAME}_BASE_URL``, ``{NAME}_API_FORMAT``,
``{NAME}_API_VERSION``, ``{NAME}_CUSTOM_HEADER_{HEADER}`` and
``{NAME}_ALIAS_{ALIAS}``, or the same keys under ``[providers.NAME]``.

Middleware are named, in order, by ``MIDDLEWARE`` (comma-separated) or
``[middleware] enabled``; ``GEMINI_THOUGHT_SIGNATURES_ENABLED=true`` adds
``gemini-thought-signatures`` when it is not listed.

Azure OpenAI providers (``api-format = "azure"``, or an OpenAI-format base URL
on an Azure host) also take ``{NAME}_DEPLOYMENTS="model=deployment,..."`` (TOML
``[providers.NAME.deployments]``); ``api-version`` is then Azure's
``api-version`` query parameter.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlparse

from dotenv import dotenv_values

from vdm import loops
from vdm.allowlist import parse_allowlist
from vdm.cache.settings import KEYS as _CACHE_KEYS
from vdm.cache.settings import CacheSettings, cache_settings
from vdm.dirs import user_config_path
from vdm.tenants.settings import KEYS as _TENANT_KEYS
from vdm.tenants.settings import TenantSettings, tenant_settings

ApiFormat = Literal["openai", "anthropic", "azure", "echo"]
API_FORMATS = ("openai", "anthropic", "azure")
AZURE = "azure"
AZURE_DEFAULT_API_VERSION = "2024-10-21"  # the latest GA dated api-version
# Hosts that make an OpenAI-format provider (no explicit api-format) an Azure one.
AZURE_HOST_SUFFIXES = (
    ".openai.azure.com",
    ".cognitiveservices.azure.com",
    ".services.ai.azure.com",
)
# Azure deployment names: letters, digits, '-', '_', '.'; they go into a URL path.
AZURE_DEPLOYMENT_NAME = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,64}$")
PASSTHROUGH_KEY = "!PASSTHRU"
# {NAME}_STRUCTURED_OUTPUT: how structured output reaches a converted
# request's provider (vdm.protocols.structured): "native" its own constraint,
# "tool" a forced tool, "prompt" an instruction (no constraint).
StructuredOutput = Literal["native", "tool", "prompt"]
STRUCTURED_OUTPUTS = ("native", "tool", "prompt")
ECHO: Final = "echo"

# Environment names that end in _API_KEY but are not providers.
_NOT_PROVIDERS = frozenset({"PROXY", "VDM"})
_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("console", "json")


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
    deployments: Mapping[str, str] = field(default_factory=dict)  # azure: model -> deployment
    # POST /v1/responses: relayed as is ("native", OpenAI's own API) or converted.
    responses_api: Literal["native", "convert"] = "convert"
    # The client's OpenAI-Organization / OpenAI-Project go upstream (OpenAI formats only).
    forward_organization: bool = False
    # How a converted request's structured output reaches the provider
    # (vdm.protocols.structured): its own constraint, a forced tool, or words.
    structured_output: StructuredOutput = "native"
    # vdm.loops: why the base URL is this gateway's own address (None: it is not).
    loops_back: str | None = None
    # Upstream connections open at once ({NAME}_MAX_CONNECTIONS); None: the
    # server's UPSTREAM_MAX_CONNECTIONS.
    max_connections: int | None = None

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
    log_format: str = "console"  # or "json" (JSON lines)
    request_timeout: float = 90.0
    max_tokens_limit: int | None = None
    max_body_size: int = 32 * 1024 * 1024
    max_upload_size: int = 512 * 1024 * 1024
    proxy_api_key: str | None = None
    # Resilience (providers.keys, pipeline retries/fallbacks, server shutdown).
    max_retries: int = 2
    retry_backoff: float = 0.5  # first backoff, doubled per retry, full jitter
    connect_timeout: float = 10.0
    first_byte_timeout: float = 90.0
    idle_timeout: float = 90.0
    total_timeout: float | None = None
    ping_interval: float = 10.0
    shutdown_timeout: float = 30.0
    # Key benches (providers.keys): a 401/403; the cap of a 429's backoff (1 s,
    # doubling) when the upstream gives no retry-after; the cap of every bench.
    key_auth_cooldown: float = 300.0
    key_rate_limit_cooldown: float = 30.0
    key_cooldown_max: float = 3600.0
    redis_url: str | None = None
    # Prefix of the shared Redis keys (event stream, totals, cooldowns, rate limits), so
    # several deployments can share one Redis.
    redis_namespace: str = "vdm"
    # vdm.events: events queued in this process at most; entries kept in the Redis stream.
    events_queue_size: int = 10_000
    events_stream_max_length: int = 100_000
    models_cache_ttl: float = 600.0  # seconds a provider's model list is fresh
    models_wait: float = 2.0  # longest /v1/models waits for a provider's list
    models_prefetch: bool = True  # fetch the lists at start-up
    # vdm.allowlist.Rule entries; None: the package default allowlist.
    passthrough_allow: tuple[Any, ...] | None = None
    # vdm.loops: this deployment's id in the hop header of every upstream request.
    gateway_id: str = ""
    # Peers (IP networks) whose X-Forwarded-For / -Proto are believed: the client's
    # address (audit, logs, failed-login limits) comes from them.  None by default.
    trusted_proxies: tuple[str, ...] = ()
    # Listen on a non-loopback address with no client authentication (no
    # PROXY_API_KEY, no control plane): refused unless this says so.
    allow_unauthenticated: bool = False
    # Connection limits (vdm.server.protocol; docs/security-limits.md).
    max_header_size: int = 64 * 1024  # request line + headers; larger: 431
    header_timeout: float = 20.0  # connection or request start -> headers complete; else 408
    body_timeout: float = 30.0  # a request body must progress within this window; else 408
    body_min_rate: int = 1024  # bytes/s a body must average over each body_timeout window
    keep_alive_timeout: float = 30.0  # an idle keep-alive connection is closed after this
    max_connections: int = 2048  # beyond: only the probes, then 503 (a reserve keeps /live)
    # Connections to one provider open at once; beyond, requests wait for one
    # (vdm.providers.http.make_session; docs/operations.md).
    upstream_max_connections: int = 1024
    max_credential_length: int = 8192  # longer API keys / tokens are refused before decoding
    # Model names counted under their own metric label besides the configured and
    # listed ones (vdm.metrics.ModelLabels); anything else is "other".
    metrics_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class MiddlewareSettings:
    enabled: tuple[str, ...] = ()  # chain order
    thought_signature_cache_ttl: float = 3600.0
    thought_signature_max_cache_size: int = 10_000


@dataclass(frozen=True)
class GrpcSettings:
    """The LLMProxy gRPC service (``vdm.grpc``); ``[grpc]`` or ``GRPC_*``."""

    host: str | None = None  # None: the HTTP server's host
    port: int | None = None  # None: `vdm grpc serve` uses 50051, `server start` runs no gRPC
    tls_cert: str | None = None
    tls_key: str | None = None
    default_model: str | None = None
    max_requests_per_minute: int | None = None  # all clients together
    max_concurrent_requests: int | None = None
    max_requests_per_minute_per_token: int | None = None  # per verified JWT subject
    max_concurrent_requests_per_token: int | None = None
    max_input_length: int = 1_000_000  # characters of all fragments together
    request_timeout: float = 90.0  # seconds for a whole Execute / StreamExecute
    # The HS256 secret, resolved from VDM_JWT_SECRET / VDM_JWT_SECRET_FILE / [grpc];
    # None: vdm.auth.jwt generates one into the user's config dir on first use.
    jwt_secret: str | None = field(default=None, repr=False)


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


def fingerprint(secret: str) -> str:
    if secret == PASSTHROUGH_KEY:
        return PASSTHROUGH_KEY
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:8]


def key_id(provider: str, secret: str) -> str:
    """A provider key's name in logs and shared state (Redis): a hash, never the key."""
    return f"{provider}:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- TOML layers

_TOP_KEYS = {
    "default-provider",
    "server",
    "providers",
    "fallbacks",
    "middleware",
    "grpc",
    "tenants",
    "cache",
}
# Server settings in seconds: one env var each (the key upper-cased, - as _).
_SECONDS_KEYS = (
    "retry-backoff",
    "connect-timeout",
    "first-byte-timeout",
    "idle-timeout",
    "total-timeout",
    "ping-interval",
    "shutdown-timeout",
    "key-auth-cooldown",
    "key-rate-limit-cooldown",
    "key-cooldown-max",
    "header-timeout",
    "body-timeout",
    "keep-alive-timeout",
)
_SERVER_KEYS = {
    "host",
    "port",
    "log-level",
    "log-format",
    "request-timeout",
    "max-tokens-limit",
    "max-body-size",
    "proxy-api-key",
    "max-retries",
    *_SECONDS_KEYS,
    "redis-url",
    "models-cache-ttl",
    "models-wait",
    "models-prefetch",
    "max-upload-size",
    "passthrough-allow",
    "trusted-proxies",
    "allow-unauthenticated",
    "max-header-size",
    "body-min-rate",
    "max-connections",
    "upstream-max-connections",
    "max-credential-length",
    "metrics-models",
}
_GRPC_KEYS = {
    "host",
    "port",
    "tls-cert",
    "tls-key",
    "default-model",
    "max-requests-per-minute",
    "max-concurrent-requests",
    "max-requests-per-minute-per-token",
    "max-concurrent-requests-per-token",
    "max-input-length",
    "request-timeout",
    "jwt-secret",
    "jwt-secret-file",
}
JWT_SECRET_MIN_LENGTH = 32  # bytes: HS256 wants a key at least as long as its hash
_MIDDLEWARE_KEYS = {"enabled", "thought-signature-cache-ttl", "thought-signature-max-cache-size"}
_PROVIDER_KEYS = {
    "base-url",
    "api-format",
    "api-key",
    "api-version",
    "headers",
    "aliases",
    "fallback-aliases",
    "max-tokens-field",
    "supports-reasoning",
    "deployments",
    "responses-api",
    "forward-organization",
    "structured-output",
    "max-connections",
}


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


def _unknown(source: str, section: str, keys: Any, allowed: set[str]) -> list[str]:
    """``unknown key 'server.prot'; did you mean 'server.port'?`` for each key
    of ``keys`` not in ``allowed``."""
    out = []
    for key in keys:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
        hint = f"; did you mean '{section}{close[0]}'?" if close else ""
        out.append(f"{source}: unknown key '{section}{key}'{hint}")
    return out


def _check_toml_keys(data: dict[str, Any], source: str) -> list[str]:
    problems = _unknown(source, "", data, _TOP_KEYS)
    for section, allowed in (
        ("server", _SERVER_KEYS),
        ("grpc", _GRPC_KEYS),
        ("middleware", _MIDDLEWARE_KEYS),
        ("tenants", _TENANT_KEYS),  # (not a table: said by tenant_settings)
        ("cache", _CACHE_KEYS),
    ):
        table = data.get(section, {})
        if isinstance(table, dict):
            problems += _unknown(source, f"{section}.", table, allowed)
        elif section not in ("tenants", "cache"):
            problems.append(f"{source}: '{section}' must be a table")
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
        problems += _unknown(source, f"providers.{name}.", table, _PROVIDER_KEYS)
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
        _record_sources(layer, source, sources)
        merged = _merge(merged, layer)

    server = _server_settings(merged.get("server", {}), env, sources, problems)
    chain = _middleware_settings(merged.get("middleware", {}), env, sources, problems, middleware)
    grpc = _grpc_settings(merged.get("grpc", {}), env, sources, problems, server)
    tables = merged.get("providers", {})
    env_names, ignored = env_providers(env, tables if isinstance(tables, dict) else {})
    providers, aliases, fallbacks = _providers(tables, env_names, env, sources, problems)
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


def _record_sources(layer: dict[str, Any], source: str, sources: dict[str, str]) -> None:
    def walk(prefix: str, table: dict[str, Any]) -> None:
        for key, value in table.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and key not in ("headers", "deployments"):
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
    log_format, format_src = pick("log-format", "LOG_FORMAT")
    log_format = str(log_format or "console").lower()
    if log_format not in LOG_FORMATS:
        problems.append(f"{format_src}: log format must be one of {', '.join(LOG_FORMATS)}")
    timeout = _as_float(*pick("request-timeout", "REQUEST_TIMEOUT"), problems) or 90.0
    limit = _as_int(*pick("max-tokens-limit", "MAX_TOKENS_LIMIT"), problems, low=1)
    body = _as_int(*pick("max-body-size", "MAX_BODY_SIZE"), problems, low=1024)
    upload = _as_int(*pick("max-upload-size", "MAX_UPLOAD_SIZE"), problems, low=1024)
    proxy_key, _ = pick("proxy-api-key", "PROXY_API_KEY")
    retries = _as_int(*pick("max-retries", "MAX_RETRIES"), problems, low=0, high=10)
    seconds = {
        name: _as_float(*pick(name, name.upper().replace("-", "_")), problems)
        for name in _SECONDS_KEYS
    }
    redis_url, redis_src = pick("redis-url", "REDIS_URL")
    if redis_url and urlparse(str(redis_url)).scheme not in ("redis", "rediss", "unix"):
        problems.append(f"{redis_src}: expected a redis://, rediss:// or unix:// URL")
    defaults = ServerSettings()
    namespace, namespace_src = pick("redis-namespace", "REDIS_NAMESPACE")
    if namespace is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", str(namespace)):
        problems.append(f"{namespace_src}: use 1-64 letters, digits, '_', '.' or '-'")
        namespace = None
    queue = _as_int(*pick("events-queue-size", "EVENTS_QUEUE_SIZE"), problems, low=100)
    stream_length = _as_int(
        *pick("events-stream-max-length", "EVENTS_STREAM_MAX_LENGTH"), problems, low=1000
    )
    ttl = _as_float(*pick("models-cache-ttl", "MODELS_CACHE_TTL"), problems)
    wait = _as_float(*pick("models-wait", "MODELS_WAIT"), problems)
    prefetch_raw, prefetch_src = pick("models-prefetch", "MODELS_PREFETCH")
    prefetch = True if prefetch_raw is None else _bool(prefetch_raw, prefetch_src, problems)
    allow = _allowlist(*pick("passthrough-allow", "PASSTHROUGH_ALLOW"), problems)
    proxies = _networks(*pick("trusted-proxies", "TRUSTED_PROXIES"), problems)
    open_raw, open_src = pick("allow-unauthenticated", "ALLOW_UNAUTHENTICATED")
    allow_open = False if open_raw is None else _bool(open_raw, open_src, problems)
    header_size = _as_int(*pick("max-header-size", "MAX_HEADER_SIZE"), problems, low=1024)
    min_rate = _as_int(*pick("body-min-rate", "BODY_MIN_RATE"), problems, low=0)
    connections = _as_int(*pick("max-connections", "MAX_CONNECTIONS"), problems, low=1)
    upstream = _upstream_connections(
        *pick("upstream-max-connections", "UPSTREAM_MAX_CONNECTIONS"), problems
    )
    credential = _as_int(*pick("max-credential-length", "MAX_CREDENTIAL_LENGTH"), problems, low=64)
    models_raw, models_src = pick("metrics-models", "METRICS_MODELS")
    metrics_models = tuple(
        m
        for m in _names(models_raw, models_src, problems)
        if _model_name_ok(m, models_src, problems)
    )
    return ServerSettings(
        host=str(host or "127.0.0.1"),
        port=port or 8082,
        log_level=level,
        log_format=log_format,
        request_timeout=timeout,
        max_tokens_limit=limit,
        max_body_size=body or 32 * 1024 * 1024,
        max_upload_size=upload or 512 * 1024 * 1024,
        proxy_api_key=str(proxy_key) if proxy_key else None,
        max_retries=defaults.max_retries if retries is None else retries,
        retry_backoff=seconds["retry-backoff"] or defaults.retry_backoff,
        connect_timeout=seconds["connect-timeout"] or min(timeout, defaults.connect_timeout),
        first_byte_timeout=seconds["first-byte-timeout"] or timeout,
        idle_timeout=seconds["idle-timeout"] or timeout,
        total_timeout=seconds["total-timeout"],
        ping_interval=seconds["ping-interval"] or defaults.ping_interval,
        shutdown_timeout=seconds["shutdown-timeout"] or defaults.shutdown_timeout,
        key_auth_cooldown=seconds["key-auth-cooldown"] or defaults.key_auth_cooldown,
        key_rate_limit_cooldown=(
            seconds["key-rate-limit-cooldown"] or defaults.key_rate_limit_cooldown
        ),
        key_cooldown_max=seconds["key-cooldown-max"] or defaults.key_cooldown_max,
        redis_url=str(redis_url) if redis_url else None,
        redis_namespace=str(namespace) if namespace else defaults.redis_namespace,
        events_queue_size=queue or defaults.events_queue_size,
        events_stream_max_length=stream_length or defaults.events_stream_max_length,
        models_cache_ttl=ttl or 600.0,
        models_wait=wait or 2.0,
        models_prefetch=prefetch,
        passthrough_allow=allow,
        trusted_proxies=proxies,
        allow_unauthenticated=allow_open,
        max_header_size=header_size or defaults.max_header_size,
        header_timeout=seconds["header-timeout"] or defaults.header_timeout,
        body_timeout=seconds["body-timeout"] or defaults.body_timeout,
        body_min_rate=defaults.body_min_rate if min_rate is None else min_rate,
        keep_alive_timeout=seconds["keep-alive-timeout"] or defaults.keep_alive_timeout,
        max_connections=connections or defaults.max_connections,
        upstream_max_connections=upstream or defaults.upstream_max_connections,
        max_credential_length=credential or defaults.max_credential_length,
        metrics_models=metrics_models,
    )


# Connections one process may hold to one provider: beyond about this, one
# source address runs out of ephemeral ports to the upstream's address.
UPSTREAM_CONNECTIONS_MAX = 60_000


def _upstream_connections(value: Any, source: str, problems: list[str]) -> int | None:
    """``upstream-max-connections`` and ``max-connections`` of a provider."""
    return _as_int(value, source, problems, low=1, high=UPSTREAM_CONNECTIONS_MAX)


def _names(value: Any, source: str, problems: list[str]) -> tuple[str, ...]:
    """A list of names: a TOML array of strings, or one comma-separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    if isinstance(value, list) and all(isinstance(n, str) for n in value):
        return tuple(n.strip() for n in value if n.strip())
    problems.append(f"{source}: expected a list of names (or one comma-separated string)")
    return ()


def _middleware_settings(
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
    known: Collection[str] | None,
) -> MiddlewareSettings:
    def source(key: str) -> str:
        return f"{sources.get(f'middleware.{key}', 'defaults.toml')}: middleware.{key}"

    names: list[str] = []
    if env.get("MIDDLEWARE", "").strip():
        where = "environment variable MIDDLEWARE"
        names = [n.strip() for n in env["MIDDLEWARE"].split(",") if n.strip()]
    else:
        where = source("enabled")
        raw = table.get("enabled", [])
        if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
            names = list(raw)
        else:
            problems.append(f"{where}: expected a list of middleware names, got {raw!r}")
    enabled: list[str] = []
    for name in names:
        if known is not None and name not in known:
            problems.append(f"{where}: unknown middleware {name!r} (known: {', '.join(known)})")
        elif name in enabled:
            problems.append(f"{where}: middleware {name!r} is listed twice")
        else:
            enabled.append(name)
    gemini = "gemini-thought-signatures"
    flag = env.get("GEMINI_THOUGHT_SIGNATURES_ENABLED", "")
    if (
        flag
        and _bool(flag, "environment variable GEMINI_THOUGHT_SIGNATURES_ENABLED", problems)
        and gemini not in enabled
    ):
        enabled.append(gemini)

    def pick(key: str, env_name: str) -> tuple[Any, str]:
        if env.get(env_name):
            return env[env_name], f"environment variable {env_name}"
        return table.get(key), source(key)

    ttl = _as_float(*pick("thought-signature-cache-ttl", "THOUGHT_SIGNATURE_CACHE_TTL"), problems)
    size = _as_int(
        *pick("thought-signature-max-cache-size", "THOUGHT_SIGNATURE_MAX_CACHE_SIZE"),
        problems,
        low=1,
    )
    return MiddlewareSettings(
        enabled=tuple(enabled),
        thought_signature_cache_ttl=ttl or 3600.0,
        thought_signature_max_cache_size=size or 10_000,
    )


def _grpc_settings(
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
    server: ServerSettings,
) -> GrpcSettings:
    def pick(key: str, env_name: str) -> tuple[Any, str]:
        if env.get(env_name, "") != "":
            sources[f"grpc.{key}"] = f"env {env_name}"  # (for config show)
            return env[env_name], f"environment variable {env_name}"
        return table.get(key), f"{sources.get(f'grpc.{key}', 'config')}: grpc.{key}"

    def number(key: str) -> int | None:
        return _as_int(*pick(key, "GRPC_" + key.upper().replace("-", "_")), problems, low=1)

    host, _ = pick("host", "GRPC_HOST")
    port = _as_int(*pick("port", "GRPC_PORT"), problems, low=1, high=65535)
    tls: dict[str, str | None] = {}
    for key in ("tls-cert", "tls-key"):
        value, where = pick(key, "GRPC_" + key.upper().replace("-", "_"))
        tls[key] = str(value) if value else None
        if value and not Path(str(value)).expanduser().is_file():
            problems.append(f"{where}: no such file: {value}")
    if bool(tls["tls-cert"]) != bool(tls["tls-key"]):
        problems.append(
            "grpc TLS needs both GRPC_TLS_CERT and GRPC_TLS_KEY "
            "(tls-cert and tls-key under [grpc]), or neither"
        )
    default_model, _ = pick("default-model", "GRPC_DEFAULT_MODEL")
    timeout = _as_float(*pick("request-timeout", "GRPC_REQUEST_TIMEOUT"), problems)
    return GrpcSettings(
        host=str(host) if host else None,
        port=port,
        tls_cert=tls["tls-cert"],
        tls_key=tls["tls-key"],
        default_model=str(default_model) if default_model else None,
        max_requests_per_minute=number("max-requests-per-minute"),
        max_concurrent_requests=number("max-concurrent-requests"),
        max_requests_per_minute_per_token=number("max-requests-per-minute-per-token"),
        max_concurrent_requests_per_token=number("max-concurrent-requests-per-token"),
        max_input_length=number("max-input-length") or 1_000_000,
        request_timeout=timeout or server.request_timeout,
        jwt_secret=_jwt_secret(table, env, sources, problems),
    )


def _jwt_secret(
    table: dict[str, Any], env: Mapping[str, str], sources: dict[str, str], problems: list[str]
) -> str | None:
    """``VDM_JWT_SECRET`` > ``VDM_JWT_SECRET_FILE`` > ``[grpc] jwt-secret`` >
    ``[grpc] jwt-secret-file``; the secret itself never appears in a message."""
    candidates = [
        (env.get("VDM_JWT_SECRET"), False, "environment variable VDM_JWT_SECRET"),
        (env.get("VDM_JWT_SECRET_FILE"), True, "environment variable VDM_JWT_SECRET_FILE"),
        (
            table.get("jwt-secret"),
            False,
            f"{sources.get('grpc.jwt-secret', 'config')}: grpc.jwt-secret",
        ),
        (
            table.get("jwt-secret-file"),
            True,
            f"{sources.get('grpc.jwt-secret-file', 'config')}: grpc.jwt-secret-file",
        ),
    ]
    for value, is_file, where in candidates:
        if not value:
            continue
        secret = str(value)
        if is_file:
            try:
                secret = Path(secret).expanduser().read_text().strip()
            except OSError as exc:
                problems.append(f"{where}: cannot read the secret file: {exc.strerror}")
                return None
        if len(secret.encode()) < JWT_SECRET_MIN_LENGTH:
            problems.append(
                f"{where}: the JWT secret must be at least {JWT_SECRET_MIN_LENGTH} bytes long"
            )
            return None
        return secret
    return None


def _allowlist(value: Any, source: str, problems: list[str]) -> tuple[Any, ...] | None:
    """``passthrough-allow``: the syntax of :mod:`vdm.passthrough` as one string
    (``;``-separated) or, in TOML, an array of entries."""
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "; ".join(value)
    if not isinstance(value, str):
        problems.append(
            f"{source}: expected a string like 'GET,POST /v1/files; POST "
            f"/v1/embeddings' (or an array of such entries), got {value!r}"
        )
        return None
    try:
        return parse_allowlist(value)
    except ValueError as exc:
        problems.append(f"{source}: invalid passthrough allowlist: {exc}")
        return None


def _networks(value: Any, source: str, problems: list[str]) -> tuple[str, ...]:
    """``trusted-proxies``: IP addresses or networks (CIDR), a comma-separated
    string or an array; each normalised (``10.1.2.3/8`` -> ``10.0.0.0/8``)."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        problems.append(f"{source}: expected IP addresses or networks, e.g. '10.0.0.0/8, ::1'")
        return ()
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            problems.append(
                f"{source}: {str(item).strip()!r} is not an IP address or network "
                "(e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8)"
            )
    return tuple(out)


def _as_int(
    value: Any,
    source: str,
    problems: list[str],
    *,
    low: int | None = None,
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
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    problems.append(f"{source}: expected true or false, got {value!r}")
    return False


def env_providers(
    env: Mapping[str, str], tables: Mapping[str, Any]
) -> tuple[list[str], tuple[str, ...]]:
    """(provider names the environment's ``{NAME}_API_KEY`` variables make, in
    the environment's order; the ``*_API_KEY`` variables it ignores).

    A key makes a provider when its name is known (``tables``: the catalogue
    and the user's ``[providers.NAME]`` tables) or when ``{NAME}_BASE_URL`` or
    ``{NAME}_API_FORMAT`` is set too (a provider the user describes here).
    Anything else is some other tool's key."""
    names: list[str] = []
    ignored: list[str] = []
    for var, value in env.items():
        if not var.endswith("_API_KEY") or not value.strip():
            continue
        prefix = var[: -len("_API_KEY")]
        if not prefix or prefix in _NOT_PROVIDERS or "__" in prefix:
            continue
        name = prefix.lower()
        if not _PROVIDER_NAME.match(name):
            ignored.append(var)
        elif name in tables or env.get(f"{prefix}_BASE_URL") or env.get(f"{prefix}_API_FORMAT"):
            if name not in names:
                names.append(name)
        else:
            ignored.append(var)
    return names, tuple(ignored)


def _providers(
    tables: dict[str, Any],
    env_names: list[str],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
) -> tuple[dict[str, ProviderSettings], dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    # Discovery order: environment keys (as the environment lists them), then
    # TOML tables with an api-key.  echo is always there, last.
    names = list(env_names)
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
    name: str,
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
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
    fmt_raw, fmt_src = pick("api-format", "API_FORMAT")
    fmt = str(fmt_raw or "openai").lower()
    if fmt not in API_FORMATS:
        problems.append(
            f"{fmt_src}: api format must be 'openai', 'anthropic' or 'azure', got {fmt!r}"
        )
        return None
    base_url = _base_url(name, fmt, *pick("base-url", "BASE_URL"), problems)
    if (
        base_url is not None
        and fmt_raw is None
        and is_azure_host(urlparse(base_url).hostname or "")
    ):
        fmt = AZURE
    version, _ = pick("api-version", "API_VERSION")
    headers = {str(k): str(v) for k, v in (table.get("headers") or {}).items()}
    header_prefix = f"{upper}_CUSTOM_HEADER_"
    for var, value in env.items():
        if var.startswith(header_prefix) and len(var) > len(header_prefix):
            headers[var[len(header_prefix) :].replace("_", "-").lower()] = value
    reasoning_raw, reasoning_src = pick("supports-reasoning", "SUPPORTS_REASONING")
    reasoning = (
        _bool(reasoning_raw, reasoning_src, problems) if reasoning_raw is not None else False
    )
    field_name, field_src = pick("max-tokens-field", "MAX_TOKENS_FIELD")
    field_name = str(field_name or "max_tokens")
    if field_name not in ("max_tokens", "max_completion_tokens"):
        problems.append(
            f"{field_src}: expected 'max_tokens' or 'max_completion_tokens', got {field_name!r}"
        )
    del key_src
    responses_api = _responses_api(
        name, fmt, *pick("responses-api", "RESPONSES_API"), sources, problems
    )
    organization = _forward_organization(
        name, fmt, *pick("forward-organization", "FORWARD_ORGANIZATION"), problems
    )
    structured_raw, structured_src = pick("structured-output", "STRUCTURED_OUTPUT")
    structured = str(structured_raw or "native").lower()
    if structured not in STRUCTURED_OUTPUTS:
        problems.append(
            f"{structured_src}: expected 'native', 'tool' or 'prompt', got {structured_raw!r}"
        )
        structured = "native"
    connections = _upstream_connections(*pick("max-connections", "MAX_CONNECTIONS"), problems)
    deployments: dict[str, str] = {}
    if fmt == AZURE:
        version = version or AZURE_DEFAULT_API_VERSION
        deployments = _deployments(name, table, env, sources, problems)
    elif table.get("deployments") or env.get(f"{upper}_DEPLOYMENTS"):
        problems.append(
            f"provider '{name}': deployments apply only to Azure providers "
            f"(set {upper}_API_FORMAT=azure)"
        )
    if base_url is None:
        return None  # (its other problems are reported all the same)
    return ProviderSettings(
        name=name,
        api_format=fmt,  # type: ignore[arg-type]
        base_url=base_url,
        api_keys=keys,
        api_version=str(version) if version else None,
        headers=headers,
        max_tokens_field=field_name,
        supports_reasoning=reasoning,
        deployments=deployments,
        responses_api=responses_api,
        forward_organization=organization,
        structured_output=structured,  # type: ignore[arg-type]
        max_connections=connections,
    )


def _forward_organization(
    name: str, fmt: str, value: Any, source: str, problems: list[str]
) -> bool:
    """``{NAME}_FORWARD_ORGANIZATION``: may the client's ``OpenAI-Organization``
    and ``OpenAI-Project`` headers go upstream (they choose which organization
    and project a key bills)?  Off by default; only OpenAI-format providers."""
    if value is None:
        return False
    forward = _bool(value, source, problems)
    if forward and fmt not in ("openai", AZURE):
        problems.append(
            f"{source}: organization headers are OpenAI's; provider '{name}' speaks {fmt!r}"
        )
        return False
    return forward


RESPONSES_APIS = ("native", "convert")


def _responses_api(
    name: str, fmt: str, value: Any, source: str, sources: Mapping[str, str], problems: list[str]
) -> Literal["native", "convert"]:
    """``{NAME}_RESPONSES_API``: whether the provider speaks the Responses API
    itself.  Only OpenAI-format providers can; the package default (``native``
    for ``openai``) quietly does not apply when that provider is pointed at
    another format, an explicit setting is an error then."""
    if value is None:
        return "convert"
    choice = str(value).lower()
    if choice not in RESPONSES_APIS:
        problems.append(f"{source}: expected 'native' or 'convert', got {value!r}")
        return "convert"
    if choice == "native" and fmt != "openai":
        if sources.get(f"providers.{name}.responses-api") != "defaults.toml":
            problems.append(
                f"{source}: 'native' needs an OpenAI-format provider "
                f"(api format is {fmt!r}); use 'convert'"
            )
        return "convert"
    return choice  # type: ignore[return-value]


def _base_url(name: str, fmt: str, value: Any, source: str, problems: list[str]) -> str | None:
    if not value:
        example = " (https://RESOURCE.openai.azure.com)" if fmt == AZURE else ""
        problems.append(
            f"provider '{name}': no base URL; set {name.upper()}_BASE_URL{example} "
            f"(or base-url under [providers.{name}])"
        )
        return None
    base_url = str(value).rstrip("/")
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        problems.append(f"{source}: not an http(s) URL: {base_url!r}")
        return None
    return base_url


def is_azure_host(host: str) -> bool:
    return host.lower().endswith(AZURE_HOST_SUFFIXES)


def _deployments(
    name: str,
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
) -> dict[str, str]:
    """model -> Azure deployment: TOML ``[providers.NAME.deployments]``, then
    ``{NAME}_DEPLOYMENTS="model=deployment,..."`` (env entries win per model).

    One env variable rather than one per model: model names carry '.' and '-'
    (``gpt-4.1-mini``), which no environment variable name can spell.
    """
    out: dict[str, str] = {}
    src = f"{sources.get(f'providers.{name}.deployments', 'config')}: providers.{name}.deployments"
    raw = table.get("deployments", {})
    if not isinstance(raw, dict):
        problems.append(f"{src}: must be a table of model = deployment")
        raw = {}
    for model, deployment in raw.items():
        _add_deployment(out, str(model), deployment, f"{src}.{model}", problems)
    var = f"{name.upper()}_DEPLOYMENTS"
    if env.get(var, "").strip():
        sources[f"providers.{name}.deployments"] = f"env {var}"
        seen: set[str] = set()
        for item in env[var].split(","):
            model, sep, deployment = (part.strip() for part in item.partition("="))
            where = f"environment variable {var}"
            if not item.strip():
                continue
            if not sep or not model:
                problems.append(f"{where}: expected model=deployment, got {item.strip()!r}")
                continue
            if model in seen:
                problems.append(f"{where}: model {model!r} is mapped twice")
                continue
            seen.add(model)
            _add_deployment(out, model, deployment, where, problems)
    return out


def _add_deployment(
    out: dict[str, str], model: str, deployment: Any, where: str, problems: list[str]
) -> None:
    if not isinstance(deployment, str) or not AZURE_DEPLOYMENT_NAME.match(deployment):
        problems.append(
            f"{where}: deployment for {model!r} must be 1-64 letters, digits, '-', '_' "
            f"or '.', got {deployment!r}"
        )
        return
    out[model] = deployment


def _alias_table(table: Any, provider: str, problems: list[str]) -> dict[str, str]:
    if not isinstance(table, dict):
        problems.append(f"providers.{provider}: aliases must be a table of name = model")
        return {}
    out = {}
    for alias, model in table.items():
        if not isinstance(model, str) or not model:
            problems.append(f"providers.{provider}.aliases.{alias}: expected a model name")
            continue
        if _model_name_ok(model, f"providers.{provider}.aliases.{alias}", problems):
            out[str(alias)] = model
    return out


def _model_name_ok(model: str, where: str, problems: list[str]) -> bool:
    """An alias's model follows the rule of the names clients send (vdm.routing)."""
    from vdm.errors import InvalidRequest
    from vdm.routing import check_model_name

    try:
        check_model_name(model, where)
    except InvalidRequest as exc:
        problems.append(exc.message)
        return False
    return True


def _aliases(
    name: str,
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
) -> dict[str, str]:
    out = _alias_table(table.get("aliases", {}), name, problems)
    prefix = f"{name.upper()}_ALIAS_"
    for var, model in env.items():
        if var.startswith(prefix) and len(var) > len(prefix) and model:
            alias = var[len(prefix) :].lower()  # env names are upper-case by habit
            if not _model_name_ok(model, f"environment variable {var}", problems):
                continue
            out[alias] = model
            sources[f"providers.{name}.aliases.{alias}"] = f"env {var}"
    return out


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
        if sep and prefix and prefix.lower() not in keyed and _PROVIDER_NAME.match(prefix.lower()):
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
