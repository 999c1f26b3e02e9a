"""Request limits of the gRPC door (vdm.grpc.limits) on a fake clock."""

from __future__ import annotations

import pytest

from vdm.config import GrpcSettings
from vdm.grpc.limits import Effective, Limiter, LimitExceeded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admit(limiter: Limiter, subject: str | None = None) -> None:
    with limiter.admit(subject):
        pass


def test_requests_per_minute_is_a_sliding_window() -> None:
    clock = Clock()
    limiter = Limiter(GrpcSettings(max_requests_per_minute=2), clock)
    admit(limiter)
    clock.now += 30
    admit(limiter)
    with pytest.raises(LimitExceeded) as caught:
        admit(limiter)
    assert caught.value.retry_after == pytest.approx(30)
    clock.now += 30.001  # the first one left the window
    admit(limiter)
    with pytest.raises(LimitExceeded):
        admit(limiter)


def test_a_refused_request_leaves_no_trace() -> None:
    clock = Clock()
    limiter = Limiter(GrpcSettings(max_requests_per_minute_per_token=1), clock)
    admit(limiter, "a")
    for _ in range(5):
        with pytest.raises(LimitExceeded):
            admit(limiter, "a")
    clock.now += 60.001
    admit(limiter, "a")  # the refusals did not extend the window


def test_per_subject_limits_are_separate() -> None:
    limiter = Limiter(GrpcSettings(max_requests_per_minute_per_token=1), Clock())
    admit(limiter, "a")
    admit(limiter, "b")
    with pytest.raises(LimitExceeded, match="this token's limit"):
        admit(limiter, "a")
    admit(limiter)  # no subject (auth off): only global limits, none here


def test_concurrency_global_and_per_subject() -> None:
    limiter = Limiter(
        GrpcSettings(max_concurrent_requests=2, max_concurrent_requests_per_token=1), Clock()
    )
    with limiter.admit("a"):
        with pytest.raises(LimitExceeded, match="this token's limit of 1 concurrent"):
            admit(limiter, "a")
        with limiter.admit("b"), pytest.raises(LimitExceeded, match="server's limit of 2"):
            admit(limiter, "c")
    admit(limiter, "a")  # released on exit


def test_slot_is_released_when_the_call_fails() -> None:
    limiter = Limiter(GrpcSettings(max_concurrent_requests=1), Clock())
    with pytest.raises(RuntimeError), limiter.admit("a"):
        raise RuntimeError("boom")
    admit(limiter, "a")


def test_effective_limits_are_the_tighter() -> None:
    limiter = Limiter(
        GrpcSettings(
            max_requests_per_minute=100,
            max_requests_per_minute_per_token=10,
            max_concurrent_requests_per_token=3,
        )
    )
    assert limiter.effective("a") == Effective(10, 3)
    assert limiter.effective(None) == Effective(100, None)
    assert Limiter(GrpcSettings()).effective("a") == Effective(None, None)
