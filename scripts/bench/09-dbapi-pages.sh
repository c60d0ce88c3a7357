#!/usr/bin/env bash
# The Python DB-API page: PyMySQL with autocommit off (its default), so the
# first select opens a transaction that the page never ends: connect,
# 3 point selects by primary key on sbtest1, close. 8 processes, closed
# loop, think 0. Direct mysqld vs the funnel (connections = 8), rounds
# alternating in one run (the order flips each round); with BEFORE=<path
# to an older funnel binary>, that funnel runs too, on ports 3431-3433
# (FPORT_B, APORT_B, SPORT_B), so before and after are measured in the
# same run.
# For each funnel: pages/s, ratio to direct (per round and of the medians),
# and per page the deltas of backend_connects, backend_resets and
# pin_rollbacks from /stats.json (a binary without pin_rollbacks shows 0);
# for every target, the CPU mysqld and the funnel spent per page, and the
# statements (`Questions`) and connections mysqld saw per page.
# The clients pass ssl_disabled=True: this PyMySQL (1.2.4 as pip names it)
# otherwise builds a TLS context for every connection (TLS "preferred"),
# ~20 ms of CPU loading the system's CA certificates, even towards a server
# without TLS (neither this mysqld nor the funnel offers it): 8 processes
# would then measure that, ~100 pages/s either way.
# Knobs: ROUNDS (5), SECS (10), PROCS (8), CONNS (8), BEFORE.
# Output: $OUT/dbapi-pages.{txt,json}
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
PROCS=${PROCS:-8}
CONNS=${CONNS:-8}
python3 -c 'import pymysql' 2>/dev/null || { log "PyMySQL is not installed (pip install pymysql)"; exit 1; }
start_funnel "$CONNS" "$DIRECT"; PA=$FUNNEL_PID
PB=
trap 'stop_funnel $PA; [ -z "$PB" ] || stop_funnel $PB' EXIT
if [ -n "${BEFORE:-}" ]; then
    FUNNEL=$BEFORE FPORT=${FPORT_B:-3431} APORT=${APORT_B:-3432} SPORT=${SPORT_B:-3433} \
        start_funnel "$CONNS" "$DIRECT"
    PB=$FUNNEL_PID
fi
MYPID=$(cat "$MDB/mysqld.pid")
TARGETS="direct:$MYPORT:0:0 funnel:$FPORT:$SPORT:$PA"
[ -z "$PB" ] || TARGETS="$TARGETS funnel-before:${FPORT_B:-3431}:${SPORT_B:-3433}:$PB"
log "DB-API pages: $PROCS processes, $ROUNDS rounds of $SECS s, load $(loadavg)"
python3 - "$ROUNDS" "$SECS" "$PROCS" "$OUT/dbapi-pages.json" "$MYPID" $TARGETS <<'PY' | tee "$OUT/dbapi-pages.txt"
import json, multiprocessing as mp, os, random, sys, time, urllib.request
import pymysql

rounds, secs, procs, out = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
mysqld = int(sys.argv[5])
direct_port = int(sys.argv[6].split(":")[1])
targets = []
for t in sys.argv[6:]:
    label, port, stats, pid = t.split(":")
    targets.append((label, int(port), int(stats), int(pid)))
HZ = os.sysconf("SC_CLK_TCK")

def cpu_ms(pid):  # utime + stime of a process, in ms
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / HZ

def worker(port, secs, q):
    end = time.time() + secs
    pages = errors = 0
    while time.time() < end:
        try:
            c = pymysql.connect(host="127.0.0.1", port=port, user="app",
                                password="app_pw", database="app", ssl_disabled=True)
            cur = c.cursor()
            for _ in range(3):
                cur.execute("SELECT c FROM sbtest1 WHERE id = %s", (random.randint(1, 100000),))
                cur.fetchall()
            c.close()
            pages += 1
        except pymysql.MySQLError:
            errors += 1
    q.put((pages, errors))

def counters(stats):
    if not stats:
        return {}
    with urllib.request.urlopen(f"http://127.0.0.1:{stats}/stats.json?detail=0") as r:
        return json.load(r)["counters"]

def mysqld_status():  # statements and connections mysqld has seen
    c = pymysql.connect(host="127.0.0.1", port=direct_port, user="app", password="app_pw",
                        ssl_disabled=True, autocommit=None)
    with c.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Connections')")
        got = {k: int(v) for k, v in cur.fetchall()}
    c.close()
    return got

def run(port, stats, pid, secs):
    before = counters(stats)
    status0 = mysqld_status()
    cpu0 = (cpu_ms(mysqld), cpu_ms(pid))
    q = mp.Queue()
    ps = [mp.Process(target=worker, args=(port, secs, q)) for _ in range(procs)]
    t0 = time.time()
    for p in ps:
        p.start()
    got = [q.get() for _ in ps]
    for p in ps:
        p.join()
    elapsed = time.time() - t0
    cpu1 = (cpu_ms(mysqld), cpu_ms(pid))
    status1 = mysqld_status()
    after = counters(stats)
    pages = sum(g[0] for g in got)
    delta = {k: after.get(k, 0) - before.get(k, 0)
             for k in ("backend_connects", "backend_resets", "pin_rollbacks")} if stats else {}
    n = max(pages, 1)
    return {"pages": pages, "errors": sum(g[1] for g in got), "secs": elapsed,
            "pages_per_s": pages / elapsed, "mysqld_ms_per_page": (cpu1[0] - cpu0[0]) / n,
            "funnel_ms_per_page": (cpu1[1] - cpu0[1]) / n,
            # mysqld_status's own connection: 1 connection, SET NAMES and SHOW.
            "mysqld_statements": status1["Questions"] - status0["Questions"] - 2,
            "mysqld_connections": status1["Connections"] - status0["Connections"] - 1, **delta}

for label, port, stats, pid in targets:     # warm-up, not counted
    run(port, stats, pid, 2)
results = {label: [] for label, _, _, _ in targets}
for r in range(rounds):
    order = targets if r % 2 == 0 else list(reversed(targets))
    for label, port, stats, pid in order:
        res = run(port, stats, pid, secs)
        results[label].append(res)
        extra = ""
        if stats:
            n = max(res["pages"], 1)
            extra = (f"; per page: backend connects {res['backend_connects'] / n:.4f},"
                     f" resets {res['backend_resets'] / n:.4f}, rollbacks {res['pin_rollbacks'] / n:.4f}")
        n = max(res["pages"], 1)
        print(f"round {r + 1} {label}: {res['pages']} pages in {res['secs']:.1f} s = "
              f"{res['pages_per_s']:.0f} pages/s, errors {res['errors']}; CPU ms per page: mysqld "
              f"{res['mysqld_ms_per_page']:.3f}, funnel {res['funnel_ms_per_page']:.3f}; per page "
              f"mysqld saw {res['mysqld_statements'] / n:.3f} statements, "
              f"{res['mysqld_connections'] / n:.4f} connections{extra}", flush=True)

med = lambda xs: sorted(xs)[len(xs) // 2]
direct = [x["pages_per_s"] for x in results["direct"]]
cpu = lambda rs, k: med([x[k] for x in rs])
def seen(rs):  # what mysqld saw per page, over all rounds
    pages = max(sum(x["pages"] for x in rs), 1)
    return (f"mysqld saw {sum(x['mysqld_statements'] for x in rs) / pages:.3f} statements and "
            f"{sum(x['mysqld_connections'] for x in rs) / pages:.4f} connections per page")
print(f"direct: median {med(direct):.0f} pages/s, rounds {[round(x) for x in direct]}; "
      f"CPU ms per page (medians): mysqld {cpu(results['direct'], 'mysqld_ms_per_page'):.3f}; "
      f"{seen(results['direct'])}")
for label, _, stats, _ in targets:
    if not stats:
        continue
    rs = results[label]
    pps = [x["pages_per_s"] for x in rs]
    pages = sum(x["pages"] for x in rs)
    per = lambda k: sum(x[k] for x in rs) / max(pages, 1)
    print(f"{label}: median {med(pps):.0f} pages/s, rounds {[round(x) for x in pps]}; "
          f"ratio to direct {med(pps) / med(direct):.2f}x (per round "
          f"{[round(b / a, 2) for a, b in zip(direct, pps)]}); {pages} pages: "
          f"backend connects {per('backend_connects'):.4f}, resets {per('backend_resets'):.4f}, "
          f"rollbacks {per('pin_rollbacks'):.4f} per page; CPU ms per page (medians): mysqld "
          f"{cpu(rs, 'mysqld_ms_per_page'):.3f}, funnel {cpu(rs, 'funnel_ms_per_page'):.3f}; "
          f"{seen(rs)}; errors {sum(x['errors'] for x in rs)}")
json.dump({"rounds": rounds, "secs": secs, "procs": procs, "results": results}, open(out, "w"), indent=1)
PY
