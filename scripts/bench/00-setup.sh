#!/usr/bin/env bash
# Build funnel + loadtest in a private worktree, start a private MariaDB,
# raise its limits, and create the sysbench tables (4 x 100,000 rows).
. "$(dirname "$0")/common.sh"
HEAD=$(git -C /work/main rev-parse HEAD)
if [ -d "$WT" ]; then git -C "$WT" checkout -q --detach "$HEAD"; else git -C /work/main worktree add -f "$WT" HEAD; fi
(cd "$WT" && CARGO_TARGET_DIR=$(dirname "$BIN") cargo build --release -p funnel -p loadtest)
bash "$WT/scripts/mariadb-local.sh" start "$MDB" "$MYPORT"
myroot -e "SET GLOBAL max_connections=12000, thread_cache_size=500"
myroot -e "SELECT VERSION(), @@max_connections, @@thread_cache_size, @@back_log, @@open_files_limit"
if ! myroot -N -e "SELECT COUNT(*) FROM app.sbtest4" 2>/dev/null | grep -qx 100000; then
    sysbench oltp_point_select --mysql-host=127.0.0.1 --mysql-port="$MYPORT" --mysql-user=app \
        --mysql-password=app_pw --mysql-db=app --tables=4 --table-size=100000 prepare
fi
{
    echo "nproc: $(nproc)"
    grep -m1 'model name' /proc/cpuinfo
    echo "kernel: $(uname -r)"
    echo "mariadb: $(myroot -N -e 'SELECT VERSION()')"
    echo "funnel commit: $HEAD"
    echo "sysbench: $(sysbench --version)"
    free -m | sed -n 2p
} | tee "$OUT/machine.txt"
