"""The gateway: every door's requests through one :meth:`Gateway.serve`.

A wire door's request (:class:`vdm.doors.WireDoor`) is checked by the door
(``asks``), then answered by the attempts of :meth:`Gateway._serve` — the
response cache first, when the request asks for it.  Each attempt is either
**native** (the route's provider speaks the door's protocol: the body goes up
with only its model rewritten and the answer is relayed as bytes,
:mod:`vdm.pipeline.relay`) or **converted** (decoded once into the IR, the
provider's IR events rendered by the door, :mod:`vdm.pipeline.streams`).
An IR door (gRPC) hands in an IR request (:meth:`Gateway.complete`) and gets
the events back.

Until the first event, a failed attempt may be tried again: the provider's
key pool moves on from refused keys; connection failures, timeouts and
502/503/504/529 are retried with exponential backoff and full jitter up to
``MAX_RETRIES``; then the model's configured fallbacks are tried in order,
across wire formats if need be.  Every reply names who served it
(``x-vdm-provider``, ``x-vdm-model``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vdm import doors, ir
from vdm.cache import Plan, ResponseCache
from vdm.config import PASSTHROUGH_KEY, Settings
from vdm.doors import Decoded, Door, Upstream, WireDoor
from vdm.errors import AuthenticationFailed, GatewayError
from vdm.leases import Leases
from vdm.logs import request_id as current_request_id
from vdm.metrics import Metrics, ModelLabels, configured_models
from vdm.middleware import Call, build_chain
from vdm.models import ModelCatalog, ModelEntry
from vdm.outcome import Outcome, Reply
from vdm.pipeline.accounting import Account
from vdm.pipeline.first_byte import FirstByte
from vdm.pipeline.relay import relay
from vdm.pipeline.results import Completion
from vdm.pipeline.streams import SSE_HEADERS, first_event, fold, observed, opened, render_stream
from vdm.pipeline.tenancy import client_context, permitted
from vdm.pipeline.traced import TracedAccount, traced
from vdm.pricing import Prices
from vdm.protocols import anthropic_door, fields, structured
from vdm.protocols.body import rewrite
from vdm.providers import build
from vdm.providers.base import AnthropicNative, ClientContext, ModelLister, Provider
from vdm.providers.cooldowns import Cooldowns, MemoryCooldowns
from vdm.routing import Route, Router
from vdm.tracing import build as build_tracing

if TYPE_CHECKING:
    from vdm.events import Bus
    from vdm.tenants.registry import Principal, TokenRegistry
    from vdm.tracing.spans import Tracer

log = logging.getLogger("vdm.pipeline")

_JSON = "application/json"
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
_MAX_BACKOFF = 8.0

Attempt = Callable[[Route, Provider, ClientContext, Outcome], Awaitable[Reply]]


class Gateway:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        cooldowns: Cooldowns | None = None,
        metrics: Metrics | None = None,
        cache: ResponseCache | None = None,
        tenants: TokenRegistry | None = None,
        tracing: Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing  # OpenTelemetry traces (None: off, vdm.tracing.enabled)
        self.leases = Leases()  # the requests it serves (a reload closes it after them)
        self._warming: asyncio.Future[None] | None = None  # the price table's import
        self.metrics = metrics if metrics is not None else Metrics()
        self.tenants = tenants  # the control plane's tokens: their usage is counted
        self.providers = dict(providers)
        self.cooldowns = cooldowns if cooldowns is not None else MemoryCooldowns()
        self.router = Router(
            list(settings.providers),
            settings.default_provider,
            settings.aliases,
            settings.fallback_aliases,
        )
        # Per wire door, the providers that speak it themselves (its native rule).
        self._native = {door.name: self._speaking(door) for door in doors.WIRE}
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
        self.prices = Prices(
            {n: p.base_url for n, p in settings.providers.items()},
            {n: p.prices for n, p in settings.providers.items() if p.prices},
        )
        # Metric labels: configured and listed models only (a client's names are "other").
        self.metrics.model_label = ModelLabels(
            configured_models(settings, self.router.resolve), self.catalog.lists
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        metrics: Metrics | None = None,
        bus: Bus | None = None,
        tenants: TokenRegistry | None = None,
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
        tracer = build_tracing(settings.server.trace_content)
        gateway = cls(settings, providers, cooldowns, metrics, tenants=tenants, tracing=tracer)
        if settings.cache.backend == "redis":
            gateway.cache = ResponseCache.build(
                settings.cache,
                settings.server.redis_url,
                gateway.router.resolve,
                settings.server.redis_namespace,
            )
        return gateway

    async def start(self) -> None:
        # The price table's import (about 0.2 s) runs off the loop and is not
        # waited for: the gateway serves meanwhile (a priced request that comes
        # first waits for the import, once).
        self._warming = asyncio.ensure_future(asyncio.to_thread(self.prices.warm))
        await self.cooldowns.start()

    async def close(self) -> None:
        if self._warming is not None:
            with contextlib.suppress(Exception):
                await self._warming
        await self.catalog.close()
        for provider in self.providers.values():
            await provider.close()
        await self.cooldowns.close()
        await self.cache.close()
        if self.tracing is not None:
            await self.tracing.close()

    def account(
        self, door: Door, principal: Principal | None, headers: Mapping[str, str] | None = None
    ) -> Account:
        """The accounting of one request by ``door`` (:mod:`vdm.pipeline.accounting`);
        when tracing is on, its span too (``headers``: the client's, its traceparent)."""
        if (
            self.tracing is None
            or (trace := self.tracing.request(door.name, headers, principal)) is None
        ):
            return Account(self.metrics, self.tenants, door.name, principal, self.prices)
        return TracedAccount(self.metrics, self.tenants, door.name, principal, self.prices, trace)

    # ------------------------------------------------------------ wire doors

    def serve(
        self,
        door: WireDoor,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        principal: Principal | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Awaitable[Reply]:
        """Answer a wire door's request (``params``: its path parameters).
        (A plain function: one coroutine fewer between the server and the
        attempt, on every request.)"""
        if self.chain:
            call = Call(current_request_id.get(), door.name, headers)
            return self.chain.run(
                call, self._serve_door(door, body, headers, client_key, principal, params, call)
            )
        return self._serve_door(door, body, headers, client_key, principal, params, None)

    async def _serve_door(
        self,
        door: WireDoor,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        principal: Principal | None,
        params: Mapping[str, str] | None,
        call: Call | None,
    ) -> Reply:
        parsed = fields.decode_json_object(body)
        model, stream = door.asks(parsed, params if params is not None else _NO_PARAMS)
        native = self._native.get(door.name)
        if native is None:  # (a door outside the registry)
            native = self._native[door.name] = self._speaking(door)
        decoded: list[Decoded] = []  # decoded once, by the first conversion attempt

        async def attempt(
            route: Route, provider: Provider, ctx: ClientContext, outcome: Outcome
        ) -> Reply:
            if route.provider in native and not self._structured(route.provider, parsed):
                up = Upstream(body, parsed, route.model, ctx, stream, self._max_tokens_limit)
                forwarded = door.forward(provider, up)  # type: ignore[misc]  # (native: given)
                return await relay(
                    door, forwarded, route, outcome, model, stream, self._first_byte_timeout, parsed
                )
            if not decoded:
                decoded.append(self._decoded(door, parsed, route))
            request = decoded[0]
            rendering = door.render(request, model)
            first, events = await self._events(request.request, route, provider, ctx, outcome, call)
            if request.request.stream:
                stream_ = render_stream(first, events, outcome, rendering)
                return Reply(200, dict(SSE_HEADERS), stream=stream_, outcome=outcome)
            response = await fold(first, events, outcome)
            return Reply(
                200, {"content-type": _JSON}, body=rendering.response(response), outcome=outcome
            )

        plan = self._cache_plan(door, parsed, headers, model, client_key, principal)
        if plan is not None and (hit := await self.cache.lookup(plan)) is not None:
            return hit
        work = self._serve(model, parsed, headers, client_key, call, attempt, principal)
        if plan is not None:
            work = self.cache.recorded(plan, work)
        if stream:
            return await opened(work, door.ping, door.encode_stream_error, self._ping_interval)
        return await work

    def _speaking(self, door: WireDoor) -> frozenset[str]:
        """The providers that speak ``door``'s protocol themselves."""
        configured = self.settings.providers
        if door.native is None or door.forward is None or door.relay is None:
            return frozenset()
        return frozenset(
            n
            for n, p in self.providers.items()
            if n in configured and door.native(p, configured[n])
        )

    def _decoded(self, door: WireDoor, parsed: dict[str, Any], route: Route) -> Decoded:
        decoded = door.decode(parsed)
        if decoded.dropped:
            log.warning(
                "%s request to %s: dropped what it has no equivalent for: %s",
                door.name,
                route.provider,
                ", ".join(decoded.dropped),
            )
        return decoded

    def _cache_plan(
        self,
        door: WireDoor,
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
            permitted(principal, model, (route,))  # a hit is no way around allowed models
        return self.cache.plan(
            door.cache,
            parsed,
            headers,
            route,
            principal.project_id if principal else None,
            client_key,
        )

    # ------------------------------------------------------------ IR doors

    async def complete(
        self,
        request: ir.ChatRequest,
        headers: Mapping[str, str] | None = None,
        principal: Principal | None = None,
        door: Door = doors.GRPC,
    ) -> Completion:
        """Serve an IR request with the routing, aliases, retries, fallbacks and
        middleware of every other door; return once the first event is in (so a
        refusal raises here, as the error tree's ``GatewayError``).  A tenant's
        ``principal`` narrows the routes and lends its keys, as on the HTTP doors."""
        headers = headers or {}
        call = Call(current_request_id.get(), door.name, headers) if self.chain else None
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
                stream=observed(first, events, outcome),  # type: ignore[arg-type]
                outcome=outcome,
            )

        served = self._serve(request.model, shape, headers, None, call, attempt, principal)
        reply = await (served if call is None else self.chain.run(call, served))
        assert reply.stream is not None and reply.outcome is not None
        return Completion(reply.outcome, reply.stream, attempts)  # type: ignore[arg-type]

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
        if self.tracing is not None:
            attempt = traced(attempt, model, parsed)
        primary = self.router.resolve(model)
        candidates = (primary, *self._fallbacks.get(_key(primary), ()))
        if principal is not None:
            candidates = permitted(principal, model, candidates)
        error: GatewayError | None = None
        for index, route in enumerate(candidates):
            # A client's own key is meant for the provider it routed to, never another.
            key = client_key if route.provider == primary.provider else None
            ctx = client_context(key, headers, principal, route.provider)
            try:
                reply = await self._retried(model, route, ctx, parsed, call, attempt)
            except AuthenticationFailed as exc:
                if index == 0:
                    raise
                error = exc  # a !PASSTHRU-only fallback: no key of the client's to give it
            except _GaveUp as gave_up:
                error = gave_up.error
            else:
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
                log.warning("%s; falling back to %s:%s", error.message, nxt.provider, nxt.model)
                self.metrics.failover(route.provider, nxt.provider)
        assert error is not None
        raise error

    async def _retried(
        self,
        model: str,
        route: Route,
        ctx: ClientContext,
        parsed: dict[str, Any],
        call: Call | None,
        attempt: Attempt,
    ) -> Reply:
        """``attempt`` on one route, retried while its failure is retryable;
        :class:`_GaveUp` when the next route may be tried."""
        provider = self.providers[route.provider]
        for retry in range(self._max_retries + 1):
            outcome = Outcome(provider=route.provider, model=route.model)
            if call is not None:  # every attempt is seen (a retry or fallback is a new one)
                self.chain.start(call, model, route, provider, parsed, outcome)
            try:
                reply = await attempt(route, provider, ctx, outcome)
            except AuthenticationFailed:
                raise
            except GatewayError as exc:
                if not (exc.retryable or exc.may_fall_over):
                    raise
                if not (exc.retryable and retry < self._max_retries):
                    raise _GaveUp(exc) from exc
                delay = random.uniform(0, min(self._backoff * 2**retry, _MAX_BACKOFF))
                log.warning(
                    "%s; retry %d of %d in %.2f s", exc.message, retry + 1, self._max_retries, delay
                )
                self.metrics.retry(route.provider)
                await asyncio.sleep(delay)
                continue
            reply.headers["x-vdm-provider"] = route.provider
            reply.headers["x-vdm-model"] = route.model
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _structured(self, provider: str, parsed: dict[str, Any]) -> bool:
        """Whether a body must be converted for ``provider`` to keep its structured output."""
        return provider in self._structured_converted and structured.requested(parsed)

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
        async with FirstByte(self._first_byte_timeout, route.provider, outcome):
            first, events = await first_event(provider, request, route, ctx)
        if call is not None:
            first, events = await self.chain.events(call, first, events)
        return first, events

    # ------------------------------------------------------------ count_tokens

    async def count_tokens(
        self,
        body: bytes,
        headers: Mapping[str, str],
        client_key: str | None,
        principal: Principal | None = None,
    ) -> Reply:
        parsed = fields.decode_json_object(body)
        model = anthropic_door.validate_count_tokens_fields(parsed)
        route = self.router.resolve(model)
        provider = self.providers[route.provider]
        if principal is not None:
            permitted(principal, model, (route,))
        reply_headers = {
            "content-type": _JSON,
            "x-vdm-provider": route.provider,
            "x-vdm-model": route.model,
        }
        if isinstance(provider, AnthropicNative):
            ctx = client_context(client_key, headers, principal, route.provider)
            upstream_body = rewrite(body, parsed, {"model": route.model})
            data = await provider.count_tokens(upstream_body, ctx)
            return Reply(200, reply_headers, body=data)
        from vdm.tokens import count_request_tokens

        request = anthropic_door.decode_request(parsed, count_only=True)
        count = count_request_tokens(request)
        return Reply(200, reply_headers, body=anthropic_door.encode_count(count))

    # ------------------------------------------------------------ the passthrough

    def passthrough_context(
        self,
        client_key: str | None,
        headers: Mapping[str, str],
        principal: Principal | None,
        provider: str,
        requested: str | None,
        upstream: str | None,
    ) -> ClientContext:
        """What an OpenAI passthrough request (``/v1/*`` beyond the doors) may
        give ``provider``: a tenant's token held to the rule of every door
        (its allowed providers; its allowed models for a body that names one,
        ``requested``, resolved to ``upstream``), then its project's key."""
        if principal is not None:
            principal.check(provider, requested, upstream)
        return client_context(client_key, headers, principal, provider)

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


class _GaveUp(Exception):
    """A route's attempts ended with a failure the next route may be tried after."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def _key(route: Route) -> tuple[str, str]:
    return route.provider, route.model
