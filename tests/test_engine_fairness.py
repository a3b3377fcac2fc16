"""Owners take turns in the engine (issue 18): a flood from one owner neither delays another
owner's lone request by more than a few batch steps nor takes its place in the queue.

Every assertion is on order and on the engine's batch-boundary counts, never on seconds.
The engine thread is held in a streaming callback while the flood is queued, so what is
waiting when it next looks is the same on every run.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from charlm.engine import Engine, EngineBusy, OwnerBusy
from charlm.sampling import Sampling
from charlm.scheduler import Scheduler
from tests.test_engine import Gate, folders  # noqa: F401  (the module's model folders)

FLOOD = 200
SHORT = Sampling(temperature=0, length=32)


def held(engine: Engine, owner: str) -> tuple[Future, Gate]:
    """A request of `owner` that holds the engine thread in its first streaming callback."""
    gate = Gate()
    future = engine.submit("a", "", Sampling(temperature=0, length=64), owner=owner, on_text=gate, every=1)
    assert gate.entered.wait(10)
    return future, gate


def flood_and_one(schedule: str, folder) -> tuple[list[str], dict]:
    """Owner A holds the thread, queues 199 more; owner B then asks once. Returns the
    completion order (owners) and B's result."""
    done: list[str] = []
    lock = threading.Lock()
    with Engine({"a": folder}, backend="numpy", max_queue=1000, max_batch=4, chunk=16, schedule=schedule) as engine:
        first, gate = held(engine, "A")
        futures = [first]
        for i in range(FLOOD - 1):
            futures.append(engine.submit("a", f"flood {i}", SHORT, owner="A"))
        lone = engine.submit("a", "lone", SHORT, owner="B")
        for owner, future in [("A", f) for f in futures] + [("B", lone)]:
            def finished(_: Future, owner: str = owner) -> None:
                with lock:
                    done.append(owner)
            future.add_done_callback(finished)
        gate.release.set()
        result = lone.result(60)
        for future in futures:
            future.result(120)
    return done, result


def test_a_lone_request_joins_at_the_next_boundary_ahead_of_a_flood(folders):  # noqa: F811
    order, lone = flood_and_one("fair", folders["a"])
    assert len(order) == FLOOD + 1
    # B ranks 0 (nothing running) against A's 1..199: it takes the first free row.
    assert lone.joined_step - lone.submitted_step <= 1
    steps_needed = -(-SHORT.length // 16)  # 32 characters in chunks of 16: 2 steps
    assert lone.finished_step - lone.submitted_step <= steps_needed + 2
    assert order.index("B") <= 4  # with the held row and the three that joined beside it


def test_first_come_first_served_would_keep_it_behind_the_flood(folders):  # noqa: F811
    """The same run on the old schedule: what the fair one fixes."""
    order, lone = flood_and_one("fifo", folders["a"])
    assert order.index("B") >= FLOOD - 4
    assert lone.joined_step - lone.submitted_step > 40


def test_the_per_owner_cap_refuses_only_the_flooding_owner(folders):  # noqa: F811
    with Engine({"a": folders["a"]}, backend="numpy", max_queue=100, max_batch=4, per_owner=16) as engine:
        first, gate = held(engine, "A")
        accepted, refused = [first], 0
        for i in range(25):
            try:
                accepted.append(engine.submit("a", f"flood {i}", SHORT, owner="A"))
            except OwnerBusy:
                refused += 1
        assert (len(accepted), refused) == (16, 10)  # the running row counts
        others = [engine.submit("a", "other", SHORT, owner=owner) for owner in ("B", "C")]
        unowned = engine.submit("a", "probe", SHORT)  # no owner: never capped
        gate.release.set()
        for future in accepted + others + [unowned]:
            assert future.result(60).text is not None
        # Finished requests give their owner's share back.
        assert engine.submit("a", "again", SHORT, owner="A").result(60).text is not None


def test_the_whole_queue_still_bounds_the_engine(folders):  # noqa: F811
    with Engine({"a": folders["a"]}, backend="numpy", max_queue=3, max_batch=1, per_owner=16) as engine:
        first, gate = held(engine, "A")
        waiting = [engine.submit("a", "x", SHORT, owner=owner) for owner in ("B", "C", "D")]
        with pytest.raises(EngineBusy) as busy:
            engine.submit("a", "x", SHORT, owner="E")
        assert not isinstance(busy.value, OwnerBusy)  # the bot's busy, not one server's
        gate.release.set()
        for future in [first, *waiting]:
            future.result(60)


def test_waiting_requests_are_told_their_place_in_line(folders):  # noqa: F811
    places: dict[str, list[int]] = {}
    with Engine({"a": folders["a"]}, backend="numpy", max_queue=10, max_batch=1) as engine:
        first, gate = held(engine, "A")
        futures = []
        for name, owner in [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B")]:
            futures.append(engine.submit("a", name, SHORT, owner=owner,
                                         on_place=lambda n, name=name: places.setdefault(name, []).append(n)))
        gate.release.set()
        for future in [first, *futures]:
            future.result(60)
    # B has nothing running: first in line; A's three follow in their order, and every
    # place only ever goes down.
    assert {name: seen[0] for name, seen in places.items()} == {"b1": 1, "a1": 2, "a2": 3, "a3": 4}
    assert all(seen == sorted(seen, reverse=True) for seen in places.values())


def test_the_scheduler_forgets_owners_with_nothing_left():
    scheduler = Scheduler("fair", per_owner=2)
    for owner in ("A", "A", "B"):
        scheduler.admit(owner)
    with pytest.raises(OwnerBusy):
        scheduler.admit("A")
    for owner in ("A", "A", "B"):
        scheduler.release(owner)
    assert not scheduler.held  # bounded by requests in flight, not by owners ever seen
