//! Pins that end with their client: the DB-API page pattern (autocommit
//! off, a few selects, disconnect) leaves a transaction open and nothing
//! else. The funnel ends such a pin with one `ROLLBACK` instead of a reset,
//! and keeps the connection for the next pinned client instead of closing
//! it and opening another; a pin that may hold anything besides the
//! transaction (user variables, a temporary table, a named lock, a session
//! variable it cannot replay) still gets the full reset, so the next client
//! on that connection sees nothing of it.
//!
//! Each test has a funnel of its own, logging in to mysqld as an account of
//! its own, so its backend connections can be told apart in mysqld's
//! process list. Set FUNNEL_E2E_REQUIRE_CLIENTS=1 to make a missing PyMySQL
//! a failure instead of a skip.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, FunnelConfig, FunnelProcess, TEST_DB};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

const ADMIN_USER: &str = "admin";
const ADMIN_PW: &str = "adm";

struct Env {
    f: FunnelProcess,
    admin_port: u16,
    user: String,
    pw: String,
}

/// A funnel with `pool` as its `[pool]` section and an admin console;
/// waits until its shared connections are up.
fn start(tag: &str, pool: &str, connections: usize) -> Env {
    let db = common::mariadb();
    let (user, pw) = common::private_account(&format!("pr_{tag}"));
    let admin_port = common::free_port();
    let f = FunnelConfig::empty()
        .pool(pool)
        .user(&user, &pw, &[])
        .admin(admin_port, ADMIN_PW)
        .admin_line(&format!("user = {ADMIN_USER}"))
        .rust_log("info")
        .start();
    db.wait_connections(&user, connections, Duration::from_secs(10));
    Env {
        f,
        admin_port,
        user,
        pw,
    }
}

impl Env {
    /// A client in database funnel_test, autocommit on.
    fn client(&self) -> Conn {
        let opts = OptsBuilder::from_opts(self.f.opts(&self.user, &self.pw));
        Conn::new(opts).unwrap_or_else(|e| panic!("cannot connect through the funnel: {e}"))
    }

    /// A client as Python's DB-API drivers make one: autocommit off.
    fn dbapi_client(&self) -> Conn {
        let mut c = self.client();
        c.query_drop("SET autocommit = 0").unwrap();
        c
    }

    /// A counter of this pool's `SHOW STATS` row.
    fn stat(&self, counter: &str) -> u64 {
        let mut a = common::admin_console(self.admin_port, ADMIN_USER, ADMIN_PW);
        common::admin::pool_counter(&mut a, "SHOW STATS", &self.user, counter)
    }

    /// backend_resets, pin_rollbacks, backend_connects.
    fn ends(&self) -> (u64, u64, u64) {
        (
            self.stat("backend_resets"),
            self.stat("pin_rollbacks"),
            self.stat("backend_connects"),
        )
    }

    /// Waits until `resets + rollbacks` reach `n` (a departed client's
    /// backend is released asynchronously), and returns the counters.
    fn wait_ends(&self, n: u64) -> (u64, u64, u64) {
        let mut last = (0, 0, 0);
        let done = wait_until(Duration::from_secs(20), || {
            last = self.ends();
            last.0 + last.1 >= n
        });
        assert!(done, "pins ended: {last:?}, expected {n}");
        // The step after a ROLLBACK (or the reset's set-up) finishes too.
        thread::sleep(Duration::from_millis(100));
        self.ends()
    }

    /// mysqld thread ids of the funnel's backend connections.
    fn backend_threads(&self) -> Vec<u64> {
        common::mariadb().threads_of(&self.user, None)
    }

    /// A new client whose commands run on backend connection `thread`:
    /// every other backend connection of the pool (connections = 1) is
    /// killed, so the one left is the pool's only one.
    fn next_client_on(&self, thread: u64) -> Conn {
        let db = common::mariadb();
        for id in self.backend_threads() {
            if id != thread {
                db.admin_sql(&format!("KILL {id}"));
            }
        }
        let alone = wait_until(Duration::from_secs(10), || {
            self.backend_threads() == vec![thread]
        });
        assert!(
            alone,
            "backends: {:?}, kept {thread}",
            self.backend_threads()
        );
        let mut c = self.client();
        let mut on = 0;
        let found = wait_until(Duration::from_secs(10), || {
            // A command that met a killed backend runs again on the other.
            on = c
                .query_first::<u64, _>("SELECT @@pseudo_thread_id")
                .unwrap()
                .unwrap();
            on == thread
        });
        assert!(found, "the next client runs on {on}, not {thread}");
        c
    }
}

fn thread_of(c: &mut Conn) -> u64 {
    c.query_first("SELECT @@pseudo_thread_id").unwrap().unwrap()
}

/// A table of 100 rows (id, v) in funnel_test.
fn table(tag: &str) -> String {
    let t = format!("{TEST_DB}.{}", common::unique_name(tag));
    common::admin_sql(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v INT) ENGINE = InnoDB"
    ));
    common::admin_sql(&format!(
        "INSERT INTO {t} SELECT seq, seq * 10 FROM {TEST_DB}.seq_1_to_100"
    ));
    t
}

/// One page: connect, autocommit off, 3 point selects, disconnect.
fn page(env: &Env, t: &str, k: usize) {
    let mut c = env.dbapi_client();
    for j in 0..3 {
        let id = (k * 3 + j) % 100 + 1;
        let v: Option<i64> = c
            .query_first(format!("SELECT v FROM {t} WHERE id = {id}"))
            .unwrap();
        assert_eq!(v, Some(id as i64 * 10));
    }
    drop(c); // COM_QUIT, the transaction still open
}

/// Pages cost no new mysqld connection and no reset: each ends with a
/// ROLLBACK, on connections kept for the next page; pages at once never
/// hold more than `connections + max_pinned_backends`, and the kept
/// connections are closed once pins no longer need them.
#[test]
fn dbapi_pages_end_with_a_rollback_on_kept_connections() {
    let env = start("pages", "connections = 2\nmax_pinned_backends = 4", 2);
    let t = table("pr_pages");
    for k in 0..3 {
        page(&env, &t, k);
    }
    let (resets, rollbacks, connects) = env.wait_ends(3);
    assert_eq!((resets, rollbacks), (0, 3), "warm-up pages");
    // One at a time: the same connections every time.
    for k in 0..60 {
        page(&env, &t, k);
    }
    let after = env.wait_ends(63);
    assert_eq!(
        (after.0, after.1, after.2 - connects),
        (0, 63, 0),
        "60 pages one after another: resets, rollbacks, new backend connections"
    );
    // Four at a time: at most one new connection per page at once.
    let handles: Vec<_> = (0..4)
        .map(|th| {
            let opts = OptsBuilder::from_opts(env.f.opts(&env.user, &env.pw));
            let t = t.clone();
            thread::spawn(move || {
                for k in 0..25 {
                    let mut c = Conn::new(opts.clone()).unwrap();
                    c.query_drop("SET autocommit = 0").unwrap();
                    for j in 0..3 {
                        let id = (th * 300 + k * 3 + j) % 100 + 1;
                        let v: Option<i64> = c
                            .query_first(format!("SELECT v FROM {t} WHERE id = {id}"))
                            .unwrap();
                        assert_eq!(v, Some(id as i64 * 10));
                    }
                }
            })
        })
        .collect();
    let db = common::mariadb();
    let mut most = 0;
    while !handles.iter().all(|h| h.is_finished()) {
        most = most.max(db.connections_of(&env.user));
        thread::sleep(Duration::from_millis(20));
    }
    for h in handles {
        h.join().unwrap();
    }
    let end = env.wait_ends(163);
    assert_eq!(end.0, 0, "a page was reset");
    assert_eq!(end.1, 163);
    assert!(
        end.2 - after.2 <= 4,
        "100 pages, 4 at a time: {} new backend connections",
        end.2 - after.2
    );
    assert!(most <= 6, "mysqld saw {most} connections for 2 + 4 pinned");
    // No pin for a while: the kept connections are closed again.
    db.wait_connections_at_most(&env.user, 2, Duration::from_secs(30));
    common::admin_sql(&format!("DROP TABLE {t}"));
}

/// The same with PyMySQL, whose default is autocommit off.
#[test]
fn pymysql_pages_end_with_a_rollback() {
    if !common::clients::python_has("pymysql") {
        common::clients::skip(
            "pymysql_pages_end_with_a_rollback",
            "python3 with PyMySQL is not installed",
        );
        return;
    }
    let env = start("pypages", "connections = 2\nmax_pinned_backends = 4", 2);
    let t = table("pr_pypages");
    let script = r#"
import sys, pymysql
port, user, pw, table, pages = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
for k in range(pages):
    c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw,
                        database="funnel_test", ssl_disabled=True)
    assert not c.get_autocommit()
    cur = c.cursor()
    for j in range(3):
        i = (k * 3 + j) % 100 + 1
        cur.execute(f"SELECT v FROM {table} WHERE id = %s", (i,))
        assert cur.fetchall() == ((i * 10,),), i
    c.close()
"#;
    let run = |pages: usize| {
        let (port, pages) = (env.f.port.to_string(), pages.to_string());
        common::clients::python_ok(script, &[&port, &env.user, &env.pw, &t, &pages]);
    };
    run(2);
    let (_, _, connects) = env.wait_ends(2);
    run(40);
    let (resets, rollbacks, now) = env.wait_ends(42);
    assert_eq!(
        (resets, rollbacks, now - connects),
        (0, 42, 0),
        "resets, rollbacks, new backend connections"
    );
    common::admin_sql(&format!("DROP TABLE {t}"));
}

/// The departing client's transaction is rolled back, not committed, and
/// its row locks go with it.
#[test]
fn a_departed_clients_transaction_is_rolled_back() {
    let env = start("rolledback", "connections = 1\nmax_pinned_backends = 1", 1);
    let t = table("pr_rb");
    let mut a = env.dbapi_client();
    a.query_drop(format!("INSERT INTO {t} VALUES (1000, 1)"))
        .unwrap();
    a.query_drop(format!("UPDATE {t} SET v = -1 WHERE id = 1"))
        .unwrap();
    let v: Option<i64> = a
        .query_first(format!("SELECT v FROM {t} WHERE id = 2 FOR UPDATE"))
        .unwrap();
    assert_eq!(v, Some(20));
    let mine = thread_of(&mut a);
    drop(a);
    let (resets, rollbacks, _) = env.wait_ends(1);
    assert_eq!((resets, rollbacks), (0, 1));
    let mut root = common::mariadb().admin_conn();
    root.query_drop("SET SESSION innodb_lock_wait_timeout = 2")
        .unwrap();
    // No row lock is left: these would wait and fail.
    root.query_drop(format!("UPDATE {t} SET v = v WHERE id IN (1, 2)"))
        .unwrap();
    let rows: Vec<(i64, i64)> = root
        .query(format!(
            "SELECT id, v FROM {t} WHERE id IN (1, 2, 1000) ORDER BY id"
        ))
        .unwrap();
    assert_eq!(
        rows,
        vec![(1, 10), (2, 20)],
        "the transaction was committed"
    );
    // The connection is kept, without the transaction.
    let mut c = env.next_client_on(mine);
    let open: Option<i64> = c.query_first("SELECT @@in_transaction").unwrap();
    assert_eq!(open, Some(0));
    common::admin_sql(&format!("DROP TABLE {t}"));
}

/// A session variable the funnel tracks and replays (here sql_mode and
/// time_zone, set inside the transaction) does not need a reset: the
/// ROLLBACK's connection gets its defaults back, and the next client on it
/// has its own session.
#[test]
fn replayable_variables_of_a_transaction_are_given_back() {
    let env = start("vars", "connections = 1\nmax_pinned_backends = 1", 1);
    let t = table("pr_vars");
    let mut a = env.dbapi_client();
    let _: Option<i64> = a
        .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
        .unwrap();
    a.query_drop("SET sql_mode = 'ANSI', time_zone = '+05:00', completion_type = 'RELEASE'")
        .unwrap();
    let mine = thread_of(&mut a);
    drop(a);
    let (resets, rollbacks, _) = env.wait_ends(1);
    assert_eq!((resets, rollbacks), (0, 1));
    // completion_type = RELEASE did not make the ROLLBACK close it.
    assert_eq!(env.stat("backend_lost"), 0);
    let mut c = env.next_client_on(mine);
    let got: (i64, i64, i64, i64, i64) = c
        .query_first(
            "SELECT @@session.sql_mode = @@global.sql_mode, @@session.time_zone = @@global.time_zone, \
             @@session.completion_type = @@global.completion_type, @@autocommit, @@in_transaction",
        )
        .unwrap()
        .unwrap();
    assert_eq!(got, (1, 1, 1, 1, 0), "the next client's session");
    common::admin_sql(&format!("DROP TABLE {t}"));
}

/// What else a transaction's client may leave: each is still reset, and
/// the next client on that connection sees nothing of it.
#[test]
fn a_transaction_with_anything_else_is_still_reset() {
    struct Case {
        tag: &'static str,
        /// Run by the departing client, autocommit off, after a select.
        sql: &'static str,
        /// Run by the next client on the same connection: true when it
        /// sees nothing of it.
        clean: fn(&mut Conn) -> bool,
    }
    fn one(c: &mut Conn, sql: &str) -> bool {
        c.query_first::<i64, _>(sql).unwrap() == Some(1)
    }
    let cases = [
        Case {
            tag: "uvar",
            sql: "SET @pr_secret = 42",
            clean: |c| {
                one(
                    c,
                    "SELECT @pr_secret IS NULL AND \
                     (SELECT COUNT(*) FROM information_schema.USER_VARIABLES) = 0",
                )
            },
        },
        Case {
            tag: "temp",
            sql: "CREATE TEMPORARY TABLE pr_tmp (x INT)",
            clean: |c| {
                matches!(
                    c.query_drop("SELECT * FROM pr_tmp"),
                    Err(mysql::Error::MySqlError(ref e)) if e.code == 1146
                )
            },
        },
        Case {
            tag: "lock",
            sql: "DO GET_LOCK('pr_named_lock', 0)",
            clean: |c| {
                let direct: Vec<i64> =
                    common::mariadb().admin_query("SELECT IS_FREE_LOCK('pr_named_lock')");
                direct == vec![1] && one(c, "SELECT IS_FREE_LOCK('pr_named_lock')")
            },
        },
        Case {
            tag: "insert_id",
            sql: "SET SESSION insert_id = 777",
            clean: |c| one(c, "SELECT @@session.insert_id = 0"),
        },
    ];
    let handles: Vec<_> = cases
        .into_iter()
        .map(|case| {
            thread::spawn(move || {
                let env = start(case.tag, "connections = 1\nmax_pinned_backends = 1", 1);
                let t = table(&format!("pr_{}", case.tag));
                let mut a = env.dbapi_client();
                let _: Option<i64> = a
                    .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
                    .unwrap();
                a.query_drop(case.sql)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.tag));
                let mine = thread_of(&mut a);
                drop(a);
                let (resets, rollbacks, _) = env.wait_ends(1);
                assert_eq!(
                    (resets, rollbacks),
                    (1, 0),
                    "{}: reset, not rolled back",
                    case.tag
                );
                let mut c = env.next_client_on(mine);
                assert!((case.clean)(&mut c), "{}: the next client saw it", case.tag);
                common::admin_sql(&format!("DROP TABLE {t}"));
            })
        })
        .collect();
    // Every case's failure is shown before the test fails.
    let failed = handles.into_iter().map(|h| h.join()).filter(Result::is_err);
    assert_eq!(failed.count(), 0, "cases failed (see above)");
}

/// Connections kept after their pinned clients left wait for pins: the
/// pool still runs at most `connections` commands at once.
#[test]
fn kept_connections_do_not_add_to_concurrency() {
    let env = start("cap", "connections = 1\nmax_pinned_backends = 2", 1);
    let t = table("pr_cap");
    // Two pins at once, then both leave: two connections are kept.
    let mut a = env.dbapi_client();
    let mut b = env.dbapi_client();
    for c in [&mut a, &mut b] {
        let _: Option<i64> = c
            .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
            .unwrap();
    }
    drop(a);
    drop(b);
    env.wait_ends(2);
    assert_eq!(common::mariadb().connections_of(&env.user), 3);
    let started = Instant::now();
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let opts = OptsBuilder::from_opts(env.f.opts(&env.user, &env.pw));
            thread::spawn(move || {
                let mut c = Conn::new(opts).unwrap();
                let _: Option<i64> = c.query_first("SELECT SLEEP(1)").unwrap();
                started.elapsed()
            })
        })
        .collect();
    let mut took: Vec<Duration> = sleepers.into_iter().map(|h| h.join().unwrap()).collect();
    took.sort();
    assert!(
        took[1] >= Duration::from_millis(1900),
        "two SLEEP(1) ran at once with connections = 1: {took:?}"
    );
    common::admin_sql(&format!("DROP TABLE {t}"));
}
