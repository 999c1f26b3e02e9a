"""OpenAI-compatible upstreams (OpenAI, OpenRouter, Groq, Gemini's OpenAI
endpoint, Ollama, vLLM, ...): IR in, chat.completions on the wire, IR out."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
    Session,
    decode_json,
    open_response,
    raw_response,
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
        keys: KeyPool | None = None,
        *,
        max_tokens_limit: int | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self._session = session
        self._keys = keys or KeyPool(settings.name, settings.api_keys)
        self._url = settings.base_url + "/chat/completions"
        self._headers = {"content-type": "application/json", **settings.headers}
        self._options = wire.RequestOptions(
            max_tokens_field=settings.max_tokens_field,
            supports_reasoning=settings.supports_reasoning,
            max_tokens_limit=max_tokens_limit,
        )

    async def _post(self, body: bytes, ctx: ClientContext) -> aiohttp.ClientResponse:
        """POST to chat/completions, moving through the key pool on refusals."""

        def attempt(key: str) -> Any:
            headers = dict(self._headers)
            headers["authorization"] = "Bearer " + key
            return open_response(self._session, self._url, body, headers, self.name)

        return await self._keys.call(ctx.client_key, attempt)

    async def forward_chat(self, body: bytes, ctx: ClientContext) -> RawResponse:
        """Passthrough: an OpenAI client's body (model already rewritten)."""
        return raw_response(await self._post(body, ctx), self.name)

    async def events(
        self, request: ir.ChatRequest, model: str, ctx: ClientContext
    ) -> AsyncIterator[ir.Event]:
        body = _encode(wire.encode_request(request, model, self._options))
        response = await self._post(body, ctx)
        with upstream_errors(self.name):
            async with response:
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
