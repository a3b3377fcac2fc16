"""What stands between an interaction and its acknowledgement: the cooldown check stays
cheap with many users, and the inference thread yields a busy CPU to the event loop."""

import os
import sys
import threading

import pytest
from discord import app_commands

from bot.context import ENGINE_NICE, Cooldowns
from charlm.engine import Engine


def test_cooldowns_limit_each_user_and_forget_full_buckets(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("bot.context.time.time", lambda: clock[0])
    cooldowns = Cooldowns(uses=2, seconds=30)
    for user in range(500):
        cooldowns.check(user)
    cooldowns.check(7)
    with pytest.raises(app_commands.CommandOnCooldown):
        cooldowns.check(7)
    assert len(cooldowns.buckets) == 500  # swept at most once per window, not on every use
    clock[0] += 31
    cooldowns.check(1)  # a window later: the full buckets are gone, the user's new one stays
    assert list(cooldowns.buckets) == [1]
    cooldowns.check(1)
    with pytest.raises(app_commands.CommandOnCooldown):
        cooldowns.check(1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_inference_thread_runs_at_a_lower_priority_than_the_process():
    with Engine(nice=ENGINE_NICE) as engine:
        tid = engine._thread.native_id
        for _ in range(100):  # the thread lowers its own priority when it starts
            if os.getpriority(os.PRIO_PROCESS, tid) > os.getpriority(os.PRIO_PROCESS, 0):
                break
            threading.Event().wait(0.01)
        assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + ENGINE_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == os.getpriority(os.PRIO_PROCESS, 0)
