#!/usr/bin/env bash
# Installs what the end-to-end tests (tests/, package `harness`) need on a
# Debian bookworm machine: the PostgreSQL server and client from Debian,
# moto's S3 server from PyPI, and s3s-fs's S3 server from crates.io. Meant to
# run as root; idempotent (whatever is already there and working is left alone).
#
# The tests start their own throwaway clusters with initdb/pg_ctl; they never
# use the package's default cluster, which this script keeps stopped.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

log() { echo "install-test-deps: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -E)
    else
        log "warning: not root and no sudo; installing may fail"
    fi
fi

# --- PostgreSQL --------------------------------------------------------------

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in postgresql postgresql-client; do
    pkg_installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    # Keep the postinst from starting the default cluster (invoke-rc.d obeys
    # policy-rc.d). Only if no policy is in place already.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        trap '"${SUDO[@]}" rm -f "$policy"' EXIT
    fi
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # If a default cluster got started anyway (e.g. by systemd), stop it:
    # the tests don't use it.
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters --no-header 2>/dev/null | while read -r ver name _port status _rest; do
            if [ "$status" = online ]; then
                log "stopping default cluster $ver/$name"
                "${SUDO[@]}" pg_ctlcluster "$ver" "$name" stop || true
            fi
        done
    fi
fi

initdb_found=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$initdb_found" ]; then
    log "error: no /usr/lib/postgresql/<major>/bin/initdb after installing"
    exit 1
fi
log "postgres: $("$(dirname "$initdb_found")/pg_ctl" --version)"

# --- moto's S3 server --------------------------------------------------------

# The command the harness runs: moto_server on PATH, else python3 -m moto.server.
moto_cmd() {
    if command -v moto_server >/dev/null 2>&1; then
        echo moto_server
    else
        echo python3 -m moto.server
    fi
}

# Start the server on a free port and check that it answers HTTP.
moto_works() {
    local cmd
    read -r -a cmd <<<"$(moto_cmd)"
    python3 - "${cmd[@]}" <<'PY'
import socket, subprocess, sys, tempfile, time, urllib.error, urllib.request

s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
with tempfile.TemporaryFile() as out:
    try:
        p = subprocess.Popen(sys.argv[1:] + ["-H", "127.0.0.1", "-p", str(port)],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    except OSError as e:
        sys.exit(f"cannot run {sys.argv[1:]}: {e}")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if p.poll() is not None:
                out.seek(0)
                sys.exit(out.read().decode(errors="replace")[-2000:])
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                sys.exit(0)
            except urllib.error.HTTPError:
                sys.exit(0)  # it answered
            except OSError:
                time.sleep(0.2)
        sys.exit("moto did not answer within 60s")
    finally:
        p.kill()
        p.wait()
PY
}

# 5.2.5 or later: 5.2.1 answers CompleteMultipartUpload with the wrong XML root element,
# which aws-sdk-s3 rightly rejects.
MOTO_VERSION=5.2.5
moto_version_ok() {
    python3 -c "import moto; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null
}

if moto_version_ok && moto_works 2>/dev/null; then
    log "moto: already working ($(moto_cmd))"
else
    if ! python3 -m pip --version >/dev/null 2>&1; then
        log "installing python3-pip"
        "${SUDO[@]}" apt-get update -qq
        "${SUDO[@]}" apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    log "installing moto[server] with pip"
    # Debian's own python3 is "externally managed" (PEP 668); a throwaway
    # test machine may install into it anyway.
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
        python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    # pyenv only makes a shim for a new console script on rehash.
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash || true
    fi
    hash -r
    if ! moto_works; then
        log "error: moto's server does not start ($(moto_cmd))"
        exit 1
    fi
    log "moto: installed ($(moto_cmd))"
fi

# --- s3s-fs: an S3 server over a directory ------------------------------------

# The storage conformance suite (tests/tests/storage_conformance.rs) runs against it as well as
# moto: it checks request signatures and stores objects as files. The binary is behind the
# crate's `binary` feature. 0.14.x builds with this toolchain (Rust 1.95); newer releases may
# need a newer one. Building it took 3m04s wall (3m21s user) on this 2-core machine while another
# cargo build shared it; it is skipped once the right version is on PATH or in ~/.cargo/bin.
S3S_FS_VERSION=0.14.1
s3s_fs_bin() {
    if command -v s3s-fs >/dev/null 2>&1; then
        command -v s3s-fs
    elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
    fi
}
s3s_fs_ok() {
    local bin
    bin=$(s3s_fs_bin)
    [ -n "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "s3s-fs $S3S_FS_VERSION"
}

if s3s_fs_ok; then
    log "s3s-fs: already installed ($(s3s_fs_bin))"
else
    log "installing s3s-fs $S3S_FS_VERSION with cargo (a few minutes)"
    cargo install --quiet --locked --features binary --version "$S3S_FS_VERSION" s3s-fs
    if ! s3s_fs_ok; then
        log "error: s3s-fs $S3S_FS_VERSION is not runnable after installing"
        exit 1
    fi
    log "s3s-fs: installed ($(s3s_fs_bin))"
fi

# --- age and zstd: the reference tools for encrypted backups -----------------

# The encryption scenario (tests/tests/scenarios.rs) makes its keys with `age-keygen` and reads
# a stored backup back with `age -d -i key | zstd -d`, as the README tells users to. Debian's
# `age` (1.1.1 on bookworm) ships both age binaries; `zstd` is usually there already.
missing=()
for cmd in age age-keygen zstd; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ "${#missing[@]}" -gt 0 ]; then
    pkgs=()
    for cmd in "${missing[@]}"; do
        case "$cmd" in
            age | age-keygen) pkg=age ;;
            *) pkg=$cmd ;;
        esac
        [[ " ${pkgs[*]} " == *" $pkg "* ]] || pkgs+=("$pkg")
    done
    log "installing ${pkgs[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    for cmd in age age-keygen zstd; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            log "error: $cmd is not on PATH after installing ${pkgs[*]}"
            exit 1
        fi
    done
fi
log "age: $(age --version), zstd: $(zstd --version | head -n 1)"

# --- Debian packages whose services the tests start themselves ---------------

# Installs packages without starting their services (invoke-rc.d obeys policy-rc.d); the tests
# run their own instances on free ports.
install_without_services() {
    local policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Stops and disables a service that systemd started anyway.
stop_service() {
    if [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now "$1.service" >/dev/null 2>&1 || true
    fi
}

# --- docker-registry: a local image registry ---------------------------------

# The push test (tests/tests/push.rs) runs its own `docker-registry serve <config>` on a free
# port of 127.0.0.1, pushes with `cargo xtask push` and pulls back. The package's own service
# (port 5000) is kept from starting, and stopped and disabled if systemd started it anyway.
if ! pkg_installed docker-registry; then
    log "installing docker-registry"
    install_without_services docker-registry
fi
stop_service docker-registry
if [ ! -x /usr/bin/docker-registry ]; then
    log "error: /usr/bin/docker-registry is missing after installing docker-registry"
    exit 1
fi
log "docker-registry: $(/usr/bin/docker-registry --version)"

# --- prometheus-pushgateway: where the runner pushes its metrics ---------------

# The metrics scenario (tests/tests/scenarios.rs) runs its own prometheus-pushgateway on a free
# port; the package's own service (port 9091) is kept from starting, or stopped.
if ! pkg_installed prometheus-pushgateway; then
    log "installing prometheus-pushgateway"
    install_without_services prometheus-pushgateway
fi
stop_service prometheus-pushgateway
if ! command -v prometheus-pushgateway >/dev/null 2>&1; then
    log "error: prometheus-pushgateway is missing after installing it"
    exit 1
fi
log "pushgateway: $(prometheus-pushgateway --version 2>&1 | head -n 1)"

# --- kubernetes-validate, promtool, kubectl: the deployment manifests' checks --

# tests/tests/deploy_manifests.rs validates deploy/ offline: kubernetes-validate (PyPI; it bundles
# the official Kubernetes schemas, 1.25 to 1.37 in this version), promtool (Debian's `prometheus`;
# only promtool is used, the package's server is kept from starting) and `kubectl kustomize`.
KUBERNETES_VALIDATE_VERSION=1.37.0
kubernetes_validate_ok() {
    python3 -m kubernetes_validate --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE_VERSION"
}
if kubernetes_validate_ok; then
    log "kubernetes-validate: already installed"
else
    if ! python3 -m pip --version >/dev/null 2>&1; then
        log "installing python3-pip"
        "${SUDO[@]}" apt-get update -qq
        "${SUDO[@]}" apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION with pip"
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
        python3 -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash || true
    fi
    hash -r
    if ! kubernetes_validate_ok; then
        log "error: kubernetes-validate $KUBERNETES_VALIDATE_VERSION is not importable after installing"
        exit 1
    fi
fi
log "kubernetes-validate: $(python3 -m kubernetes_validate --version)"

if ! command -v promtool >/dev/null 2>&1; then
    log "installing prometheus (for promtool)"
    install_without_services prometheus
    # Only promtool is needed.
    stop_service prometheus
    if ! command -v promtool >/dev/null 2>&1; then
        log "error: promtool is missing after installing prometheus"
        exit 1
    fi
fi
log "promtool: $(promtool --version 2>&1 | head -n 1)"

# The Google Cloud CLI's kubectl is usually there; otherwise Debian's. The components need
# kustomize 4 or later (kubectl 1.21): bookworm's kubectl 1.20 renders the bases only, and the
# test says so.
if ! command -v kubectl >/dev/null 2>&1; then
    log "installing kubernetes-client (kubectl)"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
log "kubectl: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
