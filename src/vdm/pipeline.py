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

The first event (passthrough: the first body chunk) is awaited before the
reply is returned, so an upstream that refuses (4xx/5xx, timeout, refused
connection) becomes a proper HTTP error status; after that, a failure ends
the stream with an SSE ``error`` event.

Until that first event, a failed attempt may be tried again (:meth:`Gateway.
_serve`): the provider's key pool moves on from refused keys; connection
failures, timeouts and 502/503/504/529 are retried with exponential backoff
and full jitter up to ``MAX_RETRIES``; then the model's configured fallbacks
are tried in order, across wire formats if need be.  Every reply names who
served it (``x-vdm-provider``, ``x-vdm-model``).

The middleware chain (``vdm.middleware``) sits around the provider call:
``on_request`` before it and ``on_event`` on its events (conversion only),
``on_start``/``on_response`` on every path.  With no middleware configured
the only cost is one falsy check per request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import msgspec

from vdm import ir
from vdm.cache import Plan, ResponseCache
from vdm.config import PASSTHROUGH_KEY, Settings
from vdm.errors import (
    AuthenticationFailed,
    GatewayError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from vdm.ids import hex_id
from vdm.leases import Leases
from vdm.logs import request_id as current_request_id
from vdm.metrics import Metrics, ModelLabels, configured_models
from vdm.middleware import Call, build_chain
from vdm.models import ModelCatalog, ModelEntry
from vdm.outcome import Outcome, Reply
from vdm.protocols import anthropic_door as anthropic
from vdm.protocols import anthropic_upstream, fields, responses_upstream, structured
from vdm.protocols import openai_door as openai_ingress
from vdm.protocols import responses_door as responses
from vdm.protocols.body import StreamRenamer, rename_answer, rewrite
from vdm.protocols.openai_upstream import UsageTap as _OpenAITap
from vdm.protocols.openai_upstream import usage_from_openai
from vdm.protocols.responses_door_stream import StreamEncoder as ResponsesEncoder
from vdm.protocols.sse import FrameCutter
from vdm.providers import build
from vdm.providers.base import (
    AnthropicNative,
    ClientContext,
    ModelLister,
    OpenAIChatNative,
    OpenAIResponsesNative,
    Provider,
    RawResponse,
)
from vdm.providers.cooldowns import Cooldowns, MemoryCooldowns
from vdm.providers.http import is_event_stream
from vdm.routing import Route, Router

if TYPE_CHECKING:
    from vdm.events import Bus
    from vdm.tenants.registry import Principal

log = logging.getLogger("vdm.pipeline")

_JSON = "application/json"
_SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


# ---------------------------------------------------------------- passthrough answers
# A whole (non-streamed) passthrough answer is decoded once, into just the
# fields the outcome needs (msgspec skips the rest while checking the syntax).


class _AnthropicAnswer(msgspec.Struct):
    usage: dict[str, Any] = {}
    stop_reason: str | None = None
    model: Any = None


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _OpenAIAnswer(msgspec.Struct):
    usage: dict[str, Any] | None = None
    choices: list[_Choice] = []
    model: Any = None


@dataclass(frozen=True, slots=True)
class _RelayRules:
    """How one wire family's passthrough answers are tapped, renamed and ended."""

    tap: Callable[[], Any]  # a fresh stream usage tap
    encode_stream_error: Callable[[GatewayError], bytes]
    answer: msgspec.json.Decoder[Any]  # (its ``model``: the upstream's name for it)
    usage: Callable[[Any], tuple[ir.Usage | None, str | None]]
    model_in_every_chunk: bool  # else in the stream's first event only


_ANTHROPIC_RELAY = _RelayRules(
    anthropic_upstream.UsageTap,
    anthropic.encode_stream_error,
    msgspec.json.Decoder(_AnthropicAnswer),
    lambda a: (anthropic_upstream.usage_from_dict(a.usage), a.stop_reason),
    model_in_every_chunk=False,
)
_OPENAI_RELAY = _RelayRules(
    _OpenAITap,
    openai_ingress.encode_stream_error,
    msgspec.json.Decoder(_OpenAIAnswer),
    lambda a: (
        usage_from_openai(a.usage) if a.usage else None,
        a.choices[0].finish_reason if a.choices else None,
    ),
    model_in_every_chunk=True,
)
_RESPONSES_RELAY = _RelayRules(
    responses_upstream.UsageTap,
    responses.encode_stream_error,
    msgspec.json.Decoder(responses_upstream.ResponsesAnswer),
    lambda a: (responses_upstream.usage_from_responses(a.usage), a.status),
    model_in_every_chunk=True,  # (every response.* event's response)
)


@dataclass(slots=True)
class Completion:
    """An answer that has started (its first event is in), for doors that speak
    IR themselves (the gRPC service): who serves it, its events, how many
    attempts it took (retries and fallbacks included)."""

    outcome: Outcome
    events: AsyncIterator[ir.Event]
    attempts: int


def new_request_id() -> str:
    return "req_vdm_" + hex_id(12)


Attempt = Callable[[Route, Provider, ClientContext, Outcome], Awaitable[Reply]]
_MAX_BACKOFF = 8.0


class Gateway:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        cooldowns: Cooldowns | None = None,
        metrics: Metrics | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.settings = settings
        self.leases = Leases()  # the requests it serves (a reload closes it after them)
        self.metrics = metrics if metrics is not None else Metrics()
        self.providers = dict(providers)
        self.cooldowns = cooldowns if cooldowns is not None else MemoryCooldowns()
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
        self._responses_native = {
            n: isinstance(p, OpenAIResponsesNative)
            and n in settings.providers
            and settings.providers[n].responses_api == "native"
            for n, p in self.providers.items()
        }
        # Providers held to structured output by a tool or in words: a body
        # asking for it goes to them through the IR, never passed through.
        self._structured_converted = frozenset(
            n for n, p in settings.providers.items() if p.structured_output != "native"
        )
        server = settings.server
        self._max_tokens_limit = server.max_tokens_limit
        self._max_retries = server.max_retries
        self._backoff = server.retry_backoff
        self._first_byte_timeout = server.first_byte_timeout
        self._ping_interval = server.ping_interval
        self._fallbacks = {
            _key(self.router.resolve(model)): tuple(self.router.resolve(a) for a in alternatives)
            for model, alternatives in settings.fallbacks.items()
        }
        self.chain = build_chain(settings.middleware)
        self.cache = (
            cache
            if cache is not None
            else ResponseCache.build(settings.cache, None, self.router.resolve)
        )
        self._cache_models = bool(settings.cache.models)
        self.catalog = ModelCatalog(
            {n: p for n, p in self.providers.items() if isinstance(p, ModelLister)},
            self._alias_entries(),
            settings.default_provider,
            self._resolve_model,
            ttl=server.models_cache_ttl,
            wait=server.models_wait,
            per_client=[n for n, p in settings.providers.items() if PASSTHROUGH_KEY in p.api_keys],
        )
        # Metric labels: configured and listed models only (a client's names are "other").
        self.metrics.model_label = ModelLabels(
            configured_models(settings, self.router.resolve), self.catalog.lists
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, metrics: Metrics | None = None, bus: Bus | None = None
    ) -> Gateway:
        """Build every provider (one pooled session each).  Call inside the loop;
        with ``bus``, key cooldowns are shared through it (start the bus after)."""
        metrics = metrics if metrics is not None else Metrics()
        cooldowns: MemoryCooldowns  # (RedisCooldowns is one too)
        if settings.server.redis_url:
            from vdm.providers.cooldowns import RedisCooldowns

            cooldowns = RedisCooldowns(settings.server.redis_url, settings.server.redis_namespace)
        else:
            cooldowns = MemoryCooldowns()
        cooldowns.on_bench = metrics.cooldown
        if bus is not None:
            cooldowns.follow(bus)
        providers = {
            n: build(p, settings.server, cooldowns, metrics.pool)
            for n, p in settings.providers.items()
        }
        gateway = cls(settings, providers, cooldowns, metrics)
        if settings.cache.backend == "redis":
            gateway.cache = ResponseCache.build(
                settings.cache,
                settings.server.redis_url,
                gateway.router.resolve,
                settings.server.redis_namespace,
            )
        return gateway

    async def start(self) -> None:
        await self.cooldowns.start()

    async def close(self) -> None:
        await self.catalog.close()
        for provider in self.providers.values():
            await provider.close()
        await self.cooldowns.close()
        await self.cache.close()

    def _route(self, model: str) -> tuple[Route, Provider]:
        route = self.router.resolve(model)
        return route, self.providers[route.provider]

    # ------------------------------------------------------------ response cache

    async def _answer(
        self,
        door: str,
        wire: Any,
        parsed: dict[str, Any],
        headers: Mapping[str, str],
        model: str,
        client_key: str | None,
        principal: Principal | None,
        call: Call | None,
        attempt: Attempt,
        *,
        stream: bool,
    ) -> Reply:
        """What every door does with its attempt: the cache first (when the
        request asks for it), then :meth:`_serve`, recorded for the cache; a
        stream is opened early with ``wire``'s pings if its first event is slow."""
        plan = self._cache_plan(door, parsed, headers, model, client_key, principal)
        if plan is not None and (hit := await self.cache.lookup(plan)) is not None:
            return hit
        work = self._serve(model, parsed, headers, client_key, call, attempt, principal)
        if plan is not None:
            work = self.cache.recorded(plan, work)
        if stream:
            return await self._opened(work, wire.PING, wire.encode_stream_error)
        return await work

    def _cache_plan(
        self,
        door: str,
        parsed: dict[str, Any],
        headers: Mapping[str, str],
        model: str,
        client_key: str | None,
        principal: Principal | None,
    ) -> Plan | None:
        """The cache entry a request reads and writes (None, after one check,
        when it asks for no caching and no model has a TTL)."""
        if not self._cache_models and "cache-control" not in headers:
            return None
        route = self.router.resolve(model)
        if principal is not None:
            _permitted(principal, model, (route,))  # a hit is no way around allowed models
        return self.cache.plan(
            door, parsed, headers, route, principal.project_id if principal else None, client_key
        )

    # ------------------------------------------------------------ attempts

    async def _serve(
        self,
        model: str,
        parsed: dict[str, Any],
        headers: Mapping[str, str],
        client_key: str | None,
        call: Call | None,
        attempt: Attempt,
        principal: Principal | None = None,
    ) -> Reply:
        """Run ``attempt`` on the model's route, retrying and falling back until
        one starts an answer; raise the last failure when none does.  A tenant's
        ``principal`` limits the routes (allowed models/providers: fallbacks it
        may not use are skipped) and lends its project's keys."""
        primary = self.router.resolve(model)
        candidates = (primary, *self._fallbacks.get(_key(primary), ()))
        if principal is not None:
            candidates = _permitted(principal, model, candidates)
        error: GatewayError | None = None
        for index, route in enumerate(candidates):
            provider = self.providers[route.provider]
            # A client's own key is meant for the provider it routed to, never another.
            key = client_key if route.provider == primary.provider else None
            ctx = ClientContext(
                client_key=key,
                headers=headers,
                upstream_key=principal.upstream_keys.get(route.provider) if principal else None,
            )
            for retry in range(self._max_retries + 1):
                outcome = Outcome(provider=route.provider, model=route.model)
                if call is not None:  # every attempt is seen (a retry or fallback is a new one)
                    self.chain.start(call, model, route, provider, parsed, outcome)
                try:
                    reply = await attempt(route, provider, ctx, outcome)
                except AuthenticationFailed as exc:
                    if index == 0:
                        raise
                    error = exc  # a !PASSTHRU-only fallback: no key of the client's to give it
                    break
                except GatewayError as exc:
                    if not (exc.retryable or exc.may_fall_over):
                        raise
                    error = exc
                    if exc.retryable and retry < self._max_retries:
                        delay = random.uniform(0, min(self._backoff * 2**retry, _MAX_BACKOFF))
                        log.warning(
                            "%s; retry %d of %d in %.2f s",
                            exc.message,
                            retry + 1,
                            self._max_retries,
                            delay,
                        )
                        self.metrics.retry(route.provider)
                        await asyncio.sleep(delay)
                        continue
                    break
                reply.headers["x-vdm-provider"] = route.provider
                reply.headers["x-vdm-model"] = route.model
                if index:
                    log.warning(
                        "served by fallback %s:%s after: %s",
                        route.provider,
                        route.model,
                        error.message if error else "",
                    )
                return reply
            if index + 1 < len(candidates):
                nxt = candidates[index + 1]
                log.warning(
                    "%s; falling back to %s:%s",
                    error.message if error else "",
                    nxt.provider,
                    nxt.model,
                )
                self.metrics.failover(route.provider, nxt.provider)
        assert error is not None
        raise error

    def _structured(self, provider: str, parsed: dict[str, Any]) -> bool:
        """Whether a body must be converted for ``provider`` to keep its structured output."""
        return provider in self._structured_converted and structured.requested(parsed)

    def _first_byte(self, provider: str, outcome: Outcome) -> _FirstByte:
        """Bound the wait for an attempt's first event (FIRST_BYTE_TIMEOUT); note when it came."""
        return _FirstByte(self._first_byte_timeout, provider, outcome)

    async def _convert(
        self,
        request: ir.ChatRequest,
        route: Route,
        provider: Provider,
        ctx: ClientContext,
        outcome: Outcome,
        call: Call | None,
        encode_event: Callable[[ir.Event], bytes],
        encode_error: Callable[[GatewayError], bytes],
        encode_response: Callable[[ir.ChatResponse], bytes],
    ) -> Reply:
        """One attempt through the IR: wait for the first event, then render
        the events as SSE or (non-streaming) their fold as one JSON body."""
        first, events = await self._events(request, route, provider, ctx, outcome, call)
        if request.stream:
            stream = _render_stream(first, events, outcome, encode_event, encode_error)
            return Reply(200, dict(_SSE_HEADERS), stream=stream, outcome=outcome)
        response = await _fold(first, events, outcome)
        return Reply(200, {"content-type": _JSON}, body=encode_response(response), outcome=outcome)

    async def _events(
        self,
        request: ir.ChatRequest,
        route: Route,
        provider: Provider,
        ctx: ClientContext,
        outcome: Outcome,
        call: Call | None,
    ) -> tuple[ir.Event, AsyncIterator[ir.Event]]:
        """The provider's IR events, its first one in hand (within
        FIRST_BYTE_TIMEOUT), with the middleware's request and event hooks."""
        if call is not None:
            request = await self.chain.request(call, request)
        async with self._first_byte(route.provider, outcome):
            first, events = await _first_event(provider, request, route, ctx)
        if call is not None:
            first, events = await self.chain.events(call, first, events)
        return first, events

    # ------------------------------------------------------------ IR in, IR out

    async def complete(
        self,
        request: ir.ChatRequest,
        headers: Mapping[str, str] | None = None,
        principal: Principal | None = None,
    ) -> Completion:
        """Serve an IR request with the routing, aliases, retries, fallbacks and
        middleware of every other door; return once the first event is in (so a
        refusal raises here, as the error tree's ``GatewayError``).  A tenant's
        ``principal`` narrows the routes and lends its keys, as on the HTTP doors."""
        headers = headers or {}
        call = Call(current_request_id.get(), "grpc", headers) if self.chain else None
        attempts = 0
        shape = {"stream": request.stream, "messages": request.messages, "tools": request.tools}

        async def attempt(
            route: Route, provider: Provider, ctx: ClientContext, outcome: Outcome
        ) -> Reply:
            nonlocal attempts
            attempts += 1
            first, events = await self._events(request, route, provider, ctx, outcome, call)
            # The Reply carries IR events rather than bytes here, so the chain's
            # end-of-stream hook (on_response) sees this door's calls too.
            return Reply(
                200,
                {},
                stream=_observed(first, events, outcome),  # type: ignore[arg-type]
                outcome=outcome,
            )

        served = self._serve(request.model, shape, headers, None, call, attempt, principal)
        reply = await (served if call is None else self.chain.run(call, served))
        assert reply.stream is not None and reply.outcome is not None
        return Completion(reply.outcome, reply.stream, attempts)  # type: ignore[arg-type]

    # ------------------------------------------------------------ /v1/messages

    async def messages(
        self,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        principal: Principal | None = None,
    ) -> Reply:
        if self.chain:
            call = Call(current_request_id.get(), "anthropic", headers)
            return await self.chain.run(
                call, self._messages(body, headers, client_key, call, principal)
            )
        return await self._messages(body, headers, client_key, None, principal)

    async def _messages(
        self,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        call: Call | None,
        principal: Principal | None = None,
    ) -> Reply:
        parsed = fields.decode_json_object(body)
        model = anthropic.validate_request_fields(parsed)
        decoded: list[ir.ChatRequest] = []  # decoded once, by the first conversion attempt

        async def attempt(
            route: Route, provider: Provider, ctx: ClientContext, outcome: Outcome
        ) -> Reply:
            if self._native[route.provider] and not self._structured(route.provider, parsed):
                return await self._passthrough(
                    provider,  # type: ignore[arg-type]  # native: an AnthropicNative
                    parsed,
                    body,
                    model,
                    route,
                    ctx,
                    outcome,
                )
            if not decoded:
                decoded.append(anthropic.decode_request(parsed))
            return await self._convert(
                decoded[0],
                route,
                provider,
                ctx,
                outcome,
                call,
                anthropic.encode_event,
                anthropic.encode_stream_error,
                anthropic.encode_response,
            )

        return await self._answer(
            "anthropic",
            anthropic,
            parsed,
            headers,
            model,
            client_key,
            principal,
            call,
            attempt,
            stream=parsed.get("stream") is True,
        )

    # ------------------------------------------------------------ /v1/chat/completions

    async def chat_completions(
        self,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        principal: Principal | None = None,
    ) -> Reply:
        if self.chain:
            call = Call(current_request_id.get(), "openai", headers)
            return await self.chain.run(
                call, self._chat_completions(body, headers, client_key, call, principal)
            )
        return await self._chat_completions(body, headers, client_key, None, principal)

    async def _chat_completions(
        self,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        call: Call | None,
        principal: Principal | None = None,
    ) -> Reply:
        parsed = fields.decode_json_object(body)
        model = openai_ingress.validate_request_fields(parsed)
        decoded: list[tuple[ir.ChatRequest, openai_ingress.Options]] = []

        async def attempt(
            route: Route, provider: Provider, ctx: ClientContext, outcome: Outcome
        ) -> Reply:
            if self._openai_native[route.provider] and not self._structured(route.provider, parsed):
                return await self._relay(
                    route,
                    outcome,
                    model,
                    parsed.get("stream") is True,
                    _OPENAI_RELAY,
                    lambda: provider.forward_chat(  # type: ignore[attr-defined]
                        body, parsed, route.model, ctx
                    ),
                )
            if not decoded:
                decoded.append(openai_ingress.decode_request(parsed))
            request, options = decoded[0]
            return await self._convert(
                request,
                route,
                provider,
                ctx,
                outcome,
                call,
                openai_ingress.ChunkEncoder(model, options).encode,
                openai_ingress.encode_stream_error,
                lambda response: openai_ingress.encode_response(response, model),
            )

        return await self._answer(
            "openai",
            openai_ingress,
            parsed,
            headers,
            model,
            client_key,
            principal,
            call,
            attempt,
            stream=parsed.get("stream") is True,
        )

    # ------------------------------------------------------------ /v1/responses

    async def responses(
        self,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        principal: Principal | None = None,
    ) -> Reply:
        if self.chain:
            call = Call(current_request_id.get(), "responses", headers)
            return await self.chain.run(
                call, self._responses(body, headers, client_key, call, principal)
            )
        return await self._responses(body, headers, client_key, None, principal)

    async def _responses(
        self,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        call: Call | None,
        principal: Principal | None = None,
    ) -> Reply:
        parsed = fields.decode_json_object(body)
        model = responses.validate_request_fields(parsed)
        stream = parsed.get("stream") is True
        decoded: list[tuple[ir.ChatRequest, responses.Options]] = []

        async def attempt(
            route: Route, provider: Provider, ctx: ClientContext, outcome: Outcome
        ) -> Reply:
            if self._responses_native[route.provider] and not self._structured(
                route.provider, parsed
            ):
                return await self._relay(
                    route,
                    outcome,
                    model,
                    stream,
                    _RESPONSES_RELAY,
                    lambda: provider.forward_responses(  # type: ignore[attr-defined]
                        body, parsed, route.model, ctx
                    ),
                )
            if not decoded:
                decoded.append(responses.decode_request(parsed))
                dropped = decoded[0][1].dropped
                if dropped:
                    log.warning(
                        "/v1/responses to %s: dropped what it has no equivalent for: %s",
                        route.provider,
                        ", ".join(dropped),
                    )
            request, options = decoded[0]
            encoder = ResponsesEncoder(options)  # one per attempt: a fresh stream
            return await self._convert(
                request,
                route,
                provider,
                ctx,
                outcome,
                call,
                encoder.encode,
                encoder.encode_error,
                lambda response: responses.encode_response(response, options),
            )

        return await self._answer(
            "responses",
            responses,
            parsed,
            headers,
            model,
            client_key,
            principal,
            call,
            attempt,
            stream=stream,
        )

    async def _opened(
        self, work: Awaitable[Reply], ping: bytes, encode_error: Callable[[GatewayError], bytes]
    ) -> Reply:
        """A streamed request's reply, once its first event is in — so a
        failure until then is still an HTTP status.  If that takes longer than
        ``PING_INTERVAL`` (a slow first token), the stream is opened with ping
        frames, which every client skips, and sent pings every interval while
        the attempts go on; a failure then ends the stream with its error frame."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait((task,), timeout=self._ping_interval)
        except BaseException:
            task.cancel()
            raise
        if task.done():
            return task.result()
        early = Reply(200, dict(_SSE_HEADERS))
        early.stream = _ping_until(task, early, ping, self._ping_interval, encode_error)
        return early

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
        model: str,
        route: Route,
        ctx: ClientContext,
        outcome: Outcome,
    ) -> Reply:
        stream = parsed.get("stream") is True
        upstream_body = self._upstream_body(parsed, body, route.model)
        return await self._relay(
            route,
            outcome,
            model,
            stream,
            _ANTHROPIC_RELAY,
            lambda: provider.forward_messages(upstream_body, route.model, ctx, stream=stream),
        )

    async def _relay(
        self,
        route: Route,
        outcome: Outcome,
        model: str,
        stream: bool,
        rules: _RelayRules,
        forward: Callable[[], Awaitable[RawResponse]],
    ) -> Reply:
        """One passthrough attempt: the answer relayed as bytes while a tap
        reads usage, naming ``model`` (the client's) where the upstream named
        its own.  A stream is primed (its first chunk is in before the reply,
        so a failure until then may still be retried); a whole answer is read
        and must be JSON (invalid UTF-8 inside it is relayed as sent)."""
        async with self._first_byte(route.provider, outcome):
            raw = await forward()
            if stream and is_event_stream(raw.headers):
                first = await _first_chunk(raw.body)
                return Reply(
                    raw.status,
                    raw.headers,
                    outcome=outcome,
                    stream=_tap_stream(
                        first,
                        raw.body,
                        outcome,
                        rules.tap(),
                        rules.encode_stream_error,
                        StreamRenamer(model, every=rules.model_in_every_chunk),
                    ),
                )
        data = b"".join([chunk async for chunk in raw.body])
        try:
            answer = rules.answer.decode(data)
            outcome.usage, outcome.stop_reason = rules.usage(answer)
            upstream_model = answer.model
        except msgspec.ValidationError:
            upstream_model = None  # JSON of another shape: relayed as sent, but for its model
        except (msgspec.DecodeError, UnicodeDecodeError):
            if not _is_utf8(data):
                return Reply(raw.status, raw.headers, body=data, outcome=outcome)  # as sent
            raise UpstreamProtocolError(
                f"provider '{route.provider}' sent an answer that is not JSON: {data[:200]!r}",
                provider=route.provider,
            ) from None
        data = rename_answer(data, model, upstream_model)
        return Reply(raw.status, raw.headers, body=data, outcome=outcome)

    # ------------------------------------------------------------ count_tokens

    async def count_tokens(
        self,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        principal: Principal | None = None,
    ) -> Reply:
        parsed = fields.decode_json_object(body)
        model = anthropic.validate_count_tokens_fields(parsed)
        route, provider = self._route(model)
        if principal is not None:
            _permitted(principal, model, (route,))
        reply_headers = {
            "content-type": _JSON,
            "x-vdm-provider": route.provider,
            "x-vdm-model": route.model,
        }
        if self._native[route.provider]:
            ctx = ClientContext(
                client_key=client_key,
                headers=headers,
                upstream_key=principal.upstream_keys.get(route.provider) if principal else None,
            )
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


async def _ping_until(
    task: asyncio.Future[Reply],
    early: Reply,
    ping: bytes,
    interval: float,
    encode_error: Callable[[GatewayError], bytes],
) -> AsyncIterator[bytes]:
    """The body of an early-opened stream: pings until ``task`` has a reply,
    then that reply's stream (or its failure as the error frame)."""
    reply: Reply | None = None
    try:
        yield ping
        while not task.done():
            await asyncio.wait((task,), timeout=interval)
            if not task.done():
                yield ping
        try:
            reply = task.result()
        except GatewayError as exc:
            log.warning("stream ended before its first event: %s", exc.message)
            yield encode_error(exc)
            return
        early.outcome = reply.outcome
        if reply.stream is None:
            yield reply.body  # an upstream that answered a stream request with JSON
            return
        async for chunk in reply.stream:
            yield chunk
    finally:
        if not task.done():
            task.cancel()
        elif not task.cancelled() and task.exception() is None:
            reply = task.result()
            if reply.stream is not None:
                await reply.stream.aclose()  # type: ignore[attr-defined]


def _permitted(principal: Principal, model: str, routes: tuple[Route, ...]) -> tuple[Route, ...]:
    """The routes a tenant's token may use; 403 when it may not use the first."""
    principal.check(routes[0].provider, model, routes[0].model)
    return tuple(r for r in routes if principal.allows(r.provider, model, r.model))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _key(route: Route) -> tuple[str, str]:
    return route.provider, route.model


async def _first_chunk(body: AsyncIterator[bytes]) -> bytes:
    """Wait for the first chunk of ``body`` (so a failure before it can still be
    retried); ``b""`` when the body is empty."""
    try:
        return await anext(body)
    except StopAsyncIteration:
        return b""


class _FirstByte:
    """:meth:`Gateway._first_byte`: a timeout (``asyncio.timeout``'s rules:
    the task is cancelled at the deadline, the cancellation turned into the
    error) that notes when the first byte came and names the provider that
    sent none.  Written out rather than wrapping ``asyncio.timeout`` in a
    generator: it runs around every attempt, and the two layers cost more
    than the one timer handle it needs."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_outcome", "_provider", "_seconds", "_task")

    def __init__(self, seconds: float | None, provider: str, outcome: Outcome) -> None:
        self._seconds = seconds
        self._provider = provider
        self._outcome = outcome
        self._expired = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        seconds = self._seconds
        self._handle = (
            None
            if seconds is None
            else asyncio.get_running_loop().call_later(seconds, self._expire)
        )

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if self._handle is not None:
            self._handle.cancel()
        timed_out = False
        if self._expired:  # (only our own cancellation becomes the timeout)
            timed_out = (
                self._task.uncancel() <= self._cancelling
                and kind is not None
                and issubclass(kind, asyncio.CancelledError)
            )
        if timed_out or (kind is not None and issubclass(kind, TimeoutError)):
            raise UpstreamTimeout(
                f"provider '{self._provider}' sent no first byte within "
                f"{self._seconds:g} s (FIRST_BYTE_TIMEOUT)",
                provider=self._provider,
            ) from None
        if kind is None:
            self._outcome.first_byte = time.perf_counter()


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


async def _fold(
    first: ir.Event, events: AsyncIterator[ir.Event], outcome: Outcome
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


async def _observed(
    first: ir.Event, events: AsyncIterator[ir.Event], outcome: Outcome
) -> AsyncIterator[ir.Event]:
    """``first`` then the rest of ``events``, noting usage and errors in ``outcome``."""
    try:
        yield first
        async for event in events:
            if type(event) is ir.MessageDelta:
                outcome.usage, outcome.stop_reason = event.usage, event.stop_reason
            yield event
    except GatewayError as exc:
        outcome.error = exc.message
        raise
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _render_stream(
    first: ir.Event,
    events: AsyncIterator[ir.Event],
    outcome: Outcome,
    encode: Callable[[ir.Event], bytes],
    encode_error: Callable[[GatewayError], bytes],
) -> AsyncIterator[bytes]:
    """The events rendered as the door's SSE frames.  Once the first content
    delta is rendered, the loop is let run once, so that the frames so far
    are written (the server gathers one loop turn's writes into one) before
    the rest of what the upstream's read held is converted: when one read
    brings the whole answer, the first text does not wait for the last."""
    # The final usage may lack what only the start reported (Anthropic's input tokens).
    start = first.usage if type(first) is ir.MessageStart else ir.Usage()
    waiting = True  # for the first content delta
    try:
        yield encode(first)
        async for event in events:
            kind = type(event)
            if kind is ir.MessageDelta:
                delta = cast("ir.MessageDelta", event)  # (type() is faster than isinstance)
                outcome.usage = ir.merge_usage(start, delta.usage)
                outcome.stop_reason = delta.stop_reason
            data = encode(event)
            if data:
                yield data
                if waiting and kind in _CONTENT_DELTAS:
                    waiting = False
                    await asyncio.sleep(0)
    except GatewayError as exc:
        outcome.error = exc.message
        log.warning("stream from %s ended with an error: %s", outcome.provider, exc.message)
        yield encode_error(exc)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


_CONTENT_DELTAS = frozenset((ir.TextDelta, ir.ToolInputDelta, ir.ThinkingDelta))


class _Tap(Protocol):
    usage: ir.Usage | None
    stop_reason: str | None

    def feed(self, frames: bytes) -> None: ...  # whole frames


async def _tap_stream(
    first: bytes,
    body: AsyncIterator[bytes],
    outcome: Outcome,
    tap: _Tap,
    encode_error: Callable[[GatewayError], bytes],
    rename: StreamRenamer | None,
) -> AsyncIterator[bytes]:
    """Relay ``first`` and then the rest of ``body`` while ``tap`` reads usage,
    in whole SSE frames: the start of a frame is held back until its end
    arrives, so an upstream that dies mid-frame ends the stream with a clean
    error frame, not one glued to half an event (which the client's SSE parser
    would choke on).  ``rename`` names the client's model in the frames until
    it is done (Anthropic: after the first event).  (The first chunk comes in
    as an argument rather than through a chaining generator: one generator
    layer less per chunk.)"""
    cutter = FrameCutter()
    chunk = first
    try:
        while True:
            if chunk:
                frames = cutter.cut(chunk)
                if frames:
                    if rename is not None:
                        frames = rename(frames)
                        if rename.done:
                            rename = None
                    tap.feed(frames)
                    yield frames
            try:
                chunk = await anext(body)
            except StopAsyncIteration:
                break
        if cutter.held:  # the upstream's last frame had no blank line: relayed as it is
            frames = cutter.held if rename is None else rename(cutter.held)
            tap.feed(frames)
            yield frames
    except GatewayError as exc:
        outcome.error = exc.message
        log.warning("stream from %s ended with an error: %s", outcome.provider, exc.message)
        yield encode_error(exc)  # the unfinished frame is dropped
    finally:
        outcome.usage, outcome.stop_reason = tap.usage, tap.stop_reason
        await body.aclose()  # type: ignore[attr-defined]
