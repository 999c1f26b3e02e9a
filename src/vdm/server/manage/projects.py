"""``/manage/projects``: list, create, read, change (PATCH and PUT), delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from vdm.server.manage.models import (
    BudgetFields,
    ProjectCreate,
    ProjectOut,
    ProjectPatch,
    ProjectPut,
)
from vdm.server.manage.problems import actor
from vdm.store import Missing
from vdm.tenants import budgets

if TYPE_CHECKING:
    from vdm.store.records import ProjectRecord, TokenRecord
    from vdm.tenants.service import ControlPlane


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


def budget_of(body: BudgetFields) -> dict[str, Any]:
    """The budget fields the body sets (null clears one)."""
    return {
        k: getattr(body, k)
        for k in ("max_budget_usd", "budget_period")
        if k in body.model_fields_set
    }


def project_out(plane: ControlPlane, p: ProjectRecord) -> ProjectOut:
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


def keys_of(plane: ControlPlane, body: ProjectPatch | ProjectCreate) -> dict[str, Any]:
    """provider -> key from a body (``api_key`` is the default provider's)."""
    keys: dict[str, Any] = dict(body.api_keys or {})
    if body.api_key is not None:
        keys[plane.default_provider] = body.api_key
    return keys


def add_routes(api: FastAPI, plane: ControlPlane) -> None:
    async def project_or_404(project_id: str) -> ProjectRecord:
        await plane.settle()  # (spend written behind, before it is read)
        project = await plane.store.get_project(project_id)
        if project is None:
            raise Missing(f"no project {project_id!r}")
        return project

    @api.get("/manage/projects", response_model=list[ProjectOut], tags=["projects"])
    async def list_projects() -> list[ProjectOut]:
        return [project_out(plane, p) for p in await plane.store.list_projects()]

    @api.post("/manage/projects", status_code=201, response_model=ProjectOut, tags=["projects"])
    async def create_project(request: Request, body: ProjectCreate) -> ProjectOut:
        keys = keys_of(plane, body)
        created = await plane.create_project(
            actor(request), body.name, keys, body.is_active, budget_of(body)
        )
        return project_out(plane, created)

    @api.get("/manage/projects/{project_id}", response_model=ProjectOut, tags=["projects"])
    async def get_project(project_id: str) -> ProjectOut:
        return project_out(plane, await project_or_404(project_id))

    async def change_project(request: Request, project_id: str, body: ProjectPatch) -> ProjectOut:
        changed = await plane.update_project(
            actor(request),
            project_id,
            name=body.name,
            is_active=body.is_active,
            keys=keys_of(plane, body),
            budget=budget_of(body),
        )
        return project_out(plane, changed)

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
        await plane.delete_project(actor(request), project_id)
        return Response(status_code=204)
