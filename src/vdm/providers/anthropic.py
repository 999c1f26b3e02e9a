"""Anthropic-native upstreams (Anthropic, Bedrock/Vertex-style Anthropic
endpoints, Z.ai, ...).

Anthropic clients get the passthrough fast path: the body goes up with only
the model and auth rewritten, and the answer comes back as bytes.  Clients of
other protocols go through the IR (:meth:`AnthropicProvider.events`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import msgspec

from vdm import ir
from vdm.config import ApiFormat, ProviderSettings
from vdm.errors import UpstreamProtocolError
from vdm.protocols import anthropic_upstream as wire
from vdm.protocols import structured
from vdm.protocols.model_list import decode_model_list
from vdm.protocols.sse import SSEParser
from vdm.providers.base import ClientContext, RawResponse, UpstreamModel
from vdm.providers.http import (
    Session,
    client_headers,
    decode_json,
    get_json,
    is_event_stream,
    open_response,
    raw_response,
    require_end,
    upstream_errors,
)
from vdm.providers.keys import KeyPool

_encode = msgspec.json.Encoder().encode

DEFAULT_VERSION = "2023-06-01"
# How a finished Anthropic stream ends: message_stop, or an error event.
_STREAM_ENDS = (
    b"event: message_stop",
    b"event:message_stop",
    b'"type":"message_stop"',
    b'"type": "message_stop"',
    b"event: error",
    b"event:error",
)


class AnthropicProvider:
    api_format: ApiFormat = "anthropic"

    def __init__(
        self,
        settings: ProviderSettings,
        session: Session,
        keys: KeyPool | None = None,
        *,
        max_tokens_limit: int | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self._session = session
        self._keys = keys or KeyPool(settings.name, settings.api_keys)
        self._messages_url = settings.base_url + "/v1/messages"
        self._count_url = settings.base_url + "/v1/messages/count_tokens"
        self._models_url = settings.base_url + "/v1/models?limit=1000"
        self._version = settings.api_version or DEFAULT_VERSION
        self._max_tokens_limit = max_tokens_limit

    def _request_headers(self, ctx: ClientContext) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": self._version}
        headers.update(client_headers(ctx.headers, "anthropic"))
        headers.update(self.settings.headers)
        return headers

    async def _post(
        self, url: str, body: bytes, ctx: ClientContext, model: str | None = None
    ) -> aiohttp.ClientResponse:
        """POST (for ``model``) to ``url``, moving through the key pool on refusals."""
        base = self._request_headers(ctx)

        def attempt(key: str) -> Any:
            return open_response(self._session, url, body, {**base, "x-api-key": key}, self.name)

        return await self._keys.call(ctx.client_key, attempt, ctx.upstream_key, model)

    async def forward_messages(
        self, body: bytes, model: str, ctx: ClientContext, *, stream: bool
    ) -> RawResponse:
        raw = raw_response(await self._post(self._messages_url, body, ctx, model), self.name)
        if stream and is_event_stream(raw.headers):
            raw.body = require_end(raw.body, self.name, _STREAM_ENDS)
        return raw

    def events(
        self, request: ir.ChatRequest, model: str, ctx: ClientContext
    ) -> AsyncIterator[ir.Event]:
        """IR in, Messages API on the wire, IR out (clients of other protocols)."""
        # Anthropic has no format for "any JSON object", and refuses a forced
        # tool call alongside thinking.
        request, output_tool = structured.plan(
            request,
            self.settings.structured_output,
            native_json_object=False,
            force_with_thinking=False,
        )
        events = self._events(request, model, ctx)
        return events if output_tool is None else structured.unwrap(events, output_tool)

    async def _events(
        self, request: ir.ChatRequest, model: str, ctx: ClientContext
    ) -> AsyncGenerator[ir.Event]:
        payload = wire.encode_request(request, model, max_tokens_limit=self._max_tokens_limit)
        response = await self._post(self._messages_url, _encode(payload), ctx, model)
        with upstream_errors(self.name):
            async with response:
                if request.stream and is_event_stream(response.headers):
                    async for event in self._stream(response, request.model):
                        yield event
                    return
                # (also an upstream that ignored ``stream`` and answered JSON)
                message = self._message(decode_json(await response.read(), self.name))
                for event in wire.response_events(message, model=request.model, provider=self.name):
                    yield event

    async def _stream(
        self, response: aiohttp.ClientResponse, client_model: str
    ) -> AsyncIterator[ir.Event]:
        decoder = wire.EventDecoder(self.name, model=client_model)
        parser = SSEParser()
        async for chunk in response.content.iter_any():
            for name, data in parser.feed(chunk):
                for event in decoder.feed(name, data):
                    yield event
        for name, data in parser.flush():
            for event in decoder.feed(name, data):
                yield event
        if not decoder.saw_stop:
            raise UpstreamProtocolError(
                f"provider '{self.name}' ended the stream before it finished", provider=self.name
            )

    def _message(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or not isinstance(value.get("content"), list):
            raise UpstreamProtocolError(
                f"provider '{self.name}' answered something that is not a message",
                provider=self.name,
            )
        return value

    async def count_tokens(self, body: bytes, ctx: ClientContext) -> bytes:
        response = await self._post(self._count_url, body, ctx)
        with upstream_errors(self.name):
            async with response:
                return await response.read()

    async def list_models(self, client_key: str | None) -> list[UpstreamModel]:
        headers = {
            "anthropic-version": self._version,
            **self.settings.headers,
            "x-api-key": self._keys.key_for(client_key),
        }
        payload = await get_json(self._session, self._models_url, headers, self.name)
        return [UpstreamModel(id_, name) for id_, name in decode_model_list(payload, self.name)]

    async def close(self) -> None:
        await self._session.close()
