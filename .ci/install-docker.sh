#!/usr/bin/env bash
# Installs and starts a Docker engine on a Debian machine, for the image builds
# (`cargo xtask bootstrap`, `cargo xtask build`) and the container tests, plus
# debootstrap for making base images where no image registry is reachable.
# Meant to run as root; idempotent (an engine that already answers is left alone).
#
# Debian's docker.io is engine and CLI 20.10 at /usr/bin/docker. The xtask
# commands use that CLI with the legacy builder; a newer /usr/local/bin/docker
# without buildx, if present, fails with BuildKit.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
DOCKER=/usr/bin/docker
LOG=/var/log/dockerd.log

log() { echo "install-docker: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root"
    exit 1
fi

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# iptables: dockerd sets up NAT for the bridge network; ca-certificates: pulls
# over TLS when a registry is reachable; tar: docker import of debootstrapped trees.
wanted=(docker.io debootstrap ca-certificates iptables tar)
missing=()
for pkg in "${wanted[@]}"; do
    pkg_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    # Keep the packages' postinst from trying to start services (no init system in CI
    # containers); dockerd is started below. Only if no policy is in place already.
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 0755 "$policy"
        added_policy=1
    fi
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
    if [ "$added_policy" = 1 ]; then
        rm -f "$policy"
    fi
else
    log "packages present: ${wanted[*]}"
fi

if "$DOCKER" info >/dev/null 2>&1; then
    log "engine already running"
else
    log "starting dockerd (log: $LOG)"
    # Detached from this shell so it outlives the script.
    nohup setsid dockerd >>"$LOG" 2>&1 </dev/null &
    for i in $(seq 1 60); do
        if "$DOCKER" info >/dev/null 2>&1; then
            break
        fi
        if [ "$i" -eq 60 ]; then
            log "dockerd did not answer within 60 s; last lines of $LOG:"
            tail -n 30 "$LOG" >&2 || :
            exit 1
        fi
        sleep 1
    done
fi

log "engine $("$DOCKER" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
