#!/usr/bin/env bash
# The result cache's invalidation by writes through the funnel (issue
# "Query rules", [funnel] cache_invalidation): two funnels with the same
# rule (cache_ttl_ms = 60000 on point selects of a hot set of 1,000 ids),
# one with cache_invalidation = true (the default), one with false,
# compared in alternating rounds (loadtest --compare):
#  A) reads only: what tracking costs when nothing is written;
#  B) 95 % reads, 5 % writes (UPDATE of the same hot rows) through the
#     funnel: the throughput and the share of reads answered from the cache
#     with and without invalidation (without it, cached reads are up to a
#     minute stale).
# Output: $OUT/invalidation-*.txt
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
CLIENTS=${CLIENTS:-64}
TABLE=sbtest_hot
P_ON=${P_ON:-3761}
P_OFF=${P_OFF:-3764}

if ! myroot -N -e "SELECT COUNT(*) FROM app.$TABLE" 2>/dev/null | grep -qx 1000; then
    "$LT" --prepare -t "$DIRECT" -u app -p app_pw -D app --table "$TABLE" --table-size 1000
fi
RULE=("[rule hot_points]" "pattern = ^SELECT c FROM $TABLE WHERE id =" "cache_ttl_ms = 60000")
cache_row() {
    APORT=$1 admin 'SHOW RULES' | grep -E 'hot_points|\*'
}
for mix in point=100 point=95,write=5; do
    name=${mix//[=,]/-}
    # Fresh funnels for each mix: the counts below are this mix's.
    FPORT=$P_ON APORT=$((P_ON + 1)) SPORT=$((P_ON + 2)) start_funnel 8 "$DIRECT" "${RULE[@]}"
    PID_ON=$FUNNEL_PID
    FUNNEL_LINES="cache_invalidation = false" FPORT=$P_OFF APORT=$((P_OFF + 1)) SPORT=$((P_OFF + 2)) \
        start_funnel 8 "$DIRECT" "${RULE[@]}"
    PID_OFF=$FUNNEL_PID
    trap 'stop_funnel $PID_ON; stop_funnel $PID_OFF' EXIT
    log "mix $mix: invalidation on ($P_ON) vs off ($P_OFF)"
    "$LT" --compare "127.0.0.1:$P_ON" "127.0.0.1:$P_OFF" --label-a invalidation-on --label-b invalidation-off \
        -u app -p app_pw -D app --table "$TABLE" --table-size 1000 -c "$CLIENTS" -d "$SECS" --warmup 2 \
        --mix "$mix" --rounds "$ROUNDS" >"$OUT/invalidation-$name.txt" 2>&1
    {
        echo "loadavg $(loadavg)"
        echo "on:"; cache_row $((P_ON + 1))
        echo "off:"; cache_row $((P_OFF + 1))
    } >>"$OUT/invalidation-$name.txt"
    cat "$OUT/invalidation-$name.txt"
    stop_funnel "$PID_ON"; stop_funnel "$PID_OFF"
done
