#!/usr/bin/env bash
# A private MariaDB server for running funnel locally, kept entirely in DIR.
#
#   scripts/mariadb-local.sh start  DIR [PORT]   set up (first time) and start;
#                                                prints the TCP port on stdout
#   scripts/mariadb-local.sh stop   DIR          stop it (SIGTERM, then SIGKILL)
#   scripts/mariadb-local.sh status DIR          exit 0 if running (prints port)
#
# e.g.  PORT=$(scripts/mariadb-local.sh start .run/mariadb)
#
# The server listens on 127.0.0.1:PORT (default: the port DIR was last started
# with, else $MARIADB_PORT, else 3316) and on the socket DIR/mysqld.sock, with
# datadir DIR/data and error log DIR/error.log. It has database `app` and user
# `app` / `app_pw` (mysql_native_password, from localhost and 127.0.0.1) with
# ALL on app.*. The OS user running this script is the server's admin, via
# unix-socket auth: mariadb --no-defaults -S DIR/mysqld.sock -u "$(id -un)".
# Both commands are idempotent. When MariaDB is not installed and we are root,
# it is installed with apt-get.
set -euo pipefail

log() { printf '[mariadb-local] %s\n' "$*" >&2; }
die() {
    printf '[mariadb-local] ERROR: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

find_bin() { # first of the given names found in PATH or the sbin dirs
    local n d
    for n in "$@"; do
        if command -v "$n" >/dev/null 2>&1; then
            command -v "$n"
            return 0
        fi
        for d in /usr/sbin /usr/local/sbin; do
            if [ -x "$d/$n" ]; then
                echo "$d/$n"
                return 0
            fi
        done
    done
    return 1
}

ensure_mariadb() {
    if find_bin mariadbd mysqld >/dev/null && find_bin mariadb-install-db mysql_install_db >/dev/null &&
        find_bin mariadb mysql >/dev/null; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] ||
        die "MariaDB is not installed. Run: sudo apt-get install -y mariadb-server mariadb-client"
    command -v apt-get >/dev/null 2>&1 ||
        die "MariaDB is not installed and there is no apt-get; install mariadb-server by hand."
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show mariadb-server >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -q || die "apt-get update failed"
    fi
    # Do not let the package start a system-wide server: we run our own.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created=1
    fi
    log "apt-get install -y --no-install-recommends mariadb-server mariadb-client"
    local rc=0
    apt-get install -y -q --no-install-recommends mariadb-server mariadb-client >&2 || rc=$?
    [ "$created" = 1 ] && rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get install mariadb-server mariadb-client failed"
}

# pid of the server running on DIR, or nothing.
server_pid() {
    local pid
    pid=$(cat "$DIR/mysqld.pid" 2>/dev/null) || return 0
    [ -n "$pid" ] || return 0
    # Guard against a recycled pid: it must be a mariadbd using our datadir.
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "--datadir=$DIR/data"; then
        echo "$pid"
    fi
}

admin_user() { id -un; }

client() {
    "$CLIENT" --no-defaults --socket="$DIR/mysqld.sock" --user="$(admin_user)" "$@"
}

cmd_start() {
    ensure_mariadb
    MARIADBD=$(find_bin mariadbd mysqld)
    INSTALL_DB=$(find_bin mariadb-install-db mysql_install_db)
    CLIENT=$(find_bin mariadb mysql)

    local pid port
    pid=$(server_pid)
    if [ -n "$pid" ]; then
        port=$(cat "$DIR/port")
        if [ -n "${PORT_ARG:-}" ] && [ "$PORT_ARG" != "$port" ]; then
            log "already running on port $port (pid $pid); stop it first to change the port"
        else
            log "already running on port $port (pid $pid)"
        fi
        echo "$port"
        return 0
    fi
    port=${PORT_ARG:-$(cat "$DIR/port" 2>/dev/null || echo "${MARIADB_PORT:-3316}")}
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"

    local sock="$DIR/mysqld.sock"
    [ "${#sock}" -lt 100 ] || die "socket path too long for a unix socket: $sock (use a shorter DIR)"

    local user_args=()
    [ "$(id -u)" -eq 0 ] && user_args=(--user=root)

    if [ ! -d "$DIR/data/mysql" ]; then
        log "initializing $DIR/data with $INSTALL_DB"
        rm -rf "$DIR/data.new"
        "$INSTALL_DB" --no-defaults --datadir="$DIR/data.new" "${user_args[@]}" \
            --auth-root-authentication-method=socket --auth-root-socket-user="$(admin_user)" \
            --skip-test-db --innodb-log-file-size=16M --innodb-use-native-aio=0 \
            >"$DIR/install.log" 2>&1 || {
            cat "$DIR/install.log" >&2
            die "mariadb-install-db failed"
        }
        mv "$DIR/data.new" "$DIR/data"
    fi
    mkdir -p "$DIR/tmp"

    log "starting $MARIADBD on 127.0.0.1:$port, socket $sock"
    # setsid: a daemon of its own, not killed with this shell's process group.
    setsid "$MARIADBD" --no-defaults --datadir="$DIR/data" --port="$port" --socket="$sock" \
        --bind-address=127.0.0.1 --pid-file="$DIR/mysqld.pid" --log-error="$DIR/error.log" \
        --tmpdir="$DIR/tmp" "${user_args[@]}" --skip-name-resolve --skip-log-bin \
        --innodb-buffer-pool-size=128M --innodb-log-file-size=16M --innodb-use-native-aio=0 \
        --max-connections=2000 --max-allowed-packet=64M --max-connect-errors=1000000000 \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        </dev/null >>"$DIR/mysqld.out" 2>&1 &
    local spawned=$!
    echo "$port" >"$DIR/port"

    local i
    for ((i = 0; i < 600; i++)); do
        if client -e 'SELECT 1' >/dev/null 2>&1; then
            break
        fi
        if ! kill -0 "$spawned" 2>/dev/null; then
            tail -n 30 "$DIR/error.log" >&2 || true
            die "mariadbd exited while starting (see $DIR/error.log above)"
        fi
        sleep 0.1
    done
    if ((i >= 600)); then
        tail -n 30 "$DIR/error.log" >&2 || true
        die "mariadbd did not accept connections within 60 s"
    fi

    client <<'SQL' || die "creating database/user app failed"
CREATE DATABASE IF NOT EXISTS app;
CREATE USER IF NOT EXISTS 'app'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('app_pw');
CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('app_pw');
GRANT ALL PRIVILEGES ON app.* TO 'app'@'localhost';
GRANT ALL PRIVILEGES ON app.* TO 'app'@'127.0.0.1';
SQL
    log "ready: mysql://app:app_pw@127.0.0.1:$port/app (pid $(server_pid))"
    echo "$port"
}

cmd_stop() {
    local pid i
    pid=$(server_pid)
    if [ -z "$pid" ]; then
        log "not running"
        return 0
    fi
    log "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
        log "still running after 60 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/mysqld.pid"
    log "stopped"
}

cmd_status() {
    local pid
    pid=$(server_pid)
    if [ -n "$pid" ]; then
        log "running on port $(cat "$DIR/port") (pid $pid)"
        cat "$DIR/port"
    else
        log "not running"
        exit 3
    fi
}

[ "$#" -ge 2 ] || usage
ACTION=$1
if [ "$ACTION" = start ]; then
    mkdir -p "$2"
elif [ ! -d "$2" ]; then
    log "not running (no $2)"
    [ "$ACTION" = status ] && exit 3
    exit 0
fi
DIR=$(cd "$2" && pwd -P)
PORT_ARG=${3:-}

case "$ACTION" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*) usage ;;
esac
