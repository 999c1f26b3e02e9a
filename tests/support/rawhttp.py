"""One HTTP/1.1 exchange over a plain socket, the request target sent byte for
byte: HTTP clients normalize what an attacker would not (``..``, ``%2e``,
backslashes), so tests of path handling speak the protocol themselves."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    url: str,
    target: bytes,
    *,
    method: bytes = b"GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 20.0,
) -> RawAnswer:
    """Send ``method target`` to the server at ``url`` and read the answer
    (the connection is closed after it)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [method + b" " + target + b" HTTP/1.1", f"host: {host}:{port}".encode()]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}".encode("latin-1"))
    if body or method in (b"POST", b"PUT", b"PATCH"):
        lines.append(f"content-length: {len(body)}".encode())
    lines.append(b"connection: close")
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    if answer_headers.get("transfer-encoding") == "chunked":
        rest = _dechunked(rest)
    return RawAnswer(int(status_line.split()[1]), answer_headers, rest)


def _dechunked(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
