#!/usr/bin/env bash
# Build, test, verify and push the runner images: a thin wrapper over `cargo xtask`.
#
#   ./build-test-verify-push.sh [cell…]     cells from images/matrix.toml (default: all buildable)
#   REGISTRY=ghcr.io/acme TAG_PREFIX=v1- ./build-test-verify-push.sh postgres-17
#   STEPS=push REGISTRY=ghcr.io/acme ./build-test-verify-push.sh postgres-17
#
# STEPS selects steps (space- or comma-separated, default "bootstrap build test push"); they run
# in that order whatever order STEPS names them in. STEPS=push pushes images already built and
# tested, STEPS="build test" stops before pushing.
#
# The push step tags each cell's image as <version>, <client tools' full version> and
# <version>-<runner version>-<commit> (e.g. 17, 17.12, 17-0.1.0-aaf95ba; an image built from a
# tree with uncommitted changes gets -dirty-<image id> after the commit) and prints the digest.
# Without REGISTRY the push step is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")"

steps=" ${STEPS:-bootstrap build test push} "
steps=${steps//,/ }
for step in $steps; do
    case $step in
        bootstrap | build | test | push) ;;
        *)
            echo "build-test-verify-push.sh: unknown step '$step' in STEPS (bootstrap, build, test, push)" >&2
            exit 2
            ;;
    esac
done
selected() { [[ " $steps " == *" $1 "* ]]; }

if selected bootstrap; then
    cargo xtask bootstrap      # base and server images, made locally when they cannot be pulled
fi
if selected build; then
    cargo xtask build "$@"     # binaries and runner images
fi
if selected test; then
    cargo xtask test "$@"      # verify: real servers, the real image, backup -> restore -> compare
fi
if selected push; then
    cargo xtask push "$@"      # to $REGISTRY
fi
