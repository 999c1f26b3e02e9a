"""Identifiers for requests and messages (``req_vdm_…``, ``msg_…``, ``toolu_…``).

They name things, they guard nothing: unique is enough, unguessable is not
needed.  So they come from the ``random`` module's generator (seeded from the
OS at start-up, reseeded in forked children) rather than ``secrets``, which
costs a system call per identifier, several per request.
"""

from __future__ import annotations

from random import getrandbits


def hex_id(nbytes: int = 12) -> str:
    """``nbytes`` random bytes as lower-case hex (as ``secrets.token_hex`` writes them)."""
    return getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()


def new_message_id() -> str:
    return "msg_" + hex_id(12)


def tool_use_id(upstream_id: str | None) -> str:
    """An id of the ``toolu_`` form, stable for a given upstream id."""
    if not upstream_id:
        return "toolu_" + hex_id(12)
    if upstream_id.startswith("toolu_"):
        return upstream_id
    return "toolu_" + upstream_id


def upstream_tool_id(tool_use_id: str) -> str:
    """The inverse of :func:`tool_use_id`: the id to send to a non-Anthropic
    upstream, so it sees the call ids it issued (consistent for any input)."""
    return (
        tool_use_id[6:]
        if tool_use_id.startswith("toolu_") and len(tool_use_id) > 6
        else tool_use_id
    )
