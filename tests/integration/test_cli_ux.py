"""The CLI as a user meets it, through the real ``vdm`` against a real gateway:
token secrets and ids whole (piped and on a narrow terminal), id prefixes,
``--json`` for every table, start-up failures and usage errors in one line,
spinners on a terminal only.  Piped runs are subprocesses (stdout is not a
terminal); terminal runs go through a pseudo-terminal (pexpect)."""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.support.cli import vdm
from tests.support.gateway import Gateway, clean_env, free_port, run_gateway

MANAGEMENT = "mgmt-token-0123456789abcdef"
ID = re.compile(r"\b[0-9a-f]{32}\b")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    """A gateway with the control plane on (SQLite) and the directory the CLI runs in."""
    tmp = tmp_path_factory.mktemp("plane")
    with run_gateway({"MANAGEMENT_TOKEN": MANAGEMENT}, tmp) as gateway:
        yield gateway, tmp


def manage(plane: tuple[Gateway, Path], *args: str) -> tuple[int, str, str]:
    gateway, tmp = plane
    result = vdm(tmp, "manage", *args, "--url", gateway.url, MANAGEMENT_TOKEN=MANAGEMENT)
    return result.returncode, result.stdout, result.stderr


def api(gateway: Gateway, method: str, path: str, body: dict[str, object] | None = None) -> object:
    request = urllib.request.Request(
        gateway.url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"authorization": f"Bearer {MANAGEMENT}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def project(gateway: Gateway, name: str) -> str:
    created = api(gateway, "POST", "/manage/projects", {"name": name, "api_keys": {}})
    assert isinstance(created, dict)
    return str(created["id"])


def models_with(gateway: Gateway, secret: str) -> int:
    request = urllib.request.Request(gateway.url + "/v1/models", headers={"x-api-key": secret})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# ---------------------------------------------------------------- tokens (trap 3)


def test_token_create_prints_the_whole_secret_on_a_line_of_its_own(
    plane: tuple[Gateway, Path],
) -> None:
    gateway, _ = plane
    owner = project(gateway, "secrets")
    code, out, err = manage(plane, "token", "create", "--project", owner, "--rpm", "60")
    assert code == 0, err
    secret = out.splitlines()[0]
    assert secret.startswith("sk-vdm-") and "…" not in secret and " " not in secret
    assert models_with(gateway, secret) == 200  # the printed secret is the secret
    assert "shown only this once" in err
    token_id = ID.search(out)
    assert token_id is not None and token_id.group(0) in out  # the id, whole

    code, out, err = manage(plane, "token", "create", "--project", owner, "--quiet")
    assert code == 0, err
    assert re.fullmatch(r"sk-vdm-\S+\n", out), out
    assert models_with(gateway, out.strip()) == 200
    assert err == ""


def test_token_list_and_show_print_whole_ids_when_piped(plane: tuple[Gateway, Path]) -> None:
    gateway, _ = plane
    owner = project(gateway, "listing")
    created = api(gateway, "POST", "/manage/tokens", {"project_id": owner})
    assert isinstance(created, dict)
    code, out, err = manage(plane, "token", "list", "--project", owner)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split("\t")[:3] == ["id", "token", "project_id"]
    row = lines[1].split("\t")
    assert row[0] == created["id"] and row[2] == owner  # whole, not "0a1b…"
    code, out, _ = manage(plane, "token", "list", "--project", owner, "--json")
    assert code == 0 and json.loads(out)[0]["id"] == created["id"]
    code, out, _ = manage(plane, "project", "show", owner)
    assert code == 0 and out.splitlines()[1].split("\t")[0] == owner


def test_show_update_revoke_and_delete_take_a_unique_id_prefix(
    plane: tuple[Gateway, Path],
) -> None:
    gateway, _ = plane
    owner = project(gateway, "prefixes")
    created = api(gateway, "POST", "/manage/tokens", {"project_id": owner})
    assert isinstance(created, dict)
    token_id = str(created["id"])
    tokens = api(gateway, "GET", "/manage/tokens")
    assert isinstance(tokens, list)
    prefix = next(
        token_id[:n]
        for n in range(4, 33)
        if sum(str(t["id"]).startswith(token_id[:n]) for t in tokens) == 1
    )
    code, out, err = manage(plane, "token", "show", prefix, "--json")
    assert code == 0, err
    assert json.loads(out)["id"] == token_id
    code, out, err = manage(plane, "token", "update", prefix, "--rpm", "7", "--json")
    assert code == 0 and json.loads(out)["rpm"] == 7, err
    code, out, err = manage(plane, "token", "revoke", prefix)
    assert code == 0 and f"revoked token {token_id}" in out, err
    assert api(gateway, "GET", f"/manage/tokens/{token_id}")["is_active"] is False  # type: ignore[index]

    doomed = project(gateway, "doomed")
    projects = api(gateway, "GET", "/manage/projects")
    assert isinstance(projects, list)
    short = next(
        doomed[:n]
        for n in range(4, 33)
        if sum(str(p["id"]).startswith(doomed[:n]) for p in projects) == 1
    )
    code, out, err = manage(plane, "project", "delete", short)
    assert code == 0 and f"deleted project {doomed}" in out, err

    code, _, err = manage(plane, "token", "show", "zzzz")
    assert code == 1 and err.count("\n") == 1
    assert "no token id starts with 'zzzz'" in err


def test_an_ambiguous_prefix_is_one_line_listing_the_matches(
    plane: tuple[Gateway, Path],
) -> None:
    gateway, _ = plane
    owner = project(gateway, "ambiguous")
    by_first: dict[str, list[str]] = {}
    while not any(len(ids) > 1 for ids in by_first.values()):  # 17 at most: 16 hex digits
        created = api(gateway, "POST", "/manage/tokens", {"project_id": owner})
        assert isinstance(created, dict)
        by_first.setdefault(str(created["id"])[0], []).append(str(created["id"]))
    tokens = api(gateway, "GET", "/manage/tokens")
    assert isinstance(tokens, list)
    first = next(c for c, ids in by_first.items() if len(ids) > 1)
    matching = sorted(str(t["id"]) for t in tokens if str(t["id"]).startswith(first))
    code, out, err = manage(plane, "token", "show", first)
    assert code == 1 and out == ""
    assert err.count("\n") == 1, err
    assert f"token id prefix '{first}' is ambiguous" in err
    assert all(token_id in err for token_id in matching)


def test_token_list_on_a_narrow_terminal_keeps_ids_whole(plane: tuple[Gateway, Path]) -> None:
    gateway, tmp = plane
    owner = project(gateway, "narrow")
    created = api(gateway, "POST", "/manage/tokens", {"project_id": owner})
    assert isinstance(created, dict)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "vdm", "manage", "token", "list", "--project", owner, "--url", gateway.url],
        cwd=str(tmp),
        env={**clean_env(), "HOME": str(tmp / "home"), "MANAGEMENT_TOKEN": MANAGEMENT},
        encoding="utf-8",
        dimensions=(24, 60),
        timeout=30,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before or "")
    assert created["id"] in text and owner in text  # neither cut nor folded


# ---------------------------------------------------------------- --json (trap 8)


def test_every_table_has_json(plane: tuple[Gateway, Path]) -> None:
    gateway, tmp = plane
    env = {"MANAGEMENT_TOKEN": MANAGEMENT}
    health = vdm(tmp, "health", "server", "--url", gateway.url, "--json", **env)
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "healthy"
    models = vdm(tmp, "test", "models", "--url", gateway.url, "--json", **env)
    assert models.returncode == 0, models.stderr
    assert isinstance(json.loads(models.stdout)["echo"], list)
    upstream = vdm(tmp, "health", "upstream", "--json")
    assert upstream.returncode == 0, upstream.stderr
    assert json.loads(upstream.stdout)[0]["provider"] == "echo"
    issued = vdm(tmp, "token", "generate", "someone")
    assert issued.returncode == 0, issued.stderr
    listed = vdm(tmp, "token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entry = json.loads(listed.stdout)[0]
    assert entry["subject"] == "someone" and entry["state"] == "active"
    assert isinstance(entry["expires_at"], int)
    table = vdm(tmp, "token", "list")
    assert entry["jti"] in table.stdout.splitlines()[1].split("\t")
    projects = vdm(tmp, "manage", "project", "list", "--url", gateway.url, "--json", **env)
    assert projects.returncode == 0 and isinstance(json.loads(projects.stdout), list)


def test_server_status_json(tmp_path: Path) -> None:
    pid_file = tmp_path / "vdm.pid"
    with run_gateway({}, tmp_path, args=("--pid-file", str(pid_file))) as gateway:
        result = vdm(tmp_path, "server", "status", "--pid-file", str(pid_file), "--json")
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["healthy"] is True and status["url"] == gateway.url
        assert status["pid"] == gateway.process.pid
        assert status["providers"] == {"echo": "echo"}
        plain = vdm(tmp_path, "server", "status", "--pid-file", str(pid_file))
        assert f"url\t{gateway.url}" in plain.stdout.splitlines()
    stopped = vdm(tmp_path, "server", "status", "--pid-file", str(pid_file), "--json")
    assert stopped.returncode == 1 and json.loads(stopped.stdout)["running"] is False


# ---------------------------------------------------------------- failures (trap 9)


def test_a_dead_database_is_one_line_naming_it_before_anything_listens(tmp_path: Path) -> None:
    port = free_port()
    url = "postgresql://vdm:hunter2-secret@127.0.0.1:1/gateway"
    env = {"DATABASE_URL": url, "MANAGEMENT_TOKEN": MANAGEMENT}
    result = vdm(tmp_path, "server", "start", "--port", str(port), **env)
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""  # no "listening on"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: cannot start: the database ")
    assert "postgresql://vdm:***@127.0.0.1:1/gateway" in line and "hunter2" not in line
    assert "DATABASE_URL" in line and "refused the connection" in line
    daemon = vdm(tmp_path, "server", "start", "--daemon", "--port", str(port), **env)
    assert daemon.returncode == 3 and daemon.stderr == result.stderr
    debug = vdm(tmp_path, "--debug", "server", "start", "--port", str(port), **env)
    assert debug.returncode == 3
    assert "Traceback" in debug.stderr and "hunter2" not in debug.stderr
    status = vdm(tmp_path, "db", "status", **env)
    assert status.returncode == 1 and status.stderr.count("\n") == 1
    assert "postgresql://vdm:***@127.0.0.1:1/gateway" in status.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("config", "shw"), "No such command 'shw'. Did you mean 'show'?"),
        (("server", "start", "--port", "abc"), "Invalid value for '--port'"),
        (("manage", "token", "show"), "Missing argument"),
        (("server", "status", "--bogus"), "No such option: --bogus"),
    ],
)
def test_usage_errors_are_one_line_with_a_pointer_to_help(
    tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    result = vdm(tmp_path, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and words in result.stderr
    assert "--help`" in result.stderr and "╭" not in result.stderr


def test_configuration_errors_are_one_line_each(tmp_path: Path) -> None:
    result = vdm(tmp_path, "server", "start", "--port", str(free_port()), MANAGEMENT_TOKEN="short")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: configuration: ")
    assert "MANAGEMENT_TOKEN" in lines[0]


# ---------------------------------------------------------------- waits (trap 12)


def test_waits_show_a_spinner_on_a_terminal_and_nothing_when_piped(tmp_path: Path) -> None:
    """``wrap`` starts a gateway for its command and stops it (draining) when
    the command ends: both waits say so on a terminal, neither when piped."""
    port = str(free_port())
    env = {
        **clean_env(),
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "MODELS_PREFETCH": "false",
        "SHUTDOWN_TIMEOUT": "5",
    }
    command = ["-m", "vdm", "wrap", "--port", port, sys.executable, "-c", "print('child ran')"]
    child = pexpect.spawn(
        sys.executable, command, cwd=str(tmp_path), env=env, encoding="utf-8", timeout=60
    )
    child.expect("starting a gateway on")
    child.expect("child ran")
    child.expect("stopping the gateway this command started")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    piped = vdm(tmp_path, "wrap", "--port", port, sys.executable, "-c", "print('child ran')")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "child ran\n"
    assert (
        "stopping the gateway" not in piped.stderr and "starting a gateway on" not in piped.stderr
    )


def test_budgets_are_set_and_shown_by_vdm_manage(plane: tuple[Gateway, Path]) -> None:
    gateway, _ = plane
    owner = project(gateway, "budgeted")
    code, out, err = manage(
        plane, "project", "update", owner, "--max-budget-usd", "12.5", "--budget-period", "monthly"
    )
    assert code == 0, err
    code, out, err = manage(plane, "project", "show", owner, "--json")
    shown = json.loads(out)
    assert (shown["max_budget_usd"], shown["budget_period"], shown["spend_usd"]) == (
        12.5,
        "monthly",
        0,
    )
    assert shown["budget_started_at"][8:10] == "01"  # (the month's first day)
    code, out, err = manage(
        plane, "token", "create", "--project", owner, "--max-budget-usd", "2", "--quiet"
    )
    assert code == 0, err
    code, out, err = manage(plane, "token", "list", "--project", owner, "--json")
    [token] = json.loads(out)
    assert token["max_budget_usd"] == 2 and token["budget_period"] is None
    code, out, err = manage(plane, "token", "update", token["id"], "--budget-period", "daily")
    assert code == 0, err
    assert "spend_usd" in out and "daily" in out
    code, out, err = manage(plane, "token", "update", token["id"], "--budget-period", "hourly")
    assert code != 0
