//! Failed logins (issue 16, "Security"): past `auth_failure_threshold`
//! consecutive failures from one address or for one user, the funnel holds
//! further attempts (its ERR 1045 comes late, and so does an OK), one at a
//! time, for a delay that doubles per failure; a successful login ends the
//! hold; an attempt whose hold would outlast `handshake_timeout_ms` gets
//! ERR 1129 unchecked. Refused logins are logged at `warn` with the
//! client's address and port, and counted.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{FunnelConfig, FunnelProcess, PASS_A, PASS_B, USER_A, USER_B};

fn start(db_port: u16, funnel: &str) -> (FunnelProcess, u16) {
    let admin_port = common::free_port();
    let f = FunnelConfig::new()
        .backend_port(db_port)
        .funnel(funnel)
        .pool("connections = 1")
        .admin(admin_port, "admin-pw")
        .rust_log("warn")
        .start();
    (f, admin_port)
}

fn opts_from(f: &FunnelProcess, user: &str, pw: &str, source: &str) -> mysql::Opts {
    mysql::OptsBuilder::from_opts(f.opts(user, pw))
        .bind_address(Some((source.parse::<std::net::IpAddr>().unwrap(), 0)))
        .into()
}

/// A login attempt: its error code (0 for success) and how long it took.
fn attempt(opts: mysql::Opts) -> (u16, Duration) {
    let t = Instant::now();
    let code = match mysql::Conn::new(opts) {
        Ok(_) => 0,
        Err(mysql::Error::MySqlError(e)) => e.code,
        Err(e) => panic!("not an ERR packet: {e:?}"),
    };
    (code, t.elapsed())
}

fn total_counter(admin_port: u16, name: &str) -> u64 {
    let mut a = common::admin_console(admin_port, "admin", "admin-pw");
    common::admin::pool_counter(&mut a, "SHOW STATS", "(total)", name)
}

/// The hold spaces the checks: it counts from the previous failure, which
/// is a little before its client saw the ERR and started the next attempt.
const DELAY: Duration = Duration::from_millis(800 - 100);
/// What an attempt that is not held takes, at most, on a loaded machine.
const UNHELD: Duration = Duration::from_millis(600);

#[test]
fn failed_logins_are_held_one_at_a_time_and_a_success_ends_the_hold() {
    let db = common::mariadb();
    let (f, admin_port) = start(
        db.port,
        "auth_failure_threshold = 2\nauth_failure_delay_ms = 800\n\
         auth_failure_max_delay_ms = 3000\nhandshake_timeout_ms = 10000",
    );
    let wrong_a = || opts_from(&f, USER_A, "wrong", "127.0.0.1");

    // Below the threshold: answered at once.
    for _ in 0..2 {
        let (code, took) = attempt(wrong_a());
        assert_eq!(code, 1045);
        assert!(took < UNHELD, "{took:?}");
    }
    // Past it: held, and longer with each failure.
    let (code, took) = attempt(wrong_a());
    assert_eq!(code, 1045);
    assert!(took >= DELAY, "third failure answered after {took:?}");
    let (code, took) = attempt(wrong_a());
    assert_eq!(code, 1045);
    assert!(took >= 2 * DELAY, "fourth failure answered after {took:?}");

    // Another user from another address is not held meanwhile.
    let (code, took) = attempt(opts_from(&f, USER_B, PASS_B, "127.0.0.2"));
    assert_eq!(code, 0);
    assert!(took < UNHELD, "{took:?}");

    // The right password is held too (it is not checked earlier), then
    // accepted; that ends the hold.
    let (code, took) = attempt(opts_from(&f, USER_A, PASS_A, "127.0.0.1"));
    assert_eq!(code, 0);
    assert!(took >= Duration::from_millis(3000 - 100), "{took:?}");
    let (code, took) = attempt(wrong_a());
    assert_eq!(code, 1045);
    assert!(took < UNHELD, "after a success: {took:?}");

    // Parallel attempts do not help: they are checked one at a time.
    let (code, _) = attempt(wrong_a());
    assert_eq!(code, 1045);
    let t = Instant::now();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let o = wrong_a();
            thread::spawn(move || attempt(o))
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for th in threads {
        let (code, took) = th.join().unwrap();
        assert_eq!(code, 1045);
        slowest = slowest.max(took);
    }
    assert!(
        slowest >= 3 * DELAY && t.elapsed() >= 3 * DELAY,
        "3 parallel attempts past the threshold all answered within {slowest:?}"
    );

    // Logged at warn, with address and port; counted.
    let log = f.log();
    let line = log
        .lines()
        .find(|l| l.contains("refused: Access denied for user 'funnel_a'"))
        .unwrap_or_else(|| panic!("no refused login in the log:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(" from 127.0.0.1:"), "{line}");
    assert_eq!(total_counter(admin_port, "auth_failures"), 9);
    let held = total_counter(admin_port, "auth_held");
    assert_eq!(held, 6, "held attempts");
}

#[test]
fn an_attempt_that_cannot_be_checked_in_time_gets_err_1129() {
    let db = common::mariadb();
    let (f, admin_port) = start(
        db.port,
        "auth_failure_threshold = 1\nauth_failure_delay_ms = 2000\n\
         auth_failure_max_delay_ms = 2000\nhandshake_timeout_ms = 1000",
    );
    let (code, _) = attempt(opts_from(&f, USER_A, "wrong", "127.0.0.1"));
    assert_eq!(code, 1045);
    // Its hold (2 s) would outlast the login's deadline (1 s): refused at
    // once, even with the right password, which is not checked.
    let t = Instant::now();
    let err = mysql::Conn::new(opts_from(&f, USER_A, PASS_A, "127.0.0.1")).unwrap_err();
    let took = t.elapsed();
    match err {
        mysql::Error::MySqlError(e) => {
            assert_eq!((e.code, e.state.as_str()), (1129, "HY000"));
            assert!(e.message.starts_with("funnel: "), "{}", e.message);
        }
        e => panic!("not an ERR packet: {e:?}"),
    }
    assert!(took < UNHELD, "{took:?}");
    // From another address, for another user: unaffected.
    let (code, _) = attempt(opts_from(&f, USER_B, PASS_B, "127.0.0.2"));
    assert_eq!(code, 0);
    // Someone guessing USER_B's password elsewhere does not lock out the
    // address USER_B logged in from; other addresses are held for it.
    let (code, _) = attempt(opts_from(&f, USER_B, "wrong", "127.0.0.3"));
    assert_eq!(code, 1045);
    let (code, took) = attempt(opts_from(&f, USER_B, PASS_B, "127.0.0.2"));
    assert_eq!(code, 0);
    assert!(took < UNHELD, "{took:?}");
    let (code, _) = attempt(opts_from(&f, USER_B, PASS_B, "127.0.0.4"));
    assert_eq!(code, 1129);
    assert_eq!(total_counter(admin_port, "auth_throttled"), 2);
    assert_eq!(total_counter(admin_port, "auth_failures"), 2);
}
