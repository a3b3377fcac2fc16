#!/usr/bin/env bash
# End-to-end test of the self-hosting Docker image (run by .ci/run, as root).
#
#   tests/docker/run_docker_test.sh
#
# 1. Makes sure a Docker daemon runs (installs Debian's docker.io and starts
#    dockerd when needed; stops only what it started).
# 2. Builds a local stand-in for python:3.11-slim from Debian's archive unless
#    an image with that tag exists (no Docker Hub needed).
# 3. Lints the project's unchanged Dockerfile and builds both images with the
#    classic builder: the default one (trains and serves) and the serving-only one
#    (--build-arg REQUIREMENTS=requirements-serve.txt), which must have no
#    TensorFlow, Keras or matplotlib and be at most CHARLM_SERVE_MAX_MB (1000) MB; its size is
#    reported against the 600 MB target.
# Then for each image:
# 4. `--check` in the container; then runs the bot for real with host networking
#    against a fresh Discord double on 127.0.0.1 and checks `/alice` answers.
# 5. `docker stop` must end it cleanly (exit 0) within 10 s; a second container
#    on the same volume must still see the history.
# 6. Removes its containers and volumes; keeps images as a cache.
#
# When Docker cannot run on this machine it prints "SKIPPED: docker cannot run
# here because ..." and exits 0, or 1 with CHARLM_REQUIRE_DOCKER=1.
#
# Environment: PYTHON (python with the project's deps, for the double; default
# .venv/bin/python), CHARLM_IMAGE (default charlm-bot:test; the serving-only image
# is tagged CHARLM_IMAGE-serve), CHARLM_SERVE_MAX_MB (default 1000),
# CHARLM_REQUIRE_DOCKER=1, CHARLM_DOCKER_KEEP=1 (keep containers/volumes/logs).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

PYTHON="${PYTHON:-.venv/bin/python}"
IMAGE_FULL="${CHARLM_IMAGE:-charlm-bot:test}"
IMAGE_SERVE="$IMAGE_FULL-serve"
SERVE_MAX_MB="${CHARLM_SERVE_MAX_MB:-1000}"  # a hard stop for a training stack sneaking back in
SERVE_TARGET_MB=600                        # the size we aim at, reported (the base image varies)
BASE_TAG="python:3.11-slim"
RUN_ID="charlm-dockertest-$$"
VOLUMES=()
WORK="$(mktemp -d /tmp/charlm-dockertest.XXXXXX)"
chmod 755 "$WORK"
T0=$(date +%s)

STARTED_DOCKERD_PID=""
DOUBLE_PID=""
CONTAINERS=()

log() { printf '[docker-test %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }

cleanup() {
    local rc=$?
    set +e
    if [[ "${CHARLM_DOCKER_KEEP:-0}" == 1 ]]; then
        log "CHARLM_DOCKER_KEEP=1: leaving containers ${CONTAINERS[*]:-none}, volumes ${VOLUMES[*]:-none}, logs in $WORK"
    else
        for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1; done
        for v in "${VOLUMES[@]}"; do docker volume rm "$v" >/dev/null 2>&1; done
    fi
    if [[ -n "$DOUBLE_PID" ]] && kill -0 "$DOUBLE_PID" 2>/dev/null; then
        kill -TERM "$DOUBLE_PID" 2>/dev/null
        wait "$DOUBLE_PID" 2>/dev/null
    fi
    if [[ -n "$STARTED_DOCKERD_PID" ]] && kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null; then
        log "stopping the dockerd this test started (pid $STARTED_DOCKERD_PID)"
        kill -TERM "$STARTED_DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
    [[ "${CHARLM_DOCKER_KEEP:-0}" == 1 ]] || rm -rf "$WORK"
    log "total $(($(date +%s) - T0)) s, exit $rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

skip() {
    echo "SKIPPED: docker cannot run here because $*"
    if [[ "${CHARLM_REQUIRE_DOCKER:-0}" == 1 ]]; then
        echo "FAIL: CHARLM_REQUIRE_DOCKER=1 but docker cannot run"
        exit 1
    fi
    exit 0
}

fail() {
    echo "FAIL: $*"
    if [[ -n "${BOT_STARTED:-}" ]]; then
        echo "----- bot container logs (last 60 lines) -----"
        docker logs --tail 60 "$BOT" 2>&1 || true
    fi
    if [[ -n "${DOUBLE_ERR:-}" && -s "$DOUBLE_ERR" ]]; then
        echo "----- discord double stderr (last 30 lines) -----"
        tail -n 30 "$DOUBLE_ERR"
    fi
    exit 1
}

# --------------------------------------------------------------------------
# 1. A Docker daemon.
# --------------------------------------------------------------------------
docker_ok() { timeout 20 docker info >/dev/null 2>&1; }

start_dockerd() {   # start_dockerd LOGFILE [flags...]; 0 when the daemon answers
    local logfile=$1; shift
    dockerd "$@" >"$logfile" 2>&1 &
    local pid=$!
    for _ in $(seq 1 60); do
        if ! kill -0 "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null; return 1; fi
        if docker_ok; then STARTED_DOCKERD_PID=$pid; return 0; fi
        sleep 1
    done
    kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    return 1
}

ensure_docker() {
    if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
        if docker_ok; then return 0; fi           # a client talking to a remote daemon
        [[ $(id -u) == 0 ]] || skip "dockerd is not installed and this is not root (cannot apt-get install docker.io)"
        log "installing Debian's docker.io engine"
        if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io iptables; } \
                >"$WORK/apt-docker.log" 2>&1; then
            tail -n 15 "$WORK/apt-docker.log"
            skip "installing docker.io with apt failed (see above)"
        fi
    fi
    if docker_ok; then
        log "using the running Docker daemon"
        return 0
    fi
    [[ $(id -u) == 0 ]] || skip "no Docker daemon is running and this is not root (cannot start dockerd)"
    # Default options first (overlay2 + bridge work in the Debian CI VM and in
    # the development sandbox); then a fallback for restricted kernels.
    local attempt=0 flags
    for flags in "" "--storage-driver=vfs --iptables=false --ip6tables=false --bridge=none"; do
        attempt=$((attempt + 1))
        log "starting dockerd ${flags:-(default options)}"
        # shellcheck disable=SC2086
        if start_dockerd "$WORK/dockerd.$attempt.log" $flags; then
            log "dockerd up (pid $STARTED_DOCKERD_PID), log $WORK/dockerd.$attempt.log"
            return 0
        fi
        log "dockerd ${flags:-(default options)} did not come up:"
        tail -n 8 "$WORK/dockerd.$attempt.log" | sed 's/^/    /'
    done
    skip "dockerd failed to start (last error: $(grep -iE 'level=(fatal|error)|failed' "$WORK/dockerd.$attempt.log" | tail -n 1 | cut -c1-300))"
}

ensure_docker
docker version --format 'docker client {{.Client.Version}}, server {{.Server.Version}}' || true
log "storage driver: $(docker info --format '{{.Driver}}' 2>/dev/null)"

# --------------------------------------------------------------------------
# 2. The base image (real python:3.11-slim or a Debian stand-in).
# --------------------------------------------------------------------------
if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    log "base image $BASE_TAG present: $(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.description"}}' "$BASE_TAG" 2>/dev/null || true)"
else
    log "no $BASE_TAG image (Docker Hub unreachable); building a Debian stand-in"
    "$REPO/tests/docker/standin_base.sh" "$BASE_TAG" || fail "could not build the $BASE_TAG stand-in"
fi
if ! smoke=$(timeout 120 docker run --rm --network host "$BASE_TAG" python -c 'print("container-ok")' 2>&1) \
        || [[ "$smoke" != *container-ok* ]]; then
    echo "$smoke" | tail -n 10
    skip "the daemon runs but cannot start a container (see above)"
fi

# --------------------------------------------------------------------------
# 3. Lint and build the project's Dockerfile (classic builder).
# --------------------------------------------------------------------------
HADOLINT="$(dirname "$PYTHON")/hadolint"
command -v "$HADOLINT" >/dev/null 2>&1 || HADOLINT="$(command -v hadolint || true)"
if [[ -n "$HADOLINT" ]]; then
    "$HADOLINT" --config .hadolint.yaml Dockerfile || fail "hadolint reports problems in Dockerfile"
    log "hadolint: Dockerfile clean"
else
    log "hadolint not installed (pip install -r requirements-dev.txt); lint skipped"
fi

# build_image TAG [build args...]: build with the classic builder, check the static
# properties every image must have; sets SIZE_MB.
build_image() {
    local image=$1; shift
    log "building $image $* (DOCKER_BUILDKIT=0)"
    local b0; b0=$(date +%s)
    if ! DOCKER_BUILDKIT=0 docker build --network host "$@" -t "$image" . >"$WORK/build-${image//[:\/]/_}.log" 2>&1; then
        tail -n 40 "$WORK/build-${image//[:\/]/_}.log"
        fail "docker build of $image failed"
    fi
    local size_b; size_b=$(docker image inspect -f '{{.Size}}' "$image")
    SIZE_MB=$((size_b / 1000000))
    log "build time: $(($(date +%s) - b0)) s; image size: ${SIZE_MB} MB ($image)"

    local user; user=$(docker image inspect -f '{{.Config.User}}' "$image")
    [[ -n "$user" && "$user" != 0* && "$user" != root* ]] || fail "$image runs as root (User='$user')"
    docker image inspect -f '{{json .Config.Volumes}}' "$image" | grep -q '"/app/data"' || fail "$image: no VOLUME /app/data"
    docker image inspect -f '{{json .Config.Entrypoint}}' "$image" | grep -q tini || fail "$image: ENTRYPOINT does not use tini"
    docker image inspect -f '{{json .Config.Healthcheck}}' "$image" | grep -q -- '--health' || fail "$image: no HEALTHCHECK with --health"
    docker image inspect -f '{{json .Config.Env}}' "$image" | grep -q 'DISCORD_TOKEN' && fail "$image: DISCORD_TOKEN is baked into the image"
    log "$image: user $user, VOLUME /app/data, tini entrypoint, healthcheck ok"
}

build_image "$IMAGE_FULL"
FULL_MB=$SIZE_MB
build_image "$IMAGE_SERVE" --build-arg REQUIREMENTS=requirements-serve.txt
SERVE_MB=$SIZE_MB

# The serving-only image has no training stack, and stays small.
if ! out=$(docker run --rm --entrypoint python "$IMAGE_SERVE" -c '
import importlib.util, sys
present = [m for m in ("tensorflow", "keras", "matplotlib") if importlib.util.find_spec(m)]
print("present:", present or "none")
sys.exit(1 if present else 0)' 2>&1); then
    echo "$out"
    fail "$IMAGE_SERVE has training packages installed"
fi
log "$IMAGE_SERVE: no tensorflow, keras or matplotlib"
log "$IMAGE_SERVE: ${SERVE_MB} MB (target ${SERVE_TARGET_MB} MB; the full image: ${FULL_MB} MB)"
((SERVE_MB <= SERVE_MAX_MB)) || fail "$IMAGE_SERVE is ${SERVE_MB} MB, over the ${SERVE_MAX_MB} MB budget"
# And the full image still trains: Keras opens a shipped model there.
docker run --rm --entrypoint python "$IMAGE_FULL" -c '
from charlm.storage import load_model_folder
print("keras loads alice:", load_model_folder("weights/alice").model.count_params(), "parameters")' \
    >"$WORK/full-keras.log" 2>&1 || { tail -n 20 "$WORK/full-keras.log"; fail "Keras cannot load a model in $IMAGE_FULL"; }
log "$IMAGE_FULL: $(tail -n 1 "$WORK/full-keras.log")"

# exercise IMAGE LABEL: --check, the bot against a fresh Discord double, /alice,
# --health, a clean stop, and the history on the volume afterwards.
exercise() {
    local IMAGE=$1 label=$2
    local VOLUME="$RUN_ID-$label-data" BOT="$RUN_ID-$label-bot"
    BOT_STARTED=""
    DOUBLE_ERR="$WORK/$label-double.err"
    # --------------------------------------------------------------------------
    # 4. --check, then the bot for real against the Discord double.
    # --------------------------------------------------------------------------
    docker volume create "$VOLUME" >/dev/null
    VOLUMES+=("$VOLUME")

    log "$IMAGE: python -m bot --check in a container"
    CONTAINERS+=("$RUN_ID-$label-check")
    if ! timeout 300 docker run --name "$RUN_ID-$label-check" --network host -e DISCORD_TOKEN=test-token \
            -v "$VOLUME:/app/data" "$IMAGE" --check >"$WORK/$label-check.log" 2>&1; then
        tail -n 30 "$WORK/$label-check.log"
        fail "--check failed in the container"
    fi
    tail -n 3 "$WORK/$label-check.log" | sed 's/^/    /'
    docker rm "$RUN_ID-$label-check" >/dev/null

    [[ -x "$PYTHON" ]] || command -v "$PYTHON" >/dev/null 2>&1 || fail "PYTHON=$PYTHON not found (needed for the Discord double)"
    log "starting the Discord double on 127.0.0.1"
    "$PYTHON" -m tests.discord_double --host 127.0.0.1 --port 0 >"$WORK/$label-double.out" 2>"$WORK/$label-double.err" &
    DOUBLE_PID=$!
    for _ in $(seq 1 60); do
        grep -q '^CONTROL_URL=' "$WORK/$label-double.out" 2>/dev/null && break
        kill -0 "$DOUBLE_PID" 2>/dev/null || fail "the Discord double exited"
        sleep 0.5
    done
    REST_BASE=$(sed -n 's/^REST_BASE=//p' "$WORK/$label-double.out")
    GATEWAY_URL=$(sed -n 's/^GATEWAY_URL=//p' "$WORK/$label-double.out")
    CONTROL_URL=$(sed -n 's/^CONTROL_URL=//p' "$WORK/$label-double.out")
    [[ -n "$REST_BASE" && -n "$GATEWAY_URL" && -n "$CONTROL_URL" ]] || fail "the Discord double did not print its URLs"
    DOUBLE_URL="${CONTROL_URL%/_control}"
    log "double: rest $REST_BASE, gateway $GATEWAY_URL"

    # Test config = the image's own config.toml with [discord] pointed at the double.
    docker run --rm --entrypoint cat "$IMAGE" /app/config.toml >"$WORK/$label-base-config.toml" \
        || fail "cannot read /app/config.toml from the image"
    "$PYTHON" "$REPO/tests/docker/make_test_config.py" "$WORK/$label-base-config.toml" "$WORK/$label-config.toml" \
        --api-base "$REST_BASE" --gateway-url "$GATEWAY_URL" || fail "cannot write the test config"
    chmod 644 "$WORK/$label-config.toml"

    log "starting the bot container (host network, test config mounted read-only)"
    CONTAINERS+=("$BOT")
    docker run -d --name "$BOT" --network host -e DISCORD_TOKEN=test-token \
        -v "$VOLUME:/app/data" -v "$WORK/$label-config.toml:/app/config.toml:ro" "$IMAGE" >/dev/null \
        || fail "docker run of the bot failed"
    BOT_STARTED=1

    driver() { "$PYTHON" -m tests.discord_double.driver "$DOUBLE_URL" "$@"; }

    # Wait for the bot to connect and register its commands, failing fast if the
    # container dies meanwhile.
    driver wait_ready --commands alice seuss --timeout 240 >"$WORK/$label-ready.json" 2>&1 &
    ready_pid=$!
    while kill -0 "$ready_pid" 2>/dev/null; do
        if [[ "$(docker inspect -f '{{.State.Running}}' "$BOT" 2>/dev/null)" != true ]]; then
            kill "$ready_pid" 2>/dev/null; wait "$ready_pid" 2>/dev/null || true
            fail "the bot container exited before connecting (exit code $(docker inspect -f '{{.State.ExitCode}}' "$BOT"))"
        fi
        sleep 1
    done
    if ! wait "$ready_pid"; then
        tail -n 5 "$WORK/$label-ready.json"
        fail "the bot did not connect / register /alice and /seuss within 240 s"
    fi
    log "bot connected to the double; commands registered"

    driver command alice --option 'text=the white rabbit' --user alice --timeout 120 >"$WORK/$label-alice.json" 2>&1 \
        || { cat "$WORK/$label-alice.json"; fail "/alice did not complete"; }
    "$PYTHON" - "$WORK/$label-alice.json" <<'EOF' || fail "/alice reply is not a continuation (see above)"
import json, sys
reply = json.load(open(sys.argv[1]))
final = reply.get("final") or {}
text = final.get("content") or ""
for embed in final.get("embeds") or []:
    text += (embed.get("title") or "") + (embed.get("description") or "")
print(f"    /alice 'the white rabbit' -> {text[:160]!r}")
if reply.get("violations"):
    print("    protocol violations:", reply["violations"])
    sys.exit(1)
if len(text.strip()) <= len("the white rabbit"):
    print("    reply too short to be a continuation")
    sys.exit(1)
EOF
    log "/alice answered"

    # The bot writes its health file once the gateway is up, so it is there by now; a few
    # retries only absorb a slow `docker exec` on a loaded machine.
    for attempt in 1 2 3 4 5; do
        docker exec "$BOT" python -m bot --health >"$WORK/$label-health.log" 2>&1 && break
        [[ $attempt == 5 ]] && { cat "$WORK/$label-health.log"; fail "python -m bot --health fails in the running container"; }
        sleep 2
    done
    log "python -m bot --health: ok (container health: $(docker inspect -f '{{.State.Health.Status}}' "$BOT"))"

    # --------------------------------------------------------------------------
    # 5. Clean stop within 10 s; the history survives on the volume.
    # --------------------------------------------------------------------------
    s0=$(date +%s.%N)
    docker stop -t 10 "$BOT" >/dev/null
    STOP_S=$(awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    EXIT_CODE=$(docker inspect -f '{{.State.ExitCode}}' "$BOT")
    log "docker stop took ${STOP_S} s; exit code $EXIT_CODE"
    awk -v s="$STOP_S" 'BEGIN { exit !(s < 10) }' || fail "docker stop needed ${STOP_S} s (SIGTERM not handled; killed)"
    [[ "$EXIT_CODE" == 0 ]] || { docker logs --tail 30 "$BOT" 2>&1; fail "unclean exit code $EXIT_CODE after SIGTERM (143 = died of SIGTERM, 137 = killed)"; }

    log "second container on the same volume"
    CONTAINERS+=("$RUN_ID-$label-after")
    if ! timeout 120 docker run --name "$RUN_ID-$label-after" --network host -v "$VOLUME:/app/data" --entrypoint python "$IMAGE" -c '
import sqlite3, sys
db = sqlite3.connect("file:/app/data/charbot.sqlite3?mode=ro", uri=True)
tables = [r[0] for r in db.execute("select name from sqlite_master where type=\"table\" and name not like \"sqlite_%\"")]
counts = {t: db.execute(f"select count(*) from \"{t}\"").fetchone()[0] for t in tables}
print("database tables:", counts)
sys.exit(0 if counts.get("requests", 0) > 0 else 1)
' >"$WORK/$label-after.log" 2>&1; then
        cat "$WORK/$label-after.log"
        fail "the history did not survive on the volume"
    fi
    sed 's/^/    /' "$WORK/$label-after.log"
    docker rm "$RUN_ID-$label-after" >/dev/null
    # Stop this image's double before the next image gets its own.
    kill -TERM "$DOUBLE_PID" 2>/dev/null; wait "$DOUBLE_PID" 2>/dev/null || true
    DOUBLE_PID=""
    log "$label image: PASS"
}

exercise "$IMAGE_FULL" full
exercise "$IMAGE_SERVE" serve

log "PASS: images ${FULL_MB} MB (full) and ${SERVE_MB} MB (serving only), both answer /alice, stop cleanly, keep the history"
