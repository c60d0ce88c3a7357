#!/usr/bin/env bash
# Run the funnel for real.
#
#   bash scripts/run.sh                  # private MariaDB in .run/ + a funnel in front of it
#   bash scripts/run.sh /etc/funnel.conf # a funnel with your own config
#
# Without a config, this sets up (once) a private MariaDB server in .run/mariadb
# on port 3316, writes .run/funnel.conf, and runs the funnel in the foreground
# on 127.0.0.1:3307. Stop it with Ctrl-C (the MariaDB server keeps running:
# `bash scripts/mariadb-local.sh stop .run/mariadb` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin funnel

if [ $# -ge 1 ]; then
    exec target/release/funnel --config "$1"
fi

mkdir -p .run
port=3316
bash scripts/mariadb-local.sh start "$PWD/.run/mariadb" "$port"

conf=.run/funnel.conf
if [ ! -f "$conf" ]; then
    cat > "$conf" <<CONF
# Written by scripts/run.sh: a funnel in front of the private MariaDB in .run/.
# funnel.conf.example documents every key.
[funnel]
listen = 127.0.0.1:3307
unix_socket = $PWD/.run/funnel.sock
log_level = info

[backend]
address = $PWD/.run/mariadb/mysqld.sock

[pool]
connections = 8

[user app]
password = app_pw
CONF
fi

cat <<MSG
funnel: starting with $conf
  connect with:  mariadb -h127.0.0.1 -P3307 -uapp -papp_pw app
  or:            mariadb -S $PWD/.run/funnel.sock -uapp -papp_pw app
MSG
exec target/release/funnel --config "$conf"
