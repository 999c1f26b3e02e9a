"""Soak: 3,000 requests at concurrency 64 with 10% random upstream faults.

Both doors, streaming and not, against a pool of three keys.  Every answer
must be either exactly right (the text names the request it answers, so
cross-talk would show) or a clean protocol error; no 500, no hung request,
and the gateway's memory comes back to within 20% of its post-warm-up size.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.support.fakes import (
    Drop,
    FakeUpstream,
    JSONReply,
    RawReply,
    Recorded,
    Reply,
    SSEReply,
    completion,
    stream_of,
)
from tests.support.gateway import Gateway, run_gateway

TOTAL = 3_000  # (5,000 took 71 s of a 10-minute suite on a slow machine)
WARM_UP = 300
CONCURRENCY = 64
FAULT_RATE = 0.10
KINDS = ("anthropic", "anthropic-stream", "openai", "openai-stream")
# What an error may be, by status: never a 500 (that would be the gateway's own bug).
ERROR_STATUSES = {401, 429, 502, 503, 504}


class Faulty:
    """The fake upstream's responder: echoes the request's tag, or a fault."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.faults: Counter[str] = Counter()

    def __call__(self, recorded: Recorded) -> Reply:
        body = recorded.json
        tag = _tag(body["messages"][-1]["content"])
        stream = body.get("stream") is True
        with self.lock:
            fault = self.random.random() < FAULT_RATE
            kind = self.random.choice(("503", "429", "401", "drop", "malformed", "cut"))
        if fault:
            self.faults[kind] += 1
            match kind:
                case "503":
                    return JSONReply({"error": {"message": "overloaded"}}, status=503)
                case "429":
                    return JSONReply(
                        {"error": {"message": "slow down"}},
                        status=429,
                        headers={"retry-after": "1"},
                    )
                case "401":
                    return JSONReply({"error": {"message": "bad key"}}, status=401)
                case "drop":
                    return Drop()
                case "malformed":
                    return RawReply(b'{"choices": [', status=200)
                case "cut" if stream:
                    return SSEReply(stream_of(completion(f"answer {tag}"), pieces=4)[:3])
        answer = completion(f"answer {tag}")
        return SSEReply(stream_of(answer, pieces=4)) if stream else JSONReply(answer)


def _tag(content: Any) -> str:
    text = content if isinstance(content, str) else content[0]["text"]
    match = re.search(r"req-\d+", text)
    assert match, text
    return match.group(0)


def rss_kib(gateway: Gateway) -> int:
    status = Path(f"/proc/{gateway.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


async def one(client: httpx.AsyncClient, n: int) -> tuple[str, str]:
    """Send request ``n``; return (kind, verdict) where verdict is ok or error:<status>."""
    kind = KINDS[n % len(KINDS)]
    tag = f"req-{n}"
    stream = kind.endswith("stream")
    if kind.startswith("anthropic"):
        path = "/v1/messages"
        body: dict[str, Any] = {
            "model": "m",
            "max_tokens": 20,
            "stream": stream,
            "messages": [{"role": "user", "content": f"say {tag}"}],
        }
    else:
        path = "/v1/chat/completions"
        body = {
            "model": "m",
            "stream": stream,
            "messages": [{"role": "user", "content": f"say {tag}"}],
        }
    async with client.stream("POST", path, json=body) as response:
        data = await response.aread()
    status = response.status_code
    if status != 200:
        assert status in ERROR_STATUSES, (status, data[:300])
        error = json.loads(data)
        if kind.startswith("anthropic"):
            assert error["type"] == "error" and error["error"]["message"], error
        else:
            assert error["error"]["message"] and error["error"]["type"], error
        return kind, f"error:{status}"
    expected = f"answer {tag}"
    if not stream:
        answer = json.loads(data)
        text = (
            answer["content"][0]["text"]
            if kind == "anthropic"
            else answer["choices"][0]["message"]["content"]
        )
        assert text == expected, (text, expected)
        return kind, "ok"
    return kind, _check_stream(kind, data.decode(), expected)


def _check_stream(kind: str, text: str, expected: str) -> str:
    frames = [f for f in text.split("\n\n") if f.strip()]
    datas = [line[6:] for f in frames for line in f.split("\n") if line.startswith("data: ")]
    if kind == "anthropic-stream":
        events = [json.loads(d) for d in datas]
        types = [e["type"] for e in events]
        if types[-1] == "error":  # a clean mid-stream ending
            assert events[-1]["error"]["message"]
            return "error:stream"
        assert types[0] == "message_start" and types[-1] == "message_stop", types
        got = "".join(
            e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta"
        )
        assert got == expected, (got, expected)
        return "ok"
    if datas[-1] != "[DONE]":
        error = json.loads(datas[-1])
        assert error["error"]["message"], error
        return "error:stream"
    chunks = [json.loads(d) for d in datas[:-1]]
    got = "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices")
    )
    assert got == expected, (got, expected)
    return "ok"


async def drive(url: str, start: int, count: int) -> Counter[str]:
    verdicts: Counter[str] = Counter()
    queue = iter(range(start, start + count))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for n in queue:
                kind, verdict = await one(client, n)
                verdicts[f"{kind} {verdict}"] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return verdicts


def test_soak_with_random_faults(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    faulty = Faulty(seed=20261201)
    fake_openai.responder = faulty
    env = {
        "POOL_API_KEY": "sk-a sk-b sk-c",
        "POOL_BASE_URL": fake_openai.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "pool",
        "LOG_LEVEL": "WARNING",
        "RETRY_BACKOFF": "0.005",
        # Short cooldowns: with 50 ms, how often all three keys were benched at once
        # (a clean 429) depended on the machine's speed, and the ok share with it.
        "KEY_COOLDOWN_MAX": "0.01",
    }
    with run_gateway(env, tmp_path) as gateway:
        warm = asyncio.run(drive(gateway.url, 0, WARM_UP))
        after_warm_up = rss_kib(gateway)
        rest = asyncio.run(drive(gateway.url, WARM_UP, TOTAL - WARM_UP))
        final = rss_kib(gateway)
        # ... and it still serves a plain request correctly afterwards.
        fake_openai.responder = lambda r: JSONReply(completion("after the storm"))
        after = httpx.post(
            gateway.url + "/v1/messages",
            timeout=10,
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
        assert after.json()["content"][0]["text"] == "after the storm"
    verdicts = warm + rest
    assert sum(verdicts.values()) == TOTAL
    ok = sum(v for k, v in verdicts.items() if k.endswith(" ok"))
    assert sum(faulty.faults.values()) > TOTAL * FAULT_RATE * 0.7  # the faults happened
    # Retries and key failover absorb most faults; what is left is clean errors.
    assert ok >= TOTAL * 0.95, verdicts
    assert final <= after_warm_up * 1.2, (after_warm_up, final)
