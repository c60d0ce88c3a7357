#!/usr/bin/env bash
# Every measurement of docs/performance.md, in the order they were run
# (about 35 minutes on the 2-core machine). Results go to $OUT (/tmp/perf-out).
# Each script can be run on its own once 00-setup.sh has run; see the
# comment at the top of each for its knobs (ROUNDS, SECS, CLIENTS, ...).
set -euo pipefail
D=$(dirname "$0")
bash "$D/00-setup.sh"                       # build, private MariaDB on :3420, sysbench tables
bash "$D/01-sysbench.sh"                    # target 1
bash "$D/02-4000-clients.sh"                # target 2 (closed loop, open loop at 80% of direct's best)
OPEN_ONLY=1 RATE=21500 TAG=-21500 ROUNDS=2 bash "$D/02-4000-clients.sh"   # target 2, open loop below capacity
bash "$D/03-fairness.sh"                    # target 3
bash "$D/04-memory.sh"                      # target 4, clients with a default database (-D app)
NODB=1 COUNTS=10000 bash "$D/04-memory.sh"  # target 4, clients without a default database
NODB=1 COUNTS=19000 bash "$D/04-memory.sh"
bash "$D/04b-massif.sh"                     # target 4 evidence: heap profile with 2,000 idle clients
bash "$D/05-cpu.sh"                         # target 5: CPU/query, syscalls/query, perf, callgrind
python3 "$D/callgrind-by-file.py" /tmp/perf-out/callgrind.out.1 20004
BACKEND=/tmp/perf-mdb/mysqld.sock TAG=-unix CLIENTS_LIST=64 SKIP_B=1 SKIP_C=1 bash "$D/05-cpu.sh"
bash "$D/06-latency.sh"                     # target 6
bash "$D/07-churn.sh"                       # target 7 (+ unix socket vs TCP)
bash "$D/07b-churn-nodb.sh"                 # target 7 evidence
bash "$D/09-restart.sh"                     # restart without dropping clients, 500 clients
cp /tmp/perf-out/4000-closed.svg "$D/../../docs/perf-4000-clients.svg"
bash /tmp/perf-wt/scripts/mariadb-local.sh stop /tmp/perf-mdb
