# Self-hosted charlm Discord bot (/alice, /seuss).
#
# CPU (default):  docker build -t charlm-bot .
# Serving only:   docker build -t charlm-bot:serve --build-arg REQUIREMENTS=requirements-serve.txt .
#                 (no TensorFlow: ~4x smaller, ready in seconds; cannot fine-tune)
# GPU (CUDA):     docker build -t charlm-bot:gpu \
#                   --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu \
#                   --build-arg REQUIREMENTS=requirements-gpu.txt .
# Run:            docker run -d --name charlm-bot --env-file .env --stop-timeout 30 \
#                   -v charlm-data:/app/data --restart unless-stopped charlm-bot
#
# Builds with the classic builder too (DOCKER_BUILDKIT=0): no BuildKit-only syntax.
# Everything the bot writes (history DB, fine-tuned models, health file) is
# under /app/data, the one volume; see docs/docker.md.

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG REQUIREMENTS=requirements.txt

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLBACKEND=Agg \
    NUMBA_CACHE_DIR=/app/numba-cache

# tini as PID 1: forwards `docker stop`'s SIGTERM to python and reaps the
# fine-tuning child processes. apt's package lists and caches (77 MB of *.bin on a
# base without Docker's apt-clean hook) go in the same layer.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

# Unprivileged user with a fixed UID (handy for bind mounts: chown 10001).
RUN groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --create-home --home-dir /home/bot \
       --shell /usr/sbin/nologin bot

WORKDIR /app

# Dependencies first, so code and weight changes reuse this (large) layer.
# REQUIREMENTS picks the image: requirements.txt (trains and serves, the default),
# requirements-gpu.txt (the same on CUDA) or requirements-serve.txt (serves only:
# no TensorFlow, Keras or matplotlib; for processes that never train, such as shards).
COPY requirements.txt requirements-gpu.txt requirements-serve.txt ./
RUN pip install --no-cache-dir -r "${REQUIREMENTS}"

# Shipped weights, then code (changes most often) last.
COPY weights/ weights/
COPY charlm/ charlm/
COPY bot/ bot/
COPY config.toml ./

# Make the shipped files readable by the bot user even when the build context
# had private permissions (charlm saves model folders via mkdtemp, mode 0700);
# only paths that need it are touched, so nothing is copied into a new layer twice.
# Then the one volume: history DB, fine-tuned models, health file.  Created
# here owned by the bot user so a fresh named volume inherits that ownership.
# The generation kernels are compiled here once (charlm.kernels, numba) into a cache
# the bot user owns: a host with another CPU recompiles at the first load and saves it.
RUN find /app/weights /app/charlm /app/bot /app/config.toml \
        \( -type d ! -perm -o=rx -o -type f ! -perm -o=r \) -exec chmod a+rX {} + \
    && python -c "from charlm.engine import Engine; Engine({'alice': 'weights/alice'}).close()" \
    && mkdir -p /app/data \
    && chown -R bot:bot /app/data /app/numba-cache
VOLUME ["/app/data"]

USER 10001:10001

# DISCORD_TOKEN comes from the environment at run time (docker run --env-file,
# compose env_file); it is deliberately never set or baked into the image.

HEALTHCHECK --interval=30s --timeout=20s --start-period=120s --retries=3 \
    CMD ["python", "-m", "bot", "--health"]

ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m", "bot"]
CMD []
