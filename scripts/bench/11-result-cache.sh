#!/usr/bin/env bash
# Query rules' result cache (issue "Query rules"):
#  A) point selects over a hot set of 1,000 ids (sbtest1 of 1,000 rows),
#     closed loop, CLIENTS clients: through a funnel whose rule caches them
#     (cache_ttl_ms = 60000) vs directly on mysqld, alternating rounds
#     (loadtest --compare, ROUNDS rounds of SECS s each).
#  B) the funnel's CPU per cached answer: utime+stime of the funnel over a
#     funnel-only run divided by the cache hits in that interval.
#  C) rules cost nothing when none is configured: the same workload through
#     a funnel without rules and one whose only rule matches nothing
#     (a pattern), alternating rounds.
# Output: $OUT/result-cache-*.txt, $OUT/result-cache.tsv
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
CLIENTS=${CLIENTS:-64}
HZ=$(getconf CLK_TCK)
TABLE=sbtest_hot

if ! myroot -N -e "SELECT COUNT(*) FROM app.$TABLE" 2>/dev/null | grep -qx 1000; then
    "$LT" --prepare -t "$DIRECT" -u app -p app_pw -D app --table "$TABLE" --table-size 1000
fi
cache_hits() { stats_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["result_cache"]["hits"])'; }

# A) cached funnel vs direct
start_funnel 8 "$DIRECT" "[rule hot_points]" "pattern = ^SELECT c FROM $TABLE WHERE id =" "cache_ttl_ms = 60000"
trap 'stop_funnel' EXIT
"$LT" --compare "$VIA" "$DIRECT" --label-a funnel-cached --label-b direct -u app -p app_pw -D app \
    --table "$TABLE" --table-size 1000 -c "$CLIENTS" -d "$SECS" --warmup 2 --mix point=100 \
    --rounds "$ROUNDS" --json "$OUT/result-cache-compare.json" >"$OUT/result-cache-compare.txt" 2>&1
cat "$OUT/result-cache-compare.txt"
admin 'SHOW RULES' | tee "$OUT/result-cache-rules.txt"

# B) CPU per cached answer
"$LT" -t "$VIA" -u app -p app_pw -D app --table "$TABLE" --table-size 1000 -c "$CLIENTS" \
    -d $((SECS + 4)) --warmup 2 --mix point=100 >"$OUT/result-cache-cpu-lt.txt" 2>&1 &
LTPID=$!
sleep 4
h0=$(cache_hits); t0=$(cpu_ticks "$FUNNEL_PID"); s0=$(date +%s.%N)
sleep "$SECS"
h1=$(cache_hits); t1=$(cpu_ticks "$FUNNEL_PID"); s1=$(date +%s.%N)
wait "$LTPID" || true
awk -v h0="$h0" -v h1="$h1" -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" -v la="$(loadavg)" 'BEGIN{
    h=h1-h0; cpu=(t1-t0)/hz; el=s1-s0;
    printf "cached answers/s %.0f, funnel CPU %.2f s of %.1f s (%.0f%% of a core), %.2f us per cached answer, loadavg %s\n",
        h/el, cpu, el, 100*cpu/el, cpu*1e6/h, la}' | tee "$OUT/result-cache-cpu.txt"
stop_funnel

# C) no rules vs a rule that matches nothing
FPORT=3754 APORT=3755 SPORT=3756 start_funnel 8 "$DIRECT"; PID_NONE=$FUNNEL_PID
FPORT=3757 APORT=3758 SPORT=3759 start_funnel 8 "$DIRECT" "[rule never]" "pattern = ^NEVER" "cache_ttl_ms = 1000"; PID_RULE=$FUNNEL_PID
trap 'stop_funnel $PID_NONE; stop_funnel $PID_RULE' EXIT
"$LT" --compare 127.0.0.1:3754 127.0.0.1:3757 --label-a no-rules --label-b one-rule -u app -p app_pw -D app \
    --table "$TABLE" --table-size 1000 -c "$CLIENTS" -d "$SECS" --warmup 2 --mix point=100 \
    --rounds "$ROUNDS" >"$OUT/result-cache-norules.txt" 2>&1
cat "$OUT/result-cache-norules.txt"
