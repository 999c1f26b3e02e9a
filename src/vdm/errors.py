"""The gateway's one error tree.

Every failure a client can see is one of these; each protocol renders it once
(``protocols.anthropic_door.encode_error``, ...).  Upstream failures are translated
at the provider boundary (``providers.http.upstream_errors``) with
``raise ... from exc``::

    GatewayError                      status, kind, message
    ├── InvalidRequest                400  bad body, bad model
    │   └── UnknownModel              400  a model string that routes nowhere
    ├── AuthenticationFailed          401  missing/wrong proxy key
    ├── PermissionDenied              403
    ├── NotFound                      404  unknown path
    ├── MethodNotAllowed              405  known path, other method
    ├── PayloadTooLarge               413
    ├── RateLimited                   429  every key of a provider is cooling down
    ├── QuotaExceeded                 429  a token's max_requests, RPM or TPM is used up
    │   └── BudgetExceeded            429  a token's or project's budget in USD is spent
    ├── ShuttingDown                  503  the gateway ended the request to stop
    ├── Unavailable                   503  a shared store the answer needs (Redis, the database) is away
    └── UpstreamError                 an upstream said no, or could not be reached
        ├── UpstreamStatusError       upstream HTTP status >= 400 (status mapped)
        ├── UpstreamTimeout           504  no answer in time
        ├── UpstreamUnreachable       502  connection refused / reset / DNS
        ├── UpstreamProtocolError     502  upstream answered something unparseable
        └── LoopDetected              508  the provider's base URL is this gateway

``kind`` is the protocol-neutral error class; each protocol maps it to its own
type names.  ``retryable`` says whether the same request may be tried again on
the same provider (before any byte reached the client): connection failures,
timeouts and 502/503/504/529.  ``may_fall_over`` says whether another
provider may be tried instead: everything except a request the client got
wrong (400/413/422), which would fail anywhere.
"""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal[
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "too_large",
    "rate_limit",
    "api_error",
    "overloaded",
    "timeout",
]


class GatewayError(Exception):
    status: int = 500
    kind: ErrorKind = "api_error"
    retryable: bool = False
    may_fall_over: bool = False
    code: str | None = None  # a machine-readable code the upstream gave (UpstreamStatusError)

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    status = 400
    kind = "invalid_request"


class UnknownModel(InvalidRequest):
    """The model string routes nowhere (a provider prefix with nothing after it).

    An HTTP client sees a plain 400; the gRPC door reports ``MODEL_NOT_FOUND``.
    """


class AuthenticationFailed(GatewayError):
    status = 401
    kind = "authentication"


class PermissionDenied(GatewayError):
    status = 403
    kind = "permission"


class NotFound(GatewayError):
    status = 404
    kind = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    kind = "invalid_request"


class PayloadTooLarge(GatewayError):
    status = 413
    kind = "too_large"


class RateLimited(GatewayError):
    """No key of the provider may be used now; ``retry_after`` seconds until one may."""

    status = 429
    kind = "rate_limit"
    may_fall_over = True

    def __init__(self, message: str, *, provider: str, retry_after: float) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, headers={"retry-after": str(seconds)})
        self.provider = provider
        self.retry_after = retry_after


class QuotaExceeded(GatewayError):
    """A virtual token's own limit (never another provider's business: no fallover)."""

    status = 429
    kind = "rate_limit"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        headers = {"retry-after": str(max(1, int(retry_after + 0.999)))} if retry_after else None
        super().__init__(message, headers=headers)


class BudgetExceeded(QuotaExceeded):
    """A token's or its project's budget in US dollars is spent (vdm.tenants.budgets)."""

    code = "insufficient_quota"  # (OpenAI's code for a spent balance)


class ShuttingDown(GatewayError):
    status = 503
    kind = "overloaded"

    def __init__(self) -> None:
        super().__init__(
            "the gateway is shutting down; this request was ended before it finished (retry it)"
        )


class Unavailable(GatewayError):
    """The answer lives in a shared store (Redis, the database) this instance cannot reach now."""

    status = 503
    kind = "overloaded"
    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"retry-after": "5"})


class UpstreamError(GatewayError):
    """Something went wrong talking to provider ``provider``."""

    status = 502
    kind: ErrorKind = "api_error"
    may_fall_over = True

    def __init__(
        self, message: str, *, provider: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, headers=headers)
        self.provider = provider


_STATUS_KIND: dict[int, ErrorKind] = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    408: "timeout",
    413: "too_large",
    422: "invalid_request",
    429: "rate_limit",
    529: "overloaded",
}

# Tried again on the same provider (with backoff).  429 is not here: the key
# pool benches the key and moves on instead (providers.keys).
RETRYABLE_STATUSES = frozenset({502, 503, 504, 529})
# The client's own mistake: another provider would refuse it too.
_NO_FALLOVER_STATUSES = frozenset({400, 413, 422})


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; ``body`` is what it said,
    ``code`` its machine-readable error code when it gave one (OpenAI's
    ``invalid_api_key``, ``model_not_found``, ...)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        upstream_status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, headers=headers)
        self.upstream_status = upstream_status
        self.body = body
        self.code = code
        self.kind = _STATUS_KIND.get(upstream_status, "api_error")
        # Client errors the upstream named keep their status; its own 5xx
        # failures keep theirs (clients retry on them); anything else (an
        # unexpected 3xx/4xx, a status outside HTTP) is a bad gateway.
        if upstream_status in _STATUS_KIND or 500 <= upstream_status <= 599:
            self.status = upstream_status
        elif upstream_status == 408:
            self.status = 504
        else:
            self.status = 502
        self.retryable = upstream_status in RETRYABLE_STATUSES
        self.may_fall_over = upstream_status not in _NO_FALLOVER_STATUSES


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout"
    retryable = True


class UpstreamUnreachable(UpstreamError):
    status = 502
    kind = "api_error"
    retryable = True


class UpstreamProtocolError(UpstreamError):
    status = 502
    kind = "api_error"


class LoopDetected(UpstreamError):
    """A provider's base URL leads back to this gateway (:mod:`vdm.loops`):
    508, the same on every try, so never retried nor failed over."""

    status = 508
    kind: ErrorKind = "api_error"
    may_fall_over = False


class StartRefused(Exception):
    """Not a client's error: a condition the operator must fix before this
    process may serve (a database schema newer than this vdm, a combination
    of settings whose guarantees cannot hold).  Its message is the whole
    story, logged as one line, without a traceback."""
