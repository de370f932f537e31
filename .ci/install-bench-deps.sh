#!/usr/bin/env bash
# What `cargo xtask bench` needs beyond the test dependencies: GNU time (wall, CPU, peak RSS
# and blocks written per process), the zstd CLI (the dump-plus-compression limit) and the AWS
# CLI (the S3 server's size and cleanup, and the upload in the baselines users script today);
# for `bench postgres`, matplotlib (the plot); for `bench mysql`, the MariaDB server and client
# from Debian (a throwaway server is started by the bench; the package's own service is kept
# from starting). Usage: install-bench-deps.sh [postgres] [mysql] (none: both). Meant to run as
# root; idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
log() { echo "install-bench-deps: $*" >&2; }

engines=("$@")
[ "${#engines[@]}" -gt 0 ] || engines=(postgres mysql)
wants() { [[ " ${engines[*]} " == *" $1 "* ]]; }
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

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
if wants postgres && ! python3 -c "import matplotlib" 2>/dev/null; then
    log "installing matplotlib from PyPI"
    python3 -m pip install --quiet --break-system-packages matplotlib 2>/dev/null \
        || python3 -m pip install --quiet matplotlib
fi
if wants mysql; then
    missing=()
    for pkg in mariadb-server mariadb-client; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        # Keep the postinst from starting the package's server (invoke-rc.d obeys policy-rc.d).
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    "$mariadbd" --version >&2
fi
/usr/bin/time --version 2>&1 | head -1 >&2
aws --version >&2
