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

Every door routes through :meth:`Router.resolve`, so it is where a model name
is checked (:func:`check_model_name`): at most :data:`MODEL_NAME_MAX_LENGTH`
characters, all of them ASCII letters, digits or ``. _ - : / @ + = ~ [ ]``,
enough for every real name (``ft:gpt-4o:org:x:id``, ``meta-llama/Llama-3-70b``,
``anthropic.claude-3-5-sonnet-20240620-v1:0``, ``@cf/meta/llama``), and
nothing that could break a header, a log line or an upstream URL.  A name is
checked once: the memo holds only names that passed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from vdm.errors import InvalidRequest, UnknownModel

_CACHE_LIMIT = 4096
MODEL_NAME_MAX_LENGTH = 256
MODEL_NAME_CHARACTERS = "ASCII letters, digits and . _ - : / @ + = ~ [ ]"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9._:/@+=~\[\]-]+$"  # (also the management API's schema)
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._:/@+=~\[\]-]")


def check_model_name(name: str, field: str = "model") -> None:
    """Raise :class:`InvalidRequest` naming the rule a model name breaks."""
    if len(name) > MODEL_NAME_MAX_LENGTH:
        raise InvalidRequest(
            f"{field}: {len(name)} characters; a model name has at most {MODEL_NAME_MAX_LENGTH}"
        )
    if not _MODEL_NAME.fullmatch(name):
        found = _NOT_ALLOWED.search(name)
        what = f" (found {found.group()!a})" if found else ""
        raise InvalidRequest(f"{field}: a model name may only use {MODEL_NAME_CHARACTERS}{what}")


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
        check_model_name(model)
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
