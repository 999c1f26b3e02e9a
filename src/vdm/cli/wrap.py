"""``vdm wrap CMD [ARGS…]`` and ``claude.vdm``: run a client against the gateway.

Make sure a gateway answers at HOST:PORT (start one in the background when
none does, and stop it when the command ends — only if this command started
it), point the child at it with ``ANTHROPIC_BASE_URL`` and ``OPENAI_BASE_URL``
and give it a credential the gateway takes: when the gateway asks for one
(``PROXY_API_KEY``, or the control plane on), ``ANTHROPIC_API_KEY`` and
``OPENAI_API_KEY`` are ``--token`` / ``VDM_API_KEY`` / ``PROXY_API_KEY`` /
``MANAGEMENT_TOKEN`` (the first set), and with none set, or one the gateway
refuses, the user is told before the child starts (a client that retries its
401s would otherwise seem to hang); when it asks for none, they are set only
where unset (a placeholder).  SIGINT, SIGTERM and SIGHUP go to the child; the
exit code is the child's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType
from typing import Annotated

import typer

from vdm.cli import process
from vdm.cli.common import (
    NEEDS_TOKEN,
    TokenOpt,
    errors,
    fail,
    operator_token,
    settings_or_exit,
)
from vdm.cli.output import waiting

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PLACEHOLDER_KEY = "vdm"


def register(app: typer.Typer) -> None:
    app.command(
        "wrap",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(wrap)


def wrap(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    host: Annotated[str | None, typer.Option(help="Gateway address (default: HOST).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Gateway port (default: PORT).")
    ] = None,
    token: TokenOpt = None,
) -> None:
    """Run CMD with ANTHROPIC_BASE_URL / OPENAI_BASE_URL pointing at the gateway."""
    raise typer.Exit(run_wrapped(command, host, port, token))


def run_wrapped(
    command: list[str], host: str | None, port: int | None, token: str | None = None
) -> int:
    if not command:
        fail("nothing to run: vdm wrap CMD [ARGS…]", 2)
    settings = settings_or_exit()
    host = host or settings.server.host
    port = port or settings.server.port
    url = process.RunInfo(0, host, port).url
    gateway: subprocess.Popen[bytes] | None = None
    if not process.ready(url):
        gateway = _start_gateway(host, port, url)
    env = dict(os.environ)
    env["ANTHROPIC_BASE_URL"] = url
    env["OPENAI_BASE_URL"] = url + "/v1"
    key = operator_token(token or os.environ.get("VDM_API_KEY"), settings)
    refusal = _refusal(url, key)
    if refusal is not None:
        _stop_gateway(gateway)
        fail(refusal, 2)
    if key is not None and _asks_for_token(url):
        env["ANTHROPIC_API_KEY"] = env["OPENAI_API_KEY"] = key
        env.pop("ANTHROPIC_AUTH_TOKEN", None)  # Claude Code would send it instead
    else:
        env.setdefault("ANTHROPIC_API_KEY", _PLACEHOLDER_KEY)
        env.setdefault("OPENAI_API_KEY", _PLACEHOLDER_KEY)
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        _stop_gateway(gateway)
        fail(f"cannot run {command[0]}: {exc.strerror or exc}", 127)

    def forward(sig: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(sig)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_gateway(gateway)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as shells say


def _asks_for_token(url: str) -> bool:
    try:
        return process.get_json(url + "/health")[0] == 401
    except (OSError, ValueError):
        return False


def _refusal(url: str, key: str | None) -> str | None:
    """Why a client with ``key`` would get only 401s from the gateway, if it would."""
    try:
        code = process.get_json(url + "/health", key=key)[0]
    except (OSError, ValueError):
        return None  # the child will see for itself
    if code != 401:
        return None
    if key is None:
        return f"the gateway at {url} requires a token and none is set: {NEEDS_TOKEN}"
    return (
        f"the gateway at {url} refused the token it was given (--token, VDM_API_KEY, "
        "PROXY_API_KEY or MANAGEMENT_TOKEN): check it, or create one with "
        "`vdm manage token create`"
    )


def _start_gateway(host: str, port: int, url: str) -> subprocess.Popen[bytes]:
    log_file = process.default_log_file()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if not process.port_free(host, port):
        owner = process.port_owner(port)
        held = f" by pid {owner[0]} ({owner[1] or '?'})" if owner else ""
        fail(f"port {port} on {host} is in use{held} but no gateway answers there")
    with log_file.open("ab") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "vdm", "server", "start", "--host", host, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C goes to the child, not to it
        )
    with waiting(f"starting a gateway on {url} (logs: {log_file}) …"):
        ok = process.wait_ready(url, gateway.pid, 30.0)
    if not ok:
        _stop_gateway(gateway)
        fail(f"the gateway did not start; see {log_file}")
    errors.print(
        f"vdm: started a gateway on {url} for this command (logs: {log_file})", markup=False
    )
    return gateway


def _stop_gateway(gateway: subprocess.Popen[bytes] | None) -> None:
    if gateway is None or gateway.poll() is not None:
        return
    gateway.terminate()  # SIGTERM: the graceful drain
    try:
        with waiting(f"stopping the gateway this command started (pid {gateway.pid}) …"):
            gateway.wait(35)
    except subprocess.TimeoutExpired:
        gateway.kill()
        gateway.wait(5)


def claude_main() -> None:  # pragma: no cover - console script entry (claude.vdm)
    """``claude.vdm [ARGS…]`` = ``vdm wrap claude [ARGS…]``."""
    try:
        code = run_wrapped(["claude", *sys.argv[1:]], None, None)
    except typer.Exit as exc:
        code = exc.exit_code
    sys.exit(code)


__all__ = ["claude_main", "register", "run_wrapped"]
