#!/usr/bin/env bash
# Where the memory of an idle client goes, plain and TLS: the funnel runs
# under heaptrack, N PyMySQL clients log in (as in 10-tls-memory.sh) and
# stay idle, then the funnel is killed (SIGKILL, so nothing is freed): what
# heaptrack counts as leaked is what was live with the clients idle. The
# live bytes are summed by the allocating call site (its innermost frames
# outside the allocator) and divided by N. Sites whose bytes per client do
# not change with N are per client; the others (slabs, histograms, the
# pool's buffers) are fixed costs spread over N.
#
#   bash scripts/bench/10c-tls-heap.sh             # N=1000, both kinds
#   N=500 KINDS=tls bash scripts/bench/10c-tls-heap.sh
#
# Needs what 10-tls-memory.sh needs (it makes the certificates and the
# client script) and heaptrack (apt-get install heaptrack). Output:
# $OUT/heap-KIND.txt (bytes per client by call site).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FUNNEL=${FUNNEL:-$HERE/../../target/release/funnel}
MYPORT=${MYPORT:-3440}
FPORT=${FPORT:-3441}
OUT=${OUT:-/tmp/tls-bench-out}
N=${N:-1000}
KINDS=${KINDS:-plain tls}
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
CERTS=$OUT/certs
[ -f "$CERTS/server.crt" ] && [ -f "$OUT/hold.py" ] || N=1 ROUNDS=0 bash "$HERE/10-tls-memory.sh"

# by_site.py FOLDED N: live bytes per client by allocating call site.
cat >"$OUT/by_site.py" <<'EOF'
import collections, re, sys
path, n = sys.argv[1], int(sys.argv[2])
allocator = re.compile(r'^(alloc::|_RNv|_RIN|core::|std::|__rust|malloc|hashbrown::raw|_\$LT\$T|_\$LT\$alloc|_\$LT\$core|aws_lc_0_\d+_0_OPENSSL_malloc)')
sites, total = collections.Counter(), 0
for line in open(path):
    stack, _, cost = line.rstrip('\n').rpartition(' ')
    cost = int(cost)
    total += cost
    frames = [re.sub(r'::h[0-9a-f]{16}', '', f) for f in reversed(stack.split(';'))]
    named = [f for f in frames if not allocator.match(f)][:3]
    sites[' <- '.join(named)] += cost
print(f'live heap {total} B with {n} idle clients: {total / n:.0f} B per client, fixed costs included')
for site, cost in sites.most_common():
    if cost / n < 8:
        break
    print(f'{cost / n:8.1f} B  {site[:300]}')
EOF

conf=$OUT/funnel-tls-heap.conf
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
EOF
for kind in $KINDS; do
    rm -f "$OUT/heaptrack.$kind".*
    heaptrack -o "$OUT/heaptrack.$kind" "$FUNNEL" -c "$conf" >"$OUT/funnel-tls-heap-$kind.log" 2>&1 &
    tracer=$!
    for ((i = 0; i < 100; i++)); do
        mariadb --no-defaults -h127.0.0.1 -P"$FPORT" -uapp -papp_pw app -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.2
    done
    mariadb --no-defaults -h127.0.0.1 -P"$FPORT" -uapp -papp_pw --ssl --ssl-ca="$CERTS/ca.crt" app -e 'SELECT 1' >/dev/null
    pid=$(pgrep -n -f "^$FUNNEL -c $conf")
    coproc HOLD { python3 "$OUT/hold.py" "$N" "$kind" "$FPORT" "$CERTS/ca.crt"; }
    read -r ready <&"${HOLD[0]}"
    [ "$ready" = ready ] || { log "clients failed"; kill -KILL "$pid"; exit 1; }
    sleep 2
    kill -KILL "$pid"
    wait "$tracer" 2>/dev/null || true
    exec {HOLD[1]}>&-
    wait "$HOLD_PID" 2>/dev/null || true
    heaptrack_print -f "$OUT/heaptrack.$kind".* -F "$OUT/heap-$kind.folded" \
        --flamegraph-cost-type leaked >/dev/null
    python3 "$OUT/by_site.py" "$OUT/heap-$kind.folded" "$N" >"$OUT/heap-$kind.txt"
    log "$kind: $(head -1 "$OUT/heap-$kind.txt")"
    head -25 "$OUT/heap-$kind.txt"
done
