#!/usr/bin/env bash
# Target 2: 4,000 persistent clients, funnel connections = 8, point selects.
#  a) closed loop, think 0: loadtest --compare direct funnel, ROUNDS rounds
#     alternating (direct funnel / funnel direct / ...).
#  b) open loop at 80% of the best direct round of (a): same compare with --rate.
# Output: $OUT/4000-closed.{json,svg,txt}, $OUT/4000-open.{json,svg,txt}
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-4000}
start_funnel 8
trap 'stop_funnel' EXIT
COMMON=(-u app -p app_pw -D app -c "$CLIENTS" -d "$SECS" --warmup 3 --rounds "$ROUNDS" --mix point=100
    --label-a direct --label-b funnel -v)

# OPEN_ONLY=1 RATE=R TAG=-x: only the open loop, at R q/s (e.g. one below
# both targets' capacity), output $OUT/4000-open-x.*
if [ -z "${OPEN_ONLY:-}" ]; then
log "closed loop, $CLIENTS clients, load $(loadavg)"
"$LT" --compare "$DIRECT" "$VIA" "${COMMON[@]}" \
    --json "$OUT/4000-closed.json" --plot "$OUT/4000-closed.svg" 2>&1 | tee "$OUT/4000-closed.txt"
fi
[ -n "${OPEN_ONLY:-}" ] || BEST=$(python3 -c 'import json,sys; print(int(max(json.load(open(sys.argv[1]))["results"][0]["round_qps"])))' "$OUT/4000-closed.json")
[ -n "${BEST:-}" ] || { log "could not read direct's best rate from the JSON; set RATE"; BEST=${RATE:?}; }
RATE=${RATE:-$((BEST * 8 / 10))}
log "open loop at $RATE q/s (default: 80% of direct's best closed-loop round; here BEST=$BEST), load $(loadavg)"
"$LT" --compare "$DIRECT" "$VIA" "${COMMON[@]}" --rate "$RATE" \
    --json "$OUT/4000-open${TAG:-}.json" --plot "$OUT/4000-open${TAG:-}.svg" 2>&1 | tee "$OUT/4000-open${TAG:-}.txt"
admin "SHOW LATENCY" | tee "$OUT/4000-funnel-latency${TAG:-}.txt"
admin "SHOW STATS\G" | tee "$OUT/4000-funnel-stats${TAG:-}.txt"
