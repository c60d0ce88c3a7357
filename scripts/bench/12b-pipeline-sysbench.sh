#!/usr/bin/env bash
# Pipelined backends against MariaDB: sysbench oltp_point_select (4 tables x
# 100,000 rows, text protocol), TH threads (64), direct vs a funnel with
# `pipeline_depth = 1` vs one with `= DEPTH` (4), both CONNS (4) connections,
# rotating order per round (round r starts with target r mod 3), ROUNDS (3)
# rounds of 10 s. Needs the private MariaDB on $MYPORT with the sysbench
# tables (see 00-setup.sh; or scripts/mariadb-local.sh start $MDB $MYPORT and
# `sysbench oltp_point_select ... prepare`). Funnels on P1..P1+2, P2..P2+2.
# Output: one line per run (round, target, q/s, load average) on stdout.
. "$(dirname "$0")/common.sh"
TH=${TH:-64}
CONNS=${CONNS:-4}
DEPTH=${DEPTH:-4}
P1=${P1:-3811}
P2=${P2:-3814}
FPORT=$P1 APORT=$((P1 + 1)) SPORT=$((P1 + 2)) BACKEND_LINES="pipeline_depth = 1" start_funnel "$CONNS"
PID1=$FUNNEL_PID
FPORT=$P2 APORT=$((P2 + 1)) SPORT=$((P2 + 2)) BACKEND_LINES="pipeline_depth = $DEPTH" start_funnel "$CONNS"
PID2=$FUNNEL_PID
trap 'stop_funnel $PID1; stop_funnel $PID2' EXIT
declare -A PORT=([direct]=$MYPORT [depth1]=$P1 [depthN]=$P2)
T=(direct depth1 depthN)
for ((r = 0; r < ${ROUNDS:-3}; r++)); do
    for ((k = 0; k < 3; k++)); do
        t=${T[$(((r + k) % 3))]}
        q=$(sysbench oltp_point_select --mysql-host=127.0.0.1 --mysql-port="${PORT[$t]}" --mysql-user=app \
            --mysql-password=app_pw --mysql-db=app --tables=4 --table-size=100000 --threads="$TH" --time=10 \
            --db-ps-mode=disable --report-interval=0 run 2>&1 | awk '/queries:/ {gsub(/\(/,""); print $3}')
        echo -e "$r\t$t\t$q\t$(loadavg)"
        sleep 1
    done
done
curl -s "http://127.0.0.1:$((P2 + 2))/metrics" | grep '^funnel_pipelined_total' || true
