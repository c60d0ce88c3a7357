//! Pipelined backends (`[backend] pipeline_depth`): many clients at once on
//! one backend connection, several commands in flight on it.
//!
//! - A randomized twin test: concurrent clients each run a random mix of
//!   pipelinable reads (every answer unique to its client and step) and
//!   session-changing statements; every answer through the funnel must
//!   equal that of the client's twin, a direct connection.
//! - The trouble cases: clients that leave with their command in flight, a
//!   backend killed with several commands in flight, `KILL QUERY` of a
//!   pipelined client's read ahead of and behind others.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::rng::{random_seed, Rng};
use common::{FunnelConfig, FunnelProcess, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;
use mysql::{Conn, Row, Value};

/// All rows of a statement's answer, or its error code.
fn answer(c: &mut Conn, sql: &str) -> Result<Vec<Vec<Value>>, String> {
    c.query::<Row, _>(sql)
        .map(|rows| rows.into_iter().map(|r| r.unwrap()).collect())
        .map_err(|e| match e {
            mysql::Error::MySqlError(m) => format!("ERR {}", m.code),
            other => format!("client error: {other}"),
        })
}

/// `funnel_pipelined_total`, summed over pools, from the stats port.
fn pipelined(stats_port: u16) -> u64 {
    let r = common::stats::request(stats_port, "GET", "/metrics");
    r.body
        .lines()
        .filter(|l| l.starts_with("funnel_pipelined_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A funnel with one backend connection for user A (so that concurrent
/// clients queue and pipeline), `depth` commands in flight at most.
fn start(depth: usize, stats_port: u16) -> FunnelProcess {
    FunnelConfig::user_a()
        .funnel("max_client_connections = 1000")
        .backend(&format!("pipeline_depth = {depth}"))
        .pool("connections = 1\nmax_pinned_backends = 64")
        .stats(stats_port)
        .rust_log(&std::env::var("PIPE_LOG").unwrap_or("warn".into()))
        .start()
}

/// The table the reads read; created once per run (the tests run at once).
fn fixture() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        common::admin_sql("CREATE OR REPLACE TABLE funnel_test.pipe_t (id INT PRIMARY KEY, v INT)");
        common::admin_sql(
            "INSERT INTO funnel_test.pipe_t SELECT seq, seq * 7 % 101 FROM funnel_test.seq_1_to_1000",
        );
    });
}

/// The twin test's statements: `{who}` names the client and step (so that
/// an answer handed to the wrong client differs), `{n}` is a random number,
/// `{d}` a digit (1-9). Plain clients run the first `PLAIN` only (reads, and
/// `SHOW WARNINGS` after them): their sessions stay alike, so they pipeline;
/// the others run them all, changing their sessions.
const PLAIN: usize = 11;
const MIX: &[&str] = &[
    // Pipelinable reads.
    "SELECT {n} AS n, '{who}' AS who",
    "SELECT id, v, '{who}' AS who FROM funnel_test.pipe_t WHERE id BETWEEN {n} AND {n} + {d} ORDER BY id",
    "SELECT COUNT(*), SUM(v), '{who}' FROM funnel_test.pipe_t WHERE id > {n}",
    "SELECT REPEAT('{who}', {n} * 10) AS big",
    "SELECT id, REPEAT(CHAR(65 + v % 26), 500), '{who}' FROM funnel_test.pipe_t WHERE id <= {d} * 20",
    "SELECT * FROM funnel_test.pipe_missing_{d}",
    "SELECT 1/0 AS w, '{who}' AS who",
    "SELECT CAST('x{n}' AS INT) AS c, '{who}' AS who",
    "SELECT {n} AS n, '{who}' AS who",
    "SELECT id, v, '{who}' AS who FROM funnel_test.pipe_t WHERE id BETWEEN {n} AND {n} + {d} ORDER BY id",
    "SHOW WARNINGS",
    // Session changes: clients' fingerprints differ from the backend's.
    "SET time_zone = '+0{d}:00'",
    "SET time_zone = DEFAULT",
    "SELECT @@time_zone, '{who}'",
    "SET NAMES latin1",
    "SET NAMES utf8mb4",
    "USE mysql",
    "USE funnel_test",
    "SELECT DATABASE(), '{who}'",
    "SET @v = {n}",
    "SELECT @v, '{who}'",
    "SET @v = NULL",
    "BEGIN",
    "COMMIT",
    "SELECT @@in_transaction, '{who}'",
];

const THREADS: usize = 12;
const PAIRS_PER_THREAD: usize = 3;
const STEPS_PER_THREAD: usize = 300;

#[test]
fn pipelined_answers_match_direct_connections() {
    let db = common::mariadb();
    fixture();
    let stats_port = common::free_port();
    let funnel = Arc::new(start(4, stats_port));
    let seed = random_seed(0x91be_11ed_u64);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let funnel = Arc::clone(&funnel);
            thread::spawn(move || {
                let mut rng = Rng((seed ^ (t as u64 * 0x9e37_79b9)) | 1);
                let mut pairs: Vec<(Conn, Conn)> = (0..PAIRS_PER_THREAD)
                    .map(|_| {
                        let mut f = funnel.conn(USER_A, PASS_A);
                        let mut d = db.conn(USER_A, PASS_A);
                        f.query_drop(format!("USE {TEST_DB}")).expect("funnel USE");
                        d.query_drop(format!("USE {TEST_DB}")).expect("direct USE");
                        (f, d)
                    })
                    .collect();
                for step in 0..STEPS_PER_THREAD {
                    let p = rng.below(PAIRS_PER_THREAD);
                    let n = rng.below(1000);
                    let plain = t % 3 != 0;
                    let template = MIX[rng.below(if plain { PLAIN } else { MIX.len() })];
                    let sql = template
                        .replace("{who}", &format!("t{t}p{p}s{step}"))
                        .replace("{n}", &n.to_string())
                        .replace("{d}", &(n % 9 + 1).to_string());
                    let (f, d) = &mut pairs[p];
                    let rf = answer(f, &sql);
                    let rd = answer(d, &sql);
                    if sql == "SHOW WARNINGS" && rf == Ok(Vec::new()) {
                        // The documented difference: the warnings of a
                        // statement that ran with another command in
                        // flight behind it are not kept. Never another
                        // client's: those would differ from the twin's.
                        continue;
                    }
                    assert_eq!(
                        rf, rd,
                        "seed {seed} thread {t} step {step} pair {p}: {sql}: funnel answer differs from direct"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a client thread failed");
    }
    let n = pipelined(stats_port);
    eprintln!("[pipeline] twin test: {n} commands pipelined (seed {seed})");
    assert!(
        n > 100,
        "only {n} commands were pipelined: the test proves nothing"
    );
}

/// A read whose answer is unique to (client, i), and that answer.
fn unique_read(client: usize, i: u64) -> (String, String) {
    let tag = format!("c{client}i{i}");
    (
        format!("SELECT CONCAT('{tag}', '-', COUNT(*)) FROM funnel_test.pipe_t WHERE id <= {i} % 900 + 10"),
        format!("{tag}-{}", i % 900 + 10),
    )
}

/// Readers that check every answer, in threads, until `stop`.
fn readers(
    funnel: &Arc<FunnelProcess>,
    n: usize,
    stop: &Arc<AtomicBool>,
    tolerate_lost: bool,
) -> Vec<thread::JoinHandle<(u64, u64)>> {
    (0..n)
        .map(|client| {
            let funnel = Arc::clone(funnel);
            let stop = Arc::clone(stop);
            thread::spawn(move || {
                let mut c = funnel.conn(USER_A, PASS_A);
                let (mut ok, mut lost) = (0u64, 0u64);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (sql, want) = unique_read(client, i);
                    match c.query_first::<String, _>(&sql) {
                        Ok(got) => {
                            assert_eq!(
                                got.as_deref(),
                                Some(want.as_str()),
                                "client {client}: {sql}"
                            );
                            ok += 1;
                        }
                        Err(e) if tolerate_lost => {
                            // The head's answer had started when its
                            // backend died: as on the one-command path.
                            lost += 1;
                            eprintln!("[pipeline] client {client}: {e}");
                            c = funnel.conn(USER_A, PASS_A);
                        }
                        Err(e) => panic!("client {client}: {sql}: {e}"),
                    }
                }
                (ok, lost)
            })
        })
        .collect()
}

#[test]
fn clients_leaving_mid_pipeline_leave_the_others_answered() {
    fixture();
    let stats_port = common::free_port();
    let funnel = Arc::new(start(4, stats_port));
    let stop = Arc::new(AtomicBool::new(false));
    let readers = readers(&funnel, 8, &stop, false);
    // Leavers: a read of a bigger answer, then gone before it arrives (a
    // read timeout of 1 ms drops the connection).
    let left = Arc::new(AtomicU64::new(0));
    let leavers: Vec<_> = (0..4)
        .map(|_| {
            let funnel = Arc::clone(&funnel);
            let left = Arc::clone(&left);
            thread::spawn(move || {
                for _ in 0..60 {
                    let opts = mysql::OptsBuilder::from_opts(funnel.opts(USER_A, PASS_A))
                        .read_timeout(Some(Duration::from_millis(1)));
                    let Ok(mut c) = Conn::new(opts) else {
                        continue;
                    };
                    let _ = c.query_drop(
                        "SELECT id, REPEAT('x', 2000) FROM funnel_test.pipe_t WHERE id <= 300",
                    );
                    drop(c);
                    left.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in leavers {
        h.join().expect("a leaver failed");
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for h in readers {
        match h.join() {
            Ok((ok, _)) => answered += ok,
            Err(_) => panic!(
                "a reader failed; the funnel's log:\n{}",
                funnel.log_tail(3_000_000)
            ),
        }
    }
    // The backend is still good: a fresh client is answered.
    let mut c = funnel.conn(USER_A, PASS_A);
    let (sql, want) = unique_read(99, 1);
    assert_eq!(c.query_first::<String, _>(&sql).unwrap(), Some(want));
    let n = pipelined(stats_port);
    eprintln!(
        "[pipeline] {} clients left mid-answer, {answered} reads answered, {n} pipelined",
        left.load(Ordering::Relaxed)
    );
    assert!(n > 50, "only {n} commands were pipelined");
}

#[test]
fn a_backend_killed_with_commands_in_flight_loses_no_read() {
    let db = common::mariadb();
    fixture();
    let stats_port = common::free_port();
    let funnel = Arc::new(start(4, stats_port));
    let stop = Arc::new(AtomicBool::new(false));
    let readers = readers(&funnel, 10, &stop, true);
    thread::sleep(Duration::from_millis(300));
    let mut kills = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        for id in db.threads_of(USER_A, Some("SELECT CONCAT")) {
            // Only the funnel's backends run these reads.
            let _ = db.admin_conn().query_drop(format!("KILL {id}"));
            kills += 1;
        }
        thread::sleep(Duration::from_millis(40));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut lost) = (0, 0);
    for h in readers {
        let (o, l) = h.join().expect("a reader got a wrong answer");
        ok += o;
        lost += l;
    }
    let n = pipelined(stats_port);
    eprintln!("[pipeline] {kills} backend kills: {ok} reads answered, {lost} lost mid-answer, {n} pipelined");
    assert!(kills >= 5, "only {kills} kills landed");
    assert!(n > 50, "only {n} commands were pipelined");
    // Most reads were retried elsewhere; only a head whose answer had
    // started may be lost (its client is closed, as on the one-command path).
    assert!(lost <= kills, "{lost} reads lost for {kills} kills");
}

/// A slow read the rule lets pipeline (a plain read of a sequence table).
const SLOW_READ: &str = "SELECT COUNT(*) FROM funnel_test.seq_1_to_150000000 WHERE seq % 7 = 3";
const SLOW_COUNT: u64 = 21428572;

/// What a client's read got: its rows' value, or the error.
type Got<T> = Result<Option<T>, String>;

/// Client `a` runs `SLOW_READ`; once it runs, clients `b` and `c` send quick
/// reads, which go behind it on the only connection; then `KILL QUERY` of
/// `victim` (0 = a, 1 = b). What each got.
fn kill_in_pipeline(
    funnel: &Arc<FunnelProcess>,
    stats_port: u16,
    victim: usize,
) -> (Got<u64>, Vec<Got<String>>) {
    let db = common::mariadb();
    // The user's privileges, which a KILL is answered by, are learnt now
    // (on the only connection, which the slow read will hold).
    let mut killer = funnel.conn(USER_A, PASS_A);
    killer.query_drop("SHOW PROCESSLIST").unwrap();
    let mut ids = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut c = funnel.conn(USER_A, PASS_A);
        let id: u64 = c.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
        ids.push(id);
        conns.push(c);
    }
    let mut quick: Vec<Conn> = conns.split_off(1);
    let mut a = conns.pop().unwrap();
    let started = Instant::now();
    let slow = thread::spawn(move || {
        let r = a
            .query_first::<u64, _>(SLOW_READ)
            .map_err(|e| e.to_string());
        eprintln!("[pipeline] slow read: {r:?} after {:?}", started.elapsed());
        r
    });
    assert!(
        common::wait_until(Duration::from_secs(10), || !db
            .threads_of(USER_A, Some("SELECT COUNT(*) FROM funnel_test.seq_1"))
            .is_empty()),
        "the slow read does not run"
    );
    let before = pipelined(stats_port);
    let quick: Vec<_> = quick
        .drain(..)
        .enumerate()
        .map(|(i, mut c)| {
            thread::spawn(move || {
                c.query_first::<String, _>(format!("SELECT 'quick{i}'"))
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    assert!(
        common::wait_until(Duration::from_secs(5), || pipelined(stats_port)
            >= before + 2),
        "the quick reads were not pipelined behind the slow one"
    );
    killer
        .query_drop(format!("KILL QUERY {}", ids[victim]))
        .unwrap();
    let slow = slow.join().unwrap();
    let quick = quick.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!(
        "[pipeline] KILL QUERY of client {victim}: slow read {slow:?}, quick reads {quick:?}"
    );
    (slow, quick)
}

#[test]
fn kill_query_never_stops_another_clients_pipelined_read() {
    fixture();
    let stats_port = common::free_port();
    let funnel = Arc::new(start(4, stats_port));
    let interrupted =
        |r: &Result<Option<String>, String>| r.as_ref().is_err_and(|e| e.contains("1317"));

    // The victim is behind the slow read: the slow read is not touched.
    let (slow, quick) = kill_in_pipeline(&funnel, stats_port, 1);
    assert_eq!(
        slow,
        Ok(Some(SLOW_COUNT)),
        "KILL QUERY of the read behind it stopped the slow read"
    );
    assert!(
        quick[0] == Ok(Some("quick0".into())) || interrupted(&quick[0]),
        "victim: {:?}",
        quick[0]
    );
    assert_eq!(quick[1], Ok(Some("quick1".into())));

    // The victim is the slow read, others behind it: they are answered, and
    // the slow read ends with its answer or interrupted.
    let (slow, quick) = kill_in_pipeline(&funnel, stats_port, 0);
    assert!(
        slow == Ok(Some(SLOW_COUNT)) || slow.as_ref().is_err_and(|e| e.contains("1317")),
        "slow read: {slow:?}"
    );
    assert_eq!(quick[0], Ok(Some("quick0".into())));
    assert_eq!(quick[1], Ok(Some("quick1".into())));

    // Alone on its connection, the slow read is killed at once.
    let mut killer = funnel.conn(USER_A, PASS_A);
    killer.query_drop("SHOW PROCESSLIST").unwrap();
    let mut a = funnel.conn(USER_A, PASS_A);
    let id: u64 = a.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
    let slow = thread::spawn(move || {
        a.query_first::<u64, _>(SLOW_READ)
            .map_err(|e| e.to_string())
    });
    let db = common::mariadb();
    assert!(common::wait_until(Duration::from_secs(10), || !db
        .threads_of(USER_A, Some("SELECT COUNT(*) FROM funnel_test.seq_1"))
        .is_empty()));
    let t0 = Instant::now();
    killer.query_drop(format!("KILL QUERY {id}")).unwrap();
    let slow = slow.join().unwrap();
    assert!(slow.as_ref().is_err_and(|e| e.contains("1317")), "{slow:?}");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

/// Backend connections of the pools in `state` (`idle`, `busy`, `pinned`,
/// ...), from the stats port.
fn backends_in(stats_port: u16, state: &str) -> u64 {
    let r = common::stats::request(stats_port, "GET", "/metrics");
    let label = format!("state=\"{state}\"");
    r.body
        .lines()
        .filter(|l| l.starts_with("funnel_pool_backends{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The stall `tests/isolation.rs` met with pipelining on: a read that
/// fails behind a slow one keeps its connection for its error (a pin) as
/// its answer ends, while the connection a client with a temporary table
/// left is idle beyond `connections`. The command that waited for the
/// slow read must run then, not wait out its queue timeout.
#[test]
fn a_command_waiting_behind_a_pipelined_read_runs_when_that_read_pins() {
    fixture();
    let db = common::mariadb();
    let stats_port = common::free_port();
    let funnel = FunnelConfig::user_a()
        .backend("pipeline_depth = 4")
        .pool("connections = 1\nmax_pinned_backends = 64\nqueue_timeout_ms = 6000")
        .stats(stats_port)
        .rust_log(&std::env::var("PIPE_LOG").unwrap_or("warn".into()))
        .start();
    let mut holder = funnel.conn(USER_A, PASS_A);
    let mut slow_client = funnel.conn(USER_A, PASS_A);
    let mut failing = funnel.conn(USER_A, PASS_A);
    let mut waiting = funnel.conn(USER_A, PASS_A);
    // The holder keeps the connection; the pool opens another.
    holder
        .query_drop("CREATE TEMPORARY TABLE funnel_test.pipe_held (x INT)")
        .unwrap();
    let slow = thread::spawn(move || {
        slow_client
            .query_first::<u64, _>(PIN_SLOW_READ)
            .map_err(|e| e.to_string())
    });
    assert!(
        common::wait_until(Duration::from_secs(10), || !db
            .threads_of(USER_A, Some("SELECT COUNT(*) FROM funnel_test.seq_1"))
            .is_empty()),
        "the slow read does not run"
    );
    let before = pipelined(stats_port);
    let failed = thread::spawn(move || {
        let r = answer(&mut failing, "SELECT * FROM funnel_test.pipe_missing_0");
        (failing, r)
    });
    assert!(
        common::wait_until(Duration::from_secs(5), || pipelined(stats_port) > before),
        "the failing read was not pipelined behind the slow one"
    );
    // The holder leaves: its connection, reset, stays open (idle) for the
    // next pin, beyond `connections`.
    drop(holder);
    assert!(
        common::wait_until(Duration::from_secs(5), || backends_in(stats_port, "idle")
            == 1),
        "the holder's connection did not come back idle"
    );
    // Waits for the slow read (one connection serves commands at once).
    let t0 = Instant::now();
    let got = waiting
        .query_first::<String, _>("SELECT 'waited'")
        .map_err(|e| e.to_string());
    let waited = t0.elapsed();
    let slow = slow.join().unwrap();
    let (_failing, failed) = failed.join().unwrap();
    eprintln!("[pipeline] slow read {slow:?}, failing read {failed:?}, waiting read {got:?} after {waited:?}");
    assert_eq!(slow, Ok(Some(PIN_SLOW_COUNT)));
    assert_eq!(failed, Err("ERR 1146".into()));
    assert_eq!(
        got,
        Ok(Some("waited".into())),
        "the waiting read did not run when the failing read's pin left room"
    );
}

/// A plain read of about a second (pipelinable).
const PIN_SLOW_READ: &str = "SELECT COUNT(*) FROM funnel_test.seq_1_to_30000000 WHERE seq % 7 = 3";
const PIN_SLOW_COUNT: u64 = 4285714;
