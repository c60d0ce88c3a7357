//! A real replication set on this machine: a primary and replicas, each a
//! private MariaDB server of its own ([`MariaDb::with_args`]), replicating
//! with GTID (`MASTER_USE_GTID = slave_pos`), as the funnel's users run
//! them: a funnel on every replica host in front of its local mysqld.
//!
//! Every server creates the test accounts itself when it starts; the
//! replicas then start replicating from the primary's binlog position of
//! that moment, so the accounts are not created twice.

use std::time::Duration;

use mysql::prelude::Queryable;

use super::mariadb::MariaDb;

/// The account the replicas log in to the primary with.
const REPL_USER: &str = "funnel_repl";
const REPL_PASS: &str = "repl-pw";

pub struct Replication {
    pub primary: MariaDb,
    pub replicas: Vec<MariaDb>,
}

impl Replication {
    /// A primary and `replicas` replicas (read_only), replicating.
    pub fn start(replicas: usize) -> Replication {
        let primary = MariaDb::with_args(&binlog_args(1));
        primary.admin_sql(&format!(
            "CREATE USER '{REPL_USER}'@'127.0.0.1' IDENTIFIED BY '{REPL_PASS}';\n\
             GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'127.0.0.1'"
        ));
        let replicas: Vec<MariaDb> = (0..replicas)
            .map(|i| {
                let mut args = binlog_args(i as u32 + 2);
                args.push("--read-only=1".into());
                MariaDb::with_args(&args)
            })
            .collect();
        let set = Replication { primary, replicas };
        let position = set.primary_position();
        for replica in &set.replicas {
            replica.admin_sql(&format!(
                "SET GLOBAL gtid_slave_pos = '{position}';\n\
                 CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
                   MASTER_USER = '{REPL_USER}', MASTER_PASSWORD = '{REPL_PASS}', \
                   MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1;\n\
                 START SLAVE",
                set.primary.port
            ));
        }
        set.wait_caught_up(Duration::from_secs(30));
        set
    }

    /// The primary's `@@gtid_binlog_pos`: every transaction it has logged.
    pub fn primary_position(&self) -> String {
        let rows: Vec<String> = self.primary.admin_query("SELECT @@gtid_binlog_pos");
        rows.into_iter().next().unwrap_or_default()
    }

    /// Waits until every replica has applied what the primary has logged.
    pub fn wait_caught_up(&self, timeout: Duration) {
        let position = self.primary_position();
        for (i, replica) in self.replicas.iter().enumerate() {
            let waited: Vec<Option<i64>> = replica.admin_query(&format!(
                "SELECT MASTER_GTID_WAIT('{position}', {})",
                timeout.as_secs_f64()
            ));
            assert_eq!(
                waited.first().copied().flatten(),
                Some(0),
                "replica {i} did not reach the primary's position {position} within {timeout:?}: \
                 {:?}\n--- its error log ---\n{}",
                self.replica_state(i),
                replica.error_log_tail()
            );
        }
    }

    /// An account created on the primary (and so, by replication, on every
    /// replica), from 127.0.0.1, with mysql_native_password and `grants`
    /// (e.g. "SLAVE MONITOR ON *.*"; empty: none but USAGE); returns once
    /// every replica has it.
    pub fn account(&self, user: &str, password: &str, grants: &str) {
        self.primary.admin_sql(&format!(
            "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED VIA mysql_native_password \
               USING PASSWORD('{password}')"
        ));
        if !grants.is_empty() {
            self.primary
                .admin_sql(&format!("GRANT {grants} TO '{user}'@'127.0.0.1'"));
        }
        self.wait_caught_up(Duration::from_secs(30));
    }

    /// Stops replica i's replication (IO and SQL threads).
    pub fn stop_replica(&self, i: usize) {
        self.replicas[i].admin_sql("STOP SLAVE");
    }

    /// Starts replica i's replication again.
    pub fn start_replica(&self, i: usize) {
        self.replicas[i].admin_sql("START SLAVE");
    }

    /// Makes replica i apply each transaction `delay` after the primary
    /// logged it (`MASTER_DELAY`, whole seconds; zero: no delay). Its
    /// replication is stopped and started again to change it.
    pub fn set_replica_delay(&self, i: usize, delay: Duration) {
        self.replicas[i].admin_sql(&format!(
            "STOP SLAVE;\n\
             CHANGE MASTER TO MASTER_DELAY = {};\n\
             START SLAVE",
            delay.as_secs()
        ));
    }

    /// Replica i's `Slave_IO_Running`, `Slave_SQL_Running` and last errors.
    pub fn replica_state(&self, i: usize) -> Vec<(String, String)> {
        let mut conn = self.replicas[i].admin_conn();
        let Ok(Some(row)) = conn.query_first::<mysql::Row, _>("SHOW SLAVE STATUS") else {
            return Vec::new();
        };
        [
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Last_IO_Error",
            "Last_SQL_Error",
        ]
        .iter()
        .map(|name| {
            let value: Option<String> = row.get(*name).flatten();
            (name.to_string(), value.unwrap_or_default())
        })
        .collect()
    }
}

/// Options of a server that logs what it does, for replication by GTID.
fn binlog_args(server_id: u32) -> Vec<String> {
    vec![
        format!("--server-id={server_id}"),
        "--log-bin=binlog".into(),
        "--binlog-format=ROW".into(),
        "--log-slave-updates=1".into(),
        "--gtid-strict-mode=1".into(),
    ]
}
