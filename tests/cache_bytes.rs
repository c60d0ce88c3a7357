//! The result cache answers byte for byte as mysqld did (issue "Query
//! rules": "the exactness of cached answers, byte-for-byte against mysqld,
//! for text and binary protocol, with and without CLIENT_DEPRECATE_EOF").
//!
//! Real client libraries run the same statement three times through a TCP
//! relay that records what they receive: once directly against mysqld, once
//! through a funnel with a cache rule. Through the funnel the first answer
//! comes from mysqld and the next two from the cache (the stats port says
//! so); all three must be the bytes mysqld sent the direct connection. The
//! Rust `mysql` crate negotiates CLIENT_DEPRECATE_EOF (results end with an
//! OK), PyMySQL does not (EOF packets); the crate's `exec` uses the binary
//! protocol (COM_STMT_EXECUTE).

mod common;

use common::recorder::{packets, Recorder};
use common::{FunnelConfig, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;

const TABLE: &str = "cache_bytes_t";
const SELECT: &str =
    "SELECT id, name, price, note, made FROM cache_bytes_t WHERE id <= 3 ORDER BY id";

fn setup() {
    common::admin_sql(&format!(
        "CREATE TABLE IF NOT EXISTS {TEST_DB}.{TABLE} (id INT PRIMARY KEY, name VARCHAR(20), \
           price DECIMAL(8,2), note TEXT NULL, made DATETIME);\n\
         REPLACE INTO {TEST_DB}.{TABLE} VALUES (1, 'one', 1.50, NULL, '2026-01-02 03:04:05'), \
           (2, 'twö', 22.00, 'x', '2026-02-03 04:05:06'), (3, '', 0.01, '', '2026-03-04 05:06:07')"
    ));
}

/// The answers a client received after its login: one list of packets per
/// command (an answer starts with sequence id 1).
fn answers(received: &[u8]) -> Vec<Vec<(u8, Vec<u8>)>> {
    let all = packets(received);
    let login_ok = all
        .iter()
        .position(|(seq, p)| *seq >= 2 && p.first() == Some(&0))
        .expect("no login OK");
    let mut out: Vec<Vec<(u8, Vec<u8>)>> = Vec::new();
    for (seq, p) in all.into_iter().skip(login_ok + 1) {
        if seq == 1 || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(last) = out.last_mut() {
            last.push((seq, p));
        }
    }
    out
}

/// A funnel for funnel_a that caches `SELECT`s of the table for a minute,
/// with a stats port; the port of its stats.
fn caching_funnel() -> (common::FunnelProcess, u16) {
    let stats_port = common::free_port();
    let funnel = FunnelConfig::user_a()
        .pool("connections = 2")
        .stats(stats_port)
        .section(&format!(
            "[rule cached]\npattern = {TABLE}\ncache_ttl_ms = 60000"
        ))
        .start();
    (funnel, stats_port)
}

/// The result cache's hits so far.
fn cache_hits(stats_port: u16) -> u64 {
    let json = common::stats::get(stats_port, "/stats.json?detail=0").1;
    let at = json
        .find("\"result_cache\"")
        .expect("result_cache in stats.json");
    let rest = &json[at..];
    let hits = rest.find("\"hits\":").expect("hits") + "\"hits\":".len();
    rest[hits..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number of hits")
}

/// `run` on a client connected to 127.0.0.1:`port` through a recorder;
/// what it received, as answers.
fn recorded(port: u16, run: impl FnOnce(u16)) -> Vec<Vec<(u8, Vec<u8>)>> {
    let relay = Recorder::start(port);
    run(relay.port);
    answers(&relay.finish().received)
}

fn rust_crate(port: u16, binary: bool) {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some(USER_A))
        .pass(Some(PASS_A))
        .db_name(Some(TEST_DB))
        .prefer_socket(false);
    let mut c = mysql::Conn::new(opts).expect("connect");
    let stmt = binary.then(|| c.prep(SELECT).expect("prepare"));
    for _ in 0..3 {
        let rows: Vec<mysql::Row> = match &stmt {
            Some(s) => c.exec(s, ()).expect("execute"),
            None => c.query(SELECT).expect("query"),
        };
        assert_eq!(rows.len(), 3);
    }
}

/// PyMySQL with autocommit on (its default is off, and reads in a
/// transaction are never cached).
fn pymysql(port: u16) {
    let out = common::clients::python(
        "import sys, pymysql\n\
         c = pymysql.connect(host='127.0.0.1', port=int(sys.argv[1]), user=sys.argv[2], \
           password=sys.argv[3], database=sys.argv[4], autocommit=True)\n\
         cur = c.cursor()\n\
         for _ in range(3):\n    cur.execute(sys.argv[5]); assert len(cur.fetchall()) == 3\n\
         c.close()\n",
        &[&port.to_string(), USER_A, PASS_A, TEST_DB, SELECT],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The three answers through the funnel are the direct ones, and the last
/// two came from the cache.
fn check(what: &str, client: impl Fn(u16)) {
    setup();
    let direct = recorded(common::mariadb().port, &client);
    let (funnel, stats_port) = caching_funnel();
    let before = cache_hits(stats_port);
    let through = recorded(funnel.port, &client);
    assert_eq!(
        cache_hits(stats_port) - before,
        2,
        "{what}: the second and third answers were not the cache's"
    );
    // The last answer of each is the close of a prepared statement or
    // nothing (COM_QUIT has none); compare the statements' answers.
    let results = |a: &[Vec<(u8, Vec<u8>)>]| -> Vec<Vec<(u8, Vec<u8>)>> {
        a.iter().rev().take(3).rev().cloned().collect()
    };
    let (d, t) = (results(&direct), results(&through));
    assert_eq!(d.len(), 3, "{what}: direct answers {d:?}");
    assert_eq!(
        d[0], d[1],
        "{what}: mysqld answered the same statement differently"
    );
    for (i, answer) in t.iter().enumerate() {
        assert_eq!(
            answer,
            &d[0],
            "{what}: answer {i} through the funnel differs from mysqld's\n--- funnel log ---\n{}",
            funnel.log_tail(5_000)
        );
    }
}

#[test]
fn cached_text_answers_are_mysqlds_bytes_with_deprecate_eof() {
    check("mysql crate, text", |port| rust_crate(port, false));
}

#[test]
fn cached_binary_answers_are_mysqlds_bytes_with_deprecate_eof() {
    check("mysql crate, binary", |port| rust_crate(port, true));
}

#[test]
fn cached_text_answers_are_mysqlds_bytes_with_eof_packets() {
    if !common::clients::python_has("pymysql") {
        common::clients::skip(
            "cached_text_answers_are_mysqlds_bytes_with_eof_packets",
            "PyMySQL is not installed (bash scripts/test.sh installs it)",
        );
        return;
    }
    check("PyMySQL, text", pymysql);
}
