//! The backend health checker (`funnel::health`) against real servers: a
//! primary and a GTID replica of it (`common::replication`), checked every
//! 150 ms, each report fed to the server's `Rotation` as the engine will.
//! The replica is stopped, started, delayed, frozen and killed, and the
//! reports and rotation states must follow; logins and checks that cannot
//! succeed must say why.

mod common;

use std::net::TcpListener;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::replication::Replication;
use common::{PASS_A, TEST_DB, USER_A};
use funnel::config::BackendAddr;
use funnel::health::{
    spawn_checkers, Checkers, GtidPosition, HealthReport, HealthTarget, OutReason, Rotation,
    RotationState, ServerFacts, ServerRole,
};

const MONITOR: &str = "funnel_monitor";
const MONITOR_PW: &str = "monitor-pw";
const INTERVAL: Duration = Duration::from_millis(150);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_LAG: Duration = Duration::from_secs(1);
/// What a loaded 2-core machine may add to a deadline the checker keeps.
const SLACK: Duration = Duration::from_millis(1500);

fn tcp(port: u16) -> BackendAddr {
    BackendAddr::Tcp(([127, 0, 0, 1], port).into())
}

fn target(
    server: usize,
    address: BackendAddr,
    role: ServerRole,
    user: &str,
    pw: &str,
) -> HealthTarget {
    HealthTarget {
        server,
        name: format!("server{server}"),
        address,
        role,
        user: user.into(),
        password: pw.into(),
        interval: INTERVAL,
        connect_timeout: CONNECT_TIMEOUT,
    }
}

fn facts(report: &HealthReport) -> &ServerFacts {
    match &report.outcome {
        Ok(facts) => facts,
        Err(why) => panic!("server {} is down: {why}", report.server),
    }
}

fn error(report: &HealthReport) -> &str {
    match &report.outcome {
        Err(why) => why,
        Ok(facts) => panic!("server {} is up: {facts:?}", report.server),
    }
}

/// Running checkers whose reports are fed to a `Rotation` per server.
struct Watch {
    reports: Receiver<HealthReport>,
    rotations: Vec<Rotation>,
    /// Every report so far, per server, with the rotation state after it.
    history: Vec<Vec<(HealthReport, RotationState)>>,
    checkers: Option<Checkers>,
}

impl Watch {
    /// Checks `targets` (their `server` is their index) with a rotation
    /// each, with these lag limits.
    fn start(targets: Vec<HealthTarget>, max_lags: &[Option<Duration>]) -> Watch {
        let rotations = targets
            .iter()
            .zip(max_lags)
            .map(|(t, max_lag)| Rotation::new(t.role, *max_lag))
            .collect();
        let history = targets.iter().map(|_| Vec::new()).collect();
        let (tx, reports) = channel();
        let checkers = spawn_checkers(targets, move |report| {
            let _ = tx.send(report);
        });
        Watch {
            reports,
            rotations,
            history,
            checkers: Some(checkers),
        }
    }

    fn state(&self, server: usize) -> &RotationState {
        self.rotations[server].state()
    }

    fn last(&self, server: usize) -> &HealthReport {
        &self.history[server].last().expect("no report yet").0
    }

    /// Takes reports until `done` holds (checked after each); panics after
    /// `timeout`, showing the latest reports.
    fn until(&mut self, what: &str, timeout: Duration, done: impl Fn(&Watch) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(report) => {
                    let server = report.server;
                    self.rotations[server].observe(&report);
                    let state = self.rotations[server].state().clone();
                    self.history[server].push((report, state));
                }
                Err(RecvTimeoutError::Timeout) => {
                    let tail: Vec<String> = self
                        .history
                        .iter()
                        .flat_map(|h| h.iter().rev().take(4).rev())
                        .map(|(r, s)| format!("server {} -> {s}: {:?}", r.server, r.outcome))
                        .collect();
                    panic!(
                        "not within {timeout:?}: {what}; latest reports:\n{}",
                        tail.join("\n")
                    );
                }
                Err(RecvTimeoutError::Disconnected) => panic!("the checkers stopped: {what}"),
            }
        }
    }

    /// Waits for a report of `server` whose check started after `mark`.
    fn fresh_report(&mut self, server: usize, mark: Instant, what: &str) -> &HealthReport {
        self.until(what, Duration::from_secs(10), |w| {
            w.history[server]
                .last()
                .is_some_and(|(r, _)| r.checked_at > mark)
        });
        self.last(server)
    }

    /// How many reports in a row, up to the last, were fit to bring the
    /// replica back (replicating, lag within half the limit).
    fn fit_run(&self, server: usize, max_lag: Duration) -> usize {
        self.history[server]
            .iter()
            .rev()
            .take_while(|(r, _)| {
                r.outcome
                    .as_ref()
                    .is_ok_and(|f| f.replicating && f.lag.is_some_and(|l| l <= max_lag / 2))
            })
            .count()
    }

    /// The server has just come back into rotation, at its second good
    /// report in a row and not before (the rule: RISE = 2).
    fn assert_back_after_rise(&self, server: usize) {
        let h = &self.history[server];
        assert_eq!(h.last().map(|(_, s)| s), Some(&RotationState::InRotation));
        assert!(
            matches!(h[h.len() - 2].1, RotationState::OutOfRotation(_)),
            "one good report is not enough to come back: {:?}",
            h[h.len() - 2]
        );
        assert_eq!(self.fit_run(server, MAX_LAG), 2, "{:?}", &h[h.len() - 3..]);
    }
}

fn out(reason: OutReason) -> RotationState {
    RotationState::OutOfRotation(reason)
}

#[test]
fn health_checks_follow_a_replica_stopped_delayed_frozen_and_killed() {
    let set = Replication::start(1);
    set.account(MONITOR, MONITOR_PW, "SLAVE MONITOR ON *.*");
    let (primary, replica) = (0, 1);
    let mut watch = Watch::start(
        vec![
            target(
                primary,
                tcp(set.primary.port),
                ServerRole::Primary,
                MONITOR,
                MONITOR_PW,
            ),
            target(
                replica,
                tcp(set.replicas[0].port),
                ServerRole::Replica,
                MONITOR,
                MONITOR_PW,
            ),
        ],
        &[None, Some(MAX_LAG)],
    );
    let in_rotation = |server| move |w: &Watch| w.state(server) == &RotationState::InRotation;
    watch.until(
        "the primary in rotation",
        Duration::from_secs(10),
        in_rotation(primary),
    );
    watch.until(
        "the replica in rotation",
        Duration::from_secs(10),
        in_rotation(replica),
    );

    let p = facts(watch.last(primary));
    assert!(!p.read_only && !p.replicating && p.lag.is_none(), "{p:?}");
    let r = facts(watch.last(replica));
    assert!(r.read_only && r.replicating, "{r:?}");
    assert_eq!(r.lag, Some(Duration::ZERO));
    assert!(watch.last(replica).rtt < CONNECT_TIMEOUT);

    // A write on the primary: once the replica has applied it, its
    // position covers the primary's.
    set.primary.admin_sql(&format!(
        "CREATE TABLE {TEST_DB}.hc_items (id INT PRIMARY KEY);\n\
         INSERT INTO {TEST_DB}.hc_items VALUES (1)"
    ));
    set.wait_caught_up(Duration::from_secs(30));
    let written = GtidPosition::parse(&set.primary_position()).unwrap();
    assert!(!written.is_empty());
    let mark = Instant::now();
    assert_eq!(
        facts(watch.fresh_report(primary, mark, "a primary report")).gtid,
        written
    );
    let caught_up = facts(watch.fresh_report(replica, mark, "a replica report"))
        .gtid
        .clone();
    assert!(
        caught_up.covers(&written),
        "{caught_up} does not cover {written}"
    );

    // Replication stopped: out at the first report that sees it.
    set.stop_replica(0);
    watch.until("the stopped replica out", Duration::from_secs(5), |w| {
        w.state(replica) == &out(OutReason::ReplicationStopped)
    });
    let h = &watch.history[replica];
    let stopped = facts(&h[h.len() - 1].0);
    assert!(!stopped.replicating && stopped.lag.is_none(), "{stopped:?}");
    assert!(
        facts(&h[h.len() - 2].0).replicating,
        "out at the first report"
    );
    assert_eq!(watch.state(primary), &RotationState::InRotation);

    // Started again: back after two good checks.
    set.start_replica(0);
    watch.until(
        "the restarted replica back",
        Duration::from_secs(5),
        in_rotation(replica),
    );
    watch.assert_back_after_rise(replica);

    // Delayed: a write makes Seconds_Behind_Master rise past the limit
    // while the replica has not applied it; it comes back once it has.
    set.set_replica_delay(0, Duration::from_secs(3));
    let mark = Instant::now();
    watch.fresh_report(replica, mark, "a report after the delay is set");
    watch.until(
        "the delayed replica in rotation",
        Duration::from_secs(5),
        in_rotation(replica),
    );
    set.primary
        .admin_sql(&format!("INSERT INTO {TEST_DB}.hc_items VALUES (2)"));
    let delayed_write = GtidPosition::parse(&set.primary_position()).unwrap();
    watch.until(
        "the delayed replica out for lag",
        Duration::from_secs(10),
        |w| {
            matches!(
                w.state(replica),
                RotationState::OutOfRotation(OutReason::Lagging(_))
            )
        },
    );
    let lagging = facts(watch.last(replica)).clone();
    assert!(
        lagging.replicating && lagging.lag.is_some_and(|l| l > MAX_LAG),
        "{lagging:?}"
    );
    assert!(
        !lagging.gtid.covers(&delayed_write),
        "a replica that has not applied the write ({}) must not cover it ({delayed_write})",
        lagging.gtid
    );
    watch.until(
        "the delayed replica back",
        Duration::from_secs(15),
        in_rotation(replica),
    );
    watch.assert_back_after_rise(replica);
    let back = &facts(watch.last(replica)).gtid;
    assert!(
        back.covers(&delayed_write),
        "{back} does not cover {delayed_write}"
    );
    set.set_replica_delay(0, Duration::ZERO);
    let mark = Instant::now();
    watch.fresh_report(replica, mark, "a report after the delay is removed");
    watch.until(
        "the undelayed replica in rotation",
        Duration::from_secs(5),
        in_rotation(replica),
    );

    // Frozen (SIGSTOP): the check times out and the replica is down
    // within about connect_timeout + interval.
    let frozen_at = Instant::now();
    set.replicas[0].signal(libc::SIGSTOP);
    let is_down = |server| {
        move |w: &Watch| {
            matches!(
                w.state(server),
                RotationState::OutOfRotation(OutReason::Down(_))
            )
        }
    };
    watch.until(
        "the frozen replica down",
        CONNECT_TIMEOUT + INTERVAL + SLACK * 2,
        is_down(replica),
    );
    let took = frozen_at.elapsed();
    assert!(
        took <= CONNECT_TIMEOUT + INTERVAL + SLACK,
        "down after {took:?}"
    );
    let why = error(watch.last(replica)).to_string();
    assert!(why.contains("no answer within 1s"), "{why}");
    set.replicas[0].signal(libc::SIGCONT);
    watch.until(
        "the thawed replica back",
        Duration::from_secs(10),
        in_rotation(replica),
    );
    watch.assert_back_after_rise(replica);

    // Killed: down at the next check, with a clear error; then every
    // check says the connection is refused.
    let killed_at = Instant::now();
    set.replicas[0].kill();
    watch.until(
        "the killed replica down",
        CONNECT_TIMEOUT + INTERVAL + SLACK * 2,
        is_down(replica),
    );
    let took = killed_at.elapsed();
    assert!(
        took <= CONNECT_TIMEOUT + INTERVAL + SLACK,
        "down after {took:?}"
    );
    let why = error(watch.last(replica)).to_string();
    assert!(
        [
            "server closed the connection",
            "Connection reset",
            "Connection refused"
        ]
        .iter()
        .any(|clear| why.contains(clear)),
        "{why}"
    );
    let refused = format!(
        "connect to 127.0.0.1:{}: Connection refused",
        set.replicas[0].port
    );
    watch.until("a reconnect refused", Duration::from_secs(5), |w| {
        w.last(replica)
            .outcome
            .as_ref()
            .is_err_and(|e| e.starts_with(&refused))
    });
    assert!(matches!(
        watch.state(replica),
        RotationState::OutOfRotation(OutReason::Down(_))
    ));
    assert_eq!(watch.state(primary), &RotationState::InRotation);

    let stopping = Instant::now();
    watch.checkers.take().unwrap().stop();
    assert!(
        stopping.elapsed() < CONNECT_TIMEOUT + SLACK,
        "stop took {:?}",
        stopping.elapsed()
    );
}

/// MariaDB's ed25519 plugin on the shared test server.
fn ed25519_plugin() {
    let db = common::mariadb();
    let installed: Vec<u64> = db.admin_query(
        "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519'",
    );
    if installed[0] == 0 {
        db.admin_sql("INSTALL SONAME 'auth_ed25519'");
    }
}

#[test]
fn checks_report_at_once_say_why_they_fail_and_stop_without_waiting_an_interval() {
    let db = common::mariadb();
    ed25519_plugin();
    let no_monitor = common::unique_name("hc_nopriv");
    let ed = common::unique_name("hc_ed");
    db.admin_sql(&format!(
        "CREATE USER '{no_monitor}'@'127.0.0.1' IDENTIFIED BY 'np';\n\
         CREATE USER '{ed}'@'127.0.0.1' IDENTIFIED VIA ed25519 USING PASSWORD('ed pw');\n\
         GRANT SLAVE MONITOR ON *.* TO '{ed}'@'127.0.0.1'"
    ));
    let closed_port = common::free_port();
    // Accepts connections (the kernel does) and never greets.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let every_minute = |mut t: HealthTarget| {
        t.interval = Duration::from_secs(60);
        t
    };
    let primary = ServerRole::Primary;
    let mut hung = target(6, tcp(silent_port), primary, USER_A, PASS_A);
    hung.connect_timeout = Duration::from_millis(500);
    let targets: Vec<HealthTarget> = vec![
        target(0, tcp(db.port), primary, USER_A, PASS_A),
        target(1, BackendAddr::Unix(db.socket.clone()), primary, "root", ""),
        target(2, tcp(db.port), ServerRole::Replica, USER_A, PASS_A),
        target(3, tcp(db.port), ServerRole::Replica, &no_monitor, "np"),
        target(4, tcp(db.port), primary, USER_A, "wrong"),
        target(5, tcp(closed_port), primary, USER_A, PASS_A),
        hung,
        target(7, tcp(db.port), ServerRole::Replica, &ed, "ed pw"),
    ]
    .into_iter()
    .map(every_minute)
    .collect();
    let count = targets.len();
    let started = Instant::now();
    let mut watch = Watch::start(targets, &vec![None; count]);
    watch.until("a report of every server", Duration::from_secs(10), |w| {
        w.history.iter().all(|h| !h.is_empty())
    });

    // The shared server has no binary log and no replication.
    for server in [0, 1] {
        let f = facts(watch.last(server));
        assert!(!f.read_only && !f.replicating && f.gtid.is_empty(), "{f:?}");
        assert_eq!(watch.state(server), &RotationState::InRotation);
    }
    for server in [2, 7] {
        let f = facts(watch.last(server));
        assert!(!f.replicating && f.lag.is_none(), "{f:?}");
        assert_eq!(watch.state(server), &out(OutReason::ReplicationStopped));
    }
    let why = error(watch.last(3));
    assert!(
        why.starts_with("SHOW ALL SLAVES STATUS: Access denied") && why.contains("SLAVE MONITOR"),
        "{why}"
    );
    let why = error(watch.last(4));
    assert!(
        why.starts_with(&format!("login refused: Access denied for user '{USER_A}'")),
        "{why}"
    );
    assert!(why.ends_with("(1045)"), "{why}");
    let why = error(watch.last(5));
    assert!(
        why.starts_with(&format!(
            "connect to 127.0.0.1:{closed_port}: Connection refused"
        )),
        "{why}"
    );
    let hung = watch.last(6);
    assert_eq!(error(hung), "no answer within 500ms");
    assert!(
        hung.checked_at.duration_since(started) < Duration::from_secs(2),
        "the first check runs at once"
    );
    assert!(hung.rtt >= Duration::from_millis(500), "{:?}", hung.rtt);
    for server in 3..=6 {
        assert!(matches!(
            watch.state(server),
            RotationState::OutOfRotation(OutReason::Down(_))
        ));
    }

    // One report each: the next check is a minute away; stopping does not
    // wait for it, and the threads end (the channel's senders are gone).
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        watch.reports.try_recv().is_err(),
        "a second check within the interval"
    );
    let aborted_before = aborted_clients(db);
    let stopping = Instant::now();
    watch.checkers.take().unwrap().stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        stopping.elapsed()
    );
    assert!(matches!(
        watch.reports.recv_timeout(Duration::from_secs(1)),
        Err(RecvTimeoutError::Disconnected)
    ));
    // The checkers' connections ended with a goodbye (COM_QUIT): mysqld
    // counts no aborted client for them.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(aborted_clients(db), aborted_before);
    drop(silent);
}

/// mysqld's count of connections that ended without a COM_QUIT.
fn aborted_clients(db: &common::MariaDb) -> u64 {
    let rows: Vec<(String, u64)> = db.admin_query("SHOW GLOBAL STATUS LIKE 'Aborted_clients'");
    rows[0].1
}

#[test]
fn no_report_is_sent_once_the_checkers_are_dropped() {
    let db = common::mariadb();
    let (tx, reports) = channel();
    let checkers = spawn_checkers(
        vec![target(0, tcp(db.port), ServerRole::Primary, USER_A, PASS_A)],
        move |report| {
            let _ = tx.send((Instant::now(), report));
        },
    );
    for _ in 0..3 {
        let (_, report) = reports.recv_timeout(Duration::from_secs(10)).unwrap();
        facts(&report);
    }
    drop(checkers);
    let dropped = Instant::now();
    // The thread ends (its sender with it) without waiting an interval, and
    // whatever it sent, it sent before the drop returned.
    let deadline = Instant::now() + CONNECT_TIMEOUT + SLACK;
    loop {
        match reports.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((sent, _)) => assert!(sent < dropped, "a report sent after the drop"),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the checker thread did not end"),
        }
    }
}
