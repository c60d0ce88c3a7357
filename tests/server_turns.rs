//! A server's `max_concurrency` and the turns users take at it, against a
//! real MariaDB: all users' statements together never run more at once
//! than the limit (counted in mysqld's own process list); a user whose
//! backlog is deep cannot take every freed place from a user with one
//! command (without turns, the other user would wait for the whole flood);
//! and a client inside a transaction is never held by the limit (it may
//! hold the locks the running statements wait for). The mechanism only:
//! the latency it buys is measured by scripts/bench/12-fairness.sh.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sql::{running_like as running, watch_peak};
use common::{FunnelConfig, MariaDb, PASS_A, PASS_B, USER_A, USER_B};
use mysql::prelude::Queryable;

#[test]
fn a_flooding_user_cannot_take_every_turn_on_a_shared_server() {
    let db = MariaDb::new();
    let admin_port = common::free_port();
    let funnel = FunnelConfig::empty()
        .user(USER_A, PASS_A, &[])
        .user(USER_B, PASS_B, &[])
        .backend_port(db.port)
        .backend("max_concurrency = 2")
        // One event loop: with several, each holds its share of the
        // server's limit and its own turns (README, "Several event loops").
        .funnel("threads = 1")
        .pool("connections = 6\nqueue_timeout_ms = 30000")
        .admin(admin_port, "adminpw")
        .rust_log("warn")
        .start();

    // funnel_a floods: 8 clients, 8 statements of 0.2 s each, two at a
    // time: 6.4 s at least. Its backlog is never empty meanwhile.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = watch_peak(db.admin_conn(), "srvturn_", done.clone());
    let began = Instant::now();
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let mut c = funnel.conn(USER_A, PASS_A);
            std::thread::spawn(move || {
                for _ in 0..8 {
                    c.query_drop("SELECT SLEEP(0.2), 'srvturn_a'")
                        .expect("a flooding statement");
                }
            })
        })
        .collect();

    // funnel_b, one client, one statement at a time (text protocol: one
    // command each): each waits for funnel_a's turn and its own, two ends
    // of the running statements (about 0.2 s), then runs. Without turns
    // every freed place would go to funnel_a's backlog, and funnel_b would
    // wait for the whole flood (about 6 s).
    std::thread::sleep(Duration::from_millis(500));
    let mut b = funnel.conn(USER_B, PASS_B);
    let mut slowest = Duration::ZERO;
    for i in 0..5u32 {
        let asked = Instant::now();
        let v: u32 = b
            .query_first(format!("SELECT {i} + SLEEP(0.05) * 0, 'srvturn_b'"))
            .expect("funnel_b's statement")
            .map(|(v, _): (u32, String)| v)
            .expect("a row");
        assert_eq!(v, i);
        slowest = slowest.max(asked.elapsed());
    }
    let b_done_at = began.elapsed();
    for t in flood {
        t.join().expect("flooding client");
    }
    let flood_took = began.elapsed();
    done.store(true, Ordering::Relaxed);
    let peak = watcher.join().expect("watcher");

    assert!(peak <= 2, "{peak} statements ran at once on mysqld");
    assert_eq!(peak, 2, "the flood never filled the limit");
    assert!(flood_took >= Duration::from_millis(6300), "{flood_took:?}");
    assert!(
        slowest < Duration::from_millis(1500),
        "funnel_b's slowest statement took {slowest:?} under the flood"
    );
    assert!(
        b_done_at + Duration::from_millis(2000) < flood_took,
        "funnel_b finished at {b_done_at:?}, the flood at {flood_took:?}"
    );

    // The console says what happened.
    let mut admin = mysql::Conn::new(common::admin::admin_opts(admin_port, "admin", "adminpw"))
        .expect("console login");
    let row: mysql::Row = admin
        .query_first("SHOW SERVERS")
        .expect("SHOW SERVERS")
        .expect("a server");
    let limit: Option<u64> = row.get("max_concurrency").expect("max_concurrency");
    let waits: u64 = row.get("turn_waits").expect("turn_waits");
    assert_eq!(limit, Some(2));
    assert!(waits >= 5, "turn_waits = {waits}");
}

#[test]
fn a_transaction_holding_locks_is_never_held_by_the_limit() {
    let db = MariaDb::new();
    {
        let mut root = db.admin_conn();
        root.query_drop(
            "CREATE TABLE IF NOT EXISTS funnel_test.srvturn_rows (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
        )
        .unwrap();
        root.query_drop("REPLACE INTO funnel_test.srvturn_rows VALUES (1, 0)")
            .unwrap();
    }
    let funnel = FunnelConfig::empty()
        .user(USER_A, PASS_A, &[])
        .user(USER_B, PASS_B, &[])
        .backend_port(db.port)
        .backend("max_concurrency = 2")
        .pool("connections = 4\nqueue_timeout_ms = 30000")
        .rust_log("warn")
        .start();

    // funnel_b takes the row's lock in a transaction.
    let mut b = funnel.conn(USER_B, PASS_B);
    b.query_drop("BEGIN").unwrap();
    b.query_drop("UPDATE funnel_test.srvturn_rows SET v = v + 1 WHERE id = 1")
        .unwrap();
    // Two of funnel_a's updates of that row fill the limit, waiting for
    // the lock; a third waits for a turn.
    // (Connected first: a new client's own first statements wait for a
    // turn like any.)
    let conns: Vec<_> = (0..3).map(|_| funnel.conn(USER_A, PASS_A)).collect();
    let writers: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                c.query_drop("UPDATE funnel_test.srvturn_rows SET v = v + 1 WHERE id = 1")
                    .expect("funnel_a's update")
            })
        })
        .collect();
    let mut root = db.admin_conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(&mut root, "srvturn_rows SET") < 2 {
        assert!(
            Instant::now() < deadline,
            "funnel_a's updates never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(running(&mut root, "srvturn_rows SET"), 2, "the limit");
    // funnel_b's COMMIT runs although the limit is reached: held, it
    // would wait for statements that wait for it (until mysqld's
    // innodb_lock_wait_timeout, 50 s).
    let asked = Instant::now();
    b.query_drop("COMMIT").unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "COMMIT took {:?}",
        asked.elapsed()
    );
    for w in writers {
        w.join().expect("funnel_a's writer");
    }
    let v: u32 = b
        .query_first("SELECT v FROM funnel_test.srvturn_rows WHERE id = 1")
        .unwrap()
        .unwrap();
    assert_eq!(v, 4);
}
