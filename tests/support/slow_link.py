"""A TCP relay on loopback that holds back, for a while, what a client sends
when it contains a marker: a slow network for one kind of command, to show
what a test must not depend on (e.g. Redis writes arriving late)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, marker: bytes, delay: float
) -> None:
    try:
        while data := await reader.read(65536):
            if marker and marker in data:
                await asyncio.sleep(delay)  # (later bytes wait behind it: order kept)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@contextmanager
def slow_link(host: str, port: int, marker: bytes, delay: float) -> Iterator[int]:
    """Relay a loopback port to ``host:port``, holding back for ``delay`` seconds
    each chunk a client sends that contains ``marker``; yields the port."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    bound: list[int] = []

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, port)
        await asyncio.gather(
            _pump(client_r, server_w, marker, delay), _pump(server_r, client_w, b"", 0.0)
        )

    async def main() -> asyncio.Server:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        bound.append(server.sockets[0].getsockname()[1])
        return server

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(main())
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield bound[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
