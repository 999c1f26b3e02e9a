"""``/metrics`` and ``/metrics/running-totals`` after a known mixed load.

Both doors, streamed and not, a retry, a benched key, an upstream refusal and
a bad request: every counter must match the load exactly, read through the
Prometheus client's own parser.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fakes import FakeUpstream, JSONReply, SSEReply, completion, stream_of
from tests.support.gateway import Gateway, run_gateway, worker_pids
from tests.support.waiting import BOUND, eventually, wait_for
from vdm.metrics import RECENT_REQUESTS

ASK = [{"role": "user", "content": "hi"}]
CACHED = {
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 4},
}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(gateway: Gateway) -> Samples:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=5) as response:
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture
def env(fake_openai: FakeUpstream) -> dict[str, str]:
    fake_openai.reset()
    return {
        "OA_API_KEY": "ka kb",
        "OA_BASE_URL": fake_openai.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "oa",
        "MAX_RETRIES": "1",
        "RETRY_BACKOFF": "0.01",
        # The fake lists no models: name the one the tests send, or it is "other".
        "METRICS_MODELS": "m",
    }


def test_counters_match_a_mixed_load(
    fake_openai: FakeUpstream, env: dict[str, str], tmp_path: Path
) -> None:
    fake_openai.reply(
        JSONReply(completion("one")),  # 1 anthropic
        JSONReply({"error": {"message": "slow down"}}, status=429),  # 2: key ka benched
        JSONReply(completion("two")),  #    served by kb
        SSEReply(stream_of(completion("three words here"))),  # 3 anthropic stream
        JSONReply({"error": {"message": "busy"}}, status=503),  # 4: retried
        JSONReply(completion("four")),
        JSONReply(completion("five", usage=CACHED)),  # 5 openai
        SSEReply(stream_of(completion("six", usage=CACHED))),  # 6 openai stream
        JSONReply(
            {"error": {"message": "bad"}, "type": "invalid_request_error"}, status=400
        ),  # 7 refused
    )
    with run_gateway(env, tmp_path) as gateway:
        _mixed_load(gateway)
        found = samples(gateway)
        totals = get_json(gateway.url + "/metrics/running-totals")
        only_openai = get_json(gateway.url + "/metrics/running-totals?door=openai&provider=oa")

    _check_exposition(found)
    _check_running_totals(totals, only_openai)


def _mixed_load(gateway: Gateway) -> None:
    """Through both doors, streamed and not, what the fake was told to
    answer: 6 answers (one after a benched key, one after a retry), 2 refused."""
    a = anthropic.Anthropic(base_url=gateway.url, api_key="c", max_retries=0)
    o = openai.OpenAI(base_url=gateway.url + "/v1", api_key="c", max_retries=0)
    for _ in range(2):
        a.messages.create(model="m", max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    with a.messages.stream(model="m", max_tokens=10, messages=ASK) as s:  # type: ignore[arg-type]
        assert s.get_final_text() == "three words here"
    a.messages.create(model="m", max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    o.chat.completions.create(model="m", messages=ASK)  # type: ignore[arg-type]
    chunks = list(
        o.chat.completions.create(
            model="m",
            messages=ASK,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None
    with pytest.raises(anthropic.BadRequestError):
        a.messages.create(model="m", max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        o.chat.completions.create(model="oa:", messages=ASK)  # type: ignore[arg-type]


def _check_exposition(found: Samples) -> None:
    ant = {"door": "anthropic", "provider": "oa", "model": "m"}
    oai = {"door": "openai", "provider": "oa", "model": "m"}
    assert value(found, "vdm_requests_total", **ant, status="200") == 4
    assert value(found, "vdm_requests_total", **oai, status="200") == 2
    assert (
        value(found, "vdm_requests_total", door="anthropic", provider="oa", model="", status="400")
        == 1
    )
    assert (
        value(found, "vdm_requests_total", door="openai", provider="", model="", status="400") == 1
    )
    assert sum(v for (name, _), v in found.items() if name == "vdm_requests_total") == 8
    assert (
        value(
            found,
            "vdm_errors_total",
            door="anthropic",
            provider="oa",
            model="",
            type="invalid_request",
        )
        == 1
    )
    assert (
        value(
            found, "vdm_errors_total", door="openai", provider="", model="", type="invalid_request"
        )
        == 1
    )
    # fakes.USAGE is 25 in / 20 out per answer
    assert value(found, "vdm_tokens_total", **ant, type="input") == 100
    assert value(found, "vdm_tokens_total", **ant, type="output") == 80
    assert value(found, "vdm_tokens_total", **ant, type="cached") == 0
    # input counts what was not read from the cache (10 - 4), as Anthropic's usage does
    assert value(found, "vdm_tokens_total", **oai, type="input") == 12
    assert value(found, "vdm_tokens_total", **oai, type="output") == 10
    assert value(found, "vdm_tokens_total", **oai, type="cached") == 8
    for name in (
        "vdm_request_duration_seconds",
        "vdm_time_to_first_token_seconds",
        "vdm_upstream_duration_seconds",
    ):
        assert value(found, name + "_count", **ant) == 4
        assert value(found, name + "_count", **oai) == 2
        assert value(found, name + "_bucket", **ant, le="+Inf") == 4
    total = value(found, "vdm_request_duration_seconds_sum", **ant)
    upstream = value(found, "vdm_upstream_duration_seconds_sum", **ant)
    first = value(found, "vdm_time_to_first_token_seconds_sum", **ant)
    assert total is not None and upstream is not None and first is not None
    assert 0 < first <= total and 0 < upstream <= total
    assert value(found, "vdm_retries_total", provider="oa") == 1
    assert value(found, "vdm_key_cooldowns_total", provider="oa", status="429") == 1
    assert value(found, "vdm_in_flight_requests") == 0
    assert value(found, "vdm_open_streams") == 0


def _check_running_totals(totals: Any, only_openai: Any) -> None:
    assert totals["totals"]["requests"] == 8
    assert totals["totals"]["errors"] == 2
    model = totals["providers"]["oa"]["models"]["m"]
    assert model["requests"] == 6 and model["errors"] == 0
    assert model["input_tokens"] == 112 and model["output_tokens"] == 90
    assert model["cached_tokens"] == 8
    assert model["avg_latency_ms"] > 0 and model["p95_latency_ms"] >= model["avg_latency_ms"] / 10
    assert totals["providers"]["oa"]["requests"] == 7  # with the refused one (model unknown)
    assert only_openai["filters"] == {"door": "openai", "provider": "oa"}
    assert only_openai["totals"]["requests"] == 2
    assert list(only_openai["providers"]) == ["oa"]


def test_a_stream_is_an_open_stream_until_it_ends_and_counted_then(
    fake_openai: FakeUpstream, env: dict[str, str], tmp_path: Path
) -> None:
    hold = threading.Event()  # the stream stays open until the test has looked
    fake_openai.reply(SSEReply(stream_of(completion("slow words come in")), gate=hold))
    with run_gateway(env, tmp_path) as gateway:
        client = anthropic.Anthropic(base_url=gateway.url, api_key="c", max_retries=0)
        done: list[str] = []

        def consume() -> None:
            with client.messages.stream(model="m", max_tokens=10, messages=ASK) as s:  # type: ignore[arg-type]
                done.append(s.get_final_text())

        thread = threading.Thread(target=consume)
        thread.start()
        try:
            during = eventually(
                lambda: samples(gateway), lambda found: value(found, "vdm_open_streams") == 1
            )
        finally:
            hold.set()
        thread.join(BOUND)
        after = samples(gateway)
    assert done == ["slow words come in"]
    assert value(during, "vdm_open_streams") == 1
    assert value(during, "vdm_in_flight_requests") == 1
    labels = {"door": "anthropic", "provider": "oa", "model": "m", "status": "200"}
    assert value(during, "vdm_requests_total", **labels) is None
    assert value(after, "vdm_requests_total", **labels) == 1
    assert value(after, "vdm_open_streams") == 0


def test_running_totals_refuse_unknown_filters(env: dict[str, str], tmp_path: Path) -> None:
    with run_gateway(env, tmp_path) as gateway:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(gateway.url + "/metrics/running-totals?colour=red", timeout=5)
        assert caught.value.code == 400
        assert "colour" in json.load(caught.value)["error"]["message"]
        empty = get_json(gateway.url + "/metrics/running-totals")
    assert empty["totals"]["requests"] == 0 and empty["providers"] == {}


def worker_counts(directory: Path) -> dict[str, float]:
    """Requests each worker has written to the shared directory (by file name)."""
    out = {}
    for path in directory.glob("*.json"):
        families = json.loads(path.read_text())["families"]
        (requests,) = [f for f in families if f[0] == "vdm_requests"]
        out[path.stem] = sum(sample[2] for sample in requests[3])
    return out


def rings_written(directory: Path) -> bool:
    """Whether every worker's file holds its ring of recent requests (written
    while a dashboard is open)."""
    for path in directory.glob("*.json"):
        written = json.loads(path.read_text())
        (requests,) = [f for f in written["families"] if f[0] == "vdm_requests"]
        served = sum(sample[2] for sample in requests[3])
        if len(written["recent"]) != min(served, RECENT_REQUESTS):
            return False
    return True


def test_metrics_of_all_the_workers_from_any_of_them(
    fake_openai: FakeUpstream, env: dict[str, str], tmp_path: Path
) -> None:
    fake_openai.responder = lambda request: JSONReply(completion("hi"))
    with run_gateway(env, tmp_path, args=("--workers", "2")) as gateway:
        workers = worker_pids(gateway.process.pid, 2)
        assert len(workers) == 2, workers
        environ = Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
        (entry,) = [e for e in environ if e.startswith(b"VDM_WORKERS_DIR=")]
        shared = Path(entry.partition(b"=")[2].decode())

        def ask() -> None:
            body = json.dumps({"model": "m", "max_tokens": 5, "messages": ASK}).encode()
            request = urllib.request.Request(
                gateway.url + "/v1/messages", body, {"content-type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200

        sent = 0
        for _ in range(10):  # until both workers have served some (the kernel picks who accepts)
            batch = [threading.Thread(target=ask) for _ in range(8)]
            for t in batch:
                t.start()
            for t in batch:
                t.join(15)
            sent += len(batch)
            # Each worker writes its file once a second: wait for both to have
            # written every request sent so far.
            counts = eventually(
                lambda: worker_counts(shared),
                lambda found, sent=sent: sum(found.values()) == sent,
            )
            assert sum(counts.values()) == sent, (sent, counts)
            if len(counts) == 2 and all(counts.values()):
                break
        assert len(counts) == 2 and all(counts.values()), (sent, counts)

        route = {"door": "anthropic", "provider": "oa", "model": "m", "status": "200"}
        get_json(gateway.url + "/dashboard/api/snapshot")  # workers add their rings from now
        assert wait_for(lambda: rings_written(shared))
        for _ in range(6):  # new connections: both workers answer some of the scrapes
            assert value(samples(gateway), "vdm_requests_total", **route) == sent
            assert value(samples(gateway), "vdm_in_flight_requests") == 0
            board = get_json(gateway.url + "/dashboard/api/snapshot")
            assert board["totals"]["requests"] == sent
            assert len(board["recent"]) == min(sent, 50)
    assert not shared.exists(), "the supervisor removes the directory"


def test_grpc_calls_are_counted_like_the_http_doors(
    fake_openai: FakeUpstream, env: dict[str, str], tmp_path: Path
) -> None:
    """The accounting is the pipeline's, not one transport's: an Execute and a
    StreamExecute through ``--grpc-port`` show in ``/metrics`` and the running
    totals under ``door="grpc"``, with their status, tokens and latencies."""
    import grpc

    from tests.support.gateway import clean_env, free_port
    from tests.support.grpc_server import GrpcServer, bearer, execute_request

    def answer(request: Any) -> JSONReply | SSEReply:
        if request.json.get("stream"):
            return SSEReply(stream_of(completion("streamed words")))
        return JSONReply(completion("whole"))

    fake_openai.responder = answer
    port = free_port()
    with run_gateway(env, tmp_path, args=["--grpc-port", str(port)]) as gateway:
        home = tmp_path / "home"
        server = GrpcServer(
            "127.0.0.1",
            port,
            gateway.process,
            gateway.log_path,
            {**clean_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")},
        )
        token = server.token()
        with server.stub() as stub:
            whole = stub.Execute(
                execute_request("hi", model="oa:m"), metadata=bearer(token), timeout=10
            )
            chunks = list(
                stub.StreamExecute(
                    execute_request("hi", model="oa:m"), metadata=bearer(token), timeout=10
                )
            )
            refused = stub.Execute(
                execute_request("hi", model="oa:"), metadata=bearer(token), timeout=10
            )
            # Refused by the interceptor, before the servicer: counted all the same.
            with pytest.raises(grpc.RpcError) as unauthenticated:
                stub.Execute(execute_request("hi"), metadata=bearer("not-a-jwt"), timeout=10)
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert whole.success.response_text == "whole"
        assert "".join(c.text_chunk for c in chunks) == "streamed words"
        assert refused.HasField("error")
        found = samples(gateway)
        totals = get_json(gateway.url + "/metrics/running-totals?door=grpc")

    route = {"door": "grpc", "provider": "oa", "model": "m"}
    assert value(found, "vdm_requests_total", **route, status="200") == 2
    assert value(found, "vdm_tokens_total", **route, type="input") == 50  # fakes.USAGE: 25 each
    assert value(found, "vdm_tokens_total", **route, type="output") == 40
    assert value(found, "vdm_request_duration_seconds_count", **route) == 2
    assert value(found, "vdm_time_to_first_token_seconds_count", **route) == 2
    assert value(found, "vdm_requests_total", door="grpc", provider="", model="", status="400") == 1
    assert value(found, "vdm_requests_total", door="grpc", provider="", model="", status="401") == 1
    assert value(found, "vdm_in_flight_requests") == 0
    assert totals["totals"]["requests"] == 4 and totals["totals"]["errors"] == 2
    assert totals["providers"]["oa"]["models"]["m"]["input_tokens"] == 50
