#!/usr/bin/env bash
# Target 7: connection churn, the PHP pattern: connect, 3 point selects,
# COM_QUIT, reconnect; 8 concurrent clients, closed loop, think 0.
#  a) direct mysqld (TCP) vs funnel (connections = 8, backend over TCP)
#  b) funnel with the backend over the unix socket vs the same over TCP
#     (two funnels running side by side)
#  c) for reference, direct over the unix socket vs direct over TCP
# Output: $OUT/churn-{a,b,c}.{txt,json}
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
start_funnel 8 "$DIRECT"; PT=$FUNNEL_PID
FPORT=3451 APORT=3452 SPORT=3453 start_funnel 8 "$MYSOCK"; PU=$FUNNEL_PID
trap 'stop_funnel $PT; stop_funnel $PU' EXIT
W=(-u app -p app_pw -D app -c 8 -d "$SECS" --warmup 2 --rounds "$ROUNDS" --mode page --page-queries 3 --mix point=100)
run() { # tag A labelA B labelB
    log "churn $1: $3 vs $5, load $(loadavg)"
    "$LT" --compare "$2" "$4" --label-a "$3" --label-b "$5" "${W[@]}" --json "$OUT/churn-$1.json" 2>&1 |
        tee "$OUT/churn-$1.txt" | grep -E 'round|pages|throughput|latency p|connect|errors|generator'
    python3 - "$OUT/churn-$1.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
a, b = j["results"]
pa = [x / 3 for x in a["round_qps"]]; pb = [x / 3 for x in b["round_qps"]]
med = lambda x: sorted(x)[len(x) // 2]
print(f"pages/s per round {a['label']}: {[round(x) for x in pa]}  {b['label']}: {[round(x) for x in pb]}  "
      f"median ratio B/A {med(pb)/med(pa):.3f}; per-round B/A {[round(y/x, 3) for x, y in zip(pa, pb)]}")
PY
}
run a "$DIRECT" direct "$VIA" funnel-tcp
run b "$VIA" funnel-tcp 127.0.0.1:3451 funnel-unix
run c "$DIRECT" direct-tcp "$MYSOCK" direct-unix
