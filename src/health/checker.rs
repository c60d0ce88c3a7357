//! The checker threads: one per target, each with its connection, asking
//! the questions of the module doc and turning the answers into reports.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error};

use super::client::{MiniClient, QueryError, ResultSet};
use super::{GtidPosition, HealthReport, HealthTarget, ServerFacts, ServerRole};

/// The variables every check reads.
const VARIABLES_SQL: &str = "SELECT @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos";
/// A replica's status, in the order tried: MariaDB's, one row per
/// replication source; then the one-source forms. A server that does not
/// know one answers 1064 (syntax error) and the next is tried.
const REPLICA_STATUS_SQL: [&str; 3] = [
    "SHOW ALL SLAVES STATUS",
    "SHOW REPLICA STATUS",
    "SHOW SLAVE STATUS",
];
const ER_PARSE_ERROR: u16 = 1064;

/// The running checkers. Dropping it stops them: no report is sent after
/// the drop returns (a check under way finishes in its thread, each of its
/// steps bounded by `connect_timeout`, and is not reported).
pub struct Checkers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    /// Set once to stop. The sink is called with this lock held, so once
    /// `signal_stop` has it, no report is under way or will start.
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Checkers {
    /// Stops the checkers and waits for their threads: at most the check
    /// under way (connect, login, two queries: each step bounded by
    /// `connect_timeout`).
    pub fn stop(mut self) {
        self.signal_stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    fn signal_stop(&self) {
        *self
            .shared
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// One thread per target, checking every `interval` (first check at once),
/// sending each report to `sink`; stops when the returned handle is dropped
/// (or `stop()`), without waiting a whole interval. The sink is called from
/// the checker threads, one call at a time, and must not block (hand the
/// report over, for example on an unbounded channel, and wake the loop):
/// stopping waits for a call under way.
#[must_use = "dropping the returned Checkers stops the checks"]
pub fn spawn_checkers(
    targets: Vec<HealthTarget>,
    sink: impl Fn(HealthReport) + Send + Sync + 'static,
) -> Checkers {
    let shared = Arc::new(Shared {
        stopped: Mutex::new(false),
        wake: Condvar::new(),
    });
    let sink: Arc<dyn Fn(HealthReport) + Send + Sync> = Arc::new(sink);
    let mut threads = Vec::with_capacity(targets.len());
    for target in targets {
        let (server, name) = (target.server, target.name.clone());
        let (thread_shared, thread_sink) = (shared.clone(), sink.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("health {name}"))
            .spawn(move || run(Checker::new(target), &thread_shared, &*thread_sink));
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                // Reported like a failed check, so the server is not
                // trusted blindly.
                let why = format!("cannot start its health-check thread: {e}");
                error!("server {name}: {why}");
                sink(HealthReport {
                    server,
                    checked_at: Instant::now(),
                    rtt: Duration::ZERO,
                    outcome: Err(why),
                });
            }
        }
    }
    Checkers { shared, threads }
}

fn run(mut checker: Checker, shared: &Shared, sink: &(dyn Fn(HealthReport) + Send + Sync)) {
    loop {
        let started = Instant::now();
        let report = checker.check();
        let stopped = shared
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return;
        }
        sink(report);
        let next = started + checker.target.interval;
        let (stopped, _) = shared
            .wake
            .wait_timeout_while(
                stopped,
                next.saturating_duration_since(Instant::now()),
                |stopped| !*stopped,
            )
            .unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return;
        }
    }
}

struct Checker {
    target: HealthTarget,
    conn: Option<MiniClient>,
    /// Index in `REPLICA_STATUS_SQL` of the statement this server knows.
    status_sql: usize,
}

impl Checker {
    fn new(target: HealthTarget) -> Checker {
        Checker {
            target,
            conn: None,
            status_sql: 0,
        }
    }

    fn check(&mut self) -> HealthReport {
        let mut checked_at = Instant::now();
        let outcome = self.facts(&mut checked_at);
        let rtt = checked_at.elapsed();
        if let Err(why) = &outcome {
            debug!(
                "health check of {} ({}) failed: {why}",
                self.target.name, self.target.address
            );
            // A connection that failed once is not trusted again.
            self.conn = None;
        }
        HealthReport {
            server: self.target.server,
            checked_at,
            rtt,
            outcome,
        }
    }

    /// The facts of one check; `checked_at` is moved to when the queries
    /// are sent (after a reconnect).
    fn facts(&mut self, checked_at: &mut Instant) -> Result<ServerFacts, String> {
        let target = &self.target;
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = MiniClient::connect(
                    &target.address,
                    &target.user,
                    &target.password,
                    target.connect_timeout,
                )?;
                *checked_at = Instant::now();
                self.conn.insert(conn)
            }
        };
        let failed = |e: QueryError| format!("{VARIABLES_SQL}: {e}");
        let variables = conn.query(VARIABLES_SQL).map_err(failed)?;
        let (read_only, binlog_pos, slave_pos) = variables_row(&variables)?;
        match target.role {
            ServerRole::Primary => Ok(ServerFacts {
                read_only,
                lag: None,
                replicating: false,
                gtid: GtidPosition::parse(&binlog_pos)
                    .map_err(|e| format!("@@gtid_binlog_pos: {e}"))?,
            }),
            ServerRole::Replica => {
                let gtid = GtidPosition::parse(&slave_pos)
                    .map_err(|e| format!("@@gtid_slave_pos: {e}"))?;
                let (replicating, lag) = loop {
                    let sql = REPLICA_STATUS_SQL[self.status_sql];
                    match conn.query(sql) {
                        Ok(status) => {
                            break replication_status(&status).map_err(|e| format!("{sql}: {e}"))?
                        }
                        Err(QueryError::Refused {
                            code: ER_PARSE_ERROR,
                            ..
                        }) if self.status_sql + 1 < REPLICA_STATUS_SQL.len() => {
                            self.status_sql += 1;
                        }
                        Err(e) => return Err(format!("{sql}: {e}")),
                    }
                };
                Ok(ServerFacts {
                    read_only,
                    lag,
                    replicating,
                    gtid,
                })
            }
        }
    }
}

/// (read_only, gtid_binlog_pos, gtid_slave_pos) from the answer to
/// `VARIABLES_SQL`.
fn variables_row(answer: &ResultSet) -> Result<(bool, String, String), String> {
    let (Some(row), 1) = (answer.rows.first(), answer.rows.len()) else {
        return Err(format!(
            "{VARIABLES_SQL}: {} rows instead of 1",
            answer.rows.len()
        ));
    };
    let [read_only, binlog_pos, slave_pos] = row.as_slice() else {
        return Err(format!(
            "{VARIABLES_SQL}: {} values instead of 3",
            row.len()
        ));
    };
    let read_only = parse_read_only(read_only.as_deref())?;
    Ok((
        read_only,
        binlog_pos.clone().unwrap_or_default(),
        slave_pos.clone().unwrap_or_default(),
    ))
}

/// `@@read_only`: a boolean (0/1) up to MariaDB 11.7, then an enum whose
/// values other than OFF all refuse writes.
fn parse_read_only(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        Some("0") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("OFF") => Ok(false),
        Some("1") => Ok(true),
        Some(v)
            if ["ON", "NO_LOCK", "NO_LOCK_NO_ADMIN"]
                .iter()
                .any(|on| v.eq_ignore_ascii_case(on)) =>
        {
            Ok(true)
        }
        other => Err(format!("@@read_only is {other:?}, not a known value")),
    }
}

/// (replicating, lag) from a replica status answer: replicating when it has
/// sources and the IO and SQL threads of each run; the lag is the largest
/// `Seconds_Behind_Master`, None unless replicating and known for each.
fn replication_status(answer: &ResultSet) -> Result<(bool, Option<Duration>), String> {
    let column = |name: &str| {
        answer
            .column(name)
            .ok_or_else(|| format!("no column {name}"))
    };
    let io = column("Slave_IO_Running")?;
    let sql = column("Slave_SQL_Running")?;
    let behind = column("Seconds_Behind_Master")?;
    let mut replicating = !answer.rows.is_empty();
    let mut lag = Some(Duration::ZERO);
    for row in &answer.rows {
        let value = |i: usize| row.get(i).and_then(|v| v.as_deref());
        let running = |i: usize| value(i).is_some_and(|v| v.eq_ignore_ascii_case("Yes"));
        replicating &= running(io) && running(sql);
        let seconds = match value(behind) {
            None => None,
            Some(text) => Some(
                text.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("Seconds_Behind_Master is {text:?}, not a number"))?,
            ),
        };
        lag = match (lag, seconds) {
            (Some(most), Some(s)) => Some(most.max(Duration::from_secs(s))),
            _ => None,
        };
    }
    Ok((replicating, lag.filter(|_| replicating)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(rows: &[[Option<&str>; 3]]) -> ResultSet {
        ResultSet {
            columns: [
                "Connection_name",
                "Slave_IO_Running",
                "Slave_SQL_Running",
                "Seconds_Behind_Master",
            ]
            .map(String::from)
            .to_vec(),
            rows: rows
                .iter()
                .map(|r| {
                    std::iter::once(Some(String::new()))
                        .chain(r.iter().map(|v| v.map(String::from)))
                        .collect()
                })
                .collect(),
        }
    }

    #[test]
    fn replication_status_reads_every_source() {
        let yes = Some("Yes");
        let secs = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(
            replication_status(&status(&[[yes, yes, Some("0")]])),
            Ok((true, secs(0)))
        );
        assert_eq!(
            replication_status(&status(&[[yes, yes, Some("3")], [yes, yes, Some("12")]])),
            Ok((true, secs(12)))
        );
        for stopped in [
            [Some("No"), yes, None],
            [yes, Some("No"), None],
            [Some("Connecting"), yes, Some("5")],
            [yes, None, Some("5")],
        ] {
            assert_eq!(
                replication_status(&status(&[stopped])),
                Ok((false, None)),
                "{stopped:?}"
            );
        }
        // One stopped source of two: not replicating.
        assert_eq!(
            replication_status(&status(&[[yes, yes, Some("1")], [Some("No"), yes, None]])),
            Ok((false, None))
        );
        // Threads running but the lag unknown.
        assert_eq!(
            replication_status(&status(&[[yes, yes, None]])),
            Ok((true, None))
        );
        // No replication configured at all.
        assert_eq!(replication_status(&status(&[])), Ok((false, None)));
        assert!(replication_status(&status(&[[yes, yes, Some("soon")]]))
            .unwrap_err()
            .contains("soon"));
        let mut no_column = status(&[[yes, yes, Some("0")]]);
        no_column.columns[3] = "Something_else".into();
        assert!(replication_status(&no_column)
            .unwrap_err()
            .contains("Seconds_Behind_Master"));
    }

    #[test]
    fn read_only_and_the_variables_row_are_checked() {
        assert_eq!(parse_read_only(Some("0")), Ok(false));
        assert_eq!(parse_read_only(Some("1")), Ok(true));
        assert_eq!(parse_read_only(Some("OFF")), Ok(false));
        assert_eq!(parse_read_only(Some("NO_LOCK_NO_ADMIN")), Ok(true));
        assert!(parse_read_only(Some("2")).is_err());
        assert!(parse_read_only(None).is_err());

        let row = |values: Vec<Option<&str>>| ResultSet {
            columns: vec!["a".into(); values.len()],
            rows: vec![values.into_iter().map(|v| v.map(String::from)).collect()],
        };
        assert_eq!(
            variables_row(&row(vec![Some("1"), Some("0-1-5"), None])),
            Ok((true, "0-1-5".into(), String::new()))
        );
        assert!(variables_row(&row(vec![Some("1"), Some("")])).is_err());
        assert!(variables_row(&ResultSet::default()).is_err());
    }
}
