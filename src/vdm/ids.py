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
