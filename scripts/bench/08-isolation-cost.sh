#!/usr/bin/env bash
# Issue "Isolation first": what the proven-or-dirty rule costs on two
# common workloads, as counted by the funnel itself.
#  a) the Python DB-API page: connect (autocommit off, the DB-API default),
#     3 point selects in the implicit transaction, close; 8 processes,
#     closed loop, direct vs funnel (connections = 8).
#  b) sysbench oltp_point_select, 16 threads, text protocol, funnel only.
# For each funnel run: pages or queries, and the deltas of backend_resets,
# dirty_backends, backend_connects and diagnostics_cleared from
# /stats.json, per second and per page/query.
# Output: $OUT/isolation-cost.txt
. "$(dirname "$0")/common.sh"
SECS=${SECS:-10}
start_funnel 8; PID=$FUNNEL_PID
trap 'stop_funnel $PID' EXIT
TXT=$OUT/isolation-cost.txt
: >"$TXT"

counters() { # prints: resets dirty connects cleared
    stats_json | python3 -c '
import json, sys
c = json.load(sys.stdin)["counters"]
print(c["backend_resets"], c["dirty_backends"], c["backend_connects"], c["diagnostics_cleared"])'
}

dbapi_pages() { # PORT -> pages in $SECS s
    python3 - "$1" "$SECS" <<'PY'
import multiprocessing as mp, sys, time, random
import pymysql
port, secs = int(sys.argv[1]), float(sys.argv[2])
def worker(q):
    end = time.time() + secs; pages = 0
    while time.time() < end:
        c = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app_pw", database="app")
        cur = c.cursor()
        for _ in range(3):
            cur.execute("SELECT c FROM sbtest1 WHERE id = %s", (random.randint(1, 100000),))
            cur.fetchall()
        c.close(); pages += 1
    q.put(pages)
q = mp.Queue(); ps = [mp.Process(target=worker, args=(q,)) for _ in range(8)]
[p.start() for p in ps]; total = sum(q.get() for _ in ps); [p.join() for p in ps]
print(total)
PY
}

report() { # label units before after
    local label=$1 units=$2
    read -r r0 d0 c0 x0 <<<"$3"
    read -r r1 d1 c1 x1 <<<"$4"
    python3 - "$label" "$units" "$SECS" $((r1 - r0)) $((d1 - d0)) $((c1 - c0)) $((x1 - x0)) <<'PY' | tee -a "$TXT"
import sys
label, units, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
r, d, c, x = map(int, sys.argv[4:])
per = lambda n: f"{n} ({n / secs:.1f}/s, {n / max(units, 1):.4f} per unit)"
print(f"{label}: {units} units in {secs:.0f} s; resets {per(r)}; dirty {per(d)}; backend connects {per(c)}; diagnostics cleared {per(x)}")
PY
}

log "a) DB-API pages, direct"
direct=$(dbapi_pages "$MYPORT")
echo "dbapi direct: $direct pages in $SECS s" | tee -a "$TXT"
log "a) DB-API pages, funnel"
before=$(counters)
via=$(dbapi_pages "$FPORT")
report "dbapi funnel (pages)" "$via" "$before" "$(counters)"
python3 -c "print(f'dbapi funnel/direct pages: {$via / max($direct, 1):.2f}x')" | tee -a "$TXT"

log "b) sysbench oltp_point_select, 16 threads, funnel"
before=$(counters)
q=$(sysbench oltp_point_select --mysql-host=127.0.0.1 --mysql-port="$FPORT" --mysql-user=app \
    --mysql-password=app_pw --mysql-db=app --tables=4 --table-size=100000 --threads=16 \
    --time="$SECS" --db-ps-mode=disable --report-interval=0 run 2>&1 | awk '/queries:/{print $2; exit}')
report "sysbench point_select funnel (queries)" "${q:-0}" "$before" "$(counters)"
