"""The control plane: projects and tokens changed in the database and in the
registry in one step, each change an audit event.

:class:`ControlPlane` is built at start-up only when the control plane is on
(``MANAGEMENT_TOKEN`` or ``DATABASE_URL``); the management API and nothing
else calls its operations.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vdm.errors import StartRefused
from vdm.events import CONFIG_CHANGED, Bus
from vdm.store import Conflict, Missing, Store
from vdm.store.records import AuditQuery, AuditRecord, ProjectRecord, TokenRecord
from vdm.tenants import budgets
from vdm.tenants.audit import AuditLog
from vdm.tenants.fleet import Fleet
from vdm.tenants.limits import SharedWindows
from vdm.tenants.registry import TokenRegistry
from vdm.tenants.secrets import (
    Cipher,
    CredentialError,
    hash_token,
    load_key,
    new_token,
    obfuscate,
)
from vdm.tenants.settings import TenantSettings

log = logging.getLogger("vdm.tenants")

LEASE = 15.0  # seconds without a heartbeat before an instance is taken as gone


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a change, for its audit event."""

    name: str
    request_id: str | None = None
    client_ip: str | None = None


class UnknownProvider(ValueError):
    """Names in ``field`` that no configured provider has (a 422 at the API)."""

    def __init__(self, field: str, names: list[str], configured: list[str]) -> None:
        super().__init__(
            f"unknown provider(s) {', '.join(names)}; configured: {', '.join(configured)}"
        )
        self.field = field
        self.names = names


def utcnow() -> datetime:
    return datetime.now(UTC)


class ControlPlane:
    def __init__(
        self,
        settings: TenantSettings,
        store: Store,
        providers: list[str],
        default_provider: str,
        bus: Bus,
        windows: SharedWindows | None = None,
        cipher: Cipher | None = None,
        *,
        workers: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.providers = providers
        self.default_provider = default_provider
        self.bus = bus
        self.cipher = cipher or Cipher(settings.encryption_key)
        self.audit = AuditLog(store, settings.audit_log_file, bus)
        # One of --workers N: other processes share the database (and the quotas)
        # even on SQLite; per-minute windows can be shared only through Redis.
        self.workers = workers
        refresh = settings.refresh_interval or 1.0
        self.fleet = Fleet(store, bus.source, lease=max(LEASE, 4 * refresh))
        self.registry = TokenRegistry(
            store,
            self.cipher,
            self.audit,
            bus,
            shared=settings.shared or workers,
            refresh_interval=refresh,
            windows=windows,
            fleet=self.fleet,
        )
        self.audit.follow()
        self.registry.follow()

    @classmethod
    async def open(
        cls,
        settings: TenantSettings,
        providers: list[str],
        default_provider: str,
        bus: Bus,
        *,
        redis_url: str | None = None,
        redis_namespace: str = "vdm",
        workers: bool = False,
    ) -> ControlPlane:
        """Migrate the database, load the registry, subscribe the consumers (start
        ``bus`` after this)."""
        from vdm.store import migrate
        from vdm.store.sql import SqlStore, create_engine

        cipher = Cipher(await asyncio.to_thread(load_key, settings))
        engine = create_engine(settings.sqlalchemy_url, settings.database_schema)
        windows = SharedWindows(redis_url, redis_namespace) if redis_url else None
        try:
            await migrate.upgrade(engine, settings.database_schema)
            plane = cls(
                settings,
                SqlStore(engine),
                providers,
                default_provider,
                bus,
                windows,
                cipher,
                workers=workers,
            )
            await plane._seal_credentials()
            await plane._check_windows()
            await plane.registry.start()
        except BaseException:
            await engine.dispose()
            raise
        return plane

    def changed(self, what: str, ident: str) -> None:
        """Tell the other instances to reload (``config.changed``)."""
        self.bus.publish(CONFIG_CHANGED, {"what": what, "id": ident})

    async def settle(self) -> None:
        """Let the bus's consumers catch up (usage counters, audit) before a read."""
        await self.bus.flush()

    async def _seal_credentials(self) -> None:
        """Fail at start-up, not on a request, when stored keys cannot be read;
        encrypt those stored in plain text before a key was in use."""
        sealed = 0
        for project in await self.store.list_projects():
            opened = {}
            for provider, stored in project.credentials.items():
                try:
                    opened[provider] = self.cipher.open(stored)
                except CredentialError as exc:
                    raise RuntimeError(f"project {project.name!r}: {exc}") from None
            plain = [p for p, stored in project.credentials.items() if stored.startswith("plain:")]
            if plain and self.cipher.encrypts:
                resealed = self._sealed({p: opened[p] for p in plain}, project.credentials)
                await self.store.update_project(project.id, {"credentials": resealed})
                sealed += len(plain)
        if sealed:
            await self.store.checkpoint()
            log.info("encrypted %d project credential(s) stored in plain text", sealed)

    def _unshared_windows(self) -> bool:
        """Per-minute limits would be counted per worker: --workers N without Redis."""
        return self.workers and self.registry.windows is None

    async def _check_windows(self) -> None:
        """Refuse to start where a token's per-minute limit cannot hold."""
        if not self._unshared_windows():
            return
        limited = [t.id for t in await self.store.list_tokens() if t.is_active and (t.rpm or t.tpm)]
        if limited:
            raise StartRefused(
                f"{len(limited)} active token(s) have per-minute limits (rpm/tpm), which "
                "--workers N can only enforce together through Redis: set REDIS_URL, "
                "or run one worker per gateway"
            )

    async def everywhere(self) -> None:
        """Return once every live instance has loaded the database's current
        revision (:mod:`vdm.tenants.fleet`): what a call took away is refused
        everywhere on the next request."""
        gone = await self.fleet.wait_for(await self.store.revision())
        if gone:
            log.warning("not waited for (no heartbeat for a lease): %s", ", ".join(gone))

    async def close(self) -> None:
        try:
            await self.registry.close()
        finally:
            await self.store.close()

    # ------------------------------------------------------------ views

    def shown_credentials(self, project: ProjectRecord) -> dict[str, str]:
        out = {}
        for provider, stored in project.credentials.items():
            try:
                out[provider] = obfuscate(self.cipher.open(stored))
            except CredentialError:
                out[provider] = "(unreadable)"
        return out

    def live(self, token: TokenRecord) -> TokenRecord:
        """The token with this instance's newest request count."""
        counters = self.registry.live(token.id)
        if counters is not None:
            token.request_count = max(token.request_count, counters.used)
            if counters.last_used is not None:
                token.last_used_at = datetime.fromtimestamp(counters.last_used, UTC)
        return token

    # ------------------------------------------------------------ audit

    async def _audited(
        self,
        actor: Actor,
        action: str,
        *,
        target: str | None = None,
        project_id: str | None = None,
        token_id: str | None = None,
        details: dict[str, Any] | None = None,
        outcome: str = "success",
    ) -> None:
        event = self.audit.record(
            actor=actor.name,
            action=action,
            outcome=outcome,
            request_id=actor.request_id,
            client_ip=actor.client_ip,
            project_id=project_id,
            token_id=token_id,
            target=target,
            details=details,
        )
        await self.audit.store_now(event)  # a management action's event is stored before it answers

    async def failed(self, actor: Actor, action: str, reason: str, **ids: str | None) -> None:
        await self._audited(actor, action, outcome="failure", details={"reason": reason}, **ids)

    async def query_audit(self, query: AuditQuery) -> tuple[list[AuditRecord], int]:
        await self.settle()
        return await self.store.query_audit(query)

    async def get_audit(self, event_id: str) -> AuditRecord | None:
        await self.settle()
        return await self.store.get_audit(event_id)

    # ------------------------------------------------------------ projects

    def _check_providers(self, names: Iterable[str], field: str) -> None:
        unknown = sorted(n for n in names if n not in self.providers)
        if unknown:
            raise UnknownProvider(field, unknown, self.providers)

    def _sealed(self, keys: Mapping[str, str | None], current: Mapping[str, str]) -> dict[str, str]:
        out = dict(current)
        for provider, key in keys.items():
            if key:
                out[provider] = self.cipher.seal(key)
            else:
                out.pop(provider, None)  # an empty key removes the project's own
        return out

    async def create_project(
        self,
        actor: Actor,
        name: str,
        keys: Mapping[str, str],
        is_active: bool = True,
        budget: Mapping[str, Any] | None = None,
    ) -> ProjectRecord:
        self._check_providers(keys, "api_keys")
        now = utcnow()
        record = ProjectRecord(
            uuid.uuid4().hex,
            name,
            is_active,
            self._sealed(keys, {}),
            now,
            now,
            None if is_active else now,
            **budgets.settings(budget or {}, now),
        )
        async with self.registry.lock:
            await self.store.create_project(record)
            self.registry.put_project(record)
        self.changed("project", record.id)
        await self._audited(
            actor,
            "project.create",
            target=name,
            project_id=record.id,
            details={"providers": sorted(keys)},
        )
        return record

    async def update_project(
        self,
        actor: Actor,
        project_id: str,
        *,
        name: str | None = None,
        is_active: bool | None = None,
        keys: Mapping[str, str | None] | None = None,
        budget: Mapping[str, Any] | None = None,
    ) -> ProjectRecord:
        current = await self.store.get_project(project_id)
        if current is None:
            raise Missing(f"no project {project_id!r}")
        changes: dict[str, Any] = {"updated_at": utcnow()}
        changes.update(budgets.settings(budget or {}, changes["updated_at"]))
        if name is not None:
            changes["name"] = name
        if is_active is not None and is_active != current.is_active:
            changes["is_active"] = is_active
            changes["deactivated_at"] = None if is_active else changes["updated_at"]
        if keys:
            self._check_providers(keys, "api_keys")
            changes["credentials"] = self._sealed(keys, current.credentials)
        async with self.registry.lock:
            project = await self.store.update_project(project_id, changes)
            self.registry.put_project(project)
        self.changed("project", project_id)
        await self.everywhere()
        await self._audited(
            actor,
            "project.update",
            target=project.name,
            project_id=project_id,
            details={
                "fields": sorted(
                    k
                    for k in changes
                    if k not in ("updated_at", "deactivated_at", "budget_started_at")
                )
            },
        )
        return project

    async def delete_project(self, actor: Actor, project_id: str) -> None:
        async with self.registry.lock:
            await self.store.delete_project(project_id)
            self.registry.drop_project(project_id)
        self.changed("project", project_id)
        await self.everywhere()
        await self._audited(actor, "project.delete", project_id=project_id)

    # ------------------------------------------------------------ tokens

    async def create_token(
        self, actor: Actor, project_id: str, **fields: Any
    ) -> tuple[TokenRecord, str]:
        if await self.store.get_project(project_id) is None:
            raise Missing(f"no project {project_id!r}")
        self._check_token_fields(fields)
        secret = new_token()
        now = utcnow()
        fields = budgets.settings(fields, now)
        record = TokenRecord(
            id=uuid.uuid4().hex,
            project_id=project_id,
            token_hash=hash_token(secret),
            hint=obfuscate(secret),
            created_at=now,
            updated_at=now,
            **fields,
        )
        async with self.registry.lock:
            await self.store.create_token(record)
            self.registry.put_token(record)
        self.changed("token", record.id)
        await self._audited(
            actor, "token.create", project_id=project_id, token_id=record.id, target=record.hint
        )
        return record, secret

    def _check_token_fields(self, fields: Mapping[str, Any]) -> None:
        if (fields.get("rpm") or fields.get("tpm")) and self._unshared_windows():
            raise Conflict(
                "per-minute limits (rpm/tpm) cannot hold across the workers of this "
                "gateway without Redis: set REDIS_URL, or run it with one worker"
            )
        providers = fields.get("allowed_providers")
        if providers:
            self._check_providers(providers, "allowed_providers")

    async def update_token(
        self, actor: Actor, token_id: str, changes: Mapping[str, Any], action: str = "token.update"
    ) -> TokenRecord:
        self._check_token_fields(changes)
        moment = utcnow()
        stored = {**budgets.settings(changes, moment), "updated_at": moment}
        async with self.registry.lock:
            token = await self.store.update_token(token_id, stored)
            self.registry.put_token(token)
        self.changed("token", token_id)
        await self.everywhere()
        await self._audited(
            actor,
            action,
            project_id=token.project_id,
            token_id=token_id,
            target=token.hint,
            details={"fields": sorted(changes)},
        )
        return self.live(token)
