#!/usr/bin/env bash
# Target 6: latency the funnel adds. One client, closed loop, think 0,
# direct vs funnel (connections = 8) in alternating rounds:
#  a) SELECT SLEEP(0) (loadtest's `sleep` kind with --sleep-ms 0: a SELECT
#     that touches no table, the closest loadtest has to SELECT 1);
#  b) the point select.
# Output: $OUT/lat1-{sleep0,point}.{txt,json}
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
if [ -z "${ANALYZE_ONLY:-}" ]; then
start_funnel 8
trap 'stop_funnel' EXIT
for w in sleep0 point; do
    case $w in
    sleep0) MIX=(--mix sleep=1 --sleep-ms 0) ;;
    point) MIX=(--mix point=100) ;;
    esac
    log "1 client, $w, load $(loadavg)"
    "$LT" --compare "$DIRECT" "$VIA" --label-a direct --label-b funnel -u app -p app_pw -D app -c 1 \
        -d "$SECS" --warmup 1 --rounds "$ROUNDS" "${MIX[@]}" --json "$OUT/lat1-$w.json" 2>&1 |
        tee "$OUT/lat1-$w.txt"
done
fi
# Per-round p50 difference (round r of funnel minus round r of direct, run
# back to back), and its median: robust to the machine changing speed
# between rounds, which the merged histograms are not.
python3 - "$OUT" <<'PY'
import json, sys, re
out = sys.argv[1]
for w in ("sleep0", "point"):
    txt = open(f"{out}/lat1-{w}.txt").read()
    r = {"direct": [], "funnel": []}
    for m in re.finditer(r"round (\d+)/\d+ (direct|funnel): (\d+) q/s, p50 ([\d.]+)", txt):
        r[m.group(2)].append(float(m.group(4)) * 1000)
    j = json.load(open(f"{out}/lat1-{w}.json"))
    a, b = j["results"][0]["latency_ms"], j["results"][1]["latency_ms"]
    med = lambda x: sorted(x)[len(x) // 2]
    d = [f - g for f, g in zip(r['funnel'], r['direct'])]
    print(f"{w}: merged p50 direct {a['p50']*1000:.0f} us, funnel {b['p50']*1000:.0f} us (+{1000*(b['p50']-a['p50']):.0f} us); "
          f"per-round p50 direct {r['direct']} funnel {r['funnel']}; per-round added {d}; MEDIAN ADDED +{med(d):.0f} us")
PY
