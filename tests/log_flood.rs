//! Floods of notable events (the "Logs" part of the issue): the funnel's log
//! stays small, every event is either logged or counted in a "suppressed"
//! line, and the stats counters count every event. The floods come from a
//! real client library (failed logins, to the funnel and to its admin
//! console) and from garbage instead of a handshake.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, FunnelConfig, USER_A};
use mysql::prelude::Queryable;

/// What `src/server/log_limit.rs` allows per kind of event and window.
const LINES_PER_WINDOW: usize = 10;
const WINDOW: Duration = Duration::from_secs(10);

/// Lines of one kind in the log: (lines logged, lines reported suppressed,
/// number of summary lines).
fn tally(log: &str, line_marker: &str, kind: &str) -> (usize, usize, usize) {
    let logged = log.lines().filter(|l| l.contains(line_marker)).count();
    let summary = format!(" more \"{kind}\" log lines suppressed");
    let mut suppressed = 0;
    let mut summaries = 0;
    for l in log.lines().filter(|l| l.contains(&summary)) {
        let before = &l[..l.find(&summary).unwrap()];
        let n: usize = before
            .rsplit(' ')
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no count in {l:?}"));
        suppressed += n;
        summaries += 1;
    }
    (logged, suppressed, summaries)
}

/// Sends garbage instead of a handshake response and reads until closed.
fn garbage_connection(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: funnel\r\n\r\n");
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

#[test]
fn a_flood_of_failed_logins_and_garbage_leaves_a_bounded_log() {
    const THREADS: usize = 4;
    const FAILED_LOGINS: usize = 2000;
    const GARBAGE: usize = 300;
    const ADMIN_FAILED_LOGINS: usize = 300;
    let admin_port = common::free_port();
    // Refused logins are logged at warn; bad handshakes at info. Logins
    // are not held after failures (auth_failure_delay_ms = 0): this floods
    // the log from one address, tests/auth_throttle.rs tests the holds.
    let f = FunnelConfig::user_a()
        .funnel("auth_failure_delay_ms = 0")
        .pool("connections = 1")
        .admin(admin_port, "admin-pw")
        .rust_log("info")
        .start();
    let port = f.port;
    let lines_at_start = f.log().lines().count();

    let t0 = Instant::now();
    let wrong = mysql::OptsBuilder::from_opts(f.opts(USER_A, "wrong-password"));
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let wrong = wrong.clone();
            thread::spawn(move || {
                for n in 0..FAILED_LOGINS / THREADS {
                    match mysql::Conn::new(wrong.clone()) {
                        Err(mysql::Error::MySqlError(e)) => assert_eq!(e.code, 1045),
                        other => panic!("login {i}/{n}: expected ERR 1045, got {other:?}"),
                    }
                }
            })
        })
        .chain((0..2).map(|_| {
            thread::spawn(move || {
                for _ in 0..GARBAGE / 2 {
                    garbage_connection(port);
                }
            })
        }))
        .chain(std::iter::once(thread::spawn(move || {
            // The admin console's threads have limits of their own.
            for n in 0..ADMIN_FAILED_LOGINS {
                match mysql::Conn::new(common::admin::admin_opts(admin_port, "admin", "wrong")) {
                    Err(mysql::Error::MySqlError(e)) => assert_eq!(e.code, 1045),
                    other => panic!("admin login {n}: expected ERR 1045, got {other:?}"),
                }
            }
        })))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let flood = t0.elapsed();

    // Every event is either a line or counted in a summary line, which comes
    // once its window is over, with no further event of its kind.
    let kinds = [
        (
            " refused: Access denied for user",
            "login refused",
            FAILED_LOGINS,
        ),
        ("closed: Bad handshake", "bad client input", GARBAGE),
        (
            "admin console: Access denied for user",
            "admin login refused",
            ADMIN_FAILED_LOGINS,
        ),
    ];
    let tallies = |log: &str| kinds.map(|(line, kind, _)| tally(log, line, kind));
    let done = wait_until(WINDOW * 3, || {
        tallies(&f.log())
            .iter()
            .zip(&kinds)
            .all(|((logged, suppressed, _), (_, _, events))| logged + suppressed == *events)
    });
    let log = f.log();
    let counted = tallies(&log);
    assert!(
        done,
        "not every event is accounted for: (logged, suppressed, summaries) {counted:?} of {kinds:?}\n{log}"
    );
    // At most LINES_PER_WINDOW lines per window the flood spanned.
    let windows = (flood.as_secs_f64() / WINDOW.as_secs_f64()).ceil() as usize + 1;
    for ((logged, _, summaries), (what, _, _)) in counted.iter().zip(&kinds) {
        let (logged, summaries) = (*logged, *summaries);
        assert!(
            (1..=LINES_PER_WINDOW * windows).contains(&logged),
            "{what}: {logged} lines over {windows} windows"
        );
        assert!(
            (1..=windows).contains(&summaries),
            "{what}: {summaries} summary lines over {windows} windows"
        );
    }
    let added = log.lines().count() - lines_at_start;
    assert!(
        added <= kinds.len() * (LINES_PER_WINDOW + 1) * windows + 5,
        "{added} log lines for {} events in {flood:?}:\n{log}",
        FAILED_LOGINS + GARBAGE + ADMIN_FAILED_LOGINS
    );

    // The counters count every event.
    let mut a = common::admin_console(admin_port, "admin", "admin-pw");
    let rows: Vec<mysql::Row> = a.query("SHOW STATS").unwrap();
    let total = rows
        .iter()
        .find(|r| r.get::<mysql::Value, _>("pool") == Some(mysql::Value::from("(total)")))
        .unwrap_or_else(|| panic!("no (total) row in {rows:?}"));
    let counter = |name: &str| -> u64 {
        let v = total.get::<mysql::Value, _>(name);
        v.clone()
            .and_then(|v| mysql::from_value_opt(v).ok())
            .unwrap_or_else(|| panic!("{name}: {v:?}"))
    };
    assert_eq!(counter("auth_failures"), FAILED_LOGINS as u64);
    assert!(counter("clients_accepted") >= (FAILED_LOGINS + GARBAGE) as u64);
    println!(
        "flood of {FAILED_LOGINS} failed logins, {GARBAGE} garbage connections and \
         {ADMIN_FAILED_LOGINS} failed admin logins in {flood:?}: {added} log lines; \
         (logged, suppressed, summary lines) per kind: {counted:?}"
    );
}
