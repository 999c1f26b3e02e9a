"""The ``VibectlLLMProxy`` service: LLMProxy calls -> the gateway's pipeline -> back.

Thin: :mod:`vdm.grpc.translate` builds the IR request and renders errors;
:meth:`vdm.pipeline.Gateway.complete` routes (aliases, fallbacks, retries,
key pools, middleware) and answers with IR events, streamed from the
provider for ``StreamExecute``.  Each call is held to the limits
(:mod:`vdm.grpc.limits`) and to ``request_timeout`` as a whole.

A stream is text chunks, then ``complete`` (the model that served it), then
``final_metrics``; or, at any point, one ``error`` chunk, which ends it.

A virtual token's call (:func:`~vdm.grpc.auth.current_principal`) runs with
its project's keys and limits.  Every call is accounted for as every door's
(:class:`vdm.pipeline.Account`: metrics and running totals under
``door="grpc"``, the token's usage before the answer's end goes out).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from vdm import __version__, doors, ir
from vdm.config import GrpcSettings
from vdm.errors import GatewayError, QuotaExceeded, UpstreamTimeout
from vdm.grpc import llm_proxy_pb2 as pb
from vdm.grpc import llm_proxy_pb2_grpc as pb_grpc
from vdm.grpc import translate
from vdm.grpc.auth import current_principal, current_subject
from vdm.grpc.limits import Limiter, LimitExceeded
from vdm.logs import client_request_id
from vdm.logs import request_id as current_request_id
from vdm.pipeline import Completion, Gateway, new_request_id
from vdm.pipeline.accounting import failed
from vdm.protocols.fields import too_deep

log = logging.getLogger("vdm.grpc")

SERVER_NAME = "vdm-llm-proxy"


@dataclass(slots=True)
class _Stream:
    """What one streamed answer has shown so far."""

    usage: ir.Usage
    answer_block: int | None = None  # index of the answer tool's block (schema mode)
    held_text: list[str] | None = None  # schema mode: text kept back unless no tool comes


class LLMProxyServicer(pb_grpc.VibectlLLMProxyServicer):
    def __init__(self, gateway: Gateway, settings: GrpcSettings, limiter: Limiter) -> None:
        self._gateway = gateway
        self._settings = settings
        self._limiter = limiter
        self._timeout = settings.request_timeout
        self.use(gateway)

    def use(self, gateway: Gateway) -> None:
        """The gateway new calls are served with (a call in flight keeps its own)."""
        self._gateway = gateway
        self._aliases = _alias_targets(gateway)
        self._default_model: str | None = self._settings.default_model or _known_default(gateway)

    # ------------------------------------------------------------ Execute

    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecuteResponse:
        request_id = client_request_id(request.request_id) or new_request_id()
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        gateway = self._gateway
        try:
            principal = current_principal()
            chat = await self._chat_request(request, stream=False)
            await self._limiter.check_shared(current_subject())
            with (
                gateway.account(doors.GRPC, principal, _traced(gateway, context)) as account,
                self._limiter.admit(current_subject()),
                gateway.leases,
            ):
                async with asyncio.timeout(self._timeout):
                    completion = await gateway.complete(chat, principal=principal)
                    before_end = account.answered(completion)
                    response = await _fold(completion.events)
                answered = time.perf_counter()
                if before_end is not None:
                    await before_end()
            await account.ended(200, answered)
            text = translate.answer_text(response, structured=bool(chat.tools))
            return pb.ExecuteResponse(
                request_id=request_id,
                success=pb.ExecuteSuccess(
                    response_text=text,
                    actual_model_used=_served(completion),
                    metrics=translate.metrics(
                        response.usage, started, completion.attempts, _cost(completion)
                    ),
                ),
            )
        except Exception as exc:
            return pb.ExecuteResponse(request_id=request_id, error=self._failed(exc, started))
        finally:
            current_request_id.reset(token)

    # ------------------------------------------------------------ StreamExecute

    async def StreamExecute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamChunk]:
        request_id = client_request_id(request.request_id) or new_request_id()
        current_request_id.set(request_id)  # this call's own task
        started = time.perf_counter()
        gateway = self._gateway
        completion: Completion | None = None
        try:
            principal = current_principal()
            chat = await self._chat_request(request, stream=True)
            state = _Stream(ir.Usage(), held_text=[] if chat.tools else None)
            await self._limiter.check_shared(current_subject())
            with (
                gateway.account(doors.GRPC, principal, _traced(gateway, context)) as account,
                self._limiter.admit(current_subject()),
                gateway.leases,
            ):
                # The deadline bounds our waits for the provider, never a yield:
                # a timeout must not land inside gRPC's own write of a chunk.
                deadline = asyncio.get_running_loop().time() + self._timeout
                async with asyncio.timeout_at(deadline):
                    completion = await gateway.complete(chat, principal=principal)
                before_end = account.answered(completion)
                texts = _texts(completion.events, state)
                try:
                    while True:
                        async with asyncio.timeout_at(deadline):
                            text = await anext(texts, None)
                        if text is None:
                            break
                        yield pb.StreamChunk(request_id=request_id, text_chunk=text)
                finally:
                    await texts.aclose()  # type: ignore[attr-defined]
                    answered = time.perf_counter()
                    if before_end is not None:
                        await before_end()  # what was used, before the stream's end
                    # (a stream that broke off counts as an HTTP stream's does: 200, an error)
                    await account.ended(200, answered)
        except Exception as exc:
            error = self._failed(exc, started, counted=completion is not None)
            yield pb.StreamChunk(request_id=request_id, error=error)
            return
        yield pb.StreamChunk(
            request_id=request_id, complete=pb.StreamComplete(actual_model_used=_served(completion))
        )
        yield pb.StreamChunk(
            request_id=request_id,
            final_metrics=translate.metrics(
                state.usage, started, completion.attempts, _cost(completion)
            ),
        )

    # ------------------------------------------------------------ GetServerInfo

    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerInfoResponse:
        try:
            current_principal()
        except GatewayError as exc:  # a spent quota: no ExecuteError to carry it here
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message)
        limits = self._limiter.effective(current_subject())
        info = pb.GetServerInfoResponse(
            server_name=SERVER_NAME,
            server_version=__version__,
            default_model=await self.default_model() or "",
            model_aliases={alias: f"{p}:{m}" for alias, (p, m) in self._aliases.items()},
            limits=pb.ServerLimits(
                max_requests_per_minute=limits.requests_per_minute,
                max_concurrent_requests=limits.concurrent_requests,
                max_input_length=self._settings.max_input_length,
                request_timeout_seconds=max(1, round(self._timeout)),
            ),
        )
        resolve = self._gateway.router.resolve
        for entry in await self._gateway.models(None):
            route = resolve(entry.id)
            target = (route.provider, route.model)
            info.available_models.append(
                pb.ModelInfo(
                    model_id=entry.id,
                    display_name=entry.display_name,
                    provider=entry.owned_by,
                    supports_streaming=True,
                    aliases=[a for a, t in self._aliases.items() if t == target and a != entry.id],
                )
            )
        return info

    # ------------------------------------------------------------ helpers

    async def default_model(self) -> str | None:
        """The model of a request without ``model_name``: ``GRPC_DEFAULT_MODEL``,
        else the default provider's (:func:`_known_default`), else the first
        model it lists (looked up once it is needed, until one is found)."""
        if self._default_model is None:
            provider = self._gateway.router.default_provider
            for entry in await self._gateway.models(None):
                if entry.owned_by == provider:
                    model = entry.id.removeprefix(f"{provider}:")
                    self._default_model = f"{provider}:{model}"
                    break
        return self._default_model

    async def _chat_request(self, request: pb.ExecuteRequest, *, stream: bool) -> ir.ChatRequest:
        named = request.HasField("model_name") and request.model_name.strip()
        return translate.to_chat_request(
            request,
            default_model=None if named else await self.default_model(),
            max_input_length=self._settings.max_input_length,
            stream=stream,
        )

    def _failed(self, exc: Exception, started: float, *, counted: bool = False) -> pb.ExecuteError:
        """A call that ended in an error: counted as every door's are
        (:func:`vdm.pipeline.accounting.failed`; not again when ``counted``),
        rendered as LLMProxy's error."""
        failure = self._as_gateway_error(exc)
        if not counted:
            failed(self._gateway.metrics, doors.GRPC.name, failure, started)
        if isinstance(exc, LimitExceeded):
            log.info("LLMProxy call refused: %s", exc.message)
            return pb.ExecuteError(
                error_code="RATE_LIMITED",
                error_message=exc.message,
                error_details=f'{{"retry_after_seconds": {max(1, round(exc.retry_after))}}}',
            )
        if isinstance(exc, GatewayError):
            log.info("LLMProxy call failed: %s", exc.message)
        if type(failure) is GatewayError and not isinstance(exc, GatewayError):
            return pb.ExecuteError(error_code="INTERNAL_ERROR", error_message=failure.message)
        return translate.to_error(failure)

    def _as_gateway_error(self, exc: Exception) -> GatewayError:
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, LimitExceeded):
            return QuotaExceeded(exc.message, retry_after=exc.retry_after)
        if isinstance(exc, RecursionError):  # a request nested too deeply to convert
            return too_deep("the request")
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(
                f"no complete answer within {self._timeout:g} s (request_timeout_seconds)",
                provider="",
            )
        log.error("internal error in an LLMProxy call", exc_info=exc)
        return GatewayError(f"internal gateway error ({type(exc).__name__}); see the server log")


def _traced(gateway: Gateway, context: grpc.aio.ServicerContext) -> dict[str, str] | None:
    """The call's metadata (its ``traceparent``, its credential's hash) when
    the gateway traces; None, unread, when it does not."""
    if gateway.tracing is None:
        return None
    return {
        key.lower(): value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    }


def _served(completion: Completion) -> str:
    return f"{completion.outcome.provider}:{completion.outcome.model}"


async def _fold(events: AsyncIterator[ir.Event]) -> ir.ChatResponse:
    builder = ir.MessageBuilder()
    try:
        async for event in events:
            builder.feed(event)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return builder.build()


async def _texts(events: AsyncIterator[ir.Event], state: _Stream) -> AsyncIterator[str]:
    """The answer's text as the provider streams it (schema mode: the answer
    tool's argument JSON; its text only if the model never calls the tool)."""
    try:
        async for event in events:
            match event:
                case ir.TextDelta(text=text) if text:
                    if state.held_text is None:
                        yield text
                    else:
                        state.held_text.append(text)
                case ir.ToolUseStart(index=index, name=name) if name == translate.ANSWER_TOOL:
                    state.answer_block = index
                case ir.ToolInputDelta(index=index, partial_json=text) if text:
                    if state.held_text is not None and index == state.answer_block:
                        yield text
                case ir.MessageStart(usage=usage):
                    state.usage = usage
                case ir.MessageDelta(usage=usage):
                    state.usage = ir.merge_usage(state.usage, usage)
                case _:
                    pass
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    if state.held_text and state.answer_block is None:
        yield "".join(state.held_text)


def _known_default(gateway: Gateway) -> str | None:
    """The default provider's own default model, where the configuration names
    one: what its ``sonnet`` alias maps to (the model Claude Code's default
    family reaches), or ``echo`` for the offline provider."""
    router = gateway.router
    provider = router.default_provider
    route = router.resolve(f"{provider}:sonnet")
    if route.alias is not None:
        return f"{provider}:{route.model}"
    return f"{provider}:echo" if provider == "echo" else None


def _alias_targets(gateway: Gateway) -> dict[str, tuple[str, str]]:
    """Every alias name a client can send -> the (provider, model) it serves:
    ``provider:alias`` for each active alias, and the bare name where routing a
    bare name reaches an alias (user aliases, the default provider's fallbacks)."""
    router = gateway.router
    out: dict[str, tuple[str, str]] = {}
    for provider, table in router.active_aliases().items():
        for alias in table:
            for name in (alias, f"{provider}:{alias}"):
                route = router.resolve(name)
                if route.alias is not None:
                    out.setdefault(name, (route.provider, route.model))
    return dict(sorted(out.items()))


def _cost(completion: Completion) -> float | None:
    """What the call cost, in USD, as its accounting priced it (None: no price)."""
    return completion.outcome.cost
