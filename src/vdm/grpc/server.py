"""The gRPC server around :class:`~vdm.grpc.servicer.LLMProxyServicer`.

:func:`start_service` runs inside an existing event loop next to an existing
:class:`~vdm.pipeline.Gateway` (so ``vdm server start --grpc-port`` shares the
one gateway with the HTTP server); :func:`serve` is ``vdm grpc serve``: its
own loop, gateway and signal handling.

Shutdown: SIGTERM/SIGINT stop new calls, let calls in flight finish for up
to ``SHUTDOWN_TIMEOUT`` seconds, then cancel the rest; a second signal
cancels them at once.  Auth is on unless the caller passes ``auth=False``
(only ``vdm grpc serve --no-auth`` does, with a warning); ``tenants`` (the
control plane's token registry, from ``vdm server start``) adds the virtual
tokens to the JWTs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from vdm import doors
from vdm.auth.jwt import Verifier, load_secret
from vdm.auth.token_store import RevocationList
from vdm.config import Settings
from vdm.errors import GatewayError
from vdm.grpc import llm_proxy_pb2_grpc as pb_grpc
from vdm.grpc.auth import JWTInterceptor
from vdm.grpc.limits import Limiter, SharedMinute
from vdm.grpc.servicer import LLMProxyServicer
from vdm.pipeline import Gateway
from vdm.pipeline.accounting import failed

if TYPE_CHECKING:
    from vdm.metrics import Metrics
    from vdm.tenants.registry import TokenRegistry

log = logging.getLogger("vdm.grpc")

DEFAULT_PORT = 50051


@dataclass
class Service:
    server: grpc.aio.Server
    url: str  # as a vibectl client names it: vibectl-server[-insecure]://host:port
    watcher: asyncio.Task[None] | None
    limiter: Limiter
    servicer: LLMProxyServicer

    def use(self, gateway: Gateway) -> None:
        """Serve new calls with ``gateway`` (a configuration reload)."""
        self.servicer.use(gateway)

    async def stop(self, grace: float) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher
        await self.server.stop(grace)
        await self.limiter.close()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _count_refusal(metrics: Metrics, exc: GatewayError) -> None:
    """A call the interceptor refused, counted as the HTTP doors count theirs."""
    failed(metrics, doors.GRPC.name, exc, time.perf_counter())


async def start_service(
    gateway: Gateway,
    settings: Settings,
    *,
    host: str,
    port: int,
    auth: bool = True,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tenants: TokenRegistry | None = None,
    share_port: bool = False,
) -> Service:
    """Bind, start and return the service (raises RuntimeError when the port is
    taken).  ``share_port``: one of several workers, which bind the same port
    (``SO_REUSEPORT``: the kernel spreads the connections among them)."""
    grpc_settings = settings.grpc
    interceptors: list[grpc.aio.ServerInterceptor] = []
    watcher = None
    if auth:
        secret = await asyncio.to_thread(load_secret, grpc_settings)
        revocations = RevocationList.default()
        await asyncio.to_thread(revocations.load)
        interceptors.append(
            JWTInterceptor(
                Verifier(secret, revocations),
                tenants,
                settings.server.max_credential_length,
                refused=functools.partial(_count_refusal, gateway.metrics),
            )
        )
        watcher = asyncio.create_task(revocations.watch(), name="vdm-revocations")
    # so_reuseport off unless asked: a second server on a taken port must fail, not share it.
    server = grpc.aio.server(
        interceptors=interceptors, options=[("grpc.so_reuseport", 1 if share_port else 0)]
    )
    redis_url = settings.server.redis_url
    shared = SharedMinute(redis_url, settings.server.redis_namespace) if redis_url else None
    limiter = Limiter(grpc_settings, shared=shared)
    servicer = LLMProxyServicer(gateway, grpc_settings, limiter)
    pb_grpc.add_VibectlLLMProxyServicer_to_server(servicer, server)
    address = _address(host, port)
    try:
        if tls_cert and tls_key:
            key, cert = await asyncio.to_thread(
                lambda: (
                    Path(tls_key).expanduser().read_bytes(),
                    Path(tls_cert).expanduser().read_bytes(),
                )
            )
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
            scheme = "vibectl-server"
        else:
            bound = server.add_insecure_port(address)
            scheme = "vibectl-server-insecure"
        if not bound:
            raise RuntimeError(f"cannot listen on {address}")
        await server.start()
    except BaseException:
        if watcher is not None:
            watcher.cancel()
        raise
    return Service(server, f"{scheme}://{_address(host, bound)}", watcher, limiter, servicer)


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    auth: bool,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """``vdm grpc serve``: run until SIGTERM/SIGINT, then shut down gracefully."""
    if sys.platform != "win32":
        import uvloop

        uvloop.run(_serve(settings, host, port, auth, tls_cert, tls_key))
    else:  # pragma: no cover
        asyncio.run(_serve(settings, host, port, auth, tls_cert, tls_key))


async def _serve(
    settings: Settings, host: str, port: int, auth: bool, tls_cert: str | None, tls_key: str | None
) -> None:
    gateway = Gateway.from_settings(settings)
    await gateway.start()
    try:
        service = await start_service(
            gateway, settings, host=host, port=port, auth=auth, tls_cert=tls_cert, tls_key=tls_key
        )
    except BaseException:
        await gateway.close()
        raise
    print(
        f"gRPC LLMProxy listening on {service.url} (auth: {'JWT' if auth else 'OFF'})", flush=True
    )
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info(
                "shutting down: calls in flight have %g s to finish",
                settings.server.shutdown_timeout,
            )
            stop.set()
        else:  # the second signal ends what is left at once
            asyncio.get_running_loop().create_task(service.server.stop(0))

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await stop.wait()
        await service.stop(settings.server.shutdown_timeout)
    finally:
        await gateway.close()
    log.info("gRPC server stopped")
