"""``/dashboard/`` in a real headless Chromium (Debian's ``chromium``, driven by
Playwright's Python package through ``executable_path``: no browser download).

The real gateway runs with the control plane on (MANAGEMENT_TOKEN) in front of
a fake upstream; the page is opened once with ``?token=``, traffic goes through
the anthropic SDK (answers, a 429 that benches a key, an upstream refusal) and
the page must show it without a reload.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.support.fakes import FakeUpstream, JSONReply, completion, error_reply
from tests.support.gateway import Gateway, run_gateway

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MGMT = "dashboard-management-token-0123"
PROXY_KEY = "dashboard-proxy-key"  # the clients' key (the control plane wants one)
ASK = [{"role": "user", "content": "hi"}]


def _chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing under CI=true (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return path


@pytest.fixture
def gateway(fake_openai: FakeUpstream, tmp_path: Path) -> Iterator[Gateway]:
    fake_openai.reset()
    env = {
        "OA_API_KEY": "key-a key-b",
        "OA_BASE_URL": fake_openai.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "oa",
        "MAX_RETRIES": "1",
        "RETRY_BACKOFF": "0.01",
        "MANAGEMENT_TOKEN": MGMT,
        "PROXY_API_KEY": PROXY_KEY,
        "METRICS_MODELS": "m",  # the fake lists no models: name the one sent
        "DATABASE_URL": f"sqlite:///{tmp_path / 'vdm.db'}",
    }
    with run_gateway(env, tmp_path) as gw:
        yield gw


def snapshot(gw: Gateway, token: str | None) -> tuple[int, dict]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(gw.url + "/dashboard/api/snapshot", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_the_page_follows_live_traffic(
    gateway: Gateway, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = _chromium()
    status, body = snapshot(gateway, None)
    assert status == 401 and "MANAGEMENT_TOKEN" in body["detail"]  # also an audit event
    assert snapshot(gateway, "wrong-token-wrong-token")[0] == 401
    assert snapshot(gateway, PROXY_KEY)[0] == 401  # MANAGEMENT_TOKEN it is, when set

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(gateway.url + "/dashboard/?token=" + MGMT)
            expect(page.locator("#status")).to_contain_text("live", timeout=10_000)
            assert "token" not in page.url  # kept in sessionStorage, not in the address
            expect(page.locator("#total-requests")).to_have_text("0")
            expect(page.locator("#keys tbody tr")).to_have_count(2)
            expect(page.locator("#keys tbody")).not_to_contain_text("cooling")
            expect(page.locator("#audit tbody")).to_contain_text("dashboard.authenticate")

            fake_openai.reply(
                JSONReply(completion("one")),
                # the first key is benched (for the upstream's retry-after), the second answers
                error_reply(429, "slow down", **{"retry-after": "300"}),
                JSONReply(completion("two")),
                JSONReply(completion("three")),
                error_reply(400, "refused"),
            )
            client = anthropic.Anthropic(base_url=gateway.url, api_key=PROXY_KEY, max_retries=0)
            for _ in range(3):
                client.messages.create(model="m", max_tokens=10, messages=ASK)  # type: ignore[arg-type]
            with pytest.raises(anthropic.BadRequestError):
                client.messages.create(model="m", max_tokens=10, messages=ASK)  # type: ignore[arg-type]

            # The same page, not reloaded, catches up within its polling.
            expect(page.locator("#total-requests")).to_have_text("4", timeout=10_000)
            expect(page.locator("#total-errors")).to_have_text("1")
            expect(page.locator("#total-tokens")).to_have_text("75 / 60")  # 25 in / 20 out x3
            page.wait_for_function(
                "parseFloat(document.getElementById('rate').textContent) > 0", timeout=5_000
            )
            routes = page.locator("#routes tbody")
            expect(routes.locator("tr", has_text="m")).not_to_have_count(0)
            expect(page.locator("#recent tbody tr")).to_have_count(4)
            expect(page.locator("#recent tbody tr.failed")).to_have_count(1)
            expect(page.locator("#keys tbody")).to_contain_text("cooling")
            expect(page.locator("#keys tbody")).to_contain_text("429")
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)

            # Another tab without the token: the login prompt, then the data.
            other = browser.new_page()
            other.goto(gateway.url + "/dashboard/")
            expect(other.locator("#login")).to_be_visible(timeout=10_000)
            other.fill("#token", MGMT)
            other.click("#login button")
            expect(other.locator("#total-requests")).to_have_text("4", timeout=10_000)
        finally:
            browser.close()

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

    status, snap = snapshot(gateway, MGMT)
    assert status == 200
    route = next(r for r in snap["routes"] if r["model"] == "m")
    assert route["requests"] == 3 and route["input_tokens"] == 75
    assert route["p50_ms"] is not None and route["upstream_p95_ms"] is not None
    assert route["overhead_p50_ms"] is not None and route["overhead_p50_ms"] >= 0
    states = sorted(k["state"] for k in snap["keys"])
    assert states == ["cooling", "ok"]
    assert all("key-" not in json.dumps(k) for k in snap["keys"])  # hashes only


def test_static_files_are_shipped_and_strict(gateway: Gateway) -> None:
    for path, kind in (
        ("/dashboard/", "text/html"),
        ("/dashboard/dashboard.js", "javascript"),
        ("/dashboard/dashboard.css", "text/css"),
    ):
        with urllib.request.urlopen(gateway.url + path, timeout=5) as response:
            assert kind in response.headers["content-type"]
            assert "default-src 'self'" in response.headers["content-security-policy"]
            assert response.read()
    for path, code in (("/dashboard/nope.js", 404), ("/dashboard/api/other", 404)):
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(gateway.url + path, timeout=5)
        assert raised.value.code == code
    request = urllib.request.Request(
        gateway.url + "/dashboard/api/snapshot", method="POST", data=b"{}"
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)
    assert raised.value.code == 405
