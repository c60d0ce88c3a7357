#!/usr/bin/env bash
# Issue "Query rules": a thundering herd. CLIENTS (2,000) PyMySQL clients,
# connected through the funnel beforehand, issue the same slow cacheable
# read at once (a join on sbtest1 taking a fraction of a second); a rule
# caches it for 1 ms, so what the herd tests is coalescing: reads identical
# to one in flight wait for its answer instead of running. Reported: how
# many times mysqld ran a SELECT meanwhile (Com_select delta: 1 expected),
# whether every client got the same, right answer (checked against one
# direct run), and how long the herd took. Needs the sysbench tables
# (00-setup.sh) and PyMySQL.
# Output: $OUT/herd.txt
. "$(dirname "$0")/common.sh"
CLIENTS=${CLIENTS:-2000}
SQL=${SQL:-"SELECT COUNT(*), SUM(a.k + b.k) FROM sbtest1 a JOIN sbtest1 b ON b.id < 1000 WHERE a.id < 40000"}
python3 -c 'import pymysql' 2>/dev/null || { log "PyMySQL is not installed"; exit 1; }
start_funnel 8 "$DIRECT" "[rule herd]" "pattern = ^SELECT COUNT" "cache_ttl_ms = 1"
trap 'stop_funnel' EXIT
com_select() { myroot -N -e "SHOW GLOBAL STATUS LIKE 'Com_select'" | awk '{print $2}'; }
EXPECTED=$(myroot -N app -e "$SQL" | tr '\t' ' ')
t0=$(date +%s.%N)
myroot -N app -e "$SQL" >/dev/null
t1=$(date +%s.%N)
log "one direct run: $EXPECTED in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", (b-a)*1000}') ms; herd of $CLIENTS"
before=$(com_select)
python3 - "$FPORT" "$CLIENTS" "$SQL" "$EXPECTED" <<'PY' | tee "$OUT/herd.txt"
import sys, threading, time, pymysql
port, n, sql, expected = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
conns = []
for i in range(n):
    conns.append(pymysql.connect(host="127.0.0.1", port=port, user="app", password="app_pw",
                                 database="app", autocommit=True, ssl_disabled=True))
barrier = threading.Barrier(n + 1)
answers, errors, done = [], [], []
def run(c):
    barrier.wait()
    try:
        cur = c.cursor(); cur.execute(sql); row = cur.fetchone()
        answers.append(" ".join(str(v) for v in row))
    except Exception as e:
        errors.append(repr(e))
    done.append(time.monotonic())
threads = [threading.Thread(target=run, args=(c,)) for c in conns]
for t in threads: t.start()
barrier.wait(); start = time.monotonic()
for t in threads: t.join()
wrong = [a for a in answers if a != expected]
print(f"herd: {n} clients, {len(answers)} answers, {len(wrong)} wrong, {len(errors)} errors, "
      f"last answer after {max(done) - start:.3f} s")
if errors: print("first error:", errors[0])
for c in conns: c.close()
PY
after=$(com_select)
echo "mysqld ran $((after - before)) SELECT(s) during the herd (Com_select delta; the funnel's own statements included)" | tee -a "$OUT/herd.txt"
admin "SHOW RULES" | tee -a "$OUT/herd.txt"
