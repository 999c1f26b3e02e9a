"""Local token estimate for providers that cannot count (no network).

The count is an estimate, good enough for Claude Code's context bookkeeping:

* text: one token per 4 characters (rounded up) — system blocks, message
  text, thinking, tool-use input and tool-result text, tool names,
  descriptions and input schemas (as compact JSON);
* every message adds 3 tokens of framing, every tool 8;
* an image costs ``ceil(width * height / 750)`` tokens after scaling it, as
  Anthropic does, to fit 1568 pixels on the long edge (so at most about
  1,600 tokens); the size is read from the PNG, GIF, JPEG or WebP header of
  a base64 image; an image given by URL, or whose header cannot be read,
  counts as the maximum, 1,600.

It is cheap: a few string lengths and one small JSON encode per tool.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct

import msgspec

from vdm import ir

MESSAGE_OVERHEAD = 3
TOOL_OVERHEAD = 8
IMAGE_MAX_TOKENS = 1600
_LONG_EDGE = 1568
_encode = msgspec.json.Encoder().encode


def count_text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def count_request_tokens(request: ir.ChatRequest) -> int:
    chars = sum(len(p.text) for p in request.system)
    tokens = 0
    for message in request.messages:
        tokens += MESSAGE_OVERHEAD
        for part in message.content:
            c, t = _part_cost(part)
            chars += c
            tokens += t
    for tool in request.tools:
        tokens += TOOL_OVERHEAD
        chars += len(tool.name) + len(tool.description or "") + len(_encode(tool.input_schema))
    return tokens + (chars + 3) // 4


def _part_cost(part: ir.Part) -> tuple[int, int]:
    """(characters, extra tokens) of one content part."""
    match part:
        case ir.TextPart(text=text):
            return len(text), 0
        case ir.ImagePart():
            return 0, image_tokens(part)
        case ir.DocumentPart(text=text, data=data):
            # Text as text; a file by its size (base64 holds 3 bytes in 4 characters).
            return (len(text), 0) if text is not None else (len(data or "") * 3 // 4, 0)
        case ir.ToolUsePart(name=name, input=tool_input):
            return len(name) + len(_encode(tool_input)), 0
        case ir.ToolResultPart(content=content):
            chars = tokens = 0
            for inner in content:
                c, t = _part_cost(inner)
                chars += c
                tokens += t
            return chars, tokens
        case ir.ThinkingPart(thinking=thinking):
            return len(thinking), 0
        case ir.RedactedThinkingPart():
            return 0, 0
    return 0, 0  # pragma: no cover - exhaustive


def image_tokens(part: ir.ImagePart) -> int:
    size = image_size(part.data) if part.data else None
    if size is None:
        return IMAGE_MAX_TOKENS
    width, height = size
    if width <= 0 or height <= 0:
        return IMAGE_MAX_TOKENS
    scale = min(1.0, _LONG_EDGE / max(width, height))
    tokens = math.ceil((width * scale) * (height * scale) / 750)
    return max(1, min(tokens, IMAGE_MAX_TOKENS))


def image_size(data_b64: str) -> tuple[int, int] | None:
    """(width, height) from the header of a base64 PNG/GIF/JPEG/WebP."""
    head_chars = 64 * 1024  # JPEG's size marker may follow EXIF data
    head = data_b64[:head_chars]
    head = head[: len(head) - len(head) % 4]
    try:
        raw = base64.b64decode(head, validate=False)
    except (binascii.Error, ValueError):
        return None
    try:
        return _dimensions(raw)
    except struct.error:
        return None


def _dimensions(raw: bytes) -> tuple[int, int] | None:
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and raw[12:16] == b"IHDR":
        w, h = struct.unpack(">II", raw[16:24])
        return w, h
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        w, h = struct.unpack("<HH", raw[6:10])
        return w, h
    if raw.startswith(b"\xff\xd8"):
        return _jpeg_dimensions(raw)
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        chunk = raw[12:16]
        if chunk == b"VP8X":
            w = int.from_bytes(raw[24:27], "little") + 1
            h = int.from_bytes(raw[27:30], "little") + 1
            return w, h
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", raw[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(raw[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_dimensions(raw: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(raw):
        if raw[i] != 0xFF:
            i += 1
            continue
        marker = raw[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", raw[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", raw[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None
