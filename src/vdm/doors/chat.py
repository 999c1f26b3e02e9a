"""The OpenAI Chat Completions door: ``POST /v1/chat/completions``.

Native to OpenAI-compatible providers (``forward_chat``: the provider
rewrites the body's model as its endpoint needs).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import msgspec

from vdm import ir
from vdm.cache.keys import DoorKey
from vdm.doors.door import Decoded, Relay, Rendering, Upstream, WireDoor
from vdm.protocols import openai_door as openai_ingress
from vdm.protocols import openai_usage
from vdm.protocols.body import rewrite
from vdm.protocols.openai_upstream import UsageTap, usage_from_openai
from vdm.providers.base import OpenAIChatNative, RawResponse


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Answer(msgspec.Struct):
    """A whole answer, decoded into just the fields the outcome needs."""

    usage: dict[str, Any] | None = None
    choices: list[_Choice] = []
    model: Any = None


def _asks(parsed: dict[str, Any], params: Any) -> tuple[str, bool]:
    return openai_ingress.validate_request_fields(parsed), parsed.get("stream") is True


def _decode(parsed: dict[str, Any]) -> Decoded:
    request, options = openai_ingress.decode_request(parsed)
    return Decoded(request, options)


def _render(decoded: Decoded, model: str) -> Rendering:
    return Rendering(
        openai_ingress.ChunkEncoder(model, decoded.options).encode,
        openai_ingress.encode_stream_error,
        lambda response: openai_ingress.encode_response(response, model),
    )


def _forward(provider: OpenAIChatNative, up: Upstream) -> Awaitable[RawResponse]:
    body, parsed = up.body, up.parsed
    options = openai_usage.asking_usage(parsed)
    if options is not None:  # usage for every stream (openai_usage): asked for here
        parsed = {**parsed, "stream_options": options}
        body = rewrite(body, up.parsed, {"stream_options": options})
    return provider.forward_chat(body, parsed, up.model, up.ctx)


def _usage(answer: _Answer) -> tuple[ir.Usage | None, str | None]:
    return (
        usage_from_openai(answer.usage) if answer.usage else None,
        answer.choices[0].finish_reason if answer.choices else None,
    )


DOOR = WireDoor(
    name="openai",
    paths=("/v1/chat/completions",),
    asks=_asks,
    decode=_decode,
    render=_render,
    encode_error=openai_ingress.encode_error,
    encode_stream_error=openai_ingress.encode_stream_error,
    ping=openai_ingress.PING,
    native=lambda provider, settings: isinstance(provider, OpenAIChatNative),
    forward=_forward,
    relay=Relay(UsageTap, msgspec.json.Decoder(_Answer), _usage, True, openai_usage.unasked),
    cache=DoorKey(
        "openai",
        (
            "model",
            "messages",
            "tools",
            "tool_choice",
            "functions",
            "function_call",
            "temperature",
            "top_p",
            "n",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "logprobs",
            "top_logprobs",
            "seed",
            "response_format",
            "reasoning_effort",
            "stream",
            "stream_options",
            "parallel_tool_calls",
            "modalities",
            "audio",
            "prediction",
            "verbosity",
            "web_search_options",
            "service_tier",
        ),
    ),
)
