"""How a job reads in Discord: one short block of text per state."""

from __future__ import annotations

from datetime import datetime, timezone

import discord

from charlm.progress import bar, format_duration

from bot.finetune.registry import Model
from bot.finetune.store import Job
from bot.scope import Scope

MESSAGE_LIMIT = 2000


def title(job: Job) -> str:
    target = f"{job.target} {job.target_version}" if job.target_version else f"a new version of {job.target}"
    source = f"{job.base} {job.base_version}"
    return f"Fine-tune #{job.id}: {source} → {target} on `{discord.utils.escape_markdown(job.corpus_name)}`"


def progress_line(progress: dict) -> str:
    """e.g. `[#####---------------]` epoch 2/5 · step 30/60 · loss 1.842 · val 1.903 · 4:10 left"""
    if not progress:
        return "starting the training process (loading the base model and scoring it)…"
    steps_done = (progress["epoch"] - 1) * progress["steps"] + progress["step"]
    fraction = steps_done / max(1, progress["epochs"] * progress["steps"])
    parts = [f"`[{bar(fraction)}]` epoch {progress['epoch']}/{progress['epochs']}",
             f"step {progress['step']}/{progress['steps']}", f"loss {progress['loss']:.3f}"]
    if progress.get("val_loss") is not None:
        parts.append(f"val {progress['val_loss']:.3f}")
    parts.append(f"{format_duration(progress['eta_seconds'])} left")
    return " · ".join(parts)


def figures(job: Job) -> str:
    if job.heldout_bpc is None or job.base_heldout_bpc is None:
        return ""
    return (f"held-out bits per character on the new text: **{job.heldout_bpc:.3f}** new, "
            f"{job.base_heldout_bpc:.3f} {job.base} {job.base_version}")


def describe(job: Job, position: int | None = None) -> str:
    """The job's message: title, settings and where it stands."""
    when = discord.utils.format_dt(datetime.fromtimestamp(job.created_at, timezone.utc), "R")
    s = job.settings
    lines = [f"**{title(job)}**",
             f"started {when} by <@{job.user_id}> · {s['epochs']} epochs · batch {s['batch_size']} · "
             f"learning rate {s['learning_rate']:g}" + (" · force" if s.get("force") else ""),
             f"-# {job.cleaning}"]
    if job.state == "queued":
        place = f"number {position} in line" if position else "in line"
        lines.append(f"⏳ queued, {place}: it starts when the jobs before it are done "
                     "(`/finetune cancel` takes it out of the queue)")
    elif job.state == "training":
        lines.append(progress_line(job.progress))
    elif job.state == "publishing":
        lines.append("📦 trained: checking the new version and saving it (it can no longer be cancelled)…")
    elif job.state == "succeeded":
        lines.append(figures(job))
        if job.served:
            lines.append(f"✅ now serving **{job.target} {job.target_version}** in this server"
                         + (" (forced)" if s.get("force") and job.heldout_bpc >= job.base_heldout_bpc else ""))
        else:
            lines.append(f"⚠️ {job.target} {job.target_version} is no better than its base, so it is saved but "
                         f"not served; `/models model:{job.target} serve:{job.target_version}` serves it anyway")
    elif job.state == "cancelled" and job.started_at is None:
        lines.append("⏹️ cancelled before it started; nothing was saved and the served models are unchanged")
    elif job.state == "cancelled":
        lines.append("⏹️ cancelled; nothing was saved and the served models are unchanged")
    elif job.state == "interrupted":
        lines.append("⏹️ interrupted: the bot stopped while this job was training; nothing was saved. "
                     "Start it again with `/finetune start`.")
    else:
        lines.append(f"❌ failed: {job.error}; nothing was saved and the served models are unchanged")
    return "\n".join(lines)[:MESSAGE_LIMIT]


def describe_models(models: list[Model], viewer: Scope) -> str:
    """/models: every model a server sees (or, for the owners, every server's), its versions,
    the served one, and held-out figures."""
    everything = viewer.everything
    lines = []
    for model in models:
        if everything:
            default = model.default.label if model.default else "nothing"
            lines.append(f"**{model.name}** (every server's default: {default})")
        else:
            served = model.served.label if model.served else "nothing yet"
            lines.append(f"**{model.name}** (serving {served})")
        for v in reversed(model.versions):
            marker = "▶" if v == (model.default if everything else model.served) else "·"
            bpc = f"{v.heldout_bpc:.3f} bits/char held-out" if v.heldout_bpc is not None else "no held-out figure"
            base = f", base {v.base_heldout_bpc:.3f} on it" if v.base_heldout_bpc is not None else ""
            origin = "shipped" if v.shipped else f"from {(v.card.get('base') or {}).get('name', '?')}"
            if everything and not v.shipped:
                origin += f", server {v.guild_id}" if v.guild_id else ", the owners'"
            elif not v.shipped and v.guild_id != viewer.guild_id:
                origin += ", published by the bot's owners"
            lines.append(f"{marker} {v.label}: {origin}, trained on `{discord.utils.escape_markdown(v.corpus)}` "
                         f"· {bpc}{base}")
    text = "\n".join(lines) or "No models."
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"
