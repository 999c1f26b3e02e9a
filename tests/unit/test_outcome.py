"""Stop reasons and token counts between the IR and each wire family's words
(vdm.protocols.outcome), both ways."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdm import ir
from vdm.protocols import outcome


def test_every_ir_stop_reason_has_a_finish_reason_that_reads_back_to_its_kind() -> None:
    for reason in get_args(ir.StopReason):
        finish = outcome.FINISH_REASONS[reason]
        back = outcome.STOP_REASONS_OF_FINISH[finish]
        # "stop" stands for every way of ending normally; the others read back as they were
        assert back == reason or finish == "stop"


def test_only_a_cut_or_refused_answer_is_incomplete() -> None:
    incomplete = {r for r in get_args(ir.StopReason) if r in outcome.INCOMPLETE_REASONS}
    assert incomplete == {"max_tokens", "refusal"}


counts = st.integers(min_value=0, max_value=10**9)


@given(counts, counts, counts, counts, st.none() | counts)
def test_a_usage_survives_the_openai_prompt_count_and_back(
    fresh: int, output: int, reads: int, writes: int, reasoning: int | None
) -> None:
    usage = ir.Usage(fresh, output, reads or None, writes or None, reasoning)
    prompt, cached = outcome.prompt_tokens(usage)
    assert prompt == fresh + reads + writes and cached == reads
    back = outcome.usage_from_prompt(prompt, output, cached, reasoning)
    # cache writes are part of the prompt on the way out, fresh input on the way back
    assert back == ir.Usage(fresh + writes, output, reads or None, None, reasoning)


@pytest.mark.parametrize("junk", [None, True, "12", 1.5, [], {}])
def test_what_is_not_a_count_counts_nothing(junk: object) -> None:
    assert outcome.usage_from_prompt(junk, junk, junk, junk) == ir.Usage()
    assert outcome.usage_from_prompt(10, 2, junk, -1) == ir.Usage(10, 2)
