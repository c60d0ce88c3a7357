//! The interface between the engine and the admin and stats side: requests
//! over a channel plus a mio `Waker`; answers over a one-shot channel; the
//! snapshot types and counters the answers carry. Both sides depend on this
//! module, neither on the other (`main.rs` wires them). The loop never
//! blocks on the admin side and never shares a lock with it: a snapshot is
//! a copy.

pub mod latency;
pub mod merge;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::config::{SetError, Setting};
pub use latency::{Hist, LatencyStat, PoolLatency, QueryStat, SecondLatency, SecondSummary};

/// What the admin side may ask of the loop.
pub enum Control {
    /// A copy of the loop's state; `detail` adds per-client and per-backend rows.
    Snapshot {
        detail: bool,
        reply: Sender<Box<Snapshot>>,
    },
    /// Stop handing requests to backends (the backlog holds them).
    Pause {
        reply: Sender<String>,
    },
    Resume {
        reply: Sender<String>,
    },
    /// Re-read the configuration file.
    Reload {
        reply: Sender<Result<String, String>>,
    },
    /// Apply the running configuration with one setting changed, as a
    /// reload would (`value` None: as if not given). Lasts until the next
    /// reload from the file.
    Set {
        setting: Setting,
        value: Option<String>,
        reply: Sender<Result<String, SetError>>,
    },
    /// Close one client as `KILL CONNECTION` would (`Err`: no such client).
    KillClient {
        id: u64,
        reply: Sender<Result<String, String>>,
    },
    /// PAUSE / RESUME of one user's pools (`Err`: no such pool).
    PausePool {
        pool: String,
        pause: bool,
        reply: Sender<Result<String, String>>,
    },
    /// Close each backend of one user's pools after its current command
    /// and open new ones (`Err`: no such pool).
    ReconnectPool {
        pool: String,
        reply: Sender<Result<String, String>>,
    },
    /// The admin accounts in force (for a console login: no snapshot).
    Credentials {
        reply: Sender<AdminCredentials>,
    },
    /// Graceful shutdown, as on SIGTERM.
    Shutdown {
        reply: Sender<String>,
    },
    /// A backend server's health check (from its checker thread).
    Health(Box<crate::health::HealthReport>),
}

/// The admin side's end of the channels: one per event loop
/// (`[funnel] threads`), each with the waker of its loop.
#[derive(Clone)]
pub struct ControlHandle {
    loops: Arc<Vec<(Sender<Control>, Arc<mio::Waker>)>>,
}

impl ControlHandle {
    pub(super) fn new(tx: Sender<Control>, waker: Arc<mio::Waker>) -> Self {
        ControlHandle {
            loops: Arc::new(vec![(tx, waker)]),
        }
    }

    /// One handle for the loops of several (in loop order).
    pub fn join(handles: &[ControlHandle]) -> Self {
        ControlHandle {
            loops: Arc::new(
                handles
                    .iter()
                    .flat_map(|h| h.loops.iter().cloned())
                    .collect(),
            ),
        }
    }

    /// Send a request to the first loop and wake it. False if it is gone.
    pub fn send(&self, c: Control) -> bool {
        self.loops
            .first()
            .is_some_and(|(tx, waker)| tx.send(c).is_ok() && waker.wake().is_ok())
    }

    /// Send a request made by `make` to every loop. False if one is gone.
    pub fn broadcast(&self, make: impl Fn() -> Control) -> bool {
        let mut all = true;
        for (tx, waker) in self.loops.iter() {
            all &= tx.send(make()).is_ok() && waker.wake().is_ok();
        }
        all
    }

    /// Ask every loop for a snapshot and wait for them (at most `timeout`
    /// in all): one snapshot of the whole funnel.
    pub fn snapshot(&self, detail: bool, timeout: Duration) -> Option<Box<Snapshot>> {
        self.call(|reply| Control::Snapshot { detail, reply }, timeout)
    }

    /// Send a request built around a reply channel to every loop and wait
    /// for their answers (at most `timeout` in all), merged into one
    /// (`Reply`). None when a loop did not answer in time.
    pub fn call<T: Reply>(
        &self,
        make: impl Fn(Sender<T>) -> Control,
        timeout: Duration,
    ) -> Option<T> {
        let deadline = std::time::Instant::now() + timeout;
        let (reply, rx) = crossbeam_channel::bounded(self.loops.len());
        for (tx, waker) in self.loops.iter() {
            if tx.send(make(reply.clone())).is_err() || waker.wake().is_err() {
                return None;
            }
        }
        let mut answers = Vec::with_capacity(self.loops.len());
        while answers.len() < self.loops.len() {
            answers.push(rx.recv_deadline(deadline).ok()?);
        }
        T::merge(answers)
    }
}

/// An answer of each loop, made into the funnel's answer.
pub trait Reply: Sized + Send + 'static {
    /// `answers` has one per loop, in no particular order; None if empty.
    fn merge(answers: Vec<Self>) -> Option<Self>;
}

impl Reply for String {
    /// Every loop did the same; their words are the same.
    fn merge(answers: Vec<Self>) -> Option<Self> {
        answers.into_iter().next()
    }
}

impl<E: Send + 'static> Reply for Result<String, E> {
    /// Done if one loop did it (a `KILL` of a client only one loop has);
    /// else the first loop's refusal. Loops that all did it may say more
    /// or less (a reload's notes on a pool only some loops have): their
    /// notes, `; `-separated, are joined without repeats.
    fn merge(answers: Vec<Self>) -> Option<Self> {
        let mut done = Vec::new();
        let mut first_err = None;
        for a in answers {
            match a {
                Ok(words) => done.push(words),
                Err(e) => {
                    first_err.get_or_insert(Err(e));
                }
            }
        }
        if done.is_empty() {
            return first_err;
        }
        // The fullest answer first, then what the others add.
        done.sort_by_key(|words| std::cmp::Reverse(words.split("; ").count()));
        let mut notes: Vec<&str> = Vec::new();
        for words in &done {
            for note in words.split("; ") {
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
        Some(Ok(notes.join("; ")))
    }
}

impl Reply for AdminCredentials {
    /// Every loop has the same configuration.
    fn merge(answers: Vec<Self>) -> Option<Self> {
        answers.into_iter().next()
    }
}

impl Reply for Box<Snapshot> {
    fn merge(answers: Vec<Self>) -> Option<Self> {
        merge::merge_snapshots(answers)
    }
}

pub(crate) type ControlReceiver = Receiver<Control>;

#[derive(Clone, Debug, Default)]
pub struct ClientCounts {
    pub connected: usize,
    pub idle: usize,
    pub queued: usize,
    pub running: usize,
    /// Pinned clients by cause name (a client counts once, under its first cause).
    pub pinned: Vec<(&'static str, usize)>,
}

#[derive(Clone, Debug, Default)]
pub struct BackendCounts {
    pub idle: usize,
    pub busy: usize,
    pub pinned: usize,
    pub connecting: usize,
    /// Being reset or replaying state (busy for the funnel itself).
    pub internal: usize,
    /// Configured shared connections that do not exist right now (failed,
    /// waiting for the reconnect backoff).
    pub broken: usize,
}

#[derive(Clone)]
pub struct PoolSnapshot {
    pub name: String,
    /// Paused by the admin's `PAUSE pool` (the funnel-wide PAUSE is `Snapshot::paused`).
    pub paused: bool,
    /// The pool of the user's clients that negotiated `CLIENT_FOUND_ROWS`.
    pub found_rows: bool,
    pub backend_user: String,
    pub configured_connections: usize,
    pub max_pinned_backends: usize,
    pub backlog_size: usize,
    pub queue_timeout: Duration,
    pub clients: ClientCounts,
    pub backends: BackendCounts,
    pub backlog_depth: usize,
    pub backlog_max_since_start: usize,
    /// Backend reachable: at least one connection logged in.
    pub backend_up: bool,
    pub last_backend_error: Option<String>,
    pub counters: Counters,
    pub latency: PoolLatency,
    /// Age of the oldest queued request.
    pub oldest_wait: Duration,
    /// Output held for this pool's slow readers past output_high_watermark
    /// (connection first).
    pub buffered_bytes: usize,
    /// Prepared statements the pool's clients hold.
    pub prepared_stmts: usize,
}

impl PoolSnapshot {
    /// A pool kept after its user was removed from the configuration
    /// (until it has drained).
    pub fn is_removed(&self) -> bool {
        self.name.starts_with("removed:")
    }
}

#[derive(Clone, Debug)]
pub struct ClientRow {
    pub id: u32,
    pub user: String,
    pub host: String,
    pub state: &'static str,
    pub schema: Option<String>,
    pub pinned_backend: Option<u32>,
    pub pin_cause: Option<&'static str>,
    /// Prepared statements it holds.
    pub prepared_stmts: usize,
    /// User variables the funnel replays for it (0 while pinned for
    /// having too many).
    pub user_vars: usize,
    /// Time in the current state's command (queued or running), if any.
    pub busy_for: Duration,
    pub bytes_out: u64,
    /// The event loop it is on now (1 to `threads`).
    pub event_loop: usize,
}

#[derive(Clone, Debug)]
pub struct BackendRow {
    pub pool: String,
    /// mysqld's thread id of this connection.
    pub thread_id: u32,
    pub state: &'static str,
    pub pinned: bool,
    /// Funnel connection id of the client it serves or is pinned to.
    pub client_id: Option<u32>,
    pub schema: Option<String>,
    pub busy_for: Duration,
    /// The event loop it belongs to (1 to `threads`).
    pub event_loop: usize,
}

/// One backend server, as SHOW SERVERS, `/metrics` and `/stats.json` show it.
#[derive(Clone, Debug, Default)]
pub struct ServerSnapshot {
    pub name: String,
    pub address: String,
    /// any (`[backend] address`), primary or replica.
    pub role: &'static str,
    pub weight: u32,
    /// Taken out by a reload; its connections drain.
    pub removed: bool,
    /// Out of rotation, and why (None: in rotation).
    pub out: Option<String>,
    /// Health-checked (a `[server NAME]` section).
    pub checked: bool,
    pub last_check_ago: Option<Duration>,
    pub check_time: Duration,
    pub read_only: Option<bool>,
    pub lag: Option<Duration>,
    pub last_error: Option<String>,
    pub went_out: u64,
    pub came_back: u64,
    /// Connections to it that failed to open or log in, and that broke.
    pub connect_failures: u64,
    pub lost: u64,
    /// Service time of the commands it ran (all pools).
    pub service: LatencyStat,
    /// Its backend connections (all pools), and those serving a client.
    pub connections: usize,
    pub in_use: usize,
    /// Its backends running a command now, its `max_concurrency` (None: no
    /// limit), the users waiting for a turn, and how often one had to.
    pub running: usize,
    pub max_concurrency: Option<usize>,
    pub waiting_users: usize,
    pub turn_waits: u64,
    pub version: Option<String>,
}

impl ServerSnapshot {
    /// The state word: up, out (why) or removed.
    pub fn state(&self) -> String {
        match (&self.out, self.removed) {
            (_, true) => "removed".to_string(),
            (Some(why), _) => format!("out: {why}"),
            (None, _) => "up".to_string(),
        }
    }
}

#[derive(Clone)]
pub struct Snapshot {
    pub taken_at: SystemTime,
    pub uptime: Duration,
    pub version: &'static str,
    pub backend_version: Option<String>,
    pub backend_address: String,
    pub paused: bool,
    pub shutting_down: bool,
    /// Totals over all pools plus the funnel-wide counters.
    pub counters: Counters,
    /// Every client connection, authenticated or not.
    pub clients_connected: usize,
    /// Connections still in the handshake (not yet authenticated).
    pub clients_handshaking: usize,
    pub pools: Vec<PoolSnapshot>,
    pub servers: Vec<ServerSnapshot>,
    pub clients: Vec<ClientRow>,
    pub backends: Vec<BackendRow>,
    /// The effective configuration, passwords masked.
    pub config_text: String,
    pub max_client_connections: usize,
    /// Output held for slow readers past output_high_watermark, all pools.
    pub buffered_bytes: usize,
    /// max_buffered_result (0: memory first) and max_buffered_total.
    pub max_buffered_result: usize,
    pub max_buffered_total: usize,
    /// Prepared statements all clients hold, and max_prepared_stmt_count.
    pub prepared_stmts: usize,
    pub max_prepared_stmt_count: usize,
    /// Fill ratio of the backlog above which /health says "saturated".
    pub health_backlog_ratio: f64,
    /// The pools `/health` counts (`[stats] health_pools`; empty: those
    /// with clients, or all when none has).
    pub health_pools: Vec<String>,
    /// The query-shape table, most total time first (only with `detail`).
    pub queries: Vec<QueryStat>,
    /// The query rules in force, in order, and the result cache.
    pub rules: Vec<RuleRow>,
    pub cache: CacheStats,
}

/// A `[rule]` and its hits since it was loaded (a reload starts again).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleRow {
    pub name: String,
    /// `user = "app", pattern = "..."`; empty: every statement.
    pub conditions: String,
    /// `cache_ttl_ms = 2000` or `block = "..."`.
    pub action: String,
    /// Statements it was the first match for.
    pub hits: u64,
    /// Of those, answered from the result cache.
    pub cached: u64,
    /// Of those, held by its `max_concurrency` before they ran.
    pub delayed: u64,
    /// Its cached answers found stale after a write through the funnel.
    pub invalidated: u64,
}

/// The result cache: its size now and its counts since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    /// `cache_size`.
    pub limit: usize,
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub evictions: u64,
    pub expired: u64,
    pub too_big: u64,
    /// Reads that waited for the same read of another client.
    pub coalesced: u64,
    /// Writes through the funnel that made cached reads stale, and the
    /// entries or answers dropped for it.
    pub invalidations: u64,
    pub invalidated: u64,
}

/// The admin accounts as configured now (reloadable), so the admin thread
/// checks console logins against them: user and SHA1(SHA1(password)).
#[derive(Clone, Debug)]
pub struct AdminCredentials {
    pub admin: Option<(String, [u8; 20])>,
    /// The read-only account (`[admin] stats_user`), if any.
    pub stats: Option<(String, [u8; 20])>,
    /// The funnel's certificate (`[funnel] tls_cert`): the console offers
    /// TLS with it too.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// Counters kept by the loop (the stats issue turns these into the admin
/// and metrics views).
#[derive(Default, Debug, Clone)]
pub struct Counters {
    pub clients_accepted: u64,
    /// Commands answered by mysqld with an ERR.
    pub backend_errors: u64,
    /// Requests removed or stopped by KILL.
    pub killed: u64,
    /// Backend connections reset before reuse.
    pub backend_resets: u64,
    /// Pins that ended with their client, with nothing but a transaction
    /// left on the backend: ended with one `ROLLBACK` instead of a reset.
    pub pin_rollbacks: u64,
    /// Backends made dirty by a statement whose effect on the session the
    /// funnel could not prove (each costs a pin, then a reset).
    pub dirty_backends: u64,
    /// Diagnostics areas emptied before a client's `SHOW WARNINGS`.
    pub diagnostics_cleared: u64,
    /// Commands sent behind others in flight on a backend (`pipeline_depth`).
    pub pipelined: u64,
    /// Backend connections brought back to "no default schema" (a
    /// `COM_CHANGE_USER`) for a client without one.
    pub schema_unsets: u64,
    /// Commands put back in the backlog after their backend died before
    /// any of their answer reached the client (never sent to mysqld, or
    /// safe to repeat).
    pub retried: u64,
    /// Waiting commands handed to another event loop whose oldest waited
    /// clearly less (`threads`: one first-come first-served order across
    /// loops). Counted by the loop they left.
    pub rebalanced: u64,
    pub clients_refused: u64,
    pub auth_failures: u64,
    /// Login attempts held back after failed logins (`auth_failure_*`).
    pub auth_held: u64,
    /// Login attempts refused unchecked (ERR 1129): their hold would have
    /// outlasted `handshake_timeout_ms`.
    pub auth_throttled: u64,
    pub requests: u64,
    pub backlog_full: u64,
    pub queue_timeouts: u64,
    pub backend_lost: u64,
    pub backend_connects: u64,
    pub backend_connect_failures: u64,
    pub replays: u64,
    /// Time backends spent on the funnel's steps for clients' sessions
    /// (replays, statement re-prepares, user-variable read-backs), in µs.
    pub replay_micros: u64,
    /// User variables set (or unset) by those replays.
    pub user_vars_replayed: u64,
    pub bytes_from_clients: u64,
    pub bytes_to_clients: u64,
    /// Connection first: responses read completely past a slow client's
    /// output_high_watermark, so their backend was freed early.
    pub buffered_results: u64,
    /// Connection first: responses held back at the backend after all
    /// (max_buffered_result outgrown or max_buffered_total reached).
    pub buffered_fallbacks: u64,
    /// Statements closed on backends (no client held them any more, or
    /// mysqld ran out of statement slots and cached copies made room).
    pub stmts_closed: u64,
    /// Prepares sent again after mysqld's ERR 1461, once cached
    /// statements made room.
    pub prepare_retries: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.clients_accepted += o.clients_accepted;
        self.backend_errors += o.backend_errors;
        self.killed += o.killed;
        self.backend_resets += o.backend_resets;
        self.pin_rollbacks += o.pin_rollbacks;
        self.dirty_backends += o.dirty_backends;
        self.diagnostics_cleared += o.diagnostics_cleared;
        self.pipelined += o.pipelined;
        self.rebalanced += o.rebalanced;
        self.schema_unsets += o.schema_unsets;
        self.retried += o.retried;
        self.clients_refused += o.clients_refused;
        self.auth_failures += o.auth_failures;
        self.auth_held += o.auth_held;
        self.auth_throttled += o.auth_throttled;
        self.requests += o.requests;
        self.backlog_full += o.backlog_full;
        self.queue_timeouts += o.queue_timeouts;
        self.backend_lost += o.backend_lost;
        self.backend_connects += o.backend_connects;
        self.backend_connect_failures += o.backend_connect_failures;
        self.replays += o.replays;
        self.replay_micros += o.replay_micros;
        self.user_vars_replayed += o.user_vars_replayed;
        self.bytes_from_clients += o.bytes_from_clients;
        self.bytes_to_clients += o.bytes_to_clients;
        self.buffered_results += o.buffered_results;
        self.buffered_fallbacks += o.buffered_fallbacks;
        self.stmts_closed += o.stmts_closed;
        self.prepare_retries += o.prepare_retries;
    }
}

#[cfg(test)]
mod tests {
    use super::Reply;

    #[test]
    fn loops_answers_are_joined_without_repeats() {
        let answers: Vec<Result<String, String>> = vec![
            Ok("configuration reloaded: a -> b".into()),
            Ok("configuration reloaded: a -> b; pool x/found_rows: connections 2 -> 3".into()),
        ];
        assert_eq!(
            Reply::merge(answers),
            Some(Ok(
                "configuration reloaded: a -> b; pool x/found_rows: connections 2 -> 3".to_string()
            ))
        );
        let kill: Vec<Result<String, String>> = vec![
            Err("Unknown thread id: 7".into()),
            Ok("client 7 killed".into()),
        ];
        assert_eq!(Reply::merge(kill), Some(Ok("client 7 killed".to_string())));
        let none: Vec<Result<String, String>> =
            vec![Err("no such pool".into()), Err("other".into())];
        assert_eq!(Reply::merge(none), Some(Err("no such pool".to_string())));
    }
}
