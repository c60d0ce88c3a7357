//! Prepared statements must not hold mysqld's statement slots after their
//! clients are done with them.
//!
//! mysqld counts prepared statements server-wide (`Prepared_stmt_count`)
//! and refuses more than `max_prepared_stmt_count` (ERR 1461). Through the
//! funnel, each backend connection prepares clients' statements on demand
//! and caches them; these tests check, against the real MariaDB and against
//! a direct connection doing the same, that
//! - after a client closes its statements, the count is what it is directly
//!   by the time the client's next command runs (client libraries' own tests
//!   read it right after a close);
//! - a client that leaves with statements open leaves none behind;
//! - with a small `max_prepared_stmt_count` and more backends than it has
//!   room for copies, clients' prepares and executes still succeed (the
//!   backends' cached copies make room), and only a client that really holds
//!   more statements than the limit gets ERR 1461, as directly.
//!
//! `Prepared_stmt_count` is server-wide, so the tests run one at a time.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{mysql_direct, FunnelConfig, FunnelProcess, PASS_A, USER_A};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

const ADMIN_PW: &str = "slots-admin";

/// A funnel with `connections` shared backends and an admin console on
/// `admin_port` (0: none).
fn start_funnel_with_admin(connections: usize, admin_port: u16) -> FunnelProcess {
    let mut cfg = FunnelConfig::user_a()
        .pool(&format!("connections = {connections}"))
        .rust_log("warn");
    if admin_port != 0 {
        cfg = cfg.admin(admin_port, ADMIN_PW);
    }
    cfg.start()
}

fn start_funnel(connections: usize) -> FunnelProcess {
    start_funnel_with_admin(connections, 0)
}

/// A column of the admin console's `SHOW STATS` row for the pool.
fn stat(admin_port: u16, column: &str) -> u64 {
    let mut admin = common::admin_console(admin_port, "admin", ADMIN_PW);
    common::admin::pool_counter(&mut admin, "SHOW STATS", USER_A, column)
}

fn connect(port: u16) -> Conn {
    // No client-side statement cache: every prep is a COM_STMT_PREPARE and
    // every close a COM_STMT_CLOSE.
    let opts = OptsBuilder::from_opts(common::opts(USER_A, PASS_A, port)).stmt_cache_size(0);
    Conn::new(opts).unwrap_or_else(|e| panic!("connect to port {port}: {e}"))
}

/// `Prepared_stmt_count`, read by `c` (as the client libraries' tests do).
fn count_seen_by(c: &mut Conn) -> i64 {
    common::sql::global_status(c, "Prepared_stmt_count")
}

fn count_now() -> i64 {
    count_seen_by(&mut mysql_direct("root", ""))
}

/// Waits (up to 5 s) for the server's count to reach `want`; the count then.
fn settle_to(want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = count_now();
        if n == want || Instant::now() > deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to 5 s) for the server's count to be at most `max`; the count
/// then.
fn settle_to_at_most(max: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = count_now();
        if n <= max || Instant::now() > deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Restores max_prepared_stmt_count when dropped.
struct RestoreLimit(i64);

impl Drop for RestoreLimit {
    fn drop(&mut self) {
        let _ = mysql_direct("root", "")
            .query_drop(format!("SET GLOBAL max_prepared_stmt_count = {}", self.0));
    }
}

/// One client's prepare / execute / close cycles, reading the server's
/// count after every few closes with its very next command. The counts it
/// saw, and the results of its executes.
fn cycles(port: u16, n: usize, distinct: bool) -> (Vec<i64>, Vec<i64>) {
    let mut c = connect(port);
    let mut counts = Vec::new();
    let mut results = Vec::new();
    for i in 0..n {
        let sql = if distinct {
            format!("SELECT ? + {i}")
        } else {
            "SELECT ? + 1".to_string()
        };
        let st = c.prep(&sql).unwrap_or_else(|e| panic!("prepare #{i}: {e}"));
        let v: Option<i64> = c
            .exec_first(&st, (i as i64,))
            .unwrap_or_else(|e| panic!("execute #{i}: {e}"));
        results.push(v.expect("a row"));
        c.close(st).unwrap_or_else(|e| panic!("close #{i}: {e}"));
        if i % 25 == 24 || i + 1 == n {
            counts.push(count_seen_by(&mut c));
        }
    }
    (counts, results)
}

#[test]
fn prepare_execute_close_cycles_leave_the_count_as_directly() {
    let _s = common::serial();
    let base = settle_to(0);
    assert_eq!(base, 0, "statements left on the server before the test");
    for distinct in [false, true] {
        let direct = cycles(common::mariadb().port, 300, distinct);
        assert!(direct.0.iter().all(|&n| n == 0), "direct: {:?}", direct.0);
        for connections in [1usize, 2, 4] {
            let f = start_funnel(connections);
            let got = cycles(f.port, 300, distinct);
            assert_eq!(
                got.0, direct.0,
                "connections = {connections}, distinct SQL = {distinct}: \
                 Prepared_stmt_count read right after every 25th close"
            );
            assert!(
                got.1 == direct.1,
                "connections = {connections}, distinct SQL = {distinct}: results differ"
            );
            drop(f);
            settle_to(0);
        }
    }
}

#[test]
fn a_statement_closed_while_another_client_holds_it_stays_usable() {
    let _s = common::serial();
    assert_eq!(settle_to(0), 0);
    let f = start_funnel(2);
    let mut a = connect(f.port);
    let mut b = connect(f.port);
    let sa = a.prep("SELECT ? * 2").unwrap();
    let sb = b.prep("SELECT ? * 2").unwrap();
    let v: Option<i64> = a.exec_first(&sa, (4,)).unwrap();
    assert_eq!(v, Some(8));
    let v: Option<i64> = b.exec_first(&sb, (5,)).unwrap();
    assert_eq!(v, Some(10));
    a.close(sa).unwrap();
    // B still holds the same SQL: its copies stay, and it still works on
    // every backend (a shared copy counts once, where directly each client
    // has its own: never more than directly).
    let n = count_seen_by(&mut a);
    assert!((1..=2).contains(&n), "{n} statements while B holds one");
    for i in 0..10 {
        let v: Option<i64> = b.exec_first(&sb, (i,)).unwrap();
        assert_eq!(v, Some(2 * i));
    }
    b.close(sb).unwrap();
    assert_eq!(count_seen_by(&mut b), 0, "both closed");
    assert_eq!(count_seen_by(&mut a), 0);
}

#[test]
fn several_clients_over_few_backends_leave_no_statements() {
    let _s = common::serial();
    assert_eq!(settle_to(0), 0);
    let run = |port: u16| {
        let workers: Vec<_> = (0..6)
            .map(|w| {
                thread::spawn(move || {
                    let mut c = connect(port);
                    for i in 0..60 {
                        // Some SQL shared by all workers, some of their own.
                        let sql = if i % 2 == 0 {
                            format!("SELECT ? + {}", i % 6)
                        } else {
                            format!("SELECT ? + {} + {w}", 1000 * w + i)
                        };
                        let st = c.prep(&sql).unwrap_or_else(|e| panic!("prepare: {e}"));
                        for k in 0..3i64 {
                            let _: Option<i64> = c
                                .exec_first(&st, (k,))
                                .unwrap_or_else(|e| panic!("execute: {e}"));
                        }
                        c.close(st).unwrap();
                    }
                    let _: Option<i64> = c.query_first("SELECT 1").unwrap();
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
    };
    run(common::mariadb().port);
    assert_eq!(settle_to(0), 0, "direct");
    let f = start_funnel(2);
    run(f.port);
    // Closes queued on a backend that was busy go when it is next idle.
    assert_eq!(settle_to(0), 0, "through the funnel, after every close");
    // The funnel itself still works, and its clients' statements too.
    let mut c = connect(f.port);
    let st = c.prep("SELECT ? + 1").unwrap();
    let v: Option<i64> = c.exec_first(&st, (1,)).unwrap();
    assert_eq!(v, Some(2));
}

#[test]
fn a_client_leaving_with_open_statements_leaves_none() {
    let _s = common::serial();
    assert_eq!(settle_to(0), 0);
    let f = start_funnel(2);
    let mut stay = connect(f.port);
    let kept = stay.prep("SELECT ? + 7").unwrap();
    {
        let mut c = connect(f.port);
        for i in 0..40 {
            let st = c.prep(format!("SELECT ? + {i}")).unwrap();
            let _: Option<i64> = c.exec_first(&st, (i,)).unwrap();
        }
        // The same SQL as the client that stays.
        let st = c.prep("SELECT ? + 7").unwrap();
        let _: Option<i64> = c.exec_first(&st, (1,)).unwrap();
        assert!(count_now() >= 41);
    } // COM_QUIT with 41 statements open
      // Only the statement the other client holds is left: one copy on each
      // backend that prepared it (the leaving client's prepare of the same
      // SQL may have run on the other backend).
    let n = settle_to_at_most(2);
    assert!((1..=2).contains(&n), "{n} statements left");
    let v: Option<i64> = stay.exec_first(&kept, (1,)).unwrap();
    assert_eq!(v, Some(8));
    // A client that vanishes without COM_QUIT (its process exits with
    // statements prepared: the funnel sees the socket close).
    vanish_with_statements(f.port, 10);
    let m = settle_to_at_most(n);
    assert!((1..=n).contains(&m), "{m} statements left");
    stay.close(kept).unwrap();
    assert_eq!(count_seen_by(&mut stay), 0);
}

/// mysql-connector-python prepares `n` statements (server-side, binary
/// protocol), executes them, and exits without closing anything.
fn vanish_with_statements(port: u16, n: usize) {
    let script = format!(
        r#"
import os, mysql.connector
c = mysql.connector.connect(host="127.0.0.1", port={port}, user="{USER_A}", password="{PASS_A}", database="{db}", use_pure=True)
curs = [c.cursor(prepared=True) for _ in range({n})]
for i, cur in enumerate(curs):
    cur.execute("SELECT %s - {{}}".format(i), (i,))
    assert cur.fetchall()[0][0] == 0
print("prepared", flush=True)
os._exit(0)
"#,
        db = common::TEST_DB
    );
    let stdout = common::clients::python_ok(&script, &[]);
    assert!(stdout.contains("prepared"), "python client: {stdout}");
}

/// Two clients, each holding `per_client` statements, execute them in turn
/// from two threads, `rounds` times; every error is returned.
fn hold_and_execute(port: u16, per_client: usize, rounds: usize) -> Vec<String> {
    let workers: Vec<_> = (0..2)
        .map(|w| {
            thread::spawn(move || {
                let mut errors = Vec::new();
                let mut c = connect(port);
                let mut stmts = Vec::new();
                for i in 0..per_client {
                    match c.prep(format!("SELECT ? + {} + {i}", 100 * w)) {
                        Ok(st) => stmts.push((i as i64, st)),
                        Err(e) => errors.push(format!("client {w} prepare {i}: {e}")),
                    }
                }
                for r in 0..rounds as i64 {
                    for (i, st) in &stmts {
                        match c.exec_first::<i64, _, _>(st, (r,)) {
                            Ok(Some(v)) if v == r + 100 * w as i64 + i => {}
                            Ok(v) => errors.push(format!("client {w} execute {i}: got {v:?}")),
                            Err(e) => errors.push(format!("client {w} execute {i}: {e}")),
                        }
                    }
                }
                for (_, st) in stmts {
                    let _ = c.close(st);
                }
                errors
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect()
}

#[test]
fn a_small_max_prepared_stmt_count_is_shared_by_the_backends_caches() {
    let _s = common::serial();
    assert_eq!(settle_to(0), 0);
    let global: Option<i64> = mysql_direct("root", "")
        .query_first("SELECT @@global.max_prepared_stmt_count")
        .unwrap();
    let _restore = RestoreLimit(global.unwrap());
    mysql_direct("root", "")
        .query_drop("SET GLOBAL max_prepared_stmt_count = 10")
        .unwrap();
    // Directly: two clients holding 5 statements each fit in 10.
    let direct = hold_and_execute(common::mariadb().port, 5, 30);
    assert!(direct.is_empty(), "direct: {direct:?}");
    assert_eq!(settle_to(0), 0);
    // Through 4 backends, each of which would cache its own copy of the
    // statements it runs (up to 40): the caches make room.
    let admin_port = common::free_port();
    // One event loop: a loop makes room among its own backends' cached
    // statements only (README, "Several event loops").
    let f = FunnelConfig::user_a()
        .pool("connections = 4")
        .funnel("threads = 1")
        .admin(admin_port, ADMIN_PW)
        .rust_log("warn")
        .start();
    let got = hold_and_execute(f.port, 5, 30);
    assert!(got.is_empty(), "through the funnel: {got:?}");
    assert!(
        stat(admin_port, "prepare_retries") > 0,
        "the test did not make mysqld refuse a prepare (no retry counted)"
    );
    assert!(count_now() <= 10);
    assert_eq!(settle_to(0), 0, "all closed");

    // A client's own statements beyond the limit: ERR 1461 as directly.
    let over = |port: u16| -> Vec<(usize, Option<u16>)> {
        let mut c = connect(port);
        let mut held = Vec::new();
        let mut failed = Vec::new();
        for i in 0..12 {
            match c.prep(format!("SELECT ? * {i}")) {
                Ok(st) => held.push(st),
                Err(e) => failed.push((i, common::sql::code_of(&e))),
            }
        }
        // What it holds still works.
        for st in &held {
            let _: Option<i64> = c.exec_first(st, (1,)).expect("execute");
        }
        failed
    };
    let direct = over(common::mariadb().port);
    assert_eq!(direct, vec![(10, Some(1461)), (11, Some(1461))]);
    assert_eq!(settle_to(0), 0);
    // Another client keeps a cached copy busy meanwhile on another backend.
    let mut other = connect(f.port);
    let st = other.prep("SELECT ? + 1").unwrap();
    let _: Option<i64> = other.exec_first(&st, (1,)).unwrap();
    other.close(st).unwrap();
    assert_eq!(over(f.port), direct, "through the funnel");
    assert_eq!(settle_to(0), 0);
}
