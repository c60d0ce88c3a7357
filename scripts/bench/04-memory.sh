#!/usr/bin/env bash
# Target 4: memory per idle client. For N in $COUNTS: a fresh funnel
# (connections = 8), one query through it (so the pool's histograms exist),
# VmRSS; then N loadtest clients that log in and stay idle (think time of
# 10^9 ms: they never send a query); VmRSS once all N are connected (read
# from stats.json) and has settled; then the clients leave, VmRSS again.
# A second wave of N clients on the same funnel shows whether the memory of
# the first wave is reused (no leak) or added to.
# 20,000 clients are over the 20,000 fd hard limit of this machine (loadtest
# needs N + 256), so the big run uses 19,000.
# Output: $OUT/memory.tsv
. "$(dirname "$0")/common.sh"
COUNTS=${COUNTS:-"10000 19000"}
# NODB=1: clients log in without a default database (no connect-with-db
# check through the backlog); the table is then named app.sbtest1.
if [ -n "${NODB:-}" ]; then DBARGS=(--table app.sbtest1); TAG=-nodb; else DBARGS=(-D app); TAG=; fi
TSV=$OUT/memory$TAG-${COUNTS// /_}.tsv
echo -e "clients\twave\trss_before_kb\trss_connected_kb\trss_after_leave_kb\tper_client_bytes\tramp_s" >"$TSV"
connected() { stats_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clients_connected"])'; }
for n in $COUNTS; do
    start_funnel 8
    mariadb --no-defaults -h127.0.0.1 -P"$FPORT" -uapp -papp_pw app -e 'SELECT c FROM sbtest1 WHERE id=1' >/dev/null
    sleep 1
    before=$(rss_kb "$FUNNEL_PID")
  for wave in 1 2; do
    t0=$(date +%s.%N)
    "$LT" -t "$VIA" -u app -p app_pw "${DBARGS[@]}" -c "$n" -d 600 --warmup 0 --think-ms 1000000000 \
        --max-connecting 64 >"$OUT/memory-lt-$n$TAG.txt" 2>&1 &
    LTPID=$!
    for ((i = 0; i < 600; i++)); do
        c=$(connected); [ "$c" -ge "$n" ] && break; sleep 0.5
    done
    t1=$(date +%s.%N)
    sleep 3
    after=$(rss_kb "$FUNNEL_PID")
    log "$n clients connected ($c) in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s: RSS $before -> $after kB"
    grep -E 'Vm(RSS|HWM)|RssAnon|RssFile' "/proc/$FUNNEL_PID/status" | tr '\n' ' ' >&2; echo >&2
    kill -INT "$LTPID"; wait "$LTPID" || true
    for ((i = 0; i < 100; i++)); do [ "$(connected)" -eq 0 ] && break; sleep 0.2; done
    sleep 1
    left=$(rss_kb "$FUNNEL_PID")
    echo -e "$n\t$wave\t$before\t$after\t$left\t$(((after - before) * 1024 / n))\t$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')" | tee -a "$TSV"
  done
    stop_funnel
done
