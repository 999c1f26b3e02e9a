"""Model lists.  Pure functions, no I/O.

:class:`ModelEntry` is one row of the gateway's own ``GET /v1/models`` (each
door renders the rows in its shape).  Upstream lists: OpenAI-compatible (``GET /models``) and Anthropic-native (``GET /v1/models``)
upstreams answer the same outer shape, ``{"data": [{"id": ..., ...}]}``;
Anthropic adds ``display_name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vdm.errors import UpstreamProtocolError


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One row of ``GET /v1/models``, whatever the client's protocol."""

    id: str
    display_name: str
    owned_by: str  # the provider that serves it


def decode_model_list(payload: Any, provider: str) -> list[tuple[str, str | None]]:
    """(id, display name or None) of every model in an upstream's list.

    Entries without a string ``id`` are skipped (one odd entry should not hide
    the rest); a payload without a ``data`` list is a protocol error.
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise UpstreamProtocolError(
            f"provider '{provider}' answered a model list without a 'data' array",
            provider=provider,
        )
    out: list[tuple[str, str | None]] = []
    for item in data:
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            name = item.get("display_name")
            out.append((item["id"], name if isinstance(name, str) and name else None))
    return out
