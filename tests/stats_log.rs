//! The periodic summary log line (`stats_log_interval_ms`) and how log
//! lines name clients (connection id, address and port).

mod common;

use std::time::Duration;

use common::FunnelConfig;
use mysql::prelude::Queryable;

#[test]
fn a_summary_line_is_logged_each_interval_and_clients_are_named_by_address() {
    let f = FunnelConfig::user_a()
        .funnel("stats_log_interval_ms = 400")
        .pool("connections = 1")
        .rust_log("info,funnel=debug")
        .start();
    let mut c = f.conn(common::USER_A, common::PASS_A);
    for _ in 0..50 {
        let _: Option<i64> = c.query_first("SELECT 1").unwrap();
    }
    let id: Option<u32> = c.query_first("SELECT CONNECTION_ID()").unwrap();
    let id = id.unwrap();
    assert!(
        f.wait_for_log(
            "stats: 1 clients (0 queued, 0 running, 0 pinned), backlog 0, ",
            Duration::from_secs(5)
        ),
        "no summary line:\n{}",
        f.log()
    );
    let log = f.log();
    let line = log
        .lines()
        .find(|l| l.contains("stats: 1 clients") && !l.contains(" 0 queries/s"))
        .unwrap_or_else(|| panic!("a summary line with the queries counted:\n{log}"));
    assert!(
        line.contains("queries/s, end to end p50 ") && line.contains(" ms p99 "),
        "{line}"
    );
    // The client's lines carry its id, address and port.
    drop(c);
    assert!(
        f.wait_for_log(&format!("client {id} (127.0.0.1:"), Duration::from_secs(5)),
        "client lines name id, address and port:\n{}",
        f.log()
    );
}
