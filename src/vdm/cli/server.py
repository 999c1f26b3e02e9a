"""``vdm server``: start (foreground or ``--daemon``), stop, restart, reload, status.

``start --daemon`` runs ``vdm server start --pid-file ...`` as a detached
child (its own session, output to a log file), waits until ``/ready`` answers
and says where the logs go.  The serving process writes its pid file and
removes it when it exits; ``stop`` sends SIGTERM, which drains in-flight
requests for up to SHUTDOWN_TIMEOUT (``vdm.server.runner``), and SIGKILLs
only after that.

``status`` exits 0 when the gateway is healthy, 1 when it is not running,
2 when it runs but is not healthy: scripts rely on these.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from vdm import __version__
from vdm.cli import output, process
from vdm.cli.common import (
    NEEDS_TOKEN,
    TokenOpt,
    console,
    errors,
    fail,
    operator_token,
    settings_or_exit,
    settings_or_none,
    warnings,
)
from vdm.cli.output import waiting
from vdm.config import Settings

app = typer.Typer(help="Run and manage the gateway process.", no_args_is_help=True)

_READY_TIMEOUT = 30.0
STARTUP_FAILURE = 3  # as uvicorn exits when the app does not start (README: The CLI)

HostOpt = Annotated[str | None, typer.Option(help="Address to bind (default: HOST or 127.0.0.1).")]
PortOpt = Annotated[
    int | None, typer.Option(min=1, max=65535, help="Port (default: PORT or 8082).")
]
PidOpt = Annotated[
    Path | None,
    typer.Option(
        "--pid-file",
        help="Pid file (default: $XDG_RUNTIME_DIR/vdm/vdm.pid or ~/.local/state/vdm/vdm.pid).",
    ),
]
WorkersOpt = Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        help="Seconds to wait for the drain before SIGKILL (default: SHUTDOWN_TIMEOUT + 5)."
    ),
]


def summary(settings: Settings, host: str, port: int) -> None:
    """The start-up summary: where, which providers, which aliases; no secrets."""
    console.print(f"[bold]vdm {__version__}[/] listening on [cyan]http://{host}:{port}[/]")
    console.print(
        f"default provider: [bold]{settings.default_provider}[/] "
        f"({settings.default_provider_source})",
        markup=True,
    )
    rows = []
    for name, provider in settings.providers.items():
        keys = ", ".join(provider.key_fingerprints) or ("built-in" if name == "echo" else "-")
        rows.append([name, provider.api_format, provider.base_url, keys])
    output.table(["provider", "format", "base URL", "keys"], rows, whole={"base URL"})
    for name, provider in settings.providers.items():
        if provider.api_format == "azure":
            pairs = ", ".join(f"{m} → {d}" for m, d in provider.deployments.items())
            console.print(
                f"azure ({name}): api-version {provider.api_version}; "
                f"deployments: {pairs or 'none (the model name is the deployment)'}",
                markup=False,
            )
    from vdm.routing import Router

    router = Router(
        list(settings.providers),
        settings.default_provider,
        settings.aliases,
        settings.fallback_aliases,
    )
    for owner, table_ in router.active_aliases().items():
        pairs = ", ".join(f"{a} → {m}" for a, m in table_.items())
        console.print(f"aliases ({owner}): {pairs}", markup=False)
    if settings.server.proxy_api_key:
        console.print("clients must present PROXY_API_KEY")
    if settings.grpc.port is not None:
        scheme = "vibectl-server" if settings.grpc.tls_cert else "vibectl-server-insecure"
        console.print(
            f"gRPC LLMProxy on {scheme}://{settings.grpc.host or host}:"
            f"{settings.grpc.port} (JWT auth)",
            markup=False,
        )
    for warning in warnings(settings):
        errors.print(f"[yellow]warning:[/] {escape(warning)}")
    if list(settings.providers) == ["echo"]:
        console.print(
            "no provider key set: serving the offline [bold]echo[/] provider "
            "(set e.g. OPENAI_API_KEY to use a real one)"
        )


def _check_extras(settings: Settings) -> None:
    """Stop (exit 2) when the settings ask for a feature whose extra is missing."""
    from vdm.validate import missing

    problems = missing(settings)
    for problem in problems[:-1]:
        errors.print(f"[bold red]error:[/] {escape(str(problem))}", markup=True, highlight=False)
    if problems:
        fail(str(problems[-1]), 2)


def _grpc_address(settings: Settings, host: str) -> tuple[str, int] | None:
    """Where the gateway's gRPC service will listen, if it has one."""
    grpc = settings.grpc
    return (grpc.host or host, grpc.port) if grpc.port is not None else None


def _claim(pid_file: Path | None, host: str, port: int, grpc: tuple[str, int] | None) -> None:
    """Refuse to start over a live gateway's pid file or on a taken port (the
    gRPC one too, which ``--workers N`` share); replace a stale pid file."""
    if pid_file is not None:
        info, stale = process.live_info(pid_file)
        if info is not None:
            fail(f"vdm is already running (pid {info.pid}, {info.url}; pid file {pid_file})")
        if stale:
            errors.print(f"removing stale pid file {pid_file} (its process is gone)", markup=False)
            process.remove_pid_file(pid_file)
    if not process.port_free(host, port):
        owner = process.port_owner(port)
        held = f" by pid {owner[0]} ({owner[1] or '?'})" if owner else ""
        fail(f"port {port} on {host} is already in use{held}; pick another with --port")
    if grpc is not None and not process.port_free(*grpc):
        owner = process.port_owner(grpc[1])
        held = f" by pid {owner[0]} ({owner[1] or '?'})" if owner else ""
        fail(
            f"gRPC port {grpc[1]} on {grpc[0]} is already in use{held}; "
            "pick another with --grpc-port"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve a network with nobody's credentials checked, unless asked to."""
    if is_loopback(host) or settings.server.allow_unauthenticated:
        return
    if settings.server.proxy_api_key or settings.tenants.enabled:
        return
    fail(
        f"refusing to listen on {host} without client authentication: anyone who can "
        "reach it could spend the provider keys. Set PROXY_API_KEY (one shared key) or "
        "MANAGEMENT_TOKEN (per-project tokens), listen on 127.0.0.1, or, if something in "
        "front of vdm authenticates clients, set ALLOW_UNAUTHENTICATED=true"
    )


@app.command("start")
def start(
    host: HostOpt = None,
    port: PortOpt = None,
    reload: Annotated[
        bool, typer.Option(help="Restart when the source changes (development).")
    ] = False,
    daemon: Annotated[
        bool, typer.Option(help="Run in the background; return once it is ready.")
    ] = False,
    pid_file: PidOpt = None,
    systemd: Annotated[
        bool, typer.Option(help="Log to the systemd journal (identifier vdm).")
    ] = False,
    workers: WorkersOpt = 1,
    log_file: Annotated[
        Path | None,
        typer.Option(help="--daemon: where the logs go (default ~/.local/state/vdm/vdm.log)."),
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Also serve gRPC LLMProxy on this port, sharing the gateway (default: GRPC_PORT).",
        ),
    ] = None,
) -> None:
    """Run the gateway (in the foreground unless --daemon)."""
    # The app factory (and a daemon child) read the environment: the settings
    # then know where the gateway listens (vdm.loops compares base URLs with it).
    for var, value in (("HOST", host), ("PORT", port), ("GRPC_PORT", grpc_port)):
        if value is not None:
            os.environ[var] = str(value)
    settings = settings_or_exit()
    _check_extras(settings)
    host = host or settings.server.host
    port = port or settings.server.port
    _check_exposure(settings, host)
    grpc = _grpc_address(settings, host)
    _preflight(settings)
    if daemon:
        _start_daemon(settings, host, port, grpc, pid_file, log_file, workers, systemd)
        return
    _claim(pid_file, host, port, grpc)
    _serve(settings, host, port, pid_file, reload=reload, workers=workers, systemd=systemd)


def _start_daemon(
    settings: Settings,
    host: str,
    port: int,
    grpc: tuple[str, int] | None,
    pid_file: Path | None,
    log_file: Path | None,
    workers: int,
    systemd: bool,
) -> None:
    """``start --daemon``: claim the pid file and port, warn here (the child's
    output goes to its log), start the detached child and wait for it."""
    pid_file = pid_file or process.default_pid_file()
    _claim(pid_file, host, port, grpc)
    for warning in warnings(settings):
        errors.print(f"[yellow]warning:[/] {escape(warning)}")
    run = process.RunInfo(0, host, port, workers, None, 0.0, settings.grpc.port, systemd)
    _daemonize(run, pid_file, log_file or process.default_log_file(), grpc)


def _serve(
    settings: Settings,
    host: str,
    port: int,
    pid_file: Path | None,
    *,
    reload: bool,
    workers: int,
    systemd: bool,
) -> None:
    """Serve in this process until stopped: logging configured, the pid file
    written (and removed at the end), the summary printed once serving."""
    from vdm.logs import configure
    from vdm.server.runner import serve

    configure(settings.server.log_level, settings.server.log_format, systemd=systemd)
    if settings.ignored_keys:
        logging.getLogger("vdm.config").debug(
            "not providers (no known name, no {NAME}_BASE_URL), ignored: %s",
            ", ".join(settings.ignored_keys),
        )
    pid = os.getpid()
    if pid_file is not None:
        log_name = os.environ.get("VDM_LOG_FILE")
        run = process.RunInfo(
            pid, host, port, workers, log_name, time.time(), settings.grpc.port, systemd
        )
        process.write_pid_file(pid_file, run)

    def announce() -> None:
        summary(settings, host, port)
        sys.stdout.flush()

    # The summary says "listening on": only once the app has started.
    one_process = workers == 1 and not reload
    watch = None if one_process else _summary_once_ready(announce, host, port)
    try:
        serve(
            settings,
            host,
            port,
            reload=reload,
            workers=workers,
            on_started=announce if one_process else None,
        )
    finally:
        if watch is not None:
            watch.set()
        if pid_file is not None:
            process.remove_pid_file(pid_file, pid)


def _preflight(settings: Settings) -> None:
    """What the start depends on (vdm.cli.preflight), told in one line, exit 3."""
    from vdm.cli.preflight import StartProblem, check

    try:
        with waiting("checking what the gateway depends on …"):
            check(settings)
    except StartProblem as exc:
        fail(f"cannot start: {exc}", STARTUP_FAILURE)


def _summary_once_ready(announce: Callable[[], None], host: str, port: int) -> threading.Event:
    """``--workers N`` / ``--reload`` (the app runs in other processes): call
    ``announce`` once ``/ready`` answers.  Set the event to give up."""
    done = threading.Event()
    url = process.RunInfo(0, host, port).url

    def watch() -> None:
        while not done.is_set():
            if process.ready(url):
                announce()
                return
            done.wait(0.05)

    threading.Thread(target=watch, name="vdm-summary", daemon=True).start()
    return done


def _daemonize(
    run: process.RunInfo, pid_file: Path, log_file: Path, grpc: tuple[str, int] | None
) -> None:
    """Start ``vdm server start`` with ``run``'s options in the background."""
    host, port = run.host, run.port
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "vdm",
        "server",
        "start",
        "--host",
        host,
        "--port",
        str(port),
        "--pid-file",
        str(pid_file),
        "--workers",
        str(run.workers),
    ]
    if run.systemd:
        command.append("--systemd")
    if run.grpc_port is not None:
        command += ["--grpc-port", str(run.grpc_port)]
    env = {**os.environ, "VDM_LOG_FILE": str(log_file)}
    with log_file.open("ab") as log:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    url = process.RunInfo(child.pid, host, port).url
    with waiting(f"starting vdm on {url} …"):
        ok = process.wait_ready(url, child.pid, _READY_TIMEOUT)
    if not ok:
        if child.poll() is None:
            process.terminate(child.pid, 5)
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        for line in tail:
            errors.print(f"  {line}", markup=False)
        fail(f"the gateway did not become ready (exit code {child.poll()}); log: {log_file}")
    console.print(f"vdm started in the background: pid {child.pid}, {url}", markup=False)
    if grpc is not None:
        console.print(f"gRPC LLMProxy on {grpc[0]}:{grpc[1]}", markup=False)
    console.print(
        f"logs: {log_file}" + ("  (and the journal: journalctl -t vdm)" if run.systemd else ""),
        markup=False,
    )
    console.print(f"pid file: {pid_file}", markup=False)


def _stop_timeout(timeout: float | None) -> float:
    if timeout is not None:
        return timeout
    settings = settings_or_none()
    return (settings.server.shutdown_timeout if settings else 30.0) + 5.0


def _stop(pid_file: Path, timeout: float | None) -> process.RunInfo | None:
    """Stop the gateway the pid file names; its run info, or None if none ran."""
    info, stale = process.live_info(pid_file)
    if info is None:
        if stale:
            process.remove_pid_file(pid_file)
            console.print(
                f"vdm is not running (removed the stale pid file {pid_file})", markup=False
            )
        else:
            console.print("vdm is not running", markup=False)
        return None
    seconds = _stop_timeout(timeout)
    with waiting(
        f"stopping vdm (pid {info.pid}): in-flight requests drain for up to {seconds:g} s …"
    ):
        drained = process.terminate(info.pid, seconds)
    process.remove_pid_file(pid_file)
    if drained:
        console.print(f"vdm stopped (pid {info.pid})", markup=False)
    else:
        errors.print(
            f"vdm (pid {info.pid}) did not stop within {seconds:g} s: killed", markup=False
        )
    return info


@app.command("stop")
def stop(pid_file: PidOpt = None, timeout: TimeoutOpt = None) -> None:
    """Stop the background gateway: SIGTERM, graceful drain, SIGKILL after the timeout."""
    _stop(pid_file or process.default_pid_file(), timeout)


@app.command("restart")
def restart(
    host: HostOpt = None,
    port: PortOpt = None,
    pid_file: PidOpt = None,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="Worker processes.")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="gRPC port (default: the replaced start's)."),
    ] = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Stop the background gateway (if running) and start it again with --daemon,
    with the options of the start it replaces unless given here."""
    path = pid_file or process.default_pid_file()
    previous = _stop(path, timeout)
    grpc_port = grpc_port or (previous.grpc_port if previous else None)
    for var, value in (("HOST", host), ("PORT", port), ("GRPC_PORT", grpc_port)):
        if value is not None:
            os.environ[var] = str(value)
    settings = settings_or_exit()
    host = host or (previous.host if previous else settings.server.host)
    port = port or (previous.port if previous and previous.port else settings.server.port)
    run = process.RunInfo(
        0,
        host,
        port,
        workers or (previous.workers if previous else 1),
        None,
        0.0,
        settings.grpc.port,
        previous.systemd if previous else False,
    )
    log = Path(previous.log_file) if previous and previous.log_file else process.default_log_file()
    grpc = _grpc_address(settings, host)
    _preflight(settings)
    _claim(path, host, port, grpc)
    _daemonize(run, path, log, grpc)


@app.command("drain")
def drain_cmd(
    port: PortOpt = None,
    wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait afterwards (a preStop hook's grace)."),
    ] = 0.0,
) -> None:
    """Turn /ready to 503 (draining) while requests still flow, before SIGTERM's drain."""
    from vdm.server import drain

    settings = settings_or_exit()
    path = drain.begin(port or settings.server.port)
    console.print(f"/ready now answers 503 (draining); marker {path}", markup=False)
    if wait:
        time.sleep(wait)


@app.command("reload")
def reload_config(
    pid_file: PidOpt = None,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for the gateway to report the outcome.")
    ] = 10.0,
) -> None:
    """Reload the configuration without dropping a connection (SIGHUP; every worker's)."""
    path = pid_file or process.default_pid_file()
    info, stale = process.live_info(path)
    if info is None:
        fail(f"vdm is not running{f' (stale pid file {path})' if stale else ''}", 1)
    settings = settings_or_none()
    key = operator_token(None, settings)
    before = _last_reload(info.url, key)
    os.kill(info.pid, signal.SIGHUP)
    deadline = time.monotonic() + wait
    outcome = before
    with console.status(f"reloading the configuration of vdm (pid {info.pid}) …"):
        while outcome == before and time.monotonic() < deadline:
            time.sleep(0.1)
            outcome = _last_reload(info.url, key)
    if outcome == before or not isinstance(outcome, dict):
        where = f": see {info.log_file}" if info.log_file else ""
        console.print(
            f"sent SIGHUP to vdm (pid {info.pid}); its log says how the reload went{where}",
            markup=False,
        )
        return
    if not outcome.get("ok"):
        fail(f"reload failed, vdm keeps its running configuration: {outcome.get('error')}", 1)
    console.print(f"vdm (pid {info.pid}) reloaded its configuration", markup=False)


def _last_reload(url: str, key: str | None) -> object:
    """``/health``'s ``last_reload`` (None before the first), or a marker when
    the gateway does not answer."""
    try:
        code, health = process.get_json(url + "/health", key=key)
    except (OSError, ValueError):
        return "no answer"
    return health.get("last_reload") if code == 200 and isinstance(health, dict) else "no answer"


@app.command("status")
def status(
    pid_file: PidOpt = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Running or not, pid, uptime, URL, version, health (exit 0 healthy, 1 not running, 2 unhealthy)."""
    path = pid_file or process.default_pid_file()
    info, stale = process.live_info(path)
    if info is None:
        note = f" (stale pid file {path}: its process is gone)" if stale else ""
        if as_json:
            output.emit_json({"running": False, "healthy": False, "stale_pid_file": stale})
        else:
            console.print(f"vdm is not running{note}", markup=False)
        raise typer.Exit(1)
    key = operator_token(token, settings_or_none())
    try:
        code, health = process.get_json(info.url + "/health", key=key)
    except (OSError, ValueError) as exc:
        if as_json:
            output.emit_json(
                {
                    "running": True,
                    "healthy": False,
                    "pid": info.pid,
                    "url": info.url,
                    "error": str(exc),
                }
            )
        else:
            console.print(
                f"vdm (pid {info.pid}) runs but does not answer at {info.url}: {exc}",
                markup=False,
            )
        raise typer.Exit(2) from None
    healthy = code == 200 and isinstance(health, dict) and health.get("status") == "healthy"
    record: dict[str, Any] = {
        "running": True,
        "healthy": healthy,
        "http_status": code,
        "pid": info.pid,
        "url": info.url,
    }
    if isinstance(health, dict) and healthy:
        record["version"] = health.get("version")
        record["uptime_seconds"] = health.get("uptime_seconds")
        record["default_provider"] = health.get("default_provider")
        record["providers"] = {
            n: p.get("api_format") for n, p in (health.get("providers") or {}).items()
        }
    elif info.started:
        record["uptime_seconds"] = round(time.time() - info.started, 1)
    record["workers"] = info.workers
    record["log_file"] = info.log_file
    if as_json:
        output.emit_json(record)
        raise typer.Exit(0 if healthy else 2)
    state = (
        Text("running, healthy", "green") if healthy else Text(f"unhealthy (HTTP {code})", "red")
    )
    if code == 401:
        state = Text(f"running, health unknown: {NEEDS_TOKEN}", "yellow")
    rows: list[list[str | Text]] = [["status", state], ["pid", str(info.pid)], ["url", info.url]]
    if "version" in record:
        rows.append(["version", str(record["version"])])
    if record.get("uptime_seconds") is not None:
        rows.append(["uptime", _duration(float(record["uptime_seconds"]))])
    if "providers" in record:
        rows.append(["default provider", str(record["default_provider"])])
        rows.append(["providers", ", ".join(f"{n} ({f})" for n, f in record["providers"].items())])
    if info.workers > 1:
        rows.append(["workers", str(info.workers)])
    if info.log_file:
        rows.append(["logs", info.log_file])
    output.table(None, rows)
    raise typer.Exit(0 if healthy else 2)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
