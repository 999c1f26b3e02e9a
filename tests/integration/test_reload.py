"""SIGHUP and ``vdm server reload``: the configuration files read again while
the gateway serves, through a real gateway process.

A stream in flight finishes on the configuration it started with; the next
request sees the new providers, aliases and default provider; a broken file
changes nothing but one error line; restart-only settings are named; with
``--workers N`` every worker reloads and none is restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anthropic
import httpx
import openai

from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    SSEReply,
    anthropic_message,
    completion,
    stream_of,
)
from tests.support.gateway import Gateway, clean_env, run_gateway, worker_pids
from tests.support.waiting import wait_for


def _first(fake: FakeUpstream, alias_target: str) -> str:
    return f"""
default-provider = "first"
[providers.first]
base-url = "{fake.url}/v1"
api-key = "sk-first-key"
api-format = "openai"
[providers.first.aliases]
quick = "{alias_target}"
"""


def _second(fake: FakeUpstream) -> str:
    return f"""
default-provider = "second"
[providers.second]
base-url = "{fake.url}"
api-key = "sk-second-key"
api-format = "anthropic"
[providers.second.aliases]
quick = "claude-b"
"""


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return subprocess.run(
        [sys.executable, "-m", "vdm", "server", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start(tmp_path: Path, config: str, *args: str) -> tuple[Path, Path]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "vdm.toml").write_text(config)
    return work, tmp_path / "vdm.pid"


def _health(gw: Gateway) -> dict:
    return httpx.get(gw.url + "/health", timeout=5).json()


def test_sighup_reloads_while_a_stream_flows(
    tmp_path: Path, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    work, pid_file = _start(tmp_path, _first(fake_openai, "model-a"))
    gate = threading.Event()
    fake_openai.reply(
        SSEReply(stream_of(completion("one two three four"), pieces=4), gate=gate, gate_before=2)
    )
    with run_gateway({}, tmp_path, cwd=work, args=["--pid-file", str(pid_file)]) as gw:
        texts: list[str] = []
        failure: list[BaseException] = []
        first_text = threading.Event()

        def stream() -> None:
            try:
                with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
                    for part in c.chat.completions.create(
                        model="quick",
                        messages=[{"role": "user", "content": "hi"}],
                        stream=True,
                        timeout=40,
                    ):
                        if part.choices and part.choices[0].delta.content:
                            texts.append(part.choices[0].delta.content)
                            first_text.set()
            except BaseException as exc:
                failure.append(exc)
                first_text.set()

        reader = threading.Thread(target=stream)
        reader.start()
        try:
            assert first_text.wait(20), "the stream did not start"
            (work / "vdm.toml").write_text(_second(fake_anthropic))
            done = _cli(tmp_path / "home", "reload", "--pid-file", str(pid_file))
            assert done.returncode == 0, done.stdout + done.stderr
            assert "reloaded its configuration" in done.stdout

            # The next request: the new default provider and alias.
            fake_anthropic.reply(JSONReply(anthropic_message("from second")))
            with anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0) as client:
                answer = client.messages.with_raw_response.create(
                    model="quick",
                    max_tokens=50,
                    messages=[{"role": "user", "content": "hi"}],
                    timeout=20,
                )
            assert answer.headers["x-vdm-provider"] == "second"
            assert answer.parse().content[0].text == "from second"
            assert fake_anthropic.last.json["model"] == "claude-b"
            assert fake_anthropic.last.headers["x-api-key"] == "sk-second-key"
            assert reader.is_alive(), "the stream in flight ended at the reload"
        finally:
            gate.set()
            reader.join(30)
        assert not failure, failure
        assert "".join(texts) == "one two three four"  # whole, on the old provider
        assert fake_openai.requests[0].json["model"] == "model-a"
        health = _health(gw)
        assert health["default_provider"] == "second"
        assert list(health["providers"]) == ["second", "echo"]
        assert health["last_reload"]["ok"] is True
        assert gw.process.poll() is None
        log = gw.log()
        assert "configuration reloaded: default provider second; added second; removed first" in (
            log
        )
        assert "sk-second-key" not in log
        assert " ERROR " not in log


def test_a_broken_file_keeps_the_running_configuration(
    tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    work, pid_file = _start(tmp_path, _first(fake_openai, "model-a"))
    with run_gateway({}, tmp_path, cwd=work, args=["--pid-file", str(pid_file)]) as gw:
        (work / "vdm.toml").write_text(
            _first(fake_openai, "model-b") + "\n[providers.first.mistake]\nx = 1\n"
        )
        done = _cli(tmp_path / "home", "reload", "--pid-file", str(pid_file))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "reload failed" in done.stderr
        assert "unknown key 'providers.first.mistake'" in done.stderr
        errors = [line for line in gw.log().splitlines() if " ERROR " in line]
        assert len(errors) == 1, errors
        assert "configuration reload failed, the running one is kept" in errors[0]
        assert f"{work / 'vdm.toml'}: unknown key 'providers.first.mistake'" in errors[0]

        # Still the old alias, served as before.
        fake_openai.reply(JSONReply(completion("still here")))
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
            reply = c.chat.completions.create(
                model="quick", messages=[{"role": "user", "content": "hi"}], timeout=20
            )
        assert reply.choices[0].message.content == "still here"
        assert fake_openai.last.json["model"] == "model-a"

        # A plain SIGHUP with a file that is not TOML at all: the same.
        (work / "vdm.toml").write_text("[providers.first\n")
        os.kill(gw.process.pid, signal.SIGHUP)
        assert wait_for(lambda: gw.log().count(" ERROR ") == 2), gw.log()
        assert gw.process.poll() is None
        gw.process.send_signal(signal.SIGTERM)
        assert gw.process.wait(20) == 0  # the exit code of the process is unaffected


def test_restart_only_settings_are_named_and_kept(
    tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    work, pid_file = _start(tmp_path, _first(fake_openai, "model-a"))
    with run_gateway({}, tmp_path, cwd=work, args=["--pid-file", str(pid_file)]) as gw:
        (work / "vdm.toml").write_text(
            _first(fake_openai, "model-b")
            + '\n[server]\nlog-format = "json"\nlog-level = "DEBUG"\n[tenants]\n'
            + 'database-url = "postgresql://u:secret-pw@db.invalid/vdm"\n'
        )
        os.kill(gw.process.pid, signal.SIGHUP)
        assert wait_for(lambda: "configuration reloaded" in gw.log()), gw.log()
        assert wait_for(lambda: "take effect only on a restart" in gw.log()), gw.log()
        lines = [line for line in gw.log().splitlines() if "only on a restart" in line]
        assert len(lines) == 1
        assert "server.log-format, tenants.database-url changed" in lines[0]
        assert "secret-pw" not in gw.log()
        fake_openai.reply(JSONReply(completion("new alias")))
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
            c.chat.completions.create(
                model="quick", messages=[{"role": "user", "content": "hi"}], timeout=20
            )
        assert fake_openai.last.json["model"] == "model-b"  # the rest applied
        assert not [line for line in gw.log().splitlines() if line.startswith("{")]  # console


def test_workers_each_reload_and_none_restarts(tmp_path: Path, fake_openai: FakeUpstream) -> None:
    work, pid_file = _start(tmp_path, _first(fake_openai, "model-a"))
    args = ["--pid-file", str(pid_file), "--workers", "2"]
    with run_gateway({}, tmp_path, cwd=work, args=args, timeout=40) as gw:
        workers = sorted(worker_pids(gw.process.pid, 2))
        assert len(workers) == 2
        # Both workers serving (a worker still starting reads the file as it is then,
        # and logs no reload of it).
        assert wait_for(lambda: gw.log().count("Application startup complete") == 2), gw.log()
        (work / "vdm.toml").write_text(_first(fake_openai, "model-b"))
        os.kill(gw.process.pid, signal.SIGHUP)
        assert wait_for(lambda: gw.log().count("configuration reloaded") == 2), gw.log()
        assert sorted(worker_pids(gw.process.pid, 2)) == workers
        fake_openai.responder = lambda recorded: JSONReply(completion("ok"))
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
            for _ in range(4):  # whichever worker answers
                c.chat.completions.create(
                    model="quick", messages=[{"role": "user", "content": "hi"}], timeout=20
                )
        assert {r.json["model"] for r in fake_openai.requests} == {"model-b"}
