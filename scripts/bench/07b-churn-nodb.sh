#!/usr/bin/env bash
# Evidence for target 7: the same churn with clients that log in WITHOUT a
# default database (no connect-with-db check through a backend; the table
# is named app.sbtest1), direct vs funnel; and a perf profile of the funnel
# during the churn with a database (as in 07-churn.sh a).
# Output: $OUT/churn-nodb.{txt,json}, $OUT/perf-churn-report.txt
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
start_funnel 8
trap 'stop_funnel' EXIT
"$LT" --compare "$DIRECT" "$VIA" --label-a direct --label-b funnel -u app -p app_pw --table app.sbtest1 -c 8 \
    -d "$SECS" --warmup 2 --rounds "$ROUNDS" --mode page --page-queries 3 --mix point=100 \
    --json "$OUT/churn-nodb.json" 2>&1 | tee "$OUT/churn-nodb.txt" | grep -E 'round|pages/s|connect p50|errors'
"$LT" -t "$VIA" -u app -p app_pw -D app -c 8 -d 14 --warmup 1 --mode page --page-queries 3 --mix point=100 \
    >"$OUT/perf-churn-lt.txt" 2>&1 &
LTPID=$!
sleep 3
STAT_S=3
c0=$(cpu_ticks "$FUNNEL_PID")
perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_accept4,syscalls:sys_enter_close,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_getrandom,syscalls:sys_enter_setsockopt,syscalls:sys_enter_getpeername,syscalls:sys_enter_getsockname,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_shutdown \
    -p "$FUNNEL_PID" -o "$OUT/syscalls-churn.txt" -- sleep "$STAT_S"
perf record -F 999 -g -o "$OUT/perf-churn.data" -p "$FUNNEL_PID" -- sleep 5 2>&1 | tail -1
c1=$(cpu_ticks "$FUNNEL_PID")
wait "$LTPID" || true
grep -E 'pages|throughput' "$OUT/perf-churn-lt.txt"
pages=$(awk '/^pages/{print $2}' "$OUT/perf-churn-lt.txt")
echo "funnel CPU over 8 s: $(((c1 - c0)))/$(getconf CLK_TCK) s; pages/s $pages; CPU per page ~ $(awk -v c=$((c1 - c0)) -v p="$pages" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f us", c/hz/8/p*1e6}')"
awk -F, -v p="$pages" -v s="$STAT_S" '$1 ~ /^[0-9]+$/ && $1 > 0 {printf "  %-36s %6.2f per page\n", $3, $1/(p*s)}' "$OUT/syscalls-churn.txt"
perf report -i "$OUT/perf-churn.data" --no-children --sort sym --stdio -g none --percent-limit 1 2>/dev/null |
    grep -v '^#' | grep -v '^$' | tee "$OUT/perf-churn-report.txt" | head -30
