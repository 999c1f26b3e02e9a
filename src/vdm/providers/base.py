"""The small provider protocol.

Separate *who we call* (``ProviderSettings``: base URL, keys, headers — data)
from *how we speak* (the adapter classes: OpenAI-compatible, Anthropic-native,
echo — code).  Every provider can turn an IR request into IR events; optional
capabilities are separate protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from vdm import ir

if TYPE_CHECKING:
    from vdm.config import ApiFormat


@dataclass(frozen=True, slots=True)
class ClientContext:
    """What a provider may use of the incoming request besides its body."""

    client_key: str | None = None  # for !PASSTHRU providers only
    # A tenant project's own key for this provider: used instead of the pool.
    upstream_key: str | None = None
    headers: Mapping[str, str] | None = None  # incoming headers, lower-case names


class Provider(Protocol):
    name: str
    api_format: ApiFormat

    def events(
        self, request: ir.ChatRequest, model: str, ctx: ClientContext
    ) -> AsyncIterator[ir.Event]:
        """Answer ``request`` with upstream ``model``, as IR stream events.

        Raises (before the first event) an ``UpstreamError`` when the upstream
        refuses; the events of a non-streaming upstream call are the same as
        those of a streaming one.
        """
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class RawResponse:
    """An upstream answer relayed without decoding (passthrough)."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


@runtime_checkable
class AnthropicNative(Protocol):
    """Providers that speak the Anthropic Messages API themselves."""

    async def forward_messages(
        self, body: bytes, model: str, ctx: ClientContext, *, stream: bool
    ) -> RawResponse: ...

    async def count_tokens(self, body: bytes, ctx: ClientContext) -> bytes: ...


@runtime_checkable
class OpenAIPassthrough(Protocol):
    """Providers that serve the rest of the OpenAI API (embeddings, files, ...)."""

    async def forward(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes | AsyncIterator[bytes] | None,
        ctx: ClientContext,
    ) -> RawResponse: ...


@runtime_checkable
class OpenAIChatNative(Protocol):
    """Providers that speak OpenAI Chat Completions themselves."""

    async def forward_chat(
        self, body: bytes, parsed: dict[str, Any], model: str, ctx: ClientContext
    ) -> RawResponse:
        """Relay an OpenAI client's ``body`` (``parsed`` is its decoded form) for
        upstream ``model``; the provider rewrites the body's model as its
        endpoint needs (Azure's v1 API names the deployment there)."""
        ...


@runtime_checkable
class OpenAIResponsesNative(Protocol):
    """Providers that can speak the OpenAI Responses API themselves (used only
    when their ``{NAME}_RESPONSES_API`` is ``native``)."""

    async def forward_responses(
        self, body: bytes, parsed: dict[str, Any], model: str, ctx: ClientContext
    ) -> RawResponse: ...


@dataclass(frozen=True, slots=True)
class UpstreamModel:
    id: str
    display_name: str | None = None


@runtime_checkable
class ModelLister(Protocol):
    """Providers that can say which models they serve (``GET /v1/models``)."""

    async def list_models(self, client_key: str | None) -> list[UpstreamModel]:
        """The upstream's own list.  Raises ``AuthenticationFailed`` when only
        the client's key would do (``!PASSTHRU``) and there is none, and an
        ``UpstreamError`` when the upstream fails."""
        ...
