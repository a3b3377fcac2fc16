"""Who goes next: the order in which the engine takes waiting requests into its batches.

Callers tag each request with an opaque *owner* (the bot passes a server, or a user in a
DM; charlm never looks inside it). Two schedules:

- "fair" (the default): at every batch boundary the waiting requests are ranked by how
  many rows their owner already has, counting its running rows and its own requests
  ahead of it in line, then by arrival. So a request from an owner with nothing running
  ranks 0 and joins at the next boundary ahead of the 17th request of an owner that has
  16 rows running; owners with equal shares alternate. Each owner may hold at most
  `per_owner` requests waiting or running; more raise OwnerBusy for that owner only.
- "fifo": first come, first served, no per-owner cap (the engine before owners; kept for
  the benchmark that compares the two).

Ranking costs O(W log W) per boundary for W waiting requests, which the engine's
max_queue bounds; that is nothing beside one batched LSTM step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Literal, Protocol

from charlm.errors import CharLMError

Schedule = Literal["fair", "fifo"]
Owner = Hashable | None
"""Whatever the caller groups requests by; None: no owner (never capped, one group)."""


class EngineBusy(CharLMError):
    """The queue is full: try again later (raised by submit at once, never queued)."""


class OwnerBusy(EngineBusy):
    """This owner already has `per_owner` requests waiting or running; other owners are
    still admitted. A kind of EngineBusy, so code that only knows "busy" still works."""


class Waiting(Protocol):
    owner: Owner
    seq: int


class Scheduler:
    """Admission per owner and the order of the waiting line. Not thread-safe on its own:
    the engine calls it with its lock held."""

    def __init__(self, schedule: Schedule = "fair", per_owner: int | None = None) -> None:
        if schedule not in ("fair", "fifo"):
            raise CharLMError(f"schedule must be 'fair' or 'fifo', got {schedule!r}")
        if per_owner is not None and per_owner < 1:
            raise CharLMError("per_owner must be at least 1 (or None: no cap)")
        self.schedule = schedule
        self.per_owner = per_owner if schedule == "fair" else None
        self.held: Counter[Owner] = Counter()
        """Requests waiting or running per owner; an owner leaves it at 0 (bounded by the
        requests in the engine, not by every owner ever seen)."""

    def admit(self, owner: Owner) -> None:
        """Count one more request of `owner`, or raise OwnerBusy if it holds its share."""
        if owner is not None and self.per_owner is not None and self.held[owner] >= self.per_owner:
            raise OwnerBusy(f"this owner already has {self.per_owner} requests waiting or running")
        self.held[owner] += 1

    def release(self, owner: Owner) -> None:
        """One request of `owner` finished, failed or was cancelled."""
        self.held[owner] -= 1
        if self.held[owner] <= 0:
            del self.held[owner]

    def order(self, waiting: Iterable[Waiting], running: Counter[Owner]) -> list[Waiting]:
        """The waiting requests (given in arrival order) in the order they should join."""
        if self.schedule == "fifo":
            return list(waiting)
        waiting = list(waiting)
        held = dict(running)  # rows each owner has, growing by its requests ahead in line
        ranks = []
        for i, request in enumerate(waiting):
            rank = held.get(request.owner, 0)
            held[request.owner] = rank + 1
            ranks.append((rank, request.seq, i))
        ranks.sort()  # plain tuples: no key function per comparison
        return [waiting[i] for _, _, i in ranks]
