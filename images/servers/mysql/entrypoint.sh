#!/usr/bin/env bash
# Entrypoint of the MariaDB / MySQL stand-in image (images/servers/mysql/Dockerfile), with the
# official `mariadb:<v>` and `mysql:<v>` images' interface. Which server is installed decides the
# flavour: `mariadbd` (MariaDB) or `mysqld` (MySQL).
#   MYSQL_ROOT_PASSWORD, MYSQL_ALLOW_EMPTY_PASSWORD, MYSQL_RANDOM_ROOT_PASSWORD, MYSQL_ROOT_HOST (%),
#   MYSQL_DATABASE, MYSQL_USER + MYSQL_PASSWORD (ALL on that database only), MYSQL_INITDB_SKIP_TZINFO,
#   the *_FILE variants; MySQL also MYSQL_ONETIME_PASSWORD. MariaDB also accepts the MARIADB_*
#   names (MARIADB_ROOT_PASSWORD, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD, MARIADB_DATABASE, ...; they
#   win over MYSQL_*) and MARIADB_ROOT_PASSWORD_HASH / MARIADB_PASSWORD_HASH.
#   Scripts in /docker-entrypoint-initdb.d (*.sh, *.sql, *.sql.gz|xz|zst), extra arguments passed
#   to the server (`docker run IMAGE --max-connections=500`).
#
# Started as root: prepares the directories and re-executes itself as `mysql`. On an empty datadir
# it initialises the server without ever starting one that listens on TCP:
#   MySQL:   `mysqld --initialize-insecure --init-file=<setup.sql>`: the time zone tables, the root
#            password, root@'%', the database and the user are created by the bootstrap process,
#            which logs no "ready for connections".
#   MariaDB: `mariadb-install-db`, then a temporary server with --skip-networking (socket only)
#            for the same setup SQL; its log goes to a file and is shown afterwards without its
#            "ready for connections" line. (mariadb-install-db --extra-file runs in bootstrap mode,
#            without the grant tables: CREATE USER / GRANT are refused there.)
# A temporary socket-only server is also started (both flavours) when
# /docker-entrypoint-initdb.d holds scripts, its log shown the same way. So the official
# "ready for connections" line appears exactly once, from the final server, which listens on
# 3306 by then (MySQL's "X Plugin ready for connections" line comes from that server too, a
# millisecond earlier, 3306 already bound). Finally it exec's the server in the foreground (PID 1:
# `docker stop` reaches it).
set -Eeuo pipefail

note() { printf '%s [Note] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2; }
warn() { printf '%s [Warn] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2; }
die() {
    printf '%s [ERROR] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2
    exit 1
}

if command -v mariadbd > /dev/null 2>&1; then
    FLAVOR=mariadb SERVER=mariadbd CLIENT=mariadb TZINFO=mariadb-tzinfo-to-sql PRODUCT=MariaDB
elif command -v mysqld > /dev/null 2>&1; then
    FLAVOR=mysql SERVER=mysqld CLIENT=mysql TZINFO=mysql_tzinfo_to_sql PRODUCT=MySQL
else
    die "neither mariadbd nor mysqld is installed"
fi

# file_env VAR [DEFAULT]: VAR, or the contents of the file named by VAR_FILE.
file_env() {
    local var="$1" fileVar="${1}_FILE" def="${2:-}"
    if [ -n "${!var:-}" ] && [ -n "${!fileVar:-}" ]; then
        die "both $var and $fileVar are set (but are exclusive)"
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

# env_pair MYSQL_X [MARIADB_X] [DEFAULT]: MySQL reads MYSQL_X; MariaDB reads MARIADB_X, else
# MYSQL_X, and exports both with the same value (as the official image does).
env_pair() {
    local var="$1" maria="${2:-MARIADB_${1#MYSQL_}}" def="${3:-}"
    file_env "$var" "$def"
    if [ "$FLAVOR" = mariadb ]; then
        file_env "$maria" "${!var}"
        export "$var"="${!maria}"
    fi
}

setup_env() {
    env_pair MYSQL_ROOT_PASSWORD
    env_pair MYSQL_ALLOW_EMPTY_PASSWORD MARIADB_ALLOW_EMPTY_ROOT_PASSWORD
    env_pair MYSQL_RANDOM_ROOT_PASSWORD
    env_pair MYSQL_ROOT_HOST MARIADB_ROOT_HOST %
    env_pair MYSQL_DATABASE
    env_pair MYSQL_USER
    env_pair MYSQL_PASSWORD
    env_pair MYSQL_INITDB_SKIP_TZINFO
    if [ "$FLAVOR" = mariadb ]; then
        file_env MARIADB_ROOT_PASSWORD_HASH
        file_env MARIADB_PASSWORD_HASH
    else
        file_env MYSQL_ONETIME_PASSWORD
    fi
}

# Whether the arguments only ask the server for information (no start, no init).
want_help() {
    local arg
    for arg; do
        case "$arg" in
            -'?' | --help | --print-defaults | -V | --version) return 0 ;;
        esac
    done
    return 1
}

# load_config SERVER [ARGS...]: the effective options (defaults, config files, arguments) from
# `--verbose --help`, as the official images read them; fails when the configuration is invalid.
load_config() {
    local errors
    errors="$(mktemp)"
    if ! SERVER_HELP="$("$@" --verbose --help --log-bin-index="$(mktemp -u)" 2> "$errors")"; then
        die "$SERVER failed while checking its configuration: $* --verbose --help: $(cat "$errors")"
    fi
    rm -f "$errors"
    DATADIR="$(get_config datadir)"
    DATADIR="${DATADIR%/}"
    SOCKET="$(get_config socket)"
    if [ -z "$DATADIR" ] || [ -z "$SOCKET" ]; then
        die "cannot tell the datadir or socket of $SERVER"
    fi
}

# get_config NAME: one option's value from load_config's output.
get_config() {
    awk -v conf="$1" '$1 == conf && /^[^ \t]/ { sub(/^[^ \t]+[ \t]+/, ""); print; exit }' <<< "$SERVER_HELP"
}

prepare_dirs_as_root() {
    local dirs=("$DATADIR" "$(dirname "$SOCKET")") conf value
    for conf in pid-file secure-file-priv general-log-file slow-query-log-file; do
        value="$(get_config "$conf")"
        case "$value" in
            '' | NULL | '(No default value)') continue ;;
        esac
        if [ "$conf" = secure-file-priv ]; then
            dirs+=("$value")
        else
            dirs+=("$(dirname "$value")")
        fi
    done
    mkdir -p "${dirs[@]}"
    find "${dirs[@]}" -maxdepth 0 \! -user mysql -exec chown mysql:mysql '{}' +
    find "$DATADIR" \! -user mysql -exec chown --no-dereference mysql:mysql '{}' +
}

verify_minimum_env() {
    if [ -z "$MYSQL_ROOT_PASSWORD" ] && [ -z "$MYSQL_ALLOW_EMPTY_PASSWORD" ] &&
        [ -z "$MYSQL_RANDOM_ROOT_PASSWORD" ] && [ -z "${MARIADB_ROOT_PASSWORD_HASH:-}" ]; then
        if [ "$FLAVOR" = mariadb ]; then
            die "Database is uninitialized and password option is not specified: set one of MARIADB_ROOT_PASSWORD (MYSQL_ROOT_PASSWORD), MARIADB_ROOT_PASSWORD_HASH, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD, MARIADB_RANDOM_ROOT_PASSWORD"
        fi
        die "Database is uninitialized and password option is not specified: set one of MYSQL_ROOT_PASSWORD, MYSQL_ALLOW_EMPTY_PASSWORD, MYSQL_RANDOM_ROOT_PASSWORD"
    fi
    if [ "$MYSQL_USER" = root ]; then
        die "MYSQL_USER=root: MYSQL_USER and MYSQL_PASSWORD configure a regular user; the root password comes from MYSQL_ROOT_PASSWORD"
    fi
    if [ -n "$MYSQL_USER" ] && [ -z "$MYSQL_PASSWORD" ] && [ -z "${MARIADB_PASSWORD_HASH:-}" ]; then
        warn "MYSQL_USER specified, but missing MYSQL_PASSWORD; MYSQL_USER will not be created"
    elif [ -z "$MYSQL_USER" ] && [ -n "$MYSQL_PASSWORD" ]; then
        warn "MYSQL_PASSWORD specified, but missing MYSQL_USER; MYSQL_PASSWORD will be ignored"
    fi
}

random_root_password() {
    if [ -n "$MYSQL_RANDOM_ROOT_PASSWORD" ]; then
        MYSQL_ROOT_PASSWORD="$(head -c 24 /dev/urandom | base64 | tr -d '\n/+=')"
        export MYSQL_ROOT_PASSWORD
        if [ "$FLAVOR" = mariadb ]; then
            export MARIADB_ROOT_PASSWORD="$MYSQL_ROOT_PASSWORD"
        fi
        note "GENERATED ROOT PASSWORD: $MYSQL_ROOT_PASSWORD"
    fi
}

# A string literal's contents: \ and ' escaped (NO_BACKSLASH_ESCAPES is cleared in the setup).
sql_string() {
    local s="${1//\\/\\\\}"
    s="${s//$'\n'/\\n}"
    printf '%s' "${s//\'/\\\'}"
}

# An identifier's contents, for use between backticks.
sql_ident() { printf '%s' "${1//\`/\`\`}"; }

# The SQL that secures root and creates the database and the user, like the official images.
setup_sql() {
    local pw host identified
    pw="$(sql_string "$MYSQL_ROOT_PASSWORD")"
    host="$(sql_string "$MYSQL_ROOT_HOST")"
    identified="IDENTIFIED BY '$pw'"
    if [ -n "${MARIADB_ROOT_PASSWORD_HASH:-}" ]; then
        identified="IDENTIFIED BY PASSWORD '$(sql_string "$MARIADB_ROOT_PASSWORD_HASH")'"
    fi
    echo "SET autocommit = 1;"
    echo "SET @@SESSION.SQL_MODE = REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');"
    echo "SET @orig_sql_log_bin = @@SESSION.SQL_LOG_BIN;"
    echo "SET @@SESSION.SQL_LOG_BIN = 0;"
    if [ "$FLAVOR" = mariadb ]; then
        echo "DROP USER IF EXISTS root@'127.0.0.1', root@'::1';"
        # With a hash, root@localhost gets it after /docker-entrypoint-initdb.d (as upstream).
        if [ -z "${MARIADB_ROOT_PASSWORD_HASH:-}" ]; then
            echo "ALTER USER 'root'@'localhost' $identified;"
        fi
        if [ -n "$MYSQL_ROOT_HOST" ] && [ "$MYSQL_ROOT_HOST" != localhost ]; then
            echo "CREATE USER 'root'@'$host' $identified;"
            echo "GRANT ALL ON *.* TO 'root'@'$host' WITH GRANT OPTION;"
            echo "GRANT PROXY ON ''@'%' TO 'root'@'$host' WITH GRANT OPTION;"
        fi
    else
        echo "ALTER USER 'root'@'localhost' $identified;"
        echo "GRANT ALL ON *.* TO 'root'@'localhost' WITH GRANT OPTION;"
        echo "FLUSH PRIVILEGES;"
        if [ -n "$MYSQL_ROOT_HOST" ] && [ "$MYSQL_ROOT_HOST" != localhost ]; then
            echo "CREATE USER 'root'@'$host' $identified;"
            echo "GRANT ALL ON *.* TO 'root'@'$host' WITH GRANT OPTION;"
        fi
    fi
    echo "SET @@SESSION.SQL_LOG_BIN = @orig_sql_log_bin;"
    if [ -n "$MYSQL_DATABASE" ]; then
        echo "CREATE DATABASE IF NOT EXISTS \`$(sql_ident "$MYSQL_DATABASE")\`;"
    fi
    if [ -n "$MYSQL_USER" ] && { [ -n "$MYSQL_PASSWORD" ] || [ -n "${MARIADB_PASSWORD_HASH:-}" ]; }; then
        local user
        user="$(sql_string "$MYSQL_USER")"
        if [ -n "${MARIADB_PASSWORD_HASH:-}" ]; then
            echo "CREATE USER '$user'@'%' IDENTIFIED BY PASSWORD '$(sql_string "$MARIADB_PASSWORD_HASH")';"
        else
            echo "CREATE USER '$user'@'%' IDENTIFIED BY '$(sql_string "$MYSQL_PASSWORD")';"
        fi
        if [ -n "$MYSQL_DATABASE" ]; then
            # `_` escaped: the grant is for this database only, not a LIKE pattern (as upstream).
            local db
            db="$(sql_ident "$MYSQL_DATABASE")"
            echo "GRANT ALL ON \`${db//_/\\_}\`.* TO '$user'@'%';"
        fi
    fi
    if [ "$FLAVOR" = mysql ] && [ -n "$MYSQL_ONETIME_PASSWORD" ]; then
        echo "ALTER USER 'root'@'%' PASSWORD EXPIRE;"
    fi
}

# The time zone tables, as the official images load them (MYSQL_INITDB_SKIP_TZINFO skips).
tzinfo_sql() {
    if [ -n "$MYSQL_INITDB_SKIP_TZINFO" ] || [ ! -d /usr/share/zoneinfo ]; then
        return
    fi
    if [ "$FLAVOR" = mariadb ]; then
        "$TZINFO" --skip-write-binlog /usr/share/zoneinfo 2> /dev/null
    else
        # The sed: https://bugs.mysql.com/bug.php?id=20545, as upstream.
        "$TZINFO" /usr/share/zoneinfo 2> /dev/null |
            sed 's/Local time zone must be set--see zic manual page/FCTY/'
    fi
}

# Shows a log on stderr without the "ready for connections" lines of a server that listened on
# no TCP port (MariaDB prints its Version/port line on the next line).
show_log_without_ready() {
    grep -v -e 'ready for connections' -e "^Version: '.*port: " "$1" >&2 || :
}

# The client, as root over the socket: password from a defaults file (not the command line).
client() {
    local pw="${CLIENT_PASSWORD-}"
    # Option files: outer quotes stripped, \\ unescaped.
    "$CLIENT" --defaults-extra-file=<(printf '[client]\nuser=root\npassword="%s"\n' "${pw//\\/\\\\}") \
        --protocol=socket --socket="$SOCKET" "$@"
}

TEMP_PID=
TEMP_LOG=

# A temporary server on the socket only (--skip-networking): nothing can reach it over TCP, and its
# log goes to a file so that its "ready for connections" line never reaches the container log.
# CLIENT_PASSWORD: root@localhost's password at that point (empty before the setup SQL).
temp_server_start() {
    TEMP_LOG="$(mktemp /tmp/init-server.XXXXXX.log)"
    local extra=(--skip-networking --default-time-zone=SYSTEM --socket="$SOCKET")
    if [ "$FLAVOR" = mariadb ]; then
        extra+=(--wsrep-on=OFF --expire-logs-days=0 --skip-slave-start
            --loose-innodb-buffer-pool-load-at-startup=0)
    else
        extra+=(--loose-mysqlx=OFF)
    fi
    "$@" "${extra[@]}" > "$TEMP_LOG" 2>&1 &
    TEMP_PID=$!
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if client --database=mysql -e 'SELECT 1' > /dev/null 2>&1; then
            return
        fi
        if ! kill -0 "$TEMP_PID" 2> /dev/null; then
            cat "$TEMP_LOG" >&2
            die "the temporary server exited during startup"
        fi
        sleep 0.1
    done
    cat "$TEMP_LOG" >&2
    die "the temporary server did not answer on $SOCKET within 60 s"
}

temp_server_stop() {
    kill -TERM "$TEMP_PID"
    wait "$TEMP_PID" || die "the temporary server failed to shut down cleanly: $(cat "$TEMP_LOG")"
    show_log_without_ready "$TEMP_LOG"
    rm -f "$TEMP_LOG"
    TEMP_PID=
}

# SQL on stdin, as root over the socket, into MYSQL_DATABASE when set (like upstream's
# docker_process_sql, which sourced *.sh scripts may call).
docker_process_sql() {
    if [ -n "$MYSQL_DATABASE" ]; then
        set -- --database="$MYSQL_DATABASE" "$@"
    fi
    CLIENT_PASSWORD="$MYSQL_ROOT_PASSWORD" client --comments "$@"
}

run_init_scripts() {
    local f
    # shellcheck disable=SC2034 # for sourced scripts, as upstream
    mysql=(docker_process_sql)
    for f; do
        case "$f" in
            *.sh)
                if [ -x "$f" ]; then
                    note "running $f"
                    "$f"
                else
                    note "sourcing $f"
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql) note "running $f"; docker_process_sql < "$f" ;;
            *.sql.gz) note "running $f"; gunzip -c "$f" | docker_process_sql ;;
            *.sql.xz) note "running $f"; xzcat "$f" | docker_process_sql ;;
            *.sql.zst) note "running $f"; zstd -dc "$f" | docker_process_sql ;;
            *) warn "ignoring $f" ;;
        esac
    done
}

init_mysql() {
    local setup
    setup="$(mktemp /tmp/init-file.XXXXXX.sql)"
    { echo "USE mysql;"; tzinfo_sql; setup_sql; } > "$setup"
    note "initializing the database files (mysqld --initialize-insecure --init-file)"
    # The bootstrap process listens on nothing and logs no "ready" line; filtered all the same.
    if ! "$@" --initialize-insecure --default-time-zone=SYSTEM --init-file="$setup" 2>&1 |
        { grep -v 'ready for connections' || :; } >&2; then
        rm -f "$setup"
        die "mysqld --initialize-insecure failed"
    fi
    rm -f "$setup"
}

init_mariadb() {
    note "initializing the database files (mariadb-install-db)"
    # "Other options are passed to mariadbd" (those with whitespace cannot be, as upstream).
    local args=() arg
    for arg in "${@:2}"; do
        if [[ "$arg" =~ [[:space:]] ]]; then
            warn "not passing '$arg' to mariadb-install-db (it does not support whitespace)"
        else
            args+=("$arg")
        fi
    done
    if ! mariadb-install-db --datadir="$DATADIR" --rpm --auth-root-authentication-method=normal \
        "${args[@]}" \
        --cross-bootstrap --skip-test-db --old-mode=UTF8_IS_UTF8MB3 \
        --default-time-zone=SYSTEM --enforce-storage-engine= --skip-log-bin --expire-logs-days=0 \
        --loose-innodb-buffer-pool-load-at-startup=0 --loose-innodb-buffer-pool-dump-at-shutdown=0 \
        2>&1 | { grep -v 'ready for connections' || :; } >&2; then
        die "mariadb-install-db failed"
    fi
    note "setting up users and databases (temporary server, socket only)"
    CLIENT_PASSWORD='' temp_server_start "$@"
    { tzinfo_sql; setup_sql; } | CLIENT_PASSWORD='' client --database=mysql --binary-mode
}

main() {
    if [ "${1:0:1}" = '-' ]; then
        set -- "$SERVER" "$@"
    fi
    case "$1" in
        mysqld | mariadbd) set -- "$SERVER" "${@:2}" ;;
    esac
    if [ "$1" != "$SERVER" ] || want_help "$@"; then
        exec "$@"
    fi

    setup_env
    load_config "$@"
    if [ "$(id -u)" = 0 ]; then
        prepare_dirs_as_root
        export HOME=/var/lib/mysql
        exec setpriv --reuid=mysql --regid=mysql --init-groups "${BASH_SOURCE[0]}" "$@"
    fi

    if [ ! -d "$DATADIR/mysql" ]; then
        verify_minimum_env
        random_root_password
        # Fail before initialising when the scripts cannot be read (a half-made datadir would stay).
        ls /docker-entrypoint-initdb.d/ > /dev/null
        shopt -s nullglob
        local scripts=(/docker-entrypoint-initdb.d/*)
        shopt -u nullglob
        if [ "$FLAVOR" = mariadb ]; then
            init_mariadb "$@"
        else
            init_mysql "$@"
        fi
        if [ "${#scripts[@]}" -gt 0 ]; then
            if [ -z "$TEMP_PID" ]; then
                note "starting a temporary server (socket only) for /docker-entrypoint-initdb.d"
                CLIENT_PASSWORD="$MYSQL_ROOT_PASSWORD" temp_server_start "$@"
            fi
            run_init_scripts "${scripts[@]}"
        fi
        if [ -n "${MARIADB_ROOT_PASSWORD_HASH:-}" ]; then
            note "setting the root@localhost password hash"
            printf "SET @@SESSION.SQL_LOG_BIN = 0; ALTER USER 'root'@'localhost' IDENTIFIED BY PASSWORD '%s';\n" \
                "$(sql_string "$MARIADB_ROOT_PASSWORD_HASH")" | CLIENT_PASSWORD='' client
        fi
        if [ -n "$TEMP_PID" ]; then
            temp_server_stop
        fi
        note "$PRODUCT init process done; starting the server"
    else
        note "$PRODUCT data directory appears to contain a database; skipping initialization"
    fi
    exec "$@"
}

main "$@"
