"""ModelCatalog: the merge (dedup, bare ids for the default provider, names an
alias would capture), the TTL, failure back-off, single flight, the wait bound."""

from __future__ import annotations

import asyncio

from tests.support.waiting import BOUND, until
from vdm.errors import AuthenticationFailed, InvalidRequest, UpstreamUnreachable
from vdm.models import MAX_CREDENTIALS, ModelCatalog, merge
from vdm.protocols.model_list import ModelEntry
from vdm.providers.base import UpstreamModel
from vdm.routing import Router

ROUTER = Router(
    ["openai", "ant", "echo"],
    "openai",
    {"openai": {"fast": "gpt-fast"}, "ant": {"big": "claude-x"}},
    {},
)


def resolve(model: str) -> tuple[str, str]:
    route = ROUTER.resolve(model)
    return route.provider, route.model


ALIASES = [
    ModelEntry("fast", "fast (openai:gpt-fast)", "openai"),
    ModelEntry("openai:fast", "fast (openai:gpt-fast)", "openai"),
    ModelEntry("ant:big", "big (ant:claude-x)", "ant"),
]


def test_merge_lists_default_models_bare_and_prefixed_others_prefixed() -> None:
    listed = {
        "openai": [UpstreamModel("gpt-4o")],
        "ant": [UpstreamModel("claude-sonnet-4-5", "Claude Sonnet 4.5")],
    }
    out = merge(ALIASES, listed, "openai", resolve)
    assert [e.id for e in out] == [
        "fast",
        "openai:fast",
        "ant:big",
        "gpt-4o",
        "openai:gpt-4o",
        "ant:claude-sonnet-4-5",
    ]
    assert out[-1] == ModelEntry("ant:claude-sonnet-4-5", "Claude Sonnet 4.5", "ant")
    assert out[3] == ModelEntry("gpt-4o", "gpt-4o", "openai")


def test_merge_deduplicates_first_wins() -> None:
    listed = {"openai": [UpstreamModel("gpt-4o"), UpstreamModel("gpt-4o")]}
    out = merge([*ALIASES, ModelEntry("gpt-4o", "the alias", "openai")], listed, "openai", resolve)
    assert [e.id for e in out].count("gpt-4o") == 1
    assert next(e for e in out if e.id == "gpt-4o").display_name == "the alias"
    assert [e.id for e in out].count("openai:gpt-4o") == 1


def test_merge_hides_names_an_alias_would_capture() -> None:
    # aliases match substrings: "gpt-4o-fast" routes to openai's alias "fast"
    # (gpt-fast), prefixed or not; a bare "big-model" goes to ant's alias "big",
    # while "openai:big-model" stays with openai (prefixes apply their own aliases)
    listed = {
        "openai": [UpstreamModel("gpt-4o-fast"), UpstreamModel("big-model")],
        "ant": [UpstreamModel("claude-big")],
    }
    out = {e.id for e in merge([], listed, "openai", resolve)}
    assert out == {"openai:big-model"}


def test_merge_skips_ids_the_router_refuses() -> None:
    def refuse(model: str) -> tuple[str, str]:
        raise InvalidRequest("no")

    assert merge([], {"openai": [UpstreamModel("x")]}, "openai", refuse) == []


class Lister:
    """``hold``: each fetch waits until it is set (a slow upstream, for as long
    as the test needs)."""

    def __init__(self, *answers: object, hold: asyncio.Event | None = None) -> None:
        self.answers = list(answers)
        self.calls: list[str | None] = []
        self.hold = hold

    async def list_models(self, client_key: str | None) -> list[UpstreamModel]:
        self.calls.append(client_key)
        if self.hold is not None:
            await self.hold.wait()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return [UpstreamModel(m) for m in answer]  # type: ignore[union-attr]


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def catalog(
    listers: dict[str, Lister], clock: Clock, *, wait: float = 1.0, per_client: tuple[str, ...] = ()
) -> ModelCatalog:
    return ModelCatalog(
        listers,  # type: ignore[arg-type]
        [],
        "openai",
        resolve,
        ttl=60.0,
        wait=wait,
        per_client=per_client,
        clock=clock,
    )


def test_ttl_cache_and_refresh() -> None:
    async def run() -> None:
        clock = Clock()
        lister = Lister(["a"], ["b"])
        cat = catalog({"openai": lister}, clock)
        assert [e.id for e in await cat.entries(None)] == ["a", "openai:a"]
        clock.now += 59
        assert [e.id for e in await cat.entries(None)] == ["a", "openai:a"]
        assert len(lister.calls) == 1
        clock.now += 2  # stale: served as it is, refreshed in the background
        assert [e.id for e in await cat.entries(None)] == ["a", "openai:a"]
        await asyncio.sleep(0)
        assert [e.id for e in await cat.entries(None)] == ["b", "openai:b"]
        assert len(lister.calls) == 2
        await cat.close()

    asyncio.run(run())


def test_failures_back_off_and_keep_the_stale_list() -> None:
    async def run() -> None:
        clock = Clock()
        lister = Lister(["a"], UpstreamUnreachable("down", provider="openai"), ["c"])
        cat = catalog({"openai": lister}, clock)
        await cat.entries(None)
        clock.now += 61
        await cat.entries(None)
        await asyncio.sleep(0)  # the refresh failed
        assert len(lister.calls) == 2
        clock.now += 10  # within min(ttl, 30 s): not retried, the old list stays
        assert [e.id for e in await cat.entries(None)] == ["a", "openai:a"]
        assert len(lister.calls) == 2
        clock.now += 30
        await cat.entries(None)
        await asyncio.sleep(0)
        assert [e.id for e in await cat.entries(None)] == ["c", "openai:c"]
        await cat.close()

    asyncio.run(run())


def test_one_fetch_in_flight_and_a_bounded_wait() -> None:
    async def run() -> None:
        slow = Lister(["s"], hold=asyncio.Event())
        cat = catalog({"openai": slow}, Clock(), wait=0.05)
        # The fetch is held for good: only the wait's bound can end these.
        results = await asyncio.wait_for(
            asyncio.gather(*(cat.entries(None) for _ in range(5))), BOUND
        )
        assert all(r == [] for r in results)  # nobody waited for the slow fetch
        assert len(slow.calls) == 1
        assert slow.hold is not None
        slow.hold.set()
        assert await until(lambda: cat.lists("openai", "s"))  # it went on alone
        assert [e.id for e in await cat.entries(None)] == ["s", "openai:s"]
        assert len(slow.calls) == 1
        await cat.close()

    asyncio.run(run())


def test_passthrough_without_a_key_is_skipped_not_failed() -> None:
    async def run() -> None:
        lister = Lister(AuthenticationFailed("no key"), ["p"])
        cat = catalog({"openai": lister}, Clock(), per_client=("openai",))
        assert await cat.entries(None) == []
        assert [e.id for e in await cat.entries("client")] == ["p", "openai:p"]
        assert lister.calls == [None, "client"]
        await cat.close()

    asyncio.run(run())


class KeyedLister:
    """A !PASSTHRU upstream: each key sees its own models; no key, none."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []

    async def list_models(self, client_key: str | None) -> list[UpstreamModel]:
        self.calls.append(client_key)
        if client_key is None:
            raise AuthenticationFailed("no key")
        return [UpstreamModel(f"ft-of-{client_key}")]


def test_passthrough_lists_are_kept_per_credential_never_shared() -> None:
    async def run() -> None:
        clock = Clock()
        keyed, shared = KeyedLister(), Lister(["shared-m"])
        cat = catalog({"openai": keyed, "ant": shared}, clock, per_client=("openai",))  # type: ignore[dict-item]
        alice = [e.id for e in await cat.entries("alice")]
        bob = [e.id for e in await cat.entries("bob")]
        assert "ft-of-alice" in alice and "ft-of-bob" not in alice
        assert "ft-of-bob" in bob and "ft-of-alice" not in bob
        anonymous = [e.id for e in await cat.entries(None)]
        assert not any(i.startswith("ft-of") for i in anonymous) and "ant:shared-m" in anonymous
        assert [e.id for e in await cat.entries("alice")] == alice  # cached: no new fetch
        assert keyed.calls == ["alice", "bob", None]
        assert len(shared.calls) == 1  # a shared list is fetched once for all
        # only hashes are kept, and a bounded number of them
        assert "alice" not in repr(cat._views.keys())
        for i in range(MAX_CREDENTIALS + 10):
            await cat.entries(f"k{i}")
        assert len(cat._views) == MAX_CREDENTIALS + 1  # (+ the callers without a key)
        calls = len(keyed.calls)
        assert "ft-of-alice" in [e.id for e in await cat.entries("alice")]  # evicted: fetched
        assert len(keyed.calls) == calls + 1
        await cat.close()

    asyncio.run(run())


def test_close_cancels_in_flight_fetches() -> None:
    async def run() -> None:
        slow = Lister(["s"], hold=asyncio.Event())  # never set
        cat = catalog({"openai": slow}, Clock(), wait=0.01)
        cat.start()
        await asyncio.sleep(0)
        await cat.close()  # returns at once, the fetch cancelled
        assert slow.calls == [None]

    asyncio.run(asyncio.wait_for(run(), 2))
