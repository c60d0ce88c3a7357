#!/usr/bin/env bash
# A restart without dropping clients under load: CLIENTS (500) loadtest
# clients run point selects without a pause while a second funnel is
# started with the same configuration and the first gets SIGTERM (README
# "Upgrade and restart without dropping clients"). Rounds alternate:
# baseline (the same run, no restart) and restart, ROUNDS (2) of each, so
# that the machine's drift hits both. Per round: q/s, p99, p99.9 and max
# latency of the whole window (the switch lies inside it), errors, the
# per-second q/s from --progress, and for restart rounds how long the old
# funnel took from SIGTERM to exit and how many clients it handed over.
# Output: $OUT/restart-*.{json,progress,txt}, summary on stdout.
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-500}
SECS=${SECS:-10}
CONNS=${CONNS:-8}
conf=$OUT/restart.conf
{
    printf '[funnel]\nlisten = 127.0.0.1:%s\nmax_client_connections = 20000\nlog_level = info\n' "$FPORT"
    printf 'shutdown_timeout_ms = 10000\n'
    printf '[backend]\naddress = %s\n' "$DIRECT"
    printf '[pool]\nconnections = %s\nbacklog_size = 20000\nqueue_timeout_ms = 30000\n' "$CONNS"
    printf '[user app]\npassword = app_pw\n'
    printf '[admin]\nlisten = 127.0.0.1:%s\nuser = admin\npassword = x\n' "$APORT"
    printf '[stats]\nlisten = 127.0.0.1:%s\n' "$SPORT"
} >"$conf"
flog=$OUT/restart-funnel.log
: >"$flog"

# start_one: a funnel with $conf; FUNNEL_PID. The first one waits for its
# port; a second one for its takeover.
start_one() {
    local before
    before=$(wc -l <"$flog")
    "$FUNNEL" -c "$conf" >>"$flog" 2>&1 &
    FUNNEL_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$FUNNEL_PID" 2>/dev/null || { tail -5 "$flog" >&2; return 1; }
        if tail -n +"$((before + 1))" "$flog" | grep -q -e 'stopped accepting' -e 'ready: listening'; then
            return 0
        fi
        sleep 0.05
    done
    log "funnel did not come up"
    return 1
}

start_one
OLD=$FUNNEL_PID
trap 'stop_funnel $OLD' EXIT
W=(-t "$VIA" -u app -p app_pw -D app -c "$CLIENTS" -d "$SECS" --warmup 2 --mix point=100 --progress)

round() { # tag restart(0|1)
    local tag=$1 restart=$2
    log "round $tag (restart=$restart), load $(loadavg)"
    "$LT" "${W[@]}" --json "$OUT/restart-$tag.json" >"$OUT/restart-$tag.txt" 2>"$OUT/restart-$tag.progress" &
    local lt=$!
    # Ramp-up (about 0.5 s for 500 clients) and warmup, then 3 s of the window.
    sleep 5.5
    local took=-
    local handed=-
    if [ "$restart" = 1 ]; then
        local t0 t1 before
        t0=$(date +%s.%N)
        start_one
        local new=$FUNNEL_PID
        sleep 2
        before=$(wc -l <"$flog")
        t1=$(date +%s.%N)
        kill -TERM "$OLD"
        while kill -0 "$OLD" 2>/dev/null; do sleep 0.01; done
        wait "$OLD" 2>/dev/null || true
        took=$(python3 -c "import time; print(f'{time.time() - $t1:.3f}')")
        handed=$(tail -n +"$((before + 1))" "$flog" | grep -o '[0-9]* client(s) handed over' | head -1 || true)
        log "new funnel pid $new took over $(python3 -c "print(f'{$t1 - $t0:.2f}')") s before SIGTERM; old one exited ${took} s after it ($handed)"
        OLD=$new
    fi
    wait "$lt" || true
    python3 - "$OUT/restart-$tag.json" "$tag" "$took" "$handed" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["results"][0]
l = j["latency_ms"]
e = j["errors"]["total"] + j["errors_before_window"]["total"]
print(f"{sys.argv[2]:<10} {j['qps']:8.0f} q/s  p50 {l['p50']:.2f}  p99 {l['p99']:.1f}  p99.9 {l['p99.9']:.1f}  max {l['max']:.1f} ms  "
      f"errors {e}  unfinished {j['unfinished']}  exit after SIGTERM {sys.argv[3]} s  {sys.argv[4]}")
PY
    grep -E '^\s+\[' "$OUT/restart-$tag.progress" | sed -n '3,20p' | awk '{printf "%s%s", sep, $4; sep=" "} END {print "  (q/s per second)"}'
}

for ((r = 1; r <= ROUNDS; r++)); do
    round "base-$r" 0
    round "restart-$r" 1
done
