"""What requests cost: priced from the upstream's usage with the genai-prices
table (or the operator's ``[providers.NAME.prices]``), shown in
``x-vdm-cost-usd``, ``vdm_spend_usd_total`` and the running totals; driven by
the official SDKs against the real gateway process and fake upstreams."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    SSEReply,
    anthropic_message,
    anthropic_stream_of,
    completion,
    stream_of,
)
from tests.support.gateway import Gateway, run_gateway
from tests.support.waiting import eventually

ASK: Any = [{"role": "user", "content": "hi"}]
# gpt-4o: $2.50 input, $1.25 cached input, $10 output per million tokens.
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 200},
}
GPT_4O_COST = (800 * 2.5 + 200 * 1.25 + 500 * 10) / 1e6
# claude-3-5-haiku-latest: $0.80 input, $0.08 cache read, $4 output per million tokens.
HAIKU_COST = (25 * 0.8 + 3 * 0.08 + 20 * 4) / 1e6


@pytest.fixture(scope="module")
def priced(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("spend")
    work = tmp / "work"
    work.mkdir()
    (work / "vdm.toml").write_text(
        'default-provider = "openai"\n'
        "[providers.openai]\n"
        'api-key = "sk-test"\n'
        f'base-url = "{fake_openai.url}/v1"\n'
        "[providers.anthropic]\n"
        'api-key = "sk-ant"\n'
        f'base-url = "{fake_anthropic.url}"\n'
        "[providers.local]\n"
        'api-key = "sk-local"\n'
        f'base-url = "{fake_openai.url}/v1"\n'
        "[providers.local.prices.my-model]\n"
        "input = 1.0\n"
        "output = 2.0\n"
        "[providers.openai.prices.gpt-4o-mini]\n"
        "input = 100.0\n"
        "output = 100.0\n"
    )
    with run_gateway({"MAX_RETRIES": "0"}, tmp, cwd=work) as gw:
        yield gw


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=30)


def spend(gw: Gateway, provider: str) -> float:
    """``vdm_spend_usd_total`` of ``provider``, all its models."""
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vdm_spend_usd_total{") and f'provider="{provider}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_non_streamed_answer_names_its_cost_from_the_price_table(
    priced: Gateway, fake_openai: FakeUpstream
) -> None:
    before = spend(priced, "openai")
    fake_openai.reply(JSONReply(completion(usage=USAGE, model="gpt-4o")))
    with sdk(priced) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ASK)
    assert float(raw.headers["x-vdm-cost-usd"]) == pytest.approx(GPT_4O_COST)
    after = eventually(lambda: spend(priced, "openai"), lambda v: v > before)
    assert after == pytest.approx(before + GPT_4O_COST)


def test_an_operator_price_overrides_the_table_and_prices_unlisted_models(
    priced: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(
        JSONReply(completion(usage=USAGE)), JSONReply(completion(usage=USAGE, model="gpt-4o-mini"))
    )
    with sdk(priced) as client:
        local = client.chat.completions.with_raw_response.create(
            model="local:my-model", messages=ASK
        )
        mini = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
    # (cache reads at the input's price when the operator names none)
    assert float(local.headers["x-vdm-cost-usd"]) == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert float(mini.headers["x-vdm-cost-usd"]) == pytest.approx(1500 * 100.0 / 1e6)


def test_a_model_without_a_price_has_no_cost_not_zero(
    priced: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(JSONReply(completion(usage=USAGE)))
    with sdk(priced) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="local:unlisted-model", messages=ASK
        )
    assert "x-vdm-cost-usd" not in raw.headers
    assert raw.parse().usage is not None


def test_a_streamed_answer_is_counted_in_the_spend_and_the_running_totals(
    priced: Gateway, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.reply(
        SSEReply(anthropic_stream_of(anthropic_message(model="claude-3-5-haiku-latest")))
    )
    before = spend(priced, "anthropic")
    with (
        anthropic.Anthropic(base_url=priced.url, api_key="k", max_retries=0) as client,
        client.messages.stream(
            model="anthropic:claude-3-5-haiku-latest", max_tokens=50, messages=ASK
        ) as stream,
    ):
        stream.until_done()
    after = eventually(lambda: spend(priced, "anthropic"), lambda v: v > before)
    assert after == pytest.approx(before + HAIKU_COST)

    def totals() -> float:
        report = httpx.get(priced.url + "/metrics/running-totals?provider=anthropic").json()
        return float(report["totals"]["spend_usd"])

    assert eventually(totals, lambda v: v >= HAIKU_COST * 0.999) == pytest.approx(HAIKU_COST)


def test_the_metric_has_bounded_labels(priced: Gateway) -> None:
    text = httpx.get(priced.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("vdm_spend_usd_total{"):
            assert set(re.findall(r"(\w+)=", line.split("}")[0])) == {"door", "provider", "model"}


# ---------------------------------------------------------------- usage for every stream


def tokens(gw: Gateway, provider: str, kind: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vdm_tokens_total{")
        and f'provider="{provider}"' in line
        and f'type="{kind}"' in line
    )


def test_a_stream_without_include_usage_is_counted_and_the_client_sees_no_usage_chunk(
    priced: Gateway, fake_openai: FakeUpstream
) -> None:
    body = completion("Hello there!", usage=USAGE, model="gpt-4o")
    fake_openai.reply(SSEReply(stream_of(body)))
    before_out = tokens(priced, "openai", "output")
    before_spend = spend(priced, "openai")
    with sdk(priced) as client:
        chunks = list(client.chat.completions.create(model="gpt-4o", messages=ASK, stream=True))
    asked = fake_openai.last.json
    assert asked["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there!"
    assert all(c.usage is None and c.choices for c in chunks)
    after_out = eventually(lambda: tokens(priced, "openai", "output"), lambda v: v > before_out)
    assert after_out == before_out + 500
    assert spend(priced, "openai") == pytest.approx(before_spend + GPT_4O_COST)


def test_raw_http_without_stream_options_gets_no_usage_bytes(
    priced: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(SSEReply(stream_of(completion("Hi", usage=USAGE, model="gpt-4o"))))
    before = tokens(priced, "openai", "input")
    with httpx.stream(
        "POST",
        priced.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": ASK, "stream": True, "stream_options": {}},
        timeout=30,
    ) as response:
        raw = b"".join(response.iter_bytes())
    assert response.status_code == 200
    assert b'"usage":{' not in raw.replace(b" ", b"") and raw.rstrip().endswith(b"[DONE]")
    assert fake_openai.last.json["stream_options"] == {"include_usage": True}
    after = eventually(lambda: tokens(priced, "openai", "input"), lambda v: v > before)
    assert after == before + 800


def test_a_client_that_asks_for_usage_still_gets_it(
    priced: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(SSEReply(stream_of(completion("Hi", usage=USAGE, model="gpt-4o"))))
    with sdk(priced) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o",
                messages=ASK,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 500


def test_the_dashboard_shows_spend_today_and_the_top_models(
    priced: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(JSONReply(completion(usage=USAGE, model="gpt-4o")))
    with sdk(priced) as client:
        client.chat.completions.create(model="gpt-4o", messages=ASK)

    def snapshot() -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(priced.url + "/dashboard/api/snapshot", timeout=10).json()
        return data

    snap = eventually(snapshot, lambda s: s["spend_today"]["usd"] >= GPT_4O_COST)
    today = snap["spend_today"]
    assert today["usd"] >= GPT_4O_COST and today["projects"] == []  # (no tenants here)
    spent = {m["name"]: m["usd"] for m in today["models"]}
    assert spent["openai:gpt-4o"] >= GPT_4O_COST
    assert list(spent.values()) == sorted(spent.values(), reverse=True)  # (the top first)
    assert snap["totals"]["spend_usd"] == pytest.approx(today["usd"], abs=1e-6)
