"""``GET /v1/models`` lists the providers' own models: merged with the aliases
in both shapes (via both SDKs), cached, refreshed after the TTL, failing
providers skipped fast, one fetch shared by concurrent requests, prefetched
at start-up, cancelled cleanly at shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.support.fakes import (
    FakeUpstream,
    Hang,
    JSONReply,
    Recorded,
    Reply,
    established_connections,
    unread_requests,
)
from tests.support.gateway import Gateway, free_port, run_gateway
from tests.support.waiting import eventually, wait_for

OPENAI_MODELS = {
    "object": "list",
    "data": [
        {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "system"},
        {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "system"},
    ],
}
ANT_MODELS = {
    "data": [
        {
            "type": "model",
            "id": "claude-sonnet-4-5",
            "display_name": "Claude Sonnet 4.5",
            "created_at": "2025-09-29T00:00:00Z",
        },
    ],
    "has_more": False,
    "first_id": "claude-sonnet-4-5",
    "last_id": "claude-sonnet-4-5",
}


def lists(body: dict[str, object], release: threading.Event | None = None) -> object:
    """Answer model listings with ``body`` (once ``release`` is set, if given)."""

    def respond(recorded: Recorded) -> Reply:
        if recorded.method == "GET" and recorded.path.endswith("/models"):
            return JSONReply(body, release=release)
        return JSONReply({"error": {"message": "unexpected"}}, status=599)

    return respond


@pytest.fixture(scope="module")
def up_openai() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("cat-openai").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def up_ant() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("cat-ant").start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fakes(up_openai: FakeUpstream, up_ant: FakeUpstream) -> Iterator[None]:
    for fake in (up_openai, up_ant):
        fake.reset()
    up_openai.responder = lists(OPENAI_MODELS)  # type: ignore[assignment]
    up_ant.responder = lists(ANT_MODELS)  # type: ignore[assignment]
    yield
    for fake in (up_openai, up_ant):
        fake.reset()


def env_for(up_openai: FakeUpstream, up_ant: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-openai-secret",
        "OPENAI_BASE_URL": up_openai.url + "/v1",
        "OPENAI_ALIAS_FAST": "gpt-fast",
        "ANT_API_KEY": "sk-ant-secret",
        "ANT_BASE_URL": up_ant.url,
        "ANT_API_FORMAT": "anthropic",
        "VDM_DEFAULT_PROVIDER": "openai",
        **extra,
    }


@contextmanager
def set_at_the_end(event: threading.Event) -> Iterator[None]:
    try:
        yield
    finally:
        event.set()


def get_models(gateway: Gateway, **headers: str) -> dict[str, object]:
    response = httpx.get(gateway.url + "/v1/models", headers=headers, timeout=10)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def ids(body: dict[str, object]) -> list[str]:
    return [m["id"] for m in body["data"]]  # type: ignore[attr-defined, index]


@pytest.fixture(scope="module")
def gateway(
    up_openai: FakeUpstream, up_ant: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with run_gateway(env_for(up_openai, up_ant), tmp_path_factory.mktemp("catalog")) as gw:
        yield gw


# ---------------------------------------------------------------- merged, both SDKs


def test_openai_sdk_sees_provider_models_and_aliases(
    gateway: Gateway, up_openai: FakeUpstream, up_ant: FakeUpstream
) -> None:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="client", max_retries=0) as client:
        models = {m.id: m for m in client.models.list()}
    # the default provider's models bare and prefixed, the others prefixed
    assert {
        "gpt-4o",
        "openai:gpt-4o",
        "gpt-4o-mini",
        "openai:gpt-4o-mini",
        "ant:claude-sonnet-4-5",
    } <= set(models)
    assert "claude-sonnet-4-5" not in models
    assert {"fast", "openai:fast", "sonnet", "echo:echo"} <= set(models)  # aliases remain
    assert models["gpt-4o"].owned_by == "openai"
    assert models["ant:claude-sonnet-4-5"].owned_by == "ant"
    assert models["fast"].owned_by == "openai"
    listed = up_openai.last
    assert (listed.method, listed.path) == ("GET", "/v1/models")
    assert listed.headers["authorization"] == "Bearer sk-openai-secret"
    listed = up_ant.last
    assert (listed.method, listed.path, listed.query) == ("GET", "/v1/models", "limit=1000")
    assert listed.headers["x-api-key"] == "sk-ant-secret"
    assert listed.headers["anthropic-version"] == "2023-06-01"


def test_anthropic_sdk_sees_display_names_and_the_page_fields(gateway: Gateway) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="client", max_retries=0) as client:
        page = client.models.list()
    by_id = {m.id: m for m in page.data}
    assert len(by_id) == len(page.data)  # no duplicates
    assert by_id["ant:claude-sonnet-4-5"].display_name == "Claude Sonnet 4.5"
    assert by_id["openai:gpt-4o"].display_name == "gpt-4o"
    assert "gpt-fast" in by_id["fast"].display_name
    raw = get_models(gateway, **{"anthropic-version": "2023-06-01"})
    assert raw["has_more"] is False
    assert raw["first_id"] == page.data[0].id and raw["last_id"] == page.data[-1].id
    assert set(ids(raw)) == set(ids(get_models(gateway)))  # one list, two shapes


def test_a_second_call_is_served_from_the_cache(
    gateway: Gateway, up_openai: FakeUpstream, up_ant: FakeUpstream
) -> None:
    assert "gpt-4o" in ids(get_models(gateway))  # filled (here or by an earlier test)
    up_openai.reset()
    up_ant.reset()
    assert "gpt-4o" in ids(get_models(gateway))
    assert up_openai.requests == [] and up_ant.requests == []


# ---------------------------------------------------------------- TTL, failures, single flight


def test_a_stale_list_is_served_then_refreshed(
    up_openai: FakeUpstream, up_ant: FakeUpstream, tmp_path: Path
) -> None:
    refreshed = threading.Event()  # the refresh is held until the test has seen it start
    with (
        run_gateway(env_for(up_openai, up_ant, MODELS_CACHE_TTL="2"), tmp_path) as gw,
        set_at_the_end(refreshed),
    ):
        assert "gpt-4o" in ids(get_models(gw))
        up_openai.reset()
        up_openai.responder = lists({"data": [{"id": "gpt-5"}]}, refreshed)  # type: ignore[assignment]
        assert ids(get_models(gw)) == ids(get_models(gw))  # fresh: no refetch
        assert up_openai.requests == []
        # Time is the subject (the gateway's TTL): asked until the list goes stale.
        seen = eventually(
            lambda: ids(get_models(gw)), lambda _: bool(up_openai.requests), every=0.05
        )
        assert up_openai.requests, "the list never went stale"
        assert "gpt-4o" in seen  # stale is served at once, a refresh starts
        assert "gpt-4o" in ids(get_models(gw))  # ... and while it runs
        refreshed.set()
        assert up_openai.wait_for(lambda: "gpt-5" in ids(get_models(gw)))
        fresh = ids(get_models(gw))
        assert "gpt-4o" not in fresh and "openai:gpt-5" in fresh
        assert len(up_openai.requests) == 1


def test_failing_providers_are_skipped_fast_and_logged_once(
    up_openai: FakeUpstream, up_ant: FakeUpstream, tmp_path: Path
) -> None:
    broken, slow = FakeUpstream("broken").start(), FakeUpstream("slow").start()
    try:
        broken.responder = lambda r: JSONReply({"error": {"message": "boom"}}, status=500)
        slow.responder = lambda r: Hang(30)
        env = env_for(
            up_openai,
            up_ant,
            MODELS_WAIT="0.5",
            DOWN_API_KEY="sk-down-secret",
            DOWN_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
            BROKEN_API_KEY="sk-broken-secret",
            BROKEN_BASE_URL=broken.url + "/v1",
            SLOW_API_KEY="sk-slow-secret",
            SLOW_BASE_URL=slow.url + "/v1",
            SLOW_ALIAS_TURTLE="slow-model",
        )
        with run_gateway(env, tmp_path) as gw:
            for _ in range(3):
                started = time.monotonic()
                body = get_models(gw)
                assert time.monotonic() - started < 2.0
                assert {"gpt-4o", "ant:claude-sonnet-4-5", "slow:turtle", "fast"} <= set(ids(body))
                assert not any(i.startswith(("down:", "broken:", "slow:gpt")) for i in ids(body))
            assert len(slow.requests) == 1  # one in-flight fetch, shared
            assert len(broken.requests) == 1  # not retried within the failure period
    finally:
        broken.stop()
        slow.stop()
    log, process = gw.log(), gw.process
    assert log.count("cannot list the models of provider 'down'") == 1
    assert log.count("cannot list the models of provider 'broken'") == 1
    assert "boom" in log
    assert "secret" not in log
    # shut down with the slow fetch still in flight: cancelled, no traceback
    assert "Application shutdown complete" in log
    assert process.returncode in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down
    assert "Traceback" not in log and "Task was destroyed" not in log


def test_concurrent_requests_share_one_fetch(
    up_openai: FakeUpstream, up_ant: FakeUpstream, tmp_path: Path
) -> None:
    fetched = threading.Event()  # the fetch is held until every request waits for it
    up_openai.responder = lists(OPENAI_MODELS, fetched)  # type: ignore[assignment]
    env = env_for(up_openai, up_ant, MODELS_WAIT="30")
    with run_gateway(env, tmp_path) as gw, ThreadPoolExecutor(6) as pool:
        port = int(gw.url.rsplit(":", 1)[1])
        with set_at_the_end(fetched):
            asked = [pool.submit(get_models, gw) for _ in range(6)]
            assert up_openai.wait_for(lambda: len(up_openai.requests) == 1)
            # all six connected, and the gateway has read each request
            assert wait_for(
                lambda: established_connections(port) == 6 and unread_requests(port) == 0
            ), (established_connections(port), unread_requests(port))
        bodies = [a.result() for a in asked]
    assert all("gpt-4o" in ids(b) for b in bodies)  # each waited for the one fetch
    assert len(up_openai.requests) == 1 and len(up_ant.requests) == 1


def test_prefetch_at_start_up(
    up_openai: FakeUpstream, up_ant: FakeUpstream, tmp_path: Path
) -> None:
    with run_gateway(env_for(up_openai, up_ant, MODELS_PREFETCH="true"), tmp_path) as gw:
        assert up_openai.wait_for(lambda: len(up_openai.requests) == 1)
        assert up_ant.wait_for(lambda: len(up_ant.requests) == 1)
        # (done or still in flight, the prefetch is the one fetch a request uses)
        assert "ant:claude-sonnet-4-5" in ids(get_models(gw))
    assert len(up_openai.requests) == 1 and len(up_ant.requests) == 1


# ---------------------------------------------------------------- passthrough keys, Azure


def test_passthrough_only_providers_list_with_the_clients_key(
    up_openai: FakeUpstream, up_ant: FakeUpstream, tmp_path: Path
) -> None:
    env = env_for(
        up_openai,
        up_ant,
        OPENAI_API_KEY="!PASSTHRU",
        MODELS_PREFETCH="true",
        AZ_API_KEY="k",
        AZ_API_FORMAT="azure",
        AZ_BASE_URL="http://127.0.0.1:9",
        AZ_DEPLOYMENTS="gpt-4o=prod-4o,o3=prod-o3",
    )
    with run_gateway(env, tmp_path) as gw:
        assert up_ant.wait_for(lambda: len(up_ant.requests) == 1)
        anonymous = ids(get_models(gw))  # no key: the passthrough provider is skipped
        assert "openai:gpt-4o" not in anonymous and "fast" in anonymous
        assert up_openai.requests == []
        # Azure lists its configured deployments' models, without a request
        assert {"az:gpt-4o", "az:o3"} <= set(anonymous)
        keyed = ids(get_models(gw, authorization="Bearer client-own-key"))
        assert "openai:gpt-4o" in keyed
    assert up_openai.last.headers["authorization"] == "Bearer client-own-key"


def test_passthrough_lists_are_never_served_to_another_caller(
    up_openai: FakeUpstream, up_ant: FakeUpstream, tmp_path: Path
) -> None:
    def per_key(recorded: Recorded) -> Reply:
        key = recorded.headers.get("authorization", "").removeprefix("Bearer ")
        models = [{"id": f"ft:private-of-{key}", "object": "model"}]
        return JSONReply({"object": "list", "data": models})

    up_openai.responder = per_key
    # a pool of a static key and !PASSTHRU: a client's key wins when sent
    env = env_for(up_openai, up_ant, OPENAI_API_KEY="sk-static !PASSTHRU")
    with run_gateway(env, tmp_path) as gw:
        alice = ids(get_models(gw, authorization="Bearer alice-key"))
        bob = ids(get_models(gw, **{"x-api-key": "bob-key"}))
        anonymous = ids(get_models(gw))
        assert "openai:ft:private-of-alice-key" in alice
        assert not any("bob" in i or "static" in i for i in alice)
        assert "openai:ft:private-of-bob-key" in bob
        assert not any("alice" in i or "static" in i for i in bob)
        assert "openai:ft:private-of-sk-static" in anonymous  # the operator's key's list
        assert not any("alice" in i or "bob" in i for i in anonymous)
        assert ids(get_models(gw, authorization="Bearer alice-key")) == alice  # cached
        keys = [r.headers["authorization"] for r in up_openai.requests]
        assert keys == ["Bearer alice-key", "Bearer bob-key", "Bearer sk-static"]
