"""The committed stubs are the .proto, and the .proto is the wire contract of issue 5."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from vdm.grpc import llm_proxy_pb2 as pb

PROTO = Path(importlib.resources.files("vdm.grpc").joinpath("llm_proxy.proto"))  # type: ignore[arg-type]


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "set.pb"
    src = PROTO.parents[2]
    assert (
        protoc.main(
            ["protoc", f"-I{src}", f"--descriptor_set_out={out}", str(PROTO.relative_to(src))]
        )
        == 0
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    _drop_json_names(fresh.message_type)  # (the generated module leaves them out)
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert fresh == committed, "run `make proto` after editing llm_proxy.proto"


def _drop_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


CONTRACT = {
    "ExecuteRequest": {
        "system_fragments": 1,
        "user_fragments": 2,
        "model_name": 3,
        "response_model_schema": 4,
        "request_id": 5,
    },
    "ExecuteResponse": {"request_id": 1, "success": 2, "error": 3},
    "ExecuteSuccess": {"response_text": 1, "metrics": 2, "actual_model_used": 3},
    "ExecuteError": {"error_code": 1, "error_message": 2, "error_details": 3},
    "StreamChunk": {
        "request_id": 1,
        "text_chunk": 2,
        "final_metrics": 3,
        "error": 4,
        "complete": 5,
    },
    "StreamComplete": {"actual_model_used": 1},
    "ExecutionMetrics": {
        "duration_ms": 1,
        "input_tokens": 2,
        "output_tokens": 3,
        "total_tokens": 4,
        "cost_usd": 5,
        "retry_count": 6,
        "timestamp": 7,
    },
    "GetServerInfoRequest": {},
    "GetServerInfoResponse": {
        "available_models": 1,
        "default_model": 2,
        "limits": 3,
        "server_version": 4,
        "model_aliases": 5,
        "server_name": 6,
    },
    "ModelInfo": {
        "model_id": 1,
        "display_name": 2,
        "provider": 3,
        "supports_streaming": 4,
        "max_context_length": 5,
        "aliases": 6,
    },
    "ServerLimits": {
        "max_requests_per_minute": 1,
        "max_concurrent_requests": 2,
        "max_input_length": 3,
        "request_timeout_seconds": 4,
    },
}


def test_wire_contract() -> None:
    assert pb.DESCRIPTOR.package == "vibectl.llm_proxy"
    service = pb.DESCRIPTOR.services_by_name["VibectlLLMProxy"]
    methods = {
        m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods
    }
    assert methods == {
        "Execute": ("ExecuteRequest", "ExecuteResponse", False),
        "StreamExecute": ("ExecuteRequest", "StreamChunk", True),
        "GetServerInfo": ("GetServerInfoRequest", "GetServerInfoResponse", False),
    }
    for name, fields in CONTRACT.items():
        message = pb.DESCRIPTOR.message_types_by_name[name]
        assert {f.name: f.number for f in message.fields} == fields, name
    optional = {
        ("ExecuteRequest", "model_name"),
        ("ExecuteRequest", "response_model_schema"),
        ("ExecuteError", "error_details"),
        ("ModelInfo", "max_context_length"),
    }
    for message_name, field_name in optional:
        field = pb.DESCRIPTOR.message_types_by_name[message_name].fields_by_name[field_name]
        assert field.has_presence, (message_name, field_name)
