"""The event bus: what happened, told to whoever needs to know, off the request path.

Publishers (the request path, the key pools, the control plane, the audit log)
call :meth:`Bus.publish`, which never waits: it appends to a bounded queue and
returns.  When a queue is full the event is dropped *and counted*
(``vdm_events_dropped_total``) with a warning in the log, so an overload is
visible and the request is never slowed.

Consumers subscribe by name and kinds and get batches of events on their own
task.  A subscription is either

* ``shared`` — handled once by the whole deployment (the audit writer, the
  usage counters, the running totals): with Redis every instance reads the
  same consumer group, so each event is handled by exactly one of them; or
* ``instance`` — handled by every instance (token-cache invalidation, key
  cooldowns, the dashboard's recent audit events): a group per instance.

Two backends with the same behaviour:

* :class:`~vdm.events.memory.MemoryBus` — one process (the default);
* :class:`~vdm.events.redis.RedisBus` — with ``REDIS_URL``: a Redis Stream
  (``vdm:events``) and consumer groups, so events survive a consumer's crash
  (unacknowledged entries are claimed by another instance) and a restart.

Kinds (the ``data`` each carries is documented where it is published):
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Protocol

from vdm.events.bus import Bus, Event, Handler

REQUEST_FINISHED = "request.finished"  # vdm.server.app: one per answered /v1 request
TOKEN_USAGE = "token.usage"  # vdm.tenants.registry: a tenant token's requests and cache hits
KEY_COOLDOWN = "key.cooldown"  # vdm.providers.cooldowns: a key benched
CONFIG_CHANGED = "config.changed"  # vdm.tenants.service: a project or token changed
AUDIT = "audit"  # vdm.tenants.audit: an audit event
KINDS = (REQUEST_FINISHED, TOKEN_USAGE, KEY_COOLDOWN, CONFIG_CHANGED, AUDIT)

__all__ = ["KINDS", "Bus", "Event", "Handler", "build", "instance_id"]


def instance_id() -> str:
    """This process's name on the bus: host, pid and a random suffix (a restarted
    process with a recycled pid is still a new instance)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class BusSettings(Protocol):
    """What :func:`build` reads of the server settings (``vdm.config.ServerSettings``)."""

    @property
    def redis_url(self) -> str | None: ...
    @property
    def redis_namespace(self) -> str: ...
    @property
    def events_queue_size(self) -> int: ...
    @property
    def events_stream_max_length(self) -> int: ...


def build(server: BusSettings) -> Bus:
    """The bus the settings ask for: Redis Streams with ``REDIS_URL``, else memory."""
    if server.redis_url:
        from vdm.events.redis import RedisBus

        return RedisBus(
            server.redis_url,
            namespace=server.redis_namespace,
            queue_size=server.events_queue_size,
            max_length=server.events_stream_max_length,
            source=instance_id(),
        )
    from vdm.events.memory import MemoryBus

    return MemoryBus(queue_size=server.events_queue_size, source=instance_id())
