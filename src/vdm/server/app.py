"""The ASGI application: routes -> :class:`vdm.pipeline.Gateway`, and back.

Handlers only translate HTTP to the pipeline and back; rules live in the
pipeline and its modules.  Every error is rendered in the shape of the door
the client came in by (:func:`door_for`): OpenAI's for the OpenAI API paths,
Anthropic's otherwise.  Any other allowed ``/v1/*`` request passes through to
an OpenAI-format provider (:mod:`vdm.passthrough`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, quote

import msgspec

from vdm import __version__, events, loops, totals
from vdm import passthrough as pt
from vdm.auth.credentials import Credentials, JwtAdmission
from vdm.auth.proxy_key import ProxyKey, presented_key
from vdm.auth.split import CredentialSplit
from vdm.auth.throttle import FailedLogins
from vdm.config import ConfigError, Settings
from vdm.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    LoopDetected,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuotaExceeded,
    ShuttingDown,
    StartRefused,
)
from vdm.events import Bus
from vdm.ir import Usage
from vdm.logs import client_request_id
from vdm.logs import request_id as current_request_id
from vdm.loops import HOP_HEADER
from vdm.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from vdm.metrics import Metrics
from vdm.outcome import Reply
from vdm.pipeline import Gateway, new_request_id
from vdm.protocols import anthropic_door as anthropic
from vdm.protocols import openai_door as openai_ingress
from vdm.protocols import responses_door as responses
from vdm.protocols.fields import too_deep
from vdm.providers.base import ClientContext, OpenAIPassthrough, RawResponse
from vdm.server import access as access_record
from vdm.server import dashboard, drain, reload, workers
from vdm.server.asgi import (
    DISCONNECT_HOOK,
    ClientGone,
    Receive,
    Scope,
    Send,
    cancel_on_disconnect,
    header_map,
    raw_headers,
    read_body,
    send_bytes,
    send_stream,
    stream_request,
)
from vdm.server.protocol import ConnectionLimits
from vdm.totals import RunningTotals
from vdm.validate import load_settings
from vdm.worker_metrics import WorkerMetrics

log = logging.getLogger("vdm.server")
access = logging.getLogger("vdm.access")
_encode = msgspec.json.Encoder().encode
_JSON = {"content-type": "application/json"}

# Paths that answer without the proxy key (probes).
OPEN_PATHS = frozenset({"/", "/live", "/ready"})
# Paths for the operator only (MANAGEMENT_TOKEN, else PROXY_API_KEY): every tenant's traffic.
OPERATOR_PATHS = frozenset({"/metrics", "/metrics/running-totals"})
OPERATOR = "vdm.operator"  # scope key: the request holds the operator's credential
_LOGIN_ACTIONS = {"management": "manage.authenticate"}  # (audit actions named before)
MANAGE = "/manage"
PRINCIPAL = "vdm.principal"  # scope key: the tenant a request was admitted for
NORMAL_PATH = "vdm.path"  # scope key: a passthrough path's normal form (vdm.passthrough)


Handler = Callable[["App", Scope, Receive, Send, dict[str, str], str], Awaitable[None]]


class App:
    """ASGI callable; the gateway is built in the lifespan startup."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway: Gateway | None = None
        self.grpc: Any = None  # vdm.grpc.server.Service when GRPC_PORT is set
        self.proxy_key = (
            ProxyKey(settings.server.proxy_api_key) if settings.server.proxy_api_key else None
        )
        # LOG_FORMAT=json: each access record carries its fields (vdm.server.access).
        self.access_fields = settings.server.log_format == "json"
        self.management_key = (
            ProxyKey(settings.tenants.management_token)
            if settings.tenants.management_token
            else None
        )
        # None: every request passes (no PROXY_API_KEY, control plane off).
        self.auth: Credentials | None = (
            Credentials(
                self.proxy_key,
                management_key=self.management_key,
                max_length=settings.server.max_credential_length,
            )
            if self.proxy_key
            else None
        )
        # Which credential may go to a !PASSTHRU provider while auth is None.
        self._open_split = CredentialSplit((self.management_key,), checks=False)
        self.plane: Any = None  # vdm.tenants.service.ControlPlane, when the control plane is on
        self._revocation_watch: asyncio.Task[None] | None = None
        self.manage: Any = None  # the management API (ASGI), with MANAGEMENT_TOKEN
        self.operator_key = self.management_key or self.proxy_key if settings.operator_key else None
        self.failed_logins = FailedLogins()
        self._use(settings)
        self.started = time.time()
        self.metrics = Metrics()
        self.bus: Bus | None = None  # vdm.events, built in the lifespan
        self.totals: RunningTotals | None = None
        # One of --workers N (vdm.server.workers): /metrics covers them all.
        self.workers_dir: Path | None = None
        self.shared_metrics: WorkerMetrics | None = None
        # SIGHUP: the configuration reloaded (vdm.server.reload).
        self.last_reload: dict[str, Any] | None = None  # when, and how it went
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False  # a SIGHUP came during a reload
        self._retiring: set[asyncio.Task[None]] = set()  # replaced gateways, draining
        self._hangup_loop: asyncio.AbstractEventLoop | None = None
        # vdm.server.drain: while this file exists, /ready answers 503 (draining).
        marker = os.environ.get(drain.ENV)
        self.drain_marker = Path(marker) if marker else None

    def _use(self, settings: Settings) -> None:
        """What the request path reads of ``settings`` (at start and on a reload)."""
        self.settings = settings
        self.max_body = settings.server.max_body_size
        # What one connection may cost (read by server.protocol, once per process).
        self.connection_limits = ConnectionLimits.from_settings(settings.server)
        self.ping_interval = settings.server.ping_interval
        self.max_upload = settings.server.max_upload_size
        default_allow = pt.parse_allowlist(pt.DEFAULT_ALLOW)
        configured = settings.server.passthrough_allow
        self.allow = pt.Allowlist(default_allow if configured is None else configured)
        # The OpenAI API's paths (allowed or not): their errors are OpenAI-shaped.
        self.openai_paths = pt.Allowlist((*default_allow, *self.allow.rules))
        self.formats = {n: p.api_format for n, p in settings.providers.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    server = self.settings.server
                    self.bus = events.build(server)
                    self.metrics.bus = self.bus
                    self.workers_dir = workers.directory_from_env(os.environ)
                    if self.workers_dir is not None:
                        self.shared_metrics = WorkerMetrics(self.metrics, self.workers_dir)
                        self.shared_metrics.start()
                    self.totals = totals.build(server.redis_url, server.redis_namespace)
                    self.totals.follow(self.bus)
                    if self.settings.tenants.enabled:
                        await self._open_control_plane()
                    if self.auth is not None:
                        await self._accept_jwts()
                    self.gateway = Gateway.from_settings(self.settings, self.metrics, self.bus)
                    await self.bus.start()  # (every consumer has subscribed)
                    await self.gateway.start()
                    if self.settings.server.models_prefetch:
                        self.gateway.catalog.start()
                    if self.settings.grpc.port is not None:
                        await self._start_grpc(self.gateway)
                    self._watch_hangup()
                except StartRefused as exc:  # the operator's to fix: one line, no traceback
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:  # pragma: no cover - reported to the server
                    # One line (the server logs it); the traceback only at DEBUG (--debug).
                    log.debug("start-up failed", exc_info=True)
                    detail = " ".join(str(exc).split()) or "(no message)"
                    await send(
                        {
                            "type": "lifespan.startup.failed",
                            "message": f"start-up failed: {type(exc).__name__}: {detail} "
                            "(run with --debug for the traceback)",
                        }
                    )
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._hangup_loop is not None:
                    self._hangup_loop.remove_signal_handler(signal.SIGHUP)
                if self._reloading is not None:
                    self._reloading.cancel()
                if self._revocation_watch is not None:
                    self._revocation_watch.cancel()
                if self.grpc is not None:
                    await self.grpc.stop(self.settings.server.shutdown_timeout)
                if self._retiring:  # (their requests have ended by now)
                    await asyncio.wait(self._retiring, timeout=5)
                if self.gateway is not None:
                    await self.gateway.close()
                if self.bus is not None:
                    await self.bus.close()  # the queued events handled: usage, audit, totals
                if self.plane is not None:
                    await self.plane.close()
                if self.totals is not None:
                    await self.totals.close()
                if self.shared_metrics is not None:
                    self.shared_metrics.close()  # what this worker counted stays in the sums
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _watch_hangup(self) -> None:
        """SIGHUP reloads the configuration (only in the process's main thread,
        where signals are delivered: not in an app a test runs on a thread)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self._hangup_loop = loop

    def request_reload(self) -> None:
        """Reload soon; a signal during a reload runs one more after it (the
        files may have changed again), never two at once."""
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return
        self._reloading = asyncio.get_running_loop().create_task(
            self._reload_while_asked(), name="vdm-reload"
        )

    async def _reload_while_asked(self) -> None:
        while True:
            self._reload_again = False
            await self.reload()
            if not self._reload_again:
                return

    async def reload(self) -> bool:
        """Read the configuration again and serve new requests with it; on any
        problem keep the running one and log one error line naming it."""
        running, old = self.settings, self.gateway
        assert old is not None
        try:
            loaded = await asyncio.to_thread(load_settings)
            settings = reload.effective(running, loaded)
            new = reload.successor(old, settings)
        except Exception as exc:
            problem = (
                "; ".join(exc.problems)
                if isinstance(exc, ConfigError)
                else f"{type(exc).__name__}: {exc}"
            )
            log.error("configuration reload failed, the running one is kept: %s", problem)
            self.last_reload = {"at": time.time(), "ok": False, "error": problem}
            return False
        self._use(settings)
        self.gateway = new
        logging.getLogger().setLevel(settings.server.log_level)
        if self.plane is not None:  # the providers a project's keys and tokens may name
            self.plane.providers = list(settings.providers)
            self.plane.default_provider = settings.default_provider
        if self.grpc is not None:
            self.grpc.use(new)
        if settings.server.models_prefetch:
            new.catalog.start()
        retiring = asyncio.get_running_loop().create_task(reload.retire(old, new))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)
        log.info("configuration reloaded: %s", reload.describe(running, settings))
        restart = reload.restart_only_changes(running, loaded)
        if restart:
            log.warning(
                "configuration reload: %s changed; these take effect only on a restart "
                "(vdm server restart), the running values stay until then",
                ", ".join(restart),
            )
        self.last_reload = {"at": time.time(), "ok": True, "error": None}
        return True

    async def _start_grpc(self, gateway: Gateway) -> None:
        """The gRPC LLMProxy service on the same loop and gateway (JWT auth on;
        with the control plane, its virtual tokens too)."""
        from vdm.grpc.server import start_service

        grpc = self.settings.grpc
        assert grpc.port is not None
        self.grpc = await start_service(
            gateway,
            self.settings,
            host=grpc.host or self.settings.server.host,
            port=grpc.port,
            tls_cert=grpc.tls_cert,
            tls_key=grpc.tls_key,
            tenants=self.plane.registry if self.plane is not None else None,
            share_port=self.workers_dir is not None,  # with the other workers
        )
        log.info("gRPC LLMProxy listening on %s", self.grpc.url)

    async def _accept_jwts(self) -> None:
        """Let the HTTP doors accept the JWTs ``vdm token generate`` issues
        (same secret, same revocations as gRPC) when a secret is configured
        or was generated; never generate one here."""
        from vdm.auth.jwt import Verifier, load_secret, secret_path
        from vdm.auth.token_store import RevocationList

        grpc = self.settings.grpc
        path = secret_path(os.environ)
        if not grpc.jwt_secret and not await asyncio.to_thread(path.exists):
            return
        secret = await asyncio.to_thread(load_secret, grpc)
        revocations = RevocationList.default()
        await asyncio.to_thread(revocations.load)
        self._revocation_watch = asyncio.create_task(
            revocations.watch(), name="vdm-jwt-revocations"
        )
        audit = self.plane.audit if self.plane is not None else None
        tokens = self.plane.registry if self.plane is not None else None
        self.auth = Credentials(
            self.proxy_key,
            tokens,
            audit=audit,
            jwt=JwtAdmission(Verifier(secret, revocations), audit),
            management_key=self.management_key,
            max_length=self.settings.server.max_credential_length,
        )

    async def _open_control_plane(self) -> None:
        from vdm.tenants.service import ControlPlane

        settings = self.settings
        assert self.bus is not None
        self.plane = await ControlPlane.open(
            settings.tenants,
            list(settings.providers),
            settings.default_provider,
            self.bus,
            redis_url=settings.server.redis_url,
            redis_namespace=settings.server.redis_namespace,
            workers=self.workers_dir is not None,
        )
        self.auth = Credentials(
            self.proxy_key,
            self.plane.registry,
            audit=self.plane.audit,
            management_key=self.management_key,
            max_length=settings.server.max_credential_length,
        )
        if self.management_key is not None:
            from vdm.server.manage import build

            self.manage = build(self.plane, lambda: self.gateway.cache if self.gateway else None)

    async def _management(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
    ) -> None:
        """``/manage/*``: the MANAGEMENT_TOKEN bearer, a body of MAX_BODY_SIZE at
        most, then the management API (its errors in its own ``detail`` shape)."""
        if self.manage is None:
            raise NotFound("the management API is off; set MANAGEMENT_TOKEN to turn it on")
        assert self.management_key is not None
        try:
            await self._login(scope, self.management_key, headers, request_id, "management")
            body = await read_body(receive, headers, self.max_body)
        except GatewayError as exc:
            await send_bytes(
                send,
                exc.status,
                {**_JSON, **id_headers(request_id), **exc.headers},
                _encode({"detail": exc.message}),
            )
            return
        scope = {**scope, "vdm.request_id": request_id}

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", ()),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            await send(message)

        given = False

        async def replay() -> dict[str, Any]:
            nonlocal given
            if given:
                return await receive()  # (a disconnect)
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.manage(scope, replay, send_with_id)

    async def _dashboard(
        self, scope: Scope, send: Send, headers: dict[str, str], request_id: str, path: str
    ) -> None:
        """``/dashboard/*``: the shipped page (no data, open) and its snapshot
        (MANAGEMENT_TOKEN when set, else PROXY_API_KEY when set, else open)."""
        ids = id_headers(request_id)
        if scope["method"] not in ("GET", "HEAD"):
            await send_bytes(
                send,
                405,
                {**_JSON, **ids, "allow": "GET, HEAD"},
                _encode({"detail": f"method {scope['method']} not allowed; use GET"}),
            )
            return
        if path != dashboard.SNAPSHOT:
            found = dashboard.asset(path)
            if found is None:
                await send_bytes(
                    send, 404, {**_JSON, **ids}, _encode({"detail": f"no dashboard file {path}"})
                )
                return
            body, content_type = found
            await send_bytes(
                send,
                200,
                {
                    "content-type": content_type,
                    **ids,
                    "cache-control": "no-cache",
                    "content-security-policy": dashboard.CSP,
                },
                body,
            )
            return
        try:
            await self._check_operator(scope, headers, request_id, "dashboard")
        except GatewayError as exc:
            await send_bytes(
                send, exc.status, {**_JSON, **ids, **exc.headers}, _encode({"detail": exc.message})
            )
            return
        await send_bytes(
            send,
            200,
            {**_JSON, **ids, "cache-control": "no-store"},
            _encode(dashboard.snapshot(self)),
        )

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        started = time.perf_counter()
        headers = header_map(scope)
        request_id = client_request_id(headers.get("x-request-id")) or new_request_id()
        token = current_request_id.set(request_id)
        try:
            if HOP_HEADER in headers:
                self._refuse_loop(headers[HOP_HEADER])
            if path.startswith(MANAGE) and (len(path) == 7 or path[7] == "/"):
                await self._management(scope, receive, send, headers, request_id)
                return
            if dashboard.is_dashboard(path):
                await self._dashboard(scope, send, headers, request_id, path)
                return
            handler = self._handler(scope, path)
            if path in OPERATOR_PATHS:
                await self._check_operator(scope, headers, request_id, path[1:])
            elif path == "/health" and self._holds_operator_key(headers):
                scope[OPERATOR] = True
            elif self.auth is not None and path not in OPEN_PATHS:
                client = scope.get("client")
                principal = await self.auth.check(
                    headers, request_id, client[0] if client else None
                )
                if principal is not None:
                    scope[PRINCIPAL] = principal
            # A handler reads app.gateway before its first await: the lease is on
            # the gateway that serves the request (a reload closes it after them).
            gateway = self.gateway
            with gateway.leases if gateway is not None else contextlib.nullcontext():
                await handler(self, scope, receive, send, headers, request_id)
        except (GatewayError, RecursionError) as caught:
            exc = caught if isinstance(caught, GatewayError) else too_deep("the request")
            door = (
                openai_ingress if isinstance(exc, pt.UnsafePath) else door_for(self, path, headers)
            )
            _log_failure(self, scope, exc, door, started)  # type: ignore[arg-type]
            await send_error(send, exc, request_id, door)
        except ClientGone:
            return
        finally:
            current_request_id.reset(token)

    def _refuse_loop(self, hop: str) -> None:
        """A request this gateway sent upstream came back to it: 508 (vdm.loops)."""
        name = loops.looped_provider(hop, self.settings.server.gateway_id)
        provider = self.settings.providers.get(name or "")
        if provider is None:
            return  # another gateway's hop: a chain, not a loop
        source = self.settings.sources.get(f"providers.{provider.name}.base-url", "")
        raise LoopDetected(
            provider.loops_back
            or loops.loop_message(provider.name, provider.base_url, source, None),
            provider=provider.name,
            headers={HOP_HEADER: hop},
        )

    def provider_key(self, headers: dict[str, str]) -> str | None:
        """The client's credential a ``!PASSTHRU`` provider may have: never the
        one that let it into the gateway (:mod:`vdm.auth.split`)."""
        split = self.auth.split if self.auth is not None else self._open_split
        return split.provider(headers)

    def _holds_operator_key(self, headers: dict[str, str]) -> bool:
        """The request holds the operator's credential, or the gateway asks for
        none at all (no PROXY_API_KEY, no control plane)."""
        key = self.operator_key
        if key is None:
            return not self.settings.tenants.enabled
        try:
            key.check(presented_key(headers))
        except AuthenticationFailed:
            return False
        return True

    async def _check_operator(
        self, scope: Scope, headers: dict[str, str], request_id: str, what: str
    ) -> None:
        """Raise unless the request holds the operator's credential: what
        ``what`` shows is every tenant's traffic, for no tenant to see."""
        key = self.operator_key
        if key is None:
            if self.settings.tenants.enabled:
                raise PermissionDenied(
                    f"set MANAGEMENT_TOKEN to use the {what} with the control plane on "
                    "(it shows every tenant's traffic)"
                )
            return
        await self._login(scope, key, headers, request_id, what)

    async def _login(
        self, scope: Scope, key: ProxyKey, headers: dict[str, str], request_id: str, what: str
    ) -> None:
        """Check an operator's credential; a failure is audited and counted
        against the client's address, which after ten is refused a while
        (:mod:`vdm.auth.throttle`) without its credential being looked at."""
        client = scope.get("client")
        address = client[0] if client else None
        wait = self.failed_logins.wait(address)
        if wait is not None:
            raise QuotaExceeded(
                "too many failed attempts at the operator's credential from this address; "
                f"try again in {max(1, int(wait + 0.999))} s",
                retry_after=wait,
            )
        try:
            key.check(presented_key(headers))
            return
        except AuthenticationFailed:
            pass
        held = self.failed_logins.failed(address)
        name = "MANAGEMENT_TOKEN" if key is self.management_key else "PROXY_API_KEY"
        if self.plane is not None:
            from vdm.tenants.service import Actor

            await self.plane.failed(
                Actor("anonymous", request_id, address),
                _LOGIN_ACTIONS.get(what, f"{what.partition('/')[0]}.authenticate"),
                f"wrong or missing {name}"
                + ("; further attempts from this address held back" if held else ""),
            )
        raise AuthenticationFailed(
            f"invalid or missing {what} token (the operator's {name}, as "
            "Authorization: Bearer or x-api-key)",
            headers={"www-authenticate": "Bearer"},
        )

    def _handler(self, scope: Scope, path: str) -> Handler:
        """The gateway's own routes first; then the passthrough allowlist, on the
        path's normal form (kept in the scope for :func:`passthrough`)."""
        method: str = scope["method"]
        methods = ROUTES.get(path)
        if methods is not None and method in methods:
            return methods[method]
        if path.startswith("/v1/"):
            raw = scope.get("raw_path") or quote(scope["path"]).encode()
            path = scope[NORMAL_PATH] = pt.normal_path(raw)
        if self.allow.allows(method, path):
            return passthrough
        if methods is not None:
            raise MethodNotAllowed(
                f"method {method} not allowed on {path}; use {', '.join(sorted(methods))}"
            )
        self.allow.check(method, path)  # raises: 404 outside the allowlist, else 405
        return passthrough  # pragma: no cover - check() only returns for allowed requests


def id_headers(request_id: str) -> dict[str, str]:
    """Every response names its request (``request-id`` as Anthropic does,
    ``x-request-id`` as most proxies and OpenAI do)."""
    return {"request-id": request_id, "x-request-id": request_id}


def door_for(app: App, path: str, headers: dict[str, str]) -> Door:
    """Which client protocol a request speaks, so its errors take that shape:
    the Responses door for ``/v1/responses`` (OpenAI's error shape, its own
    stream error events), OpenAI for chat completions and the rest of the OpenAI
    API, ``/v1/models``
    unless the client sends ``anthropic-version``; Anthropic otherwise."""
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/")
    if path == "/v1/responses":
        return responses  # type: ignore[return-value]
    if path == "/v1/models":
        return anthropic if "anthropic-version" in headers else openai_ingress  # type: ignore[return-value]
    if path == "/v1/chat/completions" or app.openai_paths.covers(path):
        return openai_ingress  # type: ignore[return-value]
    return anthropic  # type: ignore[return-value]


_DOOR_NAMES: dict[Any, str] = {
    anthropic: "anthropic",
    openai_ingress: "openai",
    responses: "responses",
}


class Door(Protocol):
    """A client protocol's error rendering (the protocol modules are doors)."""

    PING: bytes

    def encode_error(self, error: GatewayError) -> bytes: ...

    def encode_stream_error(self, error: GatewayError) -> bytes: ...


async def send_error(
    send: Send, exc: GatewayError, request_id: str, door: Door = anthropic
) -> None:  # type: ignore[assignment]
    headers = {**_JSON, **exc.headers, **id_headers(request_id)}
    await send_bytes(send, exc.status, headers, door.encode_error(exc))


def _internal(exc: BaseException) -> GatewayError:
    if isinstance(exc, RecursionError):  # a request nested too deeply to convert: a 400
        return too_deep("the request")
    log.error("internal error", exc_info=exc)
    return GatewayError(f"internal gateway error ({type(exc).__name__}); see the gateway log")


async def _reply(
    app: App,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[str, str],
    request_id: str,
    call: Callable[..., Awaitable[Reply]],
    door: Door = anthropic,  # type: ignore[assignment]
) -> None:
    """Read the body, run the pipeline, send its reply (in ``door``'s protocol);
    cancel if the client leaves."""
    started = time.perf_counter()
    metrics = app.metrics
    metrics.in_flight += 1
    try:
        body = await read_body(receive, headers, app.max_body)
        principal = scope.get(PRINCIPAL)
        client_key = app.provider_key(headers)  # (never the gateway's own credential)
        reply: Reply | None = None
        count: _UsageCount | None = None
        async with cancel_on_disconnect(receive, hook=scope.get(DISCONNECT_HOOK)) as watch:
            try:
                reply = await call(body, headers, client_key, principal)
            except GatewayError as exc:
                _log_failure(app, scope, exc, door, started)
                await send_error(send, exc, request_id, door)
                return
            except Exception as exc:
                error = _internal(exc)
                _log_failure(app, scope, error, door, started)
                await send_error(send, error, request_id, door)
                return
            except asyncio.CancelledError:
                if not watch.gone:  # the server is ending this request (shutdown)
                    with contextlib.suppress(Exception):
                        await send_error(send, ShuttingDown(), request_id, door)
                raise
            answered = time.perf_counter()
            reply.headers.update(id_headers(request_id))
            # A tenant's usage is counted before the answer's last byte goes out
            # (vdm.tenants.limits): the next request, on any instance, sees it.
            # A JWT admits a principal with no control plane (PROXY_API_KEY +
            # VDM_JWT_SECRET): then no token registry counts its usage.
            count = (
                _UsageCount(app, principal, reply)
                if principal is not None and app.plane is not None
                else None
            )
            if reply.stream is not None:
                metrics.open_streams += 1
                try:
                    await send_stream(
                        send,
                        reply.status,
                        reply.headers,
                        reply.stream,
                        lambda exc: door.encode_stream_error(_internal(exc)),
                        ping=door.PING,
                        ping_interval=app.ping_interval,
                        on_cancel=lambda: door.encode_stream_error(ShuttingDown()),
                        before_end=count,
                    )
                finally:
                    metrics.open_streams -= 1
                answered = time.perf_counter()  # a stream's upstream ends with it
            else:
                if count is not None:
                    await count()
                await send_bytes(send, reply.status, reply.headers, reply.body)
    finally:
        metrics.in_flight -= 1
    if reply is not None and reply.outcome is not None:
        _record_outcome(app, door, reply, started, answered)
        if count is not None:
            await count()  # (a no-op unless the client left before the end)
            if reply.headers.get("x-vdm-cache") == "hit":
                app.plane.registry.record_cache_hit(principal)
        if access.isEnabledFor(logging.INFO):
            _log_outcome(app, scope, reply, watch.gone, door, started)


class _UsageCount:
    """Counts a tenant's answer against its token, once: before the answer's
    end, or after it when the client left first (its tokens count all the same)."""

    __slots__ = ("_app", "_principal", "_reply", "done")

    def __init__(self, app: App, principal: Any, reply: Reply) -> None:
        self._app, self._principal, self._reply = app, principal, reply
        self.done = False

    async def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        outcome = self._reply.outcome
        if outcome is not None:
            await self._app.plane.registry.record_usage(self._principal, outcome.usage)


def _record_outcome(app: App, door: Door, reply: Reply, started: float, answered: float) -> None:
    """Metrics of a request that reached a provider (streams: once they ended)."""
    o = reply.outcome
    assert o is not None
    now = time.perf_counter()
    app.metrics.finished(
        _DOOR_NAMES[door],
        o.provider,
        o.model,
        reply.status,
        now - started,
        o.first_byte - started if o.first_byte is not None else None,
        answered - o.started,
        o.usage,
        "stream" if o.error else None,
        cache_hit=reply.headers.get("x-vdm-cache") == "hit",
        request_id=reply.headers.get("x-request-id", ""),
    )


def _log_outcome(
    app: App, scope: Scope, reply: Reply, gone: bool, door: Door, started: float
) -> None:
    o = reply.outcome
    assert o is not None
    usage = o.usage
    note = " error=" + o.error if o.error else (" client-disconnected" if gone else "")
    fields = None
    if app.access_fields:
        fields = access_record.fields(
            scope,
            scope.get(PRINCIPAL),
            _DOOR_NAMES[door],
            reply.status,
            started,
            provider=o.provider,
            model=o.model,
            first_byte=o.first_byte,
            usage=usage,
            cache=reply.headers.get("x-vdm-cache"),
            error=o.error,
            disconnected=gone,
        )
    access.info(
        "%s %s %d %s:%s in=%s out=%s %.1fms%s",
        scope["method"],
        scope["path"],
        reply.status,
        o.provider,
        o.model,
        usage.input_tokens if usage else "-",
        usage.output_tokens if usage else "-",
        (time.perf_counter() - o.started) * 1000,
        note,
        extra={access_record.FIELD: fields} if fields is not None else None,
    )


def _log_failure(app: App, scope: Scope, exc: GatewayError, door: Door, started: float) -> None:
    """The access-log line and the metrics of a request that ended in an error status
    (only the API's requests are counted, not those of /health, /metrics, ...)."""
    if scope["path"].startswith("/v1/"):
        app.metrics.failed(
            _DOOR_NAMES[door],
            getattr(exc, "provider", "") or "",
            exc.status,
            exc.kind,
            time.perf_counter() - started,
            current_request_id.get(""),
        )
    if access.isEnabledFor(logging.INFO):
        extra = None
        if app.access_fields:
            fields = access_record.fields(
                scope,
                scope.get(PRINCIPAL),
                _DOOR_NAMES[door],
                exc.status,
                started,
                provider=getattr(exc, "provider", None),
                error=f"{exc.kind}: {exc.message}",
            )
            extra = {access_record.FIELD: fields}
        access.info(
            "%s %s %d %s", scope["method"], scope["path"], exc.status, exc.message, extra=extra
        )


# ---------------------------------------------------------------- handlers


async def messages(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    assert app.gateway is not None
    await _reply(app, scope, receive, send, headers, request_id, app.gateway.messages)


async def count_tokens(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    assert app.gateway is not None
    await _reply(app, scope, receive, send, headers, request_id, app.gateway.count_tokens)


async def chat_completions(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    assert app.gateway is not None
    await _reply(
        app, scope, receive, send, headers, request_id, app.gateway.chat_completions, openai_ingress
    )  # type: ignore[arg-type]


async def create_response(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    assert app.gateway is not None
    await _reply(app, scope, receive, send, headers, request_id, app.gateway.responses, responses)  # type: ignore[arg-type]


async def passthrough(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    """Any other allowed ``/v1/*`` request, to an OpenAI-format provider.

    A JSON body is read (bounded by MAX_BODY_SIZE) for its ``model``; so is a
    multipart body that names one (audio, images) when a token's models are
    limited; any other body (uploads) is streamed on as it arrives, bounded by
    MAX_UPLOAD_SIZE.  A tenant's token is held to the rule of every door
    (:func:`vdm.passthrough.tenant_context`), and the usage the answer reports
    counts toward its TPM.  The answer is relayed chunk by chunk either way.
    """
    assert app.gateway is not None
    started = time.perf_counter()
    method: str = scope["method"]
    normal: str = scope[NORMAL_PATH]
    path = normal[len("/v1") :]  # the base URL ends in /v1
    query = pt.checked_query(scope.get("query_string", b""))
    principal = scope.get(PRINCIPAL)
    ctx = ClientContext(client_key=app.provider_key(headers), headers=headers)
    explicit = headers.get(pt.PROVIDER_HEADER)
    gateway, formats = app.gateway, app.formats  # (this request's, whatever a reload does)
    router = gateway.router
    limited = principal is not None and principal.allowed_models is not None
    has_body = "content-length" in headers or "transfer-encoding" in headers
    if pt.is_json(headers) or (limited and pt.is_form(headers) and pt.names_model_in_form(normal)):
        body = await read_body(receive, headers, app.max_body)
        if pt.is_json(headers):
            target, body = pt.route_json(router, formats, body, explicit)
        else:
            target = pt.route_form(router, formats, body, headers["content-type"], explicit)
        if principal is not None:
            ctx = pt.tenant_context(ctx, principal, target)
        upstream_headers = pt.request_headers(headers, streamed=False, read=principal is not None)
        async with cancel_on_disconnect(receive, hook=scope.get(DISCONNECT_HOOK)) as watch:
            raw = await _forward(gateway, target, method, path, query, upstream_headers, body, ctx)
            status, usage = await _relay(send, raw, request_id, target.provider)
    else:
        if limited and has_body and not pt.is_form(headers):
            raise InvalidRequest(
                "this API token may use only some models, so its passthrough bodies must be "
                "JSON or multipart/form-data (the model they name is checked)"
            )
        _check_declared(headers, app.max_upload)
        target = pt.choose(router, formats, None, explicit)
        if principal is not None:
            ctx = pt.tenant_context(ctx, principal, target)
        upstream_headers = pt.request_headers(headers, streamed=True, read=principal is not None)
        async with stream_request(receive, app.max_upload) as (watch, streamed):
            raw = await _forward(
                gateway,
                target,
                method,
                path,
                query,
                upstream_headers,
                streamed.chunks() if has_body else None,
                ctx,
            )
            streamed.abandon()
            status, usage = await _relay(send, raw, request_id, target.provider)
    if principal is not None and app.plane is not None:
        await app.plane.registry.record_usage(principal, usage)
    elapsed = time.perf_counter() - started
    app.metrics.finished("openai", target.provider, "", status, elapsed, None, None, usage, None)
    if access.isEnabledFor(logging.INFO):
        extra = None
        if app.access_fields:
            fields = access_record.fields(
                scope,
                principal,
                "openai",
                status,
                started,
                provider=target.provider,
                model=target.model,
                usage=usage,
                disconnected=watch.gone,
            )
            extra = {access_record.FIELD: fields}
        access.info(
            "%s %s %d %s passthrough %.1fms%s",
            method,
            scope["path"],
            status,
            target.provider,
            elapsed * 1000,
            " client-disconnected" if watch.gone else "",
            extra=extra,
        )


def _check_declared(headers: dict[str, str], limit: int) -> None:
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(
            f"request body of {length} bytes exceeds the limit of {limit} (MAX_UPLOAD_SIZE)"
        )


async def _forward(
    gateway: Gateway,
    target: pt.Target,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes | Any,
    ctx: ClientContext,
) -> RawResponse:
    provider = gateway.providers[target.provider]
    assert isinstance(provider, OpenAIPassthrough)  # choose() admits OpenAI-format only
    return await provider.forward(method, path, query, headers, body, ctx)


# The gateway's own headers on a relayed answer: an upstream's of the same name
# gives way instead of going out twice.
_OWN_RELAY_HEADERS = frozenset({"request-id", "x-vdm-provider"})


async def _relay(
    send: Send, raw: RawResponse, request_id: str, provider: str
) -> tuple[int, Usage | None]:
    """Status, headers and body as the upstream sent them; the usage the answer
    reported, when it can be read.  A failure after the status went out can
    only be told by cutting the connection: returning without the final body
    message makes the ASGI server close it."""
    headers = raw_headers([(k, v) for k, v in raw.headers.items() if k not in _OWN_RELAY_HEADERS])
    headers += [(b"request-id", request_id.encode()), (b"x-vdm-provider", provider.encode())]
    await send({"type": "http.response.start", "status": raw.status, "headers": headers})
    tail = pt.UsageTail(raw.headers)
    feed = tail.feed if tail.readable else None
    try:
        async for chunk in raw.body:
            if feed is not None:
                feed(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except GatewayError as exc:
        log.warning("passthrough relay from %s broke off: %s", provider, exc.message)
        return raw.status, tail.usage()  # (what was relayed was used)
    finally:
        await raw.body.aclose()  # type: ignore[attr-defined]
    await send({"type": "http.response.body", "body": b""})
    return raw.status, tail.usage()


async def _json(send: Send, request_id: str, value: Any, status: int = 200) -> None:
    await send_bytes(send, status, {**_JSON, **id_headers(request_id)}, _encode(value))


async def models(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    assert app.gateway is not None
    entries = await app.gateway.models(app.provider_key(headers))
    if "anthropic-version" in headers:
        await _json(send, request_id, anthropic.model_list(entries, app.started))
    else:  # OpenAI-style clients send no anthropic-version
        await _json(send, request_id, openai_ingress.model_list(entries, app.started))


async def aliases(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    assert app.gateway is not None
    router = app.gateway.router
    await _json(
        send,
        request_id,
        {
            "default_provider": router.default_provider,
            "aliases": router.active_aliases(),
        },
    )


async def health(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    """Status and version for any admitted client; the details (providers, their
    URLs and keys' count) for the operator only."""
    settings = app.settings
    status = {
        "status": "healthy" if app.gateway is not None else "starting",
        "version": __version__,
    }
    if not scope.get(OPERATOR):
        await _json(send, request_id, status)
        return
    await _json(
        send,
        request_id,
        {
            **status,
            "uptime_seconds": round(time.time() - app.started, 1),
            "default_provider": settings.default_provider,
            "last_reload": app.last_reload,  # SIGHUP: when, and the problem if it failed
            "providers": {
                name: {
                    "api_format": p.api_format,
                    "base_url": p.base_url,
                    "api_key_configured": p.has_key,
                    "keys": len(p.api_keys),
                    **(
                        {"api_version": p.api_version, "deployments": dict(p.deployments)}
                        if p.api_format == "azure"
                        else {}
                    ),
                }
                for name, p in settings.providers.items()
            },
        },
    )


async def metrics(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    """Prometheus text exposition (built only now, from plain counters; with
    ``--workers N``, of all the workers), in a thread: the loop goes on serving."""
    shared = app.shared_metrics
    build = shared.exposition if shared is not None else app.metrics.exposition
    text = await asyncio.to_thread(build)
    await send_bytes(
        send, 200, {"content-type": METRICS_CONTENT_TYPE, **id_headers(request_id)}, text
    )


async def running_totals(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    """JSON totals per provider and model; ``?provider=&model=&door=`` filter."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    unknown = set(query) - {"provider", "model", "door"}
    if unknown:
        raise InvalidRequest(
            f"unknown filter {', '.join(sorted(unknown))}; use provider, model or door"
        )
    pick = {k: v[-1] for k, v in query.items()}
    assert app.bus is not None and app.totals is not None
    await app.bus.flush()  # this instance's latest requests counted
    await _json(send, request_id, await app.totals.report(**pick))


async def root(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    # Claude Code sends HEAD / before its first request.
    await _json(send, request_id, {"name": "vdm", "version": __version__})


async def ready(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    if app.gateway is None:
        await _json(send, request_id, {"status": "starting"}, 503)
    elif app.drain_marker is not None and app.drain_marker.exists():  # (a stat: probes only)
        await _json(send, request_id, {"status": "draining"}, 503)
    else:
        await _json(send, request_id, {"status": "ready"})


async def live(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    await _json(send, request_id, {"status": "alive"})


ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"GET": root, "HEAD": root},
    "/v1/messages": {"POST": messages},
    "/v1/messages/count_tokens": {"POST": count_tokens},
    "/v1/chat/completions": {"POST": chat_completions},
    "/v1/responses": {"POST": create_response},
    "/v1/models": {"GET": models},
    "/v1/aliases": {"GET": aliases},
    "/health": {"GET": health},
    "/metrics": {"GET": metrics},
    "/metrics/running-totals": {"GET": running_totals},
    "/ready": {"GET": ready},
    "/live": {"GET": live},
}


def create_app() -> App:
    """uvicorn factory: settings come from the environment and config files."""
    from vdm.logs import configure

    settings = load_settings()
    configure(settings.server.log_level, settings.server.log_format)
    return App(settings)
