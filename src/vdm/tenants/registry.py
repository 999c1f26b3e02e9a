"""The in-memory token registry: who a presented token is, and may it pass.

Loaded whole at start-up and kept current by the control plane itself
(:mod:`vdm.tenants.service` updates it in the same call that writes the
database), so a revocation is effective on the very next request.  Other
instances hear of the change as a ``config.changed`` event on the bus and
reload at once (:meth:`TokenRegistry.follow`); the revision counter, polled
off the request path every refresh interval (:meth:`TokenRegistry.beat`), is
the safety net and, without Redis, the way instances sharing a database
converge.  Each beat also tells the other instances which revision this one
has loaded (:mod:`vdm.tenants.fleet`), so a call that takes something away
answers only once every live instance refuses it.

A token this instance does not know yet (made on another instance a moment
ago) is read through to the database: the lookups of all the unknown tokens
waiting at one moment go in one query, one query at a time per instance, at
most :data:`MAX_PENDING` tokens waiting (more are refused without a query),
and a token the database does not know either is remembered as unknown for
:data:`UNKNOWN_TTL` seconds (at most :data:`UNKNOWN_MAX` of them).  A flood of
random tokens is therefore at most one indexed query in flight per instance,
and the same wrong token sent again costs no query at all.

Usage counters (requests, cache hits, spend) are ``token.usage`` events; one
consumer for the whole deployment writes them to the database in batches.
A token or project with a budget (:mod:`vdm.tenants.budgets`) is the
exception: its spend is read from the database at admission and added to it,
atomically, when each request ends.

:meth:`TokenRegistry.admit` is the request path: a dict lookup, a few
comparisons and counter increments, no ``await`` except for the one
conditional update a lifetime quota needs on a shared database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic
from typing import TYPE_CHECKING, Any

from vdm.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    PermissionDenied,
    QuotaExceeded,
    Unavailable,
)
from vdm.events import CONFIG_CHANGED, TOKEN_USAGE
from vdm.store.records import ProjectRecord, TokenRecord, UsageDelta
from vdm.tenants import budgets
from vdm.tenants.limits import Counters, SharedWindows, now
from vdm.tenants.secrets import Cipher, CredentialError, hash_token

if TYPE_CHECKING:
    from vdm.events import Bus, Event
    from vdm.ir import Usage
    from vdm.store import Store
    from vdm.tenants.audit import AuditLog
    from vdm.tenants.fleet import Fleet

log = logging.getLogger("vdm.tenants")

MAX_PENDING = 1024  # unknown tokens waiting for the database at once; more are refused
BATCH = 256  # unknown tokens looked up in one query
UNKNOWN_TTL = 60.0  # seconds a token the database does not know is remembered as unknown
UNKNOWN_MAX = 10_000  # tokens remembered as unknown (the oldest go first)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is for: the seam every credential kind resolves to (a
    virtual token here; a JWT verifier returns one too)."""

    project_id: str
    project_name: str
    token_id: str | None
    upstream_keys: Mapping[str, str]  # provider -> the project's own key (decrypted)
    allowed_models: frozenset[str] | None = None
    allowed_providers: frozenset[str] | None = None

    def allows(self, provider: str, requested: str | None, upstream: str | None) -> bool:
        """May this principal use ``provider`` for the model it named (``requested``,
        resolved to ``upstream``)?  Models match by the name sent, the upstream
        name, or ``provider:upstream``.  A request that names no model (a file,
        a batch) is held to the provider rule alone.  The one rule of every door."""
        if self.allowed_providers is not None and provider not in self.allowed_providers:
            return False
        models = self.allowed_models
        if models is None or requested is None:
            return True
        upstream = upstream or requested
        return bool({requested, upstream, f"{provider}:{upstream}"} & models)

    def check(self, provider: str, requested: str | None, upstream: str | None) -> None:
        """:meth:`allows`, or a 403 that says which rule refused."""
        if self.allows(provider, requested, upstream):
            return
        if requested is None or (
            self.allowed_providers is not None and provider not in self.allowed_providers
        ):
            raise PermissionDenied(f"this API token may not use provider {provider!r}")
        raise PermissionDenied(
            f"this API token may not use model {requested!r} ({provider}:{upstream or requested})"
        )


@dataclass(slots=True)
class _Entry:
    token: TokenRecord
    principal: Principal
    expires: float | None  # epoch seconds
    counters: Counters
    project_active: bool


class TokenRegistry:
    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        audit: AuditLog,
        bus: Bus,
        *,
        shared: bool,
        refresh_interval: float = 1.0,
        windows: SharedWindows | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._audit = audit
        self._shared = shared
        self._by_hash: dict[str, _Entry] = {}
        self._by_id: dict[str, _Entry] = {}
        self._projects: dict[str, ProjectRecord] = {}
        self._bus = bus
        self._windows = windows  # per-minute limits across instances (Redis), if any
        self._revision = -1
        self._refresh_interval = refresh_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._fleet = fleet
        # Tokens are admitted until then (monotonic seconds): half a lease after
        # the last beat began (vdm.tenants.fleet); no fleet, no fence.
        self._fresh_until = float("inf") if fleet is None else 0.0
        self._unknown: dict[
            str, float
        ] = {}  # token hash -> monotonic time it stops being known unknown
        self._pending: dict[str, asyncio.Future[None]] = {}  # token hash -> its lookup
        self._lookups: asyncio.Task[None] | None = None
        # Held by a reload and by every change (store write + registry update), so a
        # reload that read the database before a change cannot undo it.
        self.lock = asyncio.Lock()

    @property
    def windows(self) -> SharedWindows | None:
        return self._windows

    # ------------------------------------------------------------ lifecycle

    def follow(self) -> None:
        """Subscribe: the usage writer (once per deployment) and the reload on
        other instances' changes (every instance)."""
        self._bus.subscribe("usage", [TOKEN_USAGE], self._write_usage, scope="shared")
        self._bus.subscribe(
            "tenant-cache", [CONFIG_CHANGED], self._changed, scope="instance", others_only=True
        )

    async def start(self) -> None:
        await self.refresh(force=True)
        if self._fleet is None:
            self._tasks = [asyncio.create_task(self._every(self._refresh_interval, self.refresh))]
            return
        await self.beat()
        self._tasks = [asyncio.create_task(self._every(self._refresh_interval, self.beat))]

    async def close(self) -> None:
        for task in [*self._tasks, *([self._lookups] if self._lookups else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._fleet is not None:
            try:
                await self._fleet.leave()
            except Exception:  # the row is forgotten after a lease anyway
                log.warning("tenant registry: could not leave the fleet", exc_info=True)
        if self._windows is not None:
            await self._windows.close()

    async def beat(self) -> None:
        """Reload when the revision moved, then tell the fleet which revision this
        instance has (and that it lives); tokens are admitted for half a lease
        from when this began."""
        assert self._fleet is not None
        began = monotonic()
        async with self.lock:
            await self._reload(False)
            loaded = self._revision
        await self._fleet.beat(loaded)
        self._fresh_until = max(self._fresh_until, began + self._fleet.lease / 2)

    async def _every(self, seconds: float, work: object) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()  # type: ignore[operator]
            except Exception:  # a database hiccup must not end the loop
                log.warning(
                    "tenant registry: %s failed", getattr(work, "__name__", work), exc_info=True
                )

    async def refresh(self, force: bool = False) -> None:
        """Reload everything when another writer changed it (the revision moved)."""
        async with self.lock:
            await self._reload(force)

    async def _reload(self, force: bool) -> None:
        revision = await self._store.revision()
        if revision == self._revision and not force:
            return
        projects = {p.id: p for p in await self._store.list_projects()}
        tokens = await self._store.list_tokens()
        self._projects = projects
        old = self._by_id
        self._by_hash, self._by_id = {}, {}
        for token in tokens:
            previous = old.get(token.id)
            self._put(token, previous.counters if previous else None)
        self._revision = revision

    async def _changed(self, events: list[Event]) -> None:
        """Another instance changed projects or tokens: reload now (and say so)."""
        if self._fleet is not None:
            await self.beat()
        else:
            await self.refresh(force=True)

    async def _write_usage(self, events: list[Event]) -> None:
        """``token.usage`` events summed per token, written in one transaction."""
        deltas: dict[str, UsageDelta] = {}
        for event in events:
            d = event.data
            delta = deltas.get(d["token"])
            if delta is None:
                delta = deltas[d["token"]] = UsageDelta()
            delta.requests += int(d.get("requests", 0))
            delta.cache_hits += int(d.get("cache_hits", 0))
            if d.get("at") is not None:
                at = datetime.fromtimestamp(float(d["at"]), UTC)
                if delta.last_used_at is None or at > delta.last_used_at:
                    delta.last_used_at = at
        await self._store.add_usage(deltas)
        spends = budgets.summed(e.data["spend"] for e in events if e.data.get("spend"))
        if spends:
            await self._store.add_spend(spends)

    # ------------------------------------------------------------ changes

    def _put(self, token: TokenRecord, counters: Counters | None = None) -> None:
        project = self._projects.get(token.project_id)
        if project is None:
            return
        keys: dict[str, str] = {}
        for provider, stored in project.credentials.items():
            try:
                keys[provider] = self._cipher.open(stored)
            except CredentialError as exc:
                log.error("project %s: credential for %s unusable: %s", project.id, provider, exc)
        principal = Principal(
            project.id,
            project.name,
            token.id,
            keys,
            frozenset(token.allowed_models) if token.allowed_models is not None else None,
            frozenset(token.allowed_providers) if token.allowed_providers is not None else None,
        )
        counters = counters or Counters()
        counters.used = max(counters.used, token.request_count)
        entry = _Entry(
            token,
            principal,
            token.expires_at.timestamp() if token.expires_at else None,
            counters,
            project.is_active,
        )
        stale = self._by_id.get(token.id)
        if stale is not None:
            self._by_hash.pop(stale.token.token_hash, None)
        self._unknown.pop(token.token_hash, None)
        self._by_hash[token.token_hash] = entry
        self._by_id[token.id] = entry

    def put_token(self, token: TokenRecord) -> None:
        old = self._by_id.get(token.id)
        self._put(token, old.counters if old else None)

    def put_project(self, project: ProjectRecord) -> None:
        self._projects[project.id] = project
        for entry in list(self._by_id.values()):
            if entry.token.project_id == project.id:
                self._put(entry.token, entry.counters)

    def drop_project(self, project_id: str) -> None:
        self._projects.pop(project_id, None)
        for entry in [e for e in self._by_id.values() if e.token.project_id == project_id]:
            del self._by_id[entry.token.id]
            self._by_hash.pop(entry.token.token_hash, None)

    def live(self, token_id: str) -> Counters | None:
        """The counters as this instance knows them (newer than the database's
        until the next flush)."""
        entry = self._by_id.get(token_id)
        return entry.counters if entry else None

    # ------------------------------------------------------------ the request path

    async def admit(self, token: str, *, request_id: str, client_ip: str | None) -> Principal:
        if monotonic() > self._fresh_until:
            raise Unavailable(
                "this gateway instance cannot reach its database to confirm API tokens; "
                "retry shortly"
            )
        digest = hash_token(token)
        entry = self._by_hash.get(digest)
        if entry is None:
            entry = await self._look_up(digest)
        if entry is None:
            self._deny(None, "unknown token", request_id, client_ip)
            raise AuthenticationFailed("invalid API token")
        record = entry.token
        if not record.is_active:
            self._deny(entry, "token revoked", request_id, client_ip)
            raise AuthenticationFailed("this API token has been revoked")
        moment = now()
        if entry.expires is not None and moment >= entry.expires:
            self._deny(entry, "token expired", request_id, client_ip)
            raise AuthenticationFailed("this API token has expired")
        if not entry.project_active:
            self._deny(entry, "project inactive", request_id, client_ip)
            raise PermissionDenied("the project of this API token is inactive")
        counters = entry.counters
        window = counters.window
        window.roll(moment)
        if record.rpm is not None and window.requests >= record.rpm:
            self._deny(entry, "rpm limit", request_id, client_ip)
            raise QuotaExceeded(
                f"this API token's limit of {record.rpm} requests per minute is reached",
                retry_after=window.seconds_left(moment),
            )
        if record.tpm is not None and window.tokens >= record.tpm:
            self._deny(entry, "tpm limit", request_id, client_ip)
            raise QuotaExceeded(
                f"this API token's limit of {record.tpm} tokens per minute is reached",
                retry_after=window.seconds_left(moment),
            )
        limit = record.max_requests
        if limit is not None and counters.used >= limit:
            self._deny(entry, "quota exhausted", request_id, client_ip)
            raise QuotaExceeded(f"this API token's quota of {limit} requests is used up")
        await self._shared_limits(entry, moment, request_id, client_ip)
        windows = self._windows
        stamp = datetime.fromtimestamp(moment, UTC)
        counters.last_used = moment
        if limit is not None and self._shared:
            counters.used += 1  # held while the database decides (no over-admission here)
            window.requests += 1
            try:
                admitted = await self._store.consume(record.id, stamp)
            except BaseException:
                counters.used -= 1
                window.requests -= 1
                raise
            if not admitted:
                window.requests -= 1
                if windows is not None and record.rpm is not None:
                    await windows.undo(record.id, moment)
                counters.used = limit
                self._deny(entry, "quota exhausted", request_id, client_ip)
                raise QuotaExceeded(f"this API token's quota of {limit} requests is used up")
            return entry.principal
        counters.used += 1
        window.requests += 1
        self._bus.publish(TOKEN_USAGE, {"token": record.id, "requests": 1, "at": moment})
        return entry.principal

    async def _shared_limits(
        self, entry: _Entry, moment: float, request_id: str, client_ip: str | None
    ) -> None:
        """The limits counted with the other instances: the token's and its
        project's budget, and the per-minute windows kept in Redis."""
        record = entry.token
        project = self._projects.get(record.project_id)
        if budgets.budgeted(record, project):
            refused = await budgets.spent(
                self._store, record, project, datetime.fromtimestamp(moment, UTC)
            )
            if refused is not None:
                self._deny(entry, "budget spent", request_id, client_ip)
                raise BudgetExceeded(refused)
        windows = self._windows
        if windows is not None and (record.rpm is not None or record.tpm is not None):
            verdict = await windows.admit(record.id, record.rpm, record.tpm, moment)
            if verdict:
                reason, limit_text = (
                    ("rpm limit", f"{record.rpm} requests")
                    if verdict == 1
                    else ("tpm limit", f"{record.tpm} tokens")
                )
                self._deny(entry, reason, request_id, client_ip)
                raise QuotaExceeded(
                    f"this API token's limit of {limit_text} per minute is reached",
                    retry_after=max(60.0 - moment % 60.0, 1.0),
                )

    # ------------------------------------------------------------ read-through

    async def _look_up(self, digest: str) -> _Entry | None:
        """A token made elsewhere a moment ago, from the database (batched, bounded)."""
        unknown_until = self._unknown.get(digest)
        if unknown_until is not None:
            if monotonic() < unknown_until:
                return None
            del self._unknown[digest]
        lookup = self._pending.get(digest)
        if lookup is None:
            if len(self._pending) >= MAX_PENDING:
                return None
            lookup = self._pending[digest] = asyncio.get_running_loop().create_future()
            if self._lookups is None:
                self._lookups = asyncio.create_task(self._look_up_pending())
        await asyncio.shield(lookup)
        return self._by_hash.get(digest)

    async def _look_up_pending(self) -> None:
        """Look up the waiting tokens, a batch per query, one query at a time;
        each batch is taken after its tokens arrived, so a token made before a
        request came is found for it."""
        try:
            while self._pending:
                batch = dict(list(self._pending.items())[:BATCH])
                for digest in batch:
                    del self._pending[digest]
                try:
                    # Under the lock: a reload cannot interleave and be undone by an
                    # older read of the same token.
                    async with self.lock:
                        await self._load_tokens(batch)
                except Exception as exc:
                    log.warning("tenant registry: token lookup failed: %s", exc)
                    error = Unavailable("cannot look up this API token now; retry shortly")
                    for lookup in batch.values():
                        if not lookup.done():
                            lookup.set_exception(error)
                            lookup.exception()  # (a waiter that left leaves no warning)
                    continue
                until = monotonic() + UNKNOWN_TTL
                for digest, lookup in batch.items():
                    if digest not in self._by_hash:
                        self._remember_unknown(digest, until)
                    if not lookup.done():
                        lookup.set_result(None)
        finally:
            self._lookups = None

    async def _load_tokens(self, batch: Mapping[str, object]) -> None:
        found = [t for t in await self._store.find_tokens(list(batch)) if t.id not in self._by_id]
        for project_id in {t.project_id for t in found} - self._projects.keys():
            project = await self._store.get_project(project_id)
            if project is not None:
                self._projects[project_id] = project
        for token in found:
            self._put(token)

    def _remember_unknown(self, digest: str, until: float) -> None:
        unknown = self._unknown
        if len(unknown) >= UNKNOWN_MAX:
            del unknown[next(iter(unknown))]  # the oldest
        unknown[digest] = until

    # ------------------------------------------------------------ usage

    async def record_usage(
        self, principal: Principal, usage: Usage | None, cost: float | None = None
    ) -> None:
        """Tokens a finished request used, for its token's TPM window: callers
        await this before the answer's last byte (with Redis, one round trip,
        for tokens with a TPM limit only)."""
        if usage is None or principal.token_id is None:
            return
        entry = self._by_id.get(principal.token_id)
        if cost and entry is not None:
            await self._spend(entry.token, cost)
        if entry is not None and entry.token.tpm is not None:
            tokens = usage.input_tokens + usage.output_tokens
            entry.counters.window.roll(now())
            entry.counters.window.tokens += tokens
            if self._windows is not None:
                await self._windows.add_tokens(principal.token_id, tokens)

    async def _spend(self, token: TokenRecord, cost: float) -> None:
        """``cost`` added to the token's and its project's spend: at once with a
        budget (before the answer's end, as the TPM window), else written behind."""
        project = self._projects.get(token.project_id)
        if budgets.budgeted(token, project):
            spends = budgets.spends(token, project, cost, datetime.now(UTC))
            # Shielded: a client that leaves mid-write must not cancel the
            # transaction half-way (SQLite would stay locked); it was spent.
            write = asyncio.ensure_future(self._store.add_spend(spends))
            write.add_done_callback(_retrieved)
            try:
                await asyncio.shield(write)
            except Exception as exc:  # (the answer is out: log, never fail it)
                log.warning("spend of token %s not counted: %s", token.id, exc)
        else:  # (as [table, id, cost, period start]: whichever instance writes it)
            spends = budgets.spends(token, project, cost, datetime.now(UTC))
            self._bus.publish(TOKEN_USAGE, {"token": token.id, "spend": budgets.encode(spends)})

    def record_cache_hit(self, principal: Principal) -> None:
        """A request answered from the response cache (the token's ``cache_hit_count``)."""
        if principal.token_id is not None:
            self._bus.publish(TOKEN_USAGE, {"token": principal.token_id, "cache_hits": 1})

    def _deny(
        self, entry: _Entry | None, reason: str, request_id: str, client_ip: str | None
    ) -> None:
        token = entry.token if entry else None
        self._audit.record(
            actor=f"token:{token.id}" if token else "anonymous",
            action="proxy.authenticate",
            outcome="denied",
            request_id=request_id,
            client_ip=client_ip,
            project_id=token.project_id if token else None,
            token_id=token.id if token else None,
            details={"reason": reason},
        )


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Read a shielded write's failure (logged by its awaiter, if still there)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a shielded write failed: %s", task.exception())
