"""The Discord side of charlm: a thin adapter between Discord and the models.

`python -m bot` runs the standalone bot (bot.runner); `bot.cog` is the extension with
the commands, for this bot or any other discord.py bot; bot.context holds the services
(config, engine, history) that every cog shares.
"""

# charlm pins OpenBLAS to one thread for the inference thread's numpy steps (see
# charlm.blas for why and the measurement); importing it first does so before numpy loads.
import charlm  # noqa: F401
