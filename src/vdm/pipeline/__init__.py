"""The one pipeline: decode -> route -> provider call -> encode, for every door.

Transport-free: a transport (the HTTP app, the gRPC service) hands in what
it received and gets back a :class:`Reply` (status, headers, and either
bytes or a byte stream) or, for an IR door, a :class:`Completion`.

* :mod:`vdm.pipeline.gateway` — :class:`Gateway`: one ``serve(door, …)`` for
  every wire door (the declarations are :mod:`vdm.doors`), ``complete`` for
  IR doors; the response cache, attempts, retries and fallbacks;
* :mod:`vdm.pipeline.relay` — a native attempt: the body passed through, the
  answer relayed as bytes while a tap reads usage;
* :mod:`vdm.pipeline.streams` — a converted attempt's events: rendered as
  the door's SSE frames or folded into one answer; streams opened early with
  pings while the first token is slow;
* :mod:`vdm.pipeline.accounting` — metrics, running totals and the tenant's
  usage of every request, whatever its door or transport;
* :mod:`vdm.pipeline.tenancy` — what a tenant's token may route to, and what
  a provider gets of the client (:class:`~vdm.providers.base.ClientContext`).

The first event (native: the first body chunk) is awaited before the reply
is returned, so an upstream that refuses (4xx/5xx, timeout, refused
connection) becomes a proper HTTP error status; after that, a failure ends
the stream with the door's error event.

The middleware chain (``vdm.middleware``) sits around the provider call:
``on_request`` before it and ``on_event`` on its events (conversion only),
``on_start``/``on_response`` on every path.  With no middleware configured
the only cost is one falsy check per request.
"""

from vdm.outcome import Outcome, Reply
from vdm.pipeline.accounting import Account
from vdm.pipeline.gateway import Gateway
from vdm.pipeline.results import Completion, new_request_id

__all__ = ["Account", "Completion", "Gateway", "Outcome", "Reply", "new_request_id"]
