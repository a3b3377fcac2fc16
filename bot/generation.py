"""The one generate-and-stream path behind every way of asking: /alice, /seuss, /generate,
@mentions, replies, the "Continue as…" message commands and the Reroll/Continue buttons.

Each caller describes what was asked (`Ask`) and where the answer goes (a `Surface`: an
interaction's response, or a reply in a channel); `Generator.run` does the rest the same
way for all of them: the server's settings, limits, the engine, a reply edited as it grows
(each edit through the output filter), the footer with the seed, the buttons, and one
history row whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import discord
from discord import app_commands

from charlm import WINDOW
from charlm.engine import EngineBusy, EngineTimeout, OwnerBusy
from charlm.errors import CharLMError
from charlm.sampling import Sampling
from charlm.vocab import Vocabulary

from bot.context import BotContext, Cooldowns, Serving, outcome_of
from bot.history import Request
from bot.outfilter import OutputFilter
from bot.replies import final_reply, progress_reply, waiting_reply, window_notes
from bot.respond import tell
from bot.scope import Scope
from bot.server_settings import ServerSettings, SettingsStore

log = logging.getLogger(__name__)
SEEDS = 100_000
"""Seeds the bot picks are below this (five digits in the footer); users may give any up to MAX_SEED."""
MAX_SEED = 2**31 - 1


def user_message(error: CharLMError, in_dm: bool = False) -> str:
    if isinstance(error, OwnerBusy):
        if in_dm:
            return "You have too many requests waiting for the models; please try again in a minute."
        return "This server has too many requests waiting for the models; please try again in a minute."
    if isinstance(error, EngineBusy):
        return "The models are busy right now; please try again in a minute."
    if isinstance(error, EngineTimeout):
        return f"That took too long ({error}); please try again, perhaps with a shorter length."
    return str(error)


def elapsed_ms(since: float) -> int:
    return round((time.perf_counter() - since) * 1000)


@dataclass
class Ask:
    """One request, however it was made. None for length/temperature/seed: the server's
    default (or the config's); `version`: only this version may answer (a reroll)."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    parent_id: int | None  # the channel a thread is in (a server's allowed channels cover their threads)
    command: str  # how it was asked: alice, generate, mention, reply, continue-as, reroll, continue
    model: str
    prompt: str
    length: int | None = None
    temperature: float | None = None
    seed: int | None = None
    version: str | None = None

    @property
    def scope(self) -> Scope:
        """Where it was asked: the server, or the user's DMs."""
        return Scope.of(self.guild_id, self.user_id)

    @classmethod
    def of(cls, interaction: discord.Interaction, command: str, model: str, prompt: str, **options: Any) -> Ask:
        """An ask made through an interaction (a slash or message command, a button, a picker)."""
        return cls(user_id=interaction.user.id, guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                   parent_id=getattr(interaction.channel, "parent_id", None), command=command, model=model,
                   prompt=prompt, **options)


class Surface(Protocol):
    """Where a reply is shown."""

    async def start(self) -> None:
        """Acknowledge at once (an interaction's defer; nothing for a channel reply)."""

    async def show(self, content: str, view: discord.ui.View | None = None) -> None:
        """Show this content (the first call creates the reply, later ones edit it)."""

    async def fail(self, text: str) -> None:
        """Tell the asker, in one sentence, why there is no reply."""


class LiveReply:
    """Shows the text as it arrives, at most once per `interval` seconds, which keeps a
    message well inside Discord's edit rate limits; before the first text, the request's
    place in line while it waits for the models (servers take turns)."""

    def __init__(self, show: Callable[[str], Awaitable[None]], render: Callable[[str], str], interval: float,
                 waiting: Callable[[int], str]) -> None:
        self.show = show
        self.render = render
        self.interval = interval
        self.waiting = waiting
        self.text = ""
        self.place = 0  # place in line while the request waits for the models; 0: not waiting
        self.first_text: float | None = None  # perf_counter of the first text (for metrics)
        self.shown = ""
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="live-reply")

    def update(self, text: str) -> None:
        if self.first_text is None:
            self.first_text = time.perf_counter()
        self.text = text

    def wait(self, place: int) -> None:
        self.place = place

    def content(self) -> str:
        """What the reply should show now; empty: nothing yet (the "thinking…" stays)."""
        if self.text:
            # rendering runs the output filter (milliseconds per edit): the caller runs this off the loop
            return self.render(self.text)
        if self.place:
            return self.waiting(self.place)
        return ""

    async def _run(self) -> None:
        while not self._done.is_set():
            try:
                await asyncio.wait_for(self._done.wait(), self.interval)
                return
            except asyncio.TimeoutError:
                pass
            content = await asyncio.to_thread(self.content)
            if content and content != self.shown:
                self.shown = content
                try:
                    await self.show(content)
                except discord.HTTPException as exc:
                    log.warning("progress edit failed: %s", exc)

    async def stop(self) -> None:
        """Stop editing; returns once no progress edit is in flight, so the final one lands last."""
        self._done.set()
        await self._task


ViewFor = Callable[[Request], discord.ui.View]


class Generator:
    """Runs asks: shared by every cog that answers with generated text, so they share one
    cooldown, one queue, the filter and the history."""

    def __init__(self, context: BotContext, settings: SettingsStore, output_filter: OutputFilter,
                 shard_count: Callable[[], int] = lambda: 1) -> None:
        self.context = context
        self.settings = settings
        self.filter = output_filter
        self.shard_count = shard_count
        """The bot's shard count now (it is known once connected): the shard label of metrics."""
        limits = context.config.limits
        self.cooldowns = Cooldowns(limits.cooldown_uses, limits.cooldown_seconds)
        self.in_flight: set[asyncio.Task] = set()
        self.view_for: ViewFor | None = None
        """Set by the buttons: the Reroll/Continue view of a finished reply (by its history row)."""

    async def admit(self, interaction: discord.Interaction) -> bool:
        """Count one use against the asker's cooldown, for presses and pickers (slash commands
        count theirs in the cog's interaction_check); False, with the asker told, when over it."""
        try:
            self.cooldowns.check(interaction.user.id)
        except app_commands.CommandOnCooldown as exc:
            await tell(interaction, f"Slow down a little: try again in {exc.retry_after:.0f} s.")
            return False
        return True

    def masker(self, settings: ServerSettings) -> Callable[[str], str]:
        """The filter as a server configured it (identity when the server turned it off)."""
        if not settings.filter:
            return lambda text: text
        return self.filter.masker(settings.words)

    async def run(self, surface: Surface, ask: Ask) -> Request:
        """Answer one ask and record it, whatever happens; returns its history row."""
        started = time.perf_counter()
        task = asyncio.current_task()
        self.in_flight.add(task)
        record = Request(user_id=ask.user_id, guild_id=ask.guild_id, channel_id=ask.channel_id,
                         command=ask.command, prompt=ask.prompt, model=ask.model)
        written = False
        first_text: list[float] = []

        async def write() -> None:
            """The history row and the metrics, once: a success writes them before its final edit
            (the buttons name its row)."""
            nonlocal written
            if not written:
                written = True
                record.latency_ms = elapsed_ms(started)
                self._count(record, first_text[0] - started if first_text else None)
                await self.context.record(record)

        try:
            await self._answer(surface, ask, record, started, write, first_text)
        except CharLMError as exc:
            record.outcome, record.error = outcome_of(exc), str(exc)
            await self._fail(surface, user_message(exc, in_dm=ask.guild_id is None))
        except asyncio.CancelledError:
            record.outcome, record.error = "error", "the bot shut down before the reply was finished"
            await self._fail(surface, "The bot is restarting and could not finish this reply; "
                                      "please try again in a minute.")
            raise
        except Exception as exc:
            record.outcome, record.error = "error", f"{exc.__class__.__name__}: {exc}"
            raise  # the caller's error handler logs it with context and apologises
        finally:
            try:
                await write()
            finally:  # after the row: shutdown (drain) waits for replies whose row is still being written
                self.in_flight.discard(task)
        return record

    def _count(self, record: Request, first_text_s: float | None) -> None:
        """The request in the process's metrics (labels: shard, command, model; never ids)."""
        shard = 0 if record.guild_id is None else (record.guild_id >> 22) % max(1, self.shard_count())
        self.context.metrics.request(shard, record.command, record.model, record.outcome,
                                     None if record.ack_ms is None else record.ack_ms / 1000, first_text_s,
                                     record.latency_ms / 1000)

    @staticmethod
    async def _fail(surface: Surface, text: str) -> None:
        try:
            await surface.fail(text)
        except discord.HTTPException as exc:
            log.warning("could not tell the asker: %s", exc)

    async def _answer(self, surface: Surface, ask: Ask, record: Request, started: float,
                      write: Callable[[], Awaitable[None]], first_text: list[float]) -> None:
        # Acknowledge first: Discord shows "thinking" at once, and nothing the reply needs
        # (settings, the model's version and window, a version loaded on demand) waits in
        # front of the acknowledgement.
        self._check_limits(ask.length, ask.temperature)  # before the defer: a private one-liner at once
        await surface.start()
        record.ack_ms = elapsed_ms(started)
        settings = await self.settings.get(ask.guild_id)
        if not (settings.allows(ask.channel_id) or settings.allows(ask.parent_id)):
            raise CharLMError("This server's admins have turned me off in this channel.")
        g = self.context.config.generation
        length = ask.length or settings.length or g.default_length
        temperature = ask.temperature if ask.temperature is not None else (
            settings.temperature if settings.temperature is not None else g.default_temperature)
        seed = ask.seed if ask.seed is not None else secrets.randbelow(SEEDS)
        record.sampling = {"length": length, "temperature": temperature, "seed": seed}
        self._check_limits(length, temperature)  # a server's defaults, set under older limits
        serving, vocab = await self._serving(ask.scope, ask.model)
        label = serving.label  # `seuss v3`, as /models lists it
        if ask.version is not None and label != ask.version:
            raise CharLMError(f"{ask.version} wrote that reply and is no longer served here, so it cannot be "
                              f"rerolled; ask {ask.model} again instead.")
        mask = self.masker(settings)
        window = vocab.window(ask.prompt, WINDOW)  # to show the prompt as the model reads it
        record.window, record.model_version = window.text, label.rpartition(" ")[2]
        shown_prompt = await asyncio.to_thread(mask, window.prompt_text)
        live = LiveReply(surface.show, lambda text: progress_reply(shown_prompt, mask(text), label, length, len(text)),
                         g.edit_interval, waiting=lambda place: waiting_reply(shown_prompt, label, place))
        try:  # the server's share of the engine; in a DM, the user's
            result = await self.context.engine.generate(
                serving.key, ask.prompt, Sampling(temperature=temperature, length=length, seed=seed),
                timeout=self.context.config.limits.request_timeout, on_text=live.update,
                owner=ask.scope.owner, on_place=live.wait)
        finally:
            await live.stop()
            if live.first_text is not None:
                first_text.append(live.first_text)
        if not first_text:  # short enough to arrive in one piece: the final text is the first
            first_text.append(time.perf_counter())
        record.window, record.output = result.window.text, result.text  # as the engine saw them
        notes = window_notes(result.window, WINDOW)
        content = await asyncio.to_thread(lambda: final_reply(mask(result.window.prompt_text), mask(result.text),
                                                              label, temperature, seed, notes, len(result.text)))
        await write()  # first: the buttons name its row
        view = self.view_for(record) if self.view_for is not None and record.id is not None else None
        await surface.show(content, view)

    def _check_limits(self, length: int | None, temperature: float | None) -> None:
        g = self.context.config.generation
        if length is not None and length > g.max_length:
            raise CharLMError(f"This server allows at most {g.max_length} characters per reply.")
        if temperature is not None and temperature > g.max_temperature:
            raise CharLMError(f"This server allows a temperature of at most {g.max_temperature:g}.")

    async def _serving(self, scope: Scope, name: str) -> tuple[Serving, Vocabulary]:
        """What serves `name` here, and its characters; asked again once if the version was
        unloaded in between (another server's request evicted it)."""
        for attempt in (1, 2):
            serving = await self.context.serving(scope, name)
            try:
                version, vocab = self.context.engine.current(serving.key)
                return serving, vocab
            except CharLMError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def drain(self) -> None:
        """Give replies being written a bounded time to finish, then stop the rest
        (their users are told, while the connection to Discord is still open)."""
        if not self.in_flight:
            return
        grace = self.context.config.limits.shutdown_grace
        log.info("waiting up to %.0f s for %d replies in flight", grace, len(self.in_flight))
        _, unfinished = await asyncio.wait(set(self.in_flight), timeout=grace)
        if unfinished:
            log.warning("stopping %d replies still being written", len(unfinished))
            for task in unfinished:
                task.cancel()
            await asyncio.wait(unfinished, timeout=5)
