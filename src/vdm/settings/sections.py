"""The ``[server]``, ``[middleware]`` and ``[grpc]`` sections, declared.

Each field is a setting (:func:`vdm.settings.spec.setting`): its kind, its
default, its help (which ``docs/configuration.md`` prints), its environment
variable.  ``[tenants]`` and ``[cache]`` are declared beside their code
(:mod:`vdm.tenants.settings`, :mod:`vdm.cache.settings`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from vdm.allowlist import parse_allowlist
from vdm.settings.kinds import (
    Choice,
    File,
    Flag,
    Int,
    Kind,
    Names,
    Networks,
    Pattern,
    Seconds,
    Text,
    Url,
)
from vdm.settings.provider import UPSTREAM_CONNECTIONS
from vdm.settings.spec import Derive, setting

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("console", "json")
JWT_SECRET_MIN_LENGTH = 32  # bytes: HS256 wants a key at least as long as its hash
MiB = 1024 * 1024


def model_name_ok(model: str, where: str, problems: list[str]) -> bool:
    """A configured model name follows the rule of the names clients send
    (:func:`vdm.routing.check_model_name`)."""
    from vdm.errors import InvalidRequest
    from vdm.routing import check_model_name

    try:
        check_model_name(model, where)
    except InvalidRequest as exc:
        problems.append(exc.message)
        return False
    return True


class Allowlist(Kind):
    """The passthrough allowlist (:mod:`vdm.allowlist`): one string of
    ``;``-separated entries or, in TOML, an array of entries."""

    label = "allowlist ('METHODS /v1/path; ...', 'default', 'none')"

    def parse(self, value: Any, where: str, problems: list[str]) -> tuple[Any, ...] | None:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "; ".join(value)
        if not isinstance(value, str):
            problems.append(
                f"{where}: expected a string like 'GET,POST /v1/files; POST "
                f"/v1/embeddings' (or an array of such entries), got {value!r}"
            )
            return None
        try:
            return parse_allowlist(value)
        except ValueError as exc:
            problems.append(f"{where}: invalid passthrough allowlist: {exc}")
            return None

    def env_text(self, value: Any) -> str:
        return "; ".join(value) if isinstance(value, list) else str(value)

    def show(self, value: Any) -> str:
        return "default" if value is None else "; ".join(str(r) for r in value) or "none"


class JwtSecret(Kind):
    label = f"text of at least {JWT_SECRET_MIN_LENGTH} bytes"

    def parse(self, value: Any, where: str, problems: list[str]) -> str | None:
        return jwt_secret(str(value), where, problems)


def jwt_secret(secret: str, where: str, problems: list[str]) -> str | None:
    if len(secret.encode()) < JWT_SECRET_MIN_LENGTH:
        problems.append(
            f"{where}: the JWT secret must be at least {JWT_SECRET_MIN_LENGTH} bytes long"
        )
        return None
    return secret


def _request_timeout(*, section: str | None = None, at_most: float = math.inf) -> Derive:
    """The default of a timeout that follows ``request-timeout``: its own
    section's, or ``section``'s (loaded before it), at most ``at_most``."""

    def derive(values: Mapping[str, Any], context: Mapping[str, Any]) -> float:
        if section is None:
            return min(float(values["request_timeout"]), at_most)
        return min(float(context[section].request_timeout), at_most)

    return derive


_SECONDS = Seconds()
_POSITIVE = Int(1)


@dataclass(frozen=True)
class ServerSettings:
    """``[server]``: the HTTP server, its limits, resilience and shared state."""

    SECTION: ClassVar[str] = "server"
    ENV_PREFIX: ClassVar[str] = ""

    host: str = setting(
        "127.0.0.1",
        Text(),
        "Address the HTTP server binds; a non-loopback one needs client authentication or allow-unauthenticated ([Deploying](deploying.md#what-every-deployment-decides)).",
        example="0.0.0.0",
    )
    port: int = setting(8082, Int(1, 65535), "Port of the HTTP server.", example=9000)
    log_level: str = setting(
        "INFO", Choice(LOG_LEVELS, "log level"), "Least severity logged.", example="DEBUG"
    )
    log_format: str = setting(
        "console",
        Choice(LOG_FORMATS, "log format"),
        "Log lines for people (console) or one JSON object a line (json) ([Logs](operations.md#logs)).",
        example="json",
    )
    request_timeout: float = setting(
        90.0,
        _SECONDS,
        "Default of first-byte-timeout, idle-timeout and gRPC's request-timeout.",
        example=30.0,
    )
    max_tokens_limit: int | None = setting(
        None,
        _POSITIVE,
        "Clamps max_tokens; unset, it is never clamped (Claude Code's 32000 reaches the provider as sent).",
        example=4096,
    )
    max_body_size: int = setting(
        32 * MiB, Int(1024), "Largest request body in bytes; larger get 413.", example=2048
    )
    max_upload_size: int = setting(
        512 * MiB,
        Int(1024),
        "Largest streamed passthrough body (uploads) in bytes.",
        example=4096,
    )
    proxy_api_key: str | None = setting(
        None,
        Text(),
        "The key clients must send (x-api-key or Bearer); none: no client key.",
        secret=True,
        example="client-key",
    )
    # Resilience (providers.keys, pipeline retries/fallbacks, server shutdown).
    max_retries: int = setting(
        2,
        Int(0, 10),
        "Retries of an upstream call that failed before its first byte ([Retries](routing.md#retries)).",
        example=5,
    )
    retry_backoff: float = setting(
        0.5,
        _SECONDS,
        "First backoff, doubled per retry, full jitter ([Retries](routing.md#retries)).",
        example=1.5,
    )
    connect_timeout: float = setting(
        10.0,
        _SECONDS,
        "Seconds to connect to an upstream ([Timeouts](routing.md#timeouts)).",
        derive=_request_timeout(at_most=10.0),
        default_text="request-timeout, at most 10",
        example=3.0,
    )
    first_byte_timeout: float = setting(
        90.0,
        _SECONDS,
        "Seconds from the upstream call to its first byte ([Timeouts](routing.md#timeouts)).",
        derive=_request_timeout(),
        default_text="request-timeout",
        example=45.0,
    )
    idle_timeout: float = setting(
        90.0,
        _SECONDS,
        "Seconds an upstream stream may stay silent ([Timeouts](routing.md#timeouts)).",
        derive=_request_timeout(),
        default_text="request-timeout",
        example=45.0,
    )
    total_timeout: float | None = setting(
        None,
        _SECONDS,
        "Seconds an upstream call may last in all; unset: no limit ([Timeouts](routing.md#timeouts)).",
        example=600.0,
    )
    ping_interval: float = setting(
        10.0,
        _SECONDS,
        "Seconds between keep-alive pings on a quiet stream ([Streams](routing.md#streams)).",
        example=5.0,
    )
    shutdown_timeout: float = setting(
        30.0,
        _SECONDS,
        "Seconds open requests get to finish at shutdown ([Shutdown](routing.md#shutdown)).",
        example=5.0,
    )
    # Key benches (providers.keys): a 401/403; the cap of a 429's backoff (1 s,
    # doubling) when the upstream gives no retry-after; the cap of every bench.
    key_auth_cooldown: float = setting(
        300.0,
        _SECONDS,
        "Seconds a key rejected with 401/403 rests ([Key pools](routing.md#key-pools)).",
        example=60.0,
    )
    key_rate_limit_cooldown: float = setting(
        30.0,
        _SECONDS,
        "Cap of a 429's backoff (1 s, doubling) when no retry-after is given ([Key pools](routing.md#key-pools)).",
        example=10.0,
    )
    key_cooldown_max: float = setting(
        3600.0,
        _SECONDS,
        "Longest rest of any key, whatever the upstream says ([Key pools](routing.md#key-pools)).",
        example=600.0,
    )
    redis_url: str | None = setting(
        None,
        Url(("redis", "rediss", "unix")),
        "State shared by instances: cooldowns, limits, cache, events "
        "([Deploying](deploying.md#what-the-instances-share-and-what-holds)); unset: in-process.",
        example="redis://127.0.0.1:6379/0",
    )
    redis_namespace: str = setting(
        "vdm",
        Pattern(r"[A-Za-z0-9_.-]{1,64}", "use 1-64 letters, digits, '_', '.' or '-'"),
        "Prefix of the shared Redis keys, so several deployments can share one Redis.",
        example="team-a",
    )
    events_queue_size: int = setting(
        10_000,
        Int(100),
        "Events queued in each process at most ([the event bus](deploying.md#what-the-instances-share-and-what-holds)).",
        example=500,
    )
    events_stream_max_length: int = setting(
        100_000, Int(1000), "Entries kept in the Redis event stream.", example=5000
    )
    models_cache_ttl: float = setting(
        600.0,
        _SECONDS,
        "Seconds a provider's model list is fresh ([Model lists](doors.md#model-lists)).",
        example=60.0,
    )
    models_wait: float = setting(
        2.0,
        _SECONDS,
        "Longest /v1/models waits for a provider's list ([Model lists](doors.md#model-lists)).",
        example=0.5,
    )
    models_prefetch: bool = setting(
        True,
        Flag(),
        "Fetch the providers' model lists at start-up ([Model lists](doors.md#model-lists)).",
        example=False,
    )
    passthrough_allow: tuple[Any, ...] | None = setting(
        None,
        Allowlist(),
        "Methods and paths passed through to OpenAI-format providers, a string or (TOML) an array of entries ([Allowlist](passthrough.md#allowlist)).",
        default_text="default (the OpenAI API surface)",
        example=["GET /v1/files", "POST /v1/embeddings"],
    )
    trace_content: bool = setting(
        False,
        Flag(),
        "Record prompts and whole answers in the OpenTelemetry traces (off: never recorded) ([Tracing](tracing.md)).",
        env="VDM_TRACE_CONTENT",
        example=True,
    )
    # vdm.loops: this deployment's id in the hop header of every upstream request.
    gateway_id: str = ""
    trusted_proxies: tuple[str, ...] = setting(
        (),
        Networks(),
        "IPs and CIDRs whose X-Forwarded-For / -Proto give the client's address ([Security](security.md)).",
        example=["10.0.0.0/8"],
    )
    allow_unauthenticated: bool = setting(
        False,
        Flag(),
        "Allow a non-loopback address with no client authentication.",
        example=True,
    )
    # Connection limits (vdm.server.protocol; docs/security-limits.md).
    max_header_size: int = setting(
        64 * 1024,
        Int(1024),
        "Request line and headers in bytes; larger get 431 ([Connections](security-limits.md#connections-http-doors)).",
        example=8192,
    )
    header_timeout: float = setting(
        20.0,
        _SECONDS,
        "Seconds to send the request line and headers; else 408 ([Connections](security-limits.md#connections-http-doors)).",
        example=5.0,
    )
    body_timeout: float = setting(
        30.0,
        _SECONDS,
        "A request body must progress within each such window; else 408 ([Connections](security-limits.md#connections-http-doors)).",
        example=5.0,
    )
    body_min_rate: int = setting(
        1024,
        Int(0),
        "Bytes/s a body must average over each body-timeout window ([Connections](security-limits.md#connections-http-doors)).",
        example=100,
    )
    keep_alive_timeout: float = setting(
        30.0,
        _SECONDS,
        "Idle keep-alive connections are closed after this ([Connections](security-limits.md#connections-http-doors)).",
        example=5.0,
    )
    max_connections: int = setting(
        2048,
        _POSITIVE,
        "Open connections at most; beyond, 503, a reserve still answers /live and /ready ([Connections](security-limits.md#connections-http-doors)).",
        example=100,
    )
    # Connections to one provider open at once; beyond, requests wait for one
    # (vdm.providers.http.make_session; docs/operations.md).
    upstream_max_connections: int = setting(
        1024,
        UPSTREAM_CONNECTIONS,
        "Connections open to one provider at once (a provider's own: its max-connections); beyond, requests wait ([Upstream connections](operations.md#upstream-connections)).",
        example=64,
    )
    max_credential_length: int = setting(
        8192,
        Int(64),
        "Longer API keys and tokens get 401 before any decoding ([Connections](security-limits.md#connections-http-doors)).",
        example=1024,
    )
    metrics_models: tuple[str, ...] = setting(
        (),
        Names(check=model_name_ok),
        "Model names counted under their own metric label besides the configured ones ([Limits at the edge](security-limits.md#metrics-totals-dashboard)).",
        example=["gpt-4o"],
    )


class MiddlewareNames(Kind):
    """Middleware names, in chain order: a TOML array, or a comma-separated
    environment variable, each once.  Whether each is known is the chain's
    (:func:`vdm.validate.load_settings` hands the names to :func:`vdm.config.load_settings`)."""

    label = "list of middleware names"

    def from_env(self, text: str) -> Any:
        return [n.strip() for n in text.split(",") if n.strip()]

    def env_text(self, value: Any) -> str:
        return ",".join(value)

    def parse(self, value: Any, where: str, problems: list[str]) -> tuple[str, ...] | None:
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            problems.append(f"{where}: expected a list of middleware names, got {value!r}")
            return None
        enabled: list[str] = []
        for name in value:
            if name in enabled:
                problems.append(f"{where}: middleware {name!r} is listed twice")
            else:
                enabled.append(name)
        return tuple(enabled)


GEMINI_THOUGHT_SIGNATURES = "gemini-thought-signatures"


@dataclass(frozen=True)
class MiddlewareSettings:
    """``[middleware]``: the request/response hooks, in chain order."""

    SECTION: ClassVar[str] = "middleware"
    ENV_PREFIX: ClassVar[str] = ""

    enabled: tuple[str, ...] = setting(
        (),
        MiddlewareNames(),
        "The chain, in order: request-log, gemini-thought-signatures ([Middleware](routing.md#middleware)).",
        env="MIDDLEWARE",
        example=["request-log"],
    )
    thought_signature_cache_ttl: float = setting(
        3600.0, _SECONDS, "Seconds a Gemini thought signature is remembered.", example=60.0
    )
    thought_signature_max_cache_size: int = setting(
        10_000, _POSITIVE, "Gemini thought signatures remembered at most.", example=100
    )
    # GEMINI_THOUGHT_SIGNATURES_ENABLED=true adds gemini-thought-signatures when not listed.
    gemini_thought_signatures: bool = setting(
        False,
        Flag(),
        "Add gemini-thought-signatures to the middleware when it is not listed.",
        env="GEMINI_THOUGHT_SIGNATURES_ENABLED",
        key=None,
        example=True,
    )


@dataclass(frozen=True)
class GrpcSettings:
    """``[grpc]``: the LLMProxy gRPC service (``vdm.grpc``)."""

    SECTION: ClassVar[str] = "grpc"
    ENV_PREFIX: ClassVar[str] = "GRPC_"

    host: str | None = setting(
        None,
        Text(),
        "Address the gRPC service binds.",
        default_text="the HTTP server's host",
        example="0.0.0.0",
    )
    port: int | None = setting(
        None,
        Int(1, 65535),
        "Port of the gRPC service; unset: `vdm grpc serve` uses 50051, `server start` runs none.",
        example=50052,
    )
    tls_cert: str | None = setting(
        None, File(), "TLS certificate (PEM); with tls-key, or neither.", example="cert.pem"
    )
    tls_key: str | None = setting(
        None, File(), "TLS private key (PEM); with tls-cert, or neither.", example="key.pem"
    )
    default_model: str | None = setting(
        None,
        Text(),
        "Model of a call that names none.",
        default_text="the default provider's default model",
        example="openai:gpt-4o",
    )
    max_requests_per_minute: int | None = setting(
        None,
        _POSITIVE,
        "Requests per minute, all callers together ([Limits](grpc.md#limits)).",
        example=600,
    )
    max_concurrent_requests: int | None = setting(
        None, _POSITIVE, "Requests at once, all clients together.", example=50
    )
    max_requests_per_minute_per_token: int | None = setting(
        None, _POSITIVE, "Requests per minute per verified JWT subject.", example=60
    )
    max_concurrent_requests_per_token: int | None = setting(
        None, _POSITIVE, "Requests at once per verified JWT subject.", example=5
    )
    max_input_length: int = setting(
        1_000_000, _POSITIVE, "Characters of a request's fragments together.", example=10_000
    )
    request_timeout: float = setting(
        90.0,
        _SECONDS,
        "Seconds for a whole Execute / StreamExecute.",
        derive=_request_timeout(section="server"),
        default_text="server.request-timeout",
        example=30.0,
    )
    # None: vdm.auth.jwt generates one into the user's config dir on first use.
    jwt_secret: str | None = setting(
        None,
        JwtSecret(),
        "HS256 secret of client JWTs; unset: generated into the user's config dir ([Secret](grpc.md#auth)).",
        env="VDM_JWT_SECRET",
        secret=True,
        example="s" * JWT_SECRET_MIN_LENGTH,
    )
    jwt_secret_file: str | None = setting(
        None,
        Text(),
        "File holding the JWT secret (after jwt-secret in the same layer).",
        env="VDM_JWT_SECRET_FILE",
        example="jwt-secret",
    )
