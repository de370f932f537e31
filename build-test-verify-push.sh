#!/usr/bin/env bash
# Build, test, verify and push the runner images: a thin wrapper over `cargo xtask`.
#
#   ./build-test-verify-push.sh [cell…]     cells from images/matrix.toml (default: all buildable)
#   REGISTRY=ghcr.io/acme TAG_PREFIX=v1- ./build-test-verify-push.sh postgres-17
#
# Without REGISTRY the push step is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")"

cargo xtask bootstrap          # base and server images, made locally when they cannot be pulled
cargo xtask build "$@"         # binaries and runner images
cargo xtask test "$@"          # verify: real servers, the real image, backup -> restore -> compare
cargo xtask push "$@"          # to $REGISTRY
