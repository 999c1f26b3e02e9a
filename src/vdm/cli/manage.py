"""``vdm manage project|token|audit …`` over the running gateway's management API,
and ``vdm db upgrade|status`` on the database itself.

The API is found like ``vdm health`` finds the gateway (``--url``, the pid
file's record, ``HOST:PORT``) and called with ``MANAGEMENT_TOKEN``.  Tables
with Rich; ``--json`` prints the API's JSON for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any

import typer

from vdm.cli import output
from vdm.cli.common import console, errors, fail, mask_url, settings_or_exit
from vdm.cli.health import gateway_url
from vdm.errors import StartRefused
from vdm.extras import MissingExtra

manage_app = typer.Typer(
    help="Projects, tokens and audit (the management API).", no_args_is_help=True
)
project_app = typer.Typer(help="Projects.", no_args_is_help=True)
token_app = typer.Typer(help="Virtual tokens (sk-vdm-…).", no_args_is_help=True)
audit_app = typer.Typer(help="Audit events.", no_args_is_help=True)
manage_app.add_typer(project_app, name="project")
manage_app.add_typer(token_app, name="token")
manage_app.add_typer(audit_app, name="audit")
db_app = typer.Typer(help="The control plane's database.", no_args_is_help=True)

Url = Annotated[str | None, typer.Option(help="The gateway's URL.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _call(
    url: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
) -> Any:
    settings = settings_or_exit()
    token = settings.tenants.management_token
    if not token:
        fail("MANAGEMENT_TOKEN is not set")
    base = gateway_url(url, settings)
    params = {k: v for k, v in (query or {}).items() if v is not None}
    target = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        target,
        data=data,
        method=method,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with (
            output.waiting(f"{method} {path} at {base} …"),
            urllib.request.urlopen(request, timeout=30) as response,
        ):
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.dumps(json.loads(detail)["detail"])
        fail(f"{method} {path}: {exc.code}: {detail}")
    except OSError as exc:
        fail(f"no gateway answers at {base} ({getattr(exc, 'reason', exc)})")
    return json.loads(raw) if raw else None


def _show(value: Any, as_json: bool, columns: list[str]) -> None:
    """Records (one or a list) as JSON, or as a table of ``columns``."""
    if as_json:
        output.emit_json(value)
        return
    rows = value if isinstance(value, list) else [value]
    cells = [["" if r.get(c) is None else _cell(r.get(c)) for c in columns] for r in rows]
    output.table(columns, cells, whole=_WHOLE)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


# Never wrapped, even on a narrow terminal: they are copied whole into commands.
_WHOLE = {"id", "token", "project_id", "token_id"}
_ID_LENGTH = 32  # uuid4 hex, as the control plane makes them


def _resolve(url: str | None, kind: str, given: str) -> str:
    """The id of the project or token that ``given`` (a whole id or a unique
    prefix of one) names; an unknown or ambiguous prefix is a one-line error."""
    given = given.strip()
    if len(given) >= _ID_LENGTH or not given:
        return given
    listed = _call(url, "GET", f"/manage/{kind}s") or []
    matches = [str(r["id"]) for r in listed if str(r.get("id", "")).startswith(given)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        fail(f"no {kind} id starts with '{given}' (see `vdm manage {kind} list`)")
    fail(f"{kind} id prefix '{given}' is ambiguous: it matches {', '.join(sorted(matches))}")


def _path(url: str | None, kind: str, given: str) -> str:
    return f"/manage/{kind}s/{urllib.parse.quote(_resolve(url, kind, given), safe='')}"


def _pairs(values: list[str] | None) -> dict[str, str]:
    out = {}
    for item in values or []:
        provider, sep, key = item.partition("=")
        if not sep or not provider:
            fail(f"--api-key expects PROVIDER=KEY, got {item.split('=')[0]!r}…")
        out[provider] = key
    return out


_BUDGET_COLS = ["spend_usd", "max_budget_usd", "budget_period", "budget_started_at"]
_PROJECT_COLS = ["id", "name", "is_active", "api_keys", "created_at", *_BUDGET_COLS]
_TOKEN_COLS = [
    "id",
    "token",
    "project_id",
    "is_active",
    "request_count",
    "max_requests",
    "rpm",
    "tpm",
    "expires_at",
    "last_used_at",
    *_BUDGET_COLS,
]
MaxBudget = Annotated[
    float | None, typer.Option(min=0, help="Budget in US dollars per --budget-period.")
]
_PERIODS = ("daily", "weekly", "monthly", "lifetime")
BudgetPeriod = Annotated[
    str | None,
    typer.Option(help="daily, weekly, monthly (in UTC) or lifetime (never resets)."),
]


def _budget(max_budget_usd: float | None, budget_period: str | None) -> dict[str, Any]:
    """The budget fields given (``lifetime``: no period, null)."""
    out: dict[str, Any] = {}
    if max_budget_usd is not None:
        out["max_budget_usd"] = max_budget_usd
    if budget_period is not None:
        if budget_period not in _PERIODS:
            fail(f"--budget-period must be one of {', '.join(_PERIODS)}, got {budget_period!r}")
        out["budget_period"] = None if budget_period == "lifetime" else budget_period
    return out


_AUDIT_COLS = [
    "id",
    "timestamp",
    "actor",
    "action",
    "outcome",
    "project_id",
    "token_id",
    "client_ip",
]
ApiKeys = Annotated[list[str] | None, typer.Option("--api-key", help="PROVIDER=KEY (repeat)")]
ProjectId = Annotated[str, typer.Argument(help="The project's id, or a unique prefix of it.")]
TokenId = Annotated[str, typer.Argument(help="The token's id, or a unique prefix of it.")]


@project_app.command("list")
def project_list(url: Url = None, as_json: Json = False) -> None:
    _show(_call(url, "GET", "/manage/projects"), as_json, _PROJECT_COLS)


@project_app.command("show")
def project_show(project_id: ProjectId, url: Url = None, as_json: Json = False) -> None:
    _show(
        _call(url, "GET", _path(url, "project", project_id)),
        as_json,
        _PROJECT_COLS,
    )


@project_app.command("create")
def project_create(
    name: Annotated[str, typer.Option()],
    api_key: ApiKeys = None,
    max_budget_usd: MaxBudget = None,
    budget_period: BudgetPeriod = None,
    url: Url = None,
    as_json: Json = False,
) -> None:
    body = {"name": name, "api_keys": _pairs(api_key), **_budget(max_budget_usd, budget_period)}
    _show(
        _call(url, "POST", "/manage/projects", body),
        as_json,
        _PROJECT_COLS,
    )


@project_app.command("update")
def project_update(
    project_id: ProjectId,
    name: Annotated[str | None, typer.Option()] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive")] = None,
    api_key: ApiKeys = None,
    max_budget_usd: MaxBudget = None,
    budget_period: BudgetPeriod = None,
    url: Url = None,
    as_json: Json = False,
) -> None:
    body = {
        k: v
        for k, v in {"name": name, "is_active": active, "api_keys": _pairs(api_key) or None}.items()
        if v is not None
    } | _budget(max_budget_usd, budget_period)
    _show(
        _call(url, "PATCH", _path(url, "project", project_id), body),
        as_json,
        _PROJECT_COLS,
    )


@project_app.command("delete")
def project_delete(project_id: ProjectId, url: Url = None) -> None:
    path = _path(url, "project", project_id)
    _call(url, "DELETE", path)
    console.print(f"deleted project {path.rsplit('/', 1)[-1]}", markup=False)


@token_app.command("list")
def token_list(
    project: Annotated[
        str | None, typer.Option(help="Only this project's (its id, or a unique prefix).")
    ] = None,
    url: Url = None,
    as_json: Json = False,
) -> None:
    project = _resolve(url, "project", project) if project else None
    _show(_call(url, "GET", "/manage/tokens", query={"project_id": project}), as_json, _TOKEN_COLS)


@token_app.command("show")
def token_show(token_id: TokenId, url: Url = None, as_json: Json = False) -> None:
    _show(_call(url, "GET", _path(url, "token", token_id)), as_json, _TOKEN_COLS)


Opt = Annotated[int | None, typer.Option()]
Models = Annotated[list[str] | None, typer.Option("--model", help="allowed model (repeat)")]
Providers = Annotated[
    list[str] | None, typer.Option("--provider", help="allowed provider (repeat)")
]


@token_app.command("create")
def token_create(
    project: Annotated[str, typer.Option(help="The project's id, or a unique prefix of it.")],
    duration_minutes: Opt = None,
    max_requests: Opt = None,
    rpm: Opt = None,
    tpm: Opt = None,
    model: Models = None,
    provider: Providers = None,
    name: Annotated[str | None, typer.Option()] = None,
    max_budget_usd: MaxBudget = None,
    budget_period: BudgetPeriod = None,
    url: Url = None,
    as_json: Json = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print the secret alone (for scripts).")
    ] = False,
) -> None:
    """Create a token. Its secret is printed whole, on a line of its own, and
    only this once: store it now."""
    body = {
        k: v
        for k, v in {
            "project_id": _resolve(url, "project", project),
            "duration_minutes": duration_minutes,
            "max_requests": max_requests,
            "rpm": rpm,
            "tpm": tpm,
            "allowed_models": model,
            "allowed_providers": provider,
            "name": name,
        }.items()
        if v is not None
    } | _budget(max_budget_usd, budget_period)
    created = _call(url, "POST", "/manage/tokens", body)
    if as_json:
        output.emit_json(created)
        return
    print(created["token"], flush=True)
    if quiet:
        return
    rows = [
        [c, _cell(created[c])] for c in _TOKEN_COLS if c != "token" and created.get(c) is not None
    ]
    output.table(None, rows)
    errors.print("the secret (first line) is shown only this once: store it now", markup=False)


@token_app.command("update")
def token_update(
    token_id: TokenId,
    max_requests: Opt = None,
    rpm: Opt = None,
    tpm: Opt = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive")] = None,
    max_budget_usd: MaxBudget = None,
    budget_period: BudgetPeriod = None,
    url: Url = None,
    as_json: Json = False,
) -> None:
    body = {
        k: v
        for k, v in {
            "max_requests": max_requests,
            "rpm": rpm,
            "tpm": tpm,
            "is_active": active,
        }.items()
        if v is not None
    } | _budget(max_budget_usd, budget_period)
    _show(
        _call(url, "PATCH", _path(url, "token", token_id), body),
        as_json,
        _TOKEN_COLS,
    )


@token_app.command("revoke")
def token_revoke(token_id: TokenId, url: Url = None) -> None:
    path = _path(url, "token", token_id)
    _call(url, "DELETE", path)
    console.print(f"revoked token {path.rsplit('/', 1)[-1]}", markup=False)


Text = Annotated[str | None, typer.Option()]


@audit_app.command("list")
def audit_list(
    since: Text = None,
    until: Text = None,
    project: Text = None,
    token: Text = None,
    action: Text = None,
    outcome: Text = None,
    page: int = 1,
    page_size: int = 50,
    url: Url = None,
    as_json: Json = False,
) -> None:
    """Audit events, newest first (times in ISO 8601 with a zone)."""
    result = _call(
        url,
        "GET",
        "/manage/audit",
        query={
            "since": since,
            "until": until,
            "project_id": project,
            "token_id": token,
            "action": action,
            "outcome": outcome,
            "page": page,
            "page_size": page_size,
        },
    )
    if as_json:
        _show(result, True, [])
        return
    _show(result["events"], False, _AUDIT_COLS)
    p = result["pagination"]
    console.print(f"page {p['page']} of {p['total_pages']} ({p['total']} events)")


@audit_app.command("show")
def audit_show(event_id: str, url: Url = None, as_json: Json = False) -> None:
    _show(
        _call(url, "GET", f"/manage/audit/{urllib.parse.quote(event_id)}"),
        as_json,
        [*_AUDIT_COLS, "details"],
    )


# ---------------------------------------------------------------- vdm db


async def _db(action: str) -> str:
    from vdm.store import migrate
    from vdm.store.sql import create_engine

    tenants = settings_or_exit().tenants
    engine = create_engine(tenants.sqlalchemy_url, tenants.database_schema)
    try:
        if action == "upgrade":  # the start-up's own path: the same lock, the same checks
            status = await migrate.upgrade(engine, tenants.database_schema)
        else:
            status = await migrate.status(engine, tenants.database_schema)
    except StartRefused as exc:
        fail(str(exc))
    finally:
        await engine.dispose()
    state = "up to date" if status.up_to_date else "needs `vdm db upgrade`"
    return f"revision {status.current or '(none)'}, newest {status.head}: {state}"


def _where() -> str:
    return mask_url(settings_or_exit().tenants.sqlalchemy_url)


def _db_or_fail(action: str) -> str:
    settings = settings_or_exit()
    try:
        with output.waiting(f"{action}: the database {_where()} …"):
            return asyncio.run(_db(action))
    except (MissingExtra, typer.Exit):
        raise  # told already, or by the CLI in its own line (which extra to install)
    except Exception as exc:  # every failure told in one line (the same words as start's)
        from vdm.cli.preflight import database_failure

        fail(database_failure(exc, settings))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations (the gateway also does at start-up)."""
    console.print(f"{_where()}: {_db_or_fail('upgrade')}", markup=False)


@db_app.command("status")
def db_status() -> None:
    """The database's migration revision (exit 1 when it is behind)."""
    text = _db_or_fail("status")
    console.print(f"{_where()}: {text}", markup=False)
    if "needs" in text:
        raise typer.Exit(1)
