"""Upstream adapters, one per API family; :func:`build` picks the adapter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vdm.config import ECHO, ProviderSettings, ServerSettings
from vdm.providers.base import Provider
from vdm.providers.cooldowns import Cooldowns
from vdm.providers.keys import KeyPool

if TYPE_CHECKING:
    from vdm.metrics import UpstreamPool


def build(
    settings: ProviderSettings,
    server: ServerSettings,
    cooldowns: Cooldowns,
    pools: Callable[[str], UpstreamPool] | None = None,
) -> Provider:
    """The adapter for one configured provider, with its own pooled session
    (whose waits for a free connection are counted in ``pools(name)``).

    Must run inside the event loop that will use it (aiohttp binds sessions
    to their loop); adapters are imported only when a provider needs them.
    """
    if settings.api_format == ECHO:
        from vdm.providers.echo import EchoProvider

        return EchoProvider()
    from vdm.providers.http import make_session

    session = make_session(
        server,
        limit=settings.max_connections,
        provider=settings.name,
        loops_back=settings.loops_back,
        pool=pools(settings.name) if pools is not None else None,
    )
    keys = KeyPool(
        settings.name,
        settings.api_keys,
        cooldowns,
        auth_cooldown=server.key_auth_cooldown,
        rate_limit_cooldown=server.key_rate_limit_cooldown,
        max_cooldown=server.key_cooldown_max,
    )
    if settings.api_format == "anthropic":
        from vdm.providers.anthropic import AnthropicProvider

        return AnthropicProvider(settings, session, keys, max_tokens_limit=server.max_tokens_limit)
    from vdm.providers.openai import OpenAIProvider

    return OpenAIProvider(settings, session, keys, max_tokens_limit=server.max_tokens_limit)
