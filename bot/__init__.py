"""The Discord side of charlm: a thin adapter between Discord and the models.

`python -m bot` runs the standalone bot (bot.runner); `bot.cog` is the extension with
the commands, for this bot or any other discord.py bot; bot.context holds the services
(config, engine, history) that every cog shares.
"""
