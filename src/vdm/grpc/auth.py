"""The JWT interceptor: every call needs ``authorization: Bearer <jwt>`` metadata.

A token that fails any check ends the call with ``UNAUTHENTICATED`` and a
message that says which check (``missing``, ``malformed``, ``expired``,
``bad signature``, ``revoked``; see :mod:`vdm.auth.jwt`) before the servicer
runs.  A verified token's subject reaches the servicer through
:func:`current_subject` (a ContextVar set inside the wrapped handler, so in
the very task that runs the call); per-subject limits key on it.

With the control plane on (``tenants``, the
:class:`~vdm.tenants.registry.TokenRegistry`), a virtual token (``sk-vdm-…``)
is admitted as on the HTTP doors: revoked/expired/unknown -> ``UNAUTHENTICATED``,
inactive project -> ``PERMISSION_DENIED``; its :class:`Principal` reaches the
servicer through :func:`current_principal` and its subject is the token id.
A spent quota or RPM/TPM window is no status: the servicer answers it as the
``RATE_LIMITED`` ExecuteError (:func:`current_principal` raises it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc

from vdm.auth.credentials import MAX_CREDENTIAL_LENGTH
from vdm.auth.jwt import TokenRejected, Verifier, bearer
from vdm.auth.proxy_key import check_length
from vdm.errors import AuthenticationFailed, GatewayError, PermissionDenied, QuotaExceeded
from vdm.logs import client_request_id
from vdm.pipeline import new_request_id
from vdm.tenants.secrets import TOKEN_PREFIX

if TYPE_CHECKING:
    from vdm.auth.credentials import Authenticator
    from vdm.tenants.registry import Principal

log = logging.getLogger("vdm.grpc")

_subject: ContextVar[str | None] = ContextVar("vdm_grpc_subject", default=None)
_principal: ContextVar[Principal | None] = ContextVar("vdm_grpc_principal", default=None)
_refused: ContextVar[QuotaExceeded | None] = ContextVar("vdm_grpc_refused", default=None)


def current_subject() -> str | None:
    """The verified ``sub`` of the call being served (None with auth off)."""
    return _subject.get()


def current_principal() -> Principal | None:
    """The tenant of the call being served (a virtual token's; None for a JWT);
    raises the :class:`QuotaExceeded` its admission ended with."""
    refused = _refused.get()
    if refused is not None:
        raise refused
    return _principal.get()


def _metadata(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for name, value in details.invocation_metadata or ():  # type: ignore[attr-defined]
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


# Told of each call the interceptor refuses (the metrics count it as every
# door's refusals are counted).
Refused = Callable[[GatewayError], None]


def _uncounted(exc: GatewayError) -> None:
    pass


class JWTInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        verifier: Verifier,
        tenants: Authenticator | None = None,
        max_credential_length: int = MAX_CREDENTIAL_LENGTH,
        refused: Refused = _uncounted,
    ) -> None:
        self._verifier = verifier
        self._tenants = tenants
        self._max_length = max_credential_length
        self._refused = refused

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
            if token is not None:
                check_length(token, self._max_length)
            if token is not None and self._tenants is not None and token.startswith(TOKEN_PREFIX):
                return _around(handler, _Admission(self._tenants, token, self._refused))
            subject = self._verifier.verify(token).subject
        except (TokenRejected, AuthenticationFailed) as exc:
            log.info("rejected %s: %s", handler_call_details.method, exc.message)  # type: ignore[attr-defined]
            return _refusal(handler, AuthenticationFailed(exc.message), self._refused)

        async def as_subject(request: Any, context: grpc.aio.ServicerContext) -> None:
            _subject.set(subject)

        return _around(handler, as_subject)


class _Admission:
    """Admit a virtual token inside the call's task (the registry counts it
    there and audits a refusal with the call's request id and peer)."""

    __slots__ = ("_refused", "_tenants", "_token")

    def __init__(self, tenants: Authenticator, token: str, refused: Refused) -> None:
        self._tenants = tenants
        self._token = token
        self._refused = refused

    async def __call__(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        request_id = ""
        if hasattr(request, "request_id"):
            if client_request_id(request.request_id) is None:
                # The id the servicer answers with, so the audit names the same one.
                request.request_id = new_request_id()
            request_id = request.request_id
        try:
            principal = await self._tenants.admit(
                self._token, request_id=request_id, client_ip=_peer_ip(context.peer())
            )
        except AuthenticationFailed as exc:
            log.info("rejected a virtual token: %s", exc.message)
            self._refused(exc)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        except PermissionDenied as exc:
            log.info("rejected a virtual token: %s", exc.message)
            self._refused(exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, exc.message)
        except QuotaExceeded as exc:
            _refused.set(exc)
            return
        _principal.set(principal)
        _subject.set(principal.token_id)


def _peer_ip(peer: str | None) -> str | None:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> the address."""
    kind, _, rest = (peer or "").partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or None
    return None


def _around(
    handler: grpc.RpcMethodHandler,
    enter: Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]],
) -> grpc.RpcMethodHandler:
    """``handler`` after ``enter(request, context)`` has set this call's
    ContextVars, in the call's own task (nothing else sees them)."""
    serdes: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await enter(request, context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **serdes)
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await enter(request, context)
            async for item in stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **serdes)
    raise TypeError("LLMProxy has only unary-unary and unary-stream methods")


def _refusal(
    handler: grpc.RpcMethodHandler, exc: AuthenticationFailed, refused: Refused
) -> grpc.RpcMethodHandler:
    serdes: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        refused(exc)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)

    if handler.unary_stream is not None:

        async def deny_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            refused(exc)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(deny_stream, **serdes)
    return grpc.unary_unary_rpc_method_handler(deny, **serdes)
