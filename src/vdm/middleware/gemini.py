"""``gemini-thought-signatures``: remember Gemini's thought signatures for
the clients that drop them.

Gemini's OpenAI-compatible endpoint puts a thought signature on the tool
calls of an answer (``tool_calls[i].extra_content.google.thought_signature``)
and, for Gemini 3, rejects the next request with a 400 unless the same call
in the history carries it again.  Anthropic clients (Claude Code) drop fields
they do not know, so the signature never comes back from them.  This
middleware keeps it for them:

* ``on_event``: a ``ToolUseStart`` whose ``provider_details`` hold a
  signature is recorded, tool id -> provider details;
* ``on_request``: every assistant ``ToolUsePart`` without provider details
  whose id is recorded gets them back, and the OpenAI codec sends them as the
  call's ``extra_content``.

Ids are keyed in their upstream form (``upstream_tool_id``: the ``toolu_``
prefix the Anthropic door adds is removed), which is what both the answer's
and the next request's ids map to.  OpenAI-format providers only: the
signatures mean nothing elsewhere.  Signatures are never logged.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vdm import ir
from vdm.ids import upstream_tool_id
from vdm.middleware.base import Call, Middleware
from vdm.protocols.openai_upstream import EXTRA_CONTENT

if TYPE_CHECKING:
    from vdm.config import MiddlewareSettings

_OPENAI = "openai"


def has_signature(details: dict[str, Any] | None) -> bool:
    """Do a tool call's provider details carry a Gemini thought signature?"""
    if not details:
        return False
    extra = details.get(EXTRA_CONTENT)
    google = extra.get("google") if isinstance(extra, dict) else None
    return isinstance(google, dict) and isinstance(google.get("thought_signature"), str)


class SignatureCache:
    """A bounded TTL map, O(1) per operation, with no background task.

    An entry lives ``ttl`` seconds from when it was stored; past
    ``max_size`` entries the least recently used goes.  Expired entries are
    dropped when read, and from the old end whenever one is stored.
    """

    __slots__ = ("_clock", "_entries", "max_size", "ttl")

    def __init__(
        self, ttl: float, max_size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl, self.max_size, self._clock = ttl, max_size, clock
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, value: dict[str, Any]) -> None:
        now = self._clock()
        entries = self._entries
        entries[key] = (now + self.ttl, value)
        entries.move_to_end(key)
        while entries:
            oldest_key, (expires, _) = next(iter(entries.items()))
            if expires > now and len(entries) <= self.max_size:
                break
            del entries[oldest_key]

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]


class GeminiThoughtSignatures(Middleware):
    name = "gemini-thought-signatures"

    def __init__(
        self,
        ttl: float = 3600.0,
        max_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = SignatureCache(ttl, max_size, clock)

    @classmethod
    def from_settings(cls, settings: MiddlewareSettings) -> GeminiThoughtSignatures:
        return cls(settings.thought_signature_cache_ttl, settings.thought_signature_max_cache_size)

    def on_event(self, call: Call, event: ir.Event) -> ir.Event | None:
        if (
            type(event) is ir.ToolUseStart
            and event.provider_details is not None
            and call.api_format == _OPENAI
            and has_signature(event.provider_details)
        ):
            self.cache.put(upstream_tool_id(event.id), event.provider_details)
        return event

    async def on_request(self, call: Call, request: ir.ChatRequest) -> ir.ChatRequest:
        if call.api_format != _OPENAI or not len(self.cache):
            return request
        cache = self.cache
        for message in request.messages:
            if message.role != "assistant":
                continue
            for part in message.content:
                if type(part) is ir.ToolUsePart and part.provider_details is None:
                    details = cache.get(upstream_tool_id(part.id))
                    if details is not None:
                        part.provider_details = details
        return request
