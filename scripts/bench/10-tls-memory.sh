#!/usr/bin/env bash
# RSS per idle TLS client against per idle plain client, measured in the
# same run, alternating: for each round, a fresh funnel with a certificate
# (made here with openssl), a baseline VmRSS after one query, then N
# clients that log in (PyMySQL, ssl_ca=..., or without TLS) and stay idle;
# VmRSS once all N are connected and it has settled. Rounds alternate plain
# and TLS so that drift on the noisy machine hits both alike.
#
#   bash scripts/bench/10-tls-memory.sh            # N=2000, 3 rounds each
#   N=5000 ROUNDS=2 bash scripts/bench/10-tls-memory.sh
#
# Needs a MariaDB with user app/app_pw and database app
# (scripts/mariadb-local.sh start DIR PORT; MYPORT names the port), the
# funnel at $FUNNEL (default: this tree's target/release/funnel), python3
# with PyMySQL, openssl. Output: $OUT/tls-memory.tsv
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FUNNEL=${FUNNEL:-$HERE/../../target/release/funnel}
MYPORT=${MYPORT:-3440}
FPORT=${FPORT:-3441}
SPORT=${SPORT:-3443}
OUT=${OUT:-/tmp/tls-bench-out}
N=${N:-2000}
ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

CERTS=$OUT/certs
mkdir -p "$CERTS"
if [ ! -f "$CERTS/server.crt" ]; then
    (
        cd "$CERTS"
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=bench-ca \
            -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj /CN=funnel -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName = IP:127.0.0.1, DNS:localhost\n' >ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 1 \
            -days 30 -extfile ext -out server.crt 2>/dev/null
    )
fi

# hold.py N TLS: connect N clients, print "ready", wait for stdin to close.
cat >"$OUT/hold.py" <<'EOF'
import sys, pymysql
n, tls, port, ca = int(sys.argv[1]), sys.argv[2] == "tls", int(sys.argv[3]), sys.argv[4]
conns = []
for i in range(n):
    # PyMySQL takes TLS whenever offered unless told not to.
    kw = dict(ssl_ca=ca, ssl_verify_identity=True) if tls else dict(ssl_disabled=True)
    conns.append(pymysql.connect(host="127.0.0.1", port=port, user="app",
                                 password="app_pw", autocommit=None, **kw))
assert (type(conns[0]._sock).__name__ == "SSLSocket") == tls
print("ready", flush=True)
sys.stdin.read()
EOF

TSV=$OUT/tls-memory.tsv
echo -e "round\tkind\tclients\trss_before_kb\trss_connected_kb\tper_client_bytes" >"$TSV"
for ((r = 1; r <= ROUNDS; r++)); do
    for kind in plain tls; do
        conf=$OUT/funnel-tls-bench.conf
        cat >"$conf" <<EOF
[funnel]
listen = 127.0.0.1:$FPORT
max_client_connections = 20000
log_level = warn
handshake_timeout_ms = 30000
tls_cert = $CERTS/server.crt
tls_key = $CERTS/server.key
[backend]
address = 127.0.0.1:$MYPORT
[pool]
connections = 4
[user app]
password = app_pw
[stats]
listen = 127.0.0.1:$SPORT
EOF
        "$FUNNEL" -c "$conf" >>"$OUT/funnel-tls-bench.log" 2>&1 &
        pid=$!
        for ((i = 0; i < 100; i++)); do
            mariadb --no-defaults -h127.0.0.1 -P"$FPORT" -uapp -papp_pw app -e 'SELECT 1' >/dev/null 2>&1 && break
            sleep 0.1
        done
        # Both kinds warm the same paths once (a TLS login and a plain one).
        mariadb --no-defaults -h127.0.0.1 -P"$FPORT" -uapp -papp_pw --ssl --ssl-ca="$CERTS/ca.crt" app -e 'SELECT 1' >/dev/null
        sleep 1
        before=$(rss_kb "$pid")
        coproc HOLD { python3 "$OUT/hold.py" "$N" "$kind" "$FPORT" "$CERTS/ca.crt"; }
        read -r ready <&"${HOLD[0]}"
        [ "$ready" = ready ] || { log "clients failed"; kill "$pid"; exit 1; }
        sleep 3
        after=$(rss_kb "$pid")
        per=$(((after - before) * 1024 / N))
        log "round $r $kind: $N clients, RSS $before -> $after kB: $per bytes per client"
        echo -e "$r\t$kind\t$N\t$before\t$after\t$per" | tee -a "$TSV"
        exec {HOLD[1]}>&-
        wait "$HOLD_PID" 2>/dev/null || true
        kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    done
done
