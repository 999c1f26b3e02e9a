"""What a tenant's token may use, and what a provider gets of the client.

The permission rule itself is :meth:`vdm.tenants.registry.Principal.allows`
(and ``check``, its 403); these are the pipeline's two uses of it, for every
door and the passthrough alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from vdm.providers.base import ClientContext
from vdm.routing import Route

if TYPE_CHECKING:
    from vdm.tenants.registry import Principal


def permitted(principal: Principal, model: str, routes: tuple[Route, ...]) -> tuple[Route, ...]:
    """The routes a tenant's token may use for ``model`` (the name the client
    sent); 403 when it may not use the first."""
    principal.check(routes[0].provider, model, routes[0].model)
    return tuple(r for r in routes if principal.allows(r.provider, model, r.model))


def client_context(
    client_key: str | None,
    headers: Mapping[str, str],
    principal: Principal | None,
    provider: str,
) -> ClientContext:
    """What ``provider`` may use of the client's request: its headers, its
    key (for a ``!PASSTHRU`` provider; the caller passes it only to the
    provider the client routed to), and a tenant project's own key for it."""
    return ClientContext(
        client_key=client_key,
        headers=headers,
        upstream_key=principal.upstream_keys.get(provider) if principal is not None else None,
    )
