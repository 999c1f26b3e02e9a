"""OpenAI-compatible upstreams (OpenAI, OpenRouter, Groq, Gemini's OpenAI
endpoint, Ollama, vLLM, ...): IR in, chat.completions on the wire, IR out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec

from vdm import ir
from vdm.config import ProviderSettings
from vdm.errors import UpstreamProtocolError
from vdm.protocols import openai as wire
from vdm.protocols.sse import SSEParser
from vdm.providers.base import ClientContext, RawResponse
from vdm.providers.http import (
    Body,
    Session,
    decode_json,
    post_raw,
    raise_for_status,
    request_raw,
    upstream_errors,
)
from vdm.providers.keys import KeyPool

_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder()


class OpenAIProvider:
    api_format = "openai"

    def __init__(
        self,
        settings: ProviderSettings,
        session: Session,
        *,
        max_tokens_limit: int | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self._session = session
        self._keys = KeyPool(settings.name, settings.api_keys)
        self._base = settings.base_url
        self._url = settings.base_url + "/chat/completions"
        self._headers = {"content-type": "application/json", **settings.headers}
        self._options = wire.RequestOptions(
            max_tokens_field=settings.max_tokens_field,
            supports_reasoning=settings.supports_reasoning,
            max_tokens_limit=max_tokens_limit,
        )

    def _request_headers(self, ctx: ClientContext) -> dict[str, str]:
        headers = dict(self._headers)
        headers["authorization"] = "Bearer " + self._keys.pick(ctx.client_key)
        return headers

    async def forward_chat(self, body: bytes, ctx: ClientContext) -> RawResponse:
        """Passthrough: an OpenAI client's body (model already rewritten)."""
        return await post_raw(self._session, self._url, body, self._request_headers(ctx),
                              self.name)

    async def forward(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: Body,
        ctx: ClientContext,
    ) -> RawResponse:
        """Passthrough of any other OpenAI endpoint: ``path`` is below ``/v1``
        (the base URL already ends in it), ``headers`` are the client's, already
        stripped of hop-by-hop ones and credentials; the provider's headers and
        key are added.  The answer, error statuses included, is relayed as is."""
        url = self._base + path + ("?" + query if query else "")
        upstream = {**headers, **self.settings.headers,
                    "authorization": "Bearer " + self._keys.pick(ctx.client_key)}
        return await request_raw(self._session, method, url, body, upstream, self.name)

    async def events(
        self, request: ir.ChatRequest, model: str, ctx: ClientContext
    ) -> AsyncIterator[ir.Event]:
        body = _encode(wire.encode_request(request, model, self._options))
        headers = self._request_headers(ctx)
        with upstream_errors(self.name):
            async with self._session.post(self._url, data=body, headers=headers) as response:
                await raise_for_status(response, self.name)
                if not request.stream:
                    payload = decode_json(await response.read(), self.name)
                    for event in wire.response_events(payload, request.model):
                        yield event
                    return
                async for event in self._stream(response, request.model):
                    yield event

    async def _stream(
        self, response: aiohttp.ClientResponse, client_model: str
    ) -> AsyncIterator[ir.Event]:
        decoder = wire.ChunkDecoder(client_model)
        parser = SSEParser()
        done = False
        async for chunk in response.content.iter_any():
            for _, data in parser.feed(chunk):
                if data == b"[DONE]":
                    done = True
                    break
                for event in decoder.feed(self._chunk(data)):
                    yield event
            if done:
                break
        if not done:
            for _, data in parser.flush():
                if data == b"[DONE]":
                    done = True
                else:
                    for event in decoder.feed(self._chunk(data)):
                        yield event
        if not done and not decoder.saw_finish:
            raise UpstreamProtocolError(
                f"provider '{self.name}' ended the stream before it finished", provider=self.name
            )
        for event in decoder.finish():
            yield event

    def _chunk(self, data: bytes) -> Any:
        try:
            value = _decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UpstreamProtocolError(
                f"provider '{self.name}' sent a stream chunk that is not JSON: {data[:200]!r}",
                provider=self.name,
            ) from exc
        if isinstance(value, dict) and "error" in value and "choices" not in value:
            error = value["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamProtocolError(
                f"provider '{self.name}' reported an error mid-stream: {message}",
                provider=self.name,
            )
        return value

    async def close(self) -> None:
        await self._session.close()
