"""Model string -> (provider, upstream model).

Rules, in order:

1. ``provider:model`` — a known provider prefix routes there; the rest is the
   model (it may contain colons: ``ollama:llama3:8b``).  If the rest names an
   alias of that provider, the alias applies.  A prefix that names no provider
   is part of the model name, since many model ids have colons of their own
   (OpenAI fine-tunes ``ft:gpt-4o-mini:org::id``, Ollama tags ``llama3:8b``,
   OpenRouter variants ``vendor/model:free``, Bedrock ``…-v1:0``); such a name
   goes on to rules 2 and 3, and a typo reaches the upstream, whose error
   names the model.
2. A bare model matching a user-defined alias of any provider (``OPENAI_ALIAS_
   FAST=gpt-4o-mini``) goes to that alias's provider and model.
3. Otherwise the default provider gets it, after its fallback aliases (the
   package's ``haiku``/``sonnet``/``opus`` names for Claude Code) apply.

Alias matching is case-insensitive, treats ``-`` and ``_`` alike, and accepts
a substring (``my-fast-model`` matches ``FAST``).  Among several matches:
exact > longest alias > provider order > alphabetical.

Resolutions are memoised (bounded); the table is built once at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vdm.errors import InvalidRequest, UnknownModel

_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    model: str
    alias: str | None = None  # the alias that matched, if any


@dataclass(frozen=True, slots=True)
class _Alias:
    key: str  # normalised alias name
    name: str
    provider: str
    model: str
    order: int  # provider order


def normalise(name: str) -> str:
    return name.lower().replace("-", "_")


class Router:
    def __init__(
        self,
        providers: list[str],
        default_provider: str,
        aliases: Mapping[str, Mapping[str, str]],
        fallback_aliases: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.providers = providers
        self._known = frozenset(providers)
        self.default_provider = default_provider
        order = {p: i for i, p in enumerate(providers)}
        self._user = [
            _Alias(normalise(a), a, p, m, order[p])
            for p, table in aliases.items()
            if p in order
            for a, m in table.items()
        ]
        self._per_provider: dict[str, list[_Alias]] = {}
        for p in providers:
            user = {normalise(a): (a, m) for a, m in aliases.get(p, {}).items()}
            merged = {normalise(a): (a, m) for a, m in fallback_aliases.get(p, {}).items()}
            merged.update(user)  # user aliases override package fallbacks
            self._per_provider[p] = [_Alias(k, a, p, m, order[p]) for k, (a, m) in merged.items()]
        self._cache: dict[str, Route] = {}

    def resolve(self, model: str) -> Route:
        route = self._cache.get(model)
        if route is None:
            route = self._resolve(model)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[model] = route
        return route

    def _resolve(self, model: str) -> Route:
        model = model.strip()
        if not model:
            raise InvalidRequest("model: must not be empty")
        prefix, sep, rest = model.partition(":")
        provider = prefix.lower()
        if sep and provider in self._known:
            if not rest:
                raise UnknownModel(f"model '{model}': no model name after '{prefix}:'")
            return self._within(provider, rest)
        match = _best(self._user, normalise(model))
        if match is not None:
            return Route(match.provider, match.model, match.name)
        return self._within(self.default_provider, model)

    def _within(self, provider: str, model: str) -> Route:
        match = _best(self._per_provider[provider], normalise(model))
        if match is not None:
            return Route(provider, match.model, match.name)
        return Route(provider, model)

    def active_aliases(self) -> dict[str, dict[str, str]]:
        """Aliases by provider, as they apply (user overrides fallbacks)."""
        return {
            p: {a.name: a.model for a in sorted(entries, key=lambda a: a.key)}
            for p, entries in self._per_provider.items()
            if entries
        }


def _best(candidates: list[_Alias], wanted: str) -> _Alias | None:
    best: _Alias | None = None
    best_rank: tuple[int, int, int, str] | None = None
    for alias in candidates:
        if alias.key == wanted:
            rank = (0, 0, alias.order, alias.key)
        elif alias.key in wanted:
            rank = (1, -len(alias.key), alias.order, alias.key)
        else:
            continue
        if best_rank is None or rank < best_rank:
            best, best_rank = alias, rank
    return best
