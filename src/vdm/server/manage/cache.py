"""``/manage/cache/purge``: empty the response cache, one request or a prefix."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import Body, FastAPI, HTTPException, Request

from vdm import doors
from vdm.errors import GatewayError
from vdm.server.manage.models import CachePurge, CachePurged
from vdm.server.manage.problems import actor

if TYPE_CHECKING:
    from vdm.cache import ResponseCache
    from vdm.tenants.service import ControlPlane


def add_routes(
    api: FastAPI, plane: ControlPlane, cache_of: Callable[[], ResponseCache | None]
) -> None:
    @api.post("/manage/cache/purge", response_model=CachePurged, tags=["cache"])
    async def purge_cache(request: Request, body: Annotated[CachePurge, Body()]) -> CachePurged:
        """Purge cached responses: one exact request (``url`` + its ``body``;
        ``deleted`` is true if it was cached), or every entry of the doors under
        ``prefix``, narrowed by ``model`` and ``project`` (``deleted`` counts)."""
        responses = cache_of()
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
            actor(request),
            "cache.purge",
            target=body.url[:200],
            project_id=body.project,
            details={"prefix": body.prefix, "model": body.model, "deleted": deleted},
        )
        return CachePurged(deleted=deleted)
