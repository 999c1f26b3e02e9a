"""Budgets in US dollars: a token's or a project's spend against its
``max_budget_usd``, over its ``budget_period``.

A period is ``daily``, ``weekly`` (from Monday) or ``monthly`` (from the 1st),
in UTC, or none: the budget is for the token's or project's whole life.  The
start of the period the stored spend belongs to is kept beside it
(``budget_started_at``); once a new period has begun, the spend read is 0 and
the next request's cost starts it afresh (:meth:`vdm.store.sql.SqlStore.add_spend`
resets and adds in one statement, so the reset is exact on every instance).

A request is refused before any upstream call while the budget is spent
(:class:`vdm.errors.BudgetExceeded`); its cost is counted when it ends.  So
requests already in flight when a budget runs out may overshoot it by their
own cost, as many as were admitted before it ran out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from vdm.store.records import ProjectRecord, Spend, TokenRecord

if TYPE_CHECKING:
    from vdm.store import UsageStore

Period = Literal["daily", "weekly", "monthly"]
PERIODS: Final = ("daily", "weekly", "monthly")


def period_start(period: str | None, now: datetime) -> datetime | None:
    """The start of the period ``now`` is in (UTC); None for a lifetime budget."""
    if period is None:
        return None
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r} (one of {', '.join(PERIODS)})")


def next_reset(period: str | None, now: datetime) -> datetime | None:
    """When the period ``now`` is in ends (None: a lifetime budget never resets)."""
    start = period_start(period, now)
    if start is None:
        return None
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def current(
    spend: float, started: datetime | None, period: str | None, now: datetime
) -> tuple[float, datetime | None]:
    """(spend, the period's start) as of ``now``: 0 once a new period began."""
    start = period_start(period, now)
    if start is None:
        return spend, started
    if started is None or started < start:
        return 0.0, start
    return spend, started


def refusal(what: str, limit: float, period: str | None, now: datetime) -> str:
    """The message of a request refused by ``what``'s spent budget."""
    reset = next_reset(period, now)
    when = (
        f"it resets at {reset.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        if reset is not None
        else "it does not reset (a lifetime budget): raise max_budget_usd to go on"
    )
    return f"{what}'s budget of ${limit:g} ({period or 'lifetime'}) is spent; {when}"


def budgeted(token: TokenRecord, project: ProjectRecord | None) -> bool:
    """Whether the token or its project has a budget (its spend is then read
    at admission and counted at once at the end, not written behind)."""
    return token.max_budget_usd is not None or (
        project is not None and project.max_budget_usd is not None
    )


async def spent(
    store: UsageStore, token: TokenRecord, project: ProjectRecord | None, now: datetime
) -> str | None:
    """Why a request may not start now (the token's or project's budget is
    spent, as the shared store has it), or None."""
    (token_spend, token_start), (project_spend, project_start) = await store.spend_of(
        token.id, token.project_id
    )
    limit = token.max_budget_usd
    if limit is not None:
        spend, _ = current(token_spend, token_start, token.budget_period, now)
        if spend >= limit:
            return refusal("this API token", limit, token.budget_period, now)
    if project is not None and project.max_budget_usd is not None:
        spend, _ = current(project_spend, project_start, project.budget_period, now)
        if spend >= project.max_budget_usd:
            return refusal(
                "this API token's project", project.max_budget_usd, project.budget_period, now
            )
    return None


def spends(
    token: TokenRecord, project: ProjectRecord | None, cost: float, now: datetime
) -> list[Spend]:
    """``cost`` added to the token's spend and its project's."""
    out = [Spend("token", token.id, cost, period_start(token.budget_period, now))]
    if project is not None:
        out.append(Spend("project", project.id, cost, period_start(project.budget_period, now)))
    return out


def settings(budget: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A budget being set: its fields, and the start of the period the spend
    now belongs to when the period is set (the spend so far stays counted)."""
    out = dict(budget)
    if "budget_period" in out:
        if out["budget_period"] is not None and out["budget_period"] not in PERIODS:
            raise ValueError(f"budget_period must be one of {', '.join(PERIODS)} or null")
        out["budget_started_at"] = period_start(out["budget_period"], now)
    return out


def encode(spends: list[Spend]) -> list[list[Any]]:
    """Spends as an event carries them (JSON through Redis)."""
    return [
        [s.table, s.id, s.cost, s.start.isoformat() if s.start is not None else None]
        for s in spends
    ]


def summed(batches: Iterable[Any]) -> list[Spend]:
    """The spends of a batch of events, summed per row and period."""
    total: dict[tuple[str, str, str | None], float] = {}
    for batch in batches:
        for table, ident, cost, start in batch:
            key = (str(table), str(ident), start)
            total[key] = total.get(key, 0.0) + float(cost)
    return [
        Spend(table, ident, cost, datetime.fromisoformat(start) if start else None)
        for (table, ident, start), cost in total.items()
    ]
