"""Pure parts of the control plane: secrets, settings, permission, the registry's limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from vdm.config import ConfigError, load_settings
from vdm.errors import AuthenticationFailed, PermissionDenied, QuotaExceeded
from vdm.events.memory import MemoryBus
from vdm.store.records import ProjectRecord, TokenRecord, UsageDelta
from vdm.tenants.audit import AuditLog
from vdm.tenants.registry import Principal, TokenRegistry
from vdm.tenants.secrets import Cipher, CredentialError, hash_token, new_token, obfuscate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_tokens_are_random_prefixed_and_shown_obfuscated() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("sk-vdm-") and len(a) == 50
    assert len(hash_token(a)) == 64 and hash_token(a) != hash_token(b)
    shown = obfuscate(a)
    assert shown.startswith("sk-vdm-") and a[11:-4] not in shown and shown.endswith(a[-4:])
    assert obfuscate("short") == "****"


def test_cipher_encrypts_with_a_key_and_refuses_without_it() -> None:
    key = Fernet.generate_key().decode()
    sealed = Cipher(key).seal("sk-upstream-123")
    assert sealed.startswith("fernet:") and "sk-upstream-123" not in sealed
    assert Cipher(key).open(sealed) == "sk-upstream-123"
    assert Cipher(None).seal("k") == "plain:k" and Cipher(None).open("plain:k") == "k"
    with pytest.raises(CredentialError, match="VDM_ENCRYPTION_KEY"):
        Cipher(None).open(sealed)
    with pytest.raises(CredentialError, match="does not decrypt"):
        Cipher(Fernet.generate_key().decode()).open(sealed)


def test_settings_problems_name_their_variables() -> None:
    env = {
        "HOME": "/nonexistent",
        "MANAGEMENT_TOKEN": "short",
        "DATABASE_URL": "mysql://x/y",
        "VDM_ENCRYPTION_KEY": "not-a-key",
        "DATABASE_SCHEMA": "bad-name;",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    text = str(info.value)
    for var in ("MANAGEMENT_TOKEN", "DATABASE_URL", "VDM_ENCRYPTION_KEY", "DATABASE_SCHEMA"):
        assert f"environment variable {var}" in text
    ok = load_settings(
        env={"HOME": "/h", "MANAGEMENT_TOKEN": "m" * 20, "DATABASE_URL": "postgresql://u@h/db"}
    ).tenants
    assert ok.enabled and ok.shared and ok.sqlalchemy_url == "postgresql+asyncpg://u@h/db"
    default = load_settings(env={"HOME": "/h"}).tenants
    assert not default.enabled
    assert default.sqlalchemy_url == "sqlite+aiosqlite:////h/.local/share/vdm/vdm.db"


def test_principal_allows_by_model_name_upstream_name_or_provider() -> None:
    p = Principal(
        "p", "proj", "t", {}, frozenset({"fast", "ant:claude-x"}), frozenset({"ant", "openai"})
    )
    assert p.allows("openai", "fast", "gpt-fast")
    assert p.allows("ant", "claude", "claude-x")
    assert not p.allows("openai", "gpt-4o", "gpt-4o")
    assert not p.allows("plain", "fast", "gpt-fast")
    assert Principal("p", "proj", "t", {}).allows("any", "m", "m")


class FakeStore:
    def __init__(self, project: ProjectRecord, tokens: list[TokenRecord]) -> None:
        self.project, self.tokens = project, tokens
        self.usage: list[dict[str, UsageDelta]] = []
        self.remaining = {t.id: (t.max_requests or 0) for t in tokens}
        self.lookups: list[list[str]] = []

    async def revision(self) -> int:
        return 1

    async def list_projects(self) -> list[ProjectRecord]:
        return [self.project]

    async def list_tokens(self) -> list[TokenRecord]:
        return self.tokens

    async def find_tokens(self, hashes: list[str]) -> list[TokenRecord]:
        self.lookups.append(sorted(hashes))
        await asyncio.sleep(0)
        return [t for t in self.tokens if t.token_hash in hashes]

    async def get_project(self, project_id: str) -> ProjectRecord | None:
        return self.project if project_id == self.project.id else None

    async def add_usage(self, deltas: dict[str, UsageDelta]) -> None:
        self.usage.append(deltas)

    async def consume(self, token_id: str, now: datetime) -> bool:
        await asyncio.sleep(0)
        if self.remaining[token_id] > 0:
            self.remaining[token_id] -= 1
            return True
        return False


def registry_with(shared: bool = False, **fields: Any) -> tuple[TokenRegistry, str, FakeStore]:
    secret = new_token()
    project = ProjectRecord("p1", "proj", True, {"openai": "plain:sk-project"}, T0, T0)
    record = TokenRecord(
        id="t1",
        project_id="p1",
        token_hash=hash_token(secret),
        hint="h",
        created_at=T0,
        updated_at=T0,
        **fields,
    )
    store = FakeStore(project, [record])
    bus = MemoryBus(queue_size=1000, source="test")
    registry = TokenRegistry(
        store,  # type: ignore[arg-type]
        Cipher(None),
        AuditLog(None, None, bus),
        bus,
        shared=shared,
    )
    registry.follow()
    asyncio.run(registry.refresh(force=True))
    return registry, secret, store


def admit_many(registry: TokenRegistry, secret: str, n: int) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(
            *(registry.admit(secret, request_id="r", client_ip=None) for _ in range(n)),
            return_exceptions=True,
        )

    return asyncio.run(main())


@pytest.mark.parametrize("shared", [False, True])
def test_exactly_max_requests_are_admitted_under_concurrency(shared: bool) -> None:
    registry, secret, _ = registry_with(shared, max_requests=7)
    results = admit_many(registry, secret, 30)
    admitted = [r for r in results if isinstance(r, Principal)]
    assert len(admitted) == 7
    assert all(isinstance(r, QuotaExceeded) for r in results if r not in admitted)
    assert admitted[0].upstream_keys == {"openai": "sk-project"}


def test_rejections_by_state() -> None:
    registry, secret, _ = registry_with(rpm=2)
    assert len([r for r in admit_many(registry, secret, 3) if isinstance(r, Principal)]) == 2
    with pytest.raises(AuthenticationFailed, match="invalid"):
        asyncio.run(registry.admit(new_token(), request_id="r", client_ip=None))
    registry, secret, _ = registry_with(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(AuthenticationFailed, match="expired"):
        asyncio.run(registry.admit(secret, request_id="r", client_ip=None))
    registry, secret, store = registry_with(is_active=False)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        asyncio.run(registry.admit(secret, request_id="r", client_ip=None))
    store.project.is_active = False
    store.tokens[0].is_active = True
    registry.put_project(store.project)
    with pytest.raises(PermissionDenied):
        asyncio.run(registry.admit(secret, request_id="r", client_ip=None))


def test_tpm_counts_finished_usage() -> None:
    from vdm.ir import Usage

    registry, secret, _ = registry_with(tpm=100)
    principal = asyncio.run(registry.admit(secret, request_id="r", client_ip=None))
    asyncio.run(registry.record_usage(principal, Usage(input_tokens=60, output_tokens=50)))
    with pytest.raises(QuotaExceeded, match="tokens per minute") as info:
        asyncio.run(registry.admit(secret, request_id="r", client_ip=None))
    assert int(info.value.headers["retry-after"]) >= 1


def test_usage_events_are_summed_into_one_write_per_batch() -> None:
    registry, secret, store = registry_with()
    bus = registry._bus

    async def main() -> None:
        await bus.start()
        principal = await registry.admit(secret, request_id="r", client_ip=None)
        await registry.admit(secret, request_id="r", client_ip=None)
        registry.record_cache_hit(principal)
        await bus.close()

    asyncio.run(main())
    assert len(store.usage) == 1
    delta = store.usage[0]["t1"]
    assert (delta.requests, delta.cache_hits) == (2, 1)
    assert delta.last_used_at is not None and delta.last_used_at.tzinfo is UTC


def _later_token(store: FakeStore) -> str:
    """A token made elsewhere after the registry loaded (only the database has it)."""
    secret = new_token()
    store.tokens.append(
        TokenRecord(
            id="t-later",
            project_id="p1",
            token_hash=hash_token(secret),
            hint="h",
            created_at=T0,
            updated_at=T0,
        )
    )
    return secret


def test_a_token_made_elsewhere_is_read_through_on_its_first_request() -> None:
    registry, _, store = registry_with()
    later = _later_token(store)

    async def main() -> None:
        principal = await registry.admit(later, request_id="r", client_ip=None)
        assert principal.token_id == "t-later"
        await registry.admit(later, request_id="r", client_ip=None)  # known now: no query
        assert store.lookups == [[hash_token(later)]]

    asyncio.run(main())


def test_a_flood_of_random_tokens_is_batched_bounded_and_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vdm.tenants import registry as registry_module

    registry, _, store = registry_with()
    later = _later_token(store)

    async def admit(token: str) -> Any:
        try:
            return await registry.admit(token, request_id="r", client_ip=None)
        except AuthenticationFailed as exc:
            return exc

    async def main() -> None:
        flood = [new_token() for _ in range(3000)]
        results = await asyncio.gather(*(admit(t) for t in [*flood[:500], later, *flood[500:]]))
        # The real token in the middle of the flood is found; the rest refused.
        assert [r.token_id for r in results if isinstance(r, Principal)] == ["t-later"]
        assert sum(isinstance(r, AuthenticationFailed) for r in results) == 3000
        # At most MAX_PENDING tokens were looked up, BATCH to a query, one query at a time.
        looked_up = [h for batch in store.lookups for h in batch]
        assert len(looked_up) == registry_module.MAX_PENDING
        assert max(len(b) for b in store.lookups) <= registry_module.BATCH
        assert len(store.lookups) == -(-registry_module.MAX_PENDING // registry_module.BATCH)
        # The same wrong tokens again: remembered as unknown, no query at all.
        before = len(store.lookups)
        await asyncio.gather(*(admit(t) for t in flood[:500]))
        assert len(store.lookups) == before

    asyncio.run(main())


def test_the_memory_of_unknown_tokens_is_bounded_in_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from vdm.tenants import registry as registry_module

    monkeypatch.setattr(registry_module, "UNKNOWN_MAX", 10)
    registry, _, store = registry_with()

    async def refuse(token: str) -> None:
        with pytest.raises(AuthenticationFailed):
            await registry.admit(token, request_id="r", client_ip=None)

    async def main() -> None:
        wrong = [new_token() for _ in range(20)]
        for token in wrong:
            await refuse(token)
        assert len(store.lookups) == 20
        await refuse(wrong[-1])  # among the newest 10: no query
        assert len(store.lookups) == 20
        await refuse(wrong[0])  # forgotten: asked again
        assert len(store.lookups) == 21

    asyncio.run(main())


def test_the_memory_of_unknown_tokens_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from vdm.tenants import registry as registry_module

    registry, _, store = registry_with()
    clock = [1000.0]
    monkeypatch.setattr(registry_module, "monotonic", lambda: clock[0])

    async def main() -> None:
        token = new_token()
        for _ in range(2):
            with pytest.raises(AuthenticationFailed):
                await registry.admit(token, request_id="r", client_ip=None)
        assert len(store.lookups) == 1
        clock[0] += registry_module.UNKNOWN_TTL + 1
        with pytest.raises(AuthenticationFailed):
            await registry.admit(token, request_id="r", client_ip=None)
        assert len(store.lookups) == 2

    asyncio.run(main())
