#!/usr/bin/env bash
# Shared settings and helpers for the funnel benchmarks (sourced by the others).
# Everything lives under /tmp so that it never touches a working tree:
#   worktree  $WT   (a detached checkout of /work/main HEAD, built separately)
#   binaries  $BIN  (CARGO_TARGET_DIR=/tmp/perf-target)
#   MariaDB   $MDB  (scripts/mariadb-local.sh, TCP port $MYPORT, socket $MDB/mysqld.sock)
#   results   $OUT  (logs, JSON, funnel configs)
set -euo pipefail
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WT=${WT:-/tmp/perf-wt}
BIN=${BIN:-/tmp/perf-target/release}
FUNNEL=$BIN/funnel
LT=$BIN/loadtest
MDB=${MDB:-/tmp/perf-mdb}
MYPORT=${MYPORT:-3420}
MYSOCK=$MDB/mysqld.sock
OUT=${OUT:-/tmp/perf-out}
FPORT=${FPORT:-3421}     # funnel client port
APORT=${APORT:-3422}     # funnel admin port
SPORT=${SPORT:-3423}     # funnel stats (HTTP) port
DIRECT=127.0.0.1:$MYPORT
VIA=127.0.0.1:$FPORT
mkdir -p "$OUT"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

myroot() { mariadb --no-defaults -S "$MYSOCK" -u "$(id -un)" "$@"; }
admin() { mariadb --no-defaults -h127.0.0.1 -P"$APORT" -uadmin -px --table -e "$*"; }
stats_json() { curl -s "http://127.0.0.1:$SPORT/stats.json"; }

# start_funnel CONNECTIONS [BACKEND_ADDRESS] [extra [pool] lines...]
# Listens on $FPORT (clients), $APORT (admin), $SPORT (stats); set those
# before the call to run several funnels. Writes $OUT/funnel-$FPORT.conf,
# starts the funnel in the background (under $FUNNEL_WRAPPER if set), waits
# until it answers; FUNNEL_PID is set. Log in $OUT/funnel.log.
start_funnel() {
    local conns=$1 backend=${2:-$DIRECT}
    shift 2 || shift $#
    local conf=$OUT/funnel-$FPORT.conf
    {
        printf '[funnel]\nlisten = 127.0.0.1:%s\nmax_client_connections = 20000\nlog_level = warn\n' "$FPORT"
        printf 'handshake_timeout_ms = 30000\n'
        # FUNNEL_LINES: extra [funnel] lines (e.g. "threads = 2"), one per line.
        [ -z "${FUNNEL_LINES:-}" ] || printf '%s\n' "$FUNNEL_LINES"
        printf '[backend]\naddress = %s\n' "$backend"
        # BACKEND_LINES: extra [backend] lines (e.g. "max_concurrency = 2", "pipeline_depth = 4").
        [ -z "${BACKEND_LINES:-}" ] || printf '%s\n' "$BACKEND_LINES"
        printf '[pool]\nconnections = %s\nbacklog_size = 20000\nqueue_timeout_ms = 30000\n' "$conns"
        local l
        for l in "$@"; do printf '%s\n' "$l"; done
        printf '[user app]\npassword = app_pw\n'
        printf '[admin]\nlisten = 127.0.0.1:%s\nuser = admin\npassword = x\n' "$APORT"
        printf '[stats]\nlisten = 127.0.0.1:%s\n' "$SPORT"
    } >"$conf"
    ${FUNNEL_WRAPPER:-} "$FUNNEL" -c "$conf" >>"$OUT/funnel.log" 2>&1 &
    FUNNEL_PID=$!
    local i
    sleep 0.2
    kill -0 "$FUNNEL_PID" 2>/dev/null || { tail -3 "$OUT/funnel.log" >&2; return 1; }
    for ((i = 0; i < 1200; i++)); do
        if mariadb --no-defaults -h127.0.0.1 -P"$FPORT" -uapp -papp_pw app -e 'SELECT 1' >/dev/null 2>&1; then
            kill -0 "$FUNNEL_PID" 2>/dev/null || { tail -3 "$OUT/funnel.log" >&2; return 1; }
            log "funnel pid $FUNNEL_PID up on $FPORT: connections=$conns backend=$backend"
            return 0
        fi
        kill -0 "$FUNNEL_PID" 2>/dev/null || { tail "$OUT/funnel.log"; return 1; }
        sleep 0.1
    done
    log "funnel did not come up"; return 1
}

# stop_funnel [PID]: SIGTERM (graceful), SIGKILL after 15 s. Default $FUNNEL_PID.
stop_funnel() {
    local pid=${1:-${FUNNEL_PID:-}}
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# cpu_ticks PID: utime+stime in clock ticks (fields 14, 15 of /proc/PID/stat)
cpu_ticks() { awk '{sub(/.*\) /,""); print $12+$13}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
