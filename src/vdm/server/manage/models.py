"""The management API's request and response bodies (pydantic, for the
OpenAPI document): requests forbid unknown fields; responses show secrets
obfuscated, a token's secret once, at creation (:class:`TokenCreated`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from vdm.routing import MODEL_NAME_MAX_LENGTH, MODEL_NAME_PATTERN

_ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_8601(value: Any) -> Any:
    """Date-times as the schema says (RFC 3339 text), not as numbers pydantic
    would read as Unix times (``until=0.5``)."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_8601.match(value)):
        return value
    raise ValueError("expected an ISO 8601 date-time with its offset, e.g. 2030-01-31T12:00:00Z")


When = Annotated[AwareDatetime, BeforeValidator(_iso_8601)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Key = Annotated[str, StringConstraints(max_length=4096)]
Ident = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Limit = Annotated[int, Field(ge=1, le=2**31 - 1)]
Budget = Annotated[
    float, Field(strict=True, ge=0, le=1e12, description="US dollars per budget_period")
]
BudgetPeriod = Annotated[
    Literal["daily", "weekly", "monthly"],
    Field(description="daily, weekly (from Monday) or monthly, in UTC; null: lifetime"),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetFields(BaseModel):
    """A token's or project's budget (docs/spend.md#budgets)."""

    max_budget_usd: Budget | None = None
    budget_period: BudgetPeriod | None = None


class SpendFields(BaseModel):
    max_budget_usd: float | None = None
    budget_period: str | None = None
    spend_usd: float = Field(0.0, description="spent in the current period (or lifetime)")
    budget_started_at: datetime | None = Field(
        None, description="the start of the period spend_usd belongs to"
    )


class ProjectCreate(_In, BudgetFields):
    name: Name
    api_key: Key | None = Field(None, description="the default provider's key for this project")
    api_keys: dict[Ident, Key] | None = Field(
        None, description="provider -> key (a configured provider's name, else a 422)"
    )
    is_active: StrictBool = True


class ProjectPatch(_In, BudgetFields):
    name: Name | None = None
    api_key: Key | None = None
    api_keys: dict[Ident, Key] | None = Field(
        None, description="provider -> key; an empty key removes that provider's"
    )
    is_active: StrictBool | None = None


class ProjectPut(ProjectPatch):
    name: Name


class ProjectOut(SpendFields):
    id: str
    name: str
    api_key: str = Field(description="the default provider's key, obfuscated ('' when none)")
    api_keys: dict[str, str] = Field(description="provider -> obfuscated key")
    is_active: bool
    deactivated_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class TokenCreate(_In, BudgetFields):
    """The expiry is ``duration_minutes`` from now or ``expires_at``, not both;
    ``expires_at`` must be in the future (a token is never born expired)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "not": {
                "required": ["duration_minutes", "expires_at"],
                "properties": {
                    "duration_minutes": {"type": "integer"},
                    "expires_at": {"type": "string"},
                },
            }
        },
    )

    project_id: Ident
    name: Name | None = None
    duration_minutes: Annotated[int, Field(ge=1, le=525_600 * 100)] | None = Field(
        None, description="the token expires this many minutes from now (not with expires_at)"
    )
    expires_at: When | None = Field(
        None, description="when the token expires: in the future (not with duration_minutes)"
    )
    max_requests: Limit | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    allowed_models: list[Ident] | None = None
    allowed_providers: list[Ident] | None = Field(
        None, description="configured providers' names (another is a 422)"
    )
    is_active: StrictBool = True

    @model_validator(mode="after")
    def _one_future_expiry(self) -> TokenCreate:
        if self.duration_minutes is not None and self.expires_at is not None:
            raise ValueError("give duration_minutes or expires_at, not both")
        if self.expires_at is not None and self.expires_at <= datetime.now(UTC):
            raise ValueError("expires_at is in the past: a token must expire in the future")
        return self


class TokenPatch(_In, BudgetFields):
    name: Name | None = None
    expires_at: When | None = Field(None, description="a time in the past expires it now")
    max_requests: Limit | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    allowed_models: list[Ident] | None = None
    allowed_providers: list[Ident] | None = None
    is_active: StrictBool | None = None


class TokenOut(SpendFields):
    id: str
    token: str = Field(description="obfuscated (the secret is shown only at creation)")
    project_id: str
    name: str | None = None
    expires_at: datetime | None = None
    is_active: bool
    request_count: int
    max_requests: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    allowed_models: list[str] | None = None
    allowed_providers: list[str] | None = None
    created_at: datetime
    last_used_at: datetime | None = None
    cache_hit_count: int


class TokenCreated(TokenOut):
    token: str = Field(description="the secret: store it now, it is not shown again")


class AuditOut(BaseModel):
    id: str
    timestamp: datetime
    actor: str
    action: str
    outcome: str
    request_id: str | None = None
    client_ip: str | None = None
    project_id: str | None = None
    token_id: str | None = None
    target: str | None = None
    details: dict[str, Any]


class Pagination(BaseModel):
    page: int
    page_size: int
    total: int
    total_pages: int


class AuditPage(BaseModel):
    events: list[AuditOut]
    pagination: Pagination


class CachePurge(_In):
    method: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    url: Annotated[str, StringConstraints(min_length=1, max_length=8192)]
    prefix: Annotated[str, StringConstraints(max_length=8192)] | None = Field(
        None, description="purge every entry of the doors whose path starts with this"
    )
    model: (
        Annotated[
            str,
            StringConstraints(max_length=MODEL_NAME_MAX_LENGTH, pattern=MODEL_NAME_PATTERN),
        ]
        | None
    ) = Field(None, description="with prefix: only this model (routed as a request's would be)")
    project: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="only this project's entries"
    )
    body: dict[str, Any] | None = Field(
        None, description="without prefix: the exact request body (JSON) to purge"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="without prefix: the request's anthropic-beta/-version"
    )


class CachePurged(BaseModel):
    deleted: bool | int


class Problem(BaseModel):
    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem},
    401: {"model": Problem},
    404: {"model": Problem},
    405: {"model": Problem},
    409: {"model": Problem},
    413: {"model": Problem},
    422: {"model": Problem},
    429: {"model": Problem},
}
