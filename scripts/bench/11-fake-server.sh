#!/usr/bin/env bash
# Issue "Every core, fewer syscalls": the funnel against a fake backend
# (`loadtest --fake-server`, which answers at once), so that the funnel and
# not mysqld is the bottleneck. No MariaDB is needed.
#  A) CLIENTS persistent clients (64), closed loop, point selects, SECS s
#     measured per run, ROUNDS rounds alternating funnel / fake direct
#     (A B, B A, ...). Per run: q/s (loadtest's window); for funnel runs
#     also, over a window inside it: the funnel's CPU per query
#     ((utime+stime)/requests, /proc/PID/stat and /stats.json), its CPU
#     share, the fake server's and the generator's CPU shares.
#  B) syscalls per forwarded query: strace -c -f -p FUNNEL for SECS s at
#     CLIENTS clients, divided by the requests the funnel counted in that
#     window (strace slows the funnel: its q/s are not used); and, when
#     perf works, the same count by perf stat (raw_syscalls:sys_enter, as
#     05-cpu.sh counts them), which slows it much less.
#  C) instructions per forwarded query (callgrind; repeatable whatever the
#     load): the funnel under valgrind, CLIENTS clients, instructions between
#     callgrind_control -z and -d over CG_SECS s / the requests counted
#     between them. SKIP_CALLGRIND=1 skips it.
# THREADS=N adds `threads = N` to [funnel] (the key of the multi-core
# engine); unset, the funnel runs as it is. FAKE_THREADS: the fake's loops.
# Output: $OUT/fake-server.tsv (one line per run), $OUT/fake-summary.txt,
# $OUT/fake-strace-*.txt, $OUT/fake-perf*.txt, $OUT/fake-callgrind.out*
. "$(dirname "$0")/common.sh"
CLIENTS=${CLIENTS:-64}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-8}
CG_SECS=${CG_SECS:-10}
FAKE_THREADS=${FAKE_THREADS:-1}
FAKEPORT=${FAKEPORT:-3424}
FAKE=127.0.0.1:$FAKEPORT
TAG=${THREADS:+-threads$THREADS}
HZ=$(getconf CLK_TCK)
[ -n "${THREADS:-}" ] && export FUNNEL_LINES="threads = $THREADS"

# The funnel-wide request count (the first "requests" of /stats.json). No
# python here: on a loaded machine its start-up alone takes long enough to
# widen a counting window noticeably.
requests() { stats_json | grep -o '"requests": *[0-9]*' | head -1 | grep -o '[0-9]*$'; }
now() { date +%s.%N; }
# in_window DELTA_REQUESTS T0 T1: requests in SECS s at the rate counted
# between T0 and T1 (a tracer's attach and detach lengthen that interval).
in_window() { awk -v q="$1" -v a="$2" -v b="$3" -v s="$SECS" 'BEGIN{printf "%.0f", q * s / (b - a)}'; }

"$LT" --fake-server "$FAKE" --fake-threads "$FAKE_THREADS" >"$OUT/fake-server.log" 2>&1 &
FAKE_PID=$!
trap 'stop_funnel; kill -TERM $FAKE_PID 2>/dev/null; wait $FAKE_PID 2>/dev/null' EXIT
for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$FAKEPORT") 2>/dev/null && break
    kill -0 "$FAKE_PID" 2>/dev/null || { cat "$OUT/fake-server.log" >&2; exit 1; }
    sleep 0.1
done
log "fake server pid $FAKE_PID on $FAKE ($FAKE_THREADS thread(s))"
start_funnel "$CONNS" "$FAKE"
log "funnel config: $(tr '\n' ' ' <"$OUT/funnel-$FPORT.conf" | sed 's/\[user.*//')"

TSV=$OUT/fake-server$TAG.tsv
echo -e "round\ttarget\tqps\tfunnel_us_per_query\tfunnel_cpu_share\tfake_cpu_share\tgenerator_cpu_share\tloadavg" >"$TSV"

# run LABEL ADDR ROUND: one loadtest run; CPU is sampled over a window of
# SECS-2 s inside its measured window (after ramp-up and warmup).
run() {
    local label=$1 addr=$2 round=$3 json=$OUT/fake-$1$TAG-$3.json
    "$LT" -t "$addr" -u app -p app_pw -D app -c "$CLIENTS" -d "$SECS" --warmup 2 --mix point=100 \
        --json "$json" >"$OUT/fake-$label$TAG-$round.txt" 2>&1 &
    local lt=$! q0=0 q1=0
    sleep 3.5
    local f0 k0 s0 f1 k1 s1
    [ "$label" = funnel ] && q0=$(requests)
    f0=$(cpu_ticks "$FUNNEL_PID"); k0=$(cpu_ticks "$FAKE_PID"); s0=$(now)
    sleep $((SECS - 2))
    [ "$label" = funnel ] && q1=$(requests)
    f1=$(cpu_ticks "$FUNNEL_PID"); k1=$(cpu_ticks "$FAKE_PID"); s1=$(now)
    wait "$lt" || { tail -5 "$OUT/fake-$label$TAG-$round.txt" >&2; return 1; }
    local qps gen
    qps=$(python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["results"][0]["qps"])' "$json")
    gen=$(python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["results"][0]["generator_cpu"]["fraction_of_core"])' "$json")
    awk -v r="$round" -v l="$label" -v qps="$qps" -v q="$((q1 - q0))" -v f="$((f1 - f0))" -v k="$((k1 - k0))" \
        -v el="$(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}')" -v hz="$HZ" -v gen="$gen" -v la="$(loadavg)" 'BEGIN{
        us = q > 0 ? sprintf("%.2f", f / hz * 1e6 / q) : "-";
        fs = l == "funnel" ? sprintf("%.2f", f / hz / el) : "-";
        printf "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\n", r, l, qps, us, fs, k / hz / el, gen, la}' | tee -a "$TSV"
}

for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order="funnel direct"; else order="direct funnel"; fi
    for t in $order; do
        if [ "$t" = funnel ]; then run funnel "$VIA" "$r"; else run direct "$FAKE" "$r"; fi
        sleep 1
    done
done

# B) syscalls per forwarded query, under strace
command -v strace >/dev/null || { log "installing strace"; apt-get install -y -qq strace >/dev/null; }
"$LT" -t "$VIA" -u app -p app_pw -D app -c "$CLIENTS" -d $((SECS + 4)) --warmup 2 --mix point=100 \
    >"$OUT/fake-strace-lt$TAG.txt" 2>&1 &
LTPID=$!
sleep 3.5
STRACE=$OUT/fake-strace$TAG.txt
q0=$(requests); t0=$(now)
timeout -s INT "$SECS" strace -c -f -q -p "$FUNNEL_PID" -o "$STRACE" || true
q1=$(requests); t1=$(now)
wait "$LTPID" || true
Q=$(in_window $((q1 - q0)) "$t0" "$t1")
# strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall
total=$(awk '$NF=="total"{print $4}' "$STRACE")

PERF_LINE="perf stat    not available"
if perf stat -e raw_syscalls:sys_enter -p "$FUNNEL_PID" -- sleep 0.1 >/dev/null 2>&1; then
    "$LT" -t "$VIA" -u app -p app_pw -D app -c "$CLIENTS" -d $((SECS + 4)) --warmup 2 --mix point=100 \
        >"$OUT/fake-perf-lt$TAG.txt" 2>&1 &
    LTPID=$!
    sleep 3.5
    PERF=$OUT/fake-perf$TAG.txt
    p0=$(requests); t0=$(now)
    kinds=raw_syscalls:sys_enter
    for k in recvfrom sendto epoll_wait read write readv writev epoll_ctl; do kinds+=,syscalls:sys_enter_$k; done
    perf stat -x, -e "$kinds" -p "$FUNNEL_PID" -o "$PERF" -- sleep "$SECS" 2>/dev/null
    p1=$(requests); t1=$(now)
    wait "$LTPID" || true
    PERF_LINE=$(awk -F, -v q="$(in_window $((p1 - p0)) "$t0" "$t1")" -v secs="$SECS" '
        $3=="raw_syscalls:sys_enter" {
            printf "perf stat    %d syscalls in %s s for %d requests (%.0f q/s): %.2f per forwarded query\n", $1, secs, q, q/secs, $1/q}
        $3 ~ /^syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ && $1 > 0 {
            k = $3; sub(/.*sys_enter_/, "", k); printf "  %-16s %6.3f per query\n", k, $1/q}' "$PERF")
fi

CG_LINE="callgrind    skipped"
if [ -z "${SKIP_CALLGRIND:-}" ] && command -v valgrind >/dev/null; then
    stop_funnel
    rm -f "$OUT"/fake-callgrind.out*
    FUNNEL_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$OUT/fake-callgrind.out --dump-instr=no" \
        start_funnel "$CONNS" "$FAKE"
    "$LT" -t "$VIA" -u app -p app_pw -D app -c "$CLIENTS" -d $((CG_SECS + 10)) --warmup 2 --mix point=100 \
        >"$OUT/fake-callgrind-lt$TAG.txt" 2>&1 &
    LTPID=$!
    sleep 6
    callgrind_control -z "$FUNNEL_PID" >/dev/null
    q0=$(requests)
    sleep "$CG_SECS"
    q1=$(requests)
    callgrind_control -d "$FUNNEL_PID" >/dev/null
    wait "$LTPID" || true
    stop_funnel
    # The -d dump holds the costs since -z; the one at exit what came after.
    IR=$(grep -h '^summary:' "$OUT"/fake-callgrind.out.*[0-9] 2>/dev/null | awk '{print $2}' | sort -n | tail -1)
    CG_LINE=$(awk -v ir="$IR" -v q="$((q1 - q0))" 'BEGIN{
        printf "callgrind    %d instructions for %d requests: %.0f per forwarded query", ir, q, ir / q}')
fi

{
    echo "== fake backend, $CLIENTS persistent clients, point selects, ${THREADS:+threads = $THREADS, }pool connections = $CONNS"
    python3 - "$TSV" <<'PY'
import csv, sys, statistics as st
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
f = [float(r["qps"]) for r in rows if r["target"] == "funnel"]
d = [float(r["qps"]) for r in rows if r["target"] == "direct"]
def col(t, k):
    v = [float(r[k]) for r in rows if r["target"] == t and r[k] not in ("-", "?")]
    return st.median(v) if v else float("nan")
print(f"funnel q/s   median {st.median(f):.0f}  rounds {' '.join('%.0f' % x for x in f)}")
print(f"direct q/s   median {st.median(d):.0f}  rounds {' '.join('%.0f' % x for x in d)}")
print(f"funnel/direct {st.median(f) / st.median(d):.3f}")
print(f"funnel CPU   {col('funnel', 'funnel_us_per_query'):.2f} us/query, {col('funnel', 'funnel_cpu_share'):.2f} of a core")
print(f"fake CPU     {col('funnel', 'fake_cpu_share'):.2f} of a core behind the funnel, {col('direct', 'fake_cpu_share'):.2f} direct")
print(f"generator    {col('funnel', 'generator_cpu_share'):.2f} of a core (funnel runs), {col('direct', 'generator_cpu_share'):.2f} (direct)")
PY
    echo "syscalls     $total in $SECS s under strace for $Q requests: $(awk -v t="$total" -v q="$Q" 'BEGIN{printf "%.2f", t/q}') per forwarded query"
    awk -v q="$Q" '$NF != "total" && $4 ~ /^[0-9]+$/ && $4 > 0 {printf "  %-16s %6.3f per query\n", $NF, $4/q}' "$STRACE" |
        sort -k2 -rn
    echo "$PERF_LINE"
    echo "$CG_LINE"
} | tee "$OUT/fake-summary$TAG.txt"
