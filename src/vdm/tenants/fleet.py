"""The gateways sharing one database, and a change's wait for all of them.

Every process with a control plane (a replica, each worker of ``--workers
N``) keeps a row in ``vdm_instances``: the revision of projects and tokens
it has loaded and a *beat* it bumps every refresh interval (the registry's
heartbeat: it reloads when the revision moved, then beats).  A management
call that takes something away (revocation, expiry, limits, project
deactivation or deletion) writes the database, then :meth:`Fleet.wait_for`
the new revision: it answers only once every live instance has loaded it,
so the next request anywhere is refused.

*Live* is decided without trusting clocks across machines:

* an instance that has loaded the revision is done;
* an instance whose beat does not move for ``lease`` seconds of the
  waiter's own monotonic clock is taken as gone;
* which is safe because an instance *fences itself*: it admits tenant
  tokens only until ``lease / 2`` after its last beat *began* (the
  registry's :meth:`~vdm.tenants.registry.TokenRegistry.admit` compares one
  float), and a beat that begins after the change reads the new revision
  first.  An instance that cannot reach the database for half a lease
  refuses tenant tokens (503) instead of serving from a view it cannot
  confirm.

What it costs: nothing per request (one float comparison); one revision
read and one row update per instance per refresh interval; and a
management call that takes something away waits for the slowest
instance's next beat (milliseconds with the Redis event bus, which wakes
every instance at once; up to the refresh interval without it; up to one
lease once after an instance was killed without leaving: the first instance
to take it as gone deletes its row, so the others do not wait for it).
"""

from __future__ import annotations

import asyncio
import logging
import time

from vdm.store import InstanceStore

log = logging.getLogger("vdm.tenants")

POLL_SECONDS = 0.02  # how often a waiting change looks at the instances' rows
FORGET_AFTER = 3600.0  # a row unseen this long (by the writer's clock) is deleted


class Fleet:
    def __init__(self, store: InstanceStore, instance_id: str, lease: float) -> None:
        self._store = store
        self.instance_id = instance_id
        self.lease = lease
        # Instances taken as gone, with the beat they stopped at: a later change
        # does not wait for them again unless they beat once more.
        self._gone: dict[str, int] = {}
        self._beats = 0

    async def beat(self, loaded: int) -> None:
        await self._store.beat(self.instance_id, loaded, time.time())
        self._beats += 1
        if self._beats % 600 == 1:  # now and then: rows of instances killed long ago
            await self._store.forget_instances(time.time() - FORGET_AFTER)

    async def leave(self) -> None:
        """This instance stops: changes no longer wait for it."""
        await self._store.leave(self.instance_id)

    async def wait_for(self, revision: int) -> list[str]:
        """Return once every other live instance has loaded ``revision``; the
        instances taken as gone meanwhile (for the log)."""
        first_seen: dict[str, tuple[int, float]] = {}  # id -> (beat, monotonic when seen)
        gone_now: list[str] = []
        # Ends by construction (an instance either loads it or stops beating for
        # a lease); the bound only guards against a bug turning into a hang.
        deadline = time.monotonic() + 3 * self.lease
        while True:
            now = time.monotonic()
            waiting = []
            for row in await self._store.instances():
                if row.id == self.instance_id or row.revision >= revision:
                    continue
                if self._gone.get(row.id) == row.beat:
                    continue
                seen = first_seen.get(row.id)
                if seen is None or seen[0] != row.beat:
                    first_seen[row.id] = (row.beat, now)
                    waiting.append(row.id)
                elif now - seen[1] < self.lease:
                    waiting.append(row.id)
                else:  # silent for a lease: it has fenced itself by now
                    self._gone[row.id] = row.beat
                    gone_now.append(row.id)
                    # Its row goes too, so no other instance waits a lease for it.
                    await self._store.forget_instance(row.id, row.beat)
                    log.warning(
                        "instance %s has not beaten for %.0f s: taken as gone", row.id, self.lease
                    )
            if not waiting:
                return gone_now
            if now > deadline:
                log.error(
                    "instances %s did not load revision %d in time", ", ".join(waiting), revision
                )
                return gone_now
            await asyncio.sleep(POLL_SECONDS)
