//! What the funnel answers or carries itself: LAST_INSERT_ID() and
//! CONNECTION_ID() per client on shared backends, COM_CHANGE_USER,
//! KILL QUERY with the ids clients know, the limits on prepared statements,
//! and user variables of every type carried across backends.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::sql::server_error;
use common::{FunnelConfig, FunnelProcess, PASS_A, PASS_B, TEST_DB, USER_A, USER_B};
use mysql::prelude::Queryable;
use mysql::{ChangeUserOpts, Conn};

fn start(pool: &str) -> FunnelProcess {
    start_with_admin(pool, None)
}

fn start_with_admin(pool: &str, admin_port: Option<u16>) -> FunnelProcess {
    start_full("", pool, admin_port)
}

/// A funnel with extra `[funnel]` lines, `[pool]` lines and maybe an admin port.
fn start_full(funnel: &str, pool: &str, admin_port: Option<u16>) -> FunnelProcess {
    let mut cfg = FunnelConfig::new().funnel(funnel).pool(pool);
    if let Some(p) = admin_port {
        cfg = cfg.admin(p, "adm");
    }
    cfg.start()
}

/// Poll `what` (up to 20 s) until it holds.
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        common::wait_until(Duration::from_secs(20), cond),
        "timed out waiting for {what}"
    );
}

#[test]
fn last_insert_id_is_per_client_on_one_backend() {
    let f = start("connections = 1");
    let t = common::unique_name("e2e_lid");
    let mut a = f.conn_after_use(USER_A, PASS_A);
    let mut b = f.conn_after_use(USER_A, PASS_A);
    a.query_drop(format!(
        "CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, who CHAR(1))"
    ))
    .unwrap();
    a.query_drop(format!("INSERT INTO {t} (who) VALUES ('a')"))
        .unwrap();
    let a_id: u64 = a.query_first("SELECT LAST_INSERT_ID()").unwrap().unwrap();
    for _ in 0..3 {
        b.query_drop(format!("INSERT INTO {t} (who) VALUES ('b')"))
            .unwrap();
    }
    let b_id: u64 = b.query_first("SELECT LAST_INSERT_ID()").unwrap().unwrap();
    assert_eq!((a_id, b_id), (1, 4));
    // Answered by the funnel, and also inside other statements (the
    // backend first gets the client's own value).
    assert_eq!(
        a.query_first::<u64, _>("SELECT LAST_INSERT_ID() AS x")
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        a.query_first::<u64, _>("SELECT LAST_INSERT_ID() + 0")
            .unwrap(),
        Some(1)
    );
    a.query_drop(format!(
        "INSERT INTO {t} (who) VALUES (CONCAT('', LAST_INSERT_ID()))"
    ))
    .unwrap();
    let who: String = a
        .query_first(format!("SELECT who FROM {t} WHERE id = 5"))
        .unwrap()
        .unwrap();
    assert_eq!(who, "1");
    assert_eq!(
        b.query_first::<u64, _>("SELECT LAST_INSERT_ID() + 0")
            .unwrap(),
        Some(4)
    );
    a.query_drop(format!("DROP TABLE {t}")).unwrap();
}

#[test]
fn connection_id_is_the_handshake_id_for_the_whole_connection() {
    let f = start("connections = 2");
    let mut clients: Vec<Conn> = (0..6).map(|_| f.conn_after_use(USER_A, PASS_A)).collect();
    for _ in 0..3 {
        for c in clients.iter_mut() {
            let id: u64 = c.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
            assert_eq!(id, u64::from(c.connection_id()));
        }
    }
    let mut ids: Vec<u32> = clients.iter().map(|c| c.connection_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each client has its own id");
}

#[test]
fn change_user_reauthenticates_and_resets_the_session() {
    let f = start("connections = 1");
    let mut c = f.conn_after_use(USER_A, PASS_A);
    c.query_drop("SET @x = 5, sql_mode = 'ANSI_QUOTES'")
        .unwrap();
    c.change_user(
        ChangeUserOpts::default()
            .with_user(Some(USER_B.into()))
            .with_pass(Some(PASS_B.into()))
            .with_db_name(Some(TEST_DB.into())),
    )
    .expect("change user to funnel_b");
    let (user, x, db): (String, Option<i64>, String) = c
        .query_first("SELECT CURRENT_USER(), @x, DATABASE()")
        .unwrap()
        .unwrap();
    assert!(user.starts_with("funnel_b@"), "{user}");
    assert_eq!((x, db.as_str()), (None, TEST_DB));
    let mode: String = c.query_first("SELECT @@sql_mode").unwrap().unwrap();
    assert!(!mode.contains("ANSI_QUOTES"), "{mode}");
    // funnel_b may not read mysql.*; as funnel_a it could.
    assert!(c.query_drop("SELECT * FROM mysql.user").is_err());
    let wrong = c.change_user(
        ChangeUserOpts::default()
            .with_user(Some(USER_A.into()))
            .with_pass(Some("wrong".into())),
    );
    let err = format!("{:?}", wrong.expect_err("wrong password"));
    assert!(err.contains("1045"), "{err}");
}

#[test]
fn kill_query_stops_a_running_statement_and_the_connection_stays_usable() {
    let admin_port = common::free_port();
    let f = start_with_admin("connections = 1", Some(admin_port));
    let mut admin = common::admin_console(admin_port, "admin", "adm");
    let mut backlog = move || -> i64 {
        let row: mysql::Row = admin.query_first("SHOW POOLS").unwrap().unwrap();
        let cols = row.columns();
        let i = cols
            .iter()
            .position(|c| c.name_str() == "backlog")
            .expect("backlog column");
        row.get::<i64, _>(i).unwrap()
    };
    // Every connection first: logins run queries, which would queue too.
    let mut victim = f.conn_after_use(USER_A, PASS_A);
    let mut queued = f.conn_after_use(USER_A, PASS_A);
    let mut killer = f.conn_after_use(USER_A, PASS_A);
    let victim_id = victim.connection_id();
    let sleeper = thread::spawn(move || {
        let started = Instant::now();
        let r = victim.query_drop("SELECT SLEEP(30)");
        (r, started.elapsed(), victim)
    });
    let root = common::mariadb();
    wait_for("the SLEEP to run on mysqld", || {
        let mut r = root.admin_conn();
        r.query_first::<u64, _>(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(30)'",
        )
        .unwrap()
            == Some(1)
    });
    // A second client queues behind the sleeper on the single backend.
    let queued_id = queued.connection_id();
    let waiter = thread::spawn(move || {
        let r = queued.query_drop("SELECT 1");
        (r, queued)
    });
    wait_for("the second client to be queued", || backlog() == 1);
    killer
        .query_drop(format!("KILL QUERY {queued_id}"))
        .unwrap();
    let (r, mut queued) = waiter.join().unwrap();
    let err = format!("{:?}", r.expect_err("queued request killed"));
    assert!(err.contains("1317"), "{err}");
    killer
        .query_drop(format!("KILL QUERY {victim_id}"))
        .unwrap();
    let (r, took, mut victim) = sleeper.join().unwrap();
    assert!(took < Duration::from_secs(10), "KILL QUERY took {took:?}");
    // MariaDB answers a killed SLEEP with 1 or with ERR 1317: either way it
    // stopped early. The connections stay usable.
    let _ = r;
    assert_eq!(victim.query_first::<i64, _>("SELECT 7").unwrap(), Some(7));
    assert_eq!(queued.query_first::<i64, _>("SELECT 8").unwrap(), Some(8));
    let unknown = killer.query_drop("KILL 4000000000");
    assert!(format!("{unknown:?}").contains("1094"), "{unknown:?}");
}

/// Multi-statements follow each client's own capability and COM_SET_OPTION,
/// whatever another client on the same backend asked for (PyMySQL can ask
/// for either at connect).
#[test]
fn multi_statements_are_per_client() {
    let f = start("connections = 1");
    let script = format!(
        r#"
import sys
try:
    import pymysql
    from pymysql.constants import CLIENT
except ImportError:
    print("SKIP no pymysql"); sys.exit(0)
kw = dict(host="127.0.0.1", port={port}, user="{USER_A}", password="{PASS_A}", database="{TEST_DB}")
multi = pymysql.connect(client_flag=CLIENT.MULTI_STATEMENTS, **kw)
single = pymysql.connect(**kw)
c = multi.cursor(); c.execute("SELECT 1; SELECT 2"); assert c.fetchall() == ((1,),)
try:
    single.cursor().execute("SELECT 1; SELECT 2")
    print("FAIL: a client without multi-statements ran two"); sys.exit(1)
except pymysql.err.ProgrammingError as e:
    assert e.args[0] == 1064, e
c = multi.cursor(); c.execute("SELECT 3; SELECT 4"); assert c.fetchall() == ((3,),)
print("OK")
"#,
        port = f.port
    );
    let stdout = common::clients::python_ok(&script, &[]);
    if stdout.starts_with("SKIP") {
        eprintln!("skipped: {stdout}");
        return;
    }
    assert_eq!(stdout.trim(), "OK");
}

/// A client without the mysql crate's statement cache: every `prep` is a
/// COM_STMT_PREPARE and nothing is closed behind the test's back.
fn uncached_conn(f: &FunnelProcess) -> Conn {
    let opts = mysql::OptsBuilder::from_opts(f.opts(USER_A, PASS_A))
        .db_name(Some(TEST_DB))
        .stmt_cache_size(0);
    Conn::new(opts).expect("connect through the funnel")
}

/// The value of column `col` in the row of `SHOW <what>` whose `key_col` is `key`.
fn admin_value(
    admin: &mut Conn,
    what: &str,
    key_col: &str,
    key: &str,
    col: &str,
) -> Option<String> {
    common::admin::query(admin, &format!("SHOW {what}"))
        .into_iter()
        .find(|r| r.get(key_col).cloned().flatten().as_deref() == Some(key))
        .and_then(|r| r.get(col).cloned().flatten())
}

fn pool_prepared(admin: &mut Conn) -> u64 {
    admin_value(admin, "POOLS", "pool", USER_A, "prepared_stmts")
        .and_then(|v| v.parse().ok())
        .expect("prepared_stmts of the pool")
}

#[test]
fn prepared_statements_are_limited_per_client_and_in_total() {
    let admin_port = common::free_port();
    let f = start_full(
        "max_prepared_stmts_per_client = 5\nmax_prepared_stmt_count = 8",
        "connections = 2",
        Some(admin_port),
    );
    let mut admin = common::admin_console(admin_port, "admin", "adm");
    let mut a = uncached_conn(&f);
    let mut a_stmts = Vec::new();
    for i in 0..5 {
        a_stmts.push(
            a.prep(format!("SELECT {i} + ?"))
                .expect("prepare within the limit"),
        );
    }
    let (code, state, msg) = server_error(a.prep("SELECT 'sixth'"));
    assert_eq!((code, state.as_str()), (1461, "42000"), "{msg}");
    assert!(
        msg.starts_with(
            "Can't create more than max_prepared_stmts_per_client statements (current value: 5)"
        ),
        "{msg}"
    );
    // The connection and its statements still work.
    assert_eq!(a.query_first::<i64, _>("SELECT 7").unwrap(), Some(7));
    assert_eq!(
        a.exec_first::<i64, _, _>(&a_stmts[4], (10,)).unwrap(),
        Some(14)
    );
    // Closing one frees its slot.
    a.close(a_stmts.remove(0)).unwrap();
    a_stmts.push(a.prep("SELECT 'again'").expect("a freed slot"));
    assert_eq!(pool_prepared(&mut admin), 5);

    // The funnel-wide total: 5 + 3 = 8.
    let mut b = uncached_conn(&f);
    let mut b_stmts = Vec::new();
    for i in 0..3 {
        b_stmts.push(b.prep(format!("SELECT 'b{i}'")).unwrap());
    }
    let (code, state, msg) = server_error(b.prep("SELECT 'b3'"));
    assert_eq!((code, state.as_str()), (1461, "42000"));
    assert_eq!(
        msg,
        "Can't create more than max_prepared_stmt_count statements (current value: 8)"
    );
    a.close(a_stmts.remove(0)).unwrap();
    a.close(a_stmts.remove(0)).unwrap();
    // COM_STMT_CLOSE has no answer: the next command is ordered after it.
    a.query_drop("DO 1").unwrap();
    b.prep("SELECT 'b3'")
        .expect("slots freed by the other client");
    assert_eq!(pool_prepared(&mut admin), 7);

    // Reset, change-user and leaving give the slots back.
    a.reset().expect("COM_RESET_CONNECTION");
    assert_eq!(pool_prepared(&mut admin), 4);
    b.change_user(
        ChangeUserOpts::default()
            .with_user(Some(USER_A.into()))
            .with_pass(Some(PASS_A.into()))
            .with_db_name(Some(TEST_DB.into())),
    )
    .expect("change user");
    assert_eq!(pool_prepared(&mut admin), 0);
    let mut c = uncached_conn(&f);
    for i in 0..5 {
        c.prep(format!("SELECT 'c{i}'")).unwrap();
    }
    assert_eq!(pool_prepared(&mut admin), 5);
    drop(c);
    wait_for("the leaving client's statements to be forgotten", || {
        pool_prepared(&mut admin) == 0
    });
    // mysqld's limit is not what refused: prepares work again.
    for i in 0..5 {
        a.prep(format!("SELECT 'a{i}'")).unwrap();
    }
}

/// The funnel's resident set size in KiB.
fn rss_kib(pid: u32) -> u64 {
    common::rss_kib(pid).expect("VmRSS")
}

#[test]
fn memory_of_many_prepared_statements_is_returned_when_the_client_leaves() {
    // Below the server's own max_prepared_stmt_count (16382 by default),
    // which caps the funnel's total.
    const N: usize = 16_000;
    let admin_port = common::free_port();
    let f = start_full(
        &format!("max_prepared_stmts_per_client = {N}\nmax_prepared_stmt_count = {N}"),
        "connections = 1",
        Some(admin_port),
    );
    let pid = f.pid().expect("funnel pid");
    let mut admin = common::admin_console(admin_port, "admin", "adm");
    let mut warm = uncached_conn(&f);
    for i in 0..300 {
        warm.prep(format!("SELECT {i}, '{}'", "w".repeat(4000)))
            .unwrap();
    }
    drop(warm);
    wait_for("the warm-up client to leave", || {
        pool_prepared(&mut admin) == 0
    });
    let before = rss_kib(pid);
    let mut c = uncached_conn(&f);
    let pad = "x".repeat(4000);
    for i in 0..N {
        c.prep(format!("SELECT {i}, '{pad}'")).expect("prepare");
    }
    assert_eq!(pool_prepared(&mut admin), N as u64);
    let full = rss_kib(pid);
    // The SQL alone is 64 MB: the funnel holds it while the client may execute.
    assert!(full > before + 60_000, "RSS {before} KiB -> {full} KiB");
    drop(c);
    wait_for("the client's statements to be forgotten", || {
        pool_prepared(&mut admin) == 0
    });
    let after = rss_kib(pid);
    eprintln!("funnel RSS: {before} KiB before, {full} KiB with {N} statements, {after} KiB after");
    assert!(
        after < before + 16 * 1024,
        "RSS stayed at {after} KiB after the client left (was {before} KiB before, {full} KiB full)"
    );
}

/// One expression of every type MariaDB gives user variables: integers
/// (signed, unsigned), decimals, doubles, strings of several character sets
/// and collations, long ones (information_schema cuts values at 2048
/// characters), binary strings, bits, temporal values, JSON and NULL.
const USER_VAR_VALUES: [&str; 40] = [
    "42",
    "-5",
    "9223372036854775807",
    "-9223372036854775808",
    "CAST(5 AS UNSIGNED)",
    "18446744073709551615",
    "TRUE",
    "1/3",
    "12.50",
    "CAST(12 AS DECIMAL)",
    "-0.001",
    "CAST(1 AS DECIMAL(30,20))",
    "1e0/3",
    "0.1e0 + 0.2e0",
    "1.5e300",
    "-2.5e-10",
    "PI()",
    "CAST(1 AS DOUBLE)",
    "-0e0",
    "'text'",
    "''",
    "'it''s \\\\ \"q\"'",
    "'x' COLLATE utf8mb4_bin",
    "'a' COLLATE utf8mb4_unicode_ci",
    "CONVERT('é' USING latin1)",
    "_latin1 'abc' COLLATE latin1_bin",
    "CONVERT('日本' USING ucs2)",
    "CONVERT('x' USING utf16)",
    "'😀 ok'",
    "REPEAT('ab', 3000)",
    "CONVERT('abc' USING ascii)",
    "BINARY 'ab'",
    "X'00FF'",
    "b'101'",
    "UNHEX('00')",
    "CAST('2024-01-02' AS DATE)",
    "CAST('2024-01-02 03:04:05.123' AS DATETIME(3))",
    "CAST('12:00:00' AS TIME)",
    "JSON_OBJECT('a', 1)",
    "NULL",
];

/// `SELECT @v, CHARSET(@v), COLLATION(@v), COERCIBILITY(@v)`: the values
/// and the type of the first column.
fn read_v(c: &mut Conn) -> (Vec<mysql::Value>, (String, u16, u8)) {
    let row: mysql::Row = c
        .query_first("SELECT @v, CHARSET(@v), COLLATION(@v), COERCIBILITY(@v)")
        .unwrap()
        .unwrap();
    let col = &row.columns()[0];
    let ty = (
        format!("{:?}", col.column_type()),
        col.character_set(),
        col.decimals(),
    );
    (row.unwrap(), ty)
}

#[test]
fn user_variables_of_every_type_move_between_backends_exactly() {
    let admin_port = common::free_port();
    let f = start_with_admin("connections = 2\nmax_pinned_backends = 4", Some(admin_port));
    let mut admin = common::admin_console(admin_port, "admin", "adm");
    let mut direct = common::mysql_direct(USER_A, PASS_A);
    let mut want = Vec::new();
    for v in USER_VAR_VALUES {
        direct.query_drop(format!("SET @v = {v}")).unwrap();
        want.push(read_v(&mut direct));
    }
    let mut clients: Vec<Conn> = (0..USER_VAR_VALUES.len())
        .map(|_| f.conn_after_use(USER_A, PASS_A))
        .collect();
    for (c, v) in clients.iter_mut().zip(USER_VAR_VALUES) {
        c.query_drop(format!("SET @v = {v}"))
            .unwrap_or_else(|e| panic!("SET @v = {v}: {e}"));
    }
    // Two rounds: on two shared backends every client's command runs after
    // others' and needs its variable replayed.
    for round in 0..2 {
        for (i, c) in clients.iter_mut().enumerate() {
            let got = read_v(c);
            if USER_VAR_VALUES[i] == "NULL" {
                // NULL is the same as unset (README): the value is, the
                // character set of a NULL variable depends on its history.
                assert_eq!(got.0[0], mysql::Value::NULL);
                continue;
            }
            assert_eq!(
                got, want[i],
                "round {round}: @v = {} through the funnel",
                USER_VAR_VALUES[i]
            );
        }
    }
    let pinned = admin_value(&mut admin, "POOLS", "pool", USER_A, "clients_pinned");
    let pinned_by = admin_value(&mut admin, "POOLS", "pool", USER_A, "pinned_by");
    assert_eq!(pinned.as_deref(), Some("0"), "pinned by {pinned_by:?}");
    let replayed: u64 = admin_value(&mut admin, "STATS", "pool", USER_A, "user_vars_replayed")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(replayed >= USER_VAR_VALUES.len() as u64, "{replayed}");
}

#[test]
fn a_client_with_too_many_user_variables_keeps_its_backend() {
    let admin_port = common::free_port();
    let f = start_full(
        "max_replayed_user_vars = 10",
        "connections = 1\nmax_pinned_backends = 2",
        Some(admin_port),
    );
    let mut admin = common::admin_console(admin_port, "admin", "adm");
    let mut many = f.conn_after_use(USER_A, PASS_A);
    let id = many.connection_id().to_string();
    let pin_cause = |admin: &mut Conn| admin_value(admin, "CLIENTS", "id", &id, "pin_cause");
    let set: Vec<String> = (1..=11).map(|i| format!("@m{i} = {i}")).collect();
    // The client has its OK before the funnel has read its variables back;
    // its next command waits for that: `DO 0` makes the state settle.
    many.query_drop(format!("SET {}", set[..10].join(", ")))
        .unwrap();
    many.query_drop("DO 0").unwrap();
    assert_eq!(pin_cause(&mut admin), None, "10 variables are replayed");
    many.query_drop(format!("SET {}", set[10])).unwrap();
    many.query_drop("DO 0").unwrap();
    assert_eq!(pin_cause(&mut admin).as_deref(), Some("user_vars"));
    // A neighbour runs meanwhile, on the shared backend.
    let mut other = f.conn_after_use(USER_A, PASS_A);
    other.query_drop("SET @o = 'neighbour'").unwrap();
    assert_eq!(
        other
            .query_first::<String, _>("SELECT @o")
            .unwrap()
            .as_deref(),
        Some("neighbour")
    );
    let sum: Option<i64> = many
        .query_first(format!(
            "SELECT {}",
            (1..=11)
                .map(|i| format!("@m{i}"))
                .collect::<Vec<_>>()
                .join(" + ")
        ))
        .unwrap();
    assert_eq!(sum, Some(66), "all its variables");
    assert_eq!(pin_cause(&mut admin).as_deref(), Some("user_vars"));
    // Back to 10: replayed again, the pin ends.
    many.query_drop("SET @m11 = NULL").unwrap();
    many.query_drop("DO 0").unwrap();
    assert_eq!(pin_cause(&mut admin), None);
    assert_eq!(
        many.query_first::<i64, _>("SELECT @m1 + @m10").unwrap(),
        Some(11)
    );
    assert_eq!(
        other
            .query_first::<String, _>("SELECT @o")
            .unwrap()
            .as_deref(),
        Some("neighbour")
    );
}

#[test]
fn replayed_user_variables_are_counted() {
    let admin_port = common::free_port();
    let f = start_with_admin("connections = 1", Some(admin_port));
    let mut admin = common::admin_console(admin_port, "admin", "adm");
    let mut replayed = || -> u64 {
        admin_value(&mut admin, "STATS", "pool", USER_A, "user_vars_replayed")
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let mut b = f.conn_after_use(USER_A, PASS_A);
    let mut d = f.conn_after_use(USER_A, PASS_A);
    b.query_drop("SET @b1 = 1, @b2 = 'two'").unwrap();
    d.query_drop("SET @d1 = 1.5").unwrap();
    let before = replayed();
    // Each switch sets the client's own and unsets the other's: 3 each.
    assert_eq!(b.query_first::<i64, _>("SELECT @b1").unwrap(), Some(1));
    assert_eq!(
        d.query_first::<String, _>("SELECT @d1").unwrap().as_deref(),
        Some("1.5")
    );
    assert_eq!(
        b.query_first::<String, _>("SELECT @b2").unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(replayed() - before, 9);
}

/// The funnel reads a client's variables back in the client's own session:
/// its sql_select_limit must not cut the list short.
#[test]
fn user_variables_are_read_back_whatever_the_sql_select_limit() {
    let f = start("connections = 1");
    let mut a = f.conn_after_use(USER_A, PASS_A);
    let mut b = f.conn_after_use(USER_A, PASS_A);
    a.query_drop("SET sql_select_limit = 1").unwrap();
    a.query_drop("SET @x = 1, @y = 'two', @z = 3.5").unwrap();
    // The other client overwrites all three on the only shared backend.
    b.query_drop("SET @x = 100, @y = 'bee', @z = 0").unwrap();
    let got: (i64, String, String) = a.query_first("SELECT @x, @y, @z").unwrap().unwrap();
    assert_eq!(got, (1, "two".to_string(), "3.5".to_string()));
    let got: (i64, String, i64) = b.query_first("SELECT @x, @y, @z").unwrap().unwrap();
    assert_eq!(got, (100, "bee".to_string(), 0));
}
