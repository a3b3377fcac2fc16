"""/alice and /seuss: acknowledge at once, show the continuation growing, record the request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import discord
from discord import app_commands
from discord.ext import commands

from charlm import WINDOW
from charlm.engine import EngineBusy, EngineTimeout, OwnerBusy
from charlm.errors import CharLMError
from charlm.sampling import Sampling
from charlm.vocab import Vocabulary

from bot.config import LENGTH_LIMIT, TEMPERATURE_LIMIT
from bot.context import BotContext, Cooldowns, Serving, outcome_of, owner_of
from bot.history import Request
from bot.replies import final_reply, progress_reply, waiting_reply, window_notes
from bot.respond import NO_MENTIONS, answer_error, tell, tell_quietly

log = logging.getLogger(__name__)

Length = app_commands.Range[int, 1, LENGTH_LIMIT]
Temperature = app_commands.Range[float, 0.0, TEMPERATURE_LIMIT]
OPTIONS = dict(
    text="Text to continue (the model reads its last 100 characters); empty starts from a blank page",
    length="Characters to write; empty: the server's default (400 unless changed)",
    temperature="0 always picks the likeliest character, higher is more surprising; empty: the default",
)


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


class LiveReply:
    """Edits the deferred reply as text arrives, at most once per `interval` seconds,
    which keeps a message well inside Discord's edit rate limits."""

    def __init__(self, interaction: discord.Interaction, render: Callable[[str], str], interval: float,
                 waiting: Callable[[int], str] | None = None) -> None:
        self.interaction = interaction
        self.render = render
        self.interval = interval
        self.waiting = waiting
        self.text = ""
        self.place = 0  # place in line while the request waits for the models; 0: not waiting
        self.first_text: float | None = None  # perf_counter of the first text (for metrics)
        self.shown = ""
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"live-reply-{interaction.id}")

    def update(self, text: str) -> None:
        if self.first_text is None:
            self.first_text = time.perf_counter()
        self.text = text

    def wait(self, place: int) -> None:
        self.place = place

    def content(self) -> str:
        """What the reply should show now; empty: nothing yet (the "thinking…" stays)."""
        if self.text:
            return self.render(self.text)
        if self.place and self.waiting is not None:
            return self.waiting(self.place)
        return ""

    async def _run(self) -> None:
        while not self._done.is_set():
            try:
                await asyncio.wait_for(self._done.wait(), self.interval)
                return
            except asyncio.TimeoutError:
                pass
            content = self.content()
            if content and content != self.shown:
                self.shown = content
                try:
                    await self.interaction.edit_original_response(content=content, allowed_mentions=NO_MENTIONS)
                except discord.HTTPException as exc:
                    log.warning("progress edit of interaction %s failed: %s", self.interaction.id, exc)

    async def stop(self) -> None:
        """Stop editing; returns once no progress edit is in flight, so the final one lands last."""
        self._done.set()
        await self._task


class GenerationCog(commands.Cog):
    """Continue a user's text in the style of one of the shipped models."""

    def __init__(self, context: BotContext) -> None:
        self.context = context
        limits = context.config.limits
        self.cooldowns = Cooldowns(limits.cooldown_uses, limits.cooldown_seconds)
        self.in_flight: set[asyncio.Task] = set()

    async def cog_unload(self) -> None:
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

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        self.cooldowns.check(interaction.user.id)
        return True

    @app_commands.command(name="alice", description="Continue your text in the style of Alice in Wonderland")
    @app_commands.describe(**OPTIONS)
    async def alice(self, interaction: discord.Interaction, text: str | None = None,
                    length: Length | None = None, temperature: Temperature | None = None) -> None:
        await self.continue_text(interaction, "alice", text, length, temperature)

    @app_commands.command(name="seuss", description="Continue your text in the style of Dr Seuss")
    @app_commands.describe(**OPTIONS)
    async def seuss(self, interaction: discord.Interaction, text: str | None = None,
                    length: Length | None = None, temperature: Temperature | None = None) -> None:
        await self.continue_text(interaction, "seuss", text, length, temperature)

    async def continue_text(self, interaction: discord.Interaction, model: str, text: str | None,
                            length: int | None, temperature: float | None) -> None:
        """Answer one request and record it, whatever happens."""
        started = time.perf_counter()
        task = asyncio.current_task()
        self.in_flight.add(task)
        g = self.context.config.generation
        settings = {"length": g.default_length if length is None else length,
                    "temperature": g.default_temperature if temperature is None else temperature}
        record = Request(user_id=interaction.user.id, guild_id=interaction.guild_id,
                         channel_id=interaction.channel_id, command=model, prompt=text or "",
                         model=model, sampling=settings)
        first_text: list[float] = []
        try:
            await self._answer(interaction, record, started, first_text)
        except CharLMError as exc:
            record.outcome, record.error = outcome_of(exc), str(exc)
            await tell(interaction, user_message(exc, in_dm=interaction.guild_id is None))
        except asyncio.CancelledError:
            record.outcome, record.error = "error", "the bot shut down before the reply was finished"
            await tell_quietly(interaction, "The bot is restarting and could not finish this reply; "
                                                  "please try again in a minute.")
            raise
        except Exception as exc:
            record.outcome, record.error = "error", f"{exc.__class__.__name__}: {exc}"
            raise  # cog_app_command_error logs it with context and apologises
        finally:
            record.latency_ms = elapsed_ms(started)
            self.in_flight.discard(task)
            self._count(interaction, record, first_text[0] - started if first_text else None)
            await self.context.record(record)

    def _count(self, interaction: discord.Interaction, record: Request, first_text_s: float | None) -> None:
        """The request in the process's metrics (labels: shard, command, model; never ids)."""
        count = interaction.client.shard_count or 1
        shard = 0 if interaction.guild_id is None else (interaction.guild_id >> 22) % count
        command = interaction.command.name if interaction.command else record.command
        self.context.metrics.request(shard, command, record.model, record.outcome,
                                     None if record.ack_ms is None else record.ack_ms / 1000, first_text_s,
                                     record.latency_ms / 1000)

    async def _answer(self, interaction: discord.Interaction, record: Request, started: float,
                      first_text: list[float]) -> None:
        g = self.context.config.generation
        length, temperature = record.sampling["length"], record.sampling["temperature"]
        if length > g.max_length:
            raise CharLMError(f"This server allows at most {g.max_length} characters per reply.")
        if temperature > g.max_temperature:
            raise CharLMError(f"This server allows a temperature of at most {g.max_temperature:g}.")
        # Acknowledge first: Discord shows "thinking" at once, and nothing the reply needs
        # (the model's version and window, below; or a version loaded on demand) waits in
        # front of the acknowledgement.
        await interaction.response.defer(thinking=True)
        record.ack_ms = elapsed_ms(started)
        serving, vocab = await self._serving(record.guild_id, record.model)
        label = serving.label  # `seuss v3`, as /models lists it
        window = vocab.window(record.prompt, WINDOW)  # to show the prompt as the model reads it
        record.window, record.model_version = window.text, label.rpartition(" ")[2]
        live = LiveReply(interaction, lambda text: progress_reply(window.prompt_text, text, label, length),
                         g.edit_interval, waiting=lambda place: waiting_reply(window.prompt_text, label, place))
        try:  # the server's share of the engine; in a DM, the user's
            result = await self.context.engine.generate(
                serving.key, record.prompt, Sampling(temperature=temperature, length=length),
                timeout=self.context.config.limits.request_timeout, on_text=live.update,
                owner=owner_of(interaction), on_place=live.wait)
        finally:
            await live.stop()
            if live.first_text is not None:
                first_text.append(live.first_text)
        if not first_text:  # short enough to arrive in one piece: the final text is the first
            first_text.append(time.perf_counter())
        record.window, record.output = result.window.text, result.text  # as the engine saw them
        notes = window_notes(result.window, WINDOW)
        content = final_reply(result.window.prompt_text, result.text, label, temperature, notes)
        await interaction.edit_original_response(content=content, allowed_mentions=NO_MENTIONS)

    async def _serving(self, guild_id: int | None, name: str) -> tuple[Serving, Vocabulary]:
        """What serves `name` here, and its characters; asked again once if the version was
        unloaded in between (another server's request evicted it)."""
        for attempt in (1, 2):
            serving = await self.context.serving(guild_id, name)
            try:
                version, vocab = self.context.engine.current(serving.key)
                return serving, vocab
            except CharLMError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
