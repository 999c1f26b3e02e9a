"""A native attempt: the door's body went up unchanged but for its model,
and the answer comes back as bytes while a tap reads its usage.

No decode or encode of every chunk: the stream is cut into whole SSE frames
(so a failure mid-frame ends it with a clean error frame), renamed until
the client's model is named, and fed to the door's usage tap.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import msgspec

from vdm.doors import Relay, WireDoor
from vdm.doors.door import UsageTap
from vdm.errors import GatewayError, UpstreamProtocolError
from vdm.outcome import Outcome, Reply
from vdm.pipeline.first_byte import FirstByte
from vdm.protocols.body import StreamRenamer, rename_answer
from vdm.protocols.sse import FrameCutter
from vdm.providers.base import RawResponse
from vdm.providers.http import is_event_stream
from vdm.routing import Route

log = logging.getLogger("vdm.pipeline")


async def relay(
    door: WireDoor,
    forwarded: Awaitable[RawResponse],
    route: Route,
    outcome: Outcome,
    model: str,
    stream: bool,
    first_byte_timeout: float | None,
    parsed: Mapping[str, Any] | None = None,
) -> Reply:
    """One native attempt: the answer relayed as bytes while a tap reads
    usage, naming ``model`` (the client's) where the upstream named its own.
    A stream is primed (its first chunk is in before the reply, so a failure
    until then may still be retried); a whole answer is read and must be
    JSON (invalid UTF-8 inside it is relayed as sent)."""
    rules = door.relay
    assert rules is not None  # (a door with native providers declares it)
    async with FirstByte(first_byte_timeout, route.provider, outcome):
        raw = await forwarded
        if stream and is_event_stream(raw.headers):
            first = await _first_chunk(raw.body)
            return Reply(
                raw.status,
                raw.headers,
                outcome=outcome,
                stream=tap_stream(
                    first,
                    raw.body,
                    outcome,
                    rules.tap(),
                    door.encode_stream_error,
                    StreamRenamer(model, every=rules.model_in_every_chunk),
                    rules.unasked(parsed) if rules.unasked and parsed is not None else None,
                ),
            )
    data = b"".join([chunk async for chunk in raw.body])
    return _whole(rules, raw, data, route, outcome, model)


def _whole(
    rules: Relay, raw: RawResponse, data: bytes, route: Route, outcome: Outcome, model: str
) -> Reply:
    """A whole answer: decoded once, into just the fields the outcome needs
    (msgspec skips the rest while checking the syntax), and renamed."""
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


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


async def _first_chunk(body: AsyncIterator[bytes]) -> bytes:
    """Wait for the first chunk of ``body`` (so a failure before it can still be
    retried); ``b""`` when the body is empty."""
    try:
        return await anext(body)
    except StopAsyncIteration:
        return b""


async def tap_stream(
    first: bytes,
    body: AsyncIterator[bytes],
    outcome: Outcome,
    tap: UsageTap,
    encode_error: Callable[[GatewayError], bytes],
    rename: StreamRenamer | None,
    hide: Callable[[bytes], bytes] | None = None,
) -> AsyncIterator[bytes]:
    """Relay ``first`` and then the rest of ``body`` while ``tap`` reads usage,
    in whole SSE frames: the start of a frame is held back until its end
    arrives, so an upstream that dies mid-frame ends the stream with a clean
    error frame, not one glued to half an event (which the client's SSE parser
    would choke on).  ``rename`` names the client's model in the frames until
    it is done (Anthropic: after the first event); ``hide`` takes out, once
    the tap has read them, the frames the client did not ask for.  (The first chunk comes in
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
                    if hide is None or (frames := hide(frames)):
                        yield frames
            try:
                chunk = await anext(body)
            except StopAsyncIteration:
                break
        if cutter.held:  # the upstream's last frame had no blank line: relayed as it is
            frames = cutter.held if rename is None else rename(cutter.held)
            tap.feed(frames)
            yield frames if hide is None else hide(frames)
    except GatewayError as exc:
        outcome.error = exc.message
        log.warning("stream from %s ended with an error: %s", outcome.provider, exc.message)
        yield encode_error(exc)  # the unfinished frame is dropped
    finally:
        outcome.usage, outcome.stop_reason = tap.usage, tap.stop_reason
        await body.aclose()  # type: ignore[attr-defined]
