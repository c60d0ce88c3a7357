#!/usr/bin/env bash
# Target 3: fairness. 10,000 clients, closed loop, think 0, point selects,
# through a funnel with 8 backend connections (so the backlog is never
# empty). stats.json is sampled every 2 s during the run; the queue_wait
# histogram of the last 10 s is read from the samples taken while all
# clients were logged in and the backlog was deep (saturation).
# Output: $OUT/fair-stats.jsonl, $OUT/fair-loadtest.{txt,json}, $OUT/fair-latency.txt
. "$(dirname "$0")/common.sh"
CLIENTS=${CLIENTS:-10000}
SECS=${SECS:-20}
start_funnel 8
trap 'stop_funnel' EXIT
: >"$OUT/fair-stats.jsonl"
"$LT" -t "$VIA" -u app -p app_pw -D app -c "$CLIENTS" -d "$SECS" --warmup 5 --mix point=100 \
    --json "$OUT/fair-loadtest.json" >"$OUT/fair-loadtest.txt" 2>&1 &
LTPID=$!
while kill -0 "$LTPID" 2>/dev/null; do
    stats_json >>"$OUT/fair-stats.jsonl" && echo >>"$OUT/fair-stats.jsonl"
    sleep 2
done
wait "$LTPID" || true
cat "$OUT/fair-loadtest.txt"
admin "SHOW LATENCY" | tee "$OUT/fair-latency.txt"
python3 - "$OUT/fair-stats.jsonl" "$CLIENTS" <<'PY'
import json, sys
n = int(sys.argv[2])
snaps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t0 = snaps[0]['taken_at_unix_ms']
print("  t_s  clients backlog  qw10s_count  p50_us  p90_us  p99_us  p99.9_us  p99/p50")
sat = []
for s in snaps:
    p = s['pools'][0]
    q = p['latency']['queue_wait']['last_10s']
    ratio = q['p99_us'] / q['p50_us'] if q.get('p50_us') else float('nan')
    print(f"{(s['taken_at_unix_ms']-t0)/1000:5.0f} {p['clients']['connected']:8} {p['backlog']['depth']:7} "
          f"{q['count']:12} {q.get('p50_us',0):7} {q.get('p90_us',0):7} {q.get('p99_us',0):7} {q.get('p999_us',0):9} {ratio:8.3f}")
    if p['clients']['connected'] == n and p['backlog']['depth'] > 1000:
        sat.append((s, ratio))
# saturated samples whose whole 10 s window was at saturation: the 5th
# saturated sample onwards (10 s of 2 s samples)
full = sat[5:]
if full:
    r = sorted(x[1] for x in full)
    print(f"saturated full-window samples: {len(full)}; p99/p50 min {r[0]:.3f} median {r[len(r)//2]:.3f} max {r[-1]:.3f}")
PY
