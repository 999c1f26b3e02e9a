"""The management API under ``/manage`` (FastAPI, for its OpenAPI document).

Mounted for ``/manage`` only: :meth:`vdm.server.app.App._http` checks the
``MANAGEMENT_TOKEN`` bearer (constant-time) and hands the request here; the
hot path stays plain ASGI.  Paths and JSON shapes follow the management API
operators already script against (projects, tokens, audit, cache purge);
secrets are shown obfuscated, a token's secret once, at creation.  Bad input
is a 400 (malformed JSON) or 422 (field-level ``detail``), an unknown id a
404, a taken name a 409: never a 500.

One module per resource adds its routes (:mod:`.projects`, :mod:`.tokens`,
:mod:`.audit`, :mod:`.cache`); :mod:`.problems` turns every failure into its
status and ``detail``; :mod:`.models` holds the bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from vdm import __version__
from vdm.server.manage import audit, cache, problems, projects, tokens
from vdm.server.manage.models import ERRORS

if TYPE_CHECKING:
    from vdm.cache import ResponseCache
    from vdm.tenants.service import ControlPlane


def build(
    plane: ControlPlane, cache_of: Callable[[], ResponseCache | None] = lambda: None
) -> FastAPI:
    """The management app over ``plane``; ``cache_of`` gives the response cache
    the purge route empties (None while there is none)."""
    api = FastAPI(
        title="vdm management API",
        version=__version__,
        openapi_url="/manage/openapi.json",
        docs_url="/manage/docs",
        redoc_url=None,
        responses=ERRORS,
    )
    _name_providers_in_openapi(api, plane.providers)
    problems.add_handlers(api, plane)
    projects.add_routes(api, plane)
    tokens.add_routes(api, plane)
    audit.add_routes(api, plane)
    cache.add_routes(api, plane, cache_of)
    return api


def _name_providers_in_openapi(api: FastAPI, providers: list[str]) -> None:
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            _name_providers(generate(), providers)
        return api.openapi_schema  # type: ignore[return-value]

    api.openapi = openapi  # type: ignore[method-assign]


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
