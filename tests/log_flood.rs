//! Floods of notable events (the "Logs" part of the issue): the funnel's log
//! stays small, every event is either logged or counted in a "suppressed"
//! line, and the stats counters count every event.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, FunnelProcess, PASS_A, USER_A};
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
    let db = common::mariadb();
    let port = common::free_port();
    let admin_port = common::free_port();
    let config = format!(
        "[funnel]\nlisten = 127.0.0.1:{port}\n\n[backend]\naddress = 127.0.0.1:{}\n\n\
         [pool]\nconnections = 1\n\n[user \"{USER_A}\"]\npassword = \"{PASS_A}\"\n\n\
         [admin]\nlisten = 127.0.0.1:{admin_port}\npassword = admin-pw\n",
        db.port
    );
    // Info: the level of a refused login's line.
    let f = FunnelProcess::builder(&config)
        .port(port)
        .rust_log("info")
        .start();
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
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let flood = t0.elapsed();

    // Every event is either a line or counted in a summary line, which comes
    // once its window is over, with no further event of its kind.
    let accounted = |log: &str| {
        (
            tally(log, "refused: Access denied for user", "login refused"),
            tally(log, "closed: Bad handshake", "bad client input"),
        )
    };
    let done = wait_until(WINDOW * 3, || {
        let ((l1, s1, _), (l2, s2, _)) = accounted(&f.log());
        l1 + s1 == FAILED_LOGINS && l2 + s2 == GARBAGE
    });
    let log = f.log();
    let (
        (logins_logged, logins_suppressed, login_summaries),
        (garbage_logged, garbage_suppressed, garbage_summaries),
    ) = accounted(&log);
    assert!(
        done,
        "not every event is accounted for: logins {logins_logged} logged + {logins_suppressed} \
         suppressed of {FAILED_LOGINS}, garbage {garbage_logged} + {garbage_suppressed} of {GARBAGE}\n{log}"
    );
    // At most LINES_PER_WINDOW lines per window the flood spanned.
    let windows = (flood.as_secs_f64() / WINDOW.as_secs_f64()).ceil() as usize + 1;
    for (what, logged, summaries) in [
        ("login", logins_logged, login_summaries),
        ("garbage", garbage_logged, garbage_summaries),
    ] {
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
        added <= 2 * (LINES_PER_WINDOW + 1) * windows + 5,
        "{added} log lines for {} events in {flood:?}:\n{log}",
        FAILED_LOGINS + GARBAGE
    );

    // The counters count every event.
    let admin = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(admin_port)
        .user(Some("admin"))
        .pass(Some("admin-pw"))
        .prefer_socket(false);
    let mut a = mysql::Conn::new(admin).unwrap();
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
        "flood of {FAILED_LOGINS} failed logins and {GARBAGE} garbage connections in {flood:?}: \
         {added} log lines ({logins_logged} + {login_summaries} summaries for logins, \
         {garbage_logged} + {garbage_summaries} for garbage)"
    );
}
