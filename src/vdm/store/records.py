"""Plain records the stores hand out (no ORM objects leave :mod:`vdm.store`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class ProjectRecord:
    id: str
    name: str
    is_active: bool
    credentials: dict[str, str]  # provider -> stored (possibly encrypted) credential
    created_at: datetime
    updated_at: datetime
    deactivated_at: datetime | None = None
    # Budget (vdm.tenants.budgets): USD per period (None: no budget), the spend
    # of the period that began at budget_started_at.
    max_budget_usd: float | None = None
    budget_period: str | None = None
    spend_usd: float = 0.0
    budget_started_at: datetime | None = None


@dataclass(slots=True)
class TokenRecord:
    id: str
    project_id: str
    token_hash: str
    hint: str
    created_at: datetime
    updated_at: datetime
    name: str | None = None
    is_active: bool = True
    expires_at: datetime | None = None
    max_requests: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    allowed_models: list[str] | None = None
    allowed_providers: list[str] | None = None
    request_count: int = 0
    cache_hit_count: int = 0
    last_used_at: datetime | None = None
    max_budget_usd: float | None = None  # (as a project's)
    budget_period: str | None = None
    spend_usd: float = 0.0
    budget_started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Spend:
    """Cost to add to a token's or a project's spend: ``start`` is the start of
    its budget period now (None: lifetime), earlier spend is reset to it."""

    table: str  # "token" or "project"
    id: str
    cost: float
    start: datetime | None


@dataclass(slots=True)
class AuditRecord:
    id: str
    ts: datetime
    actor: str
    action: str
    outcome: str  # "success", "failure", "denied"
    request_id: str | None = None
    client_ip: str | None = None
    project_id: str | None = None
    token_id: str | None = None
    target: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: datetime | None = None
    until: datetime | None = None
    project_id: str | None = None
    token_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    page: int = 1
    page_size: int = 50


@dataclass(slots=True)
class UsageDelta:
    """Counters of one token to add in the next write-behind flush."""

    requests: int = 0
    cache_hits: int = 0
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """A running gateway process: the revision it has loaded, its heartbeat."""

    id: str
    revision: int
    beat: int
    seen_at: float  # epoch seconds by its clock
