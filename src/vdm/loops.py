"""A gateway that calls itself: found before a request is sent, and when one comes back.

``ANTHROPIC_BASE_URL`` and ``OPENAI_BASE_URL`` name a provider's address to
vdm, and the gateway's address to the clients that use vdm: a shell set up
for Claude Code makes vdm's ``anthropic`` provider point at vdm.  Two checks:

* **by address**, at start-up: a provider whose base URL is the host and port
  the gateway listens on (``localhost``, ``127.0.0.1``, ``::1``, ``0.0.0.0``
  and, for a wildcard bind, the machine's name count as the same host) is
  reported by the start-up summary and ``config validate``, and every call
  to it is refused before it is sent (:func:`vdm.providers.http.make_session`);
* **by hop header**: every upstream request carries ``x-vdm-hop:
  GATEWAY_ID;PROVIDER``; a request that arrives with this gateway's own id
  (through a load balancer, a DNS name, a port forward) is answered 508.

``GATEWAY_ID`` is a hash of the provider table (names and base URLs), so the
workers and the replicas of one deployment share it, while a differently
configured vdm in front of this one (a legitimate chain) has another.
Either way the client gets 508 (:class:`~vdm.errors.LoopDetected`) with a
message naming the variable (or TOML key) to change.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlparse

HOP_HEADER = "x-vdm-hop"
LOOP_STATUS = 508
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def gateway_id(providers: Iterable[tuple[str, str]]) -> str:
    """The deployment's id in hop headers: (name, base URL) pairs hashed."""
    text = "\n".join(f"{name} {url}" for name, url in sorted(providers))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def hop_value(gateway: str, provider: str) -> str:
    return f"{gateway};{provider}"


def looped_provider(value: str, gateway: str) -> str | None:
    """The provider whose request came back, if ``value`` (a received hop
    header) carries this gateway's id; None for another gateway's hop."""
    own, sep, provider = value.partition(";")
    return provider if sep and own == gateway else None


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain") or host in _WILDCARDS:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith(".localhost")
    return address.is_loopback or address.is_unspecified


def is_own_address(base_url: str, host: str, port: int) -> bool:
    """Whether ``base_url`` leads to a server listening on ``host:port``."""
    parsed = urlparse(base_url)
    target = (parsed.hostname or "").lower().strip("[]")
    try:
        target_port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        return False
    if target_port != port:
        return False
    bound = host.lower().strip("[]")
    if target == bound:
        return True
    if _loopback(target) and (_loopback(bound) or bound in _WILDCARDS):
        return True
    if bound in _WILDCARDS:  # every interface: the machine's own names too
        names = {socket.gethostname().lower(), socket.getfqdn().lower()}
        return target in names
    return False


def setting_name(provider: str, source: str) -> str:
    """Where a provider's base URL was set, as a user would change it:
    ``ANTHROPIC_BASE_URL``, or ``base-url under [providers.x] in FILE``."""
    if source.startswith("env "):
        return source[4:]
    path, sep, var = source.partition(": ")
    if sep and var.isupper():  # "PATH/.env: VAR"
        return f"{var} (in {path})"
    return f"base-url under [providers.{provider}] in {source or 'the configuration'}"


def loop_message(provider: str, base_url: str, source: str, upstream: str | None) -> str:
    """The one explanation of a loop, for the 508 and the start-up warning."""
    where = setting_name(provider, source)
    fix = f"point it at the provider's API ({upstream})" if upstream else "point it at the provider"
    return (
        f"provider '{provider}' sends its requests back to this gateway: {where} is "
        f"{base_url}, which leads back to vdm (clients use that variable to reach vdm); "
        f"{fix}, or unset it for vdm"
    )
