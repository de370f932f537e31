#!/usr/bin/env bash
# Entrypoint of the postgres stand-in image (images/servers/postgres/Dockerfile), with the official
# image's interface:
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (postgres),
#   POSTGRES_DB (= user), POSTGRES_HOST_AUTH_METHOD (scram-sha-256), POSTGRES_INITDB_ARGS,
#   POSTGRES_INITDB_WALDIR, the *_FILE variants, scripts in /docker-entrypoint-initdb.d, extra
#   arguments passed to postgres (`docker run IMAGE -c fsync=off`).
#
# Started as root: prepares the directories and re-executes itself as `postgres`. On an empty
# $PGDATA it runs initdb and creates POSTGRES_DB in single-user mode, so no temporary server runs
# and "database system is ready to accept connections" appears exactly once in the log: when the
# final server accepts TCP connections. Only when /docker-entrypoint-initdb.d holds scripts is a
# temporary socket-only server started for them; its log is shown without that line.
# Finally it exec's postgres in the foreground (PID 1, so `docker stop` reaches it).
set -Eeuo pipefail

log() { echo "entrypoint: $*" >&2; }

# file_env VAR [DEFAULT]: VAR, or the contents of the file named by VAR_FILE.
file_env() {
    local var="$1" fileVar="${1}_FILE" def="${2:-}"
    if [ -n "${!var:-}" ] && [ -n "${!fileVar:-}" ]; then
        log "error: both $var and $fileVar are set (but are exclusive)"
        exit 1
    fi
    local val="$def"
    if [ -n "${!var:-}" ]; then
        val="${!var}"
    elif [ -n "${!fileVar:-}" ]; then
        val="$(< "${!fileVar}")"
    fi
    export "$var"="$val"
    unset "$fileVar"
}

# Whether the arguments only ask postgres for information (no server start, no init).
want_help() {
    local arg
    for arg; do
        case "$arg" in
            -'?'|--help|--describe-config|-V|--version|-C) return 0 ;;
        esac
    done
    return 1
}

setup_env() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
    export POSTGRES_HOST_AUTH_METHOD
}

prepare_dirs_as_root() {
    mkdir -p "$PGDATA"
    chmod 00700 "$PGDATA" || :
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    mkdir -p /var/run/postgresql
    find /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 03775 /var/run/postgresql
    if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres:postgres '{}' +
        chmod 700 "$POSTGRES_INITDB_WALDIR"
    fi
}

verify_minimum_env() {
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        cat >&2 <<-'EOM'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

			       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
			       connections without a password. This is *not* recommended.
		EOM
        exit 1
    fi
    if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
        log "warning: POSTGRES_HOST_AUTH_METHOD=trust: every host connection is allowed without a password"
    fi
}

init_database_dir() {
    local locale_args=(--encoding=UTF8)
    if locale -a 2>/dev/null | grep -qixE 'C\.utf-?8'; then
        locale_args+=(--locale=C.UTF-8)
    fi
    local waldir_args=()
    if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
        waldir_args=(--waldir "$POSTGRES_INITDB_WALDIR")
    fi
    # Local (socket) connections and 127.0.0.1 inside the container are trusted, as in the
    # official image; host connections are added to pg_hba.conf below.
    local args=(--username="$POSTGRES_USER" "${locale_args[@]}" "${waldir_args[@]}")
    # shellcheck disable=SC2086
    if [ -n "$POSTGRES_PASSWORD" ]; then
        initdb "${args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
    else
        initdb "${args[@]}" $POSTGRES_INITDB_ARGS
    fi
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
}

# CREATE DATABASE in single-user mode: no server, no "ready to accept connections" line.
create_database() {
    if [ "$POSTGRES_DB" = postgres ]; then
        return
    fi
    local ident=${POSTGRES_DB//\"/\"\"}
    echo "CREATE DATABASE \"$ident\";" |
        postgres --single -D "$PGDATA" -c exit_on_error=true postgres >/dev/null
    log "created database $POSTGRES_DB"
}

run_init_scripts() {
    shopt -s nullglob
    local scripts=(/docker-entrypoint-initdb.d/*)
    shopt -u nullglob
    if [ "${#scripts[@]}" -eq 0 ]; then
        return
    fi
    local server_log
    server_log="$(mktemp /tmp/init-server.XXXXXX.log)"
    # A temporary server on the socket only; its log goes to a file so that its "ready" line
    # does not reach the container log (a harness waiting for it would connect too early).
    PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -l "$server_log" -w start ||
        { cat "$server_log" >&2; exit 1; }
    export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
    local psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc --dbname "$POSTGRES_DB")
    local f
    for f in "${scripts[@]}"; do
        case "$f" in
            *.sh)
                if [ -x "$f" ]; then
                    log "running $f"; "$f"
                else
                    log "sourcing $f"; # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql) log "running $f"; "${psql[@]}" -f "$f" ;;
            *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql[@]}" ;;
            *.sql.xz) log "running $f"; xzcat "$f" | "${psql[@]}" ;;
            *.sql.zst) log "running $f"; zstd -dc "$f" | "${psql[@]}" ;;
            *) log "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    grep -v 'database system is ready to accept connections' "$server_log" >&2 || :
    rm -f "$server_log"
    unset PGPASSWORD
}

main() {
    if [ "${1:0:1}" = '-' ]; then
        set -- postgres "$@"
    fi
    if [ "$1" = postgres ] && ! want_help "$@"; then
        setup_env
        if [ "$(id -u)" = 0 ]; then
            prepare_dirs_as_root
            export HOME=/var/lib/postgresql
            exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
        fi
        if [ ! -s "$PGDATA/PG_VERSION" ]; then
            verify_minimum_env
            init_database_dir
            create_database
            run_init_scripts
            log "PostgreSQL init process complete; starting the server"
        else
            log "PostgreSQL data directory appears to contain a database; skipping initialization"
        fi
    fi
    exec "$@"
}

main "$@"
