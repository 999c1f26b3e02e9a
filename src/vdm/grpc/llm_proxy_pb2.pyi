from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecuteRequest(_message.Message):
    __slots__ = ("system_fragments", "user_fragments", "model_name", "response_model_schema", "request_id")
    SYSTEM_FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    USER_FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MODEL_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    system_fragments: _containers.RepeatedScalarFieldContainer[str]
    user_fragments: _containers.RepeatedScalarFieldContainer[str]
    model_name: str
    response_model_schema: str
    request_id: str
    def __init__(self, system_fragments: _Optional[_Iterable[str]] = ..., user_fragments: _Optional[_Iterable[str]] = ..., model_name: _Optional[str] = ..., response_model_schema: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("request_id", "success", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    success: ExecuteSuccess
    error: ExecuteError
    def __init__(self, request_id: _Optional[str] = ..., success: _Optional[_Union[ExecuteSuccess, _Mapping]] = ..., error: _Optional[_Union[ExecuteError, _Mapping]] = ...) -> None: ...

class ExecuteSuccess(_message.Message):
    __slots__ = ("response_text", "metrics", "actual_model_used")
    RESPONSE_TEXT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_MODEL_USED_FIELD_NUMBER: _ClassVar[int]
    response_text: str
    metrics: ExecutionMetrics
    actual_model_used: str
    def __init__(self, response_text: _Optional[str] = ..., metrics: _Optional[_Union[ExecutionMetrics, _Mapping]] = ..., actual_model_used: _Optional[str] = ...) -> None: ...

class ExecuteError(_message.Message):
    __slots__ = ("error_code", "error_message", "error_details")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAILS_FIELD_NUMBER: _ClassVar[int]
    error_code: str
    error_message: str
    error_details: str
    def __init__(self, error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., error_details: _Optional[str] = ...) -> None: ...

class StreamChunk(_message.Message):
    __slots__ = ("request_id", "text_chunk", "final_metrics", "error", "complete")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    FINAL_METRICS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text_chunk: str
    final_metrics: ExecutionMetrics
    error: ExecuteError
    complete: StreamComplete
    def __init__(self, request_id: _Optional[str] = ..., text_chunk: _Optional[str] = ..., final_metrics: _Optional[_Union[ExecutionMetrics, _Mapping]] = ..., error: _Optional[_Union[ExecuteError, _Mapping]] = ..., complete: _Optional[_Union[StreamComplete, _Mapping]] = ...) -> None: ...

class StreamComplete(_message.Message):
    __slots__ = ("actual_model_used",)
    ACTUAL_MODEL_USED_FIELD_NUMBER: _ClassVar[int]
    actual_model_used: str
    def __init__(self, actual_model_used: _Optional[str] = ...) -> None: ...

class ExecutionMetrics(_message.Message):
    __slots__ = ("duration_ms", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "retry_count", "timestamp")
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    RETRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    duration_ms: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float
    retry_count: int
    timestamp: int
    def __init__(self, duration_ms: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., retry_count: _Optional[int] = ..., timestamp: _Optional[int] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("available_models", "default_model", "limits", "server_version", "model_aliases", "server_name")
    class ModelAliasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AVAILABLE_MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ALIASES_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    available_models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    limits: ServerLimits
    server_version: str
    model_aliases: _containers.ScalarMap[str, str]
    server_name: str
    def __init__(self, available_models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ..., server_version: _Optional[str] = ..., model_aliases: _Optional[_Mapping[str, str]] = ..., server_name: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "display_name", "provider", "supports_streaming", "max_context_length", "aliases")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STREAMING_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    display_name: str
    provider: str
    supports_streaming: bool
    max_context_length: int
    aliases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_id: _Optional[str] = ..., display_name: _Optional[str] = ..., provider: _Optional[str] = ..., supports_streaming: _Optional[bool] = ..., max_context_length: _Optional[int] = ..., aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_requests_per_minute", "max_concurrent_requests", "max_input_length", "request_timeout_seconds")
    MAX_REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_requests_per_minute: int
    max_concurrent_requests: int
    max_input_length: int
    request_timeout_seconds: int
    def __init__(self, max_requests_per_minute: _Optional[int] = ..., max_concurrent_requests: _Optional[int] = ..., max_input_length: _Optional[int] = ..., request_timeout_seconds: _Optional[int] = ...) -> None: ...
