"""The door registry: one declaration per client protocol, and what is derived from it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vdm import doors
from vdm.config import load_settings
from vdm.doors.door import WireDoor, path_pattern
from vdm.pipeline import Gateway
from vdm.server import routes

GENERATE = "/v1beta/models/{model}:generateContent"


def test_routes_error_shapes_and_cache_paths_are_read_off_the_registry() -> None:
    names = [door.name for door in doors.DOORS]
    assert names == ["anthropic", "openai", "responses", "grpc"]
    assert len(set(names)) == len(names)  # a name is a metric label and a cache-key part
    for door in doors.WIRE:
        for path in door.paths:
            handler = routes.ROUTES[path]["POST"]
            assert handler is routes._DOOR_HANDLERS[door.name]
            assert routes.door_for(None, path + "/", {}) is door  # type: ignore[arg-type]
            assert doors.CACHE_PATHS[path] is door.cache
        assert door.cache.door == door.name
        assert doors.BY_NAME[door.name] is door
    assert doors.KEY_HEADERS == ("x-api-key",)  # besides Authorization: Bearer


def test_a_path_parameter_is_one_segment_up_to_the_literal_after_it() -> None:
    pattern = path_pattern(GENERATE)
    assert pattern is not None and path_pattern("/v1/messages") is None
    found = pattern.match("/v1beta/models/gemini-2.0-flash:generateContent")
    assert found is not None and found.groupdict() == {"model": "gemini-2.0-flash"}
    assert pattern.match("/v1beta/models/a/b:generateContent") is None
    assert pattern.match("/v1beta/models/m:streamGenerateContent") is None


def test_any_declared_door_is_served_by_the_one_pipeline(tmp_path: Path) -> None:
    """A door the pipeline has never heard of — here one that takes its model
    from the path, as Gemini's ``generateContent`` does — is served by
    ``Gateway.serve`` from its declaration alone: routing, the provider call,
    its rendering, the reply's headers."""

    def asks(parsed: dict[str, Any], params: Mapping[str, str]) -> tuple[str, bool]:
        parsed["model"] = params["model"]
        return params["model"], False

    door: WireDoor = dataclasses.replace(  # (no native rule: every provider converted)
        doors.ANTHROPIC,
        name="example",
        paths=(GENERATE,),
        asks=asks,
        native=None,
        forward=None,
        relay=None,
    )
    settings = load_settings(
        env={"HOME": str(tmp_path), "VDM_DEFAULT_PROVIDER": "echo"}, cwd=tmp_path
    )
    body = json.dumps(
        {"max_tokens": 20, "messages": [{"role": "user", "content": "hello door"}]}
    ).encode()

    async def serve() -> Any:
        gateway = Gateway.from_settings(settings)
        try:
            return await gateway.serve(door, body, {}, None, None, {"model": "echo"})
        finally:
            await gateway.close()

    reply = asyncio.run(serve())
    assert reply.status == 200, reply.body
    assert reply.headers["x-vdm-provider"] == "echo"
    answer = json.loads(reply.body)
    assert answer["type"] == "message" and answer["model"] == "echo"
    assert answer["content"][0]["text"] == "hello door"
    assert reply.outcome.usage.output_tokens > 0
