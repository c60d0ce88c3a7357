//! The admin console (MySQL protocol) and the stats port (HTTP) against a
//! real funnel process and a real MariaDB: known traffic in, exact numbers out.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::admin::{query, Row};
use common::{
    funnel_bin, mariadb, wait_until, FunnelConfig, FunnelProcess, MariaDb, PASS_A, PASS_B, USER_A,
    USER_B,
};
use mysql::prelude::Queryable;

const ADMIN_USER: &str = "admin";
const ADMIN_PW: &str = "admin-secret";

struct Env {
    f: FunnelProcess,
    admin_port: u16,
    stats_port: u16,
}

/// A funnel in front of `db_port` with an admin console and a stats port;
/// `users` is the `[user ...]` sections. Waits until every pool is up.
fn start_on(db_port: u16, users: &str, pools: &[&str]) -> Env {
    let admin_port = common::free_port();
    let stats_port = common::free_port();
    let f = FunnelConfig::empty()
        .backend_port(db_port)
        .funnel("shutdown_timeout_ms = 2000")
        .backend("health_check_interval_ms = 300")
        .backend("reconnect_backoff_min_ms = 100\nreconnect_backoff_max_ms = 500")
        .pool("connections = 2")
        .section(users)
        .admin(admin_port, ADMIN_PW)
        .admin_line(&format!("user = {ADMIN_USER}"))
        .stats(stats_port)
        .stats_line("health_backlog_ratio = 0.5")
        .start();
    let env = Env {
        f,
        admin_port,
        stats_port,
    };
    let mut c = env.admin();
    let up = wait_until(Duration::from_secs(20), || {
        let rows = query(&mut c, "SHOW POOLS");
        pools.iter().all(|p| {
            rows.iter().any(|r| {
                s(r, "pool") == *p && s(r, "backend_up") == "yes" && num(r, "backends_idle") == 2
            })
        })
    });
    assert!(
        up,
        "pools did not come up: {:?}",
        query(&mut c, "SHOW POOLS")
    );
    env
}

/// Three distinct free ports (held together while picking, so the kernel
/// cannot hand out the same one twice).
fn ports() -> [u16; 3] {
    let held: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let p = |i: usize| held[i].local_addr().unwrap().port();
    [p(0), p(1), p(2)]
}

fn start(users: &str, pools: &[&str]) -> Env {
    start_on(mariadb().port, users, pools)
}

fn user_a(extra: &str) -> String {
    format!("[user {USER_A}]\npassword = {PASS_A}\n{extra}\n")
}

fn user_b(extra: &str) -> String {
    format!("[user {USER_B}]\npassword = {PASS_B}\n{extra}\n")
}

fn admin_opts(port: u16, user: &str, pw: &str) -> mysql::Opts {
    common::admin::admin_opts(port, user, pw)
        .tcp_connect_timeout(Some(Duration::from_secs(10)))
        .read_timeout(Some(Duration::from_secs(30)))
        .write_timeout(Some(Duration::from_secs(30)))
        .into()
}

impl Env {
    fn admin(&self) -> mysql::Conn {
        mysql::Conn::new(admin_opts(self.admin_port, ADMIN_USER, ADMIN_PW))
            .unwrap_or_else(|e| panic!("admin console login failed: {e}"))
    }

    /// A client through the funnel, without a default database: a login
    /// with one sends COM_INIT_DB through the backlog, which would blur the
    /// exact counts these tests check.
    fn client(&self, user: &str, pw: &str) -> mysql::Conn {
        let opts = mysql::OptsBuilder::from_opts(self.f.opts(user, pw)).db_name(None::<String>);
        mysql::Conn::new(opts).unwrap_or_else(|e| panic!("cannot connect through the funnel: {e}"))
    }

    /// The mariadb command-line client run on the console as the admin.
    fn mariadb_cli(&self, sql: &str) -> std::process::Output {
        common::clients::mariadb_cli(self.admin_port, ADMIN_USER, ADMIN_PW)
            .args(["-e", sql])
            .output()
            .unwrap()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(self.stats_port, "GET", path)
    }
}

/// A request to the stats port, whose Content-Length must be right.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let common::stats::Response { status, head, body } = common::stats::request(port, method, path);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    if method != "HEAD" {
        assert_eq!(body.len(), len, "Content-Length of {path}");
    }
    (status, body)
}

fn s<'a>(r: &'a Row, col: &str) -> &'a str {
    r.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {r:?}"))
        .as_deref()
        .unwrap_or("")
}

fn num(r: &Row, col: &str) -> u64 {
    s(r, col)
        .parse()
        .unwrap_or_else(|_| panic!("{col} is not a number in {r:?}"))
}

fn pool_row(c: &mut mysql::Conn, sql: &str, pool: &str) -> Row {
    query(c, sql)
        .into_iter()
        .find(|r| s(r, "pool") == pool)
        .unwrap_or_else(|| panic!("no row for pool {pool} in {sql}"))
}

fn latency(c: &mut mysql::Conn, pool: &str, metric: &str, window: &str) -> Row {
    query(c, "SHOW LATENCY")
        .into_iter()
        .find(|r| s(r, "pool") == pool && s(r, "metric") == metric && s(r, "window") == window)
        .unwrap_or_else(|| panic!("no latency row {pool}/{metric}/{window}"))
}

/// The server error of a failed call: (code, message).
fn error_code<T: std::fmt::Debug>(r: Result<T, mysql::Error>) -> (u16, String) {
    let (code, _, message) = common::sql::server_error(r);
    (code, message)
}

fn json(env: &Env, path: &str) -> serde_json::Value {
    let (status, body) = env.get(path);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: invalid JSON: {e}\n{body}"))
}

/// Parses /metrics with prometheus-parse, and checks that it skipped no line
/// (it ignores what it cannot parse) and that every family is documented.
fn metrics(env: &Env) -> prometheus_parse::Scrape {
    let (status, body) = env.get("/metrics");
    assert_eq!(status, 200);
    let sample_lines = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let scrape = common::stats::parse_metrics(&body);
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) => b.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(
        parsed, sample_lines,
        "some /metrics lines did not parse:\n{body}"
    );
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(
                name.starts_with("funnel_") || name.starts_with("process_"),
                "{line}"
            );
            assert!(
                body.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
        } else if !line.starts_with('#') {
            assert!(
                line.starts_with("funnel_") || line.starts_with("process_"),
                "{line}"
            );
        }
    }
    scrape
}

fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    common::stats::sample_value(s)
}

fn histogram(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    pool: &str,
) -> Vec<prometheus_parse::HistogramCount> {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("pool") == Some(pool))
        .unwrap_or_else(|| panic!("no histogram {name} for {pool}"));
    match &s.value {
        prometheus_parse::Value::Histogram(b) => b.clone(),
        other => panic!("{name}: not a histogram: {other:?}"),
    }
}

#[test]
fn console_login_commands_and_config_masking() {
    let env = start(&user_a(""), &[USER_A]);

    // Wrong password, unknown user, no password: ERR 1045.
    for (user, pw) in [(ADMIN_USER, "wrong"), ("root", ADMIN_PW), (ADMIN_USER, "")] {
        let (code, msg) = error_code(mysql::Conn::new(admin_opts(env.admin_port, user, pw)));
        assert_eq!(code, 1045, "{user}/{pw}: {msg}");
        assert!(msg.contains("Access denied"), "{msg}");
    }
    // The funnel's own users are not admins.
    let (code, _) = error_code(mysql::Conn::new(admin_opts(env.admin_port, USER_A, PASS_A)));
    assert_eq!(code, 1045);

    let mut c = env.admin();
    c.ping().expect("COM_PING");
    // What client programs send on their own.
    let v: Option<String> = c.query_first("SELECT @@version_comment LIMIT 1").unwrap();
    assert_eq!(v.as_deref(), Some("funnel admin console"));
    let db: Option<Option<String>> = c.query_first("SELECT DATABASE()").unwrap();
    assert_eq!(db, Some(None));
    c.query_drop("SET NAMES utf8mb4").unwrap();
    c.query_drop("SET autocommit = 1").unwrap();
    c.query_drop("USE anything").unwrap();
    let (code, _) = error_code(c.query_drop("SELECT @@no_such_variable"));
    assert_eq!(code, 1193);

    // Case-insensitive, comments and trailing semicolons allowed.
    let rows = query(&mut c, "  show   version ; ");
    assert_eq!(rows.len(), 1);
    assert!(s(&rows[0], "version").starts_with("funnel "), "{rows:?}");
    assert!(
        s(&rows[0], "backend_version").contains("MariaDB"),
        "{rows:?}"
    );
    assert_eq!(query(&mut c, "/* x */ Show Pools;;").len(), 1);

    // Typed columns: counters are LONGLONG, names VAR_STRING.
    let result = c.query_iter("SHOW STATS").unwrap();
    let cols = result.columns();
    let cols = cols.as_ref();
    let ty = |name: &str| {
        cols.iter()
            .find(|c| c.name_str() == name)
            .map(|c| c.column_type())
            .unwrap()
    };
    assert_eq!(
        ty("requests"),
        mysql::consts::ColumnType::MYSQL_TYPE_LONGLONG
    );
    assert_eq!(ty("pool"), mysql::consts::ColumnType::MYSQL_TYPE_VAR_STRING);
    drop(result);
    let stats: Vec<(String, u64)> = c.query("SELECT 'x', 7").unwrap();
    assert_eq!(stats, vec![("x".to_string(), 7)]);

    // Unknown commands list the valid ones.
    for bad in ["SHOW FOO", "DROP TABLE x", "SELECT * FROM t"] {
        let (code, msg) = error_code(c.query_drop(bad));
        assert_eq!(code, 1064, "{bad}: {msg}");
        assert!(
            msg.contains("SHOW POOLS") && msg.contains("SHUTDOWN"),
            "{msg}"
        );
    }
    let (code, _) = error_code(c.query_drop(""));
    assert_eq!(code, 1065);
    assert_eq!(query(&mut c, "HELP").len(), 21);

    // SHOW SERVERS: the one server of `[backend] address`, not checked.
    let servers = query(&mut c, "SHOW SERVERS");
    assert_eq!(servers.len(), 1);
    assert_eq!(
        (
            s(&servers[0], "server"),
            s(&servers[0], "role"),
            s(&servers[0], "state")
        ),
        ("backend", "any", "up")
    );

    // SHOW CONFIG: the effective configuration with every secret masked.
    let config = query(&mut c, "SHOW CONFIG");
    let all: String = config
        .iter()
        .map(|r| format!("{} {} = {}\n", s(r, "section"), s(r, "name"), s(r, "value")))
        .collect();
    assert!(!all.contains(PASS_A) && !all.contains(ADMIN_PW), "{all}");
    assert!(all.contains("[admin] password = "), "{all}");
    assert!(
        all.contains(&format!("[user {USER_A}] password = ")),
        "{all}"
    );
    assert!(all.contains("[stats] health_backlog_ratio = 0.5"), "{all}");

    // The mariadb command-line client works against it.
    let out = env.mariadb_cli("SHOW POOLS; SHOW LATENCY");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("backlog_max_1m") && stdout.contains(USER_A),
        "{stdout}"
    );
    assert!(stdout.contains("end_to_end"), "{stdout}");
    let out = common::clients::mariadb_cli(env.admin_port, ADMIN_USER, "nope")
        .args(["-e", "SHOW POOLS"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1045"));
}

#[test]
fn request_and_histogram_counts_are_exact() {
    let env = start(&user_a(""), &[USER_A]);
    let mut a = env.admin();
    let mut c = env.client(USER_A, PASS_A);
    c.query_drop("SELECT 1").unwrap();

    let before_req = num(&pool_row(&mut a, "SHOW STATS", USER_A), "requests");
    let before: Vec<u64> = ["queue_wait", "service", "end_to_end"]
        .iter()
        .map(|m| num(&latency(&mut a, USER_A, m, "total"), "count"))
        .collect();
    const N: u64 = 50;
    for i in 0..N {
        let v: Option<i64> = c.query_first(format!("SELECT {i} + 1")).unwrap();
        assert_eq!(v, Some(i as i64 + 1));
    }
    let stats = pool_row(&mut a, "SHOW STATS", USER_A);
    assert_eq!(num(&stats, "requests") - before_req, N);
    let totals = pool_row(&mut a, "SHOW STATS", "(total)");
    assert_eq!(num(&totals, "requests"), num(&stats, "requests"));
    for (m, b) in ["queue_wait", "service", "end_to_end"].iter().zip(&before) {
        let total = latency(&mut a, USER_A, m, "total");
        assert_eq!(num(&total, "count") - b, N, "{m}: {total:?}");
        // Everything happened in the last minute.
        let last60 = latency(&mut a, USER_A, m, "60s");
        assert_eq!(num(&last60, "count"), num(&total, "count"), "{m}");
        let (p50, p99, max) = (
            num(&total, "p50_us"),
            num(&total, "p99_us"),
            num(&total, "max_us"),
        );
        assert!(
            num(&total, "min_us") <= p50 && p50 <= p99 && p99 <= max,
            "{total:?}"
        );
    }
    let service = latency(&mut a, USER_A, "service", "total");
    let e2e = latency(&mut a, USER_A, "end_to_end", "total");
    assert!(num(&service, "min_us") >= 1 && num(&e2e, "p50_us") >= num(&service, "min_us"));

    // The query shape table saw exactly N of this shape.
    let shapes = query(&mut a, "SHOW QUERIES");
    let shape = shapes
        .iter()
        .find(|r| s(r, "shape") == "SELECT ? + ?")
        .unwrap_or_else(|| panic!("{shapes:?}"));
    assert_eq!((num(shape, "count"), num(shape, "errors")), (N, 0));
    assert!(num(shape, "total_us") >= num(shape, "max_us"));
    assert_eq!(s(shape, "pool"), USER_A);

    // /metrics and /stats.json say the same.
    let m = metrics(&env);
    assert_eq!(
        metric(&m, "funnel_requests_total", &[("pool", USER_A)]) as u64,
        num(&stats, "requests")
    );
    for (name, metric_name) in [
        ("funnel_queue_wait_seconds", "queue_wait"),
        ("funnel_service_seconds", "service"),
        ("funnel_request_duration_seconds", "end_to_end"),
    ] {
        let buckets = histogram(&m, name, USER_A);
        let count = num(&latency(&mut a, USER_A, metric_name, "total"), "count");
        assert!(buckets
            .windows(2)
            .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count));
        let inf = buckets.last().unwrap();
        assert!(inf.less_than.is_infinite());
        assert_eq!(inf.count as u64, count, "{name}");
        assert_eq!(
            metric(&m, &format!("{name}_count"), &[("pool", USER_A)]) as u64,
            count
        );
        assert!(metric(&m, &format!("{name}_sum"), &[("pool", USER_A)]) > 0.0);
    }
    let j = json(&env, "/stats.json");
    let pool = &j["pools"][0];
    assert_eq!(pool["name"], USER_A);
    assert_eq!(
        pool["counters"]["requests"].as_u64(),
        Some(num(&stats, "requests"))
    );
    assert_eq!(
        pool["latency"]["end_to_end"]["since_start"]["count"].as_u64(),
        Some(num(&e2e, "count"))
    );
    assert!(j["queries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["shape"] == "SELECT ? + ?"));
    assert!(j["clients"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["user"] == USER_A));
    assert_eq!(j["backends"].as_array().unwrap().len(), 2);
    let light = json(&env, "/stats.json?detail=0");
    assert!(light.get("clients").is_none() && light.get("queries").is_none());
    assert!(light["pools"][0]["history"]["backlog_max"].is_array());
}

#[test]
fn backlog_pile_up_while_paused() {
    let env = start(&user_a(""), &[USER_A]);
    let mut a = env.admin();
    const N: usize = 8;
    let conns: Vec<mysql::Conn> = (0..N).map(|_| env.client(USER_A, PASS_A)).collect();
    let before_wait = num(&latency(&mut a, USER_A, "queue_wait", "total"), "count");

    let r = a.query_iter("PAUSE").unwrap();
    assert!(r.info_str().contains("paused"), "{}", r.info_str());
    drop(r);
    let (status, body) = env.get("/health");
    assert_eq!(status, 503);
    assert!(body.contains("paused"), "{body}");

    let started = Instant::now();
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            thread::spawn(move || {
                let v: Option<i64> = c.query_first(format!("SELECT {i} * 2")).unwrap();
                assert_eq!(v, Some(i as i64 * 2));
            })
        })
        .collect();
    let piled = wait_until(Duration::from_secs(20), || {
        num(&pool_row(&mut a, "SHOW BACKLOG", USER_A), "depth") == N as u64
    });
    assert!(piled, "{:?}", query(&mut a, "SHOW BACKLOG"));
    thread::sleep(Duration::from_millis(300));
    let backlog = pool_row(&mut a, "SHOW BACKLOG", USER_A);
    assert_eq!(num(&backlog, "depth"), N as u64);
    assert_eq!(num(&backlog, "clients_queued"), N as u64);
    assert!(num(&backlog, "max_1m") >= N as u64);
    assert!(num(&backlog, "max_since_start") >= N as u64);
    assert!(num(&backlog, "oldest_wait_us") >= 300_000, "{backlog:?}");
    assert_eq!(s(&backlog, "paused"), "yes");
    let pools = pool_row(&mut a, "SHOW POOLS", USER_A);
    assert_eq!(num(&pools, "clients_queued"), N as u64);
    assert_eq!(num(&pools, "backlog"), N as u64);
    let clients = query(&mut a, "SHOW CLIENTS");
    assert_eq!(
        clients.iter().filter(|r| s(r, "state") == "queued").count(),
        N
    );
    let m = metrics(&env);
    assert_eq!(
        metric(&m, "funnel_pool_backlog_depth", &[("pool", USER_A)]) as usize,
        N
    );
    assert_eq!(metric(&m, "funnel_paused", &[]), 1.0);

    let r = a.query_iter("RESUME").unwrap();
    assert_eq!(r.info_str(), "resumed");
    drop(r);
    for w in workers {
        w.join().expect("a queued request failed");
    }
    let waited = started.elapsed();
    let backlog = pool_row(&mut a, "SHOW BACKLOG", USER_A);
    assert_eq!(num(&backlog, "depth"), 0);
    assert!(num(&backlog, "max_since_start") >= N as u64);
    assert!(num(&backlog, "max_1m") >= N as u64, "{backlog:?}");
    let wait = latency(&mut a, USER_A, "queue_wait", "total");
    assert_eq!(num(&wait, "count") - before_wait, N as u64);
    assert!(
        num(&wait, "max_us") >= 300_000 && num(&wait, "max_us") <= waited.as_micros() as u64 + 5000
    );
    let (status, _) = env.get("/health");
    assert_eq!(status, 200);
    // The per-second history (for the live page) has the pile-up once its
    // second is complete.
    let mut history = Vec::new();
    let seen = wait_until(Duration::from_secs(5), || {
        let j = json(&env, "/stats.json?detail=0");
        history = j["pools"][0]["history"]["backlog_max"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        history.contains(&(N as u64))
    });
    assert!(seen, "{history:?}");
}

#[test]
fn forced_errors_move_their_counters() {
    let users = format!(
        "{}{}",
        user_a("backlog_size = 2"),
        user_b("queue_timeout_ms = 300")
    );
    let env = start(&users, &[USER_A, USER_B]);
    let mut a = env.admin();
    // Log everyone in first: a login with a database queues like a command.
    let mut a2 = env.client(USER_A, PASS_A);
    let a3 = env.client(USER_A, PASS_A);
    let mut a4 = env.client(USER_A, PASS_A);
    let mut b1 = env.client(USER_B, PASS_B);
    let a2_id: u64 = a2.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();

    a.query_drop("PAUSE").unwrap();
    let victim = thread::spawn(move || a2.query_drop("SELECT 1"));
    assert!(wait_until(Duration::from_secs(20), || num(
        &pool_row(&mut a, "SHOW BACKLOG", USER_A),
        "depth"
    ) == 1));
    let survivor = thread::spawn(move || {
        let mut a3 = a3;
        a3.query_drop("SELECT 2")
    });
    assert!(wait_until(Duration::from_secs(20), || num(
        &pool_row(&mut a, "SHOW BACKLOG", USER_A),
        "depth"
    ) == 2));
    // Backlog full: funnel_a may queue 2.
    let (code, msg) = error_code(a4.query_drop("SELECT 3"));
    assert_eq!(code, 1040, "{msg}");
    assert!(msg.contains("backlog full"), "{msg}");
    // Killed: KILL QUERY of a queued request, from another connection of the user.
    a4.query_drop(format!("KILL QUERY {a2_id}")).unwrap();
    let (code, _) = error_code(victim.join().unwrap());
    assert_eq!(code, 1317);
    // Queue timeout: funnel_b waits at most 300 ms.
    let t = Instant::now();
    let (code, msg) = error_code(b1.query_drop("SELECT 4"));
    assert_eq!(code, 1969, "{msg}");
    assert!(t.elapsed() >= Duration::from_millis(250));
    a.query_drop("RESUME").unwrap();
    survivor
        .join()
        .unwrap()
        .expect("the queued request runs after RESUME");

    // Auth failures: wrong password for a known user, and an unknown user.
    let (code, _) = error_code(env.f.try_conn(USER_A, "wrong"));
    assert_eq!(code, 1045);
    let (code, _) = error_code(env.f.try_conn("nobody", "x"));
    assert_eq!(code, 1045);

    // Backend error: mysqld answers ERR; counted, and on the query shape.
    let (code, _) =
        error_code(b1.query_drop("SELECT * FROM funnel_test.no_such_table_here WHERE id = 5"));
    assert_eq!(code, 1146);

    let sa = pool_row(&mut a, "SHOW STATS", USER_A);
    let sb = pool_row(&mut a, "SHOW STATS", USER_B);
    let total = pool_row(&mut a, "SHOW STATS", "(total)");
    assert_eq!(num(&sa, "backlog_full"), 1, "{sa:?}");
    assert_eq!(num(&sa, "killed"), 1, "{sa:?}");
    assert_eq!(num(&sa, "auth_failures"), 1, "{sa:?}");
    assert_eq!(num(&sb, "queue_timeouts"), 1, "{sb:?}");
    assert_eq!(num(&sb, "backend_errors"), 1, "{sb:?}");
    assert_eq!(num(&total, "auth_failures"), 2, "{total:?}");
    for col in ["backlog_full", "killed", "queue_timeouts", "backend_errors"] {
        assert_eq!(num(&total, col), num(&sa, col) + num(&sb, col), "{col}");
    }
    let shapes = query(&mut a, "SHOW QUERIES");
    let bad = shapes
        .iter()
        .find(|r| s(r, "shape") == "SELECT * FROM funnel_test.no_such_table_here WHERE id = ?")
        .unwrap_or_else(|| panic!("{shapes:?}"));
    assert_eq!((num(bad, "count"), num(bad, "errors")), (1, 1));
    assert_eq!(s(bad, "pool"), USER_B);

    let m = metrics(&env);
    let err = |pool: &str, kind: &str| {
        metric(&m, "funnel_errors_total", &[("pool", pool), ("kind", kind)]) as u64
    };
    assert_eq!(err(USER_A, "backlog_full"), 1);
    assert_eq!(err(USER_A, "killed"), 1);
    assert_eq!(err(USER_A, "auth_failure"), 1);
    assert_eq!(err(USER_B, "queue_timeout"), 1);
    assert_eq!(err(USER_B, "backend_error"), 1);
    assert_eq!(err(USER_B, "backlog_full"), 0);
    assert_eq!(
        metric(&m, "funnel_auth_failures_unknown_user_total", &[]) as u64,
        1
    );

    // Backend lost: mysqld kills the connection serving a long query.
    let before_lost = num(&pool_row(&mut a, "SHOW STATS", USER_B), "backend_lost");
    let sleeper = thread::spawn(move || b1.query_drop("SELECT SLEEP(30)"));
    let mut thread_id = 0;
    assert!(wait_until(Duration::from_secs(20), || {
        let busy = query(&mut a, "SHOW BACKENDS")
            .into_iter()
            .find(|r| s(r, "pool") == USER_B && s(r, "state") == "busy");
        if let Some(r) = busy {
            thread_id = num(&r, "thread_id");
        }
        thread_id != 0
    }));
    common::admin_sql(&format!("KILL CONNECTION {thread_id}"));
    let r = sleeper.join().unwrap();
    assert!(r.is_err(), "the client sees its backend go");
    assert!(wait_until(Duration::from_secs(10), || num(
        &pool_row(&mut a, "SHOW STATS", USER_B),
        "backend_lost"
    ) == before_lost + 1));
}

#[test]
fn health_follows_the_backend() {
    let db = MariaDb::new();
    let env = start_on(db.port, &user_a(""), &[USER_A]);
    let (status, body) = env.get("/health");
    assert_eq!(
        (status, body.trim()),
        (200, "OK: 1 pool(s) up, backlog below the limit")
    );
    let (status, body) = http(env.stats_port, "HEAD", "/health");
    assert_eq!((status, body.as_str()), (200, ""));

    db.stop();
    let mut last = String::new();
    let down = wait_until(Duration::from_secs(30), || {
        let (status, body) = env.get("/health");
        last = body;
        status == 503
    });
    assert!(down, "still healthy: {last}");
    assert!(last.starts_with("backend down: pool funnel_a"), "{last}");
    assert_eq!(last.lines().count(), 1);
    let mut a = env.admin();
    assert_eq!(
        s(&pool_row(&mut a, "SHOW POOLS", USER_A), "backend_up"),
        "no"
    );
    let m = metrics(&env);
    assert_eq!(metric(&m, "funnel_healthy", &[]), 0.0);
    assert_eq!(
        metric(&m, "funnel_pool_backend_up", &[("pool", USER_A)]),
        0.0
    );

    db.start();
    let up = wait_until(Duration::from_secs(30), || env.get("/health").0 == 200);
    assert!(up, "{:?}", env.get("/health"));
}

#[test]
fn health_counts_the_pools_clients_use() {
    // funnel_b's backend password is wrong: its pool never gets a backend.
    let env = start(
        &format!(
            "{}[user {USER_B}]\npassword = {PASS_B}\nbackend_password = wrong\n",
            user_a("")
        ),
        &[USER_A],
    );
    // Nobody connected yet: every pool counts, and funnel_b's is down.
    let (status, body) = env.get("/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("backend down: pool funnel_b"), "{body}");

    // A client of funnel_a: only its pool counts; funnel_b's is named.
    let _client = env.client(USER_A, PASS_A);
    let (status, body) = env.get("/health");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("OK: 1 pool(s) up")
            && body.contains("pool funnel_b")
            && body.contains("(not counted)"),
        "{body}"
    );
    assert_eq!(env.get(&format!("/health?pool={USER_A}")).0, 200);
    let (status, body) = env.get(&format!("/health?pool={USER_B}"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Access denied"), "{body}");
    assert_eq!(env.get("/health?pool=nobody").0, 503);
    assert_eq!(env.get("/health?server=backend").0, 200);
    assert_eq!(env.get("/health?server=nope").0, 503);

    // health_pools names the pools that count, clients or not.
    let mut a = env.admin();
    a.query_drop(format!("SET stats.health_pools = '{USER_B}'"))
        .unwrap();
    let (status, body) = env.get("/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("backend down: pool funnel_b"), "{body}");
}

#[test]
fn backlog_saturation_makes_health_fail() {
    // health_backlog_ratio = 0.5 of backlog_size 4: unhealthy from 2 queued.
    let env = start(&user_a("backlog_size = 4"), &[USER_A]);
    let mut a = env.admin();
    let conns: Vec<mysql::Conn> = (0..4).map(|_| env.client(USER_A, PASS_A)).collect();
    // Two long queries hold both backends; two more queue behind them.
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let sql = if i < 2 { "SELECT SLEEP(3)" } else { "SELECT 1" };
            if i == 2 {
                // Let the sleepers take the backends first.
                thread::sleep(Duration::from_millis(300));
            }
            thread::spawn(move || c.query_drop(sql))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || num(
        &pool_row(&mut a, "SHOW BACKLOG", USER_A),
        "depth"
    ) == 2));
    let (status, body) = env.get("/health");
    assert_eq!(status, 503);
    assert!(
        body.starts_with("backlog saturated: pool funnel_a has 2 of 4"),
        "{body}"
    );
    let j = json(&env, "/stats.json?detail=0");
    assert_eq!(j["health"]["ok"], false);
    for w in workers {
        w.join().unwrap().unwrap();
    }
    assert_eq!(env.get("/health").0, 200);
    let pools = pool_row(&mut a, "SHOW POOLS", USER_A);
    assert!(num(&pools, "backlog_max") >= 2);
}

#[test]
fn stats_port_pages_and_errors() {
    let env = start(&user_a(""), &[USER_A]);
    let (status, page) = env.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("<canvas") && page.contains("/stats.json"));
    assert!(page.contains("id=\"servers\"") && page.contains("id=\"rules\""));
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("src="));
    assert_eq!(env.get("/nope").0, 404);
    assert_eq!(http(env.stats_port, "POST", "/metrics").0, 405);
    let (status, body) = http(env.stats_port, "HEAD", "/metrics");
    assert_eq!((status, body.as_str()), (200, ""));
    // Garbage instead of a request.
    let mut s = TcpStream::connect(("127.0.0.1", env.stats_port)).unwrap();
    s.write_all(b"\x16\x03\x01 hello\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    // Metrics parse even before any traffic.
    metrics(&env);
}

#[test]
fn stats_command_line_view() {
    let env = start(&format!("{}{}", user_a(""), user_b("")), &[USER_A, USER_B]);
    let mut c = env.client(USER_A, PASS_A);
    c.query_drop("SELECT 1").unwrap();
    let out = Command::new(funnel_bin())
        .args(["stats", "--admin", &format!("127.0.0.1:{}", env.admin_port)])
        .args(["--user", ADMIN_USER, "--password", ADMIN_PW])
        .args(["--interval", "0.2", "--count", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("POOL ").count(), 2, "{stdout}");
    assert!(
        stdout.contains(USER_A) && stdout.contains(USER_B) && stdout.contains("(total)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("E2E p99") && stdout.contains("backend 127.0.0.1:"),
        "{stdout}"
    );

    let out = Command::new(funnel_bin())
        .args(["stats", "--admin", &format!("127.0.0.1:{}", env.admin_port)])
        .args(["--password", "wrong", "--count", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1045"));
    let out = Command::new(funnel_bin())
        .args(["stats", "--interval", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn reload_changes_admin_credentials_and_shutdown_stops() {
    let mut env = start(&user_a(""), &[USER_A]);
    let mut a = env.admin();
    // Rewrite the config with a new admin password (reloadable).
    let text = std::fs::read_to_string(&env.f.config_path).unwrap();
    env.f
        .write_config(&text.replace(&format!("password = {ADMIN_PW}"), "password = next-secret"));
    let r = a.query_iter("RELOAD").unwrap();
    assert!(r.info_str().contains("reloaded"), "{}", r.info_str());
    drop(r);
    let (code, _) = error_code(mysql::Conn::new(admin_opts(
        env.admin_port,
        ADMIN_USER,
        ADMIN_PW,
    )));
    assert_eq!(code, 1045);
    let mut a2 = mysql::Conn::new(admin_opts(env.admin_port, ADMIN_USER, "next-secret")).unwrap();
    // A broken file is refused with an error, the running config stays.
    env.f.write_config("[funnel]\nnonsense\n");
    let (code, msg) = error_code(a2.query_drop("RELOAD"));
    assert_eq!(code, 1105);
    assert!(msg.contains("reload refused"), "{msg}");

    // Too many admin sessions: the one over the limit gets ERR 1040. From
    // one address: 4 (MAX_ADMIN_PER_ADDRESS) and the reserved one
    // (tests/admin_exposure.rs: other addresses still get in).
    thread::sleep(Duration::from_millis(300));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(mysql::Conn::new(admin_opts(env.admin_port, ADMIN_USER, "next-secret")).unwrap());
    }
    let (code, _) = error_code(mysql::Conn::new(admin_opts(
        env.admin_port,
        ADMIN_USER,
        "next-secret",
    )));
    assert_eq!(code, 1040);
    drop(held);

    let r = a2.query_iter("SHUTDOWN").unwrap();
    assert!(r.info_str().contains("shutting down"));
    drop(r);
    let status = env
        .f
        .wait_exit(Duration::from_secs(20))
        .expect("funnel exits after SHUTDOWN");
    assert!(status.success(), "{status}");
    drop(a);
}

/// Clients that negotiate CLIENT_FOUND_ROWS run on a second pool of their
/// user, created at the first such login and listed as `<user>/found_rows`
/// everywhere; a reload changes and removes both pools of a user together.
#[test]
fn found_rows_clients_get_a_pool_of_their_own() {
    let users = format!("{}{}", user_a(""), user_b(""));
    let env = start(&users, &[USER_A, USER_B]);
    let mut a = env.admin();
    let twin = format!("{USER_A}/found_rows");
    let pools = |a: &mut mysql::Conn| -> Vec<String> {
        query(a, "SHOW POOLS")
            .iter()
            .map(|r| s(r, "pool").to_string())
            .collect()
    };
    let requests =
        |a: &mut mysql::Conn, pool: &str| num(&pool_row(a, "SHOW STATS", pool), "requests");
    assert_eq!(
        pools(&mut a),
        [USER_A, USER_B],
        "no found_rows pool before such a login"
    );

    let mut plain = env.client(USER_A, PASS_A);
    let found_opts = mysql::OptsBuilder::from_opts(env.f.opts(USER_A, PASS_A))
        .db_name(None::<String>)
        .additional_capabilities(mysql::consts::CapabilityFlags::CLIENT_FOUND_ROWS);
    let mut found = mysql::Conn::new(found_opts.clone()).unwrap();
    assert_eq!(pools(&mut a), [USER_A, USER_B, twin.as_str()]);
    let (plain_before, found_before) = (requests(&mut a, USER_A), requests(&mut a, &twin));
    plain.query_drop("SELECT 1").unwrap();
    found.query_drop("SELECT 1").unwrap();
    found.query_drop("SELECT 2").unwrap();
    let up = wait_until(Duration::from_secs(20), || {
        let r = pool_row(&mut a, "SHOW POOLS", &twin);
        s(&r, "backend_up") == "yes" && num(&r, "backends_idle") == 2
    });
    assert!(up, "{:?}", pool_row(&mut a, "SHOW POOLS", &twin));
    let row = pool_row(&mut a, "SHOW POOLS", &twin);
    assert_eq!(
        (
            s(&row, "backend_user"),
            num(&row, "clients"),
            num(&row, "backends")
        ),
        (USER_A, 1, 2)
    );
    assert_eq!(num(&pool_row(&mut a, "SHOW POOLS", USER_A), "clients"), 1);
    assert_eq!(requests(&mut a, USER_A) - plain_before, 1);
    assert_eq!(requests(&mut a, &twin) - found_before, 2);
    let scrape = metrics(&env);
    assert_eq!(
        metric(&scrape, "funnel_requests_total", &[("pool", &twin)]),
        (found_before + 2) as f64
    );
    let j = json(&env, "/stats.json");
    let listed: Vec<(String, bool)> = j["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["found_rows"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (USER_A.to_string(), false),
            (USER_B.to_string(), false),
            (twin.clone(), true)
        ]
    );

    // A reload changes the user's limits in both of its pools...
    let text = std::fs::read_to_string(&env.f.config_path).unwrap();
    let text = text.replace(&user_a(""), &user_a("connections = 3"));
    env.f.write_config(&text);
    let r = a.query_iter("RELOAD").unwrap();
    let info = r.info_str().into_owned();
    drop(r);
    assert!(
        info.contains(&format!("pool {twin}: connections 2 -> 3")),
        "{info}"
    );
    let grown = wait_until(Duration::from_secs(20), || {
        [USER_A, twin.as_str()]
            .iter()
            .all(|p| num(&pool_row(&mut a, "SHOW POOLS", p), "backends_idle") == 3)
    });
    assert!(grown, "{:?}", query(&mut a, "SHOW POOLS"));
    // ... and removes both: connected clients keep working, logins stop.
    env.f
        .write_config(&text.replace(&user_a("connections = 3"), ""));
    a.query_drop("RELOAD").unwrap();
    assert_eq!(
        pools(&mut a),
        [
            format!("removed:{USER_A}"),
            USER_B.to_string(),
            format!("removed:{twin}")
        ]
    );
    found.query_drop("SELECT 3").unwrap();
    plain.query_drop("SELECT 3").unwrap();
    assert_eq!(error_code(mysql::Conn::new(found_opts)).0, 1045);
    assert_eq!(
        requests(&mut a, &format!("removed:{twin}")) - found_before,
        3
    );
}

/// What multiplexing costs is visible: replays are counted, and the time
/// backends spend on them adds up, in SHOW STATS, /stats.json and /metrics.
#[test]
fn session_replays_and_their_time_are_counted() {
    let env = start(&user_a(""), &[USER_A]);
    let mut a = env.admin();
    let before = num(&pool_row(&mut a, "SHOW STATS", USER_A), "replays");
    let mut x = env.client(USER_A, PASS_A);
    let mut y = env.client(USER_A, PASS_A);
    let mut z = env.client(USER_A, PASS_A);
    x.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .unwrap();
    z.query_drop("SET SESSION sql_mode = 'PIPES_AS_CONCAT'")
        .unwrap();
    // Three sessions on two backends: every round, one of them at least
    // must be replayed.
    for _ in 0..5 {
        let m: String = y.query_first("SELECT @@sql_mode").unwrap().unwrap();
        assert!(!m.contains("ANSI_QUOTES") && !m.contains("PIPES"), "{m}");
        let m: String = x.query_first("SELECT @@sql_mode").unwrap().unwrap();
        assert_eq!(m, "ANSI_QUOTES");
        let m: String = z.query_first("SELECT @@sql_mode").unwrap().unwrap();
        assert_eq!(m, "PIPES_AS_CONCAT");
    }
    let row = pool_row(&mut a, "SHOW STATS", USER_A);
    let replays = num(&row, "replays") - before;
    assert!(replays >= 5, "{row:?}");
    assert!(num(&row, "replay_us") > 0, "{row:?}");
    let j = json(&env, "/stats.json");
    let pool = j["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == USER_A))
        .unwrap_or_else(|| panic!("no pool {USER_A} in {j}"));
    assert!(
        pool["counters"]["replay_us"].as_u64().unwrap_or(0) > 0,
        "{pool}"
    );
    let scrape = metrics(&env);
    let seconds = metric(
        &scrape,
        "funnel_session_replay_seconds_total",
        &[("pool", USER_A)],
    );
    assert!(seconds > 0.0 && seconds < 10.0, "{seconds}");
    assert!(metric(&scrape, "funnel_session_replays_total", &[("pool", USER_A)]) >= 5.0);
}

/// A user removed by a reload: its pool takes no new logins, its connected
/// clients keep working (a transaction in progress too), its idle backends
/// close and none is reopened for nobody; once its last client leaves, the
/// pool is gone from SHOW POOLS, /stats.json and /metrics. Listing the user
/// again, before or after that, gives it exactly one pool.
#[test]
fn removed_user_pool_drains_and_disappears() {
    let users = format!("{}{}", user_a(""), user_b(""));
    let env = start(&users, &[USER_A, USER_B]);
    let mut a = env.admin();
    let removed = format!("removed:{USER_A}");
    let pools = |a: &mut mysql::Conn| -> Vec<String> {
        query(a, "SHOW POOLS")
            .iter()
            .map(|r| s(r, "pool").to_string())
            .collect()
    };
    let threads = |a: &mut mysql::Conn, pool: &str| -> Vec<u64> {
        query(a, "SHOW BACKENDS")
            .iter()
            // A backend still connecting has no mysqld thread yet (the
            // pool refills the shared connection the pinned client took).
            .filter(|r| s(r, "pool") == pool && s(r, "state") != "connecting")
            .map(|r| num(r, "thread_id"))
            .collect()
    };
    let mut root = mysql::Conn::new(mariadb().root_url().as_str()).unwrap();
    let alive = |root: &mut mysql::Conn, ids: &[u64]| -> usize {
        let list: Vec<u64> = root
            .query("SELECT ID FROM information_schema.PROCESSLIST")
            .unwrap();
        ids.iter().filter(|id| list.contains(id)).count()
    };
    let reload = |a: &mut mysql::Conn| -> String {
        let r = a.query_iter("RELOAD").unwrap();
        let info = r.info_str().into_owned();
        drop(r);
        info
    };
    let without_a = users.replace(&user_a(""), "");
    let full_text = std::fs::read_to_string(&env.f.config_path).unwrap();
    let text_without_a = full_text.replace(&users, &without_a);
    assert_ne!(full_text, text_without_a);

    let mut idle = env.client(USER_A, PASS_A);
    let mut txn = env.client(USER_A, PASS_A);
    idle.query_drop("SELECT 1").unwrap();
    txn.query_drop("START TRANSACTION").unwrap();
    let pinned: Option<u64> = txn.query_first("SELECT CONNECTION_ID()").unwrap();
    let before = threads(&mut a, USER_A);
    assert!(before.len() >= 2, "{before:?}");
    assert_eq!(
        alive(&mut root, &before),
        before.len(),
        "backends {before:?}: {:?}; mysqld: {:?}",
        query(&mut a, "SHOW BACKENDS"),
        root.query::<(u64, String, String), _>(
            "SELECT ID, USER, COMMAND FROM information_schema.PROCESSLIST"
        )
    );

    // Removed while a client is connected and another is in a transaction.
    env.f.write_config(&text_without_a);
    let info = reload(&mut a);
    assert!(info.contains(&format!("user {USER_A} removed")), "{info}");
    assert_eq!(pools(&mut a), [removed.clone(), USER_B.to_string()]);
    assert_eq!(error_code(env.f.try_conn(USER_A, PASS_A)).0, 1045);
    // Idle backends close at once; the pinned one stays with its client.
    let drained = wait_until(Duration::from_secs(10), || {
        let left = threads(&mut a, &removed);
        alive(&mut root, &before) == left.len() && left.len() == 1
    });
    assert!(drained, "{:?}", query(&mut a, "SHOW BACKENDS"));
    let row = pool_row(&mut a, "SHOW POOLS", &removed);
    assert_eq!(
        (num(&row, "clients"), num(&row, "backends_idle")),
        (2, 0),
        "{row:?}"
    );
    // The transaction goes on on its backend and commits.
    let same: Option<u64> = txn.query_first("SELECT CONNECTION_ID()").unwrap();
    assert_eq!(same, pinned);
    txn.query_drop("COMMIT").unwrap();
    // The other client's commands still run (on a backend opened for them).
    let two: Option<u64> = idle.query_first("SELECT 2").unwrap();
    assert_eq!(two, Some(2));
    // ... and nothing stays open for the pool once they are answered.
    let closed = wait_until(Duration::from_secs(10), || {
        threads(&mut a, &removed).is_empty() && alive(&mut root, &before) == 0
    });
    assert!(closed, "{:?}", query(&mut a, "SHOW BACKENDS"));
    let connects = num(
        &pool_row(&mut a, "SHOW STATS", &removed),
        "backend_connects",
    );
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        num(
            &pool_row(&mut a, "SHOW STATS", &removed),
            "backend_connects"
        ),
        connects,
        "a drained pool opens no backend for nobody"
    );

    // Listed again while clients remain: the same pool, not a second one.
    env.f.write_config(&full_text);
    let info = reload(&mut a);
    assert!(
        info.contains(&format!("user {USER_A} added again")),
        "{info}"
    );
    assert_eq!(pools(&mut a), [USER_A, USER_B]);
    let row = pool_row(&mut a, "SHOW POOLS", USER_A);
    assert_eq!(num(&row, "clients"), 2, "{row:?}");
    let up = wait_until(Duration::from_secs(20), || {
        num(&pool_row(&mut a, "SHOW POOLS", USER_A), "backends_idle") == 2
    });
    assert!(up, "{:?}", query(&mut a, "SHOW POOLS"));
    env.client(USER_A, PASS_A).query_drop("SELECT 3").unwrap();
    idle.query_drop("SELECT 3").unwrap();

    // Removed again; once its clients leave, the pool is gone everywhere.
    env.f.write_config(&text_without_a);
    reload(&mut a);
    assert_eq!(pools(&mut a), [removed.clone(), USER_B.to_string()]);
    drop(idle);
    drop(txn);
    let gone = wait_until(Duration::from_secs(10), || {
        pools(&mut a) == [USER_B.to_string()]
    });
    assert!(gone, "{:?}", query(&mut a, "SHOW POOLS"));
    assert!(query(&mut a, "SHOW STATS")
        .iter()
        .all(|r| s(r, "pool") != removed));
    let j = json(&env, "/stats.json");
    let names: Vec<&str> = j["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [USER_B]);
    let (_, body) = env.get("/metrics");
    assert!(!body.contains(&format!("pool=\"{removed}\"")), "{body}");

    // Listed again after it was gone: one pool, working.
    env.f.write_config(&full_text);
    reload(&mut a);
    assert_eq!(pools(&mut a), [USER_A, USER_B]);
    let mut back = env.client(USER_A, PASS_A);
    let four: Option<u64> = back.query_first("SELECT 4").unwrap();
    assert_eq!(four, Some(4));
    assert_eq!(pools(&mut a), [USER_A, USER_B]);
}

/// A reload says exactly what changed, key by key, old -> new, in its
/// answer and in the log (it said "no changes that matter" for limits it
/// applied); keys only a restart can change say so.
#[test]
fn reload_summary_lists_each_changed_key() {
    let env = start(&user_a(""), &[USER_A]);
    let mut a = env.admin();
    let text = std::fs::read_to_string(&env.f.config_path).unwrap();
    let reload = |a: &mut mysql::Conn| -> String {
        let r = a.query_iter("RELOAD").unwrap();
        let info = r.info_str().into_owned();
        drop(r);
        info
    };
    assert!(reload(&mut a).contains("no changes"));
    let value = config_value;
    let user_section = format!("[user {USER_A}]");
    let old_max = value(&mut a, "[funnel]", "max_client_connections");
    let old_timeout = value(&mut a, &user_section, "queue_timeout_ms");
    assert_ne!(old_max, "77");
    assert_ne!(old_timeout, "1234");
    let changed = text
        .replace(
            "[funnel]\n",
            "[funnel]\nmax_client_connections = 77\nunix_socket = /tmp/nowhere.sock\n",
        )
        .replace(&user_a(""), &user_a("queue_timeout_ms = 1234"));
    env.f.write_config(&changed);
    let info = reload(&mut a);
    let expect = [
        format!("[funnel] max_client_connections: {old_max} -> 77"),
        format!("[user {USER_A}] queue_timeout_ms: {old_timeout} -> 1234"),
        "[funnel] unix_socket: \"\" -> \"/tmp/nowhere.sock\" (needs a restart)".to_string(),
    ];
    for e in &expect {
        assert!(info.contains(e.as_str()), "{e:?} not in {info:?}");
    }
    assert!(!info.contains("no changes"), "{info}");
    // Applied (the restart-only key keeps its running value).
    assert_eq!(value(&mut a, "[funnel]", "max_client_connections"), "77");
    assert_eq!(value(&mut a, &user_section, "queue_timeout_ms"), "1234");
    let logged = wait_until(Duration::from_secs(5), || {
        let log = env.f.log();
        expect.iter().all(|e| log.contains(e.as_str()))
    });
    assert!(logged, "{}", env.f.log());
}

/// Bytes read from clients count per pool and funnel-wide (the per-pool
/// figure stayed 0); counters only the funnel as a whole has are NULL in
/// pool rows; the process figures are there, in Prometheus' names.
#[test]
fn byte_counters_funnel_wide_nulls_and_process_metrics() {
    let users = format!("{}{}", user_a(""), user_b(""));
    let env = start(&users, &[USER_A, USER_B]);
    let mut a = env.admin();
    let stats = |a: &mut mysql::Conn, pool: &str| pool_row(a, "SHOW STATS", pool);
    let before_a = num(&stats(&mut a, USER_A), "bytes_in");
    let before_b = num(&stats(&mut a, USER_B), "bytes_in");
    let before_total = num(&stats(&mut a, "(total)"), "bytes_in");
    let mut c = env.client(USER_A, PASS_A);
    let total_after_login = num(&stats(&mut a, "(total)"), "bytes_in");
    assert!(total_after_login > before_total, "the login's bytes count");
    let a_after_login = num(&stats(&mut a, USER_A), "bytes_in");
    // A COM_QUERY of a known size: 4-byte header, command byte, the text.
    let sql = format!("SELECT '{}'", "x".repeat(1000));
    let _: Option<String> = c.query_first(&sql).unwrap();
    let row = stats(&mut a, USER_A);
    assert_eq!(
        num(&row, "bytes_in") - a_after_login,
        4 + 1 + sql.len() as u64,
        "{row:?}"
    );
    assert!(num(&row, "bytes_out") > 1000, "{row:?}");
    assert_eq!(num(&stats(&mut a, USER_B), "bytes_in"), before_b);
    assert!(a_after_login >= before_a);
    let total = stats(&mut a, "(total)");
    assert_eq!(
        num(&total, "bytes_in") - total_after_login,
        4 + 1 + sql.len() as u64
    );
    // Per pool, what exists only funnel-wide is NULL; the total has it.
    for name in ["clients_accepted", "clients_refused"] {
        assert_eq!(row.get(name), Some(&None), "{name} in {row:?}");
        assert!(total.get(name).unwrap().is_some(), "{name} in {total:?}");
    }
    let j = json(&env, "/stats.json");
    let pool = j["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == USER_A)
        .unwrap();
    assert!(pool["counters"]["clients_accepted"].is_null(), "{pool}");
    assert_eq!(
        pool["counters"]["bytes_in"].as_u64(),
        Some(num(&row, "bytes_in"))
    );

    let scrape = metrics(&env);
    assert_eq!(
        metric(&scrape, "funnel_received_bytes_total", &[("pool", USER_A)]),
        num(&row, "bytes_in") as f64
    );
    let all = metric(&scrape, "funnel_received_bytes_all_total", &[]);
    assert!(all >= num(&total, "bytes_in") as f64, "{all}");
    let sent_all = metric(&scrape, "funnel_sent_bytes_all_total", &[]);
    let sent_pools: f64 = [USER_A, USER_B]
        .iter()
        .map(|p| metric(&scrape, "funnel_sent_bytes_total", &[("pool", p)]))
        .sum();
    assert_eq!(sent_all, sent_pools);

    // The funnel's own process, as /proc says.
    let pid = env.f.pid().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    let open = metric(&scrape, "process_open_fds", &[]);
    assert!(
        (open - fds).abs() <= 4.0,
        "process_open_fds {open}, /proc says {fds}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: f64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(metric(&scrape, "process_max_fds", &[]), soft);
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let rss_pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    let rss = metric(&scrape, "process_resident_memory_bytes", &[]);
    assert!(
        rss > rss_pages * 4096.0 * 0.5 && rss < rss_pages * 4096.0 * 2.0,
        "{rss} vs {rss_pages} pages"
    );
    // utime + stime of /proc/PID/stat (fields 14 and 15, in clock ticks of
    // 1/100 s), read after the scrape: a young funnel may have used less
    // than a tick, so compare rather than ask for more than zero.
    let cpu = metric(&scrape, "process_cpu_seconds_total", &[]);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let proc_cpu = ticks / 100.0;
    assert!(
        cpu >= 0.0 && cpu <= proc_cpu + 0.01 && proc_cpu - cpu < 1.0,
        "process_cpu_seconds_total {cpu}, /proc says {proc_cpu}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = metric(&scrape, "process_start_time_seconds", &[]);
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "started {started}, now {now}"
    );
}

/// A descriptor limit below what max_client_connections and the backends
/// need: raised up to the hard limit, and a warning when still short.
#[test]
fn fd_limit_below_need_warns_at_start() {
    let [port, _, _] = ports();
    let config = format!(
        "[funnel]\nlisten = 127.0.0.1:{port}\nmax_client_connections = 5000\n\
         [backend]\naddress = 127.0.0.1:{}\n[user {USER_A}]\npassword = {PASS_A}\n",
        mariadb().port
    );
    let f = FunnelProcess::builder(&config)
        .port(port)
        .nofile_limit(256, 256)
        .start();
    assert!(
        f.log()
            .contains("open files limit (RLIMIT_NOFILE) is 256 (hard limit 256)"),
        "{}",
        f.log()
    );
    assert!(
        f.log().contains("max_client_connections 5000"),
        "{}",
        f.log()
    );
    // Still serves.
    f.conn(USER_A, PASS_A).query_drop("SELECT 1").unwrap();
    // A reload that lowers the need below the limit says nothing more; one
    // that raises it warns again.
    let warnings = |f: &FunnelProcess| f.log().matches("below the").count();
    let reload = |f: &FunnelProcess, max: u32| {
        let before = f.log().matches("configuration reloaded").count();
        f.write_config(&config.replace(
            "max_client_connections = 5000",
            &format!("max_client_connections = {max}"),
        ));
        f.signal(libc::SIGHUP);
        assert!(wait_until(Duration::from_secs(10), || {
            f.log().matches("configuration reloaded").count() > before
        }));
    };
    reload(&f, 100);
    assert_eq!(warnings(&f), 1, "{}", f.log());
    reload(&f, 6000);
    assert_eq!(warnings(&f), 2, "{}", f.log());
    assert!(
        f.log().contains("max_client_connections 6000"),
        "{}",
        f.log()
    );
    drop(f);

    // A hard limit with room: the soft one is raised to what is needed.
    let (_, hard) = funnel::process::nofile_limit().unwrap();
    if hard < 10_000 {
        eprintln!("hard RLIMIT_NOFILE {hard}: the raise is not testable here");
        return;
    }
    let [port, _, _] = ports();
    let config = config.replace(
        &format!("127.0.0.1:{}", f_port(&config)),
        &format!("127.0.0.1:{port}"),
    );
    let f = FunnelProcess::builder(&config)
        .port(port)
        .nofile_limit(256, hard)
        .start();
    let log = f.log();
    assert!(
        log.contains("raised the open files limit (RLIMIT_NOFILE) from 256 to "),
        "{log}"
    );
    assert!(!log.contains("below the"), "{log}");
    let pid = f.pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(soft > 5000 && soft < 6000, "{limits}");
}

/// The listen port in a config written by these tests.
fn f_port(config: &str) -> u16 {
    config
        .lines()
        .find_map(|l| l.strip_prefix("listen = 127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap()
}

/// Whether mysqld runs a statement whose text contains `marker`.
fn mysqld_runs(marker: &str) -> bool {
    let mut root = mariadb().admin_conn();
    let n: Option<u64> = root
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE CONCAT('%', ?, '%') AND ID <> CONNECTION_ID()",
            (marker,),
        )
        .unwrap();
    n.unwrap_or(0) > 0
}

#[test]
fn kill_client_closes_it_as_kill_connection_would() {
    let env = start(&user_a(""), &[USER_A]);
    let mut a = env.admin();

    // Unknown ids: mysqld's own error.
    let (code, msg) = error_code(a.query_drop("KILL CLIENT 987654"));
    assert_eq!((code, msg.as_str()), (1094, "Unknown thread id: 987654"));
    let (code, _) = error_code(a.query_drop("KILL CLIENT x"));
    assert_eq!(code, 1064);

    // An idle client: closed, its next command fails, the others go on.
    let mut idle = env.client(USER_A, PASS_A);
    let mut other = env.client(USER_A, PASS_A);
    let idle_id = idle.connection_id();
    let r = a.query_iter(format!("KILL CLIENT {idle_id}")).unwrap();
    assert_eq!(r.info_str(), format!("client {idle_id} killed"));
    drop(r);
    assert!(idle.query_drop("SELECT 1").is_err());
    assert!(!query(&mut a, "SHOW CLIENTS")
        .iter()
        .any(|r| num(r, "id") == u64::from(idle_id)));
    let v: Option<i64> = other.query_first("SELECT 7").unwrap();
    assert_eq!(v, Some(7));

    // A running client: its statement is killed on mysqld, its backend
    // comes back to the pool.
    let mut busy = env.client(USER_A, PASS_A);
    let busy_id = busy.connection_id();
    let started = Instant::now();
    let worker = thread::spawn(move || busy.query_drop("SELECT SLEEP(30) AS kill_client_marker"));
    assert!(wait_until(Duration::from_secs(10), || mysqld_runs(
        "kill_client_marker"
    )));
    a.query_drop(format!("KILL CLIENT {busy_id}")).unwrap();
    let r = worker.join().unwrap();
    assert!(r.is_err(), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(10), || !mysqld_runs(
            "kill_client_marker"
        )),
        "the statement still runs on mysqld"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            num(&pool_row(&mut a, "SHOW POOLS", USER_A), "backends_idle") == 2
        }),
        "{:?}",
        query(&mut a, "SHOW POOLS")
    );
    assert_eq!(num(&pool_row(&mut a, "SHOW POOLS", USER_A), "clients"), 1);
    let v: Option<i64> = other.query_first("SELECT 8").unwrap();
    assert_eq!(v, Some(8));
}

#[test]
fn pause_and_resume_one_pool() {
    let env = start(&format!("{}{}", user_a(""), user_b("")), &[USER_A, USER_B]);
    let mut a = env.admin();
    let (code, msg) = error_code(a.query_drop("PAUSE nosuchpool"));
    assert_eq!(code, 1105);
    assert!(msg.contains("no pool 'nosuchpool'"), "{msg}");

    // Logins go through the backlog too: these come first.
    let mut ca = env.client(USER_A, PASS_A);
    let mut cb = env.client(USER_B, PASS_B);
    let r = a.query_iter(format!("PAUSE {USER_A}")).unwrap();
    assert!(r.info_str().contains("paused"), "{}", r.info_str());
    drop(r);
    let worker = thread::spawn(move || {
        let v: Option<i64> = ca.query_first("SELECT 41 + 1").unwrap();
        v
    });
    assert!(wait_until(Duration::from_secs(10), || {
        num(&pool_row(&mut a, "SHOW BACKLOG", USER_A), "depth") == 1
    }));
    assert_eq!(
        s(&pool_row(&mut a, "SHOW BACKLOG", USER_A), "paused"),
        "yes"
    );
    assert_eq!(s(&pool_row(&mut a, "SHOW BACKLOG", USER_B), "paused"), "no");
    assert_eq!(s(&pool_row(&mut a, "SHOW POOLS", USER_A), "paused"), "yes");
    assert_eq!(s(&pool_row(&mut a, "SHOW POOLS", USER_B), "paused"), "no");
    // The other pool is not paused.
    let v: Option<i64> = cb.query_first("SELECT 5").unwrap();
    assert_eq!(v, Some(5));
    thread::sleep(Duration::from_millis(300));
    assert!(!worker.is_finished());
    assert_eq!(num(&pool_row(&mut a, "SHOW BACKLOG", USER_A), "depth"), 1);
    // A funnel-wide RESUME does not undo a pool's PAUSE.
    a.query_drop("RESUME").unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(!worker.is_finished());
    assert_eq!(s(&pool_row(&mut a, "SHOW POOLS", USER_A), "paused"), "yes");

    let r = a.query_iter(format!("RESUME {USER_A}")).unwrap();
    assert_eq!(r.info_str(), format!("pool {USER_A} resumed"));
    drop(r);
    assert_eq!(worker.join().unwrap(), Some(42));
    assert_eq!(num(&pool_row(&mut a, "SHOW BACKLOG", USER_A), "depth"), 0);
    assert_eq!(s(&pool_row(&mut a, "SHOW BACKLOG", USER_A), "paused"), "no");
    assert_eq!(s(&pool_row(&mut a, "SHOW POOLS", USER_A), "paused"), "no");
    // A funnel-wide PAUSE shows in every pool's row, until RESUME.
    a.query_drop("PAUSE").unwrap();
    for pool in [USER_A, USER_B] {
        assert_eq!(s(&pool_row(&mut a, "SHOW POOLS", pool), "paused"), "yes");
    }
    a.query_drop("RESUME").unwrap();
    for pool in [USER_A, USER_B] {
        assert_eq!(s(&pool_row(&mut a, "SHOW POOLS", pool), "paused"), "no");
    }
}

/// The value of `section` `name` in SHOW CONFIG.
fn config_value(a: &mut mysql::Conn, section: &str, name: &str) -> String {
    query(a, "SHOW CONFIG")
        .iter()
        .find(|r| s(r, "section") == section && s(r, "name") == name)
        .map(|r| s(r, "value").to_string())
        .unwrap_or_else(|| panic!("no {section} {name} in SHOW CONFIG"))
}

fn info(a: &mut mysql::Conn, sql: &str) -> String {
    let r = a.query_iter(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let info = r.info_str().into_owned();
    drop(r);
    info
}

/// `SET key = value` changes a reloadable key as a reload would: logged,
/// answered with what changed, shown by SHOW CONFIG, in effect at once
/// (queue_timeout_ms, max_client_connections), until the next RELOAD.
#[test]
fn set_changes_a_reloadable_key_until_the_next_reload() {
    let env = start(&user_a(""), &[USER_A]);
    let mut a = env.admin();
    let user_section = format!("[user {USER_A}]");
    assert_eq!(
        config_value(&mut a, &user_section, "queue_timeout_ms"),
        "10000"
    );

    // [pool] queue_timeout_ms reaches the user, who does not override it.
    let said = info(&mut a, "SET queue_timeout_ms = 300");
    let change = format!("[user {USER_A}] queue_timeout_ms: 10000 -> 300");
    assert!(said.contains(&change), "{said}");
    assert!(said.contains("until the next reload"), "{said}");
    assert!(
        env.f.wait_for_log(
            &format!("configuration changed by admin SET: {change}"),
            Duration::from_secs(5)
        ),
        "{}",
        env.f.log()
    );
    assert_eq!(
        config_value(&mut a, &user_section, "queue_timeout_ms"),
        "300"
    );
    assert_eq!(
        num(&pool_row(&mut a, "SHOW POOLS", USER_A), "queue_timeout_ms"),
        300
    );
    // In effect: a paused pool's command times out after 300 ms, not 10 s.
    let mut c = env.client(USER_A, PASS_A);
    a.query_drop(format!("PAUSE {USER_A}")).unwrap();
    let t0 = Instant::now();
    let (code, msg) = error_code(c.query_drop("SELECT 1"));
    assert_eq!(code, 1969, "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    a.query_drop(format!("RESUME {USER_A}")).unwrap();

    // One client is connected: one more is too many once the limit is 1.
    let said = info(&mut a, "SET GLOBAL max_client_connections = 1");
    assert!(
        said.contains("[funnel] max_client_connections: 20000 -> 1"),
        "{said}"
    );
    let (code, msg) = error_code(env.f.try_conn(USER_A, PASS_A));
    assert_eq!(code, 1040, "{msg}");
    // DEFAULT: as if the file did not give it.
    let said = info(&mut a, "SET max_client_connections = DEFAULT");
    assert!(
        said.contains("[funnel] max_client_connections: 1 -> 20000"),
        "{said}"
    );
    drop(env.client(USER_A, PASS_A));
    // A per-user key, with the user named.
    let said = info(
        &mut a,
        &format!("SET user.{USER_A}.max_client_connections = 1"),
    );
    assert!(
        said.contains(&format!("[user {USER_A}] max_client_connections: 0 -> 1")),
        "{said}"
    );
    let (code, msg) = error_code(env.f.try_conn(USER_A, PASS_A));
    assert_eq!(code, 1203, "{msg}");

    // The next reload from the file undoes every SET.
    let said = info(&mut a, "RELOAD");
    assert!(
        said.contains(&format!("[user {USER_A}] queue_timeout_ms: 300 -> 10000")),
        "{said}"
    );
    assert!(
        said.contains(&format!("[user {USER_A}] max_client_connections: 1 -> 0")),
        "{said}"
    );
    assert_eq!(
        config_value(&mut a, &user_section, "queue_timeout_ms"),
        "10000"
    );
    drop(env.client(USER_A, PASS_A));
    drop(c);

    // The read-only console account may not SET (client SETs still work).
    let text = std::fs::read_to_string(&env.f.config_path).unwrap();
    env.f.write_config(&text.replace(
        "[admin]\n",
        "[admin]\nstats_user = watcher\nstats_password = watcher-pw\n",
    ));
    assert!(info(&mut a, "RELOAD").contains("stats_user"));
    let mut w = mysql::Conn::new(admin_opts(env.admin_port, "watcher", "watcher-pw")).unwrap();
    w.query_drop("SET NAMES utf8mb4").unwrap();
    let (code, msg) = error_code(w.query_drop("SET queue_timeout_ms = 5"));
    assert_eq!(code, 1227, "{msg}");
    assert_eq!(
        config_value(&mut a, &user_section, "queue_timeout_ms"),
        "10000"
    );
}

/// A key that is unknown or only a restart can change, or a bad value, is
/// refused with mysqld's error code and a `funnel:` message (a bad value
/// with the message the file would get), and nothing changes.
#[test]
fn set_refuses_unknown_read_only_keys_and_bad_values() {
    let env = start(&user_a(""), &[USER_A]);
    let mut a = env.admin();
    let before = query(&mut a, "SHOW CONFIG");
    for (sql, code, part) in [
        (
            "SET no_such_key = 1",
            1193,
            "Unknown system variable 'no_such_key'",
        ),
        (
            "SET queue_timeout = 1",
            1193,
            "did you mean \"queue_timeout_ms\"",
        ),
        ("SET user.nobody.connections = 1", 1193, "no [user nobody]"),
        (
            "SET funnel.listen = '127.0.0.1:1'",
            1238,
            "[funnel] listen is read only",
        ),
        (
            "SET backend.address = '127.0.0.1:1'",
            1238,
            "[backend] address is read only",
        ),
        ("SET SESSION queue_timeout_ms = 5", 1229, "SET GLOBAL"),
        (
            "SET output_low_watermark = 2M",
            1231,
            "must be below output_high_watermark",
        ),
        (
            "SET queue_timeout_ms = 1, connections = 2",
            1064,
            "one configuration key at a time",
        ),
    ] {
        let (got, msg) = error_code(a.query_drop(sql));
        assert_eq!(got, code, "{sql}: {msg}");
        assert!(
            msg.starts_with("funnel: ") && msg.contains(part),
            "{sql}: {msg}"
        );
    }
    // A bad value gets the message the file gets for it.
    let (code, msg) = error_code(a.query_drop("SET pool.queue_timeout_ms = 'soon'"));
    assert_eq!(code, 1231, "{msg}");
    let text = std::fs::read_to_string(&env.f.config_path).unwrap();
    env.f
        .write_config(&text.replace("[pool]\n", "[pool]\nqueue_timeout_ms = soon\n"));
    let (_, reload_msg) = error_code(a.query_drop("RELOAD"));
    let file_says = reload_msg
        .split_once("[pool] queue_timeout_ms: ")
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("{reload_msg}"));
    assert_eq!(msg, format!("funnel: [pool] queue_timeout_ms: {file_says}"));
    env.f.write_config(&text);
    assert_eq!(query(&mut a, "SHOW CONFIG"), before);

    // The mariadb client shows the code and SQLSTATE.
    let out = env.mariadb_cli("SET unix_socket = '/tmp/x.sock'");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR 1238 (HY000)") && stderr.contains("funnel: "),
        "{stderr}"
    );
}

/// mysqld's thread ids of `user`'s connections.
fn mysqld_threads(user: &str) -> Vec<u64> {
    let mut root = mariadb().admin_conn();
    root.exec(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? ORDER BY ID",
        (user,),
    )
    .unwrap()
}

#[test]
fn reconnect_pool_replaces_its_backends_after_their_commands() {
    let env = start(&format!("{}{}", user_a(""), user_b("")), &[USER_A, USER_B]);
    let mut a = env.admin();
    let (code, msg) = error_code(a.query_drop("RECONNECT nosuchpool"));
    assert_eq!(code, 1105);
    assert!(msg.contains("no pool 'nosuchpool'"), "{msg}");

    let mut pinned = env.client(USER_A, PASS_A);
    pinned.query_drop("BEGIN").unwrap();
    let mut busy = env.client(USER_A, PASS_A);
    let worker = thread::spawn(move || {
        let v: Option<i64> = busy
            .query_first("SELECT SLEEP(2) + 5 AS reconnect_marker")
            .unwrap();
        v
    });
    assert!(wait_until(Duration::from_secs(10), || mysqld_runs(
        "reconnect_marker"
    )));
    let old = mysqld_threads(USER_A);
    let others = mysqld_threads(USER_B);
    assert!(old.len() >= 2, "{old:?}");

    let r = a.query_iter(format!("RECONNECT {USER_A}")).unwrap();
    let info = r.info_str().to_string();
    drop(r);
    assert!(info.starts_with(&format!("pool {USER_A}: ")), "{info}");
    assert!(info.contains("busy ones close after"), "{info}");
    // The running statement is not interrupted, the transaction goes on.
    assert_eq!(worker.join().unwrap(), Some(5));
    let v: Option<i64> = pinned.query_first("SELECT 3").unwrap();
    assert_eq!(v, Some(3));
    assert!(mysqld_threads(USER_A).iter().any(|t| old.contains(t)));
    pinned.query_drop("COMMIT").unwrap();

    // Every old connection goes, new ones take their place.
    let replaced = wait_until(Duration::from_secs(15), || {
        let now = mysqld_threads(USER_A);
        !now.iter().any(|t| old.contains(t))
            && num(&pool_row(&mut a, "SHOW POOLS", USER_A), "backends_idle") == 2
    });
    assert!(
        replaced,
        "old {old:?}, now {:?}, {:?}",
        mysqld_threads(USER_A),
        query(&mut a, "SHOW POOLS")
    );
    let v: Option<i64> = pinned.query_first("SELECT 4").unwrap();
    assert_eq!(v, Some(4));
    // The other pool's connections are untouched.
    assert_eq!(mysqld_threads(USER_B), others);
}
