//! How the admin and stats side (its own thread) talks to the event loop:
//! requests over a channel plus a mio `Waker`; answers over a one-shot
//! channel. The loop never blocks on the admin side and never shares a lock
//! with it: a snapshot is a copy.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

pub use super::stats::{Hist, LatencyStat, PoolLatency, QueryStat, SecondLatency, SecondSummary};
use super::Counters;
use crate::config::{SetError, Setting};

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
    /// Graceful shutdown, as on SIGTERM.
    Shutdown {
        reply: Sender<String>,
    },
}

/// The admin side's end of the channel.
#[derive(Clone)]
pub struct ControlHandle {
    tx: Sender<Control>,
    waker: Arc<mio::Waker>,
}

impl ControlHandle {
    pub(super) fn new(tx: Sender<Control>, waker: Arc<mio::Waker>) -> Self {
        ControlHandle { tx, waker }
    }

    /// Send a request and wake the loop. False if the loop is gone.
    pub fn send(&self, c: Control) -> bool {
        self.tx.send(c).is_ok() && self.waker.wake().is_ok()
    }

    /// Ask for a snapshot and wait for it (at most `timeout`).
    pub fn snapshot(&self, detail: bool, timeout: Duration) -> Option<Box<Snapshot>> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        if !self.send(Control::Snapshot { detail, reply }) {
            return None;
        }
        rx.recv_timeout(timeout).ok()
    }

    /// Send a request built around a reply channel and wait for the answer.
    pub fn call<T>(&self, make: impl FnOnce(Sender<T>) -> Control, timeout: Duration) -> Option<T> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        if !self.send(make(reply)) {
            return None;
        }
        rx.recv_timeout(timeout).ok()
    }
}

pub(super) type ControlReceiver = Receiver<Control>;

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
    /// The query-shape table, most total time first (only with `detail`).
    pub queries: Vec<QueryStat>,
    /// The admin console's user and SHA1(SHA1(password)), as configured now
    /// (reloadable), so the admin thread checks logins against them.
    pub admin_auth: Option<(String, [u8; 20])>,
    /// The same for the read-only account (`[admin] stats_user`), if any.
    pub admin_stats_auth: Option<(String, [u8; 20])>,
}
