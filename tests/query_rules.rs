//! Query rules against a real MariaDB: `block` answers mysqld's ERR 1290;
//! `cache_ttl_ms` answers reads from the result cache, never older than the
//! TTL allows and never for a statement that must run (a transaction, a
//! locking read, `NOW()`, user variables); cached answers are what mysqld
//! answers (results, column metadata and flags) to the `mysql` crate
//! (CLIENT_DEPRECATE_EOF) and to PyMySQL (EOF packets); a reload replaces
//! the rules; a bad rule stops the start-up with exit code 2.

mod common;

use std::time::{Duration, Instant};

use common::rng::{random_seed, Rng};
use common::{FunnelConfig, FunnelProcess, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;
use mysql::Conn;

const ADMIN_PW: &str = "qr_admin_pw";

struct Funnel {
    f: FunnelProcess,
    config: FunnelConfig,
    admin_port: u16,
    stats_port: u16,
}

fn start(rules: &str) -> Funnel {
    start_with("", rules)
}

fn start_with(pool: &str, rules: &str) -> Funnel {
    start_config(FunnelConfig::user_a(), pool, rules)
}

fn start_config(config: FunnelConfig, pool: &str, rules: &str) -> Funnel {
    let admin_port = common::free_port();
    let stats_port = common::free_port();
    let config = config
        .pool("connections = 2")
        .pool(pool)
        .admin(admin_port, ADMIN_PW)
        .stats(stats_port)
        .rust_log("warn")
        .section(rules);
    let f = config.clone().start();
    Funnel {
        f,
        config,
        admin_port,
        stats_port,
    }
}

impl Funnel {
    /// `SHOW RULES`: (rule, hits, cached) per row; the last row is `*`,
    /// the cache (lookups, hits).
    fn rules(&self) -> Vec<(String, u64, u64)> {
        let mut a = common::admin_console(self.admin_port, "admin", ADMIN_PW);
        common::admin::query(&mut a, "SHOW RULES")
            .iter()
            .map(|row| {
                let text = |c: &str| row.get(c).cloned().flatten().unwrap_or_default();
                (
                    text("rule"),
                    text("hits").parse().unwrap_or(0),
                    text("cached").parse().unwrap_or(0),
                )
            })
            .collect()
    }

    fn rule(&self, name: &str) -> (u64, u64) {
        let rows = self.rules();
        rows.iter()
            .find(|r| r.0 == name)
            .map(|r| (r.1, r.2))
            .unwrap_or_else(|| panic!("no rule {name} in {rows:?}"))
    }
}

fn table(name: &str) {
    common::admin_sql(&format!(
        "DROP TABLE IF EXISTS {TEST_DB}.{name}; \
         CREATE TABLE {TEST_DB}.{name} (id INT PRIMARY KEY, v VARCHAR(20), \
         d DECIMAL(8,2), u INT UNSIGNED, b VARBINARY(8), t DATETIME); \
         INSERT INTO {TEST_DB}.{name} VALUES (1, 'v0', 12.5, 7, 0x00ff, '2024-01-02 03:04:05'), \
         (2, 'w', NULL, 0, '', NULL)"
    ));
}

fn value(c: &mut Conn, sql: &str) -> String {
    c.query_first::<String, _>(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_default()
}

#[test]
fn block_answers_mysqlds_refusal() {
    let f = start(
        "[rule no_drops]\npattern = \"(?i)^\\\\s*drop\\\\b\"\nblock = \"funnel: DROP is not allowed here\"\n",
    );
    let mut c = f.f.conn(USER_A, PASS_A);
    let r = c.query_drop("DROP TABLE IF EXISTS qr_never");
    let (code, state, message) = common::sql::server_error(r);
    assert_eq!((code, state.as_str()), (1290, "HY000"));
    assert_eq!(message, "funnel: DROP is not allowed here");
    // The connection goes on; other statements are not matched.
    assert_eq!(value(&mut c, "SELECT 'still here'"), "still here");
    assert_eq!(f.rule("no_drops"), (1, 0));
}

#[test]
fn cached_reads_are_fresh_within_the_ttl_and_uncacheable_ones_always() {
    const TTL_MS: u64 = 700;
    table("qr_fresh");
    let f = start(&format!(
        "[rule fresh]\nschema = {TEST_DB}\npattern = \"qr_fresh\"\ncache_ttl_ms = {TTL_MS}\n"
    ));
    let mut writer = common::mysql_direct(USER_A, PASS_A);
    let mut readers: Vec<Conn> = (0..3).map(|_| f.f.conn(USER_A, PASS_A)).collect();
    // (value, when it was replaced): a read's answer must have been the
    // row's value at some moment within the TTL before the read began.
    let mut history: Vec<(String, Option<Instant>)> = vec![("v0".into(), None)];
    let cacheable = [
        "SELECT v FROM qr_fresh WHERE id = 1",
        "select v from qr_fresh where id = 1",
        "SELECT v FROM qr_fresh WHERE id IN (1)",
    ];
    let uncacheable = [
        "SELECT CONCAT(v, IF(NOW() > 0, '', 'x')) FROM qr_fresh WHERE id = 1",
        "SELECT v FROM qr_fresh WHERE id = 1 FOR UPDATE",
        "SELECT v FROM qr_fresh WHERE id = 1 LOCK IN SHARE MODE",
        "SELECT CONCAT(v, IFNULL(@qr_x, '')) FROM qr_fresh WHERE id = 1",
        "SELECT CONCAT(v, LEFT(UUID(), 0)) FROM qr_fresh WHERE id = 1",
        "SELECT CONCAT(v, LEFT(RAND(), 0)) FROM qr_fresh WHERE id = 1",
        "SELECT CONCAT(v, LEFT(@@sql_mode, 0)) FROM qr_fresh WHERE id = 1",
    ];
    let seed = random_seed(0x5eed_0018);
    println!("FUNNEL_RANDOM_SEED={seed}");
    let mut rng = Rng(seed);
    let slack = Duration::from_millis(150);
    let mut writes = 0;
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        match rng.below(10) {
            0..=1 => {
                writes += 1;
                let v = format!("v{writes}");
                writer
                    .query_drop(format!("UPDATE qr_fresh SET v = '{v}' WHERE id = 1"))
                    .unwrap();
                if let Some(last) = history.last_mut() {
                    last.1 = Some(Instant::now());
                }
                history.push((v, None));
            }
            2..=6 => {
                let sql = cacheable[rng.below(cacheable.len())];
                let r = rng.below(readers.len());
                let began = Instant::now();
                let got = value(&mut readers[r], sql);
                let entry = history
                    .iter()
                    .find(|(v, _)| *v == got)
                    .unwrap_or_else(|| panic!("{sql}: {got:?} was never the value"));
                if let Some(replaced) = entry.1 {
                    assert!(
                        replaced + Duration::from_millis(TTL_MS) + slack > began,
                        "{sql}: {got:?}, replaced {:?} before the read, older than the TTL allows",
                        began - replaced
                    );
                }
            }
            7 => {
                // In a transaction: never from the cache.
                let r = rng.below(readers.len());
                let c = &mut readers[r];
                c.query_drop("BEGIN").unwrap();
                let got = value(c, cacheable[0]);
                c.query_drop("COMMIT").unwrap();
                assert_eq!(&got, &history.last().unwrap().0, "in a transaction");
            }
            _ => {
                let sql = uncacheable[rng.below(uncacheable.len())];
                let r = rng.below(readers.len());
                let got = value(&mut readers[r], sql);
                assert_eq!(&got, &history.last().unwrap().0, "{sql}");
            }
        }
    }
    let (hits, cached) = f.rule("fresh");
    assert!(hits > 20, "{hits}");
    // The cache was used (else the test proves nothing about it).
    assert!(cached > 5, "cached {cached} of {hits}");
    // A write is seen once the TTL has passed.
    writer
        .query_drop("UPDATE qr_fresh SET v = 'last' WHERE id = 1")
        .unwrap();
    std::thread::sleep(Duration::from_millis(TTL_MS + 50));
    assert_eq!(value(&mut readers[0], cacheable[0]), "last");
}

/// Everything the `mysql` crate sees of an answer: columns with their
/// metadata, then the rows.
fn answer(c: &mut Conn, sql: &str) -> String {
    let mut r = c.query_iter(sql).unwrap();
    let mut out = String::new();
    for col in r.columns().as_ref() {
        out.push_str(&format!(
            "{} {} {} {:?} {:?} {} {} {}|",
            col.schema_str(),
            col.table_str(),
            col.name_str(),
            col.column_type(),
            col.flags(),
            col.character_set(),
            col.column_length(),
            col.decimals()
        ));
    }
    for row in r.by_ref() {
        out.push_str(&format!("\n{:?}", row.unwrap().unwrap()));
    }
    out
}

const EXACT_SQL: &str = "SELECT id, v, d, u, b, t, v AS alias FROM qr_exact ORDER BY id";

#[test]
fn cached_answers_are_mysqlds_for_the_mysql_crate() {
    table("qr_exact");
    let f = start("[rule exact]\npattern = \"qr_exact\"\ncache_ttl_ms = 60000\n");
    let direct = answer(&mut common::mysql_direct(USER_A, PASS_A), EXACT_SQL);
    let mut c = f.f.conn(USER_A, PASS_A);
    let first = answer(&mut c, EXACT_SQL);
    let second = answer(&mut c, EXACT_SQL);
    let other_client = answer(&mut f.f.conn(USER_A, PASS_A), EXACT_SQL);
    assert_eq!(first, direct);
    assert_eq!(second, direct);
    assert_eq!(other_client, direct);
    assert_eq!(f.rule("exact"), (3, 2));
    // The same counts on the stats port, for Prometheus and as JSON.
    let scrape = common::stats::parse_metrics(&common::stats::get_ok(f.stats_port, "/metrics"));
    let sample = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("rule").is_none_or(|r| r == "exact"))
            .map(common::stats::sample_value)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(sample("funnel_rule_hits_total"), 3.0);
    assert_eq!(sample("funnel_rule_cached_total"), 2.0);
    assert_eq!(sample("funnel_result_cache_hits_total"), 2.0);
    assert_eq!(sample("funnel_result_cache_entries"), 1.0);
    let json = common::stats::json(f.stats_port, "/stats.json");
    assert_eq!(json["rules"][0]["name"], "exact");
    assert_eq!(json["rules"][0]["cached"], 2);
    assert_eq!(json["result_cache"]["stores"], 1);
    // The session goes on as after mysqld's answer.
    assert_eq!(value(&mut c, "SELECT ROW_COUNT()"), "-1");
    assert_eq!(value(&mut c, "SELECT 'next'"), "next");
}

#[test]
fn cached_answers_are_mysqlds_for_pymysql_without_deprecate_eof() {
    if !common::clients::python_has("pymysql") {
        common::clients::skip("pymysql", "python3 module pymysql missing");
        return;
    }
    table("qr_exact_py");
    let f = start("[rule exact]\npattern = \"qr_exact_py\"\ncache_ttl_ms = 60000\n");
    let sql = EXACT_SQL.replace("qr_exact", "qr_exact_py");
    // PyMySQL does not ask for CLIENT_DEPRECATE_EOF: its answers end
    // with EOF packets; description has every column's metadata. With
    // its default autocommit off, a read opens a transaction: never cached.
    let script = r#"
import sys, pymysql
port, user, pw, db, sql, times, autocommit = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7] == "1"
c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw, database=db, autocommit=autocommit)
assert not (c.client_flag & (1 << 24)), "DEPRECATE_EOF asked"
for _ in range(times):
    cur = c.cursor()
    cur.execute(sql)
    print(repr(cur.description))
    print(repr(cur.fetchall()))
    print(c.server_status & ~0x4000, c.get_autocommit())
    cur.execute("SELECT 'after'")
    print(cur.fetchall())
"#;
    let run = |port: u16, times: &str, autocommit: &str| {
        common::clients::python_ok(
            script,
            &[
                &port.to_string(),
                USER_A,
                PASS_A,
                TEST_DB,
                &sql,
                times,
                autocommit,
            ],
        )
    };
    let direct = run(common::mariadb().port, "1", "1");
    let through = run(f.f.port, "3", "1");
    assert_eq!(
        through,
        direct.repeat(3),
        "direct:\n{direct}\nfunnel:\n{through}"
    );
    assert_eq!(f.rule("exact"), (3, 2));
    let direct = run(common::mariadb().port, "1", "0");
    let through = run(f.f.port, "2", "0");
    assert_eq!(
        through,
        direct.repeat(2),
        "direct:\n{direct}\nfunnel:\n{through}"
    );
    assert_eq!(
        f.rule("exact"),
        (5, 2),
        "autocommit off: no answer from the cache"
    );
}

#[test]
fn reload_replaces_the_rules() {
    let f = start("[rule r1]\npattern = \"qr_reload_marker\"\nblock = \"blocked by r1\"\n");
    let admin_port = f.admin_port;
    let mut c = f.f.conn(USER_A, PASS_A);
    let sql = "SELECT 'qr_reload_marker'";
    assert_eq!(
        common::sql::server_error(c.query_drop(sql)).2,
        "blocked by r1"
    );
    let new = f
        .config
        .clone()
        .section("[rule r2]\npattern = \"qr_other\"\nblock = \"blocked by r2\"\n");
    // The first rule is gone from the new text: only r2 stays.
    let text = new.text(f.f.port).replace(
        "[rule r1]\npattern = \"qr_reload_marker\"\nblock = \"blocked by r1\"\n",
        "",
    );
    f.f.write_config(&text);
    let mut a = common::admin_console(admin_port, "admin", ADMIN_PW);
    common::admin::query(&mut a, "RELOAD");
    assert_eq!(value(&mut c, sql), "qr_reload_marker");
    assert_eq!(
        common::sql::server_error(c.query_drop("SELECT 'qr_other'")).2,
        "blocked by r2"
    );
    let rows = f.rules();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0], ("r2".to_string(), 1, 0));
}

#[test]
fn a_bad_rule_stops_the_start_up() {
    for (rules, want) in [
        (
            "[rule bad]\npattern = \"(unclosed\"\nblock = x\n",
            "[rule bad] pattern: not a regular expression",
        ),
        ("[rule bad]\nuser = app\n", "has no action"),
    ] {
        let text = FunnelConfig::user_a()
            .section(rules)
            .text(common::free_port());
        let (status, log) = FunnelProcess::builder(&text).run_to_exit(Duration::from_secs(20));
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
        assert!(log.contains(want), "{log}");
    }
}

/// The README's "Query rules" example, with the test's user and schema.
#[test]
fn the_readme_example_works() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Query rules").expect("README section")..];
    let at = section.find("```ini\n").unwrap() + "```ini\n".len();
    let ini = &section[at..at + section[at..].find("```").unwrap()];
    // Its [rule] sections (the [funnel] keys are the defaults).
    let rules = &ini[ini.find("[rule ").unwrap()..];
    let rules = rules
        .replace("user = app\n", &format!("user = {USER_A}\n"))
        .replace("schema = shop\n", &format!("schema = {TEST_DB}\n"));
    common::admin_sql(&format!(
        "DROP TABLE IF EXISTS {TEST_DB}.products; \
         CREATE TABLE {TEST_DB}.products (id INT PRIMARY KEY, name VARCHAR(20)); \
         INSERT INTO {TEST_DB}.products VALUES (1, 'pen')"
    ));
    let f = start(&rules);
    let mut c = f.f.conn(USER_A, PASS_A);
    let (code, _, message) = common::sql::server_error(c.query_drop("  DROP TABLE products"));
    assert_eq!(
        (code, message.as_str()),
        (1290, "funnel: DDL is not allowed for app")
    );
    for _ in 0..3 {
        assert_eq!(
            value(&mut c, "SELECT name FROM products WHERE id = 1"),
            "pen"
        );
    }
    assert_eq!(f.rule("no_ddl_for_app"), (1, 0));
    assert_eq!(f.rule("product_reads"), (3, 2));
}

/// A thundering herd: many clients send the same slow cacheable read at
/// once; mysqld runs it once (the funnel's shape table counts what it sent
/// to mysqld) and every client gets mysqld's answer.
#[test]
fn a_thundering_herd_runs_once_on_mysqld() {
    const CLIENTS: usize = 40;
    common::admin_sql(&format!(
        "DROP TABLE IF EXISTS {TEST_DB}.qr_herd; \
         CREATE TABLE {TEST_DB}.qr_herd (id INT PRIMARY KEY); \
         INSERT INTO {TEST_DB}.qr_herd WITH RECURSIVE s(n) AS \
         (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 300) SELECT n FROM s"
    ));
    // Slow (a join of 27 million rows), deterministic, and a plain read.
    let sql = "SELECT CONCAT(COUNT(*), ' ', SUM(a.id + b.id - c.id)) FROM qr_herd a, qr_herd b, qr_herd c";
    let f = start("[rule herd]\npattern = \"qr_herd\"\ncache_ttl_ms = 1\n");
    let began = Instant::now();
    let want = value(&mut common::mysql_direct(USER_A, PASS_A), sql);
    let alone = began.elapsed();
    assert!(
        alone > Duration::from_millis(200),
        "too fast to make a herd: {alone:?}"
    );
    let conns: Vec<Conn> = (0..CLIENTS).map(|_| f.f.conn(USER_A, PASS_A)).collect();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                value(&mut c, sql)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), want);
    }
    let mut a = common::admin_console(f.admin_port, "admin", ADMIN_PW);
    let runs: u64 = common::admin::query(&mut a, "SHOW QUERIES")
        .iter()
        .filter(|r| {
            r.get("shape")
                .cloned()
                .flatten()
                .unwrap_or_default()
                .contains("qr_herd")
        })
        .map(|r| {
            r.get("count")
                .cloned()
                .flatten()
                .unwrap_or_default()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(runs, 1, "mysqld ran the herd's read {runs} times");
    assert_eq!(f.rule("herd"), (CLIENTS as u64, CLIENTS as u64 - 1));
}

/// `max_concurrency`: a rule's statements run one at a time (the others
/// wait, queued), statements it does not match are not held, and a held
/// statement past the pool's queue_timeout_ms gets ERR 1969 unrun.
#[test]
fn max_concurrency_holds_the_rules_statements_only() {
    const SLOW: &str = "SELECT SLEEP(0.4), 'qr_limit'";
    let f = start_with(
        "queue_timeout_ms = 3000",
        "[rule one_at_a_time]\npattern = \"qr_limit\"\nmax_concurrency = 1\n",
    );
    let conns: Vec<Conn> = (0..4).map(|_| f.f.conn(USER_A, PASS_A)).collect();
    let mut other = f.f.conn(USER_A, PASS_A);
    let began = Instant::now();
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut c| std::thread::spawn(move || c.query_drop(SLOW).map(|_| Instant::now())))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // Two backends: without the rule the four would take two rounds of
    // 0.4 s; held to one at a time, four. Others are not held meanwhile.
    let t = Instant::now();
    assert_eq!(value(&mut other, "SELECT 'free'"), "free");
    assert!(
        t.elapsed() < Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    let mut ends: Vec<Instant> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    ends.sort();
    let took = ends[3] - began;
    assert!(
        took >= Duration::from_millis(1550),
        "four one at a time took {took:?}"
    );
    for pair in ends.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(350), "{ends:?}");
    }
    assert_eq!(f.rule("one_at_a_time").0, 4);
    let mut a = common::admin_console(f.admin_port, "admin", ADMIN_PW);
    let rows = common::admin::query(&mut a, "SHOW RULES");
    assert_eq!(
        rows[0].get("delayed").cloned().flatten().as_deref(),
        Some("3"),
        "{rows:?}"
    );

    // Past queue_timeout_ms while held: ERR 1969, not run.
    let g = start_with(
        "queue_timeout_ms = 600",
        "[rule one]\npattern = \"qr_limit\"\nmax_concurrency = 1\n",
    );
    let mut first = g.f.conn(USER_A, PASS_A);
    let long = std::thread::spawn(move || first.query_drop("SELECT SLEEP(1.5), 'qr_limit'"));
    std::thread::sleep(Duration::from_millis(150));
    let mut second = g.f.conn(USER_A, PASS_A);
    let t = Instant::now();
    let (code, _, message) = common::sql::server_error(second.query_drop("SELECT 'qr_limit', 2"));
    assert_eq!(code, 1969, "{message}");
    assert!(message.contains("max_concurrency"), "{message}");
    assert!(
        t.elapsed() < Duration::from_millis(1300),
        "{:?}",
        t.elapsed()
    );
    long.join().unwrap().unwrap();
    assert_eq!(
        value(&mut second, "SELECT CONCAT('qr_limit', 3)"),
        "qr_limit3"
    );
}

/// `rate_limit` with `rate_burst`: a burst starts at once, the rest at the
/// rate; statements the rule does not match are not held.
#[test]
fn rate_limit_spaces_the_rules_statements() {
    // One event loop: with several, each paces its share of the rate
    // (README, "Several event loops"), and this test times one client.
    let f = start_config(
        FunnelConfig::user_a().funnel("threads = 1"),
        "",
        "[rule paced]\npattern = \"qr_rate\"\nrate_limit = 5\nrate_burst = 2\n",
    );
    let mut c = f.f.conn(USER_A, PASS_A);
    let mut other = f.f.conn(USER_A, PASS_A);
    let began = Instant::now();
    let mut at = Vec::new();
    for i in 0..12 {
        assert_eq!(
            value(&mut c, &format!("SELECT CONCAT('qr_rate', {i})")),
            format!("qr_rate{i}")
        );
        at.push(began.elapsed());
        if i == 6 {
            let t = Instant::now();
            assert_eq!(value(&mut other, "SELECT 'free'"), "free");
            assert!(
                t.elapsed() < Duration::from_millis(150),
                "{:?}",
                t.elapsed()
            );
        }
    }
    // Two at once, then ten at 5/s: about 2 s.
    assert!(at[1] < Duration::from_millis(150), "{at:?}");
    assert!(at[11] >= Duration::from_millis(1800), "{at:?}");
    assert!(at[11] < Duration::from_millis(3500), "{at:?}");
    let mut a = common::admin_console(f.admin_port, "admin", ADMIN_PW);
    let rows = common::admin::query(&mut a, "SHOW RULES");
    let delayed: u64 = rows[0]
        .get("delayed")
        .cloned()
        .flatten()
        .unwrap()
        .parse()
        .unwrap();
    assert!(delayed >= 9, "{rows:?}");
}

/// `timeout_ms`: a matching statement still running past it is killed on
/// mysqld, as by a `KILL QUERY` (MariaDB's `SLEEP()` then returns 1, or
/// the statement gets ERR 1317 if it was not yet sleeping); others run to
/// their end; the connection goes on.
#[test]
fn timeout_ms_kills_the_rules_statements_on_mysqld() {
    let f = start("[rule short]\npattern = \"qr_timeout\"\ntimeout_ms = 300\n");
    let mut c = f.f.conn(USER_A, PASS_A);
    // Backends up and privileges known: the kill finds it running.
    assert_eq!(value(&mut c, "SELECT 'warm'"), "warm");
    let t = Instant::now();
    match c.query_first::<String, _>("SELECT CONCAT(SLEEP(3), 'qr_timeout')") {
        Ok(v) => assert_eq!(v.as_deref(), Some("1qr_timeout")),
        Err(e) => assert_eq!(common::sql::code_of(&e), Some(1317), "{e}"),
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // Not matched: not killed.
    let t = Instant::now();
    assert_eq!(value(&mut c, "SELECT SLEEP(0.6)"), "0");
    assert!(
        t.elapsed() >= Duration::from_millis(590),
        "{:?}",
        t.elapsed()
    );
    // Matched but quicker than the timeout: its own answer.
    assert_eq!(
        value(&mut c, "SELECT CONCAT(SLEEP(0.1), 'qr_timeout')"),
        "0qr_timeout"
    );
    assert_eq!(f.rule("short").0, 2);
}

/// Prepared statements (binary protocol): an execute is matched on its
/// statement's text and cached by its parameters; the cached answer is
/// mysqld's (rows in the binary format, column metadata); another
/// parameter is another entry.
#[test]
fn prepared_executes_are_cached_by_their_parameters() {
    table("qr_ps");
    let f = start("[rule ps]\npattern = \"qr_ps\"\ncache_ttl_ms = 60000\n");
    let sql = "SELECT id, v, d, u, b, t FROM qr_ps WHERE id = ? OR v = ?";
    let exec = |c: &mut Conn, id: i64, v: &str| -> String {
        let st = c.prep(sql).unwrap();
        let mut r = c.exec_iter(&st, (id, v)).unwrap();
        let mut out = String::new();
        for col in r.columns().as_ref() {
            out.push_str(&format!(
                "{} {:?} {:?} {} {}|",
                col.name_str(),
                col.column_type(),
                col.flags(),
                col.character_set(),
                col.decimals()
            ));
        }
        for row in r.by_ref() {
            out.push_str(&format!("\n{:?}", row.unwrap().unwrap()));
        }
        out
    };
    let mut direct = common::mysql_direct(USER_A, PASS_A);
    let want1 = exec(&mut direct, 1, "");
    let mut c = f.f.conn(USER_A, PASS_A);
    assert_eq!(exec(&mut c, 1, ""), want1);
    assert_eq!(exec(&mut c, 1, ""), want1);
    assert_eq!(f.rule("ps"), (2, 1));
    // Cached: a write is not seen within the TTL...
    direct
        .query_drop("UPDATE qr_ps SET v = 'changed' WHERE id = 1")
        .unwrap();
    assert_eq!(exec(&mut f.f.conn(USER_A, PASS_A), 1, ""), want1);
    // ... but other parameters are another statement.
    let want2 = exec(&mut direct, 2, "changed");
    assert_ne!(want2, want1);
    assert_eq!(exec(&mut c, 2, "changed"), want2);
    assert_eq!(f.rule("ps"), (4, 2));
}

/// Reads cached with a long TTL from the funnel, next to a connection
/// straight to mysqld that changes what they read behind the funnel's back
/// (so a read that still gives the old value was answered from the cache).
struct Invalidation {
    /// The table read (its row 1's `v`).
    table: &'static str,
    f: Funnel,
    reader: Conn,
    writer: Conn,
    direct: Conn,
}

impl Invalidation {
    fn start(invalidation: bool, table: &'static str) -> Invalidation {
        common::admin_sql(&format!(
            "DROP TABLE IF EXISTS {TEST_DB}.{table}; \
             CREATE TABLE {TEST_DB}.{table} (id INT PRIMARY KEY, v VARCHAR(20)); \
             INSERT INTO {TEST_DB}.{table} VALUES (1, 'a'), (2, 'x')"
        ));
        let f = start_config(
            FunnelConfig::user_a().funnel(&format!("cache_invalidation = {invalidation}")),
            "",
            &format!("[rule qi]\npattern = \"{table}\"\ncache_ttl_ms = 60000\n"),
        );
        Invalidation {
            table,
            reader: f.f.conn(USER_A, PASS_A),
            writer: f.f.conn(USER_A, PASS_A),
            direct: common::mysql_direct(USER_A, PASS_A),
            f,
        }
    }

    /// Sets the row behind the funnel's back.
    fn behind(&mut self, v: &str) {
        self.direct
            .query_drop(format!("UPDATE {} SET v = '{v}' WHERE id = 1", self.table))
            .unwrap();
    }

    /// `QI_READ` through the funnel: (its answer, whether from the cache).
    fn read(&mut self) -> (String, bool) {
        let before = self.f.rule("qi").1;
        let sql = self.sql();
        let v = value(&mut self.reader, &sql);
        (v, self.f.rule("qi").1 > before)
    }

    fn sql(&self) -> String {
        format!("SELECT v FROM {} WHERE id = 1", self.table)
    }

    /// What mysqld has now.
    fn now(&mut self) -> String {
        let sql = self.sql();
        value(&mut self.direct, &sql)
    }

    fn write(&mut self, sql: &str) {
        self.writer
            .query_drop(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A count of the `*` row of SHOW RULES (the cache's): `invalidations`.
    fn cache_count(&self, name: &str) -> u64 {
        let mut a = common::admin_console(self.f.admin_port, "admin", ADMIN_PW);
        let rows = common::admin::query(&mut a, "SHOW RULES");
        let row = rows.last().expect("the cache's row");
        let text = row.get("action").cloned().flatten().unwrap_or_default();
        text.split(", ")
            .find_map(|part| part.strip_prefix(&format!("{name} ")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

/// Issue 18's invalidation: a write that passes through the funnel (text,
/// prepared, in a multi-statement query, qualified from another schema, a
/// procedure, in a transaction) makes cached reads of its table stale,
/// while a write to another table (or to a table of the same name in
/// another schema) leaves them cached.
#[test]
fn writes_through_the_funnel_make_cached_reads_of_their_tables_stale() {
    common::admin_sql(&format!(
        "DROP TABLE IF EXISTS {TEST_DB}.qi_u; \
         CREATE TABLE {TEST_DB}.qi_u (id INT PRIMARY KEY); \
         CREATE DATABASE IF NOT EXISTS qi_other; \
         DROP TABLE IF EXISTS qi_other.qi_t; \
         CREATE TABLE qi_other.qi_t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO qi_other.qi_t VALUES (1, 'other'); \
         DROP PROCEDURE IF EXISTS {TEST_DB}.qi_p; \
         CREATE PROCEDURE {TEST_DB}.qi_p(x VARCHAR(20)) UPDATE {TEST_DB}.qi_t SET v = x WHERE id = 1"
    ));
    let mut t = Invalidation::start(true, "qi_t");
    assert_eq!(t.read(), ("a".into(), false));
    assert_eq!(t.read(), ("a".into(), true));
    // Unseen by the funnel: only the TTL would end it.
    t.behind("hidden");
    assert_eq!(t.read(), ("a".into(), true));
    type Step<'a> = (&'a str, &'a dyn Fn(&mut Invalidation));
    let steps: [Step; 7] = [
        ("UPDATE", &|t| {
            t.write("UPDATE qi_t SET v = 'b' WHERE id = 1")
        }),
        ("INSERT", &|t| {
            t.write("INSERT INTO qi_t VALUES (3, 'c') ON DUPLICATE KEY UPDATE v = 'c'")
        }),
        ("DELETE", &|t| t.write("DELETE FROM qi_t WHERE id = 3")),
        ("qualified, from another schema", &|t| {
            t.write("USE qi_other");
            t.write(&format!("UPDATE {TEST_DB}.qi_t SET v = 'd' WHERE id = 1"));
            t.write(&format!("USE {TEST_DB}"));
        }),
        ("prepared", &|t| {
            t.writer
                .exec_drop("UPDATE qi_t SET v = ? WHERE id = 1", ("e",))
                .unwrap()
        }),
        ("multi-statement", &|t| {
            t.write("SELECT 1; UPDATE qi_t SET v = 'f' WHERE id = 1")
        }),
        ("CALL", &|t| t.write("CALL qi_p('g')")),
    ];
    for (i, (what, step)) in steps.into_iter().enumerate() {
        // The change that shows is the one behind the funnel's back: the
        // write through the funnel only has to make the entry stale.
        step(&mut t);
        let want = t.now();
        assert_eq!(t.read(), (want.clone(), false), "after {what}");
        assert_eq!(t.read(), (want.clone(), true), "after {what}, cached again");
        t.behind(&format!("hidden{i}"));
        assert_eq!(t.read(), (want, true), "after {what}, hidden");
    }
    let cached = t.read().0;
    // Another table, and a table of the same name in another schema.
    t.write("INSERT INTO qi_u VALUES (1)");
    t.write("USE qi_other");
    t.write("UPDATE qi_t SET v = 'other2' WHERE id = 1");
    t.write(&format!("USE {TEST_DB}"));
    assert_eq!(t.read(), (cached, true), "unrelated writes");
    // In a transaction: reads of its table are not cached until it ends,
    // nor served from an entry stored before it.
    t.write("BEGIN");
    t.write("UPDATE qi_t SET v = 'in_tx' WHERE id = 1");
    let committed = t.now();
    assert_eq!(t.read(), (committed.clone(), false));
    assert_eq!(t.read(), (committed, false), "not stored meanwhile");
    t.write("COMMIT");
    assert_eq!(t.read(), ("in_tx".into(), false));
    assert_eq!(t.read(), ("in_tx".into(), true));
    // Ten writes (`USE`, `BEGIN`, `COMMIT` are none), two unrelated.
    assert_eq!(t.cache_count("invalidations"), 10);
    assert!(t.cache_count("invalidated") >= 9);
    // The rule's own count: an entry found stale after each of the 7 steps
    // and after the transaction.
    let mut a = common::admin_console(t.f.admin_port, "admin", ADMIN_PW);
    let rows = common::admin::query(&mut a, "SHOW RULES");
    let qi = rows
        .iter()
        .find(|r| r.get("rule").cloned().flatten().as_deref() == Some("qi"))
        .expect("rule qi");
    assert_eq!(
        qi.get("invalidated").cloned().flatten().as_deref(),
        Some("8"),
        "{qi:?}"
    );
    let metrics = common::stats::get_ok(t.f.stats_port, "/metrics");
    let scrape = common::stats::parse_metrics(&metrics);
    let invalidations = scrape
        .samples
        .iter()
        .find(|s| s.metric == "funnel_result_cache_invalidations_total")
        .map(common::stats::sample_value)
        .unwrap_or(0.0);
    assert_eq!(invalidations, 10.0, "{metrics}");
}

/// `cache_invalidation = false`: a write through the funnel leaves cached
/// reads of its table as they were (the TTL is the only bound).
#[test]
fn without_invalidation_only_the_ttl_bounds_staleness() {
    let mut t = Invalidation::start(false, "qi_n");
    assert_eq!(t.read(), ("a".into(), false));
    t.write("UPDATE qi_n SET v = 'b' WHERE id = 1");
    assert_eq!(t.read(), ("a".into(), true));
    assert_eq!(t.cache_count("invalidations"), 0);
}

/// `digest` matches an execute of a prepared statement whose text has that
/// shape (the `mysql` crate's `exec` prepares on the server), as it
/// matches a query; another shape does not match.
#[test]
fn digest_matches_prepared_statements() {
    table("qr_dg");
    let f =
        start("[rule dg]\ndigest = \"SELECT v FROM qr_dg WHERE id = ?\"\ncache_ttl_ms = 60000\n");
    let mut c = f.f.conn(USER_A, PASS_A);
    let exec = |c: &mut Conn, sql: &str, id: i64| -> String {
        c.exec_first::<String, _, _>(sql, (id,))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_default()
    };
    let sql = "SELECT v FROM qr_dg WHERE id = ?";
    assert_eq!(exec(&mut c, sql, 1), "v0");
    assert_eq!(exec(&mut c, sql, 1), "v0");
    assert_eq!(f.rule("dg"), (2, 1), "the second execute from the cache");
    // Spacing as SHOW QUERIES normalizes it.
    assert_eq!(exec(&mut c, "SELECT v  FROM qr_dg\nWHERE id = ?", 2), "w");
    assert_eq!(f.rule("dg").0, 3);
    // The query of the same shape.
    assert_eq!(value(&mut c, "SELECT v FROM qr_dg WHERE id = 2"), "w");
    assert_eq!(f.rule("dg").0, 4);
    assert_eq!(
        exec(&mut c, "SELECT v FROM qr_dg WHERE id = ? OR id = 0", 1),
        "v0"
    );
    assert_eq!(f.rule("dg").0, 4, "another shape");
}

/// A table whose three-way join is a slow, deterministic, cacheable read
/// (mysqld takes at least `at_least` for it, checked).
fn slow_read(name: &str, at_least: Duration) -> String {
    common::admin_sql(&format!(
        "DROP TABLE IF EXISTS {TEST_DB}.{name}; \
         CREATE TABLE {TEST_DB}.{name} (id INT PRIMARY KEY); \
         INSERT INTO {TEST_DB}.{name} WITH RECURSIVE s(n) AS \
         (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 250) SELECT n FROM s"
    ));
    let sql = format!(
        "SELECT CONCAT(COUNT(*), ' ', SUM(a.id + b.id - c.id)) FROM {name} a, {name} b, {name} c"
    );
    let began = Instant::now();
    value(&mut common::mysql_direct(USER_A, PASS_A), &sql);
    let took = began.elapsed();
    assert!(took > at_least, "too fast to wait for: {took:?}");
    sql
}

/// A read that waits for the same read of another client (coalescing)
/// gets ERR 1969 after its pool's queue_timeout_ms, like a queued command,
/// while the other client gets its answer; then the answer is cached.
#[test]
fn a_coalesced_read_gives_up_after_queue_timeout_ms() {
    let sql = slow_read("qr_slow", Duration::from_millis(500));
    let f = start_with(
        "queue_timeout_ms = 200",
        "[rule slow]\npattern = \"qr_slow\"\ncache_ttl_ms = 60000\n",
    );
    let mut leader = f.f.conn(USER_A, PASS_A);
    let mut waiter = f.f.conn(USER_A, PASS_A);
    let began = Instant::now();
    let leading = {
        let sql = sql.clone();
        std::thread::spawn(move || (value(&mut leader, &sql), began.elapsed()))
    };
    std::thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    let r = waiter.query_first::<String, _>(&sql);
    let waited = asked.elapsed();
    let (code, state, message) = common::sql::server_error(r);
    assert_eq!((code, state.as_str()), (1969, "70100"), "{message}");
    assert!(
        message.contains("same read of another client")
            && message.contains("queue_timeout_ms = 200"),
        "{message}"
    );
    let (answer, leader_took) = leading.join().unwrap();
    assert!(
        waited >= Duration::from_millis(180) && waited + Duration::from_millis(100) < leader_took,
        "waited {waited:?}, the read took {leader_took:?}"
    );
    assert_eq!(f.rule("slow"), (2, 1), "the waiter was coalesced");
    // The connection goes on, and the answer is cached.
    assert_eq!(value(&mut waiter, &sql), answer);
    assert_eq!(f.rule("slow"), (3, 2));
}

/// The read waited for ends without an answer (`KILL QUERY` of its
/// client): the waiting read runs on its own and gets mysqld's answer.
#[test]
fn a_coalesced_read_runs_when_the_read_it_waits_for_is_killed() {
    let sql = slow_read("qr_slow_kill", Duration::from_millis(500));
    let f = start_with(
        "queue_timeout_ms = 20000",
        "[rule slow]\npattern = \"qr_slow_kill\"\ncache_ttl_ms = 60000\n",
    );
    let want = value(&mut common::mysql_direct(USER_A, PASS_A), &sql);
    let mut leader = f.f.conn(USER_A, PASS_A);
    let leader_id = leader.connection_id();
    let mut waiter = f.f.conn(USER_A, PASS_A);
    let leading = {
        let sql = sql.clone();
        std::thread::spawn(move || leader.query_first::<String, _>(&sql))
    };
    std::thread::sleep(Duration::from_millis(100));
    let waiting = {
        let sql = sql.clone();
        std::thread::spawn(move || value(&mut waiter, &sql))
    };
    std::thread::sleep(Duration::from_millis(100));
    f.f.conn(USER_A, PASS_A)
        .query_drop(format!("KILL QUERY {leader_id}"))
        .unwrap();
    let (code, _, _) = common::sql::server_error(leading.join().unwrap());
    assert_eq!(code, 1317);
    assert_eq!(waiting.join().unwrap(), want);
    assert_eq!(f.rule("slow"), (2, 1), "the waiter was coalesced");
}

/// Randomized, concurrent: writers through the funnel raise rows' values
/// (text, prepared, in a transaction) while readers through the funnel
/// read them with a rule caching for a minute; a read never returns less
/// than what a write completed before the read began had set (without
/// invalidation it would, for up to the TTL), and reads are served from
/// the cache in between.
#[test]
fn concurrent_writes_through_the_funnel_are_never_hidden_by_the_cache() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    const ROWS: usize = 4;
    common::admin_sql(&format!(
        "DROP TABLE IF EXISTS {TEST_DB}.qi_r; \
         CREATE TABLE {TEST_DB}.qi_r (id INT PRIMARY KEY, v BIGINT NOT NULL); \
         INSERT INTO {TEST_DB}.qi_r VALUES (0, 0), (1, 0), (2, 0), (3, 0)"
    ));
    let f = start("[rule qi_r]\npattern = \"qi_r\"\ncache_ttl_ms = 60000\n");
    let seed = random_seed(0x5eed_0019);
    println!("FUNNEL_RANDOM_SEED={seed}");
    // Per row: the least value a read that begins now must see.
    let floor = Arc::new(Mutex::new([0u64; ROWS]));
    let next = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (floor, next, stop) = (floor.clone(), next.clone(), stop.clone());
            let mut c = f.f.conn(USER_A, PASS_A);
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (w + 1));
                while !stop.load(Ordering::Relaxed) {
                    let id = rng.below(ROWS);
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let update = format!("UPDATE qi_r SET v = {n} WHERE id = {id} AND v < {n}");
                    match rng.below(3) {
                        0 => c.query_drop(&update).unwrap(),
                        1 => c
                            .exec_drop("UPDATE qi_r SET v = ? WHERE id = ? AND v < ?", (n, id, n))
                            .unwrap(),
                        _ => {
                            c.query_drop("BEGIN").unwrap();
                            c.query_drop(&update).unwrap();
                            std::thread::sleep(Duration::from_millis(rng.below(20) as u64));
                            c.query_drop("COMMIT").unwrap();
                        }
                    }
                    let mut fl = floor.lock().unwrap();
                    fl[id] = fl[id].max(n);
                    drop(fl);
                    std::thread::sleep(Duration::from_millis(rng.below(30) as u64));
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3u64)
        .map(|r| {
            let (floor, stop) = (floor.clone(), stop.clone());
            let mut c = f.f.conn(USER_A, PASS_A);
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (r + 100));
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = rng.below(ROWS);
                    let least = floor.lock().unwrap()[id];
                    let sql = format!("SELECT v FROM qi_r WHERE id = {id}");
                    let v: u64 = c.query_first(&sql).unwrap().unwrap();
                    assert!(
                        v >= least,
                        "{sql} gave {v}, a completed write had set {least}"
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let (hits, cached) = f.rule("qi_r");
    println!("{reads} reads, {hits} hits, {cached} from the cache");
    assert!(
        cached > 0 && cached < hits,
        "{cached} of {hits} from the cache"
    );
}

/// A write whose client leaves while mysqld still runs it (PyMySQL's read
/// timeout) is over only when mysqld is done with it: reads meanwhile are
/// not stored, so the value it commits shows once it is done. (Today the
/// funnel notices such a departure when the answer comes; the write is
/// over for the cache no sooner either way.)
#[test]
fn a_write_whose_client_left_mid_statement_still_makes_reads_stale() {
    let mut t = Invalidation::start(true, "qi_l");
    assert_eq!(t.read(), ("a".into(), false));
    assert_eq!(t.read(), ("a".into(), true));
    let script = format!(
        r#"
import pymysql
c = pymysql.connect(host="127.0.0.1", port={port}, user="{USER_A}", password="{PASS_A}",
                    database="{TEST_DB}", read_timeout=0.3, autocommit=True)
try:
    c.cursor().execute("UPDATE qi_l SET v = IF(SLEEP(1.5), 'x', 'b') WHERE id = 1")
    print("FINISHED")
except pymysql.err.OperationalError as e:
    print("LEFT", e.args[0])
"#,
        port = t.f.f.port
    );
    let out = common::clients::python_ok(&script, &[]);
    assert!(out.contains("LEFT"), "{out}");
    let left = Instant::now();
    let mut during = Vec::new();
    while left.elapsed() < Duration::from_millis(2000) {
        during.push(t.read());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(t.now(), "b", "mysqld ran the statement to its end");
    assert_eq!(t.read().0, "b", "reads during it: {during:?}");
}
