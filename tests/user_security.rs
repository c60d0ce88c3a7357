//! Per-user security (issue 16): a backend login mysqld refuses is answered
//! at once with ERR 1045 instead of waiting for `queue_timeout_ms`, and
//! recovers by itself once the account is fixed. Passwords by reference
//! (`password_file`, `backend_password_env`). Per-user
//! `max_client_connections` (ERR 1203 as mysqld's max_user_connections)
//! and `allowed_networks` (ERR 1130).

mod common;

use std::time::{Duration, Instant};

use common::{FunnelConfig, FunnelProcess};
use mysql::prelude::Queryable;
use mysql::OptsBuilder;

/// A funnel with one `[user NAME]` section (`user_lines` inside it).
fn config(user: &str, user_lines: &str) -> FunnelConfig {
    FunnelConfig::empty()
        .backend("reconnect_backoff_min_ms = 100\nreconnect_backoff_max_ms = 400")
        .pool("connections = 2\nqueue_timeout_ms = 20000")
        .section(&format!("[user \"{user}\"]\n{user_lines}"))
        .admin(common::free_port(), "adm_pw")
        .admin_line("user = adm")
        .stats(common::free_port())
        .rust_log("info")
}

fn start_funnel(user: &str, user_lines: &str) -> FunnelProcess {
    config(user, user_lines).start()
}

/// Client options through the funnel, without a default schema.
fn client_opts(f: &FunnelProcess, user: &str, pw: &str) -> mysql::Opts {
    OptsBuilder::from_opts(f.opts(user, pw))
        .db_name(None::<String>)
        .into()
}

/// Connect and run `SELECT 1`: the error (code, message) of whichever step fails.
fn select_one(f: &FunnelProcess, user: &str, pw: &str) -> Result<i64, (u16, String)> {
    let as_err = |e: mysql::Error| match e {
        mysql::Error::MySqlError(e) => (e.code, e.message),
        e => (0, e.to_string()),
    };
    let mut c = mysql::Conn::new(client_opts(f, user, pw)).map_err(as_err)?;
    let v: Option<i64> = c.query_first("SELECT 1").map_err(as_err)?;
    Ok(v.unwrap_or(0))
}

#[test]
fn refused_backend_login_is_answered_at_once_and_recovers() {
    let db = common::mariadb();
    let user = "sec_refused";
    db.admin_sql(&format!(
        "DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY 'right_pw'"
    ));
    let f = start_funnel(user, "password = client_pw\nbackend_password = wrong_pw\n");
    // Several attempts: the first may come before the pool's first login
    // was refused (then it waits for that refusal, still well within 1 s).
    for attempt in 0..3 {
        let t0 = Instant::now();
        let got = select_one(&f, user, "client_pw");
        let took = t0.elapsed();
        let (code, msg) = match got {
            Err(e) => e,
            Ok(v) => {
                panic!("attempt {attempt}: SELECT 1 answered {v} with a wrong backend password")
            }
        };
        assert_eq!(code, 1045, "attempt {attempt}: {msg}\n{}", f.log());
        assert!(
            msg.starts_with(&format!("funnel: mysqld refused the pool's login as '{user}': Access denied for user '{user}'@")),
            "attempt {attempt}: {msg}"
        );
        assert!(
            took < Duration::from_secs(1),
            "attempt {attempt} took {took:?}"
        );
    }
    let log = f.log();
    assert_eq!(
        log.matches("mysqld refused the pool's login").count(),
        1,
        "logged once per change:\n{log}"
    );

    // The account is fixed on mysqld: after the backoff, clients work.
    db.admin_sql(&format!(
        "SET PASSWORD FOR '{user}'@'%' = PASSWORD('wrong_pw')"
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match select_one(&f, user, "client_pw") {
            Ok(v) => {
                assert_eq!(v, 1);
                break;
            }
            Err((code, msg)) => {
                assert_eq!(code, 1045, "{msg}");
                assert!(
                    Instant::now() < deadline,
                    "never recovered: {msg}\n{}",
                    f.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert!(
        f.wait_for_log("accepts the pool's login again", Duration::from_secs(5)),
        "{}",
        f.log()
    );
    db.admin_sql(&format!("DROP USER IF EXISTS '{user}'@'%'"));
}

#[test]
fn passwords_by_reference_log_in() {
    use std::os::unix::fs::PermissionsExt;
    let db = common::mariadb();
    let user = "sec_pwref";
    db.admin_sql(&format!(
        "DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY 'backend_secret'"
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.pw");
    std::fs::write(&file, "client_secret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let lines = format!(
        "password_file = {}\nbackend_password_env = SEC_PWREF_BACKEND\n",
        file.display()
    );
    let cfg = config(user, &lines);
    let f = cfg
        .builder()
        .env("SEC_PWREF_BACKEND", "backend_secret")
        .start();
    let mut c = mysql::Conn::new(client_opts(&f, user, "client_secret"))
        .unwrap_or_else(|e| panic!("{e}\n{}", f.log()));
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").unwrap();
    assert_eq!(who.as_deref(), Some("sec_pwref@%"));
    match mysql::Conn::new(client_opts(&f, user, "backend_secret")) {
        Err(mysql::Error::MySqlError(e)) => assert_eq!(e.code, 1045),
        other => panic!("the backend password let a client in: {other:?}"),
    }
    assert!(!f.log().contains("client_secret") && !f.log().contains("backend_secret"));

    // A new password in the file takes effect on a reload (SIGHUP).
    std::fs::write(&file, "rotated_secret\n").unwrap();
    let before = f.log().matches("configuration reloaded").count();
    f.signal(libc::SIGHUP);
    assert!(common::wait_until(Duration::from_secs(10), || {
        f.log().matches("configuration reloaded").count() > before
    }));
    assert!(mysql::Conn::new(client_opts(&f, user, "rotated_secret")).is_ok());
    assert_eq!(login_error(client_opts(&f, user, "client_secret")).0, 1045);
    // One others may read is refused by a reload (the old password stays).
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
    f.signal(libc::SIGHUP);
    assert!(f.wait_for_log("is readable by others", Duration::from_secs(10)));
    assert!(mysql::Conn::new(client_opts(&f, user, "rotated_secret")).is_ok());

    // A password file others may read: refused at start-up, exit code 2.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, log) = cfg
        .builder()
        .env("SEC_PWREF_BACKEND", "backend_secret")
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(
        log.contains("password_file") && log.contains("is readable by others"),
        "{log}"
    );
    db.admin_sql(&format!("DROP USER IF EXISTS '{user}'@'%'"));
}

fn login_error(opts: mysql::Opts) -> (u16, String) {
    match mysql::Conn::new(opts) {
        Err(mysql::Error::MySqlError(e)) => (e.code, e.message),
        Err(e) => panic!("expected an ERR, got {e}"),
        Ok(_) => panic!("expected an ERR, the login succeeded"),
    }
}

#[test]
fn per_user_connection_limit_answers_as_mysqld() {
    let db = common::mariadb();
    let user = "sec_limit";
    db.admin_sql(&format!(
        "DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY 'limit_pw'"
    ));
    // mysqld's answer past its global max_user_connections (MariaDB 10.11's
    // errmsg: "User %-.64s already has more than 'max_user_connections'
    // active connections", 42000). It is not compared with a direct
    // connection here: mysqld counts users' connections only when
    // max_user_connections was set at its start, which would limit every
    // other test's users on the shared server too; a per-account
    // MAX_USER_CONNECTIONS is another error (1226).
    let direct = (
        1203,
        format!("User {user} already has more than 'max_user_connections' active connections"),
    );

    let f = start_funnel(
        user,
        "password = limit_pw\nmax_client_connections = 2\nconnections = 1\n",
    );
    let mut c1 = mysql::Conn::new(client_opts(&f, user, "limit_pw")).unwrap();
    let c2 = mysql::Conn::new(client_opts(&f, user, "limit_pw")).unwrap();
    let through = login_error(client_opts(&f, user, "limit_pw"));
    assert_eq!(through, direct, "funnel vs mysqld");
    // A wrong password is still a wrong password.
    assert_eq!(login_error(client_opts(&f, user, "nope")).0, 1045);
    // The clients in are unaffected; one leaving makes room.
    let one: Option<i64> = c1.query_first("SELECT 1").unwrap();
    assert_eq!(one, Some(1));
    drop(c2);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c3 = loop {
        match mysql::Conn::new(client_opts(&f, user, "limit_pw")) {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no room after a client left: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let one: Option<i64> = c3.query_first("SELECT 1").unwrap();
    assert_eq!(one, Some(1));
    db.admin_sql(&format!("DROP USER IF EXISTS '{user}'@'%'"));
}

#[test]
fn allowed_networks_refuse_other_hosts_with_1130() {
    let db = common::mariadb();
    for u in ["sec_net_in", "sec_net_out"] {
        db.admin_sql(&format!(
            "DROP USER IF EXISTS '{u}'@'%'; CREATE USER '{u}'@'%' IDENTIFIED BY 'net_pw'"
        ));
    }
    let f = start_funnel(
        "sec_net_in",
        "password = net_pw\nallowed_networks = 10.0.0.0/8, 127.0.0.0/8\n\n\
         [user sec_net_out]\npassword = net_pw\nallowed_networks = 10.0.0.0/8, 192.168.0.0/16, ::1/128\n",
    );
    let mut c = mysql::Conn::new(client_opts(&f, "sec_net_in", "net_pw"))
        .unwrap_or_else(|e| panic!("{e}\n{}", f.log()));
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").unwrap();
    assert_eq!(who.as_deref(), Some("sec_net_in@%"));
    for pw in ["net_pw", "wrong"] {
        assert_eq!(
            login_error(client_opts(&f, "sec_net_out", pw)),
            (
                1130,
                "Host '127.0.0.1' is not allowed to connect to this MariaDB server".to_string()
            ),
            "password {pw}"
        );
    }
    // COM_CHANGE_USER to the user from here is refused as well.
    let r = c.change_user(
        mysql::ChangeUserOpts::default()
            .with_user(Some("sec_net_out".into()))
            .with_pass(Some("net_pw".into())),
    );
    match r {
        Err(mysql::Error::MySqlError(e)) => assert_eq!(e.code, 1130, "{e}"),
        other => panic!("change_user to a user not allowed from here: {other:?}"),
    }
    for u in ["sec_net_in", "sec_net_out"] {
        db.admin_sql(&format!("DROP USER IF EXISTS '{u}'@'%'"));
    }
}
