//! A user's own limits (`[pool]`/`[user]` `max_concurrency`, `rate_limit`)
//! on every statement of its clients, against a real MariaDB: the flooding
//! user never runs more statements on mysqld at once than its limit (counted
//! in mysqld's own process list), a rule's stricter limit still holds on
//! top of it, and another user's statements go on meanwhile. The mechanism
//! only: the latency it buys the other user is measured by
//! scripts/bench/12-fairness.sh, not asserted on a noisy machine.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sql::watch_peak;
use common::{FunnelConfig, MariaDb, PASS_A, PASS_B, USER_A, USER_B};
use mysql::prelude::Queryable;

/// `clients` clients of funnel_a each run `rounds` times `sql`; returns
/// the most statements containing `marker` mysqld ran at once meanwhile.
fn flood_peak(
    db: &MariaDb,
    funnel: &common::FunnelProcess,
    clients: usize,
    rounds: usize,
    sql: &'static str,
    marker: &str,
) -> u64 {
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let mut c = funnel.conn(USER_A, PASS_A);
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    c.query_drop(sql).expect("a flooding statement");
                }
            })
        })
        .collect();
    let watcher = watch_peak(db.admin_conn(), marker, done.clone());
    for t in threads {
        t.join().expect("flooding client");
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher")
}

#[test]
fn a_users_limits_hold_its_statements_and_not_another_users() {
    let db = MariaDb::new();
    let funnel = FunnelConfig::empty()
        .user(USER_A, PASS_A, &["max_concurrency = 2"])
        .user(USER_B, PASS_B, &["rate_limit = 5", "rate_burst = 2"])
        .backend_port(db.port)
        .pool("connections = 6\nqueue_timeout_ms = 20000")
        .section("[rule one_report]\npattern = \"ul_report\"\nmax_concurrency = 1\n")
        // One event loop: with several, each holds its share of a limit,
        // one at least (README, "Several event loops").
        .funnel("threads = 1")
        .rust_log("warn")
        .start();

    // Six clients of funnel_a, six connections: without its limit mysqld
    // would run six at once. funnel_b's reads go on meanwhile (funnel_b
    // has no max_concurrency; its rate_limit is far above this loop's).
    let b_done = Arc::new(AtomicBool::new(false));
    let b = {
        let mut c = funnel.conn(USER_B, PASS_B);
        let b_done = b_done.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            for _ in 0..3 {
                let one: u32 = c.query_first("SELECT 1").unwrap().unwrap();
                assert_eq!(one, 1);
            }
            b_done.store(true, Ordering::Relaxed);
        })
    };
    let began = Instant::now();
    let peak = flood_peak(
        &db,
        &funnel,
        6,
        3,
        "SELECT SLEEP(0.3), 'ul_flood'",
        "ul_flood",
    );
    let flood_took = began.elapsed();
    assert_eq!(peak, 2, "funnel_a's statements on mysqld at once");
    // 18 statements of 0.3 s, two at a time: 2.7 s at least; funnel_b's
    // three reads were done long before (its statements were not held).
    assert!(flood_took >= Duration::from_millis(2600), "{flood_took:?}");
    b.join().expect("funnel_b's client");
    assert!(b_done.load(Ordering::Relaxed));

    // A rule's stricter limit on top of the user's: one at a time.
    let peak = flood_peak(
        &db,
        &funnel,
        3,
        2,
        "SELECT SLEEP(0.3), 'ul_report'",
        "ul_report",
    );
    assert_eq!(peak, 1, "the rule's max_concurrency under the user's");

    // funnel_b's rate_limit: a burst of 2, then 5 per second: 12 reads
    // take 2 s at least.
    let mut c = funnel.conn(USER_B, PASS_B);
    let began = Instant::now();
    for i in 0..12u32 {
        let v: u32 = c.exec_first("SELECT ?", (i,)).unwrap().unwrap();
        assert_eq!(v, i);
    }
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "12 paced reads in {took:?}"
    );
}

/// A user's limit alone, with no `[rule]` in the file: the statements it
/// holds run as room frees up (the rules' machinery runs for user limits
/// too, not only when rules exist).
#[test]
fn a_users_limit_works_without_any_rule() {
    let db = MariaDb::new();
    let funnel = FunnelConfig::empty()
        .user(USER_A, PASS_A, &["max_concurrency = 2"])
        .backend_port(db.port)
        .pool("connections = 6\nqueue_timeout_ms = 20000")
        .rust_log("warn")
        .start();
    let peak = flood_peak(
        &db,
        &funnel,
        6,
        3,
        "SELECT SLEEP(0.2) AS ul_alone",
        "ul_alone",
    );
    assert_eq!(peak, 2, "funnel_a ran {peak} statements at once");
}
