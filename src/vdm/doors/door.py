"""What a door is: one client protocol, declared once.

A :class:`Door` names everything the gateway needs to serve a protocol, and
nothing else knows it: the pipeline serves every wire door through one
:meth:`vdm.pipeline.Gateway.serve`; the HTTP routes, the error shapes, the
metric and access-log ``door`` label, the middleware's :attr:`Call.door`,
the response cache's key and the credential header are read off the
declarations in :mod:`vdm.doors` (the registry).

A door is either an *IR door* (:class:`Door`: its transport builds the IR
request and renders the IR events itself, as the gRPC service does) or a
*wire door* (:class:`WireDoor`: JSON bodies over HTTP, answered as JSON or
SSE), which also declares:

* its ``paths`` (``POST`` routes, Starlette-style: ``{name}`` is a path
  parameter, handed to ``asks``);
* ``asks``: the checks every request gets, passthrough included; returns the
  model it names and whether it asks for a stream;
* ``decode`` (body -> :class:`Decoded`) and ``render`` (one attempt's
  :class:`Rendering`: event frames, stream error, whole answer);
* its error shapes (``encode_error``, ``encode_stream_error``) and ``ping``
  frame (what an early-opened stream sends while the first token is slow);
* its native rule, if any provider may speak the protocol itself: which do
  (``native``), how a body goes up to them unchanged but for the model
  (``forward``), and how their answers are tapped for usage and renamed
  (``relay``); a door without one is always converted;
* the request fields that make two answers the same (``cache``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from vdm import ir
from vdm.cache.keys import DoorKey
from vdm.errors import GatewayError

if TYPE_CHECKING:
    from vdm.config import ProviderSettings
    from vdm.providers.base import ClientContext, Provider, RawResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class Door:
    """A client protocol: ``name`` is its label everywhere (metrics, running
    totals, access records, middleware, cache keys); ``key_header`` the header
    its clients send their key in besides ``Authorization: Bearer``."""

    name: str
    key_header: str | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request in the IR, with what the door needs to render its answer
    (``options``) and what it had no equivalent for (``dropped``, logged)."""

    request: ir.ChatRequest
    options: Any = None
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rendering:
    """How one attempt's answer is written in the door's protocol."""

    event: Callable[[ir.Event], bytes]  # one SSE frame (or b"": nothing to send)
    stream_error: Callable[[GatewayError], bytes]  # the frame that ends a failed stream
    response: Callable[[ir.ChatResponse], bytes]  # a whole (non-streamed) answer


class UsageTap(Protocol):
    """Reads usage from a relayed stream's whole frames."""

    @property
    def usage(self) -> ir.Usage | None: ...

    @property
    def stop_reason(self) -> str | None: ...

    def feed(self, frames: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Relay:
    """How a native provider's answer in this protocol is relayed as bytes."""

    tap: Callable[[], UsageTap]  # a fresh stream usage tap
    answer: msgspec.json.Decoder[Any]  # a whole answer, just the fields below (and ``model``)
    usage: Callable[[Any], tuple[ir.Usage | None, str | None]]  # (usage, stop reason)
    model_in_every_chunk: bool  # else in the stream's first event only
    # Given the client's body: what to keep from a client of the stream's frames
    # that the gateway asked for and it did not (Chat Completions: the usage
    # chunk of include_usage), or None when nothing is to be kept from it.
    unasked: Callable[[Mapping[str, Any]], Callable[[bytes], bytes] | None] | None = None


@dataclass(frozen=True, slots=True)
class Upstream:
    """One native attempt's request: the client's ``body`` (``parsed`` is
    its decoded form) for upstream ``model``."""

    body: bytes
    parsed: dict[str, Any]
    model: str
    ctx: ClientContext
    stream: bool
    max_tokens_limit: int | None  # MAX_TOKENS_LIMIT


@dataclass(frozen=True, slots=True, kw_only=True)
class WireDoor(Door):
    paths: tuple[str, ...]
    asks: Callable[[dict[str, Any], Mapping[str, str]], tuple[str, bool]]
    decode: Callable[[dict[str, Any]], Decoded]
    render: Callable[[Decoded, str], Rendering]  # (the decoded request, the client's model)
    encode_error: Callable[[GatewayError], bytes]
    encode_stream_error: Callable[[GatewayError], bytes]
    ping: bytes
    cache: DoorKey
    # The native rule: none (every provider converted) unless all three are given.
    native: Callable[[Provider, ProviderSettings], bool] | None = None
    forward: Callable[[Any, Upstream], Awaitable[RawResponse]] | None = None  # (a native provider)
    relay: Relay | None = None


# ---------------------------------------------------------------- paths

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def path_pattern(path: str) -> re.Pattern[str] | None:
    """A Starlette-style path's matcher (``{name}``: one path segment, or the
    part of one before a literal such as ``:generateContent``); None for a
    path without parameters (matched by equality, in one dict lookup)."""
    if "{" not in path:
        return None
    out, end = "^", 0
    for match in _PARAM.finditer(path):
        out += re.escape(path[end : match.start()]) + f"(?P<{match.group(1)}>[^/]+)"
        end = match.end()
    return re.compile(out + re.escape(path[end:]) + "$")
