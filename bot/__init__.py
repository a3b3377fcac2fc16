"""The Discord side of charlm: a thin adapter between Discord and the models.

`python -m bot` runs the standalone bot (bot.runner); `bot.cog` is the extension with
the commands, for this bot or any other discord.py bot; bot.context holds the services
(config, engine, history) that every cog shares.
"""

import os

# One BLAS thread for the inference thread's numpy steps: small matrix-vector products
# lose more to thread hand-offs than they gain, and slow down many times over when a
# fine-tuning process keeps the other cores busy. Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
