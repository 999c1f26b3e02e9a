"""Shared fixtures: fake upstreams and one gateway process wired to them.

The session gateway knows three upstream providers besides ``echo``:

* ``openai``  — OpenAI format, supports reasoning (the package default), on
  the fake OpenAI upstream; default provider;
* ``plain``   — OpenAI format without reasoning, same fake;
* ``ant``     — Anthropic-native, on the fake Anthropic upstream;

and user aliases ``OPENAI_ALIAS_FAST=gpt-fast`` and ``ANT_ALIAS_CLAUDE=claude-x``.
Tests that need other settings start their own gateway with ``run_gateway``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import hypothesis  # noqa: F401  (imported early: a lazy import at session end trips CPython 3.11.7's gh-106905)
import pytest

from tests.support.fakes import FakeUpstream
from tests.support.gateway import Gateway, run_gateway


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("openai").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("anthropic").start()
    yield fake
    fake.stop()


def upstream_env(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test-openai",
        "OPENAI_BASE_URL": fake_openai.url + "/v1",
        "PLAIN_API_KEY": "sk-test-plain",
        "PLAIN_BASE_URL": fake_openai.url + "/v1",
        "ANT_API_KEY": "sk-ant-test",
        "ANT_BASE_URL": fake_anthropic.url,
        "ANT_API_FORMAT": "anthropic",
        "OPENAI_ALIAS_FAST": "gpt-fast",
        "ANT_ALIAS_CLAUDE": "claude-x",
        "VDM_DEFAULT_PROVIDER": "openai",
        # Deterministic protocol tests: one attempt, refused keys back at once.
        # tests/integration/test_resilience*.py run gateways with the defaults.
        "MAX_RETRIES": "0",
        "KEY_COOLDOWN_MAX": "0.001",
    }


@pytest.fixture(scope="session")
def gateway(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    with run_gateway(
        upstream_env(fake_openai, fake_anthropic), tmp_path_factory.mktemp("gateway")
    ) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _reset_fakes(request: pytest.FixtureRequest) -> Iterator[None]:
    fakes = [
        request.getfixturevalue(name)
        for name in ("fake_openai", "fake_anthropic")
        if name in request.fixturenames
    ]
    for fake in fakes:
        fake.reset()
    yield
    for fake in fakes:
        fake.reset()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=gateway.url, api_key="client-key", max_retries=0, timeout=20
    ) as c:
        yield c


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
