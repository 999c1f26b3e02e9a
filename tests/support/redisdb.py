"""The Redis every shared-state test runs against (127.0.0.1:6379).

Each test gets a namespace of its own (``REDIS_NAMESPACE``), so test runs in
parallel, or one right after another, never see each other's keys.  Without
the server those tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator

import pytest

REDIS_URL = "redis://127.0.0.1:6379/0"


def require_redis() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return REDIS_URL
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not reachable on 127.0.0.1:6379 (required under CI=true)")
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")


def redis_env() -> Iterator[dict[str, str]]:
    """``REDIS_URL`` and a fresh ``REDIS_NAMESPACE``; its keys deleted afterwards."""
    url = require_redis()
    namespace = f"vdmtest-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        yield {"REDIS_URL": url, "REDIS_NAMESPACE": namespace}
    finally:
        import redis

        client = redis.Redis.from_url(url)
        try:
            names = list(client.scan_iter(match=namespace + ":*", count=1000))
            if names:
                client.delete(*names)
        finally:
            client.close()
