"""The one pipeline: decode -> route -> provider call -> encode.

Transport-free: the HTTP layer hands in the body and headers it received and
gets back a :class:`Reply` (status, headers, and either bytes or a byte
stream).  Two ways through:

* **passthrough** — Anthropic client, Anthropic-native provider: the body goes
  up with only model (and, when ``MAX_TOKENS_LIMIT`` is set, ``max_tokens``)
  rewritten; the answer comes back as bytes while a tap reads usage;
* **conversion** — everything else: the request is decoded into the IR, the
  provider answers with IR events, and those are rendered either as SSE
  frames or (non-streaming) folded into one message: one code path, two
  renderings.

The first event is awaited before the reply is returned, so an upstream that
refuses (4xx/5xx, timeout, refused connection) becomes a proper HTTP error
status; after that, a failure ends the stream with an SSE ``error`` event.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from vdm import ir
from vdm.config import Settings
from vdm.errors import GatewayError, UpstreamProtocolError
from vdm.models import ModelCatalog, ModelEntry
from vdm.protocols import anthropic, openai_ingress
from vdm.protocols.body import rewrite
from vdm.protocols.openai import UsageTap as _OpenAITap
from vdm.providers import build
from vdm.providers.base import (
    AnthropicNative,
    ClientContext,
    ModelLister,
    OpenAIChatNative,
    Provider,
)
from vdm.routing import Route, Router

log = logging.getLogger("vdm.pipeline")

_JSON = "application/json"
_SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


class _UsageOnly(msgspec.Struct):
    usage: dict[str, Any] = {}
    stop_reason: str | None = None


_usage_decoder = msgspec.json.Decoder(_UsageOnly)


@dataclass(slots=True)
class Outcome:
    """What happened, for the access log and (later) metrics and audit."""

    provider: str = ""
    model: str = ""
    usage: ir.Usage | None = None
    stop_reason: str | None = None
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    outcome: Outcome | None = None


def new_request_id() -> str:
    return "req_vdm_" + secrets.token_hex(12)


class Gateway:
    def __init__(self, settings: Settings, providers: Mapping[str, Provider]) -> None:
        self.settings = settings
        self.providers = dict(providers)
        self.router = Router(
            list(settings.providers),
            settings.default_provider,
            settings.aliases,
            settings.fallback_aliases,
        )
        self._native = {n: isinstance(p, AnthropicNative) for n, p in self.providers.items()}
        self._openai_native = {
            n: isinstance(p, OpenAIChatNative) for n, p in self.providers.items()
        }
        self._max_tokens_limit = settings.server.max_tokens_limit
        server = settings.server
        self.catalog = ModelCatalog(
            {n: p for n, p in self.providers.items() if isinstance(p, ModelLister)},
            self._alias_entries(),
            settings.default_provider,
            self._resolve_model,
            ttl=server.models_cache_ttl,
            wait=server.models_wait,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        """Build every provider (one pooled session each).  Call inside the loop."""
        return cls(settings, {n: build(p, settings.server) for n, p in settings.providers.items()})

    async def close(self) -> None:
        await self.catalog.close()
        for provider in self.providers.values():
            await provider.close()

    def _route(self, model: str) -> tuple[Route, Provider]:
        route = self.router.resolve(model)
        return route, self.providers[route.provider]

    def _begin(
        self, model: str, headers: Mapping[str, str], client_key: str | None
    ) -> tuple[Route, Provider, ClientContext, Outcome, dict[str, str]]:
        """What every chat request starts with, whatever its door."""
        route, provider = self._route(model)
        return (
            route,
            provider,
            ClientContext(client_key=client_key, headers=headers),
            Outcome(provider=route.provider, model=route.model),
            {"x-vdm-provider": route.provider, "x-vdm-model": route.model},
        )

    # ------------------------------------------------------------ /v1/messages

    async def messages(
        self, body: bytes, headers: Mapping[str, str], client_key: str | None
    ) -> Reply:
        parsed = anthropic.decode_json_object(body)
        model = anthropic.validate_request_fields(parsed)
        route, provider, ctx, outcome, reply_headers = self._begin(model, headers, client_key)
        if self._native[route.provider]:
            return await self._passthrough(
                provider, parsed, body, route, ctx, reply_headers, outcome  # type: ignore[arg-type]
            )
        request = anthropic.decode_request(parsed)
        first, events = await _first_event(provider, request, route, ctx)
        if request.stream:
            reply_headers.update(_SSE_HEADERS)
            body = _render_stream(first, events, outcome, anthropic.encode_event,
                                  anthropic.encode_stream_error)
            return Reply(200, reply_headers, stream=body, outcome=outcome)
        response = await _fold(first, events, outcome)
        reply_headers["content-type"] = _JSON
        return Reply(200, reply_headers, body=anthropic.encode_response(response), outcome=outcome)

    # ------------------------------------------------------------ /v1/chat/completions

    async def chat_completions(
        self, body: bytes, headers: Mapping[str, str], client_key: str | None
    ) -> Reply:
        parsed = anthropic.decode_json_object(body)
        model = openai_ingress.validate_request_fields(parsed)
        route, provider, ctx, outcome, reply_headers = self._begin(model, headers, client_key)
        if self._openai_native[route.provider]:
            raw = await provider.forward_chat(  # type: ignore[attr-defined]
                body, parsed, route.model, ctx
            )
            headers_out = {**raw.headers, **reply_headers}
            if parsed.get("stream") is True:
                return Reply(raw.status, headers_out, outcome=outcome,
                             stream=_tap_stream(raw.body, outcome, _OpenAITap(),
                                                openai_ingress.encode_stream_error))
            data = b"".join([chunk async for chunk in raw.body])
            tap = _OpenAITap()
            tap.read(data)
            outcome.usage, outcome.stop_reason = tap.usage, tap.stop_reason
            return Reply(raw.status, headers_out, body=data, outcome=outcome)
        request, options = openai_ingress.decode_request(parsed)
        first, events = await _first_event(provider, request, route, ctx)
        if request.stream:
            reply_headers.update(_SSE_HEADERS)
            encoder = openai_ingress.ChunkEncoder(model, options)
            stream = _render_stream(first, events, outcome, encoder.encode,
                                    openai_ingress.encode_stream_error)
            return Reply(200, reply_headers, stream=stream, outcome=outcome)
        response = await _fold(first, events, outcome)
        reply_headers["content-type"] = _JSON
        return Reply(200, reply_headers, body=openai_ingress.encode_response(response, model),
                     outcome=outcome)

    def _upstream_body(self, parsed: dict[str, Any], body: bytes, model: str) -> bytes:
        changes: dict[str, Any] = {"model": model}
        limit = self._max_tokens_limit
        max_tokens = parsed.get("max_tokens")
        if limit is not None and isinstance(max_tokens, int) and max_tokens > limit:
            changes["max_tokens"] = limit
        return rewrite(body, parsed, changes)

    async def _passthrough(
        self,
        provider: AnthropicNative,
        parsed: dict[str, Any],
        body: bytes,
        route: Route,
        ctx: ClientContext,
        reply_headers: dict[str, str],
        outcome: Outcome,
    ) -> Reply:
        stream = parsed.get("stream") is True
        upstream_body = self._upstream_body(parsed, body, route.model)
        raw = await provider.forward_messages(upstream_body, route.model, ctx, stream=stream)
        headers = {**raw.headers, **reply_headers}
        if stream:
            return Reply(raw.status, headers, outcome=outcome,
                         stream=_tap_stream(raw.body, outcome, anthropic.UsageTap(),
                                            anthropic.encode_stream_error))
        chunks = [chunk async for chunk in raw.body]
        data = b"".join(chunks)
        try:
            tapped = _usage_decoder.decode(data)
            outcome.usage = anthropic.usage_from_dict(tapped.usage)
            outcome.stop_reason = tapped.stop_reason
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass  # relayed as it is; the client sees what the upstream sent
        return Reply(raw.status, headers, body=data, outcome=outcome)

    # ------------------------------------------------------------ count_tokens

    async def count_tokens(
        self, body: bytes, headers: Mapping[str, str], client_key: str | None
    ) -> Reply:
        parsed = anthropic.decode_json_object(body)
        model = anthropic.validate_count_tokens_fields(parsed)
        route, provider = self._route(model)
        reply_headers = {
            "content-type": _JSON, "x-vdm-provider": route.provider, "x-vdm-model": route.model,
        }
        if self._native[route.provider]:
            ctx = ClientContext(client_key=client_key, headers=headers)
            upstream_body = rewrite(body, parsed, {"model": route.model})
            data = await provider.count_tokens(upstream_body, ctx)  # type: ignore[attr-defined]
            return Reply(200, reply_headers, body=data)
        from vdm.tokens import count_request_tokens

        request = anthropic.decode_request(parsed, count_only=True)
        return Reply(200, reply_headers, body=anthropic.encode_count(count_request_tokens(request)))

    # ------------------------------------------------------------ model lists

    async def models(self, client_key: str | None) -> list[ModelEntry]:
        """Every model a client can name: aliases, then the providers' own lists."""
        return await self.catalog.entries(client_key)

    def _alias_entries(self) -> list[ModelEntry]:
        out: list[ModelEntry] = []
        default = self.settings.default_provider
        for provider, table in self.router.active_aliases().items():
            for alias, target in table.items():
                display = f"{alias} ({provider}:{target})"
                if provider == default:
                    out.append(ModelEntry(alias, display, provider))
                out.append(ModelEntry(f"{provider}:{alias}", display, provider))
        if "echo" in self.providers:
            out.append(ModelEntry("echo:echo", "echo (built-in offline provider)", "echo"))
        return out

    def _resolve_model(self, model: str) -> tuple[str, str]:
        route = self.router.resolve(model)
        return route.provider, route.model


async def _first_event(
    provider: Provider, request: ir.ChatRequest, route: Route, ctx: ClientContext
) -> tuple[ir.Event, AsyncIterator[ir.Event]]:
    """Start the provider call and wait for its first event, so a refusal
    becomes an HTTP error status rather than a broken stream."""
    events = provider.events(request, route.model, ctx)
    try:
        return await anext(events), events
    except StopAsyncIteration:
        raise UpstreamProtocolError(
            f"provider '{route.provider}' returned no answer", provider=route.provider
        ) from None
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise


async def _fold(first: ir.Event, events: AsyncIterator[ir.Event], outcome: Outcome
                ) -> ir.ChatResponse:
    builder = ir.MessageBuilder()
    builder.feed(first)
    try:
        async for event in events:
            builder.feed(event)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    response = builder.build()
    outcome.usage, outcome.stop_reason = response.usage, response.stop_reason
    return response


async def _render_stream(
    first: ir.Event,
    events: AsyncIterator[ir.Event],
    outcome: Outcome,
    encode: Callable[[ir.Event], bytes],
    encode_error: Callable[[GatewayError], bytes],
) -> AsyncIterator[bytes]:
    try:
        yield encode(first)
        async for event in events:
            if type(event) is ir.MessageDelta:
                outcome.usage, outcome.stop_reason = event.usage, event.stop_reason
            data = encode(event)
            if data:
                yield data
    except GatewayError as exc:
        outcome.error = exc.message
        log.warning("stream from %s ended with an error: %s", outcome.provider, exc.message)
        yield encode_error(exc)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


class _Tap(Protocol):
    usage: ir.Usage | None
    stop_reason: str | None

    def feed(self, chunk: bytes) -> None: ...


async def _tap_stream(
    body: AsyncIterator[bytes], outcome: Outcome, tap: _Tap,
    encode_error: Callable[[GatewayError], bytes],
) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            tap.feed(chunk)
            yield chunk
    except GatewayError as exc:
        outcome.error = exc.message
        log.warning("stream from %s ended with an error: %s", outcome.provider, exc.message)
        yield encode_error(exc)
    finally:
        outcome.usage, outcome.stop_reason = tap.usage, tap.stop_reason
        await body.aclose()  # type: ignore[attr-defined]
