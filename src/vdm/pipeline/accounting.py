"""One request's accounting, the same for every door and transport.

Metrics (and through them the deployment's running totals: ``request.finished``
on the event bus), the tenant's token usage (its TPM window) and its cache
hits are recorded here and nowhere else; a transport (the HTTP app, the gRPC
service) only says when: :class:`Account` is opened when a request arrives,
told when its answer has started (:meth:`Account.answered`, which returns
what to await before the answer's last byte), and when it ended or failed.

A tenant's usage is counted **before the answer's last byte goes out**
(:mod:`vdm.tenants.limits`): the client cannot ask again, on any instance,
before its tokens count.  If the client leaves first, they are counted when
the transport learns it (:meth:`Account.ended`): they were used all the same.

The cost (:mod:`vdm.pricing`, from the usage and who served) is priced once,
when the usage is final, and goes wherever the tokens go: the metrics and
totals, the tenant's usage, the outcome (``x-vdm-cost-usd``, gRPC's
``final_metrics.cost_usd``, the access record).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from vdm.errors import GatewayError
from vdm.logs import request_id as current_request_id
from vdm.metrics import Metrics
from vdm.outcome import Outcome

if TYPE_CHECKING:
    from vdm.pricing import Prices
    from vdm.tenants.registry import Principal, TokenRegistry


COST_HEADER = "x-vdm-cost-usd"


class Answer(Protocol):
    """A reply or a completion: who answered, once it is known."""

    @property
    def outcome(self) -> Outcome | None: ...


def failed(metrics: Metrics, door: str, exc: GatewayError, started: float) -> None:
    """A request that ended in an error status (``exc.provider`` when routed)."""
    metrics.failed(
        door,
        getattr(exc, "provider", "") or "",
        exc.status,
        exc.kind,
        time.perf_counter() - started,
        current_request_id.get(""),
    )


class Account:
    """The accounting of one request (a context manager: it is in flight
    inside the ``with``)."""

    __slots__ = (
        "_answer",
        "_counted",
        "_metrics",
        "_prices",
        "_tenants",
        "door",
        "principal",
        "request_id",
        "started",
    )

    def __init__(
        self,
        metrics: Metrics,
        tenants: TokenRegistry | None,
        door: str,
        principal: Principal | None,
        prices: Prices | None = None,
    ) -> None:
        self.started = time.perf_counter()
        self._metrics = metrics
        self._prices = prices
        # A JWT admits a principal with no control plane (PROXY_API_KEY +
        # VDM_JWT_SECRET): then no token registry counts its usage.
        self._tenants = tenants if principal is not None else None
        self.door = door
        self.principal = principal
        self.request_id = current_request_id.get("")
        self._answer: Answer | None = None
        self._counted = False

    def __enter__(self) -> Account:
        self._metrics.in_flight += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self._metrics.in_flight -= 1

    def answered(self, answer: Answer) -> Callable[[], Awaitable[None]] | None:
        """The answer has started: what to await before its last byte goes out
        (the tenant's usage, counted once), or None when nothing is counted."""
        self._answer = answer
        return self._count if self._tenants is not None else None

    async def _count(self) -> None:
        if self._counted or self._tenants is None or self.principal is None:
            return
        self._counted = True
        outcome = self._answer.outcome if self._answer is not None else None
        if outcome is not None:
            await self._tenants.record_usage(self.principal, outcome.usage, self.priced(outcome))

    def priced(self, outcome: Outcome) -> float | None:
        """``outcome``'s cost in USD (None: no usage, or no price), priced once
        its usage is known."""
        if outcome.cost is None and self._prices is not None and outcome.usage is not None:
            outcome.cost = self._prices.cost(outcome.provider, outcome.model, outcome.usage)
        return outcome.cost

    def cost_header(self, answer: Answer, headers: dict[str, str]) -> None:
        """``x-vdm-cost-usd`` of a complete answer, when it has a price."""
        outcome = answer.outcome
        if outcome is not None:
            cost = self.priced(outcome)
            if cost is not None:
                headers[COST_HEADER] = f"{cost:.10f}".rstrip("0").rstrip(".") or "0"

    async def ended(
        self, status: int, upstream_end: float | None, *, cache_hit: bool = False
    ) -> None:
        """The answer's last byte is out, or the client left: its metrics
        (``upstream_end``: when the upstream's part ended, None when unknown)
        and, if the end came first, the tenant's usage; its cache hit."""
        outcome = self._answer.outcome if self._answer is not None else None
        if outcome is None:
            return  # (an answer of the gateway's own: no provider, nothing to count)
        now = time.perf_counter()
        started = self.started
        cost = self.priced(outcome)
        self._metrics.finished(
            self.door,
            outcome.provider,
            outcome.model,
            status,
            now - started,
            outcome.first_byte - started if outcome.first_byte is not None else None,
            upstream_end - outcome.started if upstream_end is not None else None,
            outcome.usage,
            "stream" if outcome.error else None,
            cache_hit=cache_hit,
            request_id=self.request_id,
            cost=cost,
            project=self.principal.project_name if self.principal is not None else None,
        )
        if self._tenants is not None and self.principal is not None:
            await self._count()  # (a no-op unless the client left before the end)
            if cache_hit:
                self._tenants.record_cache_hit(self.principal)

    def failed(self, exc: GatewayError) -> None:
        """The request ended in an error status, before any answer."""
        failed(self._metrics, self.door, exc, self.started)
