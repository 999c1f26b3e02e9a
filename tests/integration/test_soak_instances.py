"""Scale-out soak: two gateway processes on one PostgreSQL database and one
Redis, behind one client that spreads requests over both as a load balancer
would, while tokens are created, revoked and exhausted, and one instance is
killed (SIGKILL) and started again in the middle of it.

What must hold, over the whole run (bounded: 10 to 22 s of traffic;
about 25 s in all on a quiet machine):

* quotas are exact: a token with ``max_requests`` Q is answered Q times in all,
  on either instance, across the kill (less the requests the kill cut after
  they were admitted), and refused (429) after;
* what the management API says is true everywhere on the next request: a
  token created on one instance is served by the other at once, a revoked one
  refused by both at once, also by the instance started again;
* no 5xx at all; the only failures are the killed instance's requests in
  flight when it died (and the connections it refused while down, which the
  client sends to the other instance, as a load balancer does);
* the audit is complete: every management call once, and every refused
  request (401) the client saw, by its request id, once.

The figures of a run are in docs/deploying.md ("Soak").
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_tenants import MGMT, env_for, make_project, make_token
from tests.support.databases import fresh_database_env
from tests.support.fakes import FakeUpstream, JSONReply, Recorded, Reply, SSEReply, completion
from tests.support.fakes import stream_of as sse_of
from tests.support.gateway import Gateway, free_port, spawn_gateway, stop_gateway
from tests.support.redisdb import redis_env
from tests.support.waiting import eventually, wait_for
from vdm.events import redis as redis_events

TRAFFIC = 10.0  # seconds of traffic at least; then until revocations run fast again
TRAFFIC_MAX = 22.0  # ... but never longer
KILL_AT = 1.5  # seconds into it, instance b is killed (and started again at once)
# How long before a kill an answered refusal's audit event may still be in memory.
OUTBOX_WINDOW = 0.5
# The longest a killed consumer's unacknowledged events wait to be claimed by another.
CLAIM_WAIT = (redis_events.CLAIM_IDLE_MS / 1000) + 2 * redis_events.CLAIM_EVERY + 10
WORKERS = 6
QUOTA = 15
QUOTA_TOKENS = 3
UPSTREAM_DELAY = 0.01  # per answer (per chunk of a stream): requests are in flight


@dataclass
class Outcome:
    kind: str  # "steady", "quota", "fresh", "revoked"
    token: str  # token id
    instance: str  # "a" or "b"
    request_id: str
    started: float
    ended: float
    status: int | None  # None: the connection failed
    error: str = ""


def _answer(recorded: Recorded) -> Reply:
    body = recorded.json
    if body.get("stream") is True:
        return SSEReply(sse_of(completion("ok"), pieces=4), delay=UPSTREAM_DELAY)
    return JSONReply(completion("ok"), delay=UPSTREAM_DELAY)


class Balancer:
    """One client in front of both instances: each request goes to the next
    instance in turn; one that refuses the connection (it is down) is skipped
    for the next, as a load balancer's passive check does."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.down: set[str] = set()
        self.turn = itertools.count()
        self.lock = threading.Lock()
        self.ids = itertools.count()
        self.outcomes: list[Outcome] = []

    def pick(self) -> str:
        with self.lock:
            names = [n for n in sorted(self.urls) if n not in self.down] or sorted(self.urls)
            return names[next(self.turn) % len(names)]

    def send(
        self,
        client: httpx.Client,
        kind: str,
        token: dict[str, Any],
        *,
        instance: str | None = None,
        stream: bool = False,
    ) -> Outcome:
        name = instance or self.pick()
        request_id = f"soak-{next(self.ids)}"
        body = {
            "model": "gpt-4o",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }
        headers = {"x-api-key": token["token"], "x-request-id": request_id}
        started = time.monotonic()
        try:
            with client.stream(
                "POST", self.urls[name] + "/v1/messages", json=body, headers=headers, timeout=20
            ) as response:
                response.read()
            outcome = Outcome(
                kind, token["id"], name, request_id, started, time.monotonic(), response.status_code
            )
        except httpx.ConnectError as exc:
            if instance is None:  # down: the next one takes it
                with self.lock:
                    self.down.add(name)
                return self.send(client, kind, token, stream=stream)
            outcome = Outcome(
                kind, token["id"], name, request_id, started, time.monotonic(), None, repr(exc)
            )
        except httpx.TransportError as exc:
            outcome = Outcome(
                kind, token["id"], name, request_id, started, time.monotonic(), None, repr(exc)
            )
        with self.lock:
            self.outcomes.append(outcome)
        return outcome


def _stop_all(*groups: list[Gateway]) -> None:
    for group in groups:
        for gateway in group:
            if gateway.process.poll() is None:
                stop_gateway(gateway)


def wait_ready(url: str, within: float = 30.0) -> None:
    def ready() -> bool:
        try:
            return httpx.get(url + "/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    assert wait_for(ready, within, every=0.05), f"{url} not ready after {within} s"


def audit_events(api: httpx.Client, action: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in itertools.count(1):
        reply = api.get("/manage/audit", params={"action": action, "page": page, "page_size": 500})
        assert reply.status_code == 200, reply.text
        data = reply.json()
        events += data["events"]
        if page >= data["pagination"]["total_pages"]:
            return events


# The soak itself takes about a minute; a refusal's audit event read by the killed
# instance adds up to CLAIM_WAIT before a live one writes it.
@pytest.mark.timeout(120 + CLAIM_WAIT)
def test_two_instances_keep_every_promise_through_churn_and_a_kill(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    fake_openai.responder = _answer
    began = time.monotonic()
    for db in fresh_database_env("postgresql", tmp_path):
        for shared in redis_env():
            with ExitStack() as stack:
                envs = {
                    name: env_for(
                        fake_openai,
                        fake_anthropic,
                        tmp_path / name,
                        **db,
                        **shared,
                        LOG_LEVEL="INFO",
                    )
                    for name in ("a", "b")
                }
                ports = {name: free_port() for name in envs}
                # Both started at once; b's list holds its current process (the test
                # replaces it), each stopped at the end.
                a = spawn_gateway(envs["a"], tmp_path / "a", port=ports["a"])
                b_holder = [spawn_gateway(envs["b"], tmp_path / "b", port=ports["b"])]
                stack.callback(_stop_all, [a], b_holder)
                for gateway in (a, b_holder[0]):
                    wait_ready(gateway.url)
                _soak(a, b_holder, envs["b"], tmp_path / "b", ports["b"], began)


def _soak(
    a: Gateway,
    b_holder: list[Gateway],
    b_env: dict[str, str],
    b_tmp: Path,
    b_port: int,
    began: float,
) -> None:
    urls = {"a": a.url, "b": b_holder[0].url}
    admin = {
        n: httpx.Client(base_url=u, headers={"authorization": f"Bearer {MGMT}"}, timeout=20)
        for n, u in urls.items()
    }
    project = make_project(admin["a"])
    steady = make_token(admin["b"], project["id"])
    quotas = [
        make_token(admin["a"], project["id"], max_requests=QUOTA) for _ in range(QUOTA_TOKENS)
    ]
    balancer = Balancer(urls)
    stop = threading.Event()
    created: list[dict[str, Any]] = []  # by the churn, each revoked after use
    churn_failures: list[str] = []
    killed: dict[str, float] = {}
    calls: list[tuple[float, float]] = []  # (when, seconds) each revocation took to return
    kept: list[dict[str, Any]] = []  # created by the other churn, never revoked

    def traffic(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client() as client:
            while not stop.is_set():
                if rng.random() < 0.3:
                    balancer.send(client, "quota", rng.choice(quotas), stream=rng.random() < 0.3)
                else:
                    balancer.send(client, "steady", steady, stream=rng.random() < 0.3)

    def churn() -> None:
        """Create on one instance, use at once on the other, revoke, use at once on
        both (up ones)."""
        with httpx.Client() as client:
            for turn in itertools.count():
                if stop.is_set():
                    return
                up = [n for n in ("a", "b") if n not in balancer.down] or ["a"]
                maker, user = up[turn % len(up)], up[(turn + 1) % len(up)]
                try:
                    token = make_token(admin[maker], project["id"])
                except (AssertionError, httpx.TransportError) as exc:
                    if maker == "b":  # killed under the call: the next turn uses a
                        continue
                    churn_failures.append(f"create on {maker}: {exc!r}")
                    continue
                created.append(token)
                used = balancer.send(client, "fresh", token, instance=user)
                if used.status is not None and used.status != 200:
                    churn_failures.append(f"new token on {user}: {used.status}")
                # After the kill, a revokes: every instance's first revocation after
                # it waits a lease (15 s) for the dead one's row, the new b's too.
                revoker = user if "at" not in killed else "a"
                called = time.monotonic()
                try:
                    revoked = admin[revoker].delete(f"/manage/tokens/{token['id']}")
                except httpx.TransportError:
                    revoker = "a"
                    revoked = admin["a"].delete(f"/manage/tokens/{token['id']}")
                calls.append((called, time.monotonic() - called))
                if revoked.status_code != 204:
                    churn_failures.append(f"revoke on {revoker}: {revoked.status_code}")
                for name in ("a", "b"):
                    if name in balancer.down:
                        continue
                    after = balancer.send(client, "revoked", token, instance=name)
                    if after.status is not None and after.status != 401:
                        churn_failures.append(f"revoked token on {name}: {after.status}")

    def creations() -> None:
        """Tokens created on one instance and used at once on the other, also
        while b is down (then a alone) and after (the new b must know them)."""
        with httpx.Client() as client:
            for turn in itertools.count():
                if stop.wait(0.1):
                    return
                up = [n for n in ("a", "b") if n not in balancer.down] or ["a"]
                maker, user = up[turn % len(up)], up[(turn + 1) % len(up)]
                try:
                    token = make_token(admin[maker], project["id"])
                except (AssertionError, httpx.TransportError) as exc:
                    if maker != "b":
                        churn_failures.append(f"create on {maker}: {exc!r}")
                    continue
                kept.append(token)
                used = balancer.send(client, "fresh", token, instance=user)
                if used.status is not None and used.status != 200:
                    churn_failures.append(f"new token on {user}: {used.status}")

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(WORKERS)]
    threads += [threading.Thread(target=churn), threading.Thread(target=creations)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        stop.wait(KILL_AT)
        os.kill(b_holder[-1].process.pid, signal.SIGKILL)
        killed["at"] = time.monotonic()
        b_holder[-1].process.wait(10)
        killed["dead"] = time.monotonic()
        with balancer.lock:
            balancer.down.add("b")
        b_holder.append(spawn_gateway(b_env, b_tmp / "again", port=b_port))
        wait_ready(urls["b"])
        killed["back"] = time.monotonic()
        with balancer.lock:
            balancer.down.discard("b")
        # Until TRAFFIC, and until revocations return fast again: the first
        # after the kill waits for the dead instance's lease (vdm.tenants.fleet).
        while time.monotonic() < start + TRAFFIC_MAX:
            fast = [c for c in calls if c[0] > killed["back"] and c[1] < 1.0]
            if time.monotonic() >= start + TRAFFIC and len(fast) >= 3:
                break
            stop.wait(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    traffic_s = time.monotonic() - start
    outcomes = list(balancer.outcomes)

    # --- no 5xx; the only failures: b's requests in flight when it was killed
    statuses = Counter(o.status for o in outcomes)
    assert not [o for o in outcomes if o.status is not None and o.status >= 500], statuses
    lost = [o for o in outcomes if o.status is None and "ConnectError" not in o.error]
    for o in lost:  # (sent between the signal and the end of the process: in flight too)
        assert o.instance == "b" and o.started <= killed["dead"] and o.ended >= killed["at"], o
    for o in outcomes:  # refused connections: only b's, only while it was down
        if "ConnectError" in o.error:
            assert o.instance == "b" and killed["at"] <= o.started <= killed["back"], o
    assert not churn_failures, churn_failures

    # --- quotas exact, on both instances, across the kill
    for token in quotas:
        mine = [o for o in outcomes if o.token == token["id"]]
        served = sum(o.status == 200 for o in mine)
        cut = sum(o in lost for o in mine)
        assert served <= QUOTA <= served + cut, (served, cut, Counter(o.status for o in mine))
        assert {o.status for o in mine} <= {200, 429, None}
    with httpx.Client() as client:
        for token in quotas:
            for name in ("a", "b"):
                assert balancer.send(client, "quota", token, instance=name).status == 429
        # --- revocations hold everywhere, the restarted instance included
        for token in created:
            for name in ("a", "b"):
                assert balancer.send(client, "revoked", token, instance=name).status == 401
        for name in ("a", "b"):
            assert balancer.send(client, "steady", steady, instance=name).status == 200
            for token in kept:  # those created while b was down too
                assert balancer.send(client, "fresh", token, instance=name).status == 200

    # --- the audit: every management call once, every refusal the client saw once
    # A refusal b answered in the instant before its SIGKILL may have had its
    # audit event still in b's memory, not yet in Redis: what a kill can lose.
    refused = {
        o.request_id
        for o in balancer.outcomes
        if o.status == 401
        and not (o.instance == "b" and killed["at"] - OUTBOX_WINDOW <= o.ended <= killed["dead"])
    }
    denied = eventually(
        lambda: audit_events(admin["a"], "proxy.authenticate"),
        lambda events: refused <= {e["request_id"] for e in events},
        # A batch the killed instance had read from Redis but not written is
        # claimed by a live one once unacknowledged for a minute (vdm.events.redis).
        within=CLAIM_WAIT,
        every=0.2,
    )
    seen = Counter(e["request_id"] for e in denied)
    missing = refused - set(seen)
    assert not missing, (
        f"{len(missing)} of {len(refused)} refusals not audited: {sorted(missing)[:5]}"
    )
    assert all(seen[r] == 1 for r in refused)
    creates = Counter(e["token_id"] for e in audit_events(admin["b"], "token.create"))
    revokes = Counter(e["token_id"] for e in audit_events(admin["b"], "token.revoke"))
    made = [steady, *quotas, *created, *kept]
    assert all(creates[t["id"]] == 1 for t in made), creates
    assert all(revokes[t["id"]] == 1 for t in created), revokes
    assert len(audit_events(admin["a"], "project.create")) == 1

    # --- the figures (docs/deploying.md, "Soak")
    answered = sum(1 for o in outcomes if o.status == 200)
    durations = sorted(c[1] for c in calls)
    print(
        f"\nsoak: {len(outcomes)} requests in {traffic_s:.1f} s ({answered} answered, "
        f"statuses {dict(statuses)}); {len(created)} tokens created and revoked, "
        f"{len(kept)} created; "
        f"b killed at {killed['at'] - start:.1f} s, serving again {killed['back'] - killed['at']:.1f} s "
        f"later, {len(lost)} of its requests cut; {len(refused)} refusals audited; "
        f"revocations returned in {durations[len(durations) // 2] * 1000:.0f} ms (median), "
        f"{durations[-1]:.1f} s at most; whole test {time.monotonic() - began:.1f} s"
    )
    for client in admin.values():
        client.close()
