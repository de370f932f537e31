#!/usr/bin/env bash
# What `cargo xtask bench` needs beyond the test dependencies: GNU time (wall, CPU, peak RSS
# and blocks written per process), the zstd CLI (the dump-plus-compression limit), the AWS CLI
# (the upload in the baselines users script today) and matplotlib (the plot). Meant to run as
# root; idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
log() { echo "install-bench-deps: $*" >&2; }

if ! [ -x /usr/bin/time ] || ! command -v zstd >/dev/null 2>&1; then
    log "installing time and zstd"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends time zstd >/dev/null
fi
if ! command -v aws >/dev/null 2>&1; then
    log "installing awscli from PyPI"
    python3 -m pip install --quiet --break-system-packages awscli 2>/dev/null \
        || python3 -m pip install --quiet awscli
fi
if ! python3 -c "import matplotlib" 2>/dev/null; then
    log "installing matplotlib from PyPI"
    python3 -m pip install --quiet --break-system-packages matplotlib 2>/dev/null \
        || python3 -m pip install --quiet matplotlib
fi
/usr/bin/time --version 2>&1 | head -1 >&2
aws --version >&2
