#!/usr/bin/env bash
# Target 1: sysbench oltp_point_select (4 tables x 100,000 rows) at 16 and 64
# threads, direct vs funnel (connections=4) vs funnel (connections=8), in
# rotating order per round (round r starts with target r mod 3), ROUNDS
# rounds of SECS s each. Text protocol (--db-ps-mode=disable) and the
# default (server-side prepared statements). Also records the funnel's CPU
# time per query in each funnel run.
# Output: $OUT/sysbench.tsv (mode threads target round qps funnel_cpu_us_per_q)
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
MODES=${MODES:-"disable auto"}
THREADS=${THREADS:-"16 64"}

FPORT=3431 APORT=3432 SPORT=3433 start_funnel 4; PID4=$FUNNEL_PID
FPORT=3441 APORT=3442 SPORT=3443 start_funnel 8; PID8=$FUNNEL_PID
trap 'stop_funnel $PID4; stop_funnel $PID8' EXIT
declare -A PORT=([direct]=$MYPORT [funnel4]=3431 [funnel8]=3441)
declare -A FPID=([funnel4]=$PID4 [funnel8]=$PID8)
TARGETS=(direct funnel4 funnel8)
TSV=$OUT/sysbench.tsv
echo -e "mode\tthreads\ttarget\tround\tqps\terrors\tfunnel_cpu_us_per_q\tloadavg" >"$TSV"
HZ=$(getconf CLK_TCK)

for mode in $MODES; do
    for th in $THREADS; do
        for ((r = 0; r < ROUNDS; r++)); do
            for ((k = 0; k < 3; k++)); do
                t=${TARGETS[$(((r + k) % 3))]}
                pid=${FPID[$t]:-}
                c0=0; [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
                res=$(sysbench oltp_point_select --mysql-host=127.0.0.1 --mysql-port="${PORT[$t]}" \
                    --mysql-user=app --mysql-password=app_pw --mysql-db=app --tables=4 --table-size=100000 \
                    --threads="$th" --time="$SECS" --db-ps-mode="$mode" --report-interval=0 run 2>&1) || true
                cpu=NA
                q=$(awk '/queries:/{print $2; exit}' <<<"$res")
                qps=$(awk '/queries:/{gsub(/[()]/,"",$3); print $3; exit}' <<<"$res")
                err=$(awk '/ignored errors:/{print $3; exit}' <<<"$res")
                if [ -n "$pid" ] && [ -n "$q" ]; then
                    c1=$(cpu_ticks "$pid")
                    cpu=$(awk -v a="$c0" -v b="$c1" -v q="$q" -v hz="$HZ" 'BEGIN{printf "%.2f", (b-a)/hz*1e6/q}')
                fi
                [ -n "$qps" ] || { qps=FAIL; echo "$res" | tail -20 >&2; }
                echo -e "$mode\t$th\t$t\t$((r + 1))\t$qps\t${err:-NA}\t$cpu\t$(loadavg)" | tee -a "$TSV"
                sleep 1
            done
        done
    done
done

# Medians and ratios
python3 - "$TSV" <<'PY'
import csv, sys, statistics as st
rows = list(csv.DictReader(open(sys.argv[1]), delimiter='\t'))
keys = sorted({(r['mode'], int(r['threads'])) for r in rows})
print("mode     threads  direct(med)  funnel4(med) ratio  funnel8(med) ratio  per-round ratios f4 / f8   cpu us/q f4 f8")
for mode, th in keys:
    sel = lambda t: [r for r in rows if r['mode'] == mode and int(r['threads']) == th and r['target'] == t]
    q = lambda t: [float(r['qps']) for r in sel(t) if r['qps'] != 'FAIL']
    d, f4, f8 = q('direct'), q('funnel4'), q('funnel8')
    md = st.median(d) if d else float('nan')
    m4 = st.median(f4) if f4 else float('nan')
    m8 = st.median(f8) if f8 else float('nan')
    rr4 = [round(a / b, 2) for a, b in zip(f4, d)]
    rr8 = [round(a / b, 2) for a, b in zip(f8, d)]
    c = lambda t: [float(r['funnel_cpu_us_per_q']) for r in sel(t) if r['funnel_cpu_us_per_q'] not in ('NA', '')]
    print(f"{mode:8} {th:7} {md:12.0f} {m4:12.0f} {m4/md:5.2f} {m8:12.0f} {m8/md:5.2f}  {rr4} / {rr8}  "
          f"{st.median(c('funnel4')) if c('funnel4') else 'NA'} {st.median(c('funnel8')) if c('funnel8') else 'NA'}")
PY
