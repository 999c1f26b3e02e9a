"""The converted path's events, and streams opened before their first event.

* :func:`first_event` starts the provider call and waits for its first IR
  event (so a refusal is still an HTTP status);
* :func:`render_stream` renders the events as the door's SSE frames,
  :func:`fold` folds them into one answer, :func:`observed` hands them on as
  events (IR doors), each noting usage and errors in the :class:`Outcome`;
* :func:`opened` opens a stream early with the door's ping frames when its
  first event is slow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from vdm import ir
from vdm.doors import Rendering
from vdm.errors import GatewayError, UpstreamProtocolError
from vdm.outcome import Outcome, Reply
from vdm.providers.base import ClientContext, Provider
from vdm.routing import Route

log = logging.getLogger("vdm.pipeline")

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
_CONTENT_DELTAS = frozenset((ir.TextDelta, ir.ToolInputDelta, ir.ThinkingDelta))


async def first_event(
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


async def fold(
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


async def observed(
    first: ir.Event, events: AsyncIterator[ir.Event], outcome: Outcome
) -> AsyncIterator[ir.Event]:
    """``first`` then the rest of ``events``, noting usage (from the start's on:
    what a call that ends early used) and errors in ``outcome``."""
    start = first.usage if type(first) is ir.MessageStart else ir.Usage()
    outcome.usage = start
    try:
        yield first
        async for event in events:
            if type(event) is ir.MessageDelta:
                delta = cast("ir.MessageDelta", event)
                outcome.usage = ir.merge_usage(start, delta.usage)
                outcome.stop_reason = delta.stop_reason
            yield event
    except GatewayError as exc:
        outcome.error = exc.message
        raise
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def render_stream(
    first: ir.Event,
    events: AsyncIterator[ir.Event],
    outcome: Outcome,
    rendering: Rendering,
) -> AsyncIterator[bytes]:
    """The events rendered as the door's SSE frames.  Once the first content
    delta is rendered, the loop is let run once, so that the frames so far
    are written (the server gathers one loop turn's writes into one) before
    the rest of what the upstream's read held is converted: when one read
    brings the whole answer, the first text does not wait for the last."""
    # The final usage may lack what only the start reported (Anthropic's input tokens).
    start = first.usage if type(first) is ir.MessageStart else ir.Usage()
    encode = rendering.event
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
        yield rendering.stream_error(exc)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def opened(
    work: Awaitable[Reply],
    ping: bytes,
    encode_error: Callable[[GatewayError], bytes],
    interval: float,
) -> Reply:
    """A streamed request's reply, once its first event is in — so a
    failure until then is still an HTTP status.  If that takes longer than
    ``interval`` (``PING_INTERVAL``: a slow first token), the stream is opened
    with ping frames, which every client skips, and sent pings every interval
    while the attempts go on; a failure then ends the stream with its error
    frame."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait((task,), timeout=interval)
    except BaseException:
        task.cancel()
        raise
    if task.done():
        return task.result()
    early = Reply(200, dict(SSE_HEADERS))
    early.stream = _ping_until(task, early, ping, interval, encode_error)
    return early


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
