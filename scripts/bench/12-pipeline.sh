#!/usr/bin/env bash
# Pipelined backends (issue 14): the funnel with `pipeline_depth = 1` (off)
# and `= DEPTH` against the fake backend (`loadtest --fake-server`, which
# answers at once, so that the funnel is the bottleneck). CLIENTS
# persistent clients doing point selects over CONNS backend connections.
#  A) q/s and the funnel's CPU per query: both funnels run all along (on
#     ports P1.. and P2..), ROUNDS rounds of SECS s alternating between
#     them (A B, B A, ...).
#  B) syscalls per forwarded query: strace -c -f on each funnel in turn for
#     SECS s, divided by the requests it counted meanwhile (strace slows
#     the funnel: the q/s under it are not used).
#  C) instructions per forwarded query (callgrind; repeatable whatever the
#     load): each depth in turn, and FUNNEL_BEFORE (a binary without
#     pipelining, e.g. the commit before it) when set. SKIP_CALLGRIND=1
#     skips it.
# Output: $OUT/pipeline.tsv (one line per run), $OUT/pipeline-summary.txt,
# $OUT/pipe-strace-*.txt, $OUT/pipe-callgrind-*.out*
. "$(dirname "$0")/common.sh"
CLIENTS=${CLIENTS:-64}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-4}
CONNS=${CONNS:-4}
DEPTH=${DEPTH:-4}
CG_SECS=${CG_SECS:-10}
FAKEPORT=${FAKEPORT:-3800}
FAKE=127.0.0.1:$FAKEPORT
# Each funnel's client, admin and stats ports: P, P+1, P+2.
P1=${P1:-3801}
P2=${P2:-3804}

now() { date +%s.%N; }
# requests SPORT: the funnel-wide request count of that funnel.
requests() { curl -s "http://127.0.0.1:$1/stats.json" | grep -o '"requests": *[0-9]*' | head -1 | grep -o '[0-9]*$'; }
in_window() { awk -v q="$1" -v a="$2" -v b="$3" -v s="$SECS" 'BEGIN{printf "%.0f", q * s / (b - a)}'; }
# funnel_up BASEPORT DEPTH [binary]: start one funnel; sets UP_PID.
funnel_up() {
    local lines="pipeline_depth = $2"
    [ "${3:-}" = before ] && lines=""
    FPORT=$1 APORT=$(($1 + 1)) SPORT=$(($1 + 2)) BACKEND_LINES=$lines start_funnel "$CONNS" "$FAKE"
    UP_PID=$FUNNEL_PID
}

"$LT" --fake-server "$FAKE" >"$OUT/pipe-fake-server.log" 2>&1 &
FAKE_PID=$!
PIDS=()
trap 'for p in "${PIDS[@]}"; do stop_funnel "$p"; done; kill -TERM $FAKE_PID 2>/dev/null; wait $FAKE_PID 2>/dev/null' EXIT
for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$FAKEPORT") 2>/dev/null && break
    sleep 0.1
done
funnel_up "$P1" 1
PID1=$UP_PID
PIDS+=("$PID1")
funnel_up "$P2" "$DEPTH"
PID2=$UP_PID
PIDS+=("$PID2")

TSV=$OUT/pipeline.tsv
echo -e "round\tdepth\tqps\tfunnel_us_per_query\tfunnel_cpu_share\tloadavg" >"$TSV"
HZ=$(getconf CLK_TCK)

# run DEPTH PORT PID ROUND
run() {
    local depth=$1 port=$2 pid=$3 round=$4 json=$OUT/pipe-d$1-$4.json
    "$LT" -t "127.0.0.1:$port" -u app -p app_pw -D app -c "$CLIENTS" -d "$SECS" --warmup 2 --mix point=100 \
        --json "$json" >"$OUT/pipe-d$depth-$round.txt" 2>&1 &
    local lt=$!
    sleep 3.5
    local q0 f0 s0 q1 f1 s1
    q0=$(requests $((port + 2))); f0=$(cpu_ticks "$pid"); s0=$(now)
    sleep $((SECS - 2))
    q1=$(requests $((port + 2))); f1=$(cpu_ticks "$pid"); s1=$(now)
    wait "$lt" || { tail -5 "$OUT/pipe-d$depth-$round.txt" >&2; return 1; }
    local qps
    qps=$(python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["results"][0]["qps"])' "$json")
    awk -v r="$round" -v d="$depth" -v qps="$qps" -v q="$((q1 - q0))" -v f="$((f1 - f0))" \
        -v el="$(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}')" -v hz="$HZ" -v la="$(loadavg)" 'BEGIN{
        printf "%s\t%s\t%s\t%.2f\t%.2f\t%s\n", r, d, qps, f / hz * 1e6 / q, f / hz / el, la}' | tee -a "$TSV"
}

for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order="1 $DEPTH"; else order="$DEPTH 1"; fi
    for d in $order; do
        if [ "$d" = 1 ]; then run 1 "$P1" "$PID1" "$r"; else run "$DEPTH" "$P2" "$PID2" "$r"; fi
        sleep 1
    done
done

# B) syscalls per forwarded query, under strace
command -v strace >/dev/null || { log "installing strace"; apt-get install -y -qq strace >/dev/null; }
SYS_LINES=""
for d in 1 "$DEPTH"; do
    if [ "$d" = 1 ]; then port=$P1 pid=$PID1; else port=$P2 pid=$PID2; fi
    "$LT" -t "127.0.0.1:$port" -u app -p app_pw -D app -c "$CLIENTS" -d $((SECS + 4)) --warmup 2 --mix point=100 \
        >"$OUT/pipe-strace-lt-d$d.txt" 2>&1 &
    LTPID=$!
    sleep 3.5
    STRACE=$OUT/pipe-strace-d$d.txt
    q0=$(requests $((port + 2))); t0=$(now)
    timeout -s INT "$SECS" strace -c -f -q -p "$pid" -o "$STRACE" || true
    q1=$(requests $((port + 2))); t1=$(now)
    wait "$LTPID" || true
    Q=$(in_window $((q1 - q0)) "$t0" "$t1")
    total=$(awk '$NF=="total"{print $4}' "$STRACE")
    SYS_LINES+="depth $d: $total syscalls in $SECS s under strace for $Q requests: $(awk -v t="$total" -v q="$Q" 'BEGIN{printf "%.2f", t/q}') per forwarded query"$'\n'
    SYS_LINES+=$(awk -v q="$Q" '$NF != "total" && $4 ~ /^[0-9]+$/ && $4 > 0 {printf "  %-16s %6.3f per query\n", $NF, $4/q}' "$STRACE" | sort -k2 -rn)$'\n'
done

# C) instructions per forwarded query, under callgrind
CG_LINES="callgrind skipped"
if [ -z "${SKIP_CALLGRIND:-}" ] && command -v valgrind >/dev/null; then
    for p in "${PIDS[@]}"; do stop_funnel "$p"; done
    PIDS=()
    CG_LINES=""
    runs="1 $DEPTH"
    [ -n "${FUNNEL_BEFORE:-}" ] && runs="before $runs"
    for d in $runs; do
        rm -f "$OUT/pipe-callgrind-$d.out"*
        bin=$FUNNEL
        [ "$d" = before ] && bin=$FUNNEL_BEFORE
        FUNNEL=$bin FUNNEL_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$OUT/pipe-callgrind-$d.out --dump-instr=no" \
            funnel_up "$P1" "${d/before/1}" "$( [ "$d" = before ] && echo before)"
        "$LT" -t "127.0.0.1:$P1" -u app -p app_pw -D app -c "$CLIENTS" -d $((CG_SECS + 10)) --warmup 2 --mix point=100 \
            >"$OUT/pipe-callgrind-lt-$d.txt" 2>&1 &
        LTPID=$!
        sleep 6
        callgrind_control -z "$UP_PID" >/dev/null
        q0=$(requests $((P1 + 2)))
        sleep "$CG_SECS"
        q1=$(requests $((P1 + 2)))
        callgrind_control -d "$UP_PID" >/dev/null
        wait "$LTPID" || true
        stop_funnel "$UP_PID"
        IR=$(grep -h '^summary:' "$OUT/pipe-callgrind-$d.out".*[0-9] 2>/dev/null | awk '{print $2}' | sort -n | tail -1)
        CG_LINES+=$(awk -v d="$d" -v ir="$IR" -v q="$((q1 - q0))" 'BEGIN{
            printf "callgrind %-7s %d instructions for %d requests: %.0f per forwarded query", d, ir, q, ir / q}')$'\n'
    done
fi

{
    echo "== pipelining: fake backend, $CLIENTS persistent clients, point selects, pool connections = $CONNS, depth 1 vs $DEPTH"
    python3 - "$TSV" "$DEPTH" <<'PY'
import csv, sys, statistics as st
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for d in ("1", sys.argv[2]):
    q = [float(r["qps"]) for r in rows if r["depth"] == d]
    us = [float(r["funnel_us_per_query"]) for r in rows if r["depth"] == d]
    print(f"depth {d:>2}: q/s median {st.median(q):.0f} (rounds {' '.join('%.0f' % x for x in q)}), funnel CPU {st.median(us):.2f} us/query")
a = st.median(float(r["qps"]) for r in rows if r["depth"] == sys.argv[2])
b = st.median(float(r["qps"]) for r in rows if r["depth"] == "1")
print(f"depth {sys.argv[2]} / depth 1 q/s: {a / b:.3f}")
PY
    printf '%s' "$SYS_LINES"
    printf '%s' "$CG_LINES"
} | tee "$OUT/pipeline-summary.txt"
