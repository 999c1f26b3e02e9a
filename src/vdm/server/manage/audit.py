"""``/manage/audit``: the audit trail, filtered and paged, and one event."""

from __future__ import annotations

import math
from datetime import UTC
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, Query

from vdm.server.manage.models import AuditOut, AuditPage, Pagination, When
from vdm.store import Missing
from vdm.store.records import AuditQuery
from vdm.tenants.audit import to_json

if TYPE_CHECKING:
    from vdm.store.records import AuditRecord
    from vdm.tenants.service import ControlPlane


def audit_out(e: AuditRecord) -> AuditOut:
    return AuditOut(**to_json(e))


def add_routes(api: FastAPI, plane: ControlPlane) -> None:
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
