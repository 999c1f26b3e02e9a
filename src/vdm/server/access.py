"""The access record of a request: its fields, for ``LOG_FORMAT=json``.

The access log (``vdm.access``) writes one record per request that reached a
route.  On the console it is one text line, as it always was; with
``LOG_FORMAT=json`` the same record also carries its fields (the ``access``
attribute of the log record, which :class:`vdm.logs.JsonFormatter` spreads
into the JSON object), so a log pipeline reads them without parsing text:

``method``, ``path``, ``door`` (``anthropic``, ``openai``, ``responses``),
``status``, ``provider``, ``model`` (the upstream model), ``latency_ms`` (the
whole request, a stream to its end), ``first_byte_ms`` (the upstream's first
byte), ``input_tokens``, ``output_tokens``, ``cache_read_tokens``,
``project_id`` and ``token_id`` (a tenant's request), ``client_ip``,
``cache`` (``hit``/``miss`` when the response cache was asked), ``error``,
``client_disconnected``.  Every record has every field (``null`` when it does
not apply), beside the ``ts``, ``level``, ``logger``, ``request_id`` and
``message`` of every JSON line.

The fields are built only when the log format is JSON: the console's requests
pay nothing for them.
"""

from __future__ import annotations

import time
from typing import Any

from vdm.ir import Usage

FIELD = "access"  # the log record's attribute (logging's ``extra``)


def fields(
    scope: dict[str, Any],
    principal: Any,
    door: str,
    status: int,
    started: float,
    *,
    provider: str | None = None,
    model: str | None = None,
    first_byte: float | None = None,
    usage: Usage | None = None,
    cache: str | None = None,
    error: str | None = None,
    disconnected: bool = False,
    cost: float | None = None,
) -> dict[str, Any]:
    """``started`` and ``first_byte`` are ``time.perf_counter()`` readings."""
    client = scope.get("client")
    return {
        "method": scope["method"],
        "path": scope["path"],
        "door": door,
        "status": status,
        "provider": provider or None,
        "model": model or None,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "first_byte_ms": (
            round((first_byte - started) * 1000, 1) if first_byte is not None else None
        ),
        "input_tokens": usage.input_tokens if usage is not None else None,
        "output_tokens": usage.output_tokens if usage is not None else None,
        "cache_read_tokens": usage.cache_read_input_tokens if usage is not None else None,
        "cost_usd": cost,  # (None: no price known, vdm.pricing)
        "project_id": getattr(principal, "project_id", None),
        "token_id": getattr(principal, "token_id", None),
        "client_ip": client[0] if client else None,
        "cache": cache,
        "error": error,
        "client_disconnected": disconnected,
    }
