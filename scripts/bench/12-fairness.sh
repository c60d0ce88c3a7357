#!/usr/bin/env bash
# Issue 18's fairness target: one user floods, the other's p99 stays within
# 2x of its unloaded p99. User app sends point selects open loop
# (B_CLIENTS clients, B_RATE q/s in all); user flood runs range selects
# closed loop (A_CLIENTS clients, think 0). Two funnels on the same mysqld,
# the same but for flood's [user] max_concurrency (A_LIMIT on funnel L, none
# on funnel U), and a third whose server has [backend] max_concurrency =
# S_LIMIT, shared by both users in turns (funnel T). Each round measures
# app's latency alone, with flood through U, through L and through T, in
# an order that alternates between rounds.
# Needs the MariaDB of 00-setup.sh (app.sbtest1) or any with
# `loadtest --prepare`; creates the account flood/flood_pw.
# Output: $OUT/fair12-*.json (loadtest), $OUT/fairness12.tsv, a summary.
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
B_CLIENTS=${B_CLIENTS:-4}
B_RATE=${B_RATE:-200}
A_CLIENTS=${A_CLIENTS:-64}
A_LIMIT=${A_LIMIT:-2}
CONNS=${CONNS:-8}
L_PORTS=(${L_PORTS:-3761 3762 3763})
U_PORTS=(${U_PORTS:-3764 3765 3766})
T_PORTS=(${T_PORTS:-3767 3768 3769})
S_LIMIT=${S_LIMIT:-2}

myroot -e "CREATE USER IF NOT EXISTS 'flood'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('flood_pw');
GRANT SELECT ON app.* TO 'flood'@'127.0.0.1'"

# funnel PORTS... LIMIT_LINE: a funnel with users app and flood.
start_pair_funnel() {
    FPORT=$1 APORT=$2 SPORT=$3
    shift 3
    start_funnel "$CONNS" "$DIRECT" "[user flood]" "password = flood_pw" "$@"
}
start_pair_funnel "${L_PORTS[@]}" "max_concurrency = $A_LIMIT"
PID_L=$FUNNEL_PID
start_pair_funnel "${U_PORTS[@]}"
PID_U=$FUNNEL_PID
BACKEND_LINES="max_concurrency = $S_LIMIT" start_pair_funnel "${T_PORTS[@]}"
PID_T=$FUNNEL_PID
trap 'stop_funnel "$PID_L"; stop_funnel "$PID_U"; stop_funnel "$PID_T"' EXIT

# measure NAME PORT FLOOD(0/1): app's point selects (and flood's ranges).
measure() {
    local name=$1 port=$2 flood=$3 fpid=""
    if [ "$flood" = 1 ]; then
        "$LT" -t "127.0.0.1:$port" -u flood -p flood_pw -D app -c "$A_CLIENTS" \
            -d $((SECS + 4)) --warmup 1 --mix range=100 \
            --json "$OUT/fair12-$name-flood-r$r.json" >"$OUT/fair12-$name-flood-r$r.txt" 2>&1 &
        fpid=$!
        sleep 2
    fi
    "$LT" -t "127.0.0.1:$port" -u app -p app_pw -D app -c "$B_CLIENTS" -d "$SECS" --warmup 1 \
        --rate "$B_RATE" --mix point=100 \
        --json "$OUT/fair12-$name-r$r.json" >"$OUT/fair12-$name-r$r.txt" 2>&1
    [ -z "$fpid" ] || wait "$fpid" || true
    python3 - "$OUT/fair12-$name-r$r.json" "$name" "$r" "$OUT/fair12-$name-flood-r$r.json" \
        >>"$OUT/fairness12.tsv" <<'PY'
import json, os, sys
b = json.load(open(sys.argv[1]))["results"][0]
l = b["latency_ms"]
flood_qps = ""
if os.path.exists(sys.argv[4]):
    flood_qps = f'{json.load(open(sys.argv[4]))["results"][0]["qps"]:.0f}'
errors = b["errors"]["total"]
print(f'{sys.argv[2]}\t{sys.argv[3]}\t{l["p50"]}\t{l["p99"]}\t{l["max"]}\t{b["qps"]:.0f}\t{flood_qps}\t{errors}')
PY
    sleep 1
}

printf 'phase\tround\tp50_ms\tp99_ms\tmax_ms\tapp_qps\tflood_qps\tapp_errors\n' >"$OUT/fairness12.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r (load $(loadavg))"
    if ((r % 2)); then
        measure alone "${L_PORTS[0]}" 0
        measure unlimited "${U_PORTS[0]}" 1
        measure limited "${L_PORTS[0]}" 1
        measure turns "${T_PORTS[0]}" 1
    else
        measure turns "${T_PORTS[0]}" 1
        measure limited "${L_PORTS[0]}" 1
        measure unlimited "${U_PORTS[0]}" 1
        measure alone "${L_PORTS[0]}" 0
    fi
done
column -t "$OUT/fairness12.tsv"
python3 - "$OUT/fairness12.tsv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for row in rows:
    by.setdefault(row["round"], {})[row["phase"]] = float(row["p99_ms"])
# One round's p99 may be another engineer's build: the medians over the
# rounds are the figure to read.
import statistics
med = {ph: statistics.median(p[ph] for p in by.values() if ph in p)
       for ph in ("alone", "unlimited", "limited", "turns")}
print(f'median p99 over {len(by)} rounds: alone {med["alone"]:.2f} ms, '
      f'flood unlimited {med["unlimited"]:.2f} ms ({med["unlimited"]/med["alone"]:.2f}x), '
      f'flood with its user max_concurrency {med["limited"]:.2f} ms ({med["limited"]/med["alone"]:.2f}x), '
      f'flood with the server max_concurrency in turns {med["turns"]:.2f} ms ({med["turns"]/med["alone"]:.2f}x)')
for rnd, p in sorted(by.items()):
    a = p.get("alone")
    if a:
        print(f'round {rnd}: p99 alone {a:.2f} ms; flood unlimited {p.get("unlimited", 0)/a:.2f}x, '
              f'user limit {p.get("limited", 0)/a:.2f}x, server turns {p.get("turns", 0)/a:.2f}x')
PY
