//! The funnel where its users put it: on a replica host, in front of a
//! mysqld that replicates from a primary (GTID) and is `read_only`. Every
//! answer through the funnel must be the replica's own: rows that arrived
//! by replication, the read-only refusal of a write, `MASTER_GTID_WAIT`
//! (how applications wait for their writes to reach a replica), the
//! replica's status; and the funnel's own statements (session replay,
//! resets, read-backs) must not be refused by `read_only`.

mod common;

use std::time::Duration;

use common::replication::Replication;
use common::{FunnelConfig, PASS_A, PASS_B, TEST_DB, USER_A, USER_B};
use mysql::prelude::Queryable;
use mysql::{Conn, Row, Value};

/// All rows of a statement's answer, or its error (code and message).
fn answer(c: &mut Conn, sql: &str) -> Result<Vec<Vec<Value>>, (u16, String)> {
    c.query::<Row, _>(sql)
        .map(|rows| rows.into_iter().map(|r| r.unwrap()).collect())
        .map_err(|e| match e {
            mysql::Error::MySqlError(m) => (m.code, m.message),
            other => (0, format!("client error: {other}")),
        })
}

#[test]
fn a_funnel_in_front_of_a_gtid_replica_answers_as_the_replica() {
    let set = Replication::start(1);
    let replica = &set.replicas[0];
    set.primary.admin_sql(&format!(
        "CREATE TABLE {TEST_DB}.rb_items (id INT PRIMARY KEY, name VARCHAR(20));\n\
         INSERT INTO {TEST_DB}.rb_items VALUES (1, 'one'), (2, 'two'), (3, 'three')"
    ));
    set.wait_caught_up(Duration::from_secs(30));

    // Two backend connections for eight clients: every client's session is
    // replayed on whichever connection runs its next statement.
    let funnel = FunnelConfig::new()
        .backend_port(replica.port)
        .pool("connections = 2")
        .rust_log("warn")
        .start();

    // USER_B has privileges on the test database only: read_only refuses
    // its writes. Each funnel client has a direct twin on the replica.
    let mut pairs: Vec<(Conn, Conn)> = (0..8)
        .map(|_| (funnel.conn(USER_B, PASS_B), replica.conn(USER_B, PASS_B)))
        .collect();
    let steps: &[&str] = &[
        "SELECT id, name FROM rb_items ORDER BY id",
        "INSERT INTO rb_items VALUES (9, 'nine')",
        "SET @mine = CONNECTION_ID() > 0",
        "SET sql_mode = 'ANSI_QUOTES', time_zone = '+03:00'",
        "SET NAMES latin1",
        "SET autocommit = 0",
        "SELECT COUNT(*) FROM rb_items",
        "CREATE TEMPORARY TABLE rb_tmp (a INT)",
        "INSERT INTO rb_tmp VALUES (1), (2)",
        "SELECT SUM(a) FROM rb_tmp",
        "COMMIT",
        "SET autocommit = 1",
        "SELECT @@read_only, @@sql_mode, @@time_zone, @@character_set_client, @mine",
        "SELECT 1/0",
        "SHOW WARNINGS",
        "DROP TEMPORARY TABLE rb_tmp",
        "UPDATE rb_items SET name = 'x'",
    ];
    for round in 0..3 {
        for (i, (f, d)) in pairs.iter_mut().enumerate() {
            // Clients interleave: client i starts its round i steps in.
            for k in 0..steps.len() {
                let sql = steps[(k + i + round) % steps.len()];
                let (rf, rd) = (answer(f, sql), answer(d, sql));
                assert_eq!(
                    rf, rd,
                    "round {round} client {i}: {sql}: the funnel's answer differs from the replica's"
                );
                if sql.starts_with("INSERT INTO rb_items") || sql.starts_with("UPDATE") {
                    let code = rf.as_ref().err().map(|e| e.0);
                    assert_eq!(code, Some(1290), "{sql}: read_only must refuse the write");
                }
            }
        }
    }

    // A write on the primary, then the wait applications use to read their
    // own writes on a replica: through the funnel as directly.
    set.primary.admin_sql(&format!(
        "INSERT INTO {TEST_DB}.rb_items VALUES (4, 'four')"
    ));
    let position = set.primary_position();
    let mut f = funnel.conn(USER_A, PASS_A);
    let waited = answer(
        &mut f,
        &format!("SELECT MASTER_GTID_WAIT('{position}', 30)"),
    );
    assert_eq!(
        waited,
        Ok(vec![vec![Value::Bytes(b"0".to_vec())]]),
        "MASTER_GTID_WAIT"
    );
    let rows = answer(&mut f, "SELECT name FROM rb_items WHERE id = 4");
    assert_eq!(rows, Ok(vec![vec![Value::Bytes(b"four".to_vec())]]));

    // The replica's status, as an operator (ALL PRIVILEGES) sees it.
    let mut d = replica.conn(USER_A, PASS_A);
    let status = |c: &mut Conn| -> Vec<(String, String)> {
        let row: Row = c
            .query_first("SHOW SLAVE STATUS")
            .expect("SHOW SLAVE STATUS")
            .expect("a replica has a status row");
        [
            "Master_Port",
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Using_Gtid",
        ]
        .iter()
        .map(|n| (n.to_string(), row.get::<String, _>(*n).unwrap_or_default()))
        .collect()
    };
    let (through, direct) = (status(&mut f), status(&mut d));
    assert_eq!(through, direct, "SHOW SLAVE STATUS through the funnel");
    assert_eq!(through[1].1, "Yes", "replication runs: {through:?}");

    // Nothing the funnel ran on the replica stopped or diverged it.
    let state = set.replica_state(0);
    assert!(
        state
            .iter()
            .all(|(k, v)| !k.starts_with("Last_") || v.is_empty()),
        "replica errors: {state:?}"
    );
}
