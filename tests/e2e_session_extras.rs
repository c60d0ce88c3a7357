//! What the funnel answers or carries itself: LAST_INSERT_ID() and
//! CONNECTION_ID() per client on shared backends, COM_CHANGE_USER, and
//! KILL QUERY with the ids clients know.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{FunnelProcess, PASS_A, PASS_B, TEST_DB, USER_A, USER_B};
use mysql::prelude::Queryable;
use mysql::{ChangeUserOpts, Conn};

fn start(pool: &str) -> FunnelProcess {
    start_with_admin(pool, None)
}

fn start_with_admin(pool: &str, admin_port: Option<u16>) -> FunnelProcess {
    let db = common::mariadb();
    // free_port() may hand out the same port twice in a row.
    let mut port = common::free_port();
    while Some(port) == admin_port {
        port = common::free_port();
    }
    let mut cfg = format!(
        "[funnel]\nlisten = 127.0.0.1:{port}\n\n[backend]\naddress = 127.0.0.1:{}\n\n[pool]\n{pool}\n\n\
         [user \"{USER_A}\"]\npassword = \"{PASS_A}\"\n\n[user \"{USER_B}\"]\npassword = \"{PASS_B}\"\n",
        db.port
    );
    if let Some(p) = admin_port {
        cfg.push_str(&format!(
            "\n[admin]\nlisten = 127.0.0.1:{p}\npassword = adm\n"
        ));
    }
    FunnelProcess::start(&cfg, port)
}

/// Poll `what` (up to 20 s) until it holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn conn(f: &FunnelProcess) -> Conn {
    let mut c = f.conn(USER_A, PASS_A);
    c.query_drop(format!("USE {TEST_DB}")).expect("USE");
    c
}

#[test]
fn last_insert_id_is_per_client_on_one_backend() {
    let f = start("connections = 1");
    let t = common::unique_name("e2e_lid");
    let mut a = conn(&f);
    let mut b = conn(&f);
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
    let mut clients: Vec<Conn> = (0..6).map(|_| conn(&f)).collect();
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
    let mut c = conn(&f);
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
    let mut victim = conn(&f);
    let mut queued = conn(&f);
    let mut killer = conn(&f);
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
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if stdout.starts_with("SKIP") {
        eprintln!("skipped: {stdout}");
        return;
    }
    assert_eq!(stdout.trim(), "OK");
}
