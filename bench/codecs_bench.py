"""Per-call and per-event micro-benchmarks of the codecs, on the real functions.

    python bench/codecs_bench.py [--quick] [--filter TEXT] [--out FILE]

``run.py`` says *that* the gateway got slower; this says *where*: each row
times one entry point of :mod:`vdm.protocols` / :mod:`vdm.ir` on the same
bodies the fake upstream and the load generator use (the benchmark
conversation, the 20-chunk answer).  Rows:

* request: client bytes -> IR (Anthropic, OpenAI ingress), IR -> upstream
  body bytes (OpenAI, Anthropic), the passthrough ``model`` splice;
* response: upstream JSON -> IR events -> folded :class:`ChatResponse`, and
  the response -> client JSON bytes;
* stream, per event: SSE parsing of upstream bytes, upstream chunk -> IR
  events (OpenAI ``ChunkDecoder``, Anthropic ``EventDecoder``), IR event ->
  client SSE frame (Anthropic ``encode_event``, OpenAI ``ChunkEncoder``),
  ``sse.frame``, the passthrough usage taps, the fold;
* stream, per stream: the whole conversion chain for one 20-chunk answer
  (bytes in -> frames out), the figure to hold against the gateway's
  CPU ms per converted stream.

Each row is the minimum over several repeats of CPU time (``process_time``:
time the process was descheduled on a shared core does not count), divided by
the operations in the repeat: ns/op, where op is a call or an event as the
row says.  Prints a table and writes JSON (``bench/results/codecs-<ts>.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

import upstream
from harness import git_rev, machine
from run import anthropic_body, openai_body
from vdm import ir
from vdm.protocols import (
    anthropic_door,
    anthropic_upstream,
    body,
    fields,
    openai_door,
    openai_upstream,
    sse,
)

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "bench-model"
_decode = msgspec.json.decode
_encode = msgspec.json.encode


@dataclass
class Case:
    group: str
    name: str
    per: str  # what one op is: "call", "event", "stream"
    ops: int  # ops per call of ``fn``
    fn: Callable[[], object]


def _frames(data: bytes) -> list[bytes]:
    """The upstream's SSE body as it arrives: one read per event."""
    return [f + b"\n\n" for f in data.split(b"\n\n") if f]


def _sse_data(data: bytes) -> list[tuple[str | None, bytes]]:
    parser = sse.SSEParser()
    return [ev for chunk in _frames(data) for ev in parser.feed(chunk)]


def cases() -> list[Case]:
    ant_req = _encode(anthropic_body("openai:" + MODEL, True))
    oa_req = _encode(openai_body("openai:" + MODEL, True))
    request = anthropic_door.decode_request(fields.decode_json_object(ant_req))
    oa_options = openai_upstream.RequestOptions()
    parsed_ant = fields.decode_json_object(ant_req)

    oa_json, ant_json = upstream.openai_json(), upstream.anthropic_json()
    oa_sse, ant_sse = upstream.openai_sse(), upstream.anthropic_sse()
    oa_frames, ant_frames = _frames(oa_sse), _frames(ant_sse)
    oa_data = [d for _, d in _sse_data(oa_sse) if d != b"[DONE]"]
    ant_events = _sse_data(ant_sse)

    def oa_decode_stream() -> list[ir.Event]:
        decoder = openai_upstream.ChunkDecoder(MODEL)
        out = [e for d in oa_data for e in decoder.feed(_decode(d))]
        out.extend(decoder.finish())
        return out

    events = oa_decode_stream()  # the IR of the converted 20-chunk stream
    deltas = [e for e in events if isinstance(e, ir.TextDelta)]
    response = ir.fold(events)
    ingress_options = openai_door.Options(include_usage=True)

    def ant_decode_stream() -> None:
        decoder = anthropic_upstream.EventDecoder("ant", model=MODEL)
        for name, data in ant_events:
            for _ in decoder.feed(name, data):
                pass

    def parse(frames: list[bytes]) -> None:
        parser = sse.SSEParser()
        for chunk in frames:
            for _ in parser.feed(chunk):
                pass

    def encode_anthropic_events() -> None:
        for e in events:
            anthropic_door.encode_event(e)

    def encode_anthropic_deltas() -> None:
        for e in deltas:
            anthropic_door.encode_event(e)

    def encode_openai_events() -> None:
        encoder = openai_door.ChunkEncoder(MODEL, ingress_options)
        for e in events:
            encoder.encode(e)

    def frame_deltas() -> None:
        for d in oa_data:
            sse.frame("content_block_delta", d)

    def tap(cls: type, frames: list[bytes]) -> Callable[[], None]:
        def run() -> None:
            t = cls()
            for chunk in frames:
                t.feed(chunk)

        return run

    def convert_stream() -> None:
        # provider side (bytes -> IR) then ingress side (IR -> Anthropic frames)
        parser = sse.SSEParser()
        decoder = openai_upstream.ChunkDecoder(MODEL)
        for chunk in oa_frames:
            for _, data in parser.feed(chunk):
                if data != b"[DONE]":
                    for e in decoder.feed(_decode(data)):
                        anthropic_door.encode_event(e)
        for e in decoder.finish():
            anthropic_door.encode_event(e)

    def convert_response() -> None:
        anthropic_door.encode_response(
            ir.fold(list(openai_upstream.response_events(_decode(oa_json), MODEL)))
        )

    n_oa, n_ant, n_ev = len(oa_frames), len(ant_frames), len(events)
    return [
        Case(
            "request",
            "anthropic request bytes -> IR",
            "call",
            1,
            lambda: anthropic_door.decode_request(fields.decode_json_object(ant_req)),
        ),
        Case(
            "request",
            "openai request bytes -> IR",
            "call",
            1,
            lambda: openai_door.decode(oa_req),
        ),
        Case(
            "request",
            "IR -> openai upstream body bytes",
            "call",
            1,
            lambda: _encode(openai_upstream.encode_request(request, MODEL, oa_options)),
        ),
        Case(
            "request",
            "IR -> anthropic upstream body bytes",
            "call",
            1,
            lambda: _encode(anthropic_upstream.encode_request(request, MODEL)),
        ),
        Case(
            "request",
            "passthrough model rewrite (splice)",
            "call",
            1,
            lambda: body.rewrite(ant_req, parsed_ant, {"model": MODEL}),
        ),
        Case(
            "response",
            "openai upstream JSON -> IR -> fold",
            "call",
            1,
            lambda: ir.fold(list(openai_upstream.response_events(_decode(oa_json), MODEL))),
        ),
        Case(
            "response",
            "anthropic upstream JSON -> IR -> fold",
            "call",
            1,
            lambda: ir.fold(
                list(anthropic_upstream.response_events(_decode(ant_json), model=MODEL))
            ),
        ),
        Case(
            "response",
            "IR response -> anthropic JSON",
            "call",
            1,
            lambda: anthropic_door.encode_response(response),
        ),
        Case(
            "response",
            "IR response -> openai JSON",
            "call",
            1,
            lambda: openai_door.encode_response(response, MODEL),
        ),
        Case("response", "conversion: openai JSON -> anthropic JSON", "call", 1, convert_response),
        Case("stream", "SSE parse, openai upstream bytes", "event", n_oa, lambda: parse(oa_frames)),
        Case(
            "stream",
            "SSE parse, anthropic upstream bytes",
            "event",
            n_ant,
            lambda: parse(ant_frames),
        ),
        Case(
            "stream",
            "openai chunk (JSON decode + ChunkDecoder)",
            "event",
            len(oa_data),
            oa_decode_stream,
        ),
        Case("stream", "anthropic EventDecoder.feed", "event", len(ant_events), ant_decode_stream),
        Case(
            "stream",
            "IR event -> anthropic frame (encode_event)",
            "event",
            n_ev,
            encode_anthropic_events,
        ),
        Case(
            "stream",
            "IR text delta -> anthropic frame",
            "event",
            len(deltas),
            encode_anthropic_deltas,
        ),
        Case(
            "stream", "IR event -> openai chunk (ChunkEncoder)", "event", n_ev, encode_openai_events
        ),
        Case("stream", "sse.frame", "event", len(oa_data), frame_deltas),
        Case("stream", "fold (MessageBuilder)", "event", n_ev, lambda: ir.fold(events)),
        Case(
            "stream",
            "passthrough tap, anthropic",
            "event",
            n_ant,
            tap(anthropic_upstream.UsageTap, ant_frames),
        ),
        Case(
            "stream",
            "passthrough tap, openai",
            "event",
            n_oa,
            tap(openai_upstream.UsageTap, oa_frames),
        ),
        # the whole stream in one read, as a busy gateway gets a fast upstream's answer
        Case(
            "stream",
            "passthrough tap, anthropic, one read",
            "stream",
            1,
            tap(anthropic_upstream.UsageTap, [b"".join(ant_frames)]),
        ),
        Case(
            "stream",
            "passthrough tap, openai, one read",
            "stream",
            1,
            tap(openai_upstream.UsageTap, [b"".join(oa_frames)]),
        ),
        Case("stream", "conversion chain, one 20-chunk stream", "stream", 1, convert_stream),
    ]


def measure(fn: Callable[[], object], repeats: int, target_s: float) -> tuple[float, int]:
    """Min CPU seconds of one call of ``fn`` over ``repeats`` timed loops, each
    about ``target_s`` long; returns (seconds per call, calls per loop)."""
    clock = time.process_time
    number, t = 1, 0.0
    while True:  # calibrate: grow the loop until it lasts target_s / 4
        t0 = clock()
        for _ in range(number):
            fn()
        t = clock() - t0
        if t >= target_s / 4:
            break
        number *= 4 if t < target_s / 40 else 2
    number = max(1, int(number * target_s / max(t, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for _ in range(number):
            fn()
        best = min(best, clock() - t0)
    return best / number, number


def main() -> int:
    parser = argparse.ArgumentParser(description="vdm codec micro-benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--filter", default="", help="only rows whose name contains this")
    parser.add_argument("--repeats", type=int, help="timed loops per row (min is taken)")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/...)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    target_s = 0.05 if args.quick else 0.2
    rows = []
    print("| group | what | ns/op | op | ops/call | µs/call |")
    print("|---|---|---:|---|---:|---:|")
    for case in cases():
        if args.filter.lower() not in case.name.lower():
            continue
        per_call, number = measure(case.fn, repeats, target_s)
        ns_op = per_call * 1e9 / case.ops
        rows.append(
            {
                "group": case.group,
                "name": case.name,
                "per": case.per,
                "ops_per_call": case.ops,
                "ns_per_op": round(ns_op, 1),
                "us_per_call": round(per_call * 1e6, 3),
                "calls_per_repeat": number,
                "repeats": repeats,
            }
        )
        print(
            f"| {case.group} | {case.name} | {ns_op:,.0f} | {case.per} | {case.ops} "
            f"| {per_call * 1e6:,.2f} |",
            flush=True,
        )
    report = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_rev(),
        "machine": machine(),
        "clock": "process_time (CPU time of this process)",
        "repeats": repeats,
        "rows": rows,
    }
    out = args.out or RESULTS / ("codecs-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nns/op = min over {repeats} repeats of CPU time / ops; JSON: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
