//! Proves the test harness itself: the private MariaDB server, its accounts,
//! restart support for fault tests, and cleanup when a test binary ends.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{mariadb, pid_alive, wait_until, MariaDb, PASS_A, PASS_B, USER_A, USER_B};
use mysql::prelude::Queryable;

fn mysql_code(r: Result<impl std::fmt::Debug, mysql::Error>) -> u16 {
    common::sql::server_error(r).0
}

#[test]
fn mysql_crate_over_tcp() {
    let db = mariadb();
    let mut c = common::mysql_direct(USER_A, PASS_A);

    let two: Option<i64> = c.query_first("SELECT 1 + 1").unwrap();
    assert_eq!(two, Some(2));
    let version: String = c.query_first("SELECT VERSION()").unwrap().unwrap();
    assert!(version.contains("MariaDB"), "{version}");

    // Really TCP (the crate would switch to the unix socket if allowed to),
    // really the private server, really funnel_a.
    let (host, port, user): (String, u16, String) = c
        .query_first(
            "SELECT HOST, @@port, CURRENT_USER() FROM information_schema.PROCESSLIST \
             WHERE ID = CONNECTION_ID()",
        )
        .unwrap()
        .unwrap();
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    assert_eq!(port, db.port);
    assert_eq!(user, "funnel_a@127.0.0.1");

    let t = common::unique_name("harness_t");
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(50)) ENGINE=InnoDB"
    ))
    .unwrap();
    c.exec_drop(
        format!("INSERT INTO {t} VALUES (?, ?), (?, ?)"),
        (1, "one", 2, "zwei \u{00e9}"),
    )
    .unwrap();
    let rows: Vec<(i32, String)> = c
        .query(format!("SELECT id, name FROM {t} ORDER BY id"))
        .unwrap();
    assert_eq!(rows, vec![(1, "one".into()), (2, "zwei \u{00e9}".into())]);

    // funnel_b sees the same table (ALL ON funnel_test.*).
    let mut b = common::mysql_direct(USER_B, PASS_B);
    let n: Option<i64> = b.query_first(format!("SELECT COUNT(*) FROM {t}")).unwrap();
    assert_eq!(n, Some(2));
    common::admin_sql(&format!("DROP TABLE funnel_test.{t}"));
}

#[test]
fn mariadb_cli_over_socket() {
    let db = mariadb();
    let out = db
        .cli()
        .args(["-N", "-B", "-e", "SELECT CURRENT_USER(), @@port"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("root@localhost\t{}", db.port)
    );

    // A password account over the socket, with the CLI.
    let out = Command::new(common::mariadb_client())
        .arg("--no-defaults")
        .arg(format!("--socket={}", db.socket.display()))
        .args([
            "-u",
            USER_B,
            &format!("-p{PASS_B}"),
            "funnel_test",
            "-N",
            "-B",
        ])
        .args(["-e", "SELECT CURRENT_USER(), DATABASE()"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "funnel_b@localhost\tfunnel_test"
    );
}

#[test]
fn bad_credentials_and_privileges_are_refused() {
    let db = mariadb();
    // ER_ACCESS_DENIED_ERROR
    assert_eq!(mysql_code(mysql::Conn::new(db.opts(USER_A, "wrong"))), 1045);
    assert_eq!(mysql_code(mysql::Conn::new(db.opts(USER_B, ""))), 1045);
    // No anonymous accounts: an unknown user is refused too.
    assert_eq!(mysql_code(mysql::Conn::new(db.opts("nobody", ""))), 1045);
    // ER_DBACCESS_DENIED_ERROR: funnel_b only has funnel_test.*.
    let mut b = db.conn(USER_B, PASS_B);
    assert_eq!(
        mysql_code(b.query_drop("CREATE DATABASE funnel_b_nope")),
        1044
    );
}

/// What fault tests will do: an owned server, crashed and restarted on the
/// same port and datadir; committed data survives; Drop removes everything.
#[test]
fn owned_server_kill_restart_and_drop() {
    // Started from a thread that then exits, as libtest's test threads do: the
    // server must survive that (the parent-death signal is per thread).
    let db = std::thread::spawn(MariaDb::new).join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        db.is_running(),
        "server died with the thread that started it"
    );
    assert_ne!(db.port, mariadb().port);
    let t = common::unique_name("restart_t");
    let mut c = db.conn(USER_A, PASS_A);
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (1), (2), (3)"))
        .unwrap();

    let pid = db.pid().unwrap() as i32;
    db.kill();
    assert!(!db.is_running());
    assert!(!pid_alive(pid));
    assert!(
        c.query_drop("SELECT 1").is_err(),
        "old connection must be dead"
    );
    assert!(mysql::Conn::new(db.opts(USER_A, PASS_A)).is_err());

    db.start();
    let mut c = db.conn(USER_A, PASS_A);
    let n: Option<i64> = c.query_first(format!("SELECT COUNT(*) FROM {t}")).unwrap();
    assert_eq!(n, Some(3), "committed rows survive a crash");

    db.restart(); // graceful stop + start
    let n: Option<i64> = db
        .conn(USER_B, PASS_B)
        .query_first(format!("SELECT SUM(id) FROM {t}"))
        .unwrap();
    assert_eq!(n, Some(6));

    let pid = db.pid().unwrap() as i32;
    let dir = db.dir.clone();
    drop(db);
    assert!(!pid_alive(pid));
    assert!(!dir.exists());
}

/// Runs this test binary's `child_process_body` in a subprocess and checks
/// that its shared server (a static, never dropped) is killed and its
/// directory removed after a normal exit and after a panic; and that after a
/// SIGKILL of the test process the server dies and the directory is swept.
#[test]
fn server_is_cleaned_up_when_the_test_process_ends() {
    for mode in ["ok", "panic", "sigkill"] {
        let out_file = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_process_body", "--exact", "--ignored", "--nocapture"])
            .env("FUNNEL_HARNESS_CHILD", mode)
            .env("FUNNEL_HARNESS_CHILD_OUT", out_file.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut info = String::new();
        let got = wait_until(Duration::from_secs(60), || {
            info = std::fs::read_to_string(out_file.path()).unwrap_or_default();
            info.ends_with('\n')
        });
        assert!(got, "{mode}: child never reported its server");
        let (pid, dir) = info.trim().split_once(' ').unwrap();
        let pid: i32 = pid.parse().unwrap();
        let dir = PathBuf::from(dir);
        assert!(dir.exists());
        let go = PathBuf::from(format!("{}.go", out_file.path().display()));
        std::fs::write(&go, b"").unwrap();

        if mode == "sigkill" {
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        let _ = std::fs::remove_file(&go);
        match mode {
            "ok" => assert!(status.success(), "{status}"),
            "panic" => assert_eq!(status.code(), Some(101)),
            _ => assert!(status.code().is_none()),
        }
        assert!(
            wait_until(Duration::from_secs(10), || !pid_alive(pid)),
            "{mode}: mariadbd {pid} survived its test process"
        );
        if mode == "sigkill" {
            // No exit hook ran; the next test binary's sweep removes it.
            common::sweep_stale_dirs();
        }
        assert!(!dir.exists(), "{mode}: {} left behind", dir.display());
    }
}

/// Body of the subprocess above; does nothing in a normal test run.
#[test]
#[ignore = "run by server_is_cleaned_up_when_the_test_process_ends"]
fn child_process_body() {
    let Ok(mode) = std::env::var("FUNNEL_HARNESS_CHILD") else {
        return;
    };
    let db = mariadb();
    let report = format!("{} {}\n", db.pid().unwrap(), db.dir.display());
    let out = std::env::var("FUNNEL_HARNESS_CHILD_OUT").unwrap();
    std::fs::write(&out, report).unwrap();
    // Wait until the parent has seen the server alive, so that it does not
    // race with this process's own clean-up.
    let go = PathBuf::from(format!("{out}.go"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !go.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    match mode.as_str() {
        "ok" => {}
        "panic" => panic!("deliberate panic"),
        _ => std::thread::sleep(Duration::from_secs(600)),
    }
}
