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
* a ``!PASSTHRU`` provider lists what the requesting client's key sees (its
  fine-tunes, say): its list is cached per credential, under the key's
  SHA-256 (the key itself is never stored), and never served to another
  caller.  A caller without a key gets the list of the provider's static keys,
  if it has any, else none.  At most :data:`MAX_CREDENTIALS` credentials' lists
  are kept, the least recently used dropped first; a client key the upstream
  refuses is logged at debug level only (it is the client's, not the provider's).

The merge is a pure function (:func:`merge`): alias entries first, then
``provider:model`` for every listed model (and the bare id for the default
provider), each kept only if routing that id reaches that very model, and
deduplicated by id, first wins.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vdm.errors import AuthenticationFailed, GatewayError
from vdm.protocols.model_list import ModelEntry
from vdm.providers.base import ModelLister, UpstreamModel

log = logging.getLogger("vdm.models")

_MAX_RETRY_DELAY = 30.0
MAX_CREDENTIALS = 256  # client credentials whose !PASSTHRU lists are kept


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
    ids: frozenset[str] = frozenset()  # of models, for lists()
    fetched_at: float = 0.0
    retry_at: float = 0.0
    failing: bool = False
    task: asyncio.Task[None] | None = None

    def due(self, now: float, ttl: float) -> bool:
        if self.task is not None or now < self.retry_at:
            return False
        return self.models is None or now - self.fetched_at >= ttl


@dataclass(slots=True)
class _View:
    """What one caller sees of the ``!PASSTHRU`` providers: their lists as its
    credential fetched them, and its merged answer."""

    slots: dict[str, _Slot]
    merged: list[ModelEntry] | None = None
    shared_version: int = field(default=-1)  # of the shared lists merged in


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
        per_client: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listers = dict(listers)
        # ``per_client``: the !PASSTHRU providers, whose list depends on the caller's key.
        self._per_client = tuple(n for n in listers if n in set(per_client))
        self._shared = {n: _Slot() for n in listers if n not in self._per_client}
        self._shared_version = 0  # bumped when a shared list changes
        # None: callers without a key; else a credential's SHA-256 (least recently used first).
        self._views: OrderedDict[str | None, _View] = OrderedDict()
        self._aliases = list(aliases)
        self._default = default_provider
        self._resolve = resolve
        self._ttl = ttl
        self._wait = wait
        self._clock = clock

    def _view(self, client_key: str | None) -> tuple[str | None, _View]:
        view_id = None
        if client_key and self._per_client:
            view_id = hashlib.sha256(client_key.encode()).hexdigest()
        view = self._views.get(view_id)
        if view is None:
            view = self._views[view_id] = _View({n: _Slot() for n in self._per_client})
            if len(self._views) > MAX_CREDENTIALS + 1:
                evicted = next(k for k in self._views if k is not None)
                del self._views[evicted]  # (a fetch in flight ends in a slot no one reads)
        else:
            self._views.move_to_end(view_id)
        return view_id, view

    def start(self) -> None:
        """Fetch every list in the background (inside the running loop)."""
        now = self._clock()
        _, view = self._view(None)
        for slots in (self._shared, view.slots):
            for name, slot in slots.items():
                if slot.due(now, self._ttl):
                    slot.task = asyncio.create_task(self._fetch(name, slot, None, view))

    async def entries(self, client_key: str | None) -> list[ModelEntry]:
        now = self._clock()
        view_id, view = self._view(client_key)
        key = client_key if view_id is not None else None
        waiting: list[asyncio.Task[None]] = []
        for slots, owner in ((self._shared, None), (view.slots, view)):
            for name, slot in slots.items():
                if slot.due(now, self._ttl):
                    fetch = self._fetch(name, slot, key if owner else None, owner)
                    slot.task = asyncio.create_task(fetch)
                if slot.task is not None and slot.models is None:
                    waiting.append(slot.task)
        if waiting:
            # asyncio.wait never cancels: a slow fetch finishes for later requests.
            await asyncio.wait(waiting, timeout=self._wait)
        if view.merged is None or view.shared_version != self._shared_version:
            listed = {
                n: slot.models
                for n in self._listers
                if (slot := self._shared.get(n) or view.slots[n]).models
            }
            view.merged = merge(self._aliases, listed, self._default, self._resolve)
            view.shared_version = self._shared_version
        return view.merged

    def lists(self, provider: str, model: str) -> bool:
        """Whether ``provider``'s shared list names ``model`` (a ``!PASSTHRU``
        provider's lists belong to the credentials that fetched them: never here)."""
        slot = self._shared.get(provider)
        return slot is not None and model in slot.ids

    async def _fetch(
        self, name: str, slot: _Slot, client_key: str | None, owner: _View | None
    ) -> None:
        """Fetch ``name``'s list into ``slot`` (``owner``: the caller's view it
        belongs to; None for a list every caller shares)."""
        try:
            models = await self._listers[name].list_models(client_key)
        except AuthenticationFailed:
            pass  # !PASSTHRU only and no client key: nothing to list with, not a failure
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background task: every failure ends here, logged
            message = exc.message if isinstance(exc, GatewayError) else type(exc).__name__
            if client_key is not None:  # the client's key, refused: its business
                log.debug("cannot list the models of provider '%s' with a client's key", name)
            elif not slot.failing:
                log.warning(
                    "cannot list the models of provider '%s' (skipped until it answers): %s",
                    name,
                    message,
                )
            slot.failing = True
            slot.retry_at = self._clock() + min(self._ttl, _MAX_RETRY_DELAY)
        else:
            if slot.failing and client_key is None:
                log.info("provider '%s' lists its models again", name)
            slot.failing = False
            slot.models = tuple(models)
            slot.ids = frozenset(m.id for m in slot.models)
            slot.fetched_at = self._clock()
            if owner is None:
                self._shared_version += 1
            else:
                owner.merged = None
        finally:
            slot.task = None

    async def close(self) -> None:
        """Cancel in-flight fetches (before the providers' sessions close)."""
        slots = [*self._shared.values()]
        for view in self._views.values():
            slots.extend(view.slots.values())
        tasks = [s.task for s in slots if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
