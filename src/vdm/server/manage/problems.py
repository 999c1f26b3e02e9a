"""Every failure of the management API as its status and ``detail``: a 400
for malformed JSON, a 422 per bad field (or unknown provider), a 404 for an
unknown id, a 405 naming every method the path has, a 409 (audited) for a
taken name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from vdm.store import Conflict, Missing
from vdm.tenants.service import Actor, UnknownProvider

if TYPE_CHECKING:
    from vdm.tenants.service import ControlPlane


def actor(request: Request) -> Actor:
    """Who a management request is, for the audit trail."""
    scope = request.scope
    client = scope.get("client")
    return Actor("management", scope.get("vdm.request_id"), client[0] if client else None)


def add_handlers(api: FastAPI, plane: ControlPlane) -> None:
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
            headers["allow"] = ", ".join(_methods_of(api, request))
            detail = f"method {request.method} not allowed; use {headers['allow']}"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    @api.exception_handler(Missing)
    async def missing(request: Request, exc: Missing) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        await plane.failed(actor(request), "manage.conflict", str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=409)


def _methods_of(api: FastAPI, request: Request) -> list[str]:
    """Every method the request's path has a route for, sorted."""
    return sorted(
        {
            method
            for route in api.routes
            if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE
            for method in route.methods or ()
        }
    )
