#!/usr/bin/env bash
# Evidence for target 4: where the funnel's heap goes with N idle clients.
# The funnel runs under valgrind --tool=massif (snapshots of the heap), N
# idle clients log in and stay; then the funnel is stopped and ms_print
# shows the peak snapshot's allocation tree.
# Output: $OUT/massif.out, $OUT/massif.txt
. "$(dirname "$0")/common.sh"
N=${N:-2000}
FUNNEL_WRAPPER="valgrind --tool=massif --massif-out-file=$OUT/massif.out --depth=12 --threshold=2.0" start_funnel 8
mariadb --no-defaults -h127.0.0.1 -P"$FPORT" -uapp -papp_pw app -e 'SELECT c FROM sbtest1 WHERE id=1' >/dev/null
"$LT" -t "$VIA" -u app -p app_pw -D app -c "$N" -d 600 --warmup 0 --think-ms 1000000000 >/dev/null 2>&1 &
LTPID=$!
for ((i = 0; i < 300; i++)); do
    c=$(stats_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clients_connected"])')
    [ "$c" -ge "$N" ] && break; sleep 1
done
log "$c clients connected; RSS under valgrind $(rss_kb "$FUNNEL_PID") kB"
sleep 2
kill -INT "$LTPID"; wait "$LTPID" || true
stop_funnel
ms_print "$OUT/massif.out" >"$OUT/massif.txt"
grep -n 'peak' "$OUT/massif.txt" | head -3
