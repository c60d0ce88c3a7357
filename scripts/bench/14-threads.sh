#!/usr/bin/env bash
# Issue "Every core, fewer syscalls": `[funnel] threads = 1` against
# `threads = 2`, in one run with alternating rounds (1 2, 2 1, ...), against
# the fake backend (`loadtest --fake-server`: answers at once, so that the
# funnel and not mysqld is the bottleneck).
#  A) CLIENTS persistent clients (64), point selects, CONNS backend
#     connections (8: 4 per loop with threads = 2): q/s, the funnel's CPU
#     per query and its CPU share (cores busy), the fake's and the
#     generator's CPU shares.
#  B) connection churn (PAGE_CLIENTS clients, each page: connect, 3 point
#     selects, quit): pages/s. Every loop accepts on the listeners (a socket
#     goes to another loop only when that one has clearly fewer clients).
# On a 2-core machine the fake server and the generator take about one
# core themselves: the ceiling for the funnel is what is left.
# Output: $OUT/threads.tsv, $OUT/threads-summary.txt
. "$(dirname "$0")/common.sh"
CLIENTS=${CLIENTS:-64}
PAGE_CLIENTS=${PAGE_CLIENTS:-8}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-4}
CONNS=${CONNS:-8}
FAKE_THREADS=${FAKE_THREADS:-1}
FAKEPORT=${FAKEPORT:-3434}
FAKE=127.0.0.1:$FAKEPORT
HZ=$(getconf CLK_TCK)

requests() { stats_json | grep -o '"requests": *[0-9]*' | head -1 | grep -o '[0-9]*$'; }
now() { date +%s.%N; }

"$LT" --fake-server "$FAKE" --fake-threads "$FAKE_THREADS" >"$OUT/threads-fake.log" 2>&1 &
FAKE_PID=$!
trap 'stop_funnel; kill -TERM $FAKE_PID 2>/dev/null; wait $FAKE_PID 2>/dev/null' EXIT
for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$FAKEPORT") 2>/dev/null && break
    sleep 0.1
done

TSV=$OUT/threads.tsv
echo -e "round\tthreads\tmode\trate\tfunnel_us_per_query\tfunnel_cores\tfake_cores\tgenerator_cores\tloadavg" >"$TSV"

# run THREADS ROUND MODE: a funnel with that many loops, one loadtest run.
run() {
    local threads=$1 round=$2 mode=$3 json=$OUT/threads-$1-$3-$2.json
    FUNNEL_LINES="threads = $threads" start_funnel "$CONNS" "$FAKE"
    local args=(-c "$CLIENTS" --mix point=100)
    [ "$mode" = churn ] && args=(-c "$PAGE_CLIENTS" --mode page --page-queries 3 --mix point=100)
    "$LT" -t "$VIA" -u app -p app_pw -D app "${args[@]}" -d "$SECS" --warmup 2 \
        --json "$json" >"$OUT/threads-$threads-$mode-$round.txt" 2>&1 &
    local lt=$! q0 q1 f0 f1 k0 k1 s0 s1
    sleep 3.5
    q0=$(requests); f0=$(cpu_ticks "$FUNNEL_PID"); k0=$(cpu_ticks "$FAKE_PID"); s0=$(now)
    sleep $((SECS - 2))
    q1=$(requests); f1=$(cpu_ticks "$FUNNEL_PID"); k1=$(cpu_ticks "$FAKE_PID"); s1=$(now)
    wait "$lt" || { tail -5 "$OUT/threads-$threads-$mode-$round.txt" >&2; return 1; }
    stop_funnel
    local rate gen
    rate=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.0f" % (r["pages"]["per_s"] if sys.argv[2]=="churn" else r["qps"]))' "$json" "$mode")
    gen=$(python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["results"][0]["generator_cpu"]["fraction_of_core"])' "$json")
    awk -v r="$round" -v t="$threads" -v m="$mode" -v rate="$rate" -v q="$((q1 - q0))" -v f="$((f1 - f0))" \
        -v k="$((k1 - k0))" -v el="$(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}')" -v hz="$HZ" \
        -v gen="$gen" -v la="$(loadavg)" 'BEGIN{
        us = q > 0 ? sprintf("%.2f", f / hz * 1e6 / q) : "-";
        printf "%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%s\t%s\n", r, t, m, rate, us, f / hz / el, k / hz / el, gen, la}' | tee -a "$TSV"
}

for mode in persistent churn; do
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then order="1 2"; else order="2 1"; fi
        for t in $order; do
            run "$t" "$r" "$mode"
            sleep 1
        done
    done
done

python3 - "$TSV" >"$OUT/threads-summary.txt" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for mode in ("persistent", "churn"):
    by = {t: [r for r in rows if r["mode"] == mode and r["threads"] == t] for t in ("1", "2")}
    med = {t: statistics.median(float(r["rate"]) for r in v) for t, v in by.items() if v}
    cores = {t: statistics.median(float(r["funnel_cores"]) for r in v) for t, v in by.items() if v}
    us = {t: statistics.median(float(r["funnel_us_per_query"]) for r in v if r["funnel_us_per_query"] != "-") for t, v in by.items() if v}
    unit = "q/s" if mode == "persistent" else "pages/s"
    print(f"{mode}: threads=1 {med['1']:.0f} {unit} ({cores['1']:.2f} cores, {us['1']:.1f} us/query); "
          f"threads=2 {med['2']:.0f} {unit} ({cores['2']:.2f} cores, {us['2']:.1f} us/query); "
          f"ratio {med['2'] / med['1']:.2f}x (medians of {len(by['1'])} rounds)")
EOF
cat "$OUT/threads-summary.txt"
