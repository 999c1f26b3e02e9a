"""Project credentials at rest: encrypted with no setting at all (a key generated
into ~/.config/vdm/encryption-key, 0600), the SQLite files for their owner alone,
plain text only when the operator says ``VDM_ENCRYPTION_KEY=none`` (said once),
rows stored in plain text before sealed at the next start."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from tests.support.databases import database_env
from tests.support.fakes import FakeUpstream, JSONReply, completion
from tests.support.gateway import Gateway, run_gateway

MGMT = "at-rest-mgmt-token-0123456789"
PROJECT_KEY = "sk-project-key-AT-REST-777"
ASK = {"model": "openai:gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def env_for(fake_openai: FakeUpstream, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "MANAGEMENT_TOKEN": MGMT,
        "DATABASE_URL": f"sqlite:///{tmp / 'data' / 'vdm.db'}",
        "OPENAI_API_KEY": "sk-gateway-pool",
        "OPENAI_BASE_URL": fake_openai.url + "/v1",
        **extra,
    }


def api(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MGMT}"}, timeout=10)


def project_with_token(gw: Gateway) -> str:
    with api(gw) as client:
        project = client.post(
            "/manage/projects", json={"name": "p", "api_keys": {"openai": PROJECT_KEY}}
        ).json()
        return str(
            client.post("/manage/tokens", json={"project_id": project["id"]}).json()["token"]
        )


def upstream_key_used(gw: Gateway, fake_openai: FakeUpstream, token: str) -> str:
    fake_openai.reply(JSONReply(completion("ok")))
    reply = httpx.post(gw.url + "/v1/messages", json=ASK, headers={"x-api-key": token}, timeout=10)
    assert reply.status_code == 200, reply.text
    return fake_openai.last.headers["authorization"]


def stored(tmp: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (tmp / "data").glob("vdm.db*"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_encrypted_by_default_with_a_generated_key_and_private_files(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    env = env_for(fake_openai, tmp_path)
    with run_gateway(env, tmp_path) as gw:
        token = project_with_token(gw)
        assert upstream_key_used(gw, fake_openai, token) == f"Bearer {PROJECT_KEY}"
        files = list((tmp_path / "data").glob("vdm.db*"))
        assert {f.name for f in files} >= {"vdm.db", "vdm.db-wal", "vdm.db-shm"}
        assert all(mode(f) == 0o600 for f in files), {f.name: oct(mode(f)) for f in files}
        assert PROJECT_KEY.encode() not in stored(tmp_path) and b"fernet:" in stored(tmp_path)
    key_file = tmp_path / "home" / ".config" / "vdm" / "encryption-key"
    assert mode(key_file) == 0o600
    assert "generated the encryption key" in gw.log() and str(key_file) in gw.log()
    with run_gateway(env, tmp_path) as again:  # the same key read back: the row still opens
        assert upstream_key_used(again, fake_openai, token) == f"Bearer {PROJECT_KEY}"
    assert "generated the encryption key" not in again.log().split("listening on")[-1]


def test_plain_text_only_when_chosen_said_once_and_sealed_when_unchosen(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    with run_gateway(env_for(fake_openai, tmp_path, VDM_ENCRYPTION_KEY="none"), tmp_path) as gw:
        token = project_with_token(gw)
        for _ in range(3):
            assert upstream_key_used(gw, fake_openai, token) == f"Bearer {PROJECT_KEY}"
        assert PROJECT_KEY.encode() in stored(tmp_path)  # as the operator chose
    assert gw.log().count("stored in plain text (VDM_ENCRYPTION_KEY=none)") == 1
    with run_gateway(env_for(fake_openai, tmp_path), tmp_path) as sealed:
        assert "encrypted 1 project credential(s) stored in plain text" in sealed.log()
        assert upstream_key_used(sealed, fake_openai, token) == f"Bearer {PROJECT_KEY}"
        assert PROJECT_KEY.encode() not in stored(tmp_path)  # (no copy left behind either)


def test_an_existing_database_open_to_others_is_named(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "vdm.db").touch(mode=0o644)
    (tmp_path / "data" / "vdm.db").chmod(0o644)
    with run_gateway(env_for(fake_openai, tmp_path), tmp_path) as gw:
        pass
    assert "is open to other users (mode 644): chmod 600" in gw.log()


def test_a_shared_database_wants_the_key_named(tmp_path: Path) -> None:
    """Instances sharing PostgreSQL cannot each generate a key of their own."""
    for db in database_env("postgresql", tmp_path):
        db.pop("VDM_ENCRYPTION_KEY")
        with (
            pytest.raises(RuntimeError, match="set VDM_ENCRYPTION_KEY") as failed,
            run_gateway({"MANAGEMENT_TOKEN": MGMT, **db}, tmp_path),
        ):
            pass
        assert "VDM_ENCRYPTION_KEY=none" in str(failed.value)
