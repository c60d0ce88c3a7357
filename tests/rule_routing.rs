//! `[rule] route`: a rule sends the statements it matches to the primary or
//! to a replica of a `read_write_split` pool, over the split's own choice;
//! `route = replica` only for plain reads outside a transaction, and with
//! read-your-writes as for any read. Real replication (`@@server_id`: 1 is
//! the primary, 2 the replica).

mod common;

use std::time::Duration;

use common::replication::Replication;
use common::{FunnelConfig, PASS_A, PASS_B, TEST_DB, USER_A, USER_B};
use mysql::prelude::Queryable;

fn server_id(c: &mut mysql::Conn, sql: &str) -> u32 {
    c.query_first(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("one row")
}

#[test]
fn rules_route_statements_to_the_primary_or_a_replica() {
    let set = Replication::start(1);
    set.primary.admin_sql(&format!(
        "CREATE TABLE {TEST_DB}.rr_items (id INT PRIMARY KEY)"
    ));
    set.wait_caught_up(Duration::from_secs(30));
    let stats_port = common::free_port();
    // funnel_a splits, and its rules decide some reads: a tagged read may
    // be stale (replica), every other SELECT must be fresh (primary).
    // funnel_b has the primary only: a route to a replica does nothing.
    let funnel = FunnelConfig::empty()
        .user(USER_A, PASS_A, &["read_write_split = true"])
        .user(USER_B, PASS_B, &["servers = main"])
        .server("main", set.primary.port, &["role = primary"])
        .server("copy", set.replicas[0].port, &["role = replica"])
        .backend("server_check_interval_ms = 100\nconnect_timeout_ms = 1000")
        .pool("connections = 2")
        .stats(stats_port)
        .rust_log("info")
        .section(
            "[rule stale_ok]\npattern = \"stale ok\"\nroute = replica\n\
             [rule fresh]\nuser = funnel_a\npattern = (?i)^\\s*select\nroute = primary\n",
        )
        .start();
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            common::stats::get(stats_port, "/health?server=copy").0 == 200
        }),
        "the replica never came into rotation"
    );

    let mut a = funnel.conn(USER_A, PASS_A);
    // Without the rule the split would send this read to the replica.
    assert_eq!(server_id(&mut a, "SELECT @@server_id"), 1);
    // The same as a prepared statement (the execute is matched on its text).
    let id: u32 = a
        .exec_first("SELECT @@server_id + ?", (0,))
        .unwrap()
        .unwrap();
    assert_eq!(id, 1, "an execute routed by the rule");
    // The first rule that matches decides.
    assert_eq!(server_id(&mut a, "SELECT @@server_id /* stale ok */"), 2);
    // A replica takes plain reads only: a locking read, or a read in a
    // transaction, stays on the primary.
    assert_eq!(
        server_id(
            &mut a,
            "SELECT @@server_id FROM DUAL FOR UPDATE /* stale ok */"
        ),
        1
    );
    a.query_drop("BEGIN").unwrap();
    assert_eq!(server_id(&mut a, "SELECT @@server_id /* stale ok */"), 1);
    a.query_drop("COMMIT").unwrap();
    assert!(
        common::wait_until(Duration::from_secs(5), || server_id(
            &mut a,
            "SELECT @@server_id /* stale ok */"
        ) == 2),
        "reads routed to the replica stayed on the primary after a COMMIT"
    );
    // A write the rule matches goes to the primary (the replica is
    // read_only: it would refuse it).
    a.query_drop(format!(
        "INSERT INTO {TEST_DB}.rr_items VALUES (1) /* stale ok */"
    ))
    .unwrap();
    // Read-your-writes holds for routed reads: with the replica 2 s
    // behind, the writer's next read still sees its write.
    set.set_replica_delay(0, Duration::from_secs(2));
    a.query_drop(format!("INSERT INTO {TEST_DB}.rr_items VALUES (2)"))
        .unwrap();
    let seen: u64 = a
        .query_first(format!(
            "SELECT COUNT(*) FROM {TEST_DB}.rr_items /* stale ok */"
        ))
        .unwrap()
        .unwrap();
    assert_eq!(seen, 2, "a routed read missed the client's own write");
    set.set_replica_delay(0, Duration::ZERO);

    // A pool of one role: the rule has nowhere else to send it.
    let mut b = funnel.conn(USER_B, PASS_B);
    assert_eq!(server_id(&mut b, "SELECT @@server_id /* stale ok */"), 1);
}
