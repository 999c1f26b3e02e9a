"""Upstream adapters, one per API family; :func:`build` picks the adapter."""

from __future__ import annotations

from vdm.config import ECHO, ProviderSettings, ServerSettings
from vdm.providers.base import Provider


def build(settings: ProviderSettings, server: ServerSettings) -> Provider:
    """The adapter for one configured provider, with its own pooled session.

    Must run inside the event loop that will use it (aiohttp binds sessions
    to their loop); adapters are imported only when a provider needs them.
    """
    if settings.api_format == ECHO:
        from vdm.providers.echo import EchoProvider

        return EchoProvider()
    from vdm.providers.http import make_session

    session = make_session(server.request_timeout)
    if settings.api_format == "anthropic":
        from vdm.providers.anthropic import AnthropicProvider

        return AnthropicProvider(settings, session, max_tokens_limit=server.max_tokens_limit)
    from vdm.providers.openai import OpenAIProvider

    return OpenAIProvider(settings, session, max_tokens_limit=server.max_tokens_limit)
