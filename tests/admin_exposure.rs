//! The admin console and the stats port under silent connections (issue
//! 16, "Security"): they are closed after a few seconds, one address cannot
//! take every slot, a health check still gets its answer, and overload is
//! answered with 429, which a load balancer does not read as "unhealthy".

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_until, FunnelConfig, FunnelProcess, PASS_A, USER_A};
use mysql::prelude::Queryable;

struct Env {
    f: FunnelProcess,
    admin_port: u16,
    stats_port: u16,
}

fn start() -> Env {
    start_with("")
}

fn start_with(admin_extra: &str) -> Env {
    start_full(admin_extra, "")
}

fn start_full(admin_extra: &str, stats_extra: &str) -> Env {
    let admin_port = common::free_port();
    let stats_port = common::free_port();
    let f = FunnelConfig::user_a()
        .pool("connections = 1")
        .admin(admin_port, "admin-pw")
        .admin_line(admin_extra)
        .stats(stats_port)
        .stats_line(stats_extra)
        .start();
    // A backend up, so that /health says 200.
    f.conn(USER_A, PASS_A).query_drop("SELECT 1").unwrap();
    Env {
        f,
        admin_port,
        stats_port,
    }
}

/// GET `path` from source address `from` with curl: (status, body).
fn get_from(port: u16, path: &str, from: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "--interface",
            from,
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn admin_from(port: u16, from: &str) -> Result<mysql::Conn, mysql::Error> {
    console_login(port, from, "admin", "admin-pw")
}

fn console_login(port: u16, from: &str, user: &str, pw: &str) -> Result<mysql::Conn, mysql::Error> {
    let opts = common::admin::admin_opts(port, user, pw)
        .bind_address(Some((from.parse::<std::net::IpAddr>().unwrap(), 0)))
        .read_timeout(Some(Duration::from_secs(10)));
    mysql::Conn::new(opts)
}

fn silent(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s
        })
        .collect()
}

/// Reads until the funnel closes the connection: what it said, and when.
fn closed_after(mut s: TcpStream, t0: Instant) -> (Vec<u8>, Duration) {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (out, t0.elapsed())
}

#[test]
fn silent_connections_do_not_starve_the_stats_port() {
    let env = start();
    let t0 = Instant::now();
    // More silent connections than the stats port serves at once.
    let idle = silent(env.stats_port, 40);
    std::thread::sleep(Duration::from_millis(300));
    // A health check from another address: answered, healthy.
    let (status, body) = get_from(env.stats_port, "/health", "127.0.0.2");
    assert_eq!(status, 200, "{body}");
    let (status, _) = get_from(env.stats_port, "/metrics", "127.0.0.2");
    assert_eq!(status, 200);
    // From the flooding address: /metrics is refused with 429, never 503.
    let (status, body) = get_from(env.stats_port, "/metrics", "127.0.0.1");
    assert_eq!(status, 429, "{body}");
    // The silent ones are closed after a few seconds (408 for those
    // served, 429 at once for those beyond every slot).
    for s in idle {
        let (out, took) = closed_after(s, t0);
        let head = String::from_utf8_lossy(&out);
        assert!(
            head.starts_with("HTTP/1.1 408 ") || head.starts_with("HTTP/1.1 429 "),
            "{head}"
        );
        assert!(took < Duration::from_secs(6), "open for {took:?}");
    }
    let (status, _) = get_from(env.stats_port, "/metrics", "127.0.0.1");
    assert_eq!(status, 200);
    drop(env.f);
}

#[test]
fn silent_connections_do_not_lock_admins_out() {
    let env = start();
    let t0 = Instant::now();
    let idle = silent(env.admin_port, 20);
    std::thread::sleep(Duration::from_millis(300));
    // An admin from another address logs in at once.
    let mut a = admin_from(env.admin_port, "127.0.0.2").expect("admin login from 127.0.0.2");
    let rows: Vec<mysql::Row> = a.query("SHOW POOLS").unwrap();
    assert!(!rows.is_empty());
    drop(a);
    // The silent ones are closed within a few seconds.
    for s in idle {
        let (_, took) = closed_after(s, t0);
        assert!(took < Duration::from_secs(6), "open for {took:?}");
    }
    // Then the flooding address may log in again.
    assert!(wait_until(Duration::from_secs(5), || admin_from(
        env.admin_port,
        "127.0.0.1"
    )
    .is_ok()));
}

#[test]
fn the_stats_account_may_only_look() {
    let env = start_with("stats_user = watcher\nstats_password = look-only");
    let mut w = console_login(env.admin_port, "127.0.0.1", "watcher", "look-only")
        .expect("stats account login");
    for show in [
        "SHOW POOLS",
        "SHOW STATS",
        "SHOW CLIENTS",
        "SHOW BACKENDS",
        "SHOW BACKLOG",
        "SHOW LATENCY",
        "SHOW QUERIES",
        "SHOW VERSION",
    ] {
        let rows: Vec<mysql::Row> = w.query(show).unwrap_or_else(|e| panic!("{show}: {e}"));
        let _ = rows;
    }
    let config: Vec<(String, String, String)> = w.query("SHOW CONFIG").unwrap();
    let text = format!("{config:?}");
    assert!(text.contains("watcher"), "{text}");
    assert!(
        !text.contains("look-only") && !text.contains("admin-pw"),
        "a password in SHOW CONFIG: {text}"
    );
    for cmd in [
        "PAUSE",
        "RESUME",
        "RELOAD",
        "SHUTDOWN",
        "pause",
        "PAUSE funnel_a",
        "RESUME funnel_a",
        "KILL CLIENT 1",
        "RECONNECT funnel_a",
    ] {
        match w.query_drop(cmd) {
            Err(mysql::Error::MySqlError(e)) => {
                assert_eq!((e.code, e.state.as_str()), (1227, "42000"), "{cmd}");
                assert!(
                    e.message.starts_with("funnel admin: access denied"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{cmd} from the stats account: {other:?}"),
        }
    }
    // Nothing happened: the funnel runs, unpaused.
    let mut c = env.f.conn(USER_A, PASS_A);
    assert_eq!(c.query_first::<u8, _>("SELECT 7").unwrap(), Some(7));
    // A wrong password is refused; the admin account still acts.
    match console_login(env.admin_port, "127.0.0.1", "watcher", "admin-pw") {
        Err(mysql::Error::MySqlError(e)) => assert_eq!(e.code, 1045),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut a = admin_from(env.admin_port, "127.0.0.1").unwrap();
    a.query_drop("PAUSE").unwrap();
    a.query_drop("RESUME").unwrap();
}

/// GET over plain TCP from 127.0.0.1 with optional extra header lines.
fn get_raw(port: u16, path: &str, headers: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

#[test]
fn stats_and_console_never_show_secrets() {
    let env = start_with("stats_user = watcher\nstats_password = stats-sekrit-pw");
    // Statements with secrets in their literals, some still running while
    // the pages are taken.
    let mut c = env.f.conn(USER_A, PASS_A);
    c.query_drop("SELECT 'single-sekrit-literal', \"double-sekrit-literal\", x'5345435245543432'")
        .unwrap();
    // (Nothing that changes an account: the server is shared by this binary.)
    c.query_drop("SELECT PASSWORD('password-sekrit')").unwrap();
    let _ = c.query_drop("SELECT * FROM no_such_table_here WHERE pw = 'failing-sekrit'");
    let mut slow = env.f.conn(USER_A, PASS_A);
    let running =
        std::thread::spawn(move || slow.query_drop("SELECT SLEEP(2), 'running-sekrit-literal'"));
    std::thread::sleep(Duration::from_millis(500));
    let mut pages = Vec::new();
    for path in [
        "/metrics",
        "/stats.json",
        "/stats.json?detail=1",
        "/",
        "/health",
    ] {
        let (status, body) = get_raw(env.stats_port, path, "");
        assert_eq!(status, 200, "{path}: {body}");
        pages.push((path.to_string(), body));
    }
    let mut a = admin_from(env.admin_port, "127.0.0.1").unwrap();
    for show in [
        "SHOW QUERIES",
        "SHOW CLIENTS",
        "SHOW BACKENDS",
        "SHOW CONFIG",
        "SHOW POOLS",
    ] {
        let rows: Vec<mysql::Row> = a.query(show).unwrap();
        let text: Vec<String> = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| format!("{:?}", r.as_ref(i)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        pages.push((show.to_string(), text.join("\n")));
    }
    running.join().unwrap().unwrap();
    let secrets = [
        PASS_A,
        "admin-pw",
        "stats-sekrit-pw",
        "sekrit",
        "5345435245543432",
    ];
    // The query shapes are there, without their literals.
    assert!(
        pages.iter().any(|(_, b)| b.contains("SELECT ?")),
        "no query shapes: {pages:?}"
    );
    for (page, body) in &pages {
        for s in secrets {
            assert!(!body.contains(s), "{page} shows {s:?}:\n{body}");
        }
    }
}

#[test]
fn a_stats_token_guards_everything_but_a_bare_health_check() {
    let token = "tok-3f9a1c";
    let env = start_full("", &format!("stats_token = \"{token}\""));
    let auth = format!("Authorization: Bearer {token}\r\n");
    for path in ["/metrics", "/stats.json", "/stats.json?detail=0", "/nope"] {
        let (status, body) = get_raw(env.stats_port, path, "");
        assert_eq!(status, 401, "{path} without the token: {body}");
        let (status, _) = get_raw(env.stats_port, path, "Authorization: Bearer tok-3f9a1\r\n");
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _) = get_raw(
            env.stats_port,
            path,
            "Authorization: Basic dG9rLTNmOWExYw==\r\n",
        );
        assert_eq!(status, 401, "{path} with another scheme");
    }
    let (status, body) = get_raw(env.stats_port, "/metrics", &auth);
    assert_eq!(status, 200);
    assert!(
        body.contains("funnel_up") || body.contains("funnel_info"),
        "{body}"
    );
    let (status, body) = get_raw(
        env.stats_port,
        "/stats.json",
        &format!("authorization: bearer {token}\r\n"),
    );
    assert_eq!(status, 200, "header names are case-insensitive: {body}");
    // /health: open, but only OK without the token; the full line with it.
    let (status, body) = get_raw(env.stats_port, "/health", "");
    assert_eq!((status, body.trim()), (200, "OK"));
    let (status, body) = get_raw(env.stats_port, "/health", &auth);
    assert_eq!(status, 200);
    assert!(body.starts_with("OK: "), "{body}");
    // The live page's HTML (no data in it) loads, and asks for the token.
    let (status, page) = get_raw(env.stats_port, "/", "");
    assert_eq!(status, 200);
    assert!(page.contains("Authorization") && !page.contains(token));
    // The token is not shown by the console.
    let mut a = admin_from(env.admin_port, "127.0.0.1").unwrap();
    let config: Vec<(String, String, String)> = a.query("SHOW CONFIG").unwrap();
    assert!(!format!("{config:?}").contains(token), "{config:?}");
    assert!(!env.f.log().contains(token));
}
