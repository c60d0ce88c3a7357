#!/usr/bin/env bash
# What TLS towards clients costs per query: sysbench point selects through
# the funnel, clients with TLS (--mysql-ssl=on) and without, alternating
# rounds on the same funnel; q/s and the funnel's CPU per query (utime +
# stime over the round). The backend connection is plain in both.
#
#   bash scripts/bench/10b-tls-cpu.sh              # 16 threads, 3 rounds of 10 s each
#   THREADS=64 ROUNDS=2 bash scripts/bench/10b-tls-cpu.sh
#
# Needs what 10-tls-memory.sh needs (it makes the certificates), and
# sysbench. Output: $OUT/tls-cpu.tsv
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FUNNEL=${FUNNEL:-$HERE/../../target/release/funnel}
MYPORT=${MYPORT:-3440}
FPORT=${FPORT:-3441}
OUT=${OUT:-/tmp/tls-bench-out}
THREADS=${THREADS:-16}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CERTS=$OUT/certs
[ -f "$CERTS/server.crt" ] || N=1 ROUNDS=0 bash "$HERE/10-tls-memory.sh"
# sysbench 1.0 reads cacert.pem, client-cert.pem and client-key.pem from
# its working directory when --mysql-ssl=on (the funnel asks for no client
# certificate; the files must exist).
SB=$OUT/sysbench-tls
mkdir -p "$SB"
cp "$CERTS/ca.crt" "$SB/cacert.pem"
cp "$CERTS/server.crt" "$SB/client-cert.pem"
cp "$CERTS/server.key" "$SB/client-key.pem"
SBARGS=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=app --mysql-password=app_pw
    --mysql-db=app --tables=1 --table-size=10000)
(cd "$SB" && sysbench oltp_point_select "${SBARGS[@]}" --mysql-port="$MYPORT" prepare >/dev/null 2>&1) || true

conf=$OUT/funnel-tls-cpu.conf
cat >"$conf" <<EOF
[funnel]
listen = 127.0.0.1:$FPORT
log_level = warn
tls_cert = $CERTS/server.crt
tls_key = $CERTS/server.key
[backend]
address = 127.0.0.1:$MYPORT
[pool]
connections = 4
[user app]
password = app_pw
EOF
"$FUNNEL" -c "$conf" >>"$OUT/funnel-tls-cpu.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for ((i = 0; i < 100; i++)); do
    mariadb --no-defaults -h127.0.0.1 -P"$FPORT" -uapp -papp_pw app -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
done
TSV=$OUT/tls-cpu.tsv
echo -e "round\tkind\tthreads\tqps\tfunnel_cpu_us_per_query" >"$TSV"
hz=$(getconf CLK_TCK)
for ((r = 1; r <= ROUNDS; r++)); do
    for kind in plain tls; do
        ssl=off
        [ "$kind" = tls ] && ssl=on
        t0=$(cpu_ticks "$pid")
        res=$(cd "$SB" && sysbench oltp_point_select "${SBARGS[@]}" --mysql-port="$FPORT" \
            --mysql-ssl=$ssl --threads="$THREADS" --time="$SECS" --db-ps-mode=disable run)
        t1=$(cpu_ticks "$pid")
        queries=$(awk '/queries:/{print $2; exit}' <<<"$res")
        qps=$(awk -F'[( ]+' '/queries:/{print $4; exit}' <<<"$res")
        us=$(awk -v d=$((t1 - t0)) -v q="$queries" -v hz="$hz" 'BEGIN{printf "%.1f", d / hz * 1e6 / q}')
        log "round $r $kind: $qps q/s, funnel $us us CPU per query"
        echo -e "$r\t$kind\t$THREADS\t$qps\t$us" | tee -a "$TSV"
    done
done
