"""The gRPC LLMProxy door (``vdm.grpc``): an IR door.

Its transport builds the IR request from the protobuf message and renders
the IR events itself (:mod:`vdm.grpc.translate`); the pipeline serves it
through :meth:`vdm.pipeline.Gateway.complete`.  Its key is the
``authorization`` metadata's bearer token.
"""

from __future__ import annotations

from vdm.doors.door import Door

DOOR = Door(name="grpc")
