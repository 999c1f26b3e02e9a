"""What a request cost, in US dollars, from its usage and who served it.

Prices come from the ``genai-prices`` package (Pydantic's maintained table:
per provider and model, cache reads and writes, tiers by prompt size), looked
up by the provider's name as vdm knows it (``openai``, ``anthropic``,
``groq``…) and then by its base URL; an operator's own prices
(``[providers.NAME.prices]``, per million tokens) come first.  A model found
nowhere has no price: its cost is ``None``, never 0.

The lookup runs once per ``(provider, model)`` and is kept, compiled to a few
floats (:class:`Rates`), so pricing a request on the hot path is a dict lookup
and four multiplications.  Usage is vdm's (:class:`vdm.ir.Usage`, Anthropic's
sense): ``input_tokens`` excludes the cache reads and writes, reasoning tokens
are part of ``output_tokens``; a tier's threshold is the whole prompt (input,
cache reads and writes), as the table means it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from vdm import ir

# One price: USD per million tokens, below the first tier, and the tiers as
# (start, price) ascending: past ``start`` prompt tokens, all are priced so.
Rate = tuple[float, tuple[tuple[int, float], ...]]
PRICE_KEYS = ("input", "output", "cache-read", "cache-write")
MAX_CACHED = 10_000  # (provider, model) pairs kept: models are bounded by the routes


class Rates(NamedTuple):
    """A model's prices; cache reads and writes at the input's price when the
    table names none."""

    input: Rate
    output: Rate
    cache_read: Rate | None
    cache_write: Rate | None

    def cost(self, usage: ir.Usage) -> float:
        read = usage.cache_read_input_tokens or 0
        write = usage.cache_creation_input_tokens or 0
        prompt = usage.input_tokens + read + write
        total = _priced(self.input, usage.input_tokens, prompt)
        total += _priced(self.output, usage.output_tokens, prompt)
        if read:
            total += _priced(self.cache_read or self.input, read, prompt)
        if write:
            total += _priced(self.cache_write or self.input, write, prompt)
        return total / 1_000_000


def _priced(rate: Rate, tokens: int, prompt: int) -> float:
    price, tiers = rate
    for start, tier_price in reversed(tiers):
        if prompt > start:
            price = tier_price
            break
    return price * tokens


def rates_of(prices: Mapping[str, float]) -> Rates:
    """An operator's ``{input, output, cache-read, cache-write}`` (USD per
    million tokens; input and output default to 0, the cache ones to input)."""
    read, write = prices.get("cache-read"), prices.get("cache-write")
    return Rates(
        (float(prices.get("input", 0.0)), ()),
        (float(prices.get("output", 0.0)), ()),
        (float(read), ()) if read is not None else None,
        (float(write), ()) if write is not None else None,
    )


def _rate(value: Any) -> Rate | None:
    """genai-prices' Decimal or TieredPrices, as a :data:`Rate`."""
    if value is None:
        return None
    tiers = getattr(value, "tiers", None)
    if tiers is None:
        return float(value), ()
    return float(value.base), tuple((int(t.start), float(t.price)) for t in tiers)


def _from_table(provider: str, base_url: str, model: str) -> Rates | None:
    """The table's prices of ``model`` at ``provider`` (its id, else its base
    URL), today's; None when the table does not list them."""
    from datetime import UTC, datetime

    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    for by_id, by_url in ((provider, None), (None, base_url)):
        if by_url is not None and not by_url.startswith(("http://", "https://")):
            continue
        try:
            _, info = snapshot.find_provider_model(model, None, by_id, by_url)
        except (LookupError, ValueError):
            continue
        price = info.get_prices(datetime.now(tz=UTC))
        input_rate = _rate(getattr(price, "input_mtok", None))
        output_rate = _rate(getattr(price, "output_mtok", None))
        if input_rate is None and output_rate is None:
            return None  # (priced by something else: requests, seconds, images)
        return Rates(
            input_rate or (0.0, ()),
            output_rate or (0.0, ()),
            _rate(getattr(price, "cache_read_mtok", None)),
            _rate(getattr(price, "cache_write_mtok", None)),
        )
    return None


def table_version() -> str:
    """The installed ``genai-prices`` version (its data is that release's)."""
    from importlib.metadata import version

    return version("genai-prices")


class Prices:
    """Cost of a request by ``(provider, model)``: the operator's prices, then
    the table's; each pair looked up once."""

    __slots__ = ("_base_urls", "_cache", "_overrides")

    def __init__(
        self,
        base_urls: Mapping[str, str],
        overrides: Mapping[str, Mapping[str, Mapping[str, float]]],
    ) -> None:
        self._base_urls = dict(base_urls)
        self._overrides = {
            (provider, model): rates_of(prices)
            for provider, table in overrides.items()
            for model, prices in table.items()
        }
        self._cache: dict[tuple[str, str], Rates | None] = {}

    def warm(self) -> None:
        """Load the table now (about a second's import), not on a first request."""
        from genai_prices import data_snapshot

        data_snapshot.get_snapshot()

    def rates(self, provider: str, model: str) -> Rates | None:
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        rates = self._overrides.get(key)
        if rates is None and provider != "echo":
            rates = _from_table(provider, self._base_urls.get(provider, ""), model)
        if len(self._cache) < MAX_CACHED:
            self._cache[key] = rates
        return rates

    def cost(self, provider: str, model: str, usage: ir.Usage | None) -> float | None:
        """USD, or None when the model has no price or there is no usage."""
        if usage is None or not model:
            return None
        rates = self.rates(provider, model)
        return rates.cost(usage) if rates is not None else None
