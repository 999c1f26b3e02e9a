"""The management API under ``/manage`` (FastAPI, for its OpenAPI document).

Mounted for ``/manage`` only: :meth:`vdm.server.app.App._http` checks the
``MANAGEMENT_TOKEN`` bearer (constant-time) and hands the request here; the
hot path stays plain ASGI.  Paths and JSON shapes follow the management API
operators already script against (projects, tokens, audit, cache purge);
secrets are shown obfuscated, a token's secret once, at creation.  Bad input
is a 400 (malformed JSON) or 422 (field-level ``detail``), an unknown id a
404, a taken name a 409: never a 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from vdm import __version__, doors
from vdm.errors import GatewayError
from vdm.routing import MODEL_NAME_MAX_LENGTH, MODEL_NAME_PATTERN
from vdm.store import Conflict, Missing
from vdm.store.records import AuditQuery, AuditRecord, ProjectRecord, TokenRecord
from vdm.tenants import budgets
from vdm.tenants.audit import to_json
from vdm.tenants.service import Actor, ControlPlane, UnknownProvider

if TYPE_CHECKING:
    from vdm.cache import ResponseCache

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


class _Budget(BaseModel):
    """A token's or project's budget (docs/spend.md#budgets)."""

    max_budget_usd: Budget | None = None
    budget_period: BudgetPeriod | None = None


class _Spend(BaseModel):
    max_budget_usd: float | None = None
    budget_period: str | None = None
    spend_usd: float = Field(0.0, description="spent in the current period (or lifetime)")
    budget_started_at: datetime | None = Field(
        None, description="the start of the period spend_usd belongs to"
    )


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectCreate(_In, _Budget):
    name: Name
    api_key: Key | None = Field(None, description="the default provider's key for this project")
    api_keys: dict[Ident, Key] | None = Field(
        None, description="provider -> key (a configured provider's name, else a 422)"
    )
    is_active: StrictBool = True


class ProjectPatch(_In, _Budget):
    name: Name | None = None
    api_key: Key | None = None
    api_keys: dict[Ident, Key] | None = Field(
        None, description="provider -> key; an empty key removes that provider's"
    )
    is_active: StrictBool | None = None


class ProjectPut(ProjectPatch):
    name: Name


class ProjectOut(_Spend):
    id: str
    name: str
    api_key: str = Field(description="the default provider's key, obfuscated ('' when none)")
    api_keys: dict[str, str] = Field(description="provider -> obfuscated key")
    is_active: bool
    deactivated_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class TokenCreate(_In, _Budget):
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


class TokenPatch(_In, _Budget):
    name: Name | None = None
    expires_at: When | None = Field(None, description="a time in the past expires it now")
    max_requests: Limit | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    allowed_models: list[Ident] | None = None
    allowed_providers: list[Ident] | None = None
    is_active: StrictBool | None = None


class TokenOut(_Spend):
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


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem},
    401: {"model": Problem},
    404: {"model": Problem},
    405: {"model": Problem},
    409: {"model": Problem},
    413: {"model": Problem},
    422: {"model": Problem},
    429: {"model": Problem},
}


def _name_providers(schema: dict[str, Any], providers: list[str]) -> None:
    """Say in the request bodies' schemas which provider names this gateway has
    (``api_keys``' keys, ``allowed_providers``' items): another is a 422."""
    names = {"enum": list(providers)}
    for model in schema.get("components", {}).get("schemas", {}).values():
        if model.get("additionalProperties") is not False:  # (a response, not a request)
            continue
        fields = model.get("properties", {})
        for variant in fields.get("api_keys", {}).get("anyOf", ()):
            if variant.get("type") == "object":
                variant["propertyNames"] = names
        for variant in fields.get("allowed_providers", {}).get("anyOf", ()):
            if variant.get("type") == "array":
                variant["items"] = {"type": "string", **names}


def _actor(request: Request) -> Actor:
    scope = request.scope
    client = scope.get("client")
    return Actor("management", scope.get("vdm.request_id"), client[0] if client else None)


def _keys_of(body: ProjectPatch | ProjectCreate, default_provider: str) -> dict[str, Any]:
    keys: dict[str, Any] = dict(body.api_keys or {})
    if body.api_key is not None:
        keys[default_provider] = body.api_key
    return keys


def _budget_of(body: _Budget) -> dict[str, Any]:
    """The budget fields the body sets (null clears one)."""
    return {
        k: getattr(body, k)
        for k in ("max_budget_usd", "budget_period")
        if k in body.model_fields_set
    }


def spend_fields(record: TokenRecord | ProjectRecord) -> dict[str, Any]:
    """A budget and the spend of its current period, as of now."""
    spend, started = budgets.current(
        record.spend_usd, record.budget_started_at, record.budget_period, datetime.now(UTC)
    )
    return {
        "max_budget_usd": record.max_budget_usd,
        "budget_period": record.budget_period,
        "spend_usd": round(spend, 9),
        "budget_started_at": started,
    }


def build(plane: ControlPlane, cache: Callable[[], ResponseCache | None] = lambda: None) -> FastAPI:
    api = FastAPI(
        title="vdm management API",
        version=__version__,
        openapi_url="/manage/openapi.json",
        docs_url="/manage/docs",
        redoc_url=None,
        responses=_ERRORS,
    )

    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            _name_providers(generate(), plane.providers)
        return api.openapi_schema  # type: ignore[return-value]

    api.openapi = openapi  # type: ignore[method-assign]

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors
        ]
        return JSONResponse({"detail": detail}, status_code=status)

    @api.exception_handler(UnknownProvider)
    async def unknown_provider(request: Request, exc: UnknownProvider) -> JSONResponse:
        detail = [
            {"loc": ["body", exc.field, name], "msg": str(exc), "type": "unknown_provider"}
            for name in exc.names
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        detail = exc.detail
        if exc.status_code == 405:  # every method the path has, not the first route's
            allowed = sorted(
                {
                    method
                    for route in api.routes
                    if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE
                    for method in route.methods or ()
                }
            )
            headers["allow"] = ", ".join(allowed)
            detail = f"method {request.method} not allowed; use {headers['allow']}"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    @api.exception_handler(Missing)
    async def missing(request: Request, exc: Missing) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        await plane.failed(_actor(request), "manage.conflict", str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=409)

    def project_out(p: ProjectRecord) -> ProjectOut:
        shown = plane.shown_credentials(p)
        return ProjectOut(
            id=p.id,
            name=p.name,
            api_key=shown.get(plane.default_provider, ""),
            api_keys=shown,
            is_active=p.is_active,
            deactivated_at=p.deactivated_at,
            created_at=p.created_at,
            updated_at=p.updated_at,
            **spend_fields(p),
        )

    def token_fields(t: TokenRecord) -> dict[str, Any]:
        return dict(
            id=t.id,
            token=t.hint,
            project_id=t.project_id,
            name=t.name,
            expires_at=t.expires_at,
            is_active=t.is_active,
            request_count=t.request_count,
            max_requests=t.max_requests,
            rpm=t.rpm,
            tpm=t.tpm,
            allowed_models=t.allowed_models,
            allowed_providers=t.allowed_providers,
            created_at=t.created_at,
            last_used_at=t.last_used_at,
            cache_hit_count=t.cache_hit_count,
            **spend_fields(t),
        )

    def keys_of(body: ProjectPatch | ProjectCreate) -> dict[str, Any]:
        return _keys_of(body, plane.default_provider)

    async def project_or_404(project_id: str) -> ProjectRecord:
        await plane.settle()  # (spend written behind, before it is read)
        project = await plane.store.get_project(project_id)
        if project is None:
            raise Missing(f"no project {project_id!r}")
        return project

    async def token_or_404(token_id: str) -> TokenRecord:
        await plane.settle()  # usage counters written before they are read
        token = await plane.store.get_token(token_id)
        if token is None:
            raise Missing(f"no token {token_id!r}")
        return plane.live(token)

    # ------------------------------------------------------------ projects

    @api.get("/manage/projects", response_model=list[ProjectOut], tags=["projects"])
    async def list_projects() -> list[ProjectOut]:
        return [project_out(p) for p in await plane.store.list_projects()]

    @api.post("/manage/projects", status_code=201, response_model=ProjectOut, tags=["projects"])
    async def create_project(request: Request, body: ProjectCreate) -> ProjectOut:
        return project_out(
            await plane.create_project(
                _actor(request), body.name, keys_of(body), body.is_active, _budget_of(body)
            )
        )

    @api.get("/manage/projects/{project_id}", response_model=ProjectOut, tags=["projects"])
    async def get_project(project_id: str) -> ProjectOut:
        return project_out(await project_or_404(project_id))

    async def change_project(request: Request, project_id: str, body: ProjectPatch) -> ProjectOut:
        return project_out(
            await plane.update_project(
                _actor(request),
                project_id,
                name=body.name,
                is_active=body.is_active,
                keys=keys_of(body),
                budget=_budget_of(body),
            )
        )

    @api.patch("/manage/projects/{project_id}", response_model=ProjectOut, tags=["projects"])
    async def patch_project(request: Request, project_id: str, body: ProjectPatch) -> ProjectOut:
        return await change_project(request, project_id, body)

    @api.put("/manage/projects/{project_id}", response_model=ProjectOut, tags=["projects"])
    async def put_project(request: Request, project_id: str, body: ProjectPut) -> ProjectOut:
        return await change_project(request, project_id, body)

    @api.delete(
        "/manage/projects/{project_id}", status_code=204, tags=["projects"], response_class=Response
    )
    async def delete_project(request: Request, project_id: str) -> Response:
        await plane.delete_project(_actor(request), project_id)
        return Response(status_code=204)

    # ------------------------------------------------------------ tokens

    @api.get("/manage/tokens", response_model=list[TokenOut], tags=["tokens"])
    async def list_tokens(
        project_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[TokenOut]:
        await plane.settle()
        return [
            TokenOut(**token_fields(plane.live(t)))
            for t in await plane.store.list_tokens(project_id)
        ]

    @api.post("/manage/tokens", status_code=201, response_model=TokenCreated, tags=["tokens"])
    async def create_token(request: Request, body: TokenCreate) -> TokenCreated:
        fields = body.model_dump(exclude={"project_id", "duration_minutes"})
        if body.duration_minutes is not None:
            fields["expires_at"] = datetime.now(UTC) + timedelta(minutes=body.duration_minutes)
        record, secret = await plane.create_token(_actor(request), body.project_id, **fields)
        return TokenCreated(**{**token_fields(record), "token": secret})

    @api.get("/manage/tokens/{token_id}", response_model=TokenOut, tags=["tokens"])
    async def get_token(token_id: str) -> TokenOut:
        return TokenOut(**token_fields(await token_or_404(token_id)))

    async def change_token(request: Request, token_id: str, body: TokenPatch) -> TokenOut:
        changes = body.model_dump(exclude_unset=True)
        if changes.get("is_active", True) is None:
            changes.pop("is_active")
        record = await plane.update_token(_actor(request), token_id, changes)
        return TokenOut(**token_fields(record))

    @api.patch("/manage/tokens/{token_id}", response_model=TokenOut, tags=["tokens"])
    async def patch_token(request: Request, token_id: str, body: TokenPatch) -> TokenOut:
        return await change_token(request, token_id, body)

    @api.put("/manage/tokens/{token_id}", response_model=TokenOut, tags=["tokens"])
    async def put_token(request: Request, token_id: str, body: TokenPatch) -> TokenOut:
        return await change_token(request, token_id, body)

    @api.delete(
        "/manage/tokens/{token_id}", status_code=204, tags=["tokens"], response_class=Response
    )
    async def revoke_token(request: Request, token_id: str) -> Response:
        await plane.update_token(
            _actor(request), token_id, {"is_active": False}, action="token.revoke"
        )
        return Response(status_code=204)

    # ------------------------------------------------------------ audit

    def audit_out(e: AuditRecord) -> AuditOut:
        return AuditOut(**to_json(e))

    @api.get("/manage/audit", response_model=AuditPage, tags=["audit"])
    async def list_audit(
        since: When | None = None,
        until: When | None = None,
        project_id: Annotated[str | None, Query(max_length=200)] = None,
        token_id: Annotated[str | None, Query(max_length=200)] = None,
        action: Annotated[str | None, Query(max_length=100)] = None,
        outcome: Annotated[str | None, Query(max_length=20)] = None,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> AuditPage:
        query = AuditQuery(
            since.astimezone(UTC) if since else None,
            until.astimezone(UTC) if until else None,
            project_id,
            token_id,
            action,
            outcome,
            page,
            page_size,
        )
        events, total = await plane.query_audit(query)
        return AuditPage(
            events=[audit_out(e) for e in events],
            pagination=Pagination(
                page=page,
                page_size=page_size,
                total=total,
                total_pages=math.ceil(total / page_size),
            ),
        )

    @api.get("/manage/audit/{event_id}", response_model=AuditOut, tags=["audit"])
    async def get_audit(event_id: str) -> AuditOut:
        event = await plane.get_audit(event_id)
        if event is None:
            raise Missing(f"no audit event {event_id!r}")
        return audit_out(event)

    # ------------------------------------------------------------ cache

    @api.post("/manage/cache/purge", response_model=CachePurged, tags=["cache"])
    async def purge_cache(request: Request, body: Annotated[CachePurge, Body()]) -> CachePurged:
        """Purge cached responses: one exact request (``url`` + its ``body``;
        ``deleted`` is true if it was cached), or every entry of the doors under
        ``prefix``, narrowed by ``model`` and ``project`` (``deleted`` counts)."""
        responses = cache()
        if responses is None:
            return CachePurged(deleted=0 if body.prefix is not None else False)
        try:
            deleted = await responses.purge(
                doors.CACHE_PATHS,
                url=body.url,
                prefix=body.prefix,
                model=body.model,
                project=body.project,
                body=body.body,
                headers=body.headers,
            )
        except (ValueError, GatewayError) as exc:
            message = exc.message if isinstance(exc, GatewayError) else str(exc)
            raise HTTPException(400, message) from None
        await plane._audited(
            _actor(request),
            "cache.purge",
            target=body.url[:200],
            project_id=body.project,
            details={"prefix": body.prefix, "model": body.model, "deleted": deleted},
        )
        return CachePurged(deleted=deleted)

    return api
