"""The JWT interceptor: every call needs ``authorization: Bearer <jwt>`` metadata.

A token that fails any check ends the call with ``UNAUTHENTICATED`` and a
message that says which check (``missing``, ``malformed``, ``expired``,
``bad signature``, ``revoked``; see :mod:`vdm.auth.jwt`) before the servicer
runs.  A verified token's subject reaches the servicer through
:func:`current_subject` (a ContextVar set inside the wrapped handler, so in
the very task that runs the call); per-subject limits key on it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from vdm.auth.jwt import TokenRejected, Verifier, bearer

log = logging.getLogger("vdm.grpc")

_subject: ContextVar[str | None] = ContextVar("vdm_grpc_subject", default=None)


def current_subject() -> str | None:
    """The verified ``sub`` of the call being served (None with auth off)."""
    return _subject.get()


def _metadata(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for name, value in details.invocation_metadata or ():  # type: ignore[attr-defined]
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class JWTInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, verifier: Verifier) -> None:
        self._verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED
            return handler
        try:
            token = bearer(_metadata(handler_call_details, "authorization"))
            subject = self._verifier.verify(token).subject
        except TokenRejected as exc:
            log.info("rejected %s: %s", handler_call_details.method, exc.message)  # type: ignore[attr-defined]
            return _refusal(handler, exc.message)
        return _as_subject(handler, subject)


def _as_subject(handler: grpc.RpcMethodHandler, subject: str) -> grpc.RpcMethodHandler:
    """``handler`` running with :func:`current_subject` = ``subject``."""
    serdes: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            _subject.set(subject)  # this call's own task: nothing else sees it
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **serdes)
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            _subject.set(subject)
            async for item in stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **serdes)
    raise TypeError("LLMProxy has only unary-unary and unary-stream methods")


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    serdes: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.unary_stream is not None:

        async def deny_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(deny_stream, **serdes)
    return grpc.unary_unary_rpc_method_handler(deny, **serdes)
