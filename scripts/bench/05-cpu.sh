#!/usr/bin/env bash
# Target 5: funnel CPU per forwarded point select at saturation, syscalls
# per query, a CPU profile, and instructions per query under callgrind.
#  A) funnel (connections = 8), loadtest closed loop, think 0, point selects,
#     CLIENTS_LIST clients, SECS s each, ROUNDS rounds: (utime+stime of the
#     funnel, /proc/PID/stat) / (requests counted by the funnel) over the
#     same interval; perf stat counts the funnel's syscalls by kind meanwhile.
#  B) perf record -g on the funnel for 10 s at 64 clients; perf report.
#  C) the funnel under callgrind (connections = 2), sysbench 4 threads,
#     20,000 point selects (--events), text protocol; instructions between
#     callgrind_control -z (after the funnel started) and the dump, divided by
#     the funnel's request count; callgrind_annotate top functions.
# Output: $OUT/cpu.tsv, $OUT/syscalls-*.txt, $OUT/perf-report.txt, $OUT/callgrind.*
. "$(dirname "$0")/common.sh"
CLIENTS_LIST=${CLIENTS_LIST:-"64 1000"}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-2}
HZ=$(getconf CLK_TCK)
requests() { stats_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["requests"])'; }
SYSCALLS=raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_writev,syscalls:sys_enter_readv,syscalls:sys_enter_accept4,syscalls:sys_enter_close

# BACKEND=$MYSOCK: the funnel reaches mysqld over the unix socket (TAG=-unix).
BACKEND=${BACKEND:-$DIRECT}
TAG=${TAG:-}
if [ -z "${SKIP_A:-}" ]; then
start_funnel 8 "$BACKEND"
trap 'stop_funnel' EXIT
echo -e "clients\tround\tqps\tcpu_s\tcpu_share\tus_per_query\tsyscalls_per_query\tloadavg" >"$OUT/cpu$TAG.tsv"
for c in $CLIENTS_LIST; do
    for ((r = 1; r <= ROUNDS; r++)); do
        "$LT" -t "$VIA" -u app -p app_pw -D app -c "$c" -d $((SECS + 6)) --warmup 2 --mix point=100 \
            >"$OUT/cpu-lt-$c-$r.txt" 2>&1 &
        LTPID=$!
        # wait for the ramp-up and warmup (all clients logged in + 2 s)
        for ((i = 0; i < 300; i++)); do
            n=$(stats_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clients_connected"])')
            [ "$n" -ge "$c" ] && break; sleep 0.5
        done
        sleep 3
        q0=$(requests); t0=$(cpu_ticks "$FUNNEL_PID"); s0=$(date +%s.%N)
        perf stat -x, -e "$SYSCALLS" -p "$FUNNEL_PID" -o "$OUT/syscalls-$c-$r.txt" -- sleep "$SECS" 2>/dev/null
        q1=$(requests); t1=$(cpu_ticks "$FUNNEL_PID"); s1=$(date +%s.%N)
        wait "$LTPID" || true
        sc=$(awk -F, '$3=="raw_syscalls:sys_enter"{print $1}' "$OUT/syscalls-$c-$r.txt")
        awk -v c="$c" -v r="$r" -v q0="$q0" -v q1="$q1" -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" \
            -v hz="$HZ" -v sc="$sc" -v la="$(loadavg)" 'BEGIN{
            q=q1-q0; cpu=(t1-t0)/hz; el=s1-s0;
            printf "%s\t%s\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\n", c, r, q/el, cpu, cpu/el, cpu*1e6/q, sc/q, la}' |
            tee -a "$OUT/cpu$TAG.tsv"
        awk -F, -v q="$((q1 - q0))" '$1 ~ /^[0-9]+$/ && $1 > 0 {printf "  %-32s %6.2f per query\n", $3, $1/q}' \
            "$OUT/syscalls-$c-$r.txt"
        cp "$OUT/syscalls-$c-$r.txt" "$OUT/syscalls$TAG-$c-$r.txt"
    done
done

if [ -z "${SKIP_B:-}" ]; then
# B) profile at 64 clients
"$LT" -t "$VIA" -u app -p app_pw -D app -c 64 -d 16 --warmup 2 --mix point=100 >"$OUT/perf-lt.txt" 2>&1 &
LTPID=$!
sleep 4
perf record -F 999 -g -o "$OUT/perf.data" -p "$FUNNEL_PID" -- sleep 10 2>&1 | tail -2
wait "$LTPID" || true
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none --percent-limit 0.7 2>/dev/null |
    grep -v '^$' >"$OUT/perf-report.txt"
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g caller,0.5,callee --percent-limit 3 2>/dev/null \
    >"$OUT/perf-report-callers.txt"
head -60 "$OUT/perf-report.txt"
fi
stop_funnel
trap - EXIT
fi

[ -n "${SKIP_C:-}" ] && exit 0
# C) callgrind
FUNNEL_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind.out --dump-instr=no" start_funnel 2
sleep 1
callgrind_control -z "$FUNNEL_PID" >/dev/null
q0=$(requests)
sysbench oltp_point_select --mysql-host=127.0.0.1 --mysql-port="$FPORT" --mysql-user=app --mysql-password=app_pw \
    --mysql-db=app --tables=4 --table-size=100000 --threads=4 --events=20000 --time=0 --db-ps-mode=disable run |
    grep -E 'queries:|total time:|ignored'
q1=$(requests)
callgrind_control -d "$FUNNEL_PID" >/dev/null
sleep 1
stop_funnel
DUMP=$(ls -t "$OUT"/callgrind.out* | grep -v '\.txt' | head -1)
# The dump made by -d holds the costs since -z (the zero); the final one at exit only what came after.
for f in "$OUT"/callgrind.out*; do echo "$f: $(grep -m1 '^summary:\|^totals:' "$f")"; done
IR=$(grep -h '^summary:' "$OUT"/callgrind.out.*[0-9] 2>/dev/null | awk '{print $2}' | sort -n | tail -1)
echo "requests counted by the funnel: $((q1 - q0)); instructions in the -d dump: $IR; per request: $((IR / (q1 - q0)))" |
    tee "$OUT/callgrind-summary.txt"
callgrind_annotate --inclusive=no $(ls "$OUT"/callgrind.out.*[0-9] | head -1) 2>/dev/null | head -60 | tee "$OUT/callgrind-annotate.txt"
