"""The LLMProxy gRPC service (vibectl's wire protocol) and its JWT interceptor.

``llm_proxy.proto`` is the contract; ``llm_proxy_pb2*.py`` are generated from
it by grpcio-tools and committed (``make proto`` regenerates them; a test
checks they match the .proto), so a bare install needs only grpcio and
protobuf at run time: the ``grpc`` extra (``vdm[grpc]``).
"""

from vdm.extras import require

require("grpc", "the gRPC LLMProxy service and client (GRPC_PORT, vdm grpc, vdm proxy)")
