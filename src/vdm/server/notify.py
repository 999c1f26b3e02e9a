"""systemd's readiness protocol (``sd_notify``), the few lines it takes.

Under ``Type=notify`` systemd names a datagram socket in ``NOTIFY_SOCKET``;
the gateway sends ``READY=1`` once its start-up is complete (``/ready``
answers 200 from then on) and ``STOPPING=1`` when a signal starts its drain.
Without ``NOTIFY_SOCKET`` (not under systemd) nothing is sent.  With
``--workers N`` each worker sends its own, so the unit needs
``NotifyAccess=all``; the first ``READY=1`` is the first worker serving.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("vdm.server")

ENV = "NOTIFY_SOCKET"


def notify(state: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (``"READY=1"``, ``"STOPPING=1"``, ...); False if not under systemd."""
    address = env.get(ENV)
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state.split("=", 1)[0], exc)
        return False
    return True
