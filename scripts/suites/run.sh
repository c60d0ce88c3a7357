#!/usr/bin/env bash
# Comparison run of client libraries' own test suites: each suite runs once
# against MariaDB directly and once through the funnel; a test that passes
# directly and fails through the funnel (also when re-run alone) is a
# transparency regression of ours.
#
#   bash scripts/suites/run.sh [--report-only] [--release] [--keep] [SUITE...]
#
# SUITE: pymysql, mysql2 (default: both). The suites are the unmodified
# upstream archives in ../shared/suites/ (see its README; override with
# FUNNEL_SUITES_DIR); they are unpacked into a scratch directory under /tmp
# and their dependencies installed with pip (into a venv) and npm ci.
#
# Steps: start a private MariaDB with scripts/mariadb-local.sh (scratch
# datadir, free port), create what the suites' own CI creates (PyMySQL's
# ci/docker-entrypoint-initdb.d/*.sql and ci/docker.json, mysql2's database
# `test` and the users its tests log in as), build the funnel (debug; --release
# for a release build) and start it in front of that MariaDB with
# [pool] connections = 2 and one [user] per user the suites log in as; run each
# suite directly, then through the funnel (the suites' databases are dropped
# and recreated before each run); re-run each test that passed directly and
# failed through the funnel once alone through the funnel; print a summary.
#
# Exit status: 1 when a regression remains after its re-run (0 with
# --report-only, which only prints them), 2 when the run itself broke
# (setup failed, a suite did not run).
#
# Time: about 6-7 minutes on a 2-core machine with the funnel already built
# (PyMySQL 1, mysql2 5-6: its own runner, 227 test files, each in its own
# Node process); up to 10 while other builds share the cores. Each suite
# run is limited to FUNNEL_SUITES_TIMEOUT seconds (default 600).
# FUNNEL_SUITES_CACHE (default /tmp/funnel-suites-cache) keeps the Python
# venv between runs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
HERE=$ROOT/scripts/suites

REPORT_ONLY=0
PROFILE=debug
KEEP=0
SUITES=()
for arg in "$@"; do
    case "$arg" in
    --report-only) REPORT_ONLY=1 ;;
    --release) PROFILE=release ;;
    --keep) KEEP=1 ;;
    pymysql | mysql2) SUITES+=("$arg") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown argument: $arg (see --help)" >&2
        exit 2
        ;;
    esac
done
[ "${#SUITES[@]}" -gt 0 ] || SUITES=(pymysql mysql2)

SUITES_DIR=${FUNNEL_SUITES_DIR:-$ROOT/../shared/suites}
PYMYSQL_TGZ=$SUITES_DIR/PyMySQL-0305ab3.tar.gz
MYSQL2_TGZ=$SUITES_DIR/node-mysql2-928c3c5.tar.gz
SUITE_TIMEOUT=${FUNNEL_SUITES_TIMEOUT:-600}
CACHE=${FUNNEL_SUITES_CACHE:-/tmp/funnel-suites-cache}

T0=$(date +%s)
log() { printf '[suites %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() {
    printf '[suites] ERROR: %s\n' "$*" >&2
    exit 2
}

for tgz in "$PYMYSQL_TGZ" "$MYSQL2_TGZ"; do
    [ -f "$tgz" ] || die "missing $tgz (the suites archives, see ../shared/suites/README.md; FUNNEL_SUITES_DIR overrides)"
done
# Node.js for mysql2 (its CI uses Node 18 to 24) and python3-venv for PyMySQL's
# dependencies: installed with apt-get when missing and we can (root or
# password-less sudo), as scripts/test.sh does for its tools.
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [[ " ${SUITES[*]} " == *" mysql2 "* ]] && ! command -v npm >/dev/null; then
    need_apt+=(nodejs npm)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
    if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }; then
        log "apt-get install -y ${need_apt[*]}"
        export DEBIAN_FRONTEND=noninteractive
        "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${need_apt[@]}" >&2 ||
            { "${SUDO[@]}" apt-get update -q >&2 && "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${need_apt[@]}" >&2; } ||
            die "apt-get install ${need_apt[*]} failed"
    else
        die "missing: ${need_apt[*]} (install them, e.g. sudo apt-get install -y ${need_apt[*]})"
    fi
fi

# Short path: MariaDB's and the funnel's unix sockets live in it.
SCRATCH=$(mktemp -d /tmp/fsuites.XXXXXX)
RESULTS=$SCRATCH/results
mkdir -p "$RESULTS"
FUNNEL_PID=
cleanup() {
    set +e
    if [ -n "$FUNNEL_PID" ] && kill -0 "$FUNNEL_PID" 2>/dev/null; then
        kill -TERM "$FUNNEL_PID"
        wait "$FUNNEL_PID" 2>/dev/null
    fi
    bash "$ROOT/scripts/mariadb-local.sh" stop "$SCRATCH/mariadb" >/dev/null 2>&1
    if [ "$KEEP" = 1 ]; then
        log "kept $SCRATCH (logs, results, suites)"
    else
        rm -rf "$SCRATCH"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- unpack the suites, install their dependencies ---------------------------
log "unpacking suites into $SCRATCH"
tar -xzf "$PYMYSQL_TGZ" -C "$SCRATCH"
tar -xzf "$MYSQL2_TGZ" -C "$SCRATCH"
PYMYSQL=$SCRATCH/PyMySQL-0305ab3
MYSQL2=$SCRATCH/node-mysql2-928c3c5

VENV=$CACHE/venv-$(sha1sum "$PYMYSQL/requirements-dev.txt" | cut -c1-12)
if [[ " ${SUITES[*]} " == *" pymysql "* ]] && [ ! -x "$VENV/bin/pytest" ]; then
    log "pip install -r requirements-dev.txt into $VENV"
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-input -r "$PYMYSQL/requirements-dev.txt" >&2 ||
        die "pip install failed"
fi
if [[ " ${SUITES[*]} " == *" mysql2 "* ]]; then
    log "npm ci (mysql2)"
    (cd "$MYSQL2" && npm ci --no-audit --no-fund --loglevel=error >"$SCRATCH/npm-ci.log" 2>&1) || {
        tail -n 30 "$SCRATCH/npm-ci.log" >&2
        die "npm ci failed"
    }
fi

# --- MariaDB ------------------------------------------------------------------
MPORT=$(free_port)
log "starting MariaDB (scripts/mariadb-local.sh) on port $MPORT"
bash "$ROOT/scripts/mariadb-local.sh" start "$SCRATCH/mariadb" "$MPORT" >/dev/null 2>"$SCRATCH/mariadb-local.log" || {
    cat "$SCRATCH/mariadb-local.log" >&2
    die "MariaDB did not start"
}
CLIENT=$(command -v mariadb || command -v mysql)
admin_sql() { "$CLIENT" --no-defaults --socket="$SCRATCH/mariadb/mysqld.sock" --user="$(id -un)" "$@"; }

# What the suites' own CI sets up:
# - PyMySQL (.github/workflows/test.yaml): SET GLOBAL local_infile=on, then
#   ci/docker-entrypoint-initdb.d/{init,mysql,mariadb}.sql as root with
#   --comments, and ci/docker.json as pymysql/tests/databases.json (root with
#   an empty password on 127.0.0.1, test2/'some password').
# - mysql2 (.github/workflows/ci-linux.yml): a server with an empty root
#   password and MYSQL_DATABASE=test; its tests create changeuser1/2 and
#   pooluser1 (created here beforehand, so the funnel's pools can log in).
# Both log in as root over TCP: here root@127.0.0.1 (the datadir's
# root@localhost is the OS user's unix-socket admin).
admin_sql <<'SQL' || die "setting up MariaDB users failed"
SET GLOBAL local_infile = ON;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'changeuser1'@'%' IDENTIFIED BY 'changeuser1pass';
CREATE USER IF NOT EXISTS 'changeuser2'@'%' IDENTIFIED BY 'changeuser2pass';
CREATE USER IF NOT EXISTS 'pooluser1'@'%' IDENTIFIED BY 'pooluser1pass';
CREATE USER IF NOT EXISTS 'issue17user'@'%' IDENTIFIED BY '1234';
SQL
for f in init mysql mariadb; do
    admin_sql --comments <"$PYMYSQL/ci/docker-entrypoint-initdb.d/$f.sql" ||
        die "PyMySQL's ci/docker-entrypoint-initdb.d/$f.sql failed"
done
# Global variables as set up, so that each run starts from them: a test that
# fails before restoring what it SET GLOBAL (mysql2's
# max_prepared_stmt_count=10 tests) must not make later tests fail.
admin_sql -N -e 'SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES' \
    >"$SCRATCH/globals.tsv" || die "reading MariaDB's global variables failed"
restore_globals() {
    admin_sql -N -e 'SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES' |
        python3 -c '
import sys
# (values as the client prints them in batch mode: already backslash-escaped)
def read(lines):
    return dict(l.rstrip("\n").split("\t", 1) for l in lines if "\t" in l)
saved, now = read(open(sys.argv[1])), read(sys.stdin)
for name, value in sorted(saved.items()):
    if now.get(name, value) != value:
        literal = value if value.lstrip("-").isdigit() else "\x27" + value.replace("\x27", "\x27\x27") + "\x27"
        print(f"SET GLOBAL {name} = {literal};")
' "$SCRATCH/globals.tsv" | admin_sql --force 2>/dev/null || true
}
reset_databases() { # fresh suite databases and the initial globals before each run
    restore_globals
    admin_sql <<'SQL'
DROP DATABASE IF EXISTS test1;
DROP DATABASE IF EXISTS test2;
DROP DATABASE IF EXISTS test;
CREATE DATABASE test1 DEFAULT CHARACTER SET utf8mb4;
CREATE DATABASE test2 DEFAULT CHARACTER SET utf8mb4;
CREATE DATABASE test;
SQL
}

# --- the funnel ---------------------------------------------------------------
log "cargo build ($PROFILE)"
build=(cargo build --bin funnel)
[ "$PROFILE" = release ] && build+=(--release)
"${build[@]}" >"$SCRATCH/cargo-build.log" 2>&1 || {
    tail -n 40 "$SCRATCH/cargo-build.log" >&2
    die "cargo build failed"
}
FPORT=$(free_port)
FSOCK=$SCRATCH/funnel.sock
# run.sh's configuration with the suites' users; connections = 2 so that
# clients really share backends.
cat >"$SCRATCH/funnel.conf" <<CONF
# Written by scripts/suites/run.sh
[funnel]
listen = 127.0.0.1:$FPORT
unix_socket = $FSOCK
log_level = info
# PyMySQL's CI runs with local_infile on, and its tests use it.
allow_local_infile = true
# Accounts the suites create themselves (PyMySQL's testAuthEd25519's
# pymysql_ed25519, ...) log in through mysqld.
unlisted_users = relay

[backend]
address = 127.0.0.1:$MPORT

[pool]
connections = 2

[user root]
password = ""

[user test2]
password = "some password"

[user changeuser1]
password = changeuser1pass

[user changeuser2]
password = changeuser2pass

[user pooluser1]
password = pooluser1pass

[user issue17user]
password = 1234
CONF
log "starting the funnel on 127.0.0.1:$FPORT (log: funnel.log)"
"$ROOT/target/$PROFILE/funnel" --config "$SCRATCH/funnel.conf" >"$SCRATCH/funnel.log" 2>&1 &
FUNNEL_PID=$!
for ((i = 0; i < 100; i++)); do
    if "$CLIENT" --no-defaults -h127.0.0.1 -P"$FPORT" -uroot -e 'SELECT 1' >/dev/null 2>&1; then
        break
    fi
    kill -0 "$FUNNEL_PID" 2>/dev/null || {
        cat "$SCRATCH/funnel.log" >&2
        die "the funnel exited"
    }
    sleep 0.1
done
((i < 100)) || {
    tail -n 20 "$SCRATCH/funnel.log" >&2
    die "the funnel does not answer on 127.0.0.1:$FPORT"
}

# --- the suites ---------------------------------------------------------------
# port_of MODE, socket_of MODE
port_of() { if [ "$1" = direct ]; then echo "$MPORT"; else echo "$FPORT"; fi; }
socket_of() { if [ "$1" = direct ]; then echo "$SCRATCH/mariadb/mysqld.sock"; else echo "$FSOCK"; fi; }

pymysql_config() { # MODE: ci/docker.json with our port and sockets
    python3 - "$PYMYSQL/ci/docker.json" "$(port_of "$1")" "$(socket_of "$1")" >"$PYMYSQL/pymysql/tests/databases.json" <<'PY'
import json, sys
dbs = json.load(open(sys.argv[1]))
for db in dbs:
    db["port"] = int(sys.argv[2])
    if "unix_socket" in db:
        db["unix_socket"] = sys.argv[3]
json.dump(dbs, sys.stdout, indent=1)
PY
}

# run_pymysql MODE OUT_PREFIX [NODEID]: the suite (CI: pytest -v pymysql) or one test
run_pymysql() {
    local mode=$1 out=$2
    shift 2
    pymysql_config "$mode"
    local targets=("$@")
    [ "${#targets[@]}" -gt 0 ] || targets=(pymysql)
    (cd "$PYMYSQL" && timeout -k 10 "$SUITE_TIMEOUT" "$VENV/bin/pytest" -v -p no:cacheprovider \
        --junitxml="$out.xml" "${targets[@]}") >"$out.log" 2>&1 || true
    [ -s "$out.xml" ] || return 1
    python3 "$HERE/report.py" junit "$out.xml" "$PYMYSQL" >"$out.tsv"
}

# Poku (the suite's runner) for one test file: the suite's reporter and timeout.
cat >"$SCRATCH/poku-one.config.js" <<'JS'
module.exports = { reporter: 'compact', timeout: 60000 };
JS

# run_mysql2 MODE OUT_PREFIX [FILE]: the suite (CI: npm test) or one test file
run_mysql2() {
    local mode=$1 out=$2
    shift 2
    local cmd=(npm test)
    # (poku reads --config=PATH relative to the working directory)
    [ "$#" -gt 0 ] && cmd=(npx poku --config=../poku-one.config.js "$@")
    (cd "$MYSQL2" && CI=1 MYSQL_HOST=127.0.0.1 MYSQL_PORT="$(port_of "$mode")" MYSQL_USER=root \
        MYSQL_PASSWORD= MYSQL_DATABASE=test MYSQL_USE_TLS=0 MYSQL_USE_COMPRESSION=0 \
        timeout -k 10 "$SUITE_TIMEOUT" "${cmd[@]}") >"$out.log" 2>&1 || true
    python3 "$HERE/report.py" poku "$out.log" >"$out.tsv"
    [ -s "$out.tsv" ]
}

message_of() { # SUITE OUT_PREFIX NAME
    if [ "$1" = pymysql ]; then
        python3 "$HERE/report.py" message junit "$2.xml" "$3" "$PYMYSQL"
    else
        python3 "$HERE/report.py" message poku "$2.log" "$3"
    fi
}

# A funnel that died would turn every later test into a "regression": stop
# counting and say so instead (exit 2).
funnel_alive() {
    kill -0 "$FUNNEL_PID" 2>/dev/null && return 0
    log "the funnel exited during the run; funnel.log ends with:"
    tail -n 30 "$SCRATCH/funnel.log" >&2
    return 1
}

declare -A SUITE_SECS
broken=0
for suite in "${SUITES[@]}"; do
    s0=$(date +%s)
    for mode in direct funnel; do
        reset_databases
        log "$suite: running $mode"
        if ! "run_$suite" "$mode" "$RESULTS/$suite.$mode"; then
            log "$suite: the $mode run produced no results; its output ends with:"
            tail -n 20 "$RESULTS/$suite.$mode.log" >&2
            broken=1
        fi
        funnel_alive || broken=1
    done
    : >"$RESULTS/$suite.regressions"
    : >"$RESULTS/$suite.flaky"
    mapfile -t candidates < <(python3 "$HERE/report.py" candidates "$RESULTS/$suite.direct.tsv" "$RESULTS/$suite.funnel.tsv")
    [ "${#candidates[@]}" -eq 0 ] || log "$suite: ${#candidates[@]} failed through the funnel only; re-running each alone"
    [ "$broken" = 0 ] || candidates=()
    n=0
    for name in "${candidates[@]}"; do
        n=$((n + 1))
        one=$RESULTS/$suite.rerun.$n
        reset_databases
        "run_$suite" funnel "$one" "$name" || true
        if [ "$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' "$one.tsv" 2>/dev/null)" = pass ]; then
            echo "$name" >>"$RESULTS/$suite.flaky"
        else
            echo "$name" >>"$RESULTS/$suite.regressions"
            {
                echo "--- $suite: $name"
                # The failure alone is the clearer message; fall back to the full run's.
                msg=$(message_of "$suite" "$one" "$name")
                [ -n "$msg" ] || msg=$(message_of "$suite" "$RESULTS/$suite.funnel" "$name")
                printf '%s\n' "${msg:-(no failure message found; see $one.log)}" | sed 's/^/    /'
            } >>"$RESULTS/messages.txt"
        fi
    done
    SUITE_SECS[$suite]=$(($(date +%s) - s0))
done

echo
echo "=== client library suites: direct vs through the funnel ==="
status=0
python3 "$HERE/report.py" summary "$RESULTS" || status=1
if [ -s "$RESULTS/messages.txt" ]; then
    echo
    echo "=== first lines of each regression's failure (re-run alone) ==="
    cat "$RESULTS/messages.txt"
fi
echo
for suite in "${SUITES[@]}"; do
    echo "time: $suite ${SUITE_SECS[$suite]:-?} s (both runs and re-runs)"
done
echo "time: total $(($(date +%s) - T0)) s"
[ "$KEEP" = 1 ] || echo "(--keep keeps the logs and per-test results)"

if grep -q 'panicked' "$SCRATCH/funnel.log"; then
    echo
    echo "=== the funnel panicked (funnel.log) ==="
    grep -A5 'panicked' "$SCRATCH/funnel.log" | head -n 30
    broken=1
fi
if [ "$broken" = 1 ]; then
    echo "a suite did not run completely, or the funnel failed: see the output above" >&2
    exit 2
fi
if [ "$status" -ne 0 ] && [ "$REPORT_ONLY" = 1 ]; then
    echo "(--report-only: regressions reported, not failing)"
    exit 0
fi
exit "$status"
