"""The model catalog behind ``GET /v1/models``: aliases plus every provider's
own list, cached.

Rules:

* one cached list per provider, fresh for ``MODELS_CACHE_TTL`` seconds; a
  stale list is still served while a refresh runs in the background;
* a request waits for a provider only while nothing is cached for it, and
  never longer than ``MODELS_WAIT`` seconds; a slow fetch goes on without it;
* concurrent requests share one in-flight fetch per provider;
* a failing provider is logged once when it starts failing (and once when it
  recovers), then retried after ``min(TTL, 30 s)``; meanwhile it is skipped;
* ``!PASSTHRU``-only providers are listed with the requesting client's key,
  and skipped without one.  Their list is cached per provider like any other
  (a model list is not a secret; the keys are never stored).

The merge is a pure function (:func:`merge`): alias entries first, then
``provider:model`` for every listed model (and the bare id for the default
provider), each kept only if routing that id reaches that very model, and
deduplicated by id, first wins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from vdm.errors import AuthenticationFailed, GatewayError
from vdm.providers.base import ModelLister, UpstreamModel

log = logging.getLogger("vdm.models")

_MAX_RETRY_DELAY = 30.0


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One row of ``GET /v1/models``, whatever the client's protocol."""

    id: str
    display_name: str
    owned_by: str  # the provider that serves it


# What a model id routes to: (provider, upstream model); raises GatewayError
# for an id the router refuses.
Resolve = Callable[[str], tuple[str, str]]


def merge(
    aliases: Iterable[ModelEntry],
    listed: Mapping[str, Sequence[UpstreamModel]],
    default_provider: str,
    resolve: Resolve,
) -> list[ModelEntry]:
    """Aliases, then the providers' own models (in provider order).

    A listed model appears as ``provider:id`` — and as bare ``id`` for the
    default provider — only where routing that name reaches ``(provider, id)``:
    an alias that would capture it (aliases match substrings) hides it rather
    than listing a name that serves another model.
    """
    out: dict[str, ModelEntry] = {}
    for entry in aliases:
        out.setdefault(entry.id, entry)
    for provider, models in listed.items():
        for model in models:
            display = model.display_name or model.id
            names = [f"{provider}:{model.id}"]
            if provider == default_provider:
                names.insert(0, model.id)
            for name in names:
                if name in out or not _routes_to(resolve, name, provider, model.id):
                    continue
                out[name] = ModelEntry(name, display, provider)
    return list(out.values())


def _routes_to(resolve: Resolve, name: str, provider: str, model: str) -> bool:
    try:
        return resolve(name) == (provider, model)
    except GatewayError:
        return False


@dataclass(slots=True)
class _Slot:
    """One provider's cached list and its fetch state."""

    models: tuple[UpstreamModel, ...] | None = None
    fetched_at: float = 0.0
    retry_at: float = 0.0
    failing: bool = False
    task: asyncio.Task[None] | None = None

    def due(self, now: float, ttl: float) -> bool:
        if self.task is not None or now < self.retry_at:
            return False
        return self.models is None or now - self.fetched_at >= ttl


class ModelCatalog:
    def __init__(
        self,
        listers: Mapping[str, ModelLister],
        aliases: Sequence[ModelEntry],
        default_provider: str,
        resolve: Resolve,
        *,
        ttl: float,
        wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listers = dict(listers)
        self._slots = {name: _Slot() for name in listers}
        self._aliases = list(aliases)
        self._default = default_provider
        self._resolve = resolve
        self._ttl = ttl
        self._wait = wait
        self._clock = clock
        self._merged: list[ModelEntry] | None = None  # rebuilt when a list changes

    def start(self) -> None:
        """Fetch every list in the background (inside the running loop)."""
        now = self._clock()
        for name, slot in self._slots.items():
            if slot.due(now, self._ttl):
                slot.task = asyncio.create_task(self._fetch(name, slot, None))

    async def entries(self, client_key: str | None) -> list[ModelEntry]:
        now = self._clock()
        waiting: list[asyncio.Task[None]] = []
        for name, slot in self._slots.items():
            if slot.due(now, self._ttl):
                slot.task = asyncio.create_task(self._fetch(name, slot, client_key))
            if slot.task is not None and slot.models is None:
                waiting.append(slot.task)
        if waiting:
            # asyncio.wait never cancels: a slow fetch finishes for later requests.
            await asyncio.wait(waiting, timeout=self._wait)
        if self._merged is None:
            listed = {n: s.models for n, s in self._slots.items() if s.models}
            self._merged = merge(self._aliases, listed, self._default, self._resolve)
        return self._merged

    async def _fetch(self, name: str, slot: _Slot, client_key: str | None) -> None:
        try:
            models = await self._listers[name].list_models(client_key)
        except AuthenticationFailed:
            pass  # !PASSTHRU only and no client key: nothing to list with, not a failure
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background task: every failure ends here, logged
            message = exc.message if isinstance(exc, GatewayError) else type(exc).__name__
            if not slot.failing:
                log.warning(
                    "cannot list the models of provider '%s' (skipped until it answers): %s",
                    name,
                    message,
                )
            slot.failing = True
            slot.retry_at = self._clock() + min(self._ttl, _MAX_RETRY_DELAY)
        else:
            if slot.failing:
                log.info("provider '%s' lists its models again", name)
            slot.failing = False
            slot.models = tuple(models)
            slot.fetched_at = self._clock()
            self._merged = None
        finally:
            slot.task = None

    async def close(self) -> None:
        """Cancel in-flight fetches (before the providers' sessions close)."""
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
