"""OpenAI-compatible upstreams (OpenAI, Azure OpenAI, OpenRouter, Groq,
Gemini's OpenAI endpoint, Ollama, vLLM, ...): IR in, chat.completions on the
wire, IR out.

One adapter for the whole family: what differs between vendors (URLs, the
auth header, the body's model name) is an :mod:`~vdm.providers.endpoints`
object, data rather than code.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec

from vdm import ir
from vdm.config import ProviderSettings
from vdm.errors import UpstreamProtocolError
from vdm.protocols import openai_upstream as wire
from vdm.protocols import structured
from vdm.protocols.body import rewrite
from vdm.protocols.model_list import decode_model_list
from vdm.protocols.responses_upstream import STREAM_ENDS as RESPONSES_STREAM_ENDS
from vdm.protocols.sse import SSEParser
from vdm.providers.base import ClientContext, RawResponse, UpstreamModel
from vdm.providers.endpoints import endpoint_for
from vdm.providers.http import (
    Body,
    Session,
    client_headers,
    decode_json,
    get_json,
    is_event_stream,
    open_response,
    raw_response,
    request_raw,
    require_end,
    upstream_errors,
)
from vdm.providers.keys import KeyPool

_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder()
# How a finished chat.completions stream ends: [DONE], or an error chunk
# (some servers end with one instead).
_STREAM_ENDS = (b"data: [DONE]", b"data:[DONE]", b'{"error"', b'{"error":')


class OpenAIProvider:
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
        self.endpoint = endpoint_for(settings)
        self.api_format = settings.api_format  # "openai" or "azure"
        self._base = settings.base_url
        self._headers = {"content-type": "application/json", **settings.headers}
        self._organization = settings.forward_organization
        self._options = wire.RequestOptions(
            max_tokens_field=settings.max_tokens_field,
            supports_reasoning=settings.supports_reasoning,
            max_tokens_limit=max_tokens_limit,
        )

    def _auth(self, headers: dict[str, str], key: str) -> dict[str, str]:
        endpoint = self.endpoint
        headers[endpoint.auth_header] = endpoint.auth_scheme + key
        return headers

    async def _post(
        self, url: str, body: bytes, ctx: ClientContext, model: str
    ) -> aiohttp.ClientResponse:
        """POST ``body`` for ``model`` to ``url``, moving through the key pool on refusals."""

        base = self._headers
        if ctx.headers:
            base = {
                **base,
                **client_headers(ctx.headers, "openai", organization=self._organization),
                **self.settings.headers,  # the operator's win
            }

        def attempt(key: str) -> Any:
            headers = self._auth(dict(base), key)
            return open_response(self._session, url, body, headers, self.name)

        return await self._keys.call(ctx.client_key, attempt, ctx.upstream_key, model)

    async def forward_chat(
        self, body: bytes, parsed: dict[str, Any], model: str, ctx: ClientContext
    ) -> RawResponse:
        """Passthrough: an OpenAI client's body with only the model rewritten."""
        endpoint = self.endpoint
        upstream_body = rewrite(body, parsed, {"model": endpoint.body_model(model)})
        response = await self._post(endpoint.chat_url(model), upstream_body, ctx, model)
        raw = raw_response(response, self.name)
        if parsed.get("stream") is True and is_event_stream(raw.headers):
            raw.body = require_end(raw.body, self.name, _STREAM_ENDS)
        return raw

    async def forward_responses(
        self, body: bytes, parsed: dict[str, Any], model: str, ctx: ClientContext
    ) -> RawResponse:
        """Passthrough of ``POST /v1/responses`` (``{NAME}_RESPONSES_API=native``):
        the client's body with only the model rewritten, the key pool's failover."""
        upstream_body = rewrite(body, parsed, {"model": model})
        response = await self._post(self._base + "/responses", upstream_body, ctx, model)
        raw = raw_response(response, self.name)
        if parsed.get("stream") is True and is_event_stream(raw.headers):
            raw.body = require_end(raw.body, self.name, RESPONSES_STREAM_ENDS)
        return raw

    async def list_models(self, client_key: str | None) -> list[UpstreamModel]:
        endpoint = self.endpoint
        if endpoint.models_url is None:  # (Azure: the configured deployments, no request)
            return [UpstreamModel(m) for m in endpoint.configured_models]
        headers = self._auth(dict(self.settings.headers), self._keys.key_for(client_key))
        payload = await get_json(self._session, endpoint.models_url, headers, self.name)
        return [UpstreamModel(id_) for id_, _ in decode_model_list(payload, self.name)]

    async def forward(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: Body,
        ctx: ClientContext,
    ) -> RawResponse:
        """Passthrough of any other OpenAI endpoint: ``path`` is below ``/v1``
        (the base URL already ends in it), ``headers`` are the body's
        representation headers (:func:`vdm.passthrough.request_headers`); the
        client's API headers (:func:`~vdm.providers.http.client_headers`), the
        provider's own headers and its key are added.  The answer, error statuses included, is relayed as is.

        The body may be a stream that cannot be sent twice, so a refused key is
        benched for the next requests but this one is not tried again."""
        url = self._base + path + ("?" + query if query else "")
        own = ctx.upstream_key or (self._keys.passthrough and ctx.client_key)
        index, key = (-1, own) if own else self._keys.pick()
        upstream = {
            **headers,
            **client_headers(ctx.headers, "openai", organization=self._organization),
            **self.settings.headers,
            "authorization": f"Bearer {key}",
        }
        raw = await request_raw(self._session, method, url, body, upstream, self.name)
        if index >= 0:
            self._keys.report(index, raw.status, raw.headers.get("retry-after"))
        return raw

    def events(
        self, request: ir.ChatRequest, model: str, ctx: ClientContext
    ) -> AsyncIterator[ir.Event]:
        request, output_tool = structured.plan(
            request,
            self.settings.structured_output,
            native_json_object=True,
            force_with_thinking=True,
        )
        events = self._events(request, model, ctx)
        return events if output_tool is None else structured.unwrap(events, output_tool)

    async def _events(
        self, request: ir.ChatRequest, model: str, ctx: ClientContext
    ) -> AsyncGenerator[ir.Event]:
        endpoint = self.endpoint
        body = _encode(wire.encode_request(request, endpoint.body_model(model), self._options))
        response = await self._post(endpoint.chat_url(model), body, ctx, model)
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
