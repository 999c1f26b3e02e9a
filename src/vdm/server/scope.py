"""What a handler may use: the keys the app keeps in a request's scope, the
app as its handlers see it (:class:`Host`, which :class:`vdm.server.app.App`
is), and the shape of a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vdm.server.asgi import Receive, Scope, Send

if TYPE_CHECKING:
    from vdm.auth.proxy_key import ProxyKey
    from vdm.config import Settings
    from vdm.events import Bus
    from vdm.metrics import Metrics
    from vdm.passthrough import Allowlist
    from vdm.pipeline import Gateway
    from vdm.totals import RunningTotals
    from vdm.worker_metrics import WorkerMetrics

OPERATOR = "vdm.operator"  # the request holds the operator's credential
PRINCIPAL = "vdm.principal"  # the tenant a request was admitted for
NORMAL_PATH = "vdm.path"  # a passthrough path's normal form (vdm.passthrough)
PATH_PARAMS = "vdm.path_params"  # a door route's path parameters ({model}, ...)


class Host(Protocol):
    """The app, as its handlers see it."""

    settings: Settings
    gateway: Gateway | None
    metrics: Metrics
    started: float  # epoch seconds
    # the request path's limits and rules (vdm.server.app.App._use)
    max_body: int
    max_upload: int
    ping_interval: float
    access_fields: bool
    allow: Allowlist
    openai_paths: Allowlist
    formats: dict[str, Any]
    # the lifespan's
    bus: Bus | None
    totals: RunningTotals | None
    shared_metrics: WorkerMetrics | None
    last_reload: dict[str, Any] | None
    drain_marker: Path | None
    manage: Any
    management_key: ProxyKey | None

    def provider_key(self, headers: dict[str, str]) -> str | None: ...

    async def login(
        self, scope: Scope, key: ProxyKey, headers: dict[str, str], request_id: str, what: str
    ) -> None: ...

    async def check_operator(
        self, scope: Scope, headers: dict[str, str], request_id: str, what: str
    ) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...  # the dashboard's


Handler = Callable[[Host, Scope, Receive, Send, dict[str, str], str], Awaitable[None]]
