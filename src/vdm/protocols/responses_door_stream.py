"""IR stream events -> the Responses API's ``response.*`` SSE event grammar.

One :class:`StreamEncoder` per stream holds all of its state: the sequence
number every event carries, the open output items (one per IR block: a text
block is a ``message`` item, a tool call a ``function_call``, thinking a
``reasoning`` item with one summary part), and the finished items that
``response.completed`` repeats.  Finished items are built by the same mappers
as the non-streamed response (:mod:`vdm.protocols.responses_door`), so the
official SDK's ``responses.stream`` assembles exactly what
``responses.create`` returns::

    response.created, response.in_progress
    per block:  output_item.added
                (content_part.added, output_text.delta*, output_text.done,
                 content_part.done)                                   text
                | function_call_arguments.delta*, .done               tool call
                | (reasoning_summary_part.added,
                   reasoning_summary_text.delta*, .done,
                   reasoning_summary_part.done)?                      thinking
                output_item.done
    response.completed | response.incomplete     (usage; max_output_tokens)
    on failure: error, response.failed
"""

from __future__ import annotations

import time
from typing import Any, assert_never

import msgspec

from vdm import ir
from vdm.errors import GatewayError
from vdm.protocols import responses_door as rp
from vdm.protocols.sse import frame

_encode = msgspec.json.Encoder().encode


class _Item:
    """One open output item: where it is and what it has so far."""

    __slots__ = (
        "delta_head",
        "id",
        "kind",
        "name",
        "output_index",
        "parts",
        "signature",
        "summary_open",
    )

    def __init__(self, kind: str, id_: str, output_index: int, name: str = "") -> None:
        self.kind = kind
        self.id = id_
        self.output_index = output_index
        self.name = name  # tool calls: the call id is kept here too (see _tool_start)
        self.parts: list[str] = []
        self.signature: str | None = None
        self.summary_open = False
        self.delta_head = b""


class StreamEncoder:
    __slots__ = (
        "_call_ids",
        "_created",
        "_done",
        "_id",
        "_items",
        "_options",
        "_seq",
        "_stop_reason",
        "_usage",
    )

    def __init__(self, options: rp.Options) -> None:
        self._options = options
        self._id = rp.new_response_id()
        self._created = int(time.time())
        self._seq = 0
        self._items: dict[int, _Item] = {}  # IR block index -> open item
        self._call_ids: dict[int, str] = {}
        self._done: dict[int, dict[str, Any]] = {}  # output index -> finished item
        self._usage = ir.Usage()
        self._stop_reason: str | None = None

    # ------------------------------------------------------------ framing

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        return frame(kind, _encode({"type": kind, **fields, "sequence_number": seq}))

    def _delta(self, item: _Item, kind: str, delta: str) -> bytes:
        """The hot path: a delta event from a prebuilt head, one small encode."""
        if not item.delta_head:
            extra = (
                b',"content_index":0,"logprobs":[]'
                if kind == "response.output_text.delta"
                else (b',"summary_index":0' if kind.startswith("response.reasoning") else b"")
            )
            item.delta_head = (
                b'{"type":"'
                + kind.encode()
                + b'","item_id":"'
                + item.id.encode()
                + b'","output_index":'
                + str(item.output_index).encode()
                + extra
                + b',"delta":'
            )
        seq = self._seq
        self._seq = seq + 1
        data = item.delta_head + _encode(delta) + b',"sequence_number":' + str(seq).encode() + b"}"
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _response(self, status: str) -> dict[str, Any]:
        return rp.envelope(
            self._options,
            self._id,
            self._created,
            status,
            [self._done[k] for k in sorted(self._done)],
            self._usage if status != "in_progress" else None,
            self._stop_reason,
        )

    # ------------------------------------------------------------ events

    def encode(self, event: ir.Event) -> bytes:
        match event:
            case ir.TextDelta(index=i, text=text):
                item = self._items[i]
                item.parts.append(text)
                return self._delta(item, "response.output_text.delta", text)
            case ir.ToolInputDelta(index=i, partial_json=pj):
                item = self._items[i]
                item.parts.append(pj)
                return self._delta(item, "response.function_call_arguments.delta", pj)
            case ir.ThinkingDelta(index=i, thinking=thinking):
                return self._thinking_delta(self._items[i], thinking)
            case ir.SignatureDelta(index=i, signature=signature):
                self._items[i].signature = signature
                return b""
            case ir.TextStart(index=i):
                return self._text_start(i)
            case ir.ToolUseStart(index=i, id=call_id, name=name):
                return self._open(
                    i,
                    "fc",
                    rp.function_call_item(self._new_id("fc", i), call_id, name, "", "in_progress"),
                    name,
                    call_id,
                )
            case ir.ThinkingStart(index=i):
                return self._open(i, "rs", rp.reasoning_item(self._new_id("rs", i), "", None))
            case ir.RedactedThinkingStart(index=i, data=data):
                out = self._open(i, "rs", rp.reasoning_item(self._new_id("rs", i), "", None))
                self._items[i].signature = data
                self._items[i].kind = "redacted"
                return out
            case ir.BlockStop(index=i):
                return self._close(i)
            case ir.MessageStart(usage=usage):
                self._usage = usage
                response = self._response("in_progress")
                return self._event("response.created", {"response": response}) + self._event(
                    "response.in_progress", {"response": response}
                )
            case ir.MessageDelta(stop_reason=reason, usage=usage):
                self._usage = ir.merge_usage(self._usage, usage)
                self._stop_reason = reason
                return b""
            case ir.MessageStop():
                response = self._response("completed")
                return self._event(f"response.{response['status']}", {"response": response})
            case ir.Ping():
                return b""
            case _:
                assert_never(event)

    def encode_error(self, error: GatewayError) -> bytes:
        """The stream's last frames when the upstream fails after its first event."""
        failed = self._response("failed")
        seq = self._seq
        self._seq += 2
        return rp.error_events(error, seq, failed)

    # ------------------------------------------------------------ blocks

    def _new_id(self, kind: str, block: int) -> str:
        return rp.item_id(kind, self._id, block)

    def _open(
        self, block: int, kind: str, added: dict[str, Any], name: str = "", call_id: str = ""
    ) -> bytes:
        item = _Item(kind, added["id"], len(self._done) + len(self._items), name)
        self._items[block] = item
        if call_id:
            self._call_ids[block] = call_id
        return self._event(
            "response.output_item.added", {"output_index": item.output_index, "item": added}
        )

    def _text_start(self, block: int) -> bytes:
        added = rp.message_item(self._new_id("msg", block), "", "in_progress")
        out = self._open(block, "msg", added)
        item = self._items[block]
        return out + self._event(
            "response.content_part.added",
            {
                "item_id": item.id,
                "output_index": item.output_index,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            },
        )

    def _thinking_delta(self, item: _Item, thinking: str) -> bytes:
        if not thinking:  # the summary part opens with the first text, as it closes
            return b""
        item.parts.append(thinking)
        out = b""
        if not item.summary_open:
            item.summary_open = True
            out = self._event(
                "response.reasoning_summary_part.added",
                {
                    "item_id": item.id,
                    "output_index": item.output_index,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                },
            )
        return out + self._delta(item, "response.reasoning_summary_text.delta", thinking)

    def _close(self, block: int) -> bytes:
        item = self._items.pop(block)
        text = "".join(item.parts)
        where = {"item_id": item.id, "output_index": item.output_index}
        out = b""
        match item.kind:
            case "msg":
                done = rp.message_item(item.id, text)
                part = done["content"][0]
                out = self._event(
                    "response.output_text.done",
                    {**where, "content_index": 0, "text": text, "logprobs": []},
                ) + self._event(
                    "response.content_part.done", {**where, "content_index": 0, "part": part}
                )
            case "fc":
                call_id = self._call_ids.pop(block)
                done = rp.function_call_item(item.id, call_id, item.name, text)
                out = self._event(
                    "response.function_call_arguments.done",
                    {**where, "name": item.name, "arguments": text},
                )
            case "rs":
                encrypted = rp.THINKING_PREFIX + item.signature if item.signature else None
                done = rp.reasoning_item(item.id, text, encrypted)
                if item.summary_open:
                    summary = {**where, "summary_index": 0}
                    out = self._event(
                        "response.reasoning_summary_text.done", {**summary, "text": text}
                    ) + self._event(
                        "response.reasoning_summary_part.done",
                        {**summary, "part": done["summary"][0]},
                    )
            case _:  # redacted thinking
                done = rp.reasoning_item(item.id, "", rp.REDACTED_PREFIX + (item.signature or ""))
        self._done[item.output_index] = done
        return out + self._event(
            "response.output_item.done", {"output_index": item.output_index, "item": done}
        )
