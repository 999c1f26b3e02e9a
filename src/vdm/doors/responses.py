"""The OpenAI Responses door: ``POST /v1/responses``.

Native to OpenAI-compatible providers whose ``{NAME}_RESPONSES_API`` is
``native``; converted for every other (what the IR has no equivalent for is
dropped, and the pipeline logs it).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import msgspec

from vdm.cache.keys import DoorKey
from vdm.doors.door import Decoded, Relay, Rendering, Upstream, WireDoor
from vdm.protocols import responses_door as responses
from vdm.protocols import responses_upstream
from vdm.protocols.responses_door_stream import StreamEncoder
from vdm.providers.base import OpenAIResponsesNative, RawResponse


def _asks(parsed: dict[str, Any], params: Any) -> tuple[str, bool]:
    return responses.validate_request_fields(parsed), parsed.get("stream") is True


def _decode(parsed: dict[str, Any]) -> Decoded:
    request, options = responses.decode_request(parsed)
    return Decoded(request, options, options.dropped)


def _render(decoded: Decoded, model: str) -> Rendering:
    options = decoded.options
    encoder = StreamEncoder(options)  # one per attempt: a fresh stream
    return Rendering(
        encoder.encode,
        encoder.encode_error,
        lambda response: responses.encode_response(response, options),
    )


def _forward(provider: OpenAIResponsesNative, up: Upstream) -> Awaitable[RawResponse]:
    return provider.forward_responses(up.body, up.parsed, up.model, up.ctx)


DOOR = WireDoor(
    name="responses",
    paths=("/v1/responses",),
    asks=_asks,
    decode=_decode,
    render=_render,
    encode_error=responses.encode_error,
    encode_stream_error=responses.encode_stream_error,
    ping=responses.PING,
    native=lambda provider, settings: (
        isinstance(provider, OpenAIResponsesNative) and settings.responses_api == "native"
    ),
    forward=_forward,
    relay=Relay(
        responses_upstream.UsageTap,
        msgspec.json.Decoder(responses_upstream.ResponsesAnswer),
        lambda a: (responses_upstream.usage_from_responses(a.usage), a.status),
        True,  # (every response.* event's response)
    ),
    cache=DoorKey(
        "responses",
        (
            "model",
            "input",
            "instructions",
            "tools",
            "tool_choice",
            "temperature",
            "top_p",
            "max_output_tokens",
            "max_tool_calls",
            "reasoning",
            "text",
            "stream",
            "stream_options",
            "parallel_tool_calls",
            "truncation",
            "include",
            "previous_response_id",
            "conversation",
            "prompt",
            "top_logprobs",
            "service_tier",
        ),
    ),
)
