#!/usr/bin/env bash
# Run the funnel for real.
#
#   bash scripts/run.sh                  # private MariaDB in .run/ + a funnel in front of it
#   bash scripts/run.sh /etc/funnel.conf # a funnel with your own config (a relative
#                                        # path is taken from your current directory)
#   bash scripts/run.sh --stop           # stop the private MariaDB left running in .run/
#
# Without a config, this sets up (once) a private MariaDB server in .run/mariadb
# on port 3316, writes .run/funnel.conf, and runs the funnel in the foreground
# on 127.0.0.1:3307, with the admin console on 127.0.0.1:6033 (user admin,
# password generated once and printed) and the stats port on 127.0.0.1:9033.
# Stop it with Ctrl-C; the MariaDB server keeps running until
# `bash scripts/run.sh --stop`.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
root=$PWD

if [ "${1:-}" = --stop ]; then
    exec bash scripts/mariadb-local.sh stop "$root/.run/mariadb"
fi

cargo build --release --bin funnel

if [ $# -ge 1 ]; then
    # The funnel runs in the caller's directory: a relative path (and any
    # relative path the funnel reports) means what the caller meant.
    cd "$caller"
    exec "$root/target/release/funnel" --config "$1"
fi

mkdir -p .run
port=3316
bash scripts/mariadb-local.sh start "$root/.run/mariadb" "$port"

conf=.run/funnel.conf
if [ ! -f "$conf" ]; then
    cat > "$conf" <<CONF
# Written by scripts/run.sh: a funnel in front of the private MariaDB in .run/.
# funnel.conf.example documents every key.
[funnel]
listen = 127.0.0.1:3307
unix_socket = $root/.run/funnel.sock
log_level = info

[backend]
address = $root/.run/mariadb/mysqld.sock

[pool]
connections = 8

[user app]
password = app_pw
CONF
fi
# The admin console and the stats port, also in a .run/funnel.conf written
# before they were part of it.
if ! grep -q '^\[admin\]' "$conf"; then
    admin_pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    cat >> "$conf" <<CONF

[admin]
listen = 127.0.0.1:6033
user = admin
password = $admin_pw
CONF
fi
if ! grep -q '^\[stats\]' "$conf"; then
    printf '\n[stats]\nlisten = 127.0.0.1:9033\n' >> "$conf"
fi
admin_pw=$(sed -n '/^\[admin\]/,/^\[/s/^password *= *//p' "$conf")

cat <<MSG
funnel: starting with $conf
  connect with:  mariadb -h127.0.0.1 -P3307 -uapp -papp_pw app
  or:            mariadb -S $root/.run/funnel.sock -uapp -papp_pw app
  admin console: mariadb -h127.0.0.1 -P6033 -uadmin -p$admin_pw -e 'SHOW POOLS'
  stats:         FUNNEL_ADMIN_PASSWORD=$admin_pw $root/target/release/funnel stats --admin 127.0.0.1:6033 --user admin
                 curl 127.0.0.1:9033/metrics
  stop MariaDB:  bash $root/scripts/run.sh --stop   (after stopping the funnel with Ctrl-C)
MSG
exec target/release/funnel --config "$conf"
