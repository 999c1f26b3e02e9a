"""The Anthropic Messages door: ``POST /v1/messages``.

Native to Anthropic-format providers: the body goes up with only its model
(and, when ``MAX_TOKENS_LIMIT`` is set, ``max_tokens``) rewritten.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import msgspec

from vdm import ir
from vdm.cache.keys import DoorKey
from vdm.doors.door import Decoded, Relay, Rendering, Upstream, WireDoor
from vdm.protocols import anthropic_door as anthropic
from vdm.protocols import anthropic_upstream
from vdm.protocols.body import rewrite
from vdm.providers.base import AnthropicNative, RawResponse


class _Answer(msgspec.Struct):
    """A whole answer, decoded into just the fields the outcome needs."""

    usage: dict[str, Any] = {}
    stop_reason: str | None = None
    model: Any = None


_RENDERING = Rendering(
    anthropic.encode_event, anthropic.encode_stream_error, anthropic.encode_response
)


def _asks(parsed: dict[str, Any], params: Any) -> tuple[str, bool]:
    return anthropic.validate_request_fields(parsed), parsed.get("stream") is True


def _forward(provider: AnthropicNative, up: Upstream) -> Awaitable[RawResponse]:
    changes: dict[str, Any] = {"model": up.model}
    limit, max_tokens = up.max_tokens_limit, up.parsed.get("max_tokens")
    if limit is not None and isinstance(max_tokens, int) and max_tokens > limit:
        changes["max_tokens"] = limit
    body = rewrite(up.body, up.parsed, changes)
    return provider.forward_messages(body, up.model, up.ctx, stream=up.stream)


def _usage(answer: _Answer) -> tuple[ir.Usage | None, str | None]:
    return anthropic_upstream.usage_from_dict(answer.usage), answer.stop_reason


DOOR = WireDoor(
    name="anthropic",
    key_header="x-api-key",
    paths=("/v1/messages",),
    asks=_asks,
    decode=lambda parsed: Decoded(anthropic.decode_request(parsed)),
    render=lambda decoded, model: _RENDERING,
    encode_error=anthropic.encode_error,
    encode_stream_error=anthropic.encode_stream_error,
    ping=anthropic.PING,
    native=lambda provider, settings: isinstance(provider, AnthropicNative),
    forward=_forward,
    relay=Relay(anthropic_upstream.UsageTap, msgspec.json.Decoder(_Answer), _usage, False),
    cache=DoorKey(
        "anthropic",
        (
            "model",
            "messages",
            "system",
            "tools",
            "tool_choice",
            "temperature",
            "top_p",
            "top_k",
            "max_tokens",
            "stop_sequences",
            "thinking",
            "stream",
            "output_format",
            "output_config",
            "service_tier",
            "container",
            "mcp_servers",
            "context_management",
        ),
        headers=("anthropic-beta", "anthropic-version"),
    ),
)
