#!/usr/bin/env bash
# What `cargo xtask bench` needs beyond the test dependencies: GNU time (wall, CPU, peak RSS
# and blocks written per process) and the AWS CLI (the upload in the baselines users script
# today). Meant to run as root; idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
log() { echo "install-bench-deps: $*" >&2; }

if ! [ -x /usr/bin/time ]; then
    log "installing time"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends time >/dev/null
fi
if ! command -v aws >/dev/null 2>&1; then
    log "installing awscli from PyPI"
    python3 -m pip install --quiet --break-system-packages awscli 2>/dev/null \
        || python3 -m pip install --quiet awscli
fi
/usr/bin/time --version 2>&1 | head -1 >&2
aws --version >&2
