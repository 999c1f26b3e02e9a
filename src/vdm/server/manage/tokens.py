"""``/manage/tokens``: list (per project), create (the secret shown once),
read, change (PATCH and PUT), revoke (DELETE deactivates, audited as
``token.revoke``).  Usage counters are settled before they are read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from vdm.server.manage.models import TokenCreate, TokenCreated, TokenOut, TokenPatch
from vdm.server.manage.problems import actor
from vdm.server.manage.projects import spend_fields
from vdm.store import Missing

if TYPE_CHECKING:
    from vdm.store.records import TokenRecord
    from vdm.tenants.service import ControlPlane


def token_fields(t: TokenRecord) -> dict[str, Any]:
    """A token's shown fields (its secret as the obfuscated hint)."""
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


def add_routes(api: FastAPI, plane: ControlPlane) -> None:
    async def token_or_404(token_id: str) -> TokenRecord:
        await plane.settle()  # usage counters written before they are read
        token = await plane.store.get_token(token_id)
        if token is None:
            raise Missing(f"no token {token_id!r}")
        return plane.live(token)

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
        record, secret = await plane.create_token(actor(request), body.project_id, **fields)
        return TokenCreated(**{**token_fields(record), "token": secret})

    @api.get("/manage/tokens/{token_id}", response_model=TokenOut, tags=["tokens"])
    async def get_token(token_id: str) -> TokenOut:
        return TokenOut(**token_fields(await token_or_404(token_id)))

    async def change_token(request: Request, token_id: str, body: TokenPatch) -> TokenOut:
        changes = body.model_dump(exclude_unset=True)
        if changes.get("is_active", True) is None:
            changes.pop("is_active")
        record = await plane.update_token(actor(request), token_id, changes)
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
            actor(request), token_id, {"is_active": False}, action="token.revoke"
        )
        return Response(status_code=204)
