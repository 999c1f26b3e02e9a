"""The install path: the package as a tool, with a light core and extras.

A core-only environment is made offline: a fresh virtual environment, the
wheel of this tree built without the network, and the core requirements
(pyproject's ``dependencies``, followed through their own requirements) linked
in from the test environment's installed distributions: PostgreSQL, Redis and
gRPC libraries are absent from it.  There ``vdm`` serves the echo provider and
asks for the right extra, in one line and exit 2, when a feature needs one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from tests.support.gateway import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = {"asyncpg", "redis", "grpcio", "protobuf"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _closure(requirements: list[str]) -> set[str]:
    """The installed distributions ``requirements`` need, transitively (extras
    named in a requirement included, markers evaluated for this interpreter)."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for wanted in ("", *req.extras):
            for sub in metadata.requires(name) or []:
                todo.append((Requirement(sub), wanted))
    return {k.split("[")[0] for k in seen}


def _link(distribution: str, site: Path) -> None:
    dist = metadata.distribution(distribution)
    for file in dist.files or []:
        if file.parts[0] == ".." or str(file).endswith(".pyc"):
            continue  # scripts outside site-packages; bytecode is made again
        source = Path(str(dist.locate_file(file)))
        target = site / file
        if not source.exists() or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("core")
    wheels = tmp / "wheels"
    tree = tmp / "tree"  # a copy: the build leaves nothing in the work tree
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, tree / name)
    shutil.copytree(
        ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(wheels),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert built.returncode == 0, built.stderr
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    purelib = sysconfig.get_path("purelib", vars={"base": str(env_dir)})
    site = Path(purelib)
    core = _closure(_pyproject()["project"]["dependencies"])
    assert not core & OPTIONAL, core & OPTIONAL
    for distribution in sorted(core):
        _link(distribution, site)
    (wheel,) = wheels.glob("vdm-*.whl")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert installed.returncode == 0, installed.stderr
    return env_dir


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    # No PYTHONPATH: only the core environment's own packages.
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}


def _vdm(core: Path, tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(core / "bin" / "vdm"), *args],
        env=_env(tmp, **env),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_wheel_declares_a_light_core_and_its_extras(core_venv: Path) -> None:
    (wheel,) = core_venv.parent.joinpath("wheels").glob("vdm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = archive.read(name).decode()
        entry_points = archive.read(name.replace("METADATA", "entry_points.txt")).decode()
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", meta, re.M))
    assert {"postgres", "redis", "grpc", "all"} <= extras
    core = [
        Requirement(line.split(": ", 1)[1])
        for line in meta.splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    unconditional = {
        r.name.lower() for r in core if r.marker is None or "extra" not in str(r.marker)
    }
    assert not unconditional & OPTIONAL
    assert "vdm = vdm.cli.main:main" in entry_points


def test_core_install_serves_echo_and_names_missing_extras(core_venv: Path, tmp_path: Path) -> None:
    python = core_venv / "bin" / "python"
    for module in ("grpc", "redis", "asyncpg"):  # the environment really is core-only
        probe = subprocess.run(
            [str(python), "-c", f"import {module}"], env=_env(tmp_path), capture_output=True
        )
        assert probe.returncode != 0, module

    shown = _vdm(core_venv, tmp_path, "--version")
    assert shown.returncode == 0 and re.fullmatch(r"vdm \d+\.\d+\.\d+\S*\n", shown.stdout)
    assert _vdm(core_venv, tmp_path, "version").stdout == shown.stdout

    port = free_port()
    server = subprocess.Popen(
        [str(core_venv / "bin" / "vdm"), "server", "start", "--port", str(port)],
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
            try:
                return httpx.get(url + "/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(ready, 30, every=0.1), "the core gateway did not become ready"
        answer = httpx.post(
            url + "/v1/messages",
            json={
                "model": "echo",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-vdm-provider"] == "echo"
        assert answer.json()["content"][0]["text"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    assert server.returncode == 0

    cases = [
        ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, (), "REDIS_URL is set: install vdm[redis]"),
        (
            {"DATABASE_URL": "postgresql://vdm@127.0.0.1:5432/vdm"},
            (),
            "DATABASE_URL is PostgreSQL: install vdm[postgres]",
        ),
        ({}, ("--grpc-port", str(free_port())), "install vdm[grpc]"),
    ]
    for env, args, message in cases:
        refused = _vdm(core_venv, tmp_path, "server", "start", "--port", str(port), *args, **env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], refused.stderr
        assert "Traceback" not in refused.stdout + refused.stderr
    for args in (("grpc", "serve"), ("proxy", "test", "vibectl-server-insecure://127.0.0.1:1")):
        refused = _vdm(core_venv, tmp_path, *args)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "install vdm[grpc]" in refused.stderr and "Traceback" not in refused.stderr


def test_a_core_start_imports_no_optional_library(tmp_path: Path) -> None:
    """Even where they are installed: a start without Redis, PostgreSQL or gRPC
    settings never imports their libraries (nor pays for them at cold start)."""
    script = """
import asyncio, json, sys
from vdm.server.app import create_app

async def main():
    app = create_app()
    inbox = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})
    sent = []
    async def send(message): sent.append(message["type"])
    await app({"type": "lifespan"}, inbox.get, send)
    return sent

sent = asyncio.run(main())
import vdm.cli.main
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"grpc", "redis", "asyncpg", "google"})
print(json.dumps({"sent": sent, "loaded": loaded}))
"""
    env = _env(tmp_path)
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["sent"] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert report["loaded"] == []
