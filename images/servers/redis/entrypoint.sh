#!/bin/sh
# Entrypoint of the Redis / Valkey stand-in image (images/servers/redis/Dockerfile), with the
# official `redis:<v>` and `valkey/valkey:<v>` images' interface:
#   - a first argument that is an option (`--port 7000`) or a config file (`*.conf`) runs the
#     server with those arguments;
#   - started as root for the server, it chowns the working directory (/data) to the server's
#     user and re-executes itself as that user (`docker run --user` skips this);
#   - umask 0077 unless one was chosen;
#   - the server in the foreground as PID 1 (`docker stop` reaches it), logging to stdout.
# Which server is installed decides the names: valkey-server (user valkey) or redis-server
# (user redis); in the Valkey image `redis-server` runs valkey-server, as its symlink does upstream.
set -e

if command -v valkey-server > /dev/null 2>&1; then
    SERVER=valkey-server USER_NAME=valkey
else
    SERVER=redis-server USER_NAME=redis
fi

# first arg is `-f` or `--some-option`, or `something.conf`
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- "$SERVER" "$@"
fi
if [ "$1" = redis-server ]; then
    shift
    set -- "$SERVER" "$@"
fi

if [ "$1" = "$SERVER" ]; then
    if [ "$(id -u)" = 0 ]; then
        find . \! -user "$USER_NAME" -exec chown "$USER_NAME" '{}' +
        exec setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --clear-groups -- "$0" "$@"
    fi
    if [ ! -w . ]; then
        echo >&2 "error: directory $(pwd) is not writable by the current user ($(id -u))"
        exit 1
    fi
    # Protected mode off, as the official images build their servers, unless the arguments or
    # the config file choose.
    protected=""
    for arg in "$@"; do
        case "$arg" in
            --protected-mode | --protected-mode=*) protected=given ;;
            *.conf) if [ -r "$arg" ] && grep -qiE '^[[:space:]]*protected-mode[[:space:]]' "$arg"; then protected=given; fi ;;
        esac
    done
    if [ -z "$protected" ]; then
        set -- "$@" --protected-mode no
    fi
fi

# set an appropriate umask (if one isn't set already)
if [ "$(umask)" = 0022 ]; then
    umask 0077
fi

if [ "$SERVER" = valkey-server ] && [ "$1" = valkey-server ]; then
    # shellcheck disable=SC2086 # word splitting is the point, as upstream
    exec "$@" ${VALKEY_EXTRA_FLAGS-}
fi
exec "$@"
