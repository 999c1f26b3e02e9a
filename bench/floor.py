"""The reference floor: the thinnest Anthropic->OpenAI proxy on vdm's stack.

The performance issue sets its targets against "a hundred lines that do only the
text case" on uvicorn + Starlette + aiohttp + msgspec, and gives that proxy's
figures on the machine the targets were set on (0.28 ms of CPU per request at
concurrency 64, +0.6 ms p50 at concurrency 1, 0.9 ms per 20-chunk stream, 0.4 s
cold start).  This is that proxy, written for the benchmark: ``run.py`` measures
it in the same run as the gateway, so the gateway's figures can be read as
ratios to the floor, which holds on a machine faster or slower than the one the
targets came from.  It does what a careful minimal proxy must and nothing more:
text messages in, text out, usage carried over, no auth, routing, retries,
metrics or error mapping.

    python bench/floor.py --port P --upstream http://127.0.0.1:U/v1 --anthropic http://127.0.0.1:U

``POST /relay/v1/messages`` is the thinnest passthrough on the same stack (bytes
relayed to and from the Anthropic upstream, nothing read): the floor of the
passthrough rows.
"""

from __future__ import annotations

import argparse

import aiohttp
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

_dec, _enc = msgspec.json.decode, msgspec.json.encode
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
UPSTREAM = ""  # the OpenAI base URL, set by main()
ANTHROPIC = ""  # the Anthropic base URL (for /relay), set by main()
_session: aiohttp.ClientSession | None = None


def _text(content: str | list) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def to_openai(req: dict) -> dict:
    messages = []
    if req.get("system"):
        messages.append({"role": "system", "content": _text(req["system"])})
    messages += [{"role": m["role"], "content": _text(m["content"])} for m in req["messages"]]
    out = {"model": req["model"], "messages": messages, "max_tokens": req["max_tokens"]}
    if "temperature" in req:
        out["temperature"] = req["temperature"]
    if req.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _sse(kind: str, data: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _enc(data) + b"\n\n"


async def _stream(resp: aiohttp.ClientResponse, model: str):
    try:
        msg = {"id": "msg_floor", "type": "message", "role": "assistant", "model": model}
        msg |= {"content": [], "stop_reason": None, "stop_sequence": None}
        msg["usage"] = {"input_tokens": 0, "output_tokens": 0}
        yield _sse("message_start", {"type": "message_start", "message": msg})
        block = {"type": "content_block_start", "index": 0}
        yield _sse("content_block_start", block | {"content_block": {"type": "text", "text": ""}})
        stop, usage = "end_turn", {}
        async for line in resp.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            chunk = _dec(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if text := choice["delta"].get("content"):
                    delta = {"type": "text_delta", "text": text}
                    yield _sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                    )
                if choice.get("finish_reason"):
                    stop = _STOP.get(choice["finish_reason"], "end_turn")
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        out_usage = {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        }
        delta = {"stop_reason": stop, "stop_sequence": None}
        yield _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": out_usage})
        yield _sse("message_stop", {"type": "message_stop"})
    finally:
        resp.release()


async def messages(request: Request) -> Response:
    req = _dec(await request.body())
    resp = await _session.post(UPSTREAM + "/chat/completions", data=_enc(to_openai(req)))
    if req.get("stream"):
        return StreamingResponse(_stream(resp, req["model"]), media_type="text/event-stream")
    async with resp:
        data = _dec(await resp.read())
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    out = {
        "id": data["id"],
        "type": "message",
        "role": "assistant",
        "model": data["model"],
        "content": [{"type": "text", "text": choice["message"].get("content") or ""}],
        "stop_reason": _STOP.get(choice.get("finish_reason"), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }
    return Response(_enc(out), media_type="application/json")


async def relay(request: Request) -> Response:
    """Passthrough at its thinnest: the body to the Anthropic upstream and its
    answer back, bytes untouched (no usage read, no framing, no end check)."""
    body = await request.body()
    headers = {"x-api-key": "floor-key", "anthropic-version": "2023-06-01"}
    headers["content-type"] = "application/json"
    resp = await _session.post(ANTHROPIC + "/v1/messages", data=body, headers=headers)
    ctype = resp.headers.get("content-type", "application/json")
    if ctype.startswith("text/event-stream"):

        async def chunks():
            try:
                async for chunk in resp.content.iter_any():
                    yield chunk
            finally:
                resp.release()

        return StreamingResponse(chunks(), status_code=resp.status, media_type=ctype)
    async with resp:
        return Response(await resp.read(), status_code=resp.status, media_type=ctype)


async def health(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def _lifespan(app):
    global _session
    _session = aiohttp.ClientSession(headers={"authorization": "Bearer floor-key"})
    yield
    await _session.close()


app = Starlette(
    routes=[
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/relay/v1/messages", relay, methods=["POST"]),
        Route("/health", health),
    ],
    lifespan=_lifespan,
)


def main() -> None:
    global UPSTREAM, ANTHROPIC
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="OpenAI base URL (ending in /v1)")
    parser.add_argument("--anthropic", required=True, help="Anthropic base URL (for /relay)")
    args = parser.parse_args()
    UPSTREAM, ANTHROPIC = args.upstream.rstrip("/"), args.anthropic.rstrip("/")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
