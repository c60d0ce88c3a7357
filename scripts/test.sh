#!/usr/bin/env bash
# Runs funnel's whole test suite: `bash scripts/test.sh [cargo test args...]`.
#
# The integration tests start their own private MariaDB servers (see
# tests/common/); nothing needs to be running beforehand. This script first
# makes sure the tools the tests use are installed, installing the missing
# ones when it can (root, or password-less sudo):
#   Debian: mariadb-server mariadb-client php-cli php-mysql sysbench nodejs npm
#           adduser systemd
#           (+ pkg-config default-libmysqlclient-dev gcc python3-dev python3-pip
#            only if the mysqlclient Python module must be built)
#   pip:    PyMySQL mysql-connector-python mysqlclient PyNaCl
# Each check is cheap, so on a ready machine this adds well under a second.
# FUNNEL_SKIP_INSTALL=1 skips the checks.
#
# Then runs `cargo test --workspace --all-targets` (or `cargo test "$@"` if arguments are
# given) and exits with its status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }
die() {
    printf '[test.sh] ERROR: %s\n' "$*" >&2
    exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
fi
can_install() { [ "$(id -u)" -eq 0 ] || [ "${#SUDO[@]}" -gt 0 ]; }

# command -v, also looking in sbin dirs (not in a normal user's PATH).
have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

POLICY_RC_D=/usr/sbin/policy-rc.d
REMOVE_POLICY=0
cleanup() {
    if [ "$REMOVE_POLICY" = 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY_RC_D" || true
    fi
}
trap cleanup EXIT

apt_install() {
    [ "$#" -gt 0 ] || return 0
    if ! can_install; then
        die "missing Debian packages: $*. Install them with:
    sudo apt-get install -y $*
or run this script as root."
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages ($*) and no apt-get on this machine; install the equivalents by hand."
    export DEBIAN_FRONTEND=noninteractive
    # Fresh machines/containers often have empty package lists: update only then.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null ||
        ! apt-cache show "$@" >/dev/null 2>&1; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -q || die "apt-get update failed"
    fi
    # The tests run their own servers: keep the package from starting (and
    # enabling at boot in containers) a system-wide mariadb service.
    if [ ! -e "$POLICY_RC_D" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY_RC_D" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY_RC_D"
        REMOVE_POLICY=1
    fi
    log "apt-get install -y --no-install-recommends $*"
    if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@"; then
        log "apt-get install failed; retrying after apt-get update"
        "${SUDO[@]}" apt-get update -q || die "apt-get update failed"
        "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@" ||
            die "apt-get install $* failed"
    fi
    cleanup
    REMOVE_POLICY=0
}

py_has() { python3 -c "import $1" >/dev/null 2>&1; }

install_deps() {
    local apt=() py=()

    # MariaDB server (mariadbd + mariadb-install-db) and CLI client.
    if [ -z "${FUNNEL_MARIADBD:-}" ] && ! { have mariadbd && have mariadb-install-db; }; then
        apt+=(mariadb-server)
    fi
    have mariadb || have mysql || apt+=(mariadb-client)
    # Other clients the end-to-end tests drive.
    have php || apt+=(php-cli)
    # Java's Connector/J (tests/tls.rs runs it with the JDK's single-file launcher).
    [ -f /usr/share/java/mariadb-java-client.jar ] || apt+=(libmariadb-java)
    have java || apt+=(default-jre-headless)
    if ! have php || ! php -m 2>/dev/null | grep -qix mysqli ||
        ! php -m 2>/dev/null | grep -qix pdo_mysql; then
        apt+=(php-mysql)
    fi
    have sysbench || apt+=(sysbench)
    # tests/systemd.rs installs the Debian package (adduser for its postinst)
    # and checks its unit with systemd-analyze (the systemd package, which
    # brings deb-systemd-helper along).
    have adduser || apt+=(adduser)
    { have systemd-analyze && have deb-systemd-helper; } || apt+=(systemd)
    # Node's mysql2 and mariadb packages (tests/mariadb_ext.rs installs them
    # with npm into a cache directory).
    have npm || apt+=(nodejs npm)

    have python3 || apt+=(python3)
    if have python3; then
        py_has pymysql || py+=(PyMySQL)
        py_has mysql.connector || py+=(mysql-connector-python)
        py_has MySQLdb || py+=(mysqlclient)
        # PyMySQL's client_ed25519 (tests/relay_login.rs).
        py_has nacl || py+=(PyNaCl)
    else
        py=(PyMySQL mysql-connector-python mysqlclient PyNaCl)
    fi
    if [ "${#py[@]}" -gt 0 ]; then
        python3 -m pip --version >/dev/null 2>&1 || apt+=(python3-pip)
    fi
    if [[ " ${py[*]} " == *" mysqlclient "* ]]; then
        # mysqlclient has no Linux wheels: it is compiled against libmariadb.
        have pkg-config || apt+=(pkg-config)
        if ! pkg-config --exists mysqlclient 2>/dev/null && ! pkg-config --exists libmariadb 2>/dev/null; then
            apt+=(default-libmysqlclient-dev)
        fi
        have cc || have gcc || apt+=(gcc)
        if ! have python3 || ! python3 -c 'import sysconfig, os, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
            apt+=(python3-dev)
        fi
    fi

    if [ "${#apt[@]}" -gt 0 ]; then
        log "installing Debian packages: ${apt[*]}"
        apt_install "${apt[@]}"
    fi

    if [ "${#py[@]}" -gt 0 ]; then
        log "installing Python packages with pip: ${py[*]}"
        local pip_args=(--disable-pip-version-check --no-input --progress-bar off)
        # As root, or into an externally managed (PEP 668) system Python:
        # these are test-only client libraries, install them anyway.
        export PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1
        if [ "$(id -u)" -ne 0 ] && ! python3 -c 'import sysconfig, os, sys
sys.exit(not os.access(sysconfig.get_paths()["purelib"], os.W_OK))'; then
            pip_args+=(--user)
        fi
        python3 -m pip install "${pip_args[@]}" "${py[@]}" ||
            die "pip install ${py[*]} failed"
        for m in pymysql mysql.connector MySQLdb nacl; do
            py_has "$m" || die "Python module $m still not importable after pip install"
        done
    fi

    if [ "${#apt[@]}" -eq 0 ] && [ "${#py[@]}" -eq 0 ]; then
        log "test dependencies present"
    fi
}

if [ "${FUNNEL_SKIP_INSTALL:-0}" = 1 ]; then
    log "FUNNEL_SKIP_INSTALL=1: not checking test dependencies"
else
    install_deps
fi

command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust: https://rustup.rs)"

whole_suite=0
if [ "$#" -gt 0 ]; then
    set -- test "$@"
else
    whole_suite=1
    set -- test --workspace --all-targets
fi
log "cargo $*"
# Not exec: the EXIT trap must still be able to run.
status=0
cargo "$@" || status=$?
if [ "$status" -eq 0 ] && [ "$whole_suite" = 1 ]; then
    # The randomized twin tests again with pipelined backends (README,
    # "Pipelining"): every answer compared with a direct connection's.
    # (The whole suite passes with it; run it all so when pipelining
    # changes: FUNNEL_TEST_BACKEND="pipeline_depth = 4" cargo test --tests.)
    log "the twin tests with FUNNEL_TEST_BACKEND=\"pipeline_depth = 4\""
    FUNNEL_TEST_BACKEND="pipeline_depth = 4" cargo test \
        --test e2e_session_random --test e2e_clients --test pages || status=$?
fi
if [ "$status" -eq 0 ] && [ "$whole_suite" = 1 ]; then
    # The transparency, session, kill, admin and restart tests again with
    # two event loops (README, "Several event loops"): clients on both,
    # small pools' clients moved at login. (The whole suite passes with
    # it; run it all so when the loops change:
    # FUNNEL_TEST_FUNNEL="threads = 2" cargo test --tests.)
    log "transparency and admin tests with FUNNEL_TEST_FUNNEL=\"threads = 2\""
    FUNNEL_TEST_FUNNEL="threads = 2" cargo test \
        --test e2e_funnel --test e2e_clients --test e2e_session_random \
        --test e2e_session_extras --test isolation --test kill_processlist \
        --test kill_race --test restart --test tls --test admin \
        --test caching_sha2_login --test mariadb_ext --test no_schema || status=$?
fi
if [ "$status" -ne 0 ]; then
    log "cargo test FAILED (exit $status)"
fi
exit "$status"
