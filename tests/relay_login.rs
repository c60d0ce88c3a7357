//! Logins of users the funnel's configuration does not list
//! (`unlisted_users = relay`): mysqld authenticates them through the funnel,
//! with whatever plugin the account has, and each such client gets a
//! backend connection of its own, closed when it leaves.
//!
//! Clients are PyMySQL (which speaks mysql_native_password and
//! client_ed25519, the latter with PyNaCl) and the Rust `mysql` crate; each
//! login is made directly and through the funnel, and what the client sees
//! (its identity, or mysqld's error) must be the same.

mod common;

use std::sync::Once;
use std::time::Duration;

use common::{FunnelConfig, FunnelProcess, PASS_A, USER_A};
use mysql::prelude::Queryable;

/// MariaDB's ed25519 plugin on the shared test server, once.
fn ed25519_plugin() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let db = common::mariadb();
        let installed: Vec<u64> = db.admin_query(
            "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519'",
        );
        if installed[0] == 0 {
            db.admin_sql("INSTALL SONAME 'auth_ed25519'");
        }
    });
}

/// An account `name` identified by `how` (SQL after IDENTIFIED), with
/// SELECT on everything.
fn account(name: &str, how: &str) {
    let db = common::mariadb();
    db.admin_sql(&format!(
        "DROP USER IF EXISTS '{name}'@'%'; CREATE USER '{name}'@'%' IDENTIFIED {how}; \
         GRANT SELECT ON *.* TO '{name}'@'%'"
    ));
}

fn start_funnel(funnel_extra: &str) -> FunnelProcess {
    FunnelConfig::user_a()
        .funnel(funnel_extra)
        .pool("connections = 1")
        .rust_log("debug")
        .start()
}

const PYMYSQL_SCRIPT: &str = r#"
import sys, pymysql
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw)
except pymysql.err.MySQLError as e:
    print("ERR", *e.args)
    sys.exit(0)
cur = c.cursor()
for q in sys.argv[4:]:
    cur.execute(q)
    print("ROWS", cur.fetchall())
c.close()
"#;

/// PyMySQL logs in as `user`/`pw` on `port` and runs `queries`; what it saw,
/// one line per query (or the login's error).
fn pymysql(port: u16, user: &str, pw: &str, queries: &[&str]) -> String {
    let port = port.to_string();
    let args: Vec<&str> = [port.as_str(), user, pw]
        .into_iter()
        .chain(queries.iter().copied())
        .collect();
    common::clients::python_ok(PYMYSQL_SCRIPT, &args)
}

const WHO: &[&str] = &["SELECT CURRENT_USER(), USER(), @@character_set_client"];

fn same_direct_and_funnel(f: &FunnelProcess, user: &str, pw: &str, expect: &str) {
    let db = common::mariadb();
    let direct = pymysql(db.port, user, pw, WHO);
    let funnel = pymysql(f.port, user, pw, WHO);
    assert!(
        direct.contains(expect),
        "direct login as {user}/{pw:?}: {direct}"
    );
    assert_eq!(
        funnel,
        direct,
        "login as {user}/{pw:?} through the funnel; log:\n{}",
        f.log()
    );
}

#[test]
fn relayed_logins_native_and_ed25519() {
    ed25519_plugin();
    account("relay_nat", "BY 'nat pw'");
    account("relay_nat_empty", "BY ''");
    account("relay_ed", "VIA ed25519 USING PASSWORD('ed pw')");
    account("relay_ed_empty", "VIA ed25519 USING PASSWORD('')");
    account(
        "relay_either",
        "VIA ed25519 USING PASSWORD('one') OR mysql_native_password USING PASSWORD('two')",
    );
    let f = start_funnel("unlisted_users = relay");
    for (user, pw) in [
        ("relay_nat", "nat pw"),
        ("relay_nat_empty", ""),
        ("relay_ed", "ed pw"),
        ("relay_either", "one"),
    ] {
        same_direct_and_funnel(&f, user, pw, &format!("'{user}@%'"));
    }
    for (user, pw) in [
        ("relay_nat", "wrong"),
        ("relay_nat", ""),
        ("relay_nat_empty", "x"),
        ("relay_ed", "wrong"),
        ("relay_ed", ""),
        ("relay_ed_empty", "x"),
        ("relay_nobody", "x"),
    ] {
        same_direct_and_funnel(&f, user, pw, "ERR 1045");
    }
    // PyMySQL sends a signature for an empty password too, which mysqld
    // refuses for an ed25519 account without one: as directly, whatever
    // it is.
    same_direct_and_funnel(&f, "relay_ed_empty", "", "");
    // The second alternative: mysqld asks for a second switch, which
    // PyMySQL does not follow (directly neither).
    same_direct_and_funnel(&f, "relay_either", "two", "");
    same_direct_and_funnel(&f, "relay_either", "three", "");
    // The mariadb CLI does follow it: each switch is relayed.
    for (pw, expect) in [
        ("two", "relay_either@%"),
        ("one", "relay_either@%"),
        ("three", "ERROR 1045"),
    ] {
        let cli = |port: u16| {
            let out = common::clients::mariadb_cli(port, "relay_either", pw)
                .args(["-N", "-e", "SELECT CURRENT_USER()"])
                .output()
                .expect("mariadb CLI");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let direct = cli(common::mariadb().port);
        assert!(direct.contains(expect), "direct, {pw}: {direct}");
        assert_eq!(cli(f.port), direct, "password {pw}");
    }
    // A configured user still logs in with the funnel itself.
    let out = pymysql(f.port, USER_A, PASS_A, &["SELECT CURRENT_USER()"]);
    assert!(out.contains(&format!("{USER_A}@")), "{out}");
}

#[test]
fn relayed_login_refused_when_off() {
    account("relay_off", "BY 'pw'");
    let f = start_funnel("");
    let out = pymysql(f.port, "relay_off", "pw", WHO);
    assert!(
        out.starts_with("ERR 1045 Access denied for user 'relay_off'"),
        "{out}"
    );
    assert_eq!(common::mariadb().connections_of("relay_off"), 0);
}

fn relayed_conn(f: &FunnelProcess, user: &str, pw: &str) -> Result<mysql::Conn, mysql::Error> {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(f.port)
        .user(Some(user))
        .pass(Some(pw))
        .prefer_socket(false);
    mysql::Conn::new(opts)
}

#[test]
fn relayed_backend_is_the_clients_alone_and_closed_after() {
    let db = common::mariadb();
    account("relay_own", "BY 'own pw'");
    let f = start_funnel("unlisted_users = relay");
    let mut a = relayed_conn(&f, "relay_own", "own pw").expect("relayed login");
    let mut b = relayed_conn(&f, "relay_own", "own pw").expect("relayed login");
    // One connection each, whatever they do.
    db.wait_connections("relay_own", 2, Duration::from_secs(10));
    a.query_drop("SET @mine = 'a'").unwrap();
    b.query_drop("SET @mine = 'b'").unwrap();
    let ta: u64 = a.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
    for _ in 0..5 {
        let v: Option<String> = a.query_first("SELECT @mine").unwrap().unwrap();
        assert_eq!(v.as_deref(), Some("a"));
        let v: Option<String> = b.query_first("SELECT @mine").unwrap().unwrap();
        assert_eq!(v.as_deref(), Some("b"));
    }
    // The same thread on mysqld all along.
    let threads: Vec<u64> = db.admin_query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'relay_own' ORDER BY ID",
    );
    assert_eq!(threads.len(), 2, "{threads:?}");
    // COM_RESET_CONNECTION: a fresh session on the same connection.
    a.reset().unwrap();
    let v: Option<String> = a.query_first("SELECT @mine").unwrap().unwrap();
    assert_eq!(v, None);
    let who: String = a.query_first("SELECT CURRENT_USER()").unwrap().unwrap();
    assert_eq!(who, "relay_own@%");
    let after: Vec<u64> = db.admin_query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'relay_own' ORDER BY ID",
    );
    assert_eq!(after, threads);
    let _ = ta;
    // Leaving closes its connection: never reused, never reset for others.
    drop(a);
    db.wait_connections("relay_own", 1, Duration::from_secs(10));
    drop(b);
    db.wait_connections("relay_own", 0, Duration::from_secs(10));
    // Configured users' pools never got those connections.
    let mut c = f.conn(USER_A, PASS_A);
    let who: String = c.query_first("SELECT CURRENT_USER()").unwrap().unwrap();
    assert!(who.starts_with(USER_A), "{who}");
}

#[test]
fn relayed_logins_are_bounded() {
    let db = common::mariadb();
    account("relay_bound", "BY 'pw'");
    // One event loop: with several, each allows its share of
    // max_unlisted_connections, one at least (README, "Several event loops").
    let f = start_funnel("unlisted_users = relay\nmax_unlisted_connections = 1\nthreads = 1");
    let mut a = relayed_conn(&f, "relay_bound", "pw").expect("relayed login");
    let err = relayed_conn(&f, "relay_bound", "pw").expect_err("second relayed login");
    match err {
        mysql::Error::MySqlError(e) => {
            assert_eq!(e.code, 1040, "{e:?}");
            assert!(e.message.contains("max_unlisted_connections = 1"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    a.query_drop("SELECT 1").unwrap();
    drop(a);
    db.wait_connections("relay_bound", 0, Duration::from_secs(10));
    // The slot is free again.
    let mut b = relayed_conn(&f, "relay_bound", "pw").expect("relayed login after");
    b.query_drop("SELECT 1").unwrap();
}

#[test]
fn relay_needs_a_tcp_backend() {
    let cfg = "[funnel]\nunlisted_users = relay\n[backend]\naddress = /tmp/x.sock\n[user a]\npassword = b\n";
    let err = funnel::config::Config::parse(cfg, "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unlisted_users"), "{err}");
}

#[test]
fn ed25519_configured_users_both_ways() {
    ed25519_plugin();
    let db = common::mariadb();
    account("ed_back", "VIA ed25519 USING PASSWORD('back pw')");
    account("ed_both", "VIA ed25519 USING PASSWORD('both pw')");
    // The key the funnel derives is the one mysqld stores.
    let stored: Vec<String> = db.admin_query(
        "SELECT JSON_VALUE(Priv, '$.authentication_string') FROM mysql.global_priv \
         WHERE User = 'ed_back'",
    );
    assert_eq!(
        stored,
        vec![funnel::protocol::auth::ed25519_key_text(
            &funnel::protocol::auth::ed25519_public_key(b"back pw")
        )]
    );
    let both_key: Vec<String> = db.admin_query(
        "SELECT JSON_VALUE(Priv, '$.authentication_string') FROM mysql.global_priv \
         WHERE User = 'ed_both'",
    );
    let f = FunnelConfig::empty()
        .pool("connections = 1")
        .user("ed_back", "back pw", &[])
        .user("ed_both", "both pw", &["auth_plugin = client_ed25519"])
        .section(&format!(
            "[user ed_key]\ned25519_public_key = {}\nauth_plugin = client_ed25519\n\
             backend_user = ed_both\nbackend_password = \"both pw\"",
            both_key[0]
        ))
        .rust_log("debug")
        .start();
    // Towards mysqld: the funnel answers its switch to client_ed25519
    // (clients log in to the funnel with mysql_native_password).
    let mut c = f.conn("ed_back", "back pw");
    let who: String = c.query_first("SELECT CURRENT_USER()").unwrap().unwrap();
    assert_eq!(who, "ed_back@%");
    // Towards clients: asked to switch to client_ed25519, checked with the
    // key of the configured password; as mysqld answers the same logins.
    same_direct_and_funnel(&f, "ed_both", "both pw", "'ed_both@%'");
    same_direct_and_funnel(&f, "ed_both", "wrong", "ERR 1045");
    let cli = |pw: &str| {
        let out = common::clients::mariadb_cli(f.port, "ed_both", pw)
            .args(["-N", "-e", "SELECT CURRENT_USER()"])
            .output()
            .expect("mariadb CLI");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(cli("both pw").contains("ed_both@%"), "{}", f.log());
    assert!(cli("nope").contains("ERROR 1045"));
    // Verified with the key as mysqld stores it (no password in the config
    // for clients).
    let out = pymysql(f.port, "ed_key", "both pw", &["SELECT CURRENT_USER()"]);
    assert_eq!(out, "ROWS (('ed_both@%',),)\n");
    let out = pymysql(f.port, "ed_key", "ed_key pw", &["SELECT CURRENT_USER()"]);
    assert!(
        out.starts_with("ERR 1045 Access denied for user 'ed_key'"),
        "{out}"
    );
    // The Rust crate does not speak client_ed25519: it fails the same way
    // directly and through the funnel (never let in).
    let direct = mysql::Conn::new(db.opts("ed_both", "both pw")).expect_err("direct");
    let through = f
        .try_conn("ed_both", "both pw")
        .expect_err("through the funnel");
    assert_eq!(through.to_string(), direct.to_string());
}

#[test]
fn relayed_client_kill_change_user_lost_backend_and_admin() {
    let db = common::mariadb();
    account("relay_k", "BY 'kpw'");
    let admin_port = common::free_port();
    let f = FunnelConfig::user_a()
        .funnel("unlisted_users = relay")
        .pool("connections = 1")
        .admin(admin_port, "admpw")
        .admin_line("user = adm")
        .rust_log("debug")
        .start();
    let mut a = relayed_conn(&f, "relay_k", "kpw").expect("relayed login");
    let mut b = relayed_conn(&f, "relay_k", "kpw").expect("relayed login");
    // The admin console shows the pin and the pool.
    let mut adm = common::admin_console(admin_port, "adm", "admpw");
    let rows: Vec<mysql::Row> = adm.query("SHOW CLIENTS").unwrap();
    let causes: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<String, _>("user").as_deref() == Some("relay_k"))
        .map(|r| r.get::<String, _>("pin_cause").unwrap_or_default())
        .collect();
    assert_eq!(causes, ["unlisted_user", "unlisted_user"], "{rows:?}");
    let pools: Vec<mysql::Row> = adm.query("SHOW POOLS").unwrap();
    assert!(
        pools
            .iter()
            .any(|r| r.get::<String, _>("pool").as_deref() == Some("unlisted")),
        "{pools:?}"
    );
    // KILL QUERY of a relayed client's running statement: refused, the
    // statement runs on; KILL CONNECTION works.
    let a_id: u32 = a.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
    let sleeper = std::thread::spawn(move || {
        let r: Result<Option<u64>, _> = a.query_first("SELECT SLEEP(2)");
        (a, r)
    });
    std::thread::sleep(Duration::from_millis(500));
    let err = b
        .query_drop(format!("KILL QUERY {a_id}"))
        .expect_err("KILL QUERY of a relayed client");
    assert!(err.to_string().contains("1047"), "{err}");
    let (mut a, r) = sleeper.join().unwrap();
    assert_eq!(r.unwrap(), Some(0));
    // COM_CHANGE_USER to a configured user: the relayed connection goes.
    a.change_user(
        mysql::ChangeUserOpts::default()
            .with_user(Some(USER_A.into()))
            .with_pass(Some(PASS_A.into())),
    )
    .expect("change user");
    let who: String = a.query_first("SELECT CURRENT_USER()").unwrap().unwrap();
    assert!(who.starts_with(USER_A), "{who}");
    db.wait_connections("relay_k", 1, Duration::from_secs(10));
    // mysqld kills b's connection: b is disconnected, as from mysqld.
    let thread: Vec<u64> =
        db.admin_query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'relay_k'");
    db.admin_sql(&format!("KILL {}", thread[0]));
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.query_drop("SELECT 1").is_err());
    assert!(b.query_drop("SELECT 1").is_err());
    db.wait_connections("relay_k", 0, Duration::from_secs(10));
    // A new relayed login works after all that.
    let mut c = relayed_conn(&f, "relay_k", "kpw").expect("relayed login again");
    let who: String = c.query_first("SELECT CURRENT_USER()").unwrap().unwrap();
    assert_eq!(who, "relay_k@%");
}

/// mysqlclient (libmariadb, whose client_ed25519 plugin answers the
/// switch) logs in as argv[2]/argv[3] (with argv[4] as the schema) and
/// changes user to each following user, password and schema ("-": none),
/// printing who it is after each change, or the refusal and who it is
/// then.
const CHANGE_USER_SCRIPT: &str = r#"
import sys, MySQLdb
port, user, pw, db = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def show(c, label):
    cur = c.cursor()
    try:
        cur.execute("SELECT CURRENT_USER(), DATABASE(), @x, @@sql_mode = @@global.sql_mode")
        print(label, cur.fetchall())
    except MySQLdb.Error as e:
        print(label, "ERR", e.args)
c = MySQLdb.connect(host="127.0.0.1", port=port, user=user, password=pw, database=db)
show(c, "login")
steps = sys.argv[5:]
for i in range(0, len(steps), 3):
    user, pw, db = steps[i], steps[i + 1], steps[i + 2]
    c.cursor().execute("SET @x = %s, sql_mode = 'ANSI'", (i,))
    try:
        if db == "-":
            c.change_user(user, pw)
        else:
            c.change_user(user, pw, db)
        show(c, "changed to " + user)
    except MySQLdb.Error as e:
        print("change to", user, "refused:", e.args)
        show(c, "still")
"#;

#[test]
fn change_user_to_and_from_ed25519_users() {
    if !common::clients::python_has("MySQLdb") {
        common::clients::skip(
            "change_user_to_and_from_ed25519_users",
            "python3 has no MySQLdb (mysqlclient)",
        );
        return;
    }
    ed25519_plugin();
    account("cu_nat", "BY 'nat pw'");
    account("cu_ed_back", "VIA ed25519 USING PASSWORD('back pw')");
    account("cu_ed_both", "VIA ed25519 USING PASSWORD('both pw')");
    // cu_ed_back: mysql_native_password to the funnel, ed25519 to mysqld;
    // cu_ed_both: client_ed25519 on both sides.
    let f = FunnelConfig::empty()
        .pool("connections = 1")
        .user("cu_nat", "nat pw", &[])
        .user("cu_ed_back", "back pw", &[])
        .user("cu_ed_both", "both pw", &["auth_plugin = client_ed25519"])
        .rust_log("debug")
        .start();
    let steps = [
        ("cu_ed_both", "both pw", "-"),
        ("cu_ed_back", "back pw", common::TEST_DB),
        ("cu_ed_both", "both pw", common::TEST_DB),
        // Refused: the client stays who it was, with its schema, its
        // session reset.
        ("cu_ed_back", "wrong", "-"),
        ("cu_nat", "nat pw", "-"),
        ("cu_ed_both", "wrong", common::TEST_DB),
        ("cu_ed_both", "both pw", "-"),
        ("cu_nat", "nat pw", common::TEST_DB),
    ];
    let run = |port: u16| {
        let port = port.to_string();
        let mut args = vec![port.as_str(), "cu_nat", "nat pw", common::TEST_DB];
        for (user, pw, db) in &steps {
            args.extend([*user, *pw, *db]);
        }
        common::clients::python_ok(CHANGE_USER_SCRIPT, &args)
    };
    let direct = run(common::mariadb().port);
    for want in [
        "changed to cu_ed_both (('cu_ed_both@%', None, None, 1),)",
        "change to cu_ed_back refused: (1045,",
        "still (('cu_ed_both@%', 'funnel_test', None, 1),)",
        "change to cu_ed_both refused: (1045,",
        "still (('cu_nat@%', None, None, 1),)",
    ] {
        assert!(direct.contains(want), "directly, {want:?} in:\n{direct}");
    }
    let through = run(f.port);
    assert_eq!(through, direct, "through the funnel; log:\n{}", f.log());
}
