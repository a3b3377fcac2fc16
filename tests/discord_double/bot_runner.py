"""Run a real discord.py client against the double inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import discord

ClientT = TypeVar("ClientT", bound=discord.Client)


@asynccontextmanager
async def running_bot(client: ClientT, token: str = "test-token", timeout: float = 15.0) -> AsyncIterator[ClientT]:
    """Start `client` (call inside running_double), wait for on_ready, and close it cleanly on exit.

    Pass guild_ready_timeout=0.1 to the client constructor, else discord.py idles 2 s before ready.
    """
    task = asyncio.create_task(client.start(token), name="discord-double-bot")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not client.is_ready():
            if task.done():
                task.result()  # re-raise the login/connect failure
                raise RuntimeError("client stopped before becoming ready")
            if loop.time() > deadline:
                raise TimeoutError(f"bot not ready after {timeout}s")
            await asyncio.sleep(0.02)
        yield client
    finally:
        await client.close()
        await asyncio.wait_for(task, timeout=10.0)
