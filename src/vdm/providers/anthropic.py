"""Anthropic-native upstreams (Anthropic, Bedrock/Vertex-style Anthropic
endpoints, Z.ai, ...).

Anthropic clients get the passthrough fast path: the body goes up with only
the model and auth rewritten, and the answer comes back as bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

from vdm.config import ProviderSettings
from vdm.providers.base import ClientContext, RawResponse
from vdm.providers.http import Session, post_raw, raise_for_status, upstream_errors
from vdm.providers.keys import KeyPool

DEFAULT_VERSION = "2023-06-01"
# Client headers forwarded as they are.
_FORWARDED = ("anthropic-version", "anthropic-beta", "x-stainless-helper-method")


class AnthropicProvider:
    api_format = "anthropic"

    def __init__(self, settings: ProviderSettings, session: Session) -> None:
        self.name = settings.name
        self.settings = settings
        self._session = session
        self._keys = KeyPool(settings.name, settings.api_keys)
        self._messages_url = settings.base_url + "/v1/messages"
        self._count_url = settings.base_url + "/v1/messages/count_tokens"
        self._version = settings.api_version or DEFAULT_VERSION

    def _request_headers(self, ctx: ClientContext) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": self._version}
        incoming: Mapping[str, str] = ctx.headers or {}
        for name in _FORWARDED:
            value = incoming.get(name)
            if value:
                headers[name] = value
        headers.update(self.settings.headers)
        headers["x-api-key"] = self._keys.pick(ctx.client_key)
        return headers

    async def forward_messages(
        self, body: bytes, model: str, ctx: ClientContext, *, stream: bool
    ) -> RawResponse:
        return await post_raw(
            self._session, self._messages_url, body, self._request_headers(ctx), self.name
        )

    async def count_tokens(self, body: bytes, ctx: ClientContext) -> bytes:
        headers = self._request_headers(ctx)
        with upstream_errors(self.name):
            async with self._session.post(self._count_url, data=body, headers=headers) as response:
                await raise_for_status(response, self.name)
                return await response.read()

    async def close(self) -> None:
        await self._session.close()
