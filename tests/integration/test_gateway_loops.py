"""A gateway whose provider base URL leads back to itself (vdm.loops): the
``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL`` a shell sets for Claude Code and
OpenAI clients.  The request fails fast with 508 in the client's error shape,
naming the variable; the start-up summary warns."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import openai
import pytest

from tests.support.fakes import FakeUpstream, JSONReply, anthropic_message
from tests.support.gateway import free_port, run_gateway


def _self_pointing(port: int) -> dict[str, str]:
    own = f"http://127.0.0.1:{port}"
    return {
        "ANTHROPIC_API_KEY": "sk-ant-placeholder",
        "ANTHROPIC_BASE_URL": own.replace("127.0.0.1", "localhost"),
        "OPENAI_API_KEY": "sk-placeholder",
        "OPENAI_BASE_URL": f"http://0.0.0.0:{port}/v1",
        "MAX_RETRIES": "3",
    }


def test_base_urls_naming_the_gateway_answer_508_at_once(tmp_path: Path) -> None:
    port = free_port()
    with run_gateway(_self_pointing(port), tmp_path, port=port) as gateway:
        client = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
        started = time.perf_counter()
        with pytest.raises(anthropic.APIStatusError) as raised:
            client.messages.create(
                model="anthropic:claude-sonnet-4-5",
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
            )
        assert time.perf_counter() - started < 2.0
        assert raised.value.status_code == 508
        body = raised.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert "ANTHROPIC_BASE_URL" in body["error"]["message"]
        assert "https://api.anthropic.com" in body["error"]["message"]

        chat = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as raised_openai:
            chat.chat.completions.create(
                model="openai:gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        assert raised_openai.value.status_code == 508
        error = raised_openai.value.body
        assert isinstance(error, dict) and "OPENAI_BASE_URL" in error["message"]
        # Streams too, and Claude Code's bare names routed to the default provider.
        with (
            pytest.raises(anthropic.APIStatusError) as streamed,
            client.messages.stream(
                model="sonnet", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            ) as stream,
        ):
            list(stream)
        assert streamed.value.status_code == 508
    log = gateway.log()
    assert "warning" in log and "ANTHROPIC_BASE_URL" in log and "OPENAI_BASE_URL" in log
    assert "sk-ant-placeholder" not in log


@contextmanager
def tcp_relay(target_port: int) -> Iterator[int]:
    """A port forward to ``target_port`` (a load balancer, a DNS alias): the
    gateway cannot know by address that it leads to itself."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        holder["port"] = server.sockets[0].getsockname()[1]
        holder["server"] = server
        ready.set()
        await server.serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(_quiet(main())), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield int(holder["port"])  # type: ignore[call-overload]
    finally:
        server = holder["server"]
        loop.call_soon_threadsafe(server.close)  # type: ignore[attr-defined]
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(5)


async def _quiet(main: object) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await main  # type: ignore[misc]


def test_a_request_that_comes_back_by_another_address_is_508(tmp_path: Path) -> None:
    port = free_port()
    with tcp_relay(port) as relay:
        env = {
            "ANTHROPIC_API_KEY": "sk-ant-placeholder",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{relay}",
            "VDM_DEFAULT_PROVIDER": "anthropic",
        }
        with run_gateway(env, tmp_path, port=port) as gateway:
            assert "warning" not in gateway.log()  # by address, it looks like another host
            client = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
            started = time.perf_counter()
            with pytest.raises(anthropic.APIStatusError) as raised:
                client.messages.create(
                    model="claude-sonnet-4-5",
                    max_tokens=10,
                    messages=[{"role": "user", "content": "hi"}],
                )
            assert time.perf_counter() - started < 3.0
            assert raised.value.status_code == 508
            body = raised.value.body
            assert isinstance(body, dict)
            assert "ANTHROPIC_BASE_URL" in body["error"]["message"]


def test_every_upstream_request_carries_the_hop_header_and_a_chain_passes(
    tmp_path: Path, fake_anthropic: FakeUpstream
) -> None:
    """A vdm in front of another vdm (different configuration) is a chain, not a
    loop: the back gateway sees a hop id that is not its own and serves it."""
    fake_anthropic.reset()
    fake_anthropic.reply(JSONReply(anthropic_message("from upstream")))
    back_env = {"UP_API_KEY": "k", "UP_BASE_URL": fake_anthropic.url, "UP_API_FORMAT": "anthropic"}
    with run_gateway(back_env, tmp_path / "back") as back:
        front_env = {
            "ANTHROPIC_API_KEY": "k",
            "ANTHROPIC_BASE_URL": back.url,
            "VDM_DEFAULT_PROVIDER": "anthropic",
        }
        with run_gateway(front_env, tmp_path / "front") as front:
            client = anthropic.Anthropic(base_url=front.url, api_key="k", max_retries=0)
            answer = client.messages.create(
                model="up:claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
    assert answer.content[0].text == "from upstream"  # type: ignore[union-attr]
    hops = [r.headers.get("x-vdm-hop", "") for r in fake_anthropic.requests]
    assert len(hops) == 1 and hops[0].endswith(";up")
