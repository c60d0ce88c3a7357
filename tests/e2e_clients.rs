//! Real client libraries through the funnel ("The funnel" issue, part 8):
//! Python (PyMySQL, mysql-connector-python pure and C extension,
//! mysqlclient), PHP (mysqli with prepared statements, PDO with emulated and
//! native prepares), the `mariadb` command-line client and the Rust `mysql`
//! crate with prepared statements; libmysqlclient (which negotiates
//! CLIENT_DEPRECATE_EOF) and MariaDB Connector/C through their C API, for
//! every kind of response, compared with mysqld; server-side cursors
//! (COM_STMT_FETCH) with mysqli and the C libraries, and the pins they hold.
//!
//! The Python and PHP flows live in `tests/clients/`; each prints a final
//! `OK <n> checks` line and exits 0, or exits 1 on failure, or prints
//! `SKIP: <reason>` and exits 77 when its driver is not installed. A missing
//! interpreter or driver skips the test with the reason printed (run
//! `bash scripts/test.sh` to install them); set FUNNEL_E2E_REQUIRE_CLIENTS=1
//! to make such a skip a failure.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::clients::{have, script, skip};
use common::recorder::{packets, Recorder, Recording};
use common::sql::server_error;
use common::{FunnelConfig, FunnelProcess, PASS_A, PASS_B, TEST_DB, USER_A, USER_B};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Value};

// ---------------------------------------------------------------------------
// Helpers.

/// Starts a funnel for funnel_a and funnel_b (plus `extra_users`, given as
/// (name, password)), with `pool` lines in [pool].
fn start_funnel(pool: &[&str], extra_users: &[(&str, &str)]) -> FunnelProcess {
    let mut cfg = FunnelConfig::new();
    for l in pool {
        cfg = cfg.pool(l);
    }
    for (name, pw) in extra_users {
        cfg = cfg.user(name, pw, &[]);
    }
    cfg.start()
}

/// A client script run: the command and how to describe it.
struct Run {
    what: String,
    cmd: Command,
}

impl Run {
    fn python(driver: &str, f: &FunnelProcess, table: &str) -> Run {
        let mut cmd = Command::new("python3");
        cmd.arg(script("python_flow.py")).arg(driver);
        add_conn_args(&mut cmd, f, table);
        Run {
            what: format!("python {driver}"),
            cmd,
        }
    }

    fn mysqli(f: &FunnelProcess, table: &str) -> Run {
        let mut cmd = Command::new("php");
        cmd.arg(script("mysqli_flow.php"));
        add_conn_args(&mut cmd, f, table);
        Run {
            what: "php mysqli".into(),
            cmd,
        }
    }

    fn pdo(mode: &str, f: &FunnelProcess, table: &str) -> Run {
        let mut cmd = Command::new("php");
        cmd.arg(script("pdo_flow.php")).arg(mode);
        add_conn_args(&mut cmd, f, table);
        Run {
            what: format!("php pdo {mode}"),
            cmd,
        }
    }

    /// `found_rows.php`: `api` is pdo or mysqli.
    fn found_rows(api: &str, f: &FunnelProcess, table: &str) -> Run {
        let mut cmd = Command::new("php");
        cmd.arg(script("found_rows.php")).arg(api).args([
            "127.0.0.1",
            &f.port.to_string(),
            &common::mariadb().port.to_string(),
            USER_A,
            PASS_A,
            USER_B,
            PASS_B,
            TEST_DB,
            table,
        ]);
        Run {
            what: format!("php {api} found_rows"),
            cmd,
        }
    }

    fn spawn(mut self) -> (String, Child) {
        let child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.what));
        (self.what, child)
    }
}

fn add_conn_args(cmd: &mut Command, f: &FunnelProcess, table: &str) {
    cmd.args([
        "127.0.0.1",
        &f.port.to_string(),
        USER_A,
        PASS_A,
        TEST_DB,
        table,
    ]);
}

/// Outcome of a client script.
enum Verdict {
    Passed(usize),
    Skipped(String),
}

/// Judges a finished script: `OK <n> checks` on the last line and exit 0, or
/// a skip (exit 77); anything else panics with its output and the funnel log.
fn judge(what: &str, out: Output, f: &FunnelProcess) -> Verdict {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        let reason = stdout
            .lines()
            .find_map(|l| l.strip_prefix("SKIP: "))
            .unwrap_or("no reason given")
            .to_string();
        return Verdict::Skipped(reason);
    }
    let last = stdout.lines().last().unwrap_or("");
    let n = last
        .strip_prefix("OK ")
        .and_then(|r| r.strip_suffix(" checks"))
        .and_then(|n| n.parse::<usize>().ok());
    match n {
        Some(n) if out.status.success() && n > 0 => Verdict::Passed(n),
        _ => panic!(
            "{what} failed ({}).\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n\
             --- funnel log ---\n{}",
            out.status,
            f.log_tail(20_000)
        ),
    }
}

/// Runs one client flow through its own funnel and asserts it passed.
fn run_flow(test: &str, interpreter: &str, make: impl FnOnce(&FunnelProcess, &str) -> Run) {
    if !have(interpreter) {
        skip(test, &format!("`{interpreter}` is not installed"));
        return;
    }
    let f = start_funnel(&["connections = 2"], &[]);
    let table = common::unique_name("e2e_cl");
    let (what, child) = make(&f, &table).spawn();
    let out = wait_output(child, Duration::from_secs(120), &what);
    match judge(&what, out, &f) {
        Verdict::Passed(n) => println!("{what}: {n} checks passed"),
        Verdict::Skipped(reason) => skip(test, &reason),
    }
}

/// Waits for a child, killing it (and panicking) after `timeout`.
fn wait_output(mut child: Child, timeout: Duration, what: &str) -> Output {
    let deadline = Instant::now() + timeout;
    // Read the pipes in threads so a chatty child cannot block on them.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut so, &mut v).ok();
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut v).ok();
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

// ---------------------------------------------------------------------------
// Python.

#[test]
fn python_pymysql() {
    run_flow("python_pymysql", "python3", |f, t| {
        Run::python("pymysql", f, t)
    });
}

#[test]
fn python_mysql_connector_pure() {
    run_flow("python_mysql_connector_pure", "python3", |f, t| {
        Run::python("connector-pure", f, t)
    });
}

#[test]
fn python_mysql_connector_cext() {
    run_flow("python_mysql_connector_cext", "python3", |f, t| {
        Run::python("connector-cext", f, t)
    });
}

#[test]
fn python_mysqlclient() {
    run_flow("python_mysqlclient", "python3", |f, t| {
        Run::python("mysqlclient", f, t)
    });
}

// ---------------------------------------------------------------------------
// PHP.

#[test]
fn php_mysqli_prepared() {
    run_flow("php_mysqli_prepared", "php", Run::mysqli);
}

#[test]
fn php_pdo_emulated_prepares() {
    run_flow("php_pdo_emulated_prepares", "php", |f, t| {
        Run::pdo("emulated", f, t)
    });
}

#[test]
fn php_pdo_native_prepares() {
    run_flow("php_pdo_native_prepares", "php", |f, t| {
        Run::pdo("native", f, t)
    });
}

/// PDO and mysqli clients with and without CLIENT_FOUND_ROWS interleaved on
/// a funnel with one shared backend per pool; each affected-row count is
/// what a direct connection with the same flag gets (mysqli: also after
/// COM_CHANGE_USER).
#[test]
fn php_found_rows() {
    if !have("php") {
        skip("php_found_rows", "`php` is not installed");
        return;
    }
    let f = start_funnel(&["connections = 1"], &[]);
    for api in ["pdo", "mysqli"] {
        let (what, child) = Run::found_rows(api, &f, &common::unique_name("e2e_frows")).spawn();
        let out = wait_output(child, Duration::from_secs(120), &what);
        match judge(&what, out, &f) {
            Verdict::Passed(n) => println!("{what}: {n} checks passed"),
            Verdict::Skipped(reason) => skip("php_found_rows", &reason),
        }
    }
}

/// Every available library at once, on one funnel whose pool has a single
/// shared backend connection: their sessions (charsets, modes, transactions,
/// prepared statements) interleave on it.
#[test]
fn all_libraries_at_once_on_one_backend() {
    let f = start_funnel(&["connections = 1", "max_pinned_backends = 16"], &[]);
    let mut runs = Vec::new();
    if have("python3") {
        for d in ["pymysql", "connector-pure", "connector-cext", "mysqlclient"] {
            runs.push(Run::python(d, &f, &common::unique_name("e2e_all")));
        }
    } else {
        skip(
            "all_libraries_at_once (python part)",
            "`python3` is not installed",
        );
    }
    if have("php") {
        runs.push(Run::mysqli(&f, &common::unique_name("e2e_all")));
        runs.push(Run::pdo("emulated", &f, &common::unique_name("e2e_all")));
        runs.push(Run::pdo("native", &f, &common::unique_name("e2e_all")));
    } else {
        skip("all_libraries_at_once (php part)", "`php` is not installed");
    }
    let children: Vec<_> = runs.into_iter().map(Run::spawn).collect();
    let mut passed = 0;
    for (what, child) in children {
        let out = wait_output(child, Duration::from_secs(180), &what);
        match judge(&what, out, &f) {
            Verdict::Passed(n) => {
                println!("{what}: {n} checks passed");
                passed += 1;
            }
            Verdict::Skipped(reason) => skip(&format!("all_libraries_at_once: {what}"), &reason),
        }
    }
    println!("{passed} client libraries passed concurrently");
}

// ---------------------------------------------------------------------------
// The mariadb command-line client.

struct Cli {
    port: u16,
}

impl Cli {
    fn cmd(&self, user: &str, pw: &str, db: Option<&str>) -> Command {
        let mut cmd = common::clients::mariadb_cli(self.port, user, pw);
        cmd.arg("--skip-ssl").arg("--connect-timeout=10");
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        cmd
    }

    /// Runs `-N -B -e sql` as funnel_a; (exit code, stdout, stderr).
    fn run(&self, args: &[&str], sql: &str) -> (i32, String, String) {
        let out = self
            .cmd(USER_A, PASS_A, Some(TEST_DB))
            .args(["-N", "-B"])
            .args(args)
            .args(["-e", sql])
            .output()
            .expect("run mariadb");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, sql: &str) -> String {
        let (code, out, err) = self.run(&[], sql);
        assert_eq!(code, 0, "mariadb -e {sql:?} failed: {err}");
        out
    }

    /// Feeds `script` on stdin.
    fn stdin(&self, args: &[&str], script: &str) -> (i32, String, String) {
        use std::io::Write;
        let mut child = self
            .cmd(USER_A, PASS_A, Some(TEST_DB))
            .args(["-N", "-B"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mariadb");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = wait_output(child, Duration::from_secs(60), "mariadb");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn mariadb_cli() {
    let f = start_funnel(&["connections = 2"], &[]);
    let cli = Cli { port: f.port };
    let db = common::mariadb();
    let mut checks = 0;

    assert_eq!(
        cli.ok("SELECT 1 + 1; SELECT DATABASE(); USE mysql; SELECT DATABASE(); SET @x = 5; SELECT @x * 2"),
        "2\nfunnel_test\nmysql\n10\n"
    );
    checks += 1;
    let out = cli.ok("SELECT CURRENT_USER(), VERSION() LIKE '%MariaDB%'");
    assert_eq!(out, "funnel_a@127.0.0.1\t1\n");
    checks += 1;
    // The charset the CLI asks for in its handshake is the session's.
    for cs in ["utf8mb4", "latin1", "utf8mb3"] {
        let (code, out, err) = cli.run(
            &[&format!("--default-character-set={cs}")],
            "SELECT @@character_set_client, @@character_set_results, @@character_set_connection",
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("{cs}\t{cs}\t{cs}\n"));
    }
    checks += 1;

    // A script on stdin: DDL, DML, a stored procedure (DELIMITER is the
    // client's, CALL returns several results), a transaction.
    let t = common::unique_name("e2e_cli");
    let script = format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(50)) ENGINE=InnoDB;\n\
         INSERT INTO {t} VALUES (1, 'one'), (2, 'two'), (3, 'three');\n\
         DELIMITER $$\n\
         CREATE PROCEDURE {t}_p(IN n INT)\n\
         BEGIN\n\
           SELECT COUNT(*) FROM {t} WHERE id <= n;\n\
           SELECT name FROM {t} WHERE id = n;\n\
         END$$\n\
         DELIMITER ;\n\
         CALL {t}_p(2);\n\
         BEGIN;\n\
         DELETE FROM {t};\n\
         SELECT COUNT(*) FROM {t};\n\
         ROLLBACK;\n\
         SELECT GROUP_CONCAT(name ORDER BY id) FROM {t};\n\
         DROP PROCEDURE {t}_p;\n\
         DROP TABLE {t};\n"
    );
    let (code, out, err) = cli.stdin(&[], &script);
    assert_eq!(code, 0, "script failed: {err}");
    assert_eq!(out, "2\ntwo\n0\none,two,three\n");
    checks += 1;

    // Errors: mysqld's messages, exit code 1; --force carries on.
    let (code, _, err) = cli.run(&[], "SELEC 1");
    assert_eq!(code, 1);
    assert!(
        err.contains("ERROR 1064 (42000) at line 1: You have an error in your SQL syntax"),
        "{err}"
    );
    checks += 1;
    // (The exit code with --force differs between client versions.)
    let (_, out, err) = cli.stdin(
        &["--force"],
        "SELECT 1;\nSELECT * FROM no_such_table_e2e;\nSELECT 2;\n",
    );
    assert_eq!(out, "1\n2\n");
    assert!(
        err.contains(
            "ERROR 1146 (42S02) at line 2: Table 'funnel_test.no_such_table_e2e' doesn't exist"
        ),
        "{err}"
    );
    checks += 1;

    // Refused logins, word for word like mysqld's.
    for (user, pw, schema, want) in [
        (
            USER_A,
            "wrong",
            Some(TEST_DB),
            "ERROR 1045 (28000): Access denied for user 'funnel_a'@'127.0.0.1' (using password: YES)",
        ),
        (
            "nobody",
            "x",
            None,
            "ERROR 1045 (28000): Access denied for user 'nobody'@'127.0.0.1' (using password: YES)",
        ),
        (
            USER_A,
            PASS_A,
            Some("no_such_db_e2e"),
            "ERROR 1049 (42000): Unknown database 'no_such_db_e2e'",
        ),
    ] {
        let out = cli.cmd(user, pw, schema).args(["-e", "SELECT 1"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end(), want);
        // The same command against mysqld directly says the same.
        let direct = common::clients::mariadb_cli(db.port, user, pw)
            .arg("--skip-ssl")
            .args(schema.map(|s| format!("--database={s}")))
            .args(["-e", "SELECT 1"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&direct.stderr).trim_end(), want);
        checks += 1;
    }

    // A large result, printed in full and in order.
    let out = cli.ok("SELECT seq, MD5(seq) FROM seq_1_to_100000");
    let mut n = 0;
    for (i, line) in out.lines().enumerate() {
        let (seq, _) = line.split_once('\t').unwrap();
        assert_eq!(seq, (i + 1).to_string());
        n += 1;
    }
    assert_eq!(n, 100_000);
    checks += 1;

    // funnel_b's privileges are its own.
    let out = cli
        .cmd(USER_B, PASS_B, Some(TEST_DB))
        .args([
            "-N",
            "-B",
            "-e",
            "SELECT CURRENT_USER(); CREATE DATABASE e2e_b_forbidden",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "funnel_b@127.0.0.1\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ERROR 1044 (42000)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    checks += 1;
    println!("mariadb CLI: OK {checks} checks");
}

// ---------------------------------------------------------------------------
// The Rust mysql crate with prepared statements.

#[test]
fn rust_mysql_crate_prepared_statements() {
    const CLIENTS: usize = 4;
    let (user, pw) = common::private_account("e2e_prep");
    let f = start_funnel(
        &["connections = 1", "max_pinned_backends = 8"],
        &[(&user, &pw)],
    );
    let t = common::unique_name("e2e_prep");
    common::admin_sql(&format!(
        "CREATE TABLE {TEST_DB}.{t} (id INT PRIMARY KEY, owner INT, name VARCHAR(64), \
         d DATE, amount DECIMAL(12,3), x DOUBLE, b BLOB) ENGINE=InnoDB"
    ));
    let opts = OptsBuilder::from_opts(f.opts(&user, &pw)).max_allowed_packet(Some(64 << 20));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let opts = opts.clone();
            let t = t.clone();
            thread::spawn(move || {
                let mut c = Conn::new(opts).unwrap();
                // One statement, many executions with different parameters.
                let echo = c.prep("SELECT ?, ? + 1, CONCAT(?, '-x'), ?, ?").unwrap();
                for i in 0..50i64 {
                    let blob = vec![i as u8, 0, 255, k as u8];
                    let row: (i64, i64, String, Option<i64>, Vec<u8>) = c
                        .exec_first(
                            &echo,
                            (i, i * 10, format!("c{k}-{i}"), None::<i64>, blob.clone()),
                        )
                        .unwrap()
                        .unwrap();
                    assert_eq!(row, (i, i * 10 + 1, format!("c{k}-{i}-x"), None, blob));
                }
                // exec_batch, then read back through another statement.
                let base = (k as i64 + 1) * 1000;
                c.exec_batch(
                    format!(
                        "INSERT INTO {t} (id, owner, name, d, amount, x, b) \
                         VALUES (?, ?, ?, ?, ?, ?, ?)"
                    ),
                    (0..100i64).map(|i| {
                        (
                            base + i,
                            k as i64,
                            format!("n{i}"),
                            mysql::Value::Date(
                                2024,
                                1 + (i % 12) as u8,
                                1 + (i % 28) as u8,
                                0,
                                0,
                                0,
                                0,
                            ),
                            format!("{}.125", i),
                            i as f64 / 8.0,
                            vec![i as u8; i as usize],
                        )
                    }),
                )
                .unwrap();
                let rows: Vec<(i64, String, Value, String, f64, Vec<u8>)> = c
                    .exec(
                        format!(
                            "SELECT id, name, d, amount, x, b FROM {t} \
                             WHERE owner = ? AND id BETWEEN ? AND ? ORDER BY id"
                        ),
                        (k as i64, base, base + 99),
                    )
                    .unwrap();
                assert_eq!(rows.len(), 100);
                for (i, (id, name, d, amount, x, b)) in rows.into_iter().enumerate() {
                    let i = i as i64;
                    assert_eq!(id, base + i);
                    assert_eq!(name, format!("n{i}"));
                    assert_eq!(
                        d,
                        Value::Date(2024, 1 + (i % 12) as u8, 1 + (i % 28) as u8, 0, 0, 0, 0)
                    );
                    assert_eq!(amount, format!("{i}.125"));
                    assert_eq!(x, i as f64 / 8.0);
                    assert_eq!(b, vec![i as u8; i as usize]);
                }
                // Named parameters, exec_iter.
                let named = c
                    .prep(format!(
                        "SELECT COUNT(*) FROM {t} WHERE owner = :o AND id >= :from"
                    ))
                    .unwrap();
                let n: i64 = c
                    .exec_first(
                        &named,
                        mysql::Params::from(vec![
                            ("o", Value::from(k as i64)),
                            ("from", Value::from(base + 50)),
                        ]),
                    )
                    .unwrap()
                    .unwrap();
                assert_eq!(n, 50);
                let mut sum = 0i64;
                for row in c
                    .exec_iter(format!("SELECT id FROM {t} WHERE owner = ?"), (k as i64,))
                    .unwrap()
                {
                    sum += mysql::from_row::<i64>(row.unwrap());
                }
                assert_eq!(sum, (0..100).map(|i| base + i).sum::<i64>());

                // Errors: at prepare and at execute; the connection goes on.
                assert_eq!(server_error(c.prep("SELEC ?")).0, 1064);
                assert_eq!(
                    server_error(c.exec_drop(format!("INSERT INTO {t} (id) VALUES (?)"), (base,)))
                        .0,
                    1062
                );
                // A prepared statement inside a transaction that is rolled back.
                c.query_drop("BEGIN").unwrap();
                c.exec_drop(format!("DELETE FROM {t} WHERE owner = ?"), (k as i64,))
                    .unwrap();
                let n: i64 = c
                    .exec_first(
                        format!("SELECT COUNT(*) FROM {t} WHERE owner = ?"),
                        (k as i64,),
                    )
                    .unwrap()
                    .unwrap();
                assert_eq!(n, 0);
                c.query_drop("ROLLBACK").unwrap();
                let n: i64 = c
                    .exec_first(
                        format!("SELECT COUNT(*) FROM {t} WHERE owner = ?"),
                        (k as i64,),
                    )
                    .unwrap()
                    .unwrap();
                assert_eq!(n, 100);
                // Closing statements, then using the connection.
                c.close(echo).unwrap();
                c.close(named).unwrap();
                let v: i64 = c.exec_first("SELECT ? * 2", (21,)).unwrap().unwrap();
                assert_eq!(v, 42);
                k
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // The pinned backends of the clients that left are not kept.
    let db = common::mariadb();
    db.wait_connections_at_most(&user, 1, Duration::from_secs(20));
    let mut c = Conn::new(opts).unwrap();
    let n: i64 = c
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .unwrap()
        .unwrap();
    assert_eq!(n, 100 * CLIENTS as i64);
    c.query_drop(format!("DROP TABLE {t}")).unwrap();
}

/// What a data-changing statement told the client: affected rows and the
/// OK packet's info text (`Rows matched: 1  Changed: 0  Warnings: 0`).
fn outcome(c: &mut Conn, sql: &str) -> (u64, String) {
    c.query_drop(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    (c.affected_rows(), c.info_str().into_owned())
}

/// Options asking for `CLIENT_FOUND_ROWS` (affected rows = rows matched) or not.
fn with_found_rows(opts: mysql::Opts, on: bool) -> mysql::Opts {
    let flags = if on {
        mysql::consts::CapabilityFlags::CLIENT_FOUND_ROWS
    } else {
        mysql::consts::CapabilityFlags::empty()
    };
    OptsBuilder::from_opts(opts)
        .additional_capabilities(flags)
        .into()
}

/// Clients with and without `CLIENT_FOUND_ROWS` interleaved on one funnel
/// whose pools have a single shared backend each: every statement reports
/// what a direct connection with the same flag reports, also after
/// COM_CHANGE_USER, and mysqld sees one connection per kind.
#[test]
fn rust_mysql_crate_found_rows_per_client() {
    let (user, pw) = common::private_account("e2e_frows");
    let f = start_funnel(
        &["connections = 1", "max_pinned_backends = 4"],
        &[(&user, &pw)],
    );
    let db = common::mariadb();
    let t = common::unique_name("e2e_frows");
    common::admin_sql(&format!(
        "CREATE TABLE {TEST_DB}.{t} (id INT PRIMARY KEY, v INT) ENGINE=InnoDB"
    ));
    common::admin_sql(&format!(
        "INSERT INTO {TEST_DB}.{t} VALUES (1, 10), (2, 20), (3, 30)"
    ));
    let statements = [
        // Matched 1, changed 0: the case the flag is about.
        format!("UPDATE {t} SET v = v WHERE id = 1"),
        format!("UPDATE {t} SET v = 20 WHERE id IN (1, 2, 3)"),
        format!("UPDATE {t} SET v = v + 1 WHERE id = 3"),
        format!("UPDATE {t} SET v = v - 1 WHERE id = 3"),
        format!("UPDATE {t} SET v = v WHERE id = 99"),
        // An existing row set to its current values: 0, or 1 with the flag.
        format!("INSERT INTO {t} VALUES (2, 20) ON DUPLICATE KEY UPDATE v = VALUES(v)"),
    ];
    let through = |on| Conn::new(with_found_rows(f.opts(&user, &pw), on)).unwrap();
    let direct =
        |on| Conn::new(with_found_rows(common::opts(USER_A, PASS_A, db.port), on)).unwrap();
    // Three of each kind through the funnel, one of each kind direct.
    let mut funnel: Vec<(bool, Conn)> = (0..6).map(|i| (i % 2 == 0, through(i % 2 == 0))).collect();
    let mut reference = [direct(false), direct(true)];
    // Each statement runs on the same rows for both sides of a comparison.
    let mut setup = direct(false);
    let reset = format!("UPDATE {t} SET v = id * 10");
    let mut fresh = move || setup.query_drop(&reset).unwrap();
    let mut check_round =
        |funnel: &mut Vec<(bool, Conn)>, reference: &mut [Conn; 2], what: &str| {
            for sql in &statements {
                for (on, c) in funnel.iter_mut() {
                    fresh();
                    let got = outcome(c, sql);
                    fresh();
                    let want = outcome(&mut reference[usize::from(*on)], sql);
                    assert_eq!(got, want, "{what}: {sql} (found_rows = {on})");
                }
            }
            // The point of it all, spelled out.
            for (on, c) in funnel.iter_mut() {
                let same = format!("UPDATE {t} SET v = v WHERE id = 1");
                assert_eq!(
                    outcome(c, &same).0,
                    u64::from(*on),
                    "{what}: found_rows = {on}"
                );
            }
        };
    check_round(&mut funnel, &mut reference, "after login");
    // One shared backend per pool: the default one and the found_rows one.
    assert_eq!(db.connections_of(&user), 2);

    // COM_CHANGE_USER keeps the client's flag (it is the connection's, as
    // on mysqld), whichever user it becomes.
    let to = |name: &str, pw: &str| {
        mysql::ChangeUserOpts::default()
            .with_user(Some(name.into()))
            .with_pass(Some(pw.into()))
            .with_db_name(Some(TEST_DB.into()))
    };
    for (_, c) in funnel.iter_mut() {
        c.change_user(to(USER_B, PASS_B)).unwrap();
    }
    for c in reference.iter_mut() {
        c.change_user(to(USER_B, PASS_B)).unwrap();
    }
    check_round(&mut funnel, &mut reference, "after change-user to funnel_b");
    for (_, c) in funnel.iter_mut() {
        c.change_user(to(&user, &pw)).unwrap();
    }
    check_round(&mut funnel, &mut reference, "after change-user back");
    assert_eq!(db.connections_of(&user), 2);
    common::admin_sql(&format!("DROP TABLE {TEST_DB}.{t}"));
}

/// A funnel like `start_funnel`'s, with `allow_local_infile` set as given.
fn start_funnel_infile(allow: bool) -> FunnelProcess {
    FunnelConfig::user_a()
        .funnel(&format!("allow_local_infile = {allow}"))
        .pool("connections = 1")
        .start()
}

/// LOAD DATA LOCAL INFILE passes the client's file to mysqld when the
/// funnel's config and the client both allow it; otherwise mysqld's refusal
/// reaches the client and the connection stays usable.
#[test]
fn load_data_local_infile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("rows.csv");
    let body: String = (1..=2000).map(|i| format!("{i},{}\n", i * 3)).collect();
    std::fs::write(&csv, body).expect("write csv");
    let t = common::unique_name("e2e_infile");
    let load = format!(
        "CREATE TABLE {t} (a INT, b INT); \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE {t} FIELDS TERMINATED BY ','; \
         SELECT COUNT(*), SUM(b) FROM {t}; DROP TABLE {t}",
        csv.display()
    );

    let f = start_funnel_infile(true);
    let cli = Cli { port: f.port };
    let (code, out, err) = cli.run(&["--local-infile=1"], &load);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("2000\t{}\n", 3 * 2000 * 2001 / 2));

    // A file of several MiB: relayed as it arrives, with mysqld's reading
    // pace holding the client back (the funnel buffers only a bounded part).
    let rows = 400_000u64;
    let big: String = (1..=rows).map(|i| format!("{i},{}\n", i * 3)).collect();
    std::fs::write(&csv, &big).expect("write csv");
    let (code, out, err) = cli.run(&["--local-infile=1"], &load);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{rows}\t{}\n", 3 * rows * (rows + 1) / 2));

    // The funnel does not offer LOCAL INFILE to mysqld: its error, and the
    // next statement on the same connection still works.
    let f = start_funnel_infile(false);
    let cli = Cli { port: f.port };
    let (code, _out, err) = cli.run(
        &["--local-infile=1", "--force"],
        &format!("{load}; SELECT 'still here'"),
    );
    assert_ne!(code, 0);
    assert!(err.contains("ERROR"), "{err}");
    let (_, out, _) = cli.run(&[], &format!("DROP TABLE IF EXISTS {t}; SELECT 'ok'"));
    assert_eq!(out, "ok\n");
}

/// A client that did not enable local files gets mysqld's own ERR 4166 for
/// LOAD DATA LOCAL, even from a funnel that allows them (its backends would
/// ask for the file): the request for a file never reaches that client, it
/// sees exactly what mysqld shows it, and nothing is loaded.
#[test]
fn load_data_local_from_a_client_without_local_files_is_refused_as_by_mysqld() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("rows.csv");
    std::fs::write(&csv, "1,2\n3,4\n").expect("write csv");
    let t = common::unique_name("e2e_noinfile");
    common::admin_sql(&format!("CREATE TABLE {TEST_DB}.{t} (a INT, b INT)"));
    let load = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE {t} FIELDS TERMINATED BY ','; \
         SELECT COUNT(*) FROM {t}",
        csv.display()
    );
    let direct = Cli {
        port: common::mariadb().port,
    };
    let (direct_code, direct_out, direct_err) = direct.run(&["--local-infile=0", "--force"], &load);
    let f = start_funnel_infile(true);
    let funnel = Cli { port: f.port };
    let (code, out, err) = funnel.run(&["--local-infile=0", "--force"], &load);
    assert!(
        direct_err.contains("ERROR 4166 (HY000)"),
        "direct: {direct_err}"
    );
    assert_eq!((code, &out, &err), (direct_code, &direct_out, &direct_err));
    let rows: Vec<u64> =
        common::mariadb().admin_query(&format!("SELECT COUNT(*) FROM {TEST_DB}.{t}"));
    assert_eq!(rows, vec![0], "nothing loaded");
    common::admin_sql(&format!("DROP TABLE {TEST_DB}.{t}"));
}

// ---------------------------------------------------------------------------
// Every response kind through the C client libraries' own API, compared with
// mysqld: libmysqlclient negotiates CLIENT_DEPRECATE_EOF, Connector/C does
// not. Both must read through the funnel exactly what they read from mysqld;
// libmysqlclient must moreover receive the same packets.

/// Capability flags of the client's handshake response.
fn client_capabilities(sent: &[u8]) -> u32 {
    let (seq, p) = packets(sent)
        .into_iter()
        .next()
        .expect("no handshake response");
    assert_eq!(seq, 1);
    u32::from_le_bytes([p[0], p[1], p[2], p[3]])
}

const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;

/// Runs tests/clients/capi_flow.py with this table and data file; its
/// transcript, or None if skipped.
fn capi_flow(
    test: &str,
    library: &str,
    port: u16,
    (table, datafile): (&str, &std::path::Path),
    f: &FunnelProcess,
) -> Option<String> {
    let mut cmd = Command::new("python3");
    cmd.arg(script("capi_flow.py")).arg(library).args([
        "127.0.0.1",
        &port.to_string(),
        USER_A,
        PASS_A,
        TEST_DB,
        table,
    ]);
    cmd.arg(datafile);
    let what = format!("capi_flow.py {library} (port {port})");
    let (_, child) = Run {
        what: what.clone(),
        cmd,
    }
    .spawn();
    let out = wait_output(child, Duration::from_secs(120), &what);
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    match judge(&what, out, f) {
        Verdict::Passed(_) => Some(transcript),
        Verdict::Skipped(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// The C API flow of `library` through the funnel and directly: the same
/// transcript. Returns the recordings (through the funnel, direct) and the
/// transcript.
fn capi_against_direct(test: &str, library: &str) -> Option<(Recording, Recording, String)> {
    capi_against_direct_offering(test, library, None)
}

/// The same, the direct connection offered only `mariadb_caps` of mysqld's
/// extended capabilities (see `Recorder::start_offering`).
fn capi_against_direct_offering(
    test: &str,
    library: &str,
    mariadb_caps: Option<u32>,
) -> Option<(Recording, Recording, String)> {
    if !have("python3") {
        skip(test, "`python3` is not installed");
        return None;
    }
    let f = start_funnel_infile(true);
    let db = common::mariadb();
    // The same names both times: they are in the answers (column
    // definitions, the LOCAL INFILE request).
    let dir = tempfile::tempdir().expect("tempdir");
    let names = (common::unique_name("e2e_capi"), dir.path().join("rows.csv"));
    let names = (names.0.as_str(), names.1.as_path());
    let relay = Recorder::start_offering(db.port, mariadb_caps);
    let direct = capi_flow(test, library, relay.port, names, &f)?;
    let direct_wire = relay.finish();
    let relay = Recorder::start(f.port);
    let through = capi_flow(test, library, relay.port, names, &f)?;
    let funnel_wire = relay.finish();
    assert_eq!(
        through,
        direct,
        "{library} reads something else through the funnel than from mysqld\n--- funnel log ---\n{}",
        f.log_tail(20_000)
    );
    Some((funnel_wire, direct_wire, through))
}

/// Compares what libmysqlclient received through the funnel with what it
/// received from mysqld, packet by packet after the login. Equal bytes, or:
/// OK packets with the same fields (the direct connection has
/// CLIENT_SESSION_TRACK, so its OKs may carry state the funnel's do not),
/// COM_STMT_PREPARE answers differing only in the statement id, and the
/// CONNECTION_ID() value (the funnel's id). The column definitions of the
/// SELECTs the funnel answers itself must be mysqld's to the byte.
fn assert_same_packets(through: &[u8], direct: &[u8]) {
    use funnel::protocol::consts::{CLIENT_PROTOCOL_41, CLIENT_SESSION_TRACK};
    use funnel::protocol::response::decode_ok;
    let after_login = |p: Vec<(u8, Vec<u8>)>| -> Vec<(u8, Vec<u8>)> {
        let at = p
            .iter()
            .position(|(_, p)| p.first() == Some(&0))
            .expect("no login OK");
        p[at + 1..].to_vec()
    };
    let (f, d) = (after_login(packets(through)), after_login(packets(direct)));
    let ok_fields = |p: &[u8], caps| {
        decode_ok(p, caps).ok().map(|ok| {
            let status = ok.status & !funnel::protocol::consts::SERVER_SESSION_STATE_CHANGED;
            (
                ok.header,
                ok.affected_rows,
                ok.last_insert_id,
                status,
                ok.warnings,
                ok.info.to_vec(),
            )
        })
    };
    let mut funnel_answered = false;
    let mut explained = 0;
    for (i, ((fs, fp), (ds, dp))) in f.iter().zip(&d).enumerate() {
        let context = || {
            let from = i.saturating_sub(4);
            format!(
                "packet {i}: funnel {fs} {fp:02x?}\n  direct {ds} {dp:02x?}\nbefore it (funnel): {:02x?}",
                &f[from..i]
            )
        };
        assert_eq!(fs, ds, "sequence ids differ at {}", context());
        let is_def = |p: &[u8], name: &[u8]| {
            p.starts_with(b"\x03def") && p.windows(name.len()).any(|w| w == name)
        };
        if is_def(dp, b"CONNECTION_ID()") {
            // Its row is the funnel's id, not mysqld's.
            funnel_answered = true;
        }
        if fp == dp {
            continue;
        }
        explained += 1;
        let one_number = |p: &[u8]| {
            p.first().is_some_and(|&n| usize::from(n) + 1 == p.len())
                && p[1..].iter().all(u8::is_ascii_digit)
        };
        if funnel_answered && one_number(fp) && one_number(dp) {
            funnel_answered = false;
            continue;
        }
        if dp.len() == 12 && fp.len() == 12 && dp[0] == 0 && fp[5..] == dp[5..] {
            continue; // prepare OK: the funnel's statement id
        }
        let f_ok = ok_fields(fp, CLIENT_PROTOCOL_41);
        assert!(
            f_ok.is_some() && f_ok == ok_fields(dp, CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK),
            "different packets at {}",
            context()
        );
    }
    assert_eq!(
        f.len(),
        d.len(),
        "funnel sent {} packets, mysqld {}",
        f.len(),
        d.len()
    );
    println!(
        "{} packets compared, {explained} differ in what the funnel may change",
        f.len()
    );
}

#[test]
fn libmysqlclient_c_api_with_deprecate_eof() {
    let test = "libmysqlclient_c_api_with_deprecate_eof";
    let Some((through, direct, transcript)) = capi_against_direct(test, "libmysqlclient") else {
        return;
    };
    // The point of this test: the client asks for OK terminators, and does
    // so through the funnel too.
    assert_ne!(client_capabilities(&direct.sent) & CLIENT_DEPRECATE_EOF, 0);
    assert_ne!(client_capabilities(&through.sent) & CLIENT_DEPRECATE_EOF, 0);
    // It ran every kind of response (COM_STMT_FETCH, COM_FIELD_LIST, ...).
    for line in [
        "cursor-all[0] rows=50",
        "fields ['id', 'name', 'n']",
        "exec-call[3]",
        "load[0] ok affected=201",
        "multi-load[1] ok affected=0 warnings=202",
    ] {
        assert!(transcript.contains(line), "{line:?} not in\n{transcript}");
    }
    assert_same_packets(&through.received, &direct.received);
}

#[test]
fn libmariadb_c_api_with_eof_packets() {
    let test = "libmariadb_c_api_with_eof_packets";
    // What the funnel offers of MariaDB's extensions (not the metadata
    // cache, with which mysqld leaves column definitions out of results).
    let offered = MARIADB_CLIENT_EXTENDED_METADATA | MARIADB_CLIENT_STMT_BULK_OPERATIONS;
    let Some((through, direct, transcript)) =
        capi_against_direct_offering(test, "libmariadb", Some(offered))
    else {
        return;
    };
    assert_eq!(client_capabilities(&direct.sent) & CLIENT_DEPRECATE_EOF, 0);
    assert_eq!(client_capabilities(&through.sent) & CLIENT_DEPRECATE_EOF, 0);
    assert!(transcript.contains("cursor-all[0] rows=50"), "{transcript}");
    // libmariadb asks for MariaDB's extended type information when offered,
    // through the funnel as from mysqld, and gets the same column
    // definitions (type names and formats of JSON, UUID, INET4 columns) in
    // every kind of response.
    for (sent, way) in [
        (&direct.sent, "directly"),
        (&through.sent, "through the funnel"),
    ] {
        assert_ne!(
            client_mariadb_capabilities(sent) & MARIADB_CLIENT_EXTENDED_METADATA,
            0,
            "libmariadb did not ask for extended metadata {way}"
        );
    }
    for line in [
        "ext-text[0] columns=['id', 'j', 'u', 'i4'] rows=1",
        "ext-prep prepared params=2 columns=4",
        "ext-fields ['id', 'j', 'u', 'i4']",
    ] {
        assert!(transcript.contains(line), "{line:?} not in\n{transcript}");
    }
    assert_same_packets(&through.received, &direct.received);
}

/// MariaDB's extended capabilities in the client's handshake response
/// (the last 4 filler bytes, meaningful only without CLIENT_MYSQL).
fn client_mariadb_capabilities(sent: &[u8]) -> u32 {
    let (_, p) = packets(sent)
        .into_iter()
        .next()
        .expect("no handshake response");
    funnel::protocol::mariadb_ext::response_mariadb_caps(&p)
}

const MARIADB_CLIENT_EXTENDED_METADATA: u32 = 1 << 3;
const MARIADB_CLIENT_STMT_BULK_OPERATIONS: u32 = 1 << 2;

// ---------------------------------------------------------------------------
// Server-side cursors (COM_STMT_FETCH) through the funnel, with PHP mysqli.

/// The pin cause SHOW CLIENTS gives for the client with this id.
fn pin_cause(admin: &mut Conn, id: u32) -> Option<String> {
    let rows: Vec<mysql::Row> = admin.query("SHOW CLIENTS").expect("SHOW CLIENTS");
    let row = rows
        .iter()
        .find(|r| common::admin::column_text(r, "id") == Some(id.to_string()))
        .unwrap_or_else(|| panic!("client {id} not in SHOW CLIENTS"));
    common::admin::column_text(row, "pin_cause")
}

/// A client reads multi-row results through cursors (COM_STMT_EXECUTE
/// opens, COM_STMT_FETCH reads) while others run statements on the same
/// single shared backend. `cmd` runs a script that prints "PAUSE <step>
/// <connection id>" after each step and waits for a line on stdin; at each
/// step the client's pin cause must be `want`'s: "cursor" exactly while a
/// cursor is open (until the last row, COM_STMT_RESET, COM_STMT_CLOSE, an
/// execute without cursor, or its leaving). The others' answers must be
/// their own, and the pinned backend must come back once the client left.
fn cursor_pins(test: &str, what: &str, mut cmd: Command, want: &[(&str, Option<&str>)]) {
    let admin_port = common::free_port();
    let f = FunnelConfig::user_a()
        .pool("connections = 1\nmax_pinned_backends = 2")
        .admin(admin_port, "adm")
        .start();
    let port = f.port;
    let mut admin = common::admin_console(admin_port, "admin", "adm");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let others: Vec<_> = (0..3i64)
        .map(|k| {
            let (opts, stop) = (f.opts(USER_A, PASS_A), stop.clone());
            thread::spawn(move || {
                let mut c = Conn::new(opts).unwrap();
                let st = c.prep("SELECT ?, CONCAT('other-', ?)").unwrap();
                let mut n = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v = k * 1_000_000 + n;
                    let row: (i64, String) = c.exec_first(&st, (v, v)).unwrap().unwrap();
                    assert_eq!(row, (v, format!("other-{v}")));
                    let seq: Vec<i64> = c.query("SELECT seq FROM seq_1_to_5").unwrap();
                    assert_eq!(seq, vec![1, 2, 3, 4, 5]);
                    n += 1;
                }
                n
            })
        })
        .collect();

    cmd.args(["127.0.0.1", &port.to_string(), USER_A, PASS_A, TEST_DB])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut go = child.stdin.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut v).ok();
        v
    });
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut transcript = String::new();
    let mut steps = Vec::new();
    for line in lines {
        let line = line.expect("script output");
        transcript.push_str(&line);
        transcript.push('\n');
        if let Some(rest) = line.strip_prefix("PAUSE ") {
            let (step, id) = rest.split_once(' ').expect("PAUSE step id");
            let id: u32 = id.parse().expect("connection id");
            steps.push((step.to_string(), pin_cause(&mut admin, id)));
            // (The script may have failed meanwhile and closed its stdin.)
            let _ = std::io::Write::write_all(&mut go, b"\n");
        }
    }
    drop(go);
    let out = Output {
        status: child.wait().expect("wait for the script"),
        stdout: transcript.clone().into_bytes(),
        stderr: stderr.join().unwrap(),
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds: Vec<i64> = others.into_iter().map(|h| h.join().unwrap()).collect();
    match judge(what, out, &f) {
        Verdict::Passed(n) => println!("{what}: {n} checks passed; others ran {rounds:?} rounds"),
        Verdict::Skipped(reason) => return skip(test, &reason),
    }
    let got: Vec<(&str, Option<&str>)> = steps
        .iter()
        .map(|(s, c)| (s.as_str(), c.as_deref()))
        .collect();
    assert_eq!(
        got,
        want,
        "pin causes at each step of {what}\n{transcript}\n--- funnel log ---\n{}",
        f.log_tail(20_000)
    );
    assert!(rounds.iter().all(|&n| n > 0), "{rounds:?}");
    // The backend pinned by the cursor left open is reset and returned.
    assert!(
        common::wait_until(Duration::from_secs(20), || {
            let row: mysql::Row = admin.query_first("SHOW POOLS").unwrap().unwrap();
            common::admin::column_text(&row, "backends_pinned").as_deref() == Some("0")
                && common::admin::column_text(&row, "clients_pinned").as_deref() == Some("0")
        }),
        "{:?}",
        admin.query_first::<mysql::Row, _>("SHOW POOLS")
    );
}

/// mysqlnd reads a cursor one row per COM_STMT_FETCH, and reads it to the
/// end itself before COM_STMT_RESET or COM_STMT_CLOSE.
#[test]
fn php_mysqli_cursor_fetch() {
    let test = "php_mysqli_cursor_fetch";
    if !have("php") {
        return skip(test, "`php` is not installed");
    }
    let mut cmd = Command::new("php");
    cmd.arg(script("mysqli_cursor.php"));
    let want = [
        ("opened", Some("cursor")),
        ("midway", Some("cursor")),
        ("exhausted", None),
        ("reopened", Some("cursor")),
        ("reset", None),
        ("short", None),
        ("closed", None),
        ("leaving", Some("cursor")),
    ];
    cursor_pins(test, "php mysqli cursor", cmd, &want);
}

/// The C libraries read 5 rows per COM_STMT_FETCH, and reset or close
/// statements whose cursor still has rows.
fn c_api_cursor_fetch(test: &str, library: &str) {
    if !have("python3") {
        return skip(test, "`python3` is not installed");
    }
    let mut cmd = Command::new("python3");
    cmd.arg(script("capi_flow.py"))
        .args(["--cursor-pins", library]);
    let want = [
        ("opened", Some("cursor")),
        ("midway", Some("cursor")),
        ("exhausted", None),
        ("reopened", Some("cursor")),
        ("reset", None),
        ("closed", None),
        ("one-left", Some("cursor")),
        ("none-left", None),
        ("reopened-a", Some("cursor")),
        ("no-cursor", None),
        ("leaving", Some("cursor")),
    ];
    cursor_pins(test, &format!("{library} cursors"), cmd, &want);
}

#[test]
fn libmysqlclient_cursor_fetch_with_deprecate_eof() {
    c_api_cursor_fetch(
        "libmysqlclient_cursor_fetch_with_deprecate_eof",
        "libmysqlclient",
    );
}

#[test]
fn libmariadb_cursor_fetch() {
    c_api_cursor_fetch("libmariadb_cursor_fetch", "libmariadb");
}
