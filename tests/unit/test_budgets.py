"""vdm.tenants.budgets: periods in UTC, the spend of the current period, and
spends carried by events (summed per row and period)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from vdm.store.records import Spend
from vdm.tenants import budgets

NOW = datetime(2030, 3, 14, 15, 9, 26, tzinfo=UTC)  # a Thursday


@pytest.mark.parametrize(
    ("period", "start", "reset"),
    [
        ("daily", datetime(2030, 3, 14, tzinfo=UTC), datetime(2030, 3, 15, tzinfo=UTC)),
        ("weekly", datetime(2030, 3, 11, tzinfo=UTC), datetime(2030, 3, 18, tzinfo=UTC)),
        ("monthly", datetime(2030, 3, 1, tzinfo=UTC), datetime(2030, 4, 1, tzinfo=UTC)),
        (None, None, None),
    ],
)
def test_periods_start_and_reset_in_utc(
    period: str | None, start: datetime | None, reset: datetime | None
) -> None:
    assert budgets.period_start(period, NOW) == start
    assert budgets.next_reset(period, NOW) == reset


def test_december_resets_on_the_first_of_january() -> None:
    assert budgets.next_reset("monthly", datetime(2030, 12, 31, tzinfo=UTC)) == datetime(
        2031, 1, 1, tzinfo=UTC
    )


def test_the_spend_of_an_earlier_period_reads_as_zero() -> None:
    today = datetime(2030, 3, 14, tzinfo=UTC)
    yesterday = datetime(2030, 3, 13, tzinfo=UTC)
    assert budgets.current(2.0, today, "daily", NOW) == (2.0, today)
    assert budgets.current(2.0, yesterday, "daily", NOW) == (0.0, today)
    assert budgets.current(2.0, yesterday, None, NOW) == (2.0, yesterday)  # lifetime


def test_the_refusal_names_the_budget_and_its_reset() -> None:
    message = budgets.refusal("this API token", 5.0, "daily", NOW)
    assert "$5" in message and "daily" in message and "2030-03-15T00:00:00Z" in message
    assert "lifetime" in budgets.refusal("this API token's project", 5.0, None, NOW)


def test_spends_travel_as_json_and_are_summed_per_row_and_period() -> None:
    start = datetime(2030, 3, 14, tzinfo=UTC)
    one = [Spend("token", "t", 0.25, start), Spend("project", "p", 0.25, None)]
    events = [json.loads(json.dumps(budgets.encode(one))) for _ in range(3)]
    assert sorted(budgets.summed(events), key=lambda s: s.table) == [
        Spend("project", "p", 0.75, None),
        Spend("token", "t", 0.75, start),
    ]
