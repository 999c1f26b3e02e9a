"""The ASGI application: its lifespan (the gateway, the bus, the control
plane, gRPC, reloads) and each request's way to its handler.

:meth:`App._http` refuses loops, admits the client (the proxy key, tokens,
JWTs; the operator's credential for the operator's paths) and calls the
route's handler (:mod:`vdm.server.routes`: the doors' paths and the
gateway's own); a door's request is answered by :mod:`vdm.server.answer`,
any other allowed ``/v1/*`` request relayed by :mod:`vdm.server.relay`.
Every error is rendered in the shape of the door the client came in by
(:func:`vdm.server.routes.door_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from vdm import doors, events, loops, totals
from vdm import passthrough as pt
from vdm.auth.credentials import Credentials, JwtAdmission
from vdm.auth.proxy_key import ProxyKey, presented_key
from vdm.auth.split import CredentialSplit
from vdm.auth.throttle import FailedLogins
from vdm.config import ConfigError, Settings
from vdm.errors import (
    AuthenticationFailed,
    GatewayError,
    LoopDetected,
    PermissionDenied,
    QuotaExceeded,
    StartRefused,
)
from vdm.events import Bus
from vdm.logs import client_request_id
from vdm.logs import request_id as current_request_id
from vdm.loops import HOP_HEADER
from vdm.metrics import Metrics
from vdm.pipeline import Gateway, new_request_id
from vdm.pipeline.accounting import failed
from vdm.protocols.fields import too_deep
from vdm.server import dashboard, drain, reload, workers
from vdm.server.answer import log_failure, send_error
from vdm.server.asgi import ClientGone, Receive, Scope, Send, header_map
from vdm.server.operator import dashboard_files, is_management, management
from vdm.server.protocol import ConnectionLimits
from vdm.server.routes import OPEN_PATHS, OPERATOR_PATHS, door_for, handler_for
from vdm.server.scope import OPERATOR, PRINCIPAL
from vdm.totals import RunningTotals
from vdm.validate import load_settings
from vdm.worker_metrics import WorkerMetrics

log = logging.getLogger("vdm.server")
_LOGIN_ACTIONS = {"management": "manage.authenticate"}  # (audit actions named before)


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
                key_headers=doors.KEY_HEADERS,
            )
            if self.proxy_key
            else None
        )
        # Which credential may go to a !PASSTHRU provider while auth is None.
        self._open_split = CredentialSplit(
            (self.management_key,), key_headers=doors.KEY_HEADERS, checks=False
        )
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
                    self.gateway = Gateway.from_settings(
                        self.settings,
                        self.metrics,
                        self.bus,
                        self.plane.registry if self.plane is not None else None,
                    )
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
            key_headers=doors.KEY_HEADERS,
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
            key_headers=doors.KEY_HEADERS,
        )
        if self.management_key is not None:
            from vdm.server.manage import build

            self.manage = build(self.plane, lambda: self.gateway.cache if self.gateway else None)

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
            if is_management(path):
                await management(self, scope, receive, send, headers, request_id)
                return
            if dashboard.is_dashboard(path):
                await dashboard_files(self, scope, send, headers, request_id, path)
                return
            handler = handler_for(self, scope, path)
            if path in OPERATOR_PATHS:
                await self.check_operator(scope, headers, request_id, path[1:])
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
            door = doors.CHAT if isinstance(exc, pt.UnsafePath) else door_for(self, path, headers)
            if path.startswith("/v1/"):  # (the API's requests, not those of /health, ...)
                failed(self.metrics, door.name, exc, started)
            log_failure(self, scope, exc, door.name, started)
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

    def snapshot(self) -> dict[str, Any]:
        """What the dashboard shows (:func:`vdm.server.dashboard.snapshot`)."""
        return dashboard.snapshot(self)

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
            key.check(presented_key(headers, doors.KEY_HEADERS))
        except AuthenticationFailed:
            return False
        return True

    async def check_operator(
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
        await self.login(scope, key, headers, request_id, what)

    async def login(
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
            key.check(presented_key(headers, doors.KEY_HEADERS))
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


def create_app() -> App:
    """uvicorn factory: settings come from the environment and config files."""
    from vdm.logs import configure

    settings = load_settings()
    configure(settings.server.log_level, settings.server.log_format)
    return App(settings)
