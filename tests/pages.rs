//! The DB-API page (connect, `SET NAMES`, autocommit off, a few selects,
//! disconnect) in fewer mysqld statements than a direct connection needs,
//! and each saving checked against a direct twin:
//!
//! * a client that does not track its session gets `SET autocommit = 0|1`
//!   and `SET NAMES cs [COLLATE coll]` answered by the funnel (the backend
//!   of its next statement gets them with the replay where it lacks them);
//! * a forwarded `SET NAMES` needs no read-back of `collation_connection`
//!   (which mysqld's tracker does not report) once the funnel knows it;
//! * a plain `SET` needs no replay of the variables it sets itself;
//! * a transaction-only pin ends with the `ROLLBACK` alone: the next
//!   client's replay gives the variables back where it needs them.
//!
//! Statements are counted per mysqld account (`USER_STATISTICS`): each
//! test's funnel logs in to mysqld as an account of its own. Set
//! FUNNEL_E2E_REQUIRE_CLIENTS=1 to make a missing PyMySQL a failure instead
//! of a skip.

mod common;

use std::process::Command;
use std::sync::Once;
use std::thread;
use std::time::Duration;

use common::{wait_until, FunnelProcess, TEST_DB};
use mysql::consts::CapabilityFlags;
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Row, Value};

const ADMIN_USER: &str = "admin";
const ADMIN_PW: &str = "adm";

struct Env {
    f: FunnelProcess,
    admin_port: u16,
    user: String,
    pw: String,
}

/// mysqld counts each account's statements (`USER_STATISTICS`).
fn count_statements() {
    static ON: Once = Once::new();
    ON.call_once(|| common::admin_sql("SET GLOBAL userstat = 1"));
}

/// A funnel of its own, logging in to mysqld as an account of its own,
/// with `pool` as its `[pool]` section; waits for its shared connections.
fn start(tag: &str, pool: &str, connections: usize) -> Env {
    count_statements();
    let db = common::mariadb();
    let user = common::unique_name(&format!("pg_{tag}"));
    let pw = format!("pw-{user}");
    common::admin_sql(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED VIA mysql_native_password \
           USING PASSWORD('{pw}'); GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1'"
    ));
    let port = common::free_port();
    let admin_port = common::free_port();
    let cfg = format!(
        "[funnel]\nlisten = 127.0.0.1:{port}\n\n[backend]\naddress = 127.0.0.1:{}\n\n\
         [pool]\n{pool}\n\n[user \"{user}\"]\npassword = \"{pw}\"\n\n\
         [admin]\nlisten = 127.0.0.1:{admin_port}\nuser = {ADMIN_USER}\npassword = {ADMIN_PW}\n",
        db.port
    );
    let f = FunnelProcess::builder(&cfg)
        .port(port)
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
    /// A client of the funnel (`funnel`) or of mysqld directly, as the
    /// same account, in database funnel_test; `tracking`: with
    /// CLIENT_SESSION_TRACK.
    fn conn(&self, funnel: bool, tracking: bool) -> Conn {
        let opts = if funnel {
            self.f.opts(&self.user, &self.pw)
        } else {
            common::opts(&self.user, &self.pw, common::mariadb().port)
        };
        // Without it, the crate asks mysqld with a statement of its own.
        let mut opts = OptsBuilder::from_opts(opts).max_allowed_packet(Some(16 << 20));
        if tracking {
            opts = opts.additional_capabilities(CapabilityFlags::CLIENT_SESSION_TRACK);
        }
        Conn::new(opts).unwrap_or_else(|e| panic!("cannot connect: {e}"))
    }

    fn client(&self) -> Conn {
        self.conn(true, false)
    }

    /// A counter of this pool's `SHOW STATS` row.
    fn stat(&self, counter: &str) -> u64 {
        let mut a = common::admin_console(self.admin_port, ADMIN_USER, ADMIN_PW);
        let rows: Vec<Row> = a.query("SHOW STATS").unwrap();
        rows.iter()
            .find(|r| r.get::<String, _>("pool").as_deref() == Some(self.user.as_str()))
            .and_then(|r| r.get::<u64, _>(counter))
            .unwrap_or_else(|| panic!("SHOW STATS has no {counter} for pool {}", self.user))
    }

    /// Waits until `n` pins have ended with a ROLLBACK.
    fn wait_rollbacks(&self, n: u64) {
        let mut last = 0;
        let done = wait_until(Duration::from_secs(20), || {
            last = self.stat("pin_rollbacks");
            last >= n
        });
        assert!(done, "pins ended with a ROLLBACK: {last}, expected {n}");
    }

    /// Waits until the pool has `n` backend connections, every one set up
    /// and idle (a pin's replacement runs statements of its own while it
    /// is set up).
    fn wait_backends_idle(&self, n: usize) {
        let mut last = Vec::new();
        let done = wait_until(Duration::from_secs(20), || {
            let mut a = common::admin_console(self.admin_port, ADMIN_USER, ADMIN_PW);
            let rows: Vec<Row> = a.query("SHOW BACKENDS").unwrap();
            last = rows
                .iter()
                .filter(|r| r.get::<String, _>("pool").as_deref() == Some(self.user.as_str()))
                .filter_map(|r| r.get::<String, _>("state"))
                .collect();
            last.len() == n && last.iter().all(|s| s == "idle")
        });
        assert!(done, "backends: {last:?}, expected {n} idle");
    }

    /// Statements mysqld has run for this account: (selects, others).
    /// mysqld counts a statement once its answer is sent: the count is
    /// read until it holds still.
    fn statements(&self) -> (u64, u64) {
        let read = || {
            let rows: Vec<(u64, u64)> = common::mariadb().admin_query(&format!(
                "SELECT SELECT_COMMANDS, UPDATE_COMMANDS + OTHER_COMMANDS \
                 FROM information_schema.USER_STATISTICS WHERE USER = '{}'",
                self.user
            ));
            rows.first().copied().unwrap_or((0, 0))
        };
        let mut last = read();
        for _ in 0..50 {
            thread::sleep(Duration::from_millis(20));
            let now = read();
            if now == last {
                break;
            }
            last = now;
        }
        last
    }

    fn total_statements(&self) -> u64 {
        let (s, o) = self.statements();
        s + o
    }

    /// mysqld thread ids of the funnel's backend connections.
    fn backend_threads(&self) -> Vec<u64> {
        common::mariadb().admin_query(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{}' ORDER BY ID",
            self.user
        ))
    }
}

/// A table of 100 rows (id, v) in funnel_test.
fn table(tag: &str) -> String {
    let t = format!("{TEST_DB}.{}", common::unique_name(tag));
    common::admin_sql(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v INT) ENGINE = InnoDB; \
         INSERT INTO {t} SELECT seq, seq * 10 FROM {TEST_DB}.seq_1_to_100"
    ));
    t
}

fn value_str(v: &Value) -> String {
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) => format!("'{}'", String::from_utf8_lossy(b)),
        other => format!("{other:?}"),
    }
}

/// Everything the client sees of `sql`'s answer: each column's name and
/// character set (the collation id mysqld labels it with) and the rows; or
/// the OK's affected rows, insert id and warnings; or the error code.
fn answer(c: &mut Conn, sql: &str) -> String {
    let mut out = Vec::new();
    let mut result = match c.query_iter(sql) {
        Ok(r) => r,
        Err(e) => return err_code(&e),
    };
    while let Some(set) = result.iter() {
        let cols: Vec<String> = set
            .columns()
            .as_ref()
            .iter()
            .map(|col| format!("{}/cs{}", col.name_str(), col.character_set()))
            .collect();
        let mut rows = Vec::new();
        for row in set {
            match row {
                Ok(r) => rows.push(
                    r.unwrap()
                        .iter()
                        .map(value_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Err(e) => {
                    out.push(err_code(&e));
                    return out.join(" | ");
                }
            }
        }
        out.push(format!("[{}] rows [{}]", cols.join(", "), rows.join("; ")));
    }
    drop(result);
    out.push(format!(
        "affected {} insert id {} warnings {}",
        c.affected_rows(),
        c.last_insert_id(),
        c.warnings()
    ));
    out.join(" | ")
}

fn err_code(e: &mysql::Error) -> String {
    match e {
        mysql::Error::MySqlError(m) => format!("ERR {}", m.code),
        other => format!("client error: {other}"),
    }
}

/// What a client's session looks like, result column labels included.
const PROBE: &str = "SELECT 'x' AS s, @@character_set_client AS client, \
    @@character_set_connection AS conn, @@character_set_results AS results, \
    @@collation_connection AS coll, COLLATION('x') AS literal, @@time_zone AS tz, \
    @@sql_select_limit AS lim, @@autocommit AS ac, @@in_transaction AS trx";

/// One client through the funnel and its twin straight to mysqld.
struct Twin {
    name: String,
    funnel: Conn,
    direct: Conn,
}

impl Twin {
    fn new(env: &Env, name: &str, tracking: bool) -> Twin {
        Twin {
            name: name.to_string(),
            funnel: env.conn(true, tracking),
            direct: env.conn(false, tracking),
        }
    }

    /// Runs `sql` on both; their answers must be the same.
    fn run(&mut self, sql: &str) -> String {
        let f = answer(&mut self.funnel, sql);
        let d = answer(&mut self.direct, sql);
        assert_eq!(
            f, d,
            "{}: `{sql}` through the funnel vs directly",
            self.name
        );
        f
    }
}

/// The page as a DB-API driver runs it: `SET NAMES utf8mb4`, autocommit
/// off, three point selects, disconnect (the transaction still open).
fn page(c: &mut Conn, t: &str, k: usize) {
    c.query_drop("SET NAMES utf8mb4").unwrap();
    c.query_drop("SET autocommit = 0").unwrap();
    for j in 0..3 {
        let id = (k * 3 + j) % 100 + 1;
        let v: Option<i64> = c
            .query_first(format!("SELECT v FROM {t} WHERE id = {id}"))
            .unwrap();
        assert_eq!(v, Some(id as i64 * 10));
    }
}

/// A page costs mysqld four statements through the funnel (the three
/// selects and the ROLLBACK that ends the page's transaction), where a
/// direct connection costs it five and a connection: the funnel answers
/// the `SET`s itself, and the backend keeps autocommit off for the next
/// page instead of being given its default back.
#[test]
fn a_dbapi_page_costs_mysqld_four_statements() {
    let env = start("four", "connections = 1\nmax_pinned_backends = 2", 1);
    let t = table("pg_four");
    for k in 0..3 {
        page(&mut env.client(), &t, k);
        env.wait_rollbacks(k as u64 + 1);
    }
    // The shared one and the pin's, kept for the next page.
    env.wait_backends_idle(2);
    let before = env.total_statements();
    const PAGES: usize = 20;
    for k in 0..PAGES {
        page(&mut env.client(), &t, k);
        env.wait_rollbacks(3 + k as u64 + 1);
    }
    let through = env.total_statements() - before;
    assert_eq!(
        through,
        4 * PAGES as u64,
        "mysqld statements for {PAGES} pages through the funnel"
    );
    assert_eq!(env.stat("backend_resets"), 0);
    // The same pages straight to mysqld.
    let before = env.total_statements();
    for k in 0..PAGES {
        page(&mut env.conn(false, false), &t, k);
    }
    let direct = env.total_statements() - before;
    assert_eq!(
        direct,
        5 * PAGES as u64,
        "mysqld statements for direct pages"
    );
    common::admin_sql(&format!("DROP TABLE {t}"));
}

/// `SET NAMES` in its forms, by clients that track their session (whose
/// `SET` goes to mysqld) and clients that do not (whose `SET` the funnel
/// may answer), taking turns on one backend connection: every answer and
/// every result column's label is what a direct connection gets.
#[test]
fn set_names_labels_results_as_directly() {
    let env = start("labels", "connections = 1", 1);
    let mut twins: Vec<Twin> = (0..4)
        .map(|i| Twin::new(&env, &format!("client {i}"), i % 2 == 0))
        .collect();
    let sets = [
        "SET NAMES latin1",
        "SET NAMES utf8mb4",
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'",
        "SET NAMES utf8mb3",
        "set names LATIN1 collate LATIN1_GERMAN1_CI",
        "SET NAMES koi8r",
        "SET NAMES `utf8mb4` COLLATE utf8mb4_bin",
        "SET NAMES binary",
        "SET character_set_results = latin1",
        "SET NAMES utf8mb4, time_zone = '+02:00'",
        "SET NAMES DEFAULT",
        "SET NAMES utf8mb4 COLLATE DEFAULT",
        "SET NAMES ucs2",
        "SET NAMES no_such_charset",
        "SET NAMES latin1 COLLATE utf8mb4_bin",
        "SET NAMES utf8mb4 /* the last */",
        // A statement of its own to mysqld (multi-statements are on).
        "SET NAMES latin1; /* an OK of its own */",
        "SET autocommit = 1; -- another",
        "SET NAMES utf8mb4;;",
    ];
    for round in 0..3 {
        for i in 0..sets.len() {
            for (j, twin) in twins.iter_mut().enumerate() {
                // Each client its own order, so that the backend has
                // another client's character set before most statements.
                twin.run(sets[(i + j * 5 + round) % sets.len()]);
                twin.run(PROBE);
            }
        }
    }
}

/// A forwarded `SET NAMES cs` is read back once per character set on a
/// backend connection: then its collation is known (and `SET NAMES cs
/// COLLATE coll` names it).
#[test]
fn set_names_is_read_back_once_per_character_set() {
    let env = start("readback", "connections = 1", 1);
    let mut twin = Twin::new(&env, "tracking client", true);
    let before = env.statements();
    const ROUNDS: u64 = 10;
    for _ in 0..ROUNDS {
        for sql in [
            "SET NAMES latin1",
            "SET NAMES utf8mb4",
            "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
        ] {
            twin.run(sql);
            twin.run(PROBE);
        }
    }
    let after = env.statements();
    // Direct: the probes. Through the funnel: the probes, one read-back of
    // latin1 and one of utf8mb4; and the twin's own statements besides.
    let selects = after.0 - before.0;
    assert_eq!(
        selects,
        2 * 3 * ROUNDS + 2,
        "selects of the funnel and the direct twin"
    );
}

/// A plain `SET` of variables another client left different on the
/// backend runs without a replay of those first (it sets them itself); an
/// error in it leaves the client's own values as they were.
#[test]
fn a_plain_set_needs_no_replay_of_what_it_sets() {
    let env = start("overwrite", "connections = 1", 1);
    let mut a = Twin::new(&env, "a", true);
    let mut b = Twin::new(&env, "b", true);
    b.run("SET time_zone = '+05:00', sql_select_limit = 7");
    b.run(PROBE);
    // The backend has b's time zone and limit: a's SET replaces both.
    let before = env.total_statements();
    a.run("SET time_zone = '+01:00', SESSION sql_select_limit = 9");
    assert_eq!(
        env.total_statements() - before,
        2,
        "a's SET through the funnel and directly, nothing else"
    );
    a.run(PROBE);
    b.run(PROBE);
    // Only the limit is a's: the time zone is replayed.
    let before = env.total_statements();
    a.run("SET @@session.sql_select_limit = 3");
    assert_eq!(env.total_statements() - before, 3, "a replay and two SETs");
    a.run(PROBE);
    b.run(PROBE);
    // An error sets nothing: a keeps its own time zone, b's stays b's.
    a.run("SET sql_select_limit = 5, time_zone = 'No/Such_Zone'");
    a.run(PROBE);
    b.run(PROBE);
    a.run("SET time_zone = DEFAULT, sql_select_limit = DEFAULT");
    a.run(PROBE);
    b.run(PROBE);
    // Autocommit: b's off is left on the backend (b holds no
    // transaction); a's own SET of it needs no replay either.
    b.run("SET autocommit = 0, time_zone = '+06:00'");
    let before = env.total_statements();
    a.run("SET autocommit = 0, time_zone = '+06:00', sql_select_limit = 7");
    assert_eq!(env.total_statements() - before, 2);
    a.run("SET autocommit = 1");
    a.run(PROBE);
    a.run("COMMIT");
    b.run("SET autocommit = 1");
    b.run(PROBE);
}

/// After a page whose pin ended with the ROLLBACK alone, the backend keeps
/// what the page's client set (autocommit off, its character set, a time
/// zone); the next client on it sees its own session, and its statements
/// commit as a fresh connection's do.
#[test]
fn the_next_client_after_a_page_sees_a_fresh_session() {
    let env = start("next", "connections = 1\nmax_pinned_backends = 1", 1);
    let t = table("pg_next");
    let mut p = env.client();
    p.query_drop("SET NAMES latin1").unwrap();
    p.query_drop("SET autocommit = 0").unwrap();
    p.query_drop("SET time_zone = '+03:00', sql_select_limit = 2")
        .unwrap();
    let v: Option<i64> = p
        .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
        .unwrap();
    assert_eq!(v, Some(10));
    let mine: u64 = p.query_first("SELECT @@pseudo_thread_id").unwrap().unwrap();
    // The pin's and the shared one that replaced it, set up.
    env.wait_backends_idle(2);
    let before = env.total_statements();
    drop(p);
    env.wait_rollbacks(1);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        env.total_statements() - before,
        1,
        "the ROLLBACK and nothing else"
    );
    // The next client on that very connection.
    let db = common::mariadb();
    for id in env.backend_threads() {
        if id != mine {
            db.admin_sql(&format!("KILL {id}"));
        }
    }
    assert!(wait_until(Duration::from_secs(10), || env
        .backend_threads()
        == vec![mine]));
    for tracking in [false, true] {
        let mut n = Twin::new(&env, "next client", tracking);
        n.run(PROBE);
        let on: Option<u64> = n.funnel.query_first("SELECT @@pseudo_thread_id").unwrap();
        assert_eq!(
            on,
            Some(mine),
            "the next client runs on the page's connection"
        );
        // Autocommit is on: the insert is there for everyone at once.
        let id = 1000 + u64::from(tracking);
        n.funnel
            .query_drop(format!("INSERT INTO {t} VALUES ({id}, 1)"))
            .unwrap();
        let seen: Vec<i64> = db.admin_query(&format!("SELECT v FROM {t} WHERE id = {id}"));
        assert_eq!(seen, vec![1], "the next client's insert is committed");
        n.run(PROBE);
    }
    common::admin_sql(&format!("DROP TABLE {t}"));
}

fn python_with_pymysql() -> bool {
    let have = Command::new("python3")
        .args(["-c", "import pymysql"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        let why = "python3 with PyMySQL is not installed";
        if std::env::var("FUNNEL_E2E_REQUIRE_CLIENTS").is_ok_and(|v| !v.is_empty() && v != "0") {
            panic!("{why} (FUNNEL_E2E_REQUIRE_CLIENTS is set)");
        }
        println!("SKIPPED: {why}");
        eprintln!("SKIPPED: {why}");
    }
    have
}

/// What PyMySQL (autocommit off by default; no session tracking) sees of
/// each step: the status flags, affected rows, insert id and warnings of
/// every answer, the rows and each column's character set.
const PYMYSQL_STEPS: &str = r#"
import sys, pymysql
port, user, pw, table = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw,
                    database="funnel_test", ssl_disabled=True)
out = []
def step(sql):
    cur = c.cursor()
    try:
        cur.execute(sql)
        rows = cur.fetchall()
        cs = [f.charsetnr for f in (getattr(cur._result, "fields", None) or [])]
        out.append(f"{sql} -> status {c.server_status} affected {cur.rowcount} "
                   f"insert {cur.lastrowid} warnings {cur._result.warning_count} charsets {cs} rows {rows}")
    except pymysql.MySQLError as e:
        out.append(f"{sql} -> ERR {e.args[0]}")
out.append(f"connected: status {c.server_status} autocommit {c.get_autocommit()}")
probe = ("SELECT 'x', @@autocommit, @@in_transaction, @@character_set_client, "
         "@@character_set_results, @@collation_connection, COLLATION('x')")
for sql in [probe, "COMMIT", "SET autocommit = 1", probe, "SET NAMES latin1", probe,
            "SELECT ROW_COUNT()", "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci", probe,
            "SET AUTOCOMMIT=OFF, NAMES latin1 COLLATE latin1_bin", "SELECT ROW_COUNT()", probe,
            "ROLLBACK", "SET autocommit = ON", "SELECT 1/0", "SET autocommit = 0",
            "SHOW WARNINGS", "SET autocommit = 1", "SET autocommit = 2", "SET NAMES ucs2",
            "SET NAMES no_such_charset", "SET NAMES latin1 COLLATE utf8mb4_bin", probe,
            f"INSERT INTO {table} VALUES (2000, 1)", "SELECT ROW_COUNT()", "SET NAMES utf8mb4",
            "SELECT ROW_COUNT()", f"DELETE FROM {table} WHERE id = 2000",
            "SET autocommit = 0", f"INSERT INTO {table} VALUES (2001, 1)",
            "SET autocommit = 1", f"SELECT COUNT(*) FROM {table} WHERE id = 2001",
            f"DELETE FROM {table} WHERE id = 2001", probe,
            # Every statement is slow now: mysqld flags its OK so.
            "SET long_query_time = 0", "SET autocommit = 0", "SET NAMES latin1",
            "SET autocommit = 1", "SET long_query_time = DEFAULT", "SET NAMES utf8mb4"]:
    step(sql)
c.autocommit(False)
out.append(f"autocommit(False): status {c.server_status}")
step(probe)
c.rollback()
c.close()
print("\n".join(out))
"#;

fn pymysql(script: &str, port: u16, env: &Env, args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(port.to_string())
        .args([&env.user, &env.pw])
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "PyMySQL failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `SET`s the funnel answers itself look to PyMySQL exactly as
/// mysqld's answers, and so does everything after them; and they cost
/// mysqld nothing.
#[test]
fn pymysql_sees_the_funnels_own_set_answers_as_mysqlds() {
    if !python_with_pymysql() {
        return;
    }
    let env = start("pymysql", "connections = 2", 2);
    let t = table("pg_pymysql");
    let db = common::mariadb();
    let direct = pymysql(PYMYSQL_STEPS, db.port, &env, &[&t]);
    // Twice: the first time, the funnel learns what `SET NAMES` gives.
    for run in 0..2 {
        let through = pymysql(PYMYSQL_STEPS, env.f.port, &env, &[&t]);
        for (f, d) in through.lines().zip(direct.lines()) {
            assert_eq!(f, d, "run {run}: through the funnel vs directly");
        }
        assert_eq!(through.lines().count(), direct.lines().count());
    }
    // Connect (`SET NAMES utf8mb4`, `SET AUTOCOMMIT = 0`) and turn
    // autocommit on and off: nothing for mysqld to run.
    let toggles = r#"
import sys, pymysql
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for _ in range(5):
    c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw,
                        database="funnel_test", ssl_disabled=True)
    c.autocommit(True)
    c.autocommit(False)
    c.close()
"#;
    let before = env.total_statements();
    pymysql(toggles, db.port, &env, &[]);
    assert_eq!(env.total_statements() - before, 20, "direct");
    let before = env.total_statements();
    pymysql(toggles, env.f.port, &env, &[]);
    assert_eq!(env.total_statements() - before, 0, "through the funnel");
    common::admin_sql(&format!("DROP TABLE {t}"));
}
