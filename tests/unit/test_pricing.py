"""vdm.pricing: a request's cost from its usage, the genai-prices table and the
operator's prices; unknown models cost None, never 0."""

from __future__ import annotations

import pytest

from vdm import ir
from vdm.pricing import Prices

GPT_4O_COST = (800 * 2.5 + 200 * 1.25 + 500 * 10) / 1e6


def test_the_table_the_operator_and_tiers() -> None:
    prices = Prices(
        {"openai": "https://api.openai.com/v1", "self": "http://127.0.0.1:1/v1"},
        {"self": {"m": {"input": 1.0, "output": 3.0, "cache-read": 0.5}}},
    )
    usage = ir.Usage(input_tokens=800, output_tokens=500, cache_read_input_tokens=200)
    assert prices.cost("openai", "gpt-4o", usage) == pytest.approx(GPT_4O_COST)
    assert prices.cost("self", "m", usage) == pytest.approx((800 + 1500 + 100) / 1e6)
    assert prices.cost("self", "other", usage) is None
    assert prices.cost("openai", "gpt-4o", None) is None
    # Tiers: past 200k prompt tokens every token at the tier's price.
    big = ir.Usage(input_tokens=250_000, output_tokens=1000)
    sonnet = prices.cost("anthropic", "claude-sonnet-4-5", big)
    assert sonnet == pytest.approx((250_000 * 6.0 + 1000 * 22.5) / 1e6)


def test_the_cost_matches_the_packages_own_calculation() -> None:
    import genai_prices

    prices = Prices({}, {})
    usage = ir.Usage(
        input_tokens=700,
        output_tokens=300,
        cache_read_input_tokens=200,
        cache_creation_input_tokens=100,
    )
    ours = prices.cost("anthropic", "claude-3-5-haiku-latest", usage)
    theirs = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=1000, output_tokens=300, cache_read_tokens=200, cache_write_tokens=100
        ),
        "claude-3-5-haiku-latest",
        provider_id="anthropic",
    ).total_price
    assert ours == pytest.approx(float(theirs))


def test_each_pair_is_looked_up_once() -> None:
    prices = Prices({}, {})
    usage = ir.Usage(input_tokens=1, output_tokens=1)
    first = prices.rates("openai", "gpt-4o")
    assert prices.rates("openai", "gpt-4o") is first
    assert prices.rates("nobody", "nothing") is None
    assert ("nobody", "nothing") in prices._cache  # (a miss is kept too)
    assert prices.cost("echo", "anything", usage) is None
