"""What a generation reply looks like: the prompt in bold, the continuation plain, a
small footer, Markdown escaped, always within Discord's 2,000-character limit."""

from __future__ import annotations

from discord.utils import escape_markdown

from charlm.vocab import PromptWindow

MESSAGE_LIMIT = 2000
CURSOR = " ▌"


def window_notes(window: PromptWindow, size: int) -> list[str]:
    """What the model started from, when it is not simply the user's text."""
    notes = []
    if window.padded == size:
        if window.dropped:
            notes.append("none of your characters are known to this model, so it started from a blank page")
        else:
            notes.append("no text given, so the model started from a blank page")
    elif window.dropped:
        n = sum(window.dropped.values())
        notes.append(f"{n} character{'s' if n != 1 else ''} the model does not know left out")
    if window.cut:
        notes.append(f"only your last {size} characters were read")
    return notes


def _bold(text: str) -> str:
    """Bold that survives leading or trailing whitespace (Markdown ignores `** a **`)."""
    core = text.strip()
    if not core:
        return text
    start = len(text) - len(text.lstrip())
    return f"{text[:start]}**{escape_markdown(core)}**{text[start + len(core):]}"


def render(prompt: str, output: str, footer: str, writing: bool = False) -> str:
    body = _bold(prompt) + escape_markdown(output) + (CURSOR if writing else "")
    return f"{body}\n-# {footer}" if body.strip() else f"-# {footer}"


def reply_text(prompt: str, output: str, footer_parts: list[str], writing: bool = False) -> str:
    """The message, the continuation shortened from its end if escaping made it too long."""
    footer = " · ".join(footer_parts)
    message = render(prompt, output, footer, writing)
    if len(message) <= MESSAGE_LIMIT:
        return message
    footer = " · ".join([*footer_parts, "cut to fit Discord's 2,000-character limit"])
    fits, too_long = 0, len(output)  # longest prefix of the output that fits: binary search
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if len(render(prompt, output[:middle], footer, writing)) <= MESSAGE_LIMIT:
            fits = middle
        else:
            too_long = middle
    return render(prompt, output[:fits], footer, writing)


def progress_reply(prompt: str, output: str, model: str, length: int, written: int | None = None) -> str:
    count = len(output) if written is None else written
    return reply_text(prompt, output, [f"{model} is writing… {count}/{length}"], writing=True)


def waiting_reply(prompt: str, model: str, place: int) -> str:
    """While the request waits for the models: its place in line (servers take turns)."""
    return reply_text(prompt, "", [f"{model} · waiting for the models, number {place} in line…"])


def final_reply(prompt: str, output: str, model: str, temperature: float, seed: int, notes: list[str],
                written: int | None = None) -> str:
    """The footer names what reproduces the text: `seuss v3 · T 0.8 · seed 41234` (the same
    version, temperature, length and seed give the same characters). `written`: characters
    the model wrote, when `output` is not exactly them (the output filter masked words)."""
    setting = "T 0 (argmax)" if temperature == 0 else f"T {temperature:g}"
    count = len(output) if written is None else written
    return reply_text(prompt, output, [str(model), setting, f"seed {seed}", f"{count} characters", *notes])
