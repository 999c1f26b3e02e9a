"""The upstream session's reads under flow control, through real sockets.

``providers.http`` makes its connections with a client protocol whose
``resume_reading`` does nothing unless reading is paused (aiohttp 3.14 calls
it for every chunk read).  These tests make an answer outrun its reader, so
aiohttp really pauses the socket (and, for a compressed answer, the
decompression in the middle of a chunk), and check every byte still arrives.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from tests.support.waiting import until
from vdm.config import ServerSettings
from vdm.providers.http import _ResponseHandler, make_session

CHUNK = b"data: " + b"x" * 1000 + b"\n\n"
CHUNKS = 3000  # 3 MB in 3,000 HTTP chunks: past both the byte and the chunk-count bounds


@asynccontextmanager
async def serving(handler: web.RequestHandler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for _ in range(CHUNKS):
        await response.write(CHUNK)
    await response.write_eof()
    return response


async def read_late(url: str) -> tuple[bool, bytes]:
    """GET ``url``, let the answer pile up unread, then read it all as the relay
    does (``iter_any``); whether the connection was paused, and the body."""
    session = make_session(ServerSettings(request_timeout=10.0))
    async with session, session.get(url) as response:
        protocol = response.connection.protocol  # type: ignore[union-attr]
        assert isinstance(protocol, _ResponseHandler)
        paused = await until(lambda: protocol._reading_paused)  # aiohttp stops reading
        parts = [chunk async for chunk in response.content.iter_any()]
    return paused, b"".join(parts)


def test_a_chunked_answer_that_outruns_its_reader_arrives_whole() -> None:
    async def main() -> tuple[bool, bytes]:
        async with serving(chunked) as url:
            return await asyncio.wait_for(read_late(url), 20)

    paused, body = asyncio.run(main())
    assert paused, "the answer never filled the reader: the test would prove nothing"
    assert len(body) == CHUNKS * len(CHUNK)
    assert hashlib.sha256(body).digest() == hashlib.sha256(CHUNK * CHUNKS).digest()


def test_a_compressed_answer_paused_mid_decompression_arrives_whole() -> None:
    plain = b"".join(b"data: %d %s\n\n" % (n, b"y" * 500) for n in range(20_000))  # 10 MB
    packed = gzip.compress(plain)  # a few hundred kB: one read inflates past every bound

    async def compressed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "content-encoding": "gzip"}
        )
        await response.prepare(request)
        for start in range(0, len(packed), 16_384):
            await response.write(packed[start : start + 16_384])
        await response.write_eof()
        return response

    async def main() -> tuple[bool, bytes]:
        async with serving(compressed) as url:
            return await asyncio.wait_for(read_late(url), 20)

    paused, body = asyncio.run(main())
    assert paused
    assert len(body) == len(plain) and body == plain
