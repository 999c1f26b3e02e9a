"""How an answer ended and what it used, in each wire family's words, both
ways: one table per direction for stop reasons, one rule for token counts.

Stop reasons.  The IR's are Anthropic's (``end_turn``, ``max_tokens``, …).
Chat Completions says ``finish_reason`` (``stop``, ``length``, …); Responses
says only whether an answer is incomplete, and why.

Token counts.  The IR counts input as Anthropic does: ``input_tokens`` are
the fresh ones, cache reads and cache writes counted apart.  The OpenAI
family (Chat Completions and Responses alike) counts one prompt total, of
which ``cached_tokens`` were read from its cache; reasoning tokens are part
of the output.  :func:`prompt_tokens` and :func:`usage_from_prompt` are the
two directions.
"""

from __future__ import annotations

from typing import Any

from vdm import ir

# IR stop reason -> Chat Completions finish_reason.
FINISH_REASONS: dict[str | None, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    None: "stop",
}
# Chat Completions finish_reason -> IR stop reason.
STOP_REASONS_OF_FINISH: dict[str, ir.StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# IR stop reason -> Responses ``incomplete_details.reason`` (the others complete).
INCOMPLETE_REASONS: dict[str, str] = {
    "max_tokens": "max_output_tokens",
    "refusal": "content_filter",
}
# Anthropic stop_reason -> IR stop reason (a reason newer than these: end_turn).
ANTHROPIC_STOP_REASONS: dict[str, ir.StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
    "model_context_window_exceeded": "max_tokens",
}


def prompt_tokens(usage: ir.Usage) -> tuple[int, int]:
    """The OpenAI family's prompt count of ``usage`` and, of it, the tokens
    read from a cache: (fresh + cache reads + cache writes, cache reads)."""
    cached = usage.cache_read_input_tokens or 0
    return usage.input_tokens + cached + (usage.cache_creation_input_tokens or 0), cached


def usage_from_prompt(prompt: Any, output: Any, cached: Any, reasoning: Any) -> ir.Usage:
    """An OpenAI-family usage (its prompt total, output, cached and reasoning
    counts, as an upstream sent them) -> IR usage; what is not a count is 0
    (reasoning: unknown)."""
    cache_reads = _count(cached)
    return ir.Usage(
        input_tokens=max(_count(prompt) - cache_reads, 0),
        output_tokens=_count(output),
        cache_read_input_tokens=cache_reads or None,
        reasoning_tokens=reasoning if _is_count(reasoning) and reasoning >= 0 else None,
    )


def detail(details: Any, key: str) -> Any:
    """``key`` of a usage's ``*_details`` object (None when it is not one)."""
    return details.get(key) if isinstance(details, dict) else None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any) -> int:
    return value if _is_count(value) else 0
