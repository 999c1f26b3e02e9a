"""The file-backed revocation list and issued-token log (vdm.auth.token_store)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.support.waiting import until
from vdm.auth.token_store import IssuedTokens, RevocationList, is_expired, state_dir


def test_state_dir_follows_xdg(tmp_path: Path) -> None:
    assert state_dir({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "vdm"
    assert state_dir({"HOME": str(tmp_path)}) == tmp_path / ".local" / "state" / "vdm"


def test_revoke_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "revoked-tokens"
    writer, reader = RevocationList(path), RevocationList(path)
    reader.load()
    assert not reader.is_revoked("a")
    assert writer.revoke("a") is True
    assert writer.revoke("a") is False
    reader.load()
    assert reader.is_revoked("a")
    path.write_text("# a comment\nb\n\n")
    reader.load()
    assert reader.revoked == frozenset({"b"})


def test_watch_picks_up_a_change(tmp_path: Path) -> None:
    path = tmp_path / "revoked-tokens"
    revocations = RevocationList(path)
    revocations.load()

    async def scenario() -> bool:
        task = asyncio.create_task(revocations.watch(interval=0.01))
        RevocationList(path).revoke("late")  # (after the watched list's last load)
        seen = await until(lambda: revocations.is_revoked("late"))
        task.cancel()
        return seen

    assert asyncio.run(scenario())


def test_a_removed_file_means_nothing_revoked(tmp_path: Path) -> None:
    path = tmp_path / "revoked-tokens"
    revocations = RevocationList(path)
    revocations.revoke("x")
    os.unlink(path)
    revocations.load()
    assert not revocations.is_revoked("x")


def test_issued_tokens_keep_metadata_only(tmp_path: Path) -> None:
    log = IssuedTokens(tmp_path / "tokens.jsonl")
    log.record({"jti": "j", "sub": "s", "iat": 1, "exp": 2, "extra": "dropped"})
    (tmp_path / "tokens.jsonl").open("a").write("not json\n")
    assert log.entries() == [{"jti": "j", "sub": "s", "iat": 1, "exp": 2}]
    assert is_expired(log.entries()[0], now=3) and not is_expired(log.entries()[0], now=1)
