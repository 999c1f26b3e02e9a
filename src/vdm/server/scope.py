"""What the app keeps in an ASGI request's scope for its handlers, and
the shape of a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from vdm.server.asgi import Receive, Scope, Send

if TYPE_CHECKING:
    from vdm.server.app import App

OPERATOR = "vdm.operator"  # the request holds the operator's credential
PRINCIPAL = "vdm.principal"  # the tenant a request was admitted for
NORMAL_PATH = "vdm.path"  # a passthrough path's normal form (vdm.passthrough)
PATH_PARAMS = "vdm.path_params"  # a door route's path parameters ({model}, ...)

Handler = Callable[["App", Scope, Receive, Send, dict[str, str], str], Awaitable[None]]
