"""Run the ASGI app under uvicorn, with vdm's shutdown rules.

SIGTERM (or SIGINT): stop accepting, let in-flight requests and streams
finish for up to ``SHUTDOWN_TIMEOUT`` seconds, then end what is left with a
protocol-correct error (``ShuttingDown``: a 503, or an error event on a
stream), close the upstream sessions and exit 0.  A second signal ends the
rest at once, the same way.

SIGHUP reloads the configuration without dropping a connection (the app
does it: :mod:`vdm.server.reload`); until the app has started it is ignored,
never the end of the process.  With ``--workers N`` the supervisor passes
it on to every worker, and each reloads on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from vdm.config import Settings
from vdm.server import drain
from vdm.server.notify import notify
from vdm.server.protocol import PROBE_RESERVE, GatewayHttpProtocol
from vdm.server.workers import shared_directory

_APP = "vdm.server.app:create_app"
# File descriptors a process needs besides its client connections and the
# upstream connection each may hold: idle pooled upstream connections, the
# database, log and metrics files.
_OTHER_FILES = 1024
log = logging.getLogger("vdm.server")


def raise_file_limit(max_connections: int) -> None:
    """Let the process open ``MAX_CONNECTIONS`` connections, an upstream
    connection for each, and its other files:
    raise the soft ``RLIMIT_NOFILE`` up to the hard one (as the unit's
    ``LimitNOFILE`` sets it); warn when even that is too low, since accepting
    would then fail before the connection cap is reached."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    wanted = 2 * max_connections + PROBE_RESERVE + _OTHER_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open files are limited to %d: fewer than MAX_CONNECTIONS (%d) and the "
            "gateway's other files; raise the limit (ulimit -n, LimitNOFILE) or lower "
            "MAX_CONNECTIONS",
            soft,
            max_connections,
        )


def settle_heap() -> None:
    """Once the app has started, move every object made so far (modules, settings, the
    gateway) out of the garbage collector's sight.

    They live as long as the process; without this each collection of the
    oldest generation walks all of them again, and the time goes to whichever
    request happened to allocate then.  Requests' own garbage is collected as
    before, but less often: a request makes a few hundred containers, so the
    default first-generation threshold (700) ran a collection every few
    requests; 20 000 keeps that garbage to a few MB."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


class GatewayServer(uvicorn.Server):
    """``worker``: one of ``--workers N``, which takes its signals from the
    supervisor: a SIGINT is Ctrl-C in a terminal, which the supervisor got
    too and turns into a SIGTERM for each worker (counting it as well would
    make that SIGTERM a second signal, and Ctrl-C would not drain)."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        worker: bool = False,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker = worker
        self._on_started = on_started

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)  # (the app's lifespan start-up ran in it)
        if self.should_exit:  # the app did not start
            return
        settle_heap()
        if self._on_started is not None:
            # Before the loop turns again, so before the first request is answered.
            self._on_started()
        notify(f"READY=1\nSTATUS=serving (pid {os.getpid()})")  # /ready answers: tell systemd

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded as a captured signal: uvicorn would re-raise it after
        # the shutdown and the process would die by it instead of exiting 0.
        if self._worker and sig == signal.SIGINT:
            return
        if not self.should_exit:
            notify("STOPPING=1")
        if self.should_exit and self._loop is not None:
            self._loop.call_soon_threadsafe(self._end_requests)
        self.should_exit = True

    def _end_requests(self) -> None:
        for task in list(self.server_state.tasks):
            task.cancel(msg="vdm: second shutdown signal")


class WorkerProcess(multiprocess.Process):
    """One worker of ``--workers N``: it runs :class:`GatewayServer`, as a single
    process does (uvicorn's supervisor would run its plain ``Server``, without
    the settled heap or the second signal's protocol-correct ending)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = GatewayServer(self.config, worker=True)
        return self._server

    def target(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]  # pragma: no cover - in the worker
        ignore_hangup()  # until the app listens for it
        super().target(sockets)


_STOPS = (signal.SIGINT, signal.SIGTERM)


class Supervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor, with a second signal passed on: once the workers
    were told to stop (SIGTERM each, they drain), a signal while waiting for
    them (a second Ctrl-C, another SIGTERM) is sent on to each, their second,
    which ends what is left at once (uvicorn's would wait on regardless)."""

    def join_all(self) -> None:
        for worker in self.processes:
            while worker.process.is_alive():
                worker.process.join(0.1)
                stops = [s for s in self.signal_queue if s in _STOPS]
                self.signal_queue.clear()
                if stops:
                    for other in self.processes:
                        if other.process.is_alive() and other.pid is not None:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(other.pid, signal.SIGTERM)

    def handle_hup(self) -> None:
        """A configuration reload for every worker (uvicorn's would restart them)."""
        for worker in self.processes:
            if worker.process.is_alive() and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGHUP)


def ignore_hangup() -> None:
    """SIGHUP changes nothing until the app's own handler replaces this (its
    default action would end the process)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _supervise(config: uvicorn.Config) -> None:
    """:class:`Supervisor` (uvicorn's: restarts, SIGHUP, SIGTTIN/SIGTTOU) over
    :class:`WorkerProcess` workers.  It creates its workers by the module's
    name ``Process`` in several places; this process is only the supervisor,
    so that name is pointed at ours here (the workers, started with the spawn
    method, find the class by its import path)."""
    multiprocess.Process = WorkerProcess  # type: ignore[misc]
    supervisor = Supervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    # A worker that could not start stopped them all: exit as one process would
    # (uvicorn's supervisor exits 0 then).
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        sys.exit(STARTUP_FAILURE)


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    reload: bool = False,
    workers: int = 1,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve until a signal says stop.  With ``workers`` > 1, uvicorn's supervisor
    runs that many processes on one socket; each drains for SHUTDOWN_TIMEOUT on
    SIGTERM like the single process does.  ``on_started``: called once the app
    has started and the port listens (one process only, without ``reload``)."""
    ignore_hangup()
    options = {
        "factory": True,
        "host": host,
        "port": port,
        "loop": "uvloop" if sys.platform != "win32" else "auto",
        "http": GatewayHttpProtocol,  # httptools, a whole answer in one write
        "access_log": False,
        "log_config": None,
        "log_level": settings.server.log_level.lower(),
        "server_header": False,
        "date_header": False,
        "timeout_graceful_shutdown": settings.server.shutdown_timeout,
        # X-Forwarded-For / -Proto only from the configured proxies (uvicorn's own
        # default believes any local peer, FORWARDED_ALLOW_IPS or 127.0.0.1).
        "proxy_headers": bool(settings.server.trusted_proxies),
        "forwarded_allow_ips": list(settings.server.trusted_proxies) or None,
        "timeout_keep_alive": settings.server.keep_alive_timeout,
    }
    drain.clear(port)  # a marker left by the last run (same container) is not this one's
    os.environ[drain.ENV] = str(drain.marker(port))
    raise_file_limit(settings.server.max_connections)
    if reload:  # development: uvicorn's own supervisor restarts the process
        uvicorn.run(_APP, reload=True, **options)  # type: ignore[arg-type]
        return
    if workers > 1:
        with shared_directory():  # /metrics of all the workers
            _supervise(uvicorn.Config(_APP, workers=workers, **options))  # type: ignore[arg-type]
        return
    GatewayServer(uvicorn.Config(_APP, **options), on_started=on_started).run()  # type: ignore[arg-type]
