"""Failed operator logins: ten tries per address, then one every six seconds."""

from __future__ import annotations

import pytest

from vdm.auth import throttle
from vdm.auth.throttle import FailedLogins


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ten_failures_then_one_every_refill() -> None:
    clock = Clock()
    logins = FailedLogins(burst=10, refill=6.0, clock=clock)
    last = [logins.failed("10.0.0.1") for _ in range(10)]
    assert last == [False] * 9 + [True]
    wait = logins.wait("10.0.0.1")
    assert wait is not None and 5.9 < wait <= 6.0
    assert logins.wait("10.0.0.2") is None  # another address is not held up
    clock.now += 6.0
    assert logins.wait("10.0.0.1") is None
    assert logins.failed("10.0.0.1") is True  # one more, then held again
    assert logins.wait("10.0.0.1") is not None
    clock.now += 60.0  # a full bucket again, no more
    assert [logins.failed("10.0.0.1") for _ in range(10)][-1] is True


def test_the_buckets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle, "MAX_ADDRESSES", 3)
    logins = FailedLogins(burst=1, clock=Clock())
    for address in ("a", "b", "c", "d"):
        logins.failed(address)
    assert logins.wait("a") is None  # the oldest was dropped
    assert all(logins.wait(x) is not None for x in ("b", "c", "d"))
