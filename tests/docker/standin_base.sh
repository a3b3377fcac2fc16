#!/usr/bin/env bash
# Build a local stand-in for the `python:3.11-slim` image from Debian's archive,
# for machines that cannot reach Docker Hub (CI, sandboxes).
#
#   tests/docker/standin_base.sh [TAG]        (default TAG: python:3.11-slim)
#
# Does nothing when an image with TAG already exists (a real one or an earlier
# stand-in).  Otherwise: debootstrap a minimal Debian bookworm root (its python3
# is 3.11) with python3, pip and venv, make it behave like the official image for
# an unchanged Dockerfile (`python`/`pip` on PATH, pip may install into the
# system), and `docker import` it under TAG.
#
# The host's extra certificate authorities (egress through an intercepting
# proxy) are copied into THIS STAND-IN ONLY, so that apt/pip inside
# `docker build` trust the same CAs as the host.  The project's Dockerfile and
# repository never carry them.
set -euo pipefail

TAG="${1:-python:3.11-slim}"
SUITE="${STANDIN_SUITE:-bookworm}"
MIRROR="${STANDIN_MIRROR:-http://deb.debian.org/debian}"

log() { printf '[standin] %s\n' "$*" >&2; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG already present; reusing it"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi

ROOT="$(mktemp -d /tmp/standin-root.XXXXXX)"
cleanup() { rm -rf --one-file-system "$ROOT"; }
trap cleanup EXIT

log "debootstrap $SUITE into $ROOT (about a minute)"
start=$(date +%s)
if ! debootstrap --variant=minbase \
        --include=python3,python3-pip,python3-venv,ca-certificates \
        "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1; then
    tail -n 20 "$ROOT.log" >&2
    log "debootstrap failed (log: $ROOT.log)"
    exit 1
fi
rm -f "$ROOT.log"

# Same apt sources as the official image.
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF

# Like python:3.11-slim: `python`, `pip` on PATH, and pip installs into the
# system without PEP 668's "externally-managed-environment" refusal.
ln -sf /usr/bin/python3 "$ROOT/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$ROOT/usr/local/bin/pip"
rm -f "$ROOT"/usr/lib/python3*/EXTERNALLY-MANAGED

# The host's extra CAs (stand-in only).
shopt -s nullglob
extra=(/usr/local/share/ca-certificates/*.crt)
if ((${#extra[@]})); then
    log "adding ${#extra[@]} host CA certificate(s) to the stand-in"
    cp "${extra[@]}" "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null 2>&1 || {
        # Fall back to appending them to the bundle directly.
        cat "${extra[@]}" >>"$ROOT/etc/ssl/certs/ca-certificates.crt"
    }
fi

# Slim it down like the official image.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
       "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*

log "importing as $TAG"
tar --numeric-owner -C "$ROOT" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'LABEL org.opencontainers.image.description="local stand-in for python:3.11-slim (Debian bookworm, built by tests/docker/standin_base.sh)"' \
        --change 'CMD ["python3"]' \
        - "$TAG" >/dev/null
log "built $TAG in $(($(date +%s) - start)) s"
