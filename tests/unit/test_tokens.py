"""Local token estimate: grows with what the request carries; images are
sized from their real headers (PNG, GIF, JPEG, WebP), scaled to the 1568
pixel long edge, URLs and unreadable images count the maximum."""

from __future__ import annotations

import base64
import math
import struct
import zlib

import pytest

from vdm import ir
from vdm.tokens import (
    IMAGE_MAX_TOKENS,
    count_request_tokens,
    count_text_tokens,
    image_size,
    image_tokens,
)

# ---------------------------------------------------------------- tiny images, by hand


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def gif(width: int, height: int, version: bytes = b"GIF89a") -> bytes:
    return version + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


def jpeg(width: int, height: int, *, sof: int = 0xC0, exif_bytes: int = 0) -> bytes:
    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    app0 = segment(0xE0, b"JFIF\0" + bytes([1, 1, 0]) + struct.pack(">HH", 72, 72) + b"\0\0")
    out = b"\xff\xd8" + app0
    if exif_bytes:
        # an APP1 full of bytes that look like markers (0xFFC0) must be skipped whole
        out += segment(
            0xE1, b"Exif\0\0" + b"\xff\xc0\x00\x11\x08\x00\x01\x00\x01" * (exif_bytes // 9)
        )
    out += segment(0xDB, bytes(65))  # DQT
    out += segment(0xC4, b"\x00" + bytes(16) + b"\x00")  # DHT: 0xC4 is not a frame header
    components = b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    out += segment(sof, b"\x08" + struct.pack(">HH", height, width) + b"\x03" + components)
    out += segment(0xDA, b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00") + b"\x00" * 8
    return out + b"\xff\xd9"


def webp_vp8x(width: int, height: int) -> bytes:
    payload = (
        b"\x10" + b"\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    chunk = b"VP8X" + struct.pack("<I", len(payload)) + payload
    body = b"WEBP" + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8(width: int, height: int) -> bytes:
    frame = b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    payload = b"\x50\x02\x00" + frame + b"\0" * 10
    body = b"WEBP" + b"VP8 " + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + bits.to_bytes(4, "little") + b"\0" * 8
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def image(data: bytes, media_type: str = "image/png") -> ir.ImagePart:
    return ir.ImagePart(media_type=media_type, data=b64(data))


def expected_tokens(width: int, height: int) -> int:
    scale = min(1.0, 1568 / max(width, height))
    return max(1, min(math.ceil(width * scale * height * scale / 750), IMAGE_MAX_TOKENS))


# ---------------------------------------------------------------- image sizes


BUILDERS = {
    "png": png,
    "gif": gif,
    "jpeg": jpeg,
    "webp-vp8x": webp_vp8x,
    "webp-vp8": webp_vp8,
    "webp-vp8l": webp_vp8l,
}


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize(("width", "height"), [(1, 1), (300, 200), (123, 457), (1000, 1000)])
def test_size_read_from_the_header(kind: str, width: int, height: int) -> None:
    data = BUILDERS[kind](width, height)
    assert image_size(b64(data)) == (width, height)
    assert image_tokens(image(data)) == expected_tokens(width, height)


def test_known_token_values() -> None:
    assert image_tokens(image(png(750, 750))) == 750
    assert image_tokens(image(gif(100, 200))) == 27  # ceil(20000 / 750)
    assert image_tokens(image(jpeg(300, 200))) == 80
    assert image_tokens(image(webp_vp8x(30, 25))) == 1
    assert image_tokens(image(png(1, 1))) == 1  # never zero


def test_gif87a_and_progressive_jpeg() -> None:
    assert image_size(b64(gif(640, 480, b"GIF87a"))) == (640, 480)
    assert image_size(b64(jpeg(640, 480, sof=0xC2))) == (640, 480)


def test_jpeg_size_after_a_large_exif_segment() -> None:
    data = jpeg(800, 600, exif_bytes=30_000)
    assert len(data) > 30_000
    assert image_size(b64(data)) == (800, 600)


def test_big_images_are_scaled_to_the_long_edge() -> None:
    # 3136x392 unscaled would be 1640 tokens (capped 1600); scaled by 1/2 to
    # 1568x196 it is ceil(307328 / 750) = 410.
    assert image_tokens(image(png(3136, 392))) == 410
    assert image_tokens(image(png(392, 3136))) == 410
    assert image_tokens(image(jpeg(6272, 784))) == 410  # scaled by 1/4
    assert image_tokens(image(webp_vp8x(3136, 392))) == 410
    # at the cap itself nothing changes
    assert image_tokens(image(png(1568, 196))) == 410
    # a big square lands at the maximum (1568 * 1568 / 750 > 1600)
    assert image_tokens(image(png(4000, 4000))) == IMAGE_MAX_TOKENS
    assert image_tokens(image(gif(65535, 65535))) == IMAGE_MAX_TOKENS


def test_url_and_unreadable_images_count_the_maximum() -> None:
    assert image_tokens(ir.ImagePart(url="https://example.com/cat.png")) == 1600
    assert image_tokens(ir.ImagePart(media_type="image/png", data=b64(b"not an image"))) == 1600
    assert image_tokens(ir.ImagePart(media_type="image/png", data="%%% not base64 %%%")) == 1600
    assert image_tokens(ir.ImagePart(media_type="image/png", data="")) == 1600
    assert image_tokens(image(png(0, 10))) == 1600
    truncated = b64(png(10, 10)[:14])
    assert image_tokens(ir.ImagePart(media_type="image/png", data=truncated)) == 1600
    assert IMAGE_MAX_TOKENS == 1600


# ---------------------------------------------------------------- request counts


def request(**kwargs: object) -> ir.ChatRequest:
    kwargs.setdefault("messages", [ir.Message("user", [ir.TextPart("Hello there")])])
    return ir.ChatRequest(model="m", **kwargs)  # type: ignore[arg-type]


def test_text_tokens() -> None:
    assert count_text_tokens("") == 0
    assert count_text_tokens("abcd") == 1
    assert count_text_tokens("abcde") == 2


def test_count_grows_with_everything_in_the_request() -> None:
    base = count_request_tokens(request())
    assert base > 0
    assert count_request_tokens(request(system=[ir.TextPart("x" * 400)])) == base + 100
    two = [
        ir.Message("user", [ir.TextPart("Hello there")]),
        ir.Message("assistant", [ir.TextPart("y" * 80)]),
    ]
    assert count_request_tokens(request(messages=two)) > base + 20
    tool = ir.Tool(
        "get_weather",
        "Weather for a city",
        {"type": "object", "properties": {"city": {"type": "string"}}},
    )
    with_tool = count_request_tokens(request(tools=[tool]))
    assert with_tool > base + 8
    assert count_request_tokens(request(tools=[tool, tool])) > with_tool


def test_count_includes_tool_use_results_thinking_and_images() -> None:
    base = count_request_tokens(request())

    def plus(*parts: ir.Part) -> int:
        messages = [
            ir.Message("user", [ir.TextPart("Hello there")]),
            ir.Message("assistant", list(parts)),
        ]
        return count_request_tokens(request(messages=messages)) - base

    overhead = plus()
    assert plus(ir.ThinkingPart("t" * 400, "sig")) >= overhead + 99
    assert plus(ir.ToolUsePart("toolu_1", "Read", {"path": "p" * 400})) >= overhead + 99
    result = ir.ToolResultPart("toolu_1", [ir.TextPart("r" * 400), image(png(750, 750))])
    assert plus(result) >= overhead + 100 + 750
    assert plus(image(png(750, 750))) == overhead + 750
    assert plus(ir.ImagePart(url="https://example.com/x.png")) == overhead + 1600
