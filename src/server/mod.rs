//! The funnel daemon: one mio event loop that owns every client and backend
//! connection, the pools with their backlogs, and the timers.
//!
//! Loop order, once per iteration with one cached `now`: poll (timeout = the
//! next deadline), dispatch events by token, fire due timers, expire backlog
//! heads, top up pools, retry paused accepts.

// First: its `log_limited!` macro is used by the modules below.
#[macro_use]
pub mod log_limit;

mod auth_throttle;
mod backend;
mod client;
mod client_track;
pub mod control;
pub mod io;
pub mod notify;
mod ops;
pub mod pool;
mod processlist;
mod relay;
pub mod session;
#[doc(hidden)]
pub mod sim;
pub mod statement;
pub mod stats;
pub mod stmt;
mod timer;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io as stdio;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::info;
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::config::Config;
use crate::protocol::consts::err;
use backend::Backend;
use client::Client;
use io::BufPool;
use log_limit::LogEvent;
use pool::Pool;
use timer::{Timer, TimerKind};

/// Token space: the low two bits say what a token is for, so a client key can
/// never be read as a backend key.
const KIND_BITS: usize = 2;
const KIND_CLIENT: usize = 0;
const KIND_BACKEND: usize = 1;
const KIND_LISTENER: usize = 2;
const KIND_SPECIAL: usize = 3;
const SIGNAL_TOKEN: Token = Token(KIND_SPECIAL);
const WAKER_TOKEN: Token = Token((1 << KIND_BITS) | KIND_SPECIAL);

fn token(kind: usize, key: usize) -> Token {
    Token((key << KIND_BITS) | kind)
}

fn token_parts(t: Token) -> (usize, usize) {
    (t.0 & ((1 << KIND_BITS) - 1), t.0 >> KIND_BITS)
}

/// Bytes read from one socket per readiness event before the loop moves on.
const READ_CAP_PER_EVENT: usize = 256 * 1024;
/// Largest buffer the buffer pool keeps for reuse; larger ones are freed.
const POOLED_BUF_MAX: usize = 256 * 1024;
/// How long to stop accepting after the process ran out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How often the janitor sweeps (health checks, stalled writers).
const JANITOR_INTERVAL: Duration = Duration::from_millis(1000);
/// Upper bound on the poll timeout, so periodic work runs without a timer.
const MAX_POLL_TIMEOUT: Duration = Duration::from_millis(1000);

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

/// Collation id → (character set name, collation name), read from the
/// backend once so that a client's handshake charset can be replayed.
pub type CharsetTable = HashMap<u8, (String, String)>;

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
    /// Backend connections brought back to "no default schema" (a
    /// `COM_CHANGE_USER`) for a client without one.
    pub schema_unsets: u64,
    /// Commands put back in the backlog after their backend died before
    /// any of their answer reached the client (never sent to mysqld, or
    /// safe to repeat).
    pub retried: u64,
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

/// Work postponed to the end of the current loop pass, so that resuming one
/// connection from inside another's handler cannot recurse.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deferred {
    ClientRead(usize, u64),
    /// Handle input already buffered (a read may be paused meanwhile).
    ClientInput(usize, u64),
    BackendRead(usize, u64),
    /// The last `KILL QUERY` against a backend is over.
    ResumeAfterKill(usize, u64),
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

pub struct Server {
    config: Config,
    poll: Poll,
    listeners: Vec<Listener>,
    clients: Slab<Client>,
    backends: Slab<Backend>,
    pools: Vec<Pool>,
    timers: BinaryHeap<Reverse<Timer>>,
    bufs: BufPool,
    /// Scratch space for packets the funnel builds itself.
    scratch: Vec<u8>,
    serial: u64,
    next_connection_id: u32,
    charsets: Option<CharsetTable>,
    accept_paused_until: Option<Instant>,
    shutting_down: Option<Instant>,
    now: Instant,
    pub counters: Counters,
    /// Sum of the clients' `buffered` bytes (bounded by max_buffered_total).
    buffered_total: usize,
    /// Prepared statements all clients hold (max_prepared_stmt_count),
    /// kept by each client's `ClientStmts`.
    prepared_stmts: std::rc::Rc<std::cell::Cell<usize>>,
    /// Which backend cache keys clients' statements hold; the keys let go
    /// of are closed on the backends (`close_released_stmts`).
    stmt_holders: std::rc::Rc<std::cell::RefCell<stmt::StmtHolders>>,
    /// Scratch list of released keys.
    released_keys: Vec<u64>,
    /// None in the in-process simulation (`sim`), which must not take over
    /// the process's signal handlers.
    signals: Option<signal_hook_mio::v1_0::Signals>,
    /// Added to the real clock: lets the simulation move time forward.
    clock_offset: Duration,
    events: Events,
    deferred: Vec<Deferred>,
    /// Funnel connection id → client key, for KILL.
    client_ids: HashMap<u32, usize>,
    backend_version: Option<String>,
    backend_charset: Option<u8>,
    /// MariaDB's extended capabilities the funnel negotiates with mysqld
    /// (of `MARIADB_CAPS`), from the latest backend greeting.
    backend_mariadb_caps: Option<u32>,
    /// The server's global `session_track_*` settings: what a client with
    /// CLIENT_SESSION_TRACK starts with (read with each backend's baseline).
    track_defaults: client_track::TrackSettings,
    /// A client's share of an OK's session-state block is built here.
    track_buf: Vec<u8>,
    /// The order in which the server writes the variables of its default
    /// tracking list (learned on each new backend connection).
    track_order: Vec<String>,
    /// The backend server's `max_prepared_stmt_count`, once read.
    backend_max_prepared: Option<usize>,
    /// The backend server's global `wait_timeout` / `interactive_timeout`
    /// (mysqld's defaults until a backend has said): clients' defaults.
    server_timeouts: session::ServerTimeouts,
    /// Admin PAUSE: requests stay in the backlog.
    paused: bool,
    /// Rate limit of the log lines remote parties and failures cause.
    log_limit: log_limit::LogLimiter,
    /// Failed logins per client address and per user.
    auth_throttle: auth_throttle::AuthThrottle,
    last_janitor: Instant,
    /// See `Buf::read_from`: set per event from its read-closed flag.
    stop_on_short_read: bool,
    stats: stats::Stats,
    control: Option<control::ControlReceiver>,
    started: Instant,
    /// systemd's `$NOTIFY_SOCKET` (None in the simulation and when not
    /// started by systemd).
    notifier: Option<notify::Notifier>,
    /// READY=1 sent (or nothing to send it to).
    notified_ready: bool,
    /// A backend connection has logged in to mysqld since start-up.
    backend_reached: bool,
}

/// Run the funnel until it is told to stop.
pub fn run(config: Config) -> Result<(), String> {
    let mut server = Server::new(config)?;
    server.notifier = notify::Notifier::from_env();
    server.notified_ready = server.notifier.is_none();
    server.install_signal_handlers()?;
    if server.config.admin.is_some() || server.config.stats.is_some() {
        let waker = mio::Waker::new(server.poll.registry(), WAKER_TOKEN)
            .map_err(|e| format!("cannot create the admin waker: {e}"))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = control::ControlHandle::new(tx, std::sync::Arc::new(waker));
        crate::admin::spawn(&server.config, handle)?;
        server.control = Some(rx);
    }
    server.bind_listeners()?;
    server.run_loop()
}

impl Server {
    fn new(config: Config) -> Result<Server, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        let now = Instant::now();
        let npools = config.users.len();
        let pools = config
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| Pool::new(i, u.clone(), now))
            .collect();
        Ok(Server {
            config,
            poll,
            listeners: Vec::new(),
            clients: Slab::with_capacity(1024),
            backends: Slab::with_capacity(64),
            pools,
            timers: BinaryHeap::new(),
            bufs: BufPool::new(POOLED_BUF_MAX, 1024),
            scratch: Vec::with_capacity(4096),
            serial: 0,
            next_connection_id: 1,
            charsets: None,
            accept_paused_until: None,
            shutting_down: None,
            now,
            counters: Counters::default(),
            buffered_total: 0,
            prepared_stmts: Default::default(),
            stmt_holders: Default::default(),
            released_keys: Vec::new(),
            signals: None,
            clock_offset: Duration::ZERO,
            events: Events::with_capacity(1024),
            deferred: Vec::new(),
            client_ids: HashMap::new(),
            backend_version: None,
            backend_charset: None,
            backend_mariadb_caps: None,
            track_defaults: Default::default(),
            track_buf: Vec::with_capacity(256),
            track_order: Vec::new(),
            backend_max_prepared: None,
            server_timeouts: session::ServerTimeouts::default(),
            paused: false,
            log_limit: log_limit::LogLimiter::default(),
            auth_throttle: auth_throttle::AuthThrottle::default(),
            last_janitor: now,
            stop_on_short_read: false,
            stats: stats::Stats::new(npools),
            control: None,
            started: now,
            notifier: None,
            notified_ready: true,
            backend_reached: false,
        })
    }

    /// Bind the client listeners. Done last at start-up (after the admin
    /// and stats ports), so that a client port that accepts means the whole
    /// funnel is up.
    fn bind_listeners(&mut self) -> Result<(), String> {
        let config = &self.config;
        let poll = &self.poll;
        let mut listeners = Vec::new();
        // The unix socket first, set up completely (mode, group) before any
        // TCP port accepts: a client that saw a TCP port open finds it ready.
        let mut unix = None;
        if let Some(path) = &config.unix_socket {
            // A socket file left by a previous run would make bind fail.
            if path.exists() {
                let _ = std::fs::remove_file(path);
            }
            // Created owner-only, then given its group and mode: never
            // more open than configured, not even for a moment.
            // SAFETY: umask only swaps the process's file mode mask.
            let old_mask = unsafe { libc::umask(0o177) };
            let bound = UnixListener::bind(path);
            unsafe { libc::umask(old_mask) };
            let l = bound.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
            if let Some(group) = &config.unix_socket_group {
                let gid = group_id(group)?;
                std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
                    format!(
                        "cannot give {} to group {group} (unix_socket_group): {e}",
                        path.display()
                    )
                })?;
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                path,
                std::fs::Permissions::from_mode(config.unix_socket_mode),
            )
            .map_err(|e| {
                format!(
                    "cannot set the mode of {} to {:04o} (unix_socket_mode): {e}",
                    path.display(),
                    config.unix_socket_mode
                )
            })?;
            info!(
                "listening on {} (mode {:04o}{})",
                path.display(),
                config.unix_socket_mode,
                config
                    .unix_socket_group
                    .as_ref()
                    .map_or(String::new(), |g| format!(", group {g}"))
            );
            unix = Some(Listener::Unix(l, path.clone()));
        }
        for addr in &config.listen {
            let l = bind_tcp(*addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let local = l.local_addr().unwrap_or(*addr);
            info!("listening on {local}");
            listeners.push(Listener::Tcp(l));
        }
        listeners.extend(unix);
        for (i, l) in listeners.iter_mut().enumerate() {
            let t = token(KIND_LISTENER, i);
            let r = match l {
                Listener::Tcp(l) => poll.registry().register(l, t, Interest::READABLE),
                Listener::Unix(l, _) => poll.registry().register(l, t, Interest::READABLE),
            };
            r.map_err(|e| format!("cannot register listener: {e}"))?;
        }
        self.listeners = listeners;
        Ok(())
    }

    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn install_signal_handlers(&mut self) -> Result<(), String> {
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        self.poll
            .registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)
            .map_err(|e| format!("cannot register signals: {e}"))?;
        self.signals = Some(signals);
        Ok(())
    }

    fn clock(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    fn run_loop(&mut self) -> Result<(), String> {
        self.start();
        while !self.turn(None)? {}
        Ok(())
    }

    /// Before the first turn: open the pools' backend connections.
    fn start(&mut self) {
        self.now = self.clock();
        for p in 0..self.pools.len() {
            self.maintain_pool(p);
        }
    }

    /// One pass of the loop: poll (for at most `max_wait`, else until the
    /// next deadline), dispatch, then the periodic work. True once a
    /// shutdown has completed.
    fn turn(&mut self, max_wait: Option<Duration>) -> Result<bool, String> {
        let mut timeout = self.poll_timeout();
        if let Some(max) = max_wait {
            timeout = timeout.min(max);
        }
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, Some(timeout));
        let result = match polled {
            Err(e) if e.kind() == stdio::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(format!("poll failed: {e}")),
            Ok(()) => {
                self.dispatch_events(&events);
                Ok(self.after_events())
            }
        };
        self.events = events;
        result
    }

    fn dispatch_events(&mut self, events: &Events) {
        self.now = self.clock();
        for event in events.iter() {
            let (kind, key) = token_parts(event.token());
            // A short read may skip the read that would say WouldBlock,
            // unless this event says the peer closed: data and FIN that
            // arrive together raise one edge, and the FIN must be seen.
            self.stop_on_short_read = !(event.is_read_closed() || event.is_error());
            match kind {
                KIND_CLIENT => self.client_event(key, event.is_readable(), event.is_writable()),
                KIND_BACKEND => self.backend_event(key, event.is_readable(), event.is_writable()),
                KIND_LISTENER => self.accept(key),
                _ if event.token() == WAKER_TOKEN => self.handle_control(),
                _ => self.handle_signals(),
            }
        }
        // Work outside an event (deferred reads, resumes) has no hint.
        self.stop_on_short_read = false;
    }

    /// The periodic work after each poll. True once a shutdown has completed.
    fn after_events(&mut self) -> bool {
        self.run_deferred();
        if !self.notified_ready {
            self.notify_ready_when_up();
        }
        for p in 0..self.pools.len() {
            self.stats
                .backlog_depth(p, self.pools[p].backlog_len(), self.now);
        }
        self.stats.tick(self.now);
        self.fire_timers();
        self.expire_backlogs();
        if self.now.saturating_duration_since(self.last_janitor) >= JANITOR_INTERVAL {
            self.last_janitor = self.now;
            self.janitor();
        }
        for p in 0..self.pools.len() {
            self.maintain_pool(p);
        }
        if let Some(until) = self.accept_paused_until {
            if self.now >= until {
                self.accept_paused_until = None;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
        }
        // Statements let go of by clients that left: closed on the backends.
        for _ in 0..8 {
            if !self.stmt_holders.borrow().has_released() {
                break;
            }
            self.close_released_stmts(None);
            self.run_deferred();
        }
        if self.shutdown_complete() {
            self.log_limit.take_all(log_limit::log_suppressed);
            info!("shutdown complete");
            return true;
        }
        false
    }

    fn run_deferred(&mut self) {
        // Each pass may defer more work; bound the passes so a pathological
        // chain cannot starve the poll.
        for _ in 0..64 {
            if self.deferred.is_empty() {
                return;
            }
            let work = std::mem::take(&mut self.deferred);
            for d in work {
                match d {
                    Deferred::ClientRead(key, serial) => {
                        if self.clients.get(key).is_some_and(|c| c.serial == serial) {
                            self.client_read(key);
                        }
                    }
                    Deferred::ClientInput(key, serial) => {
                        if self.clients.get(key).is_some_and(|c| c.serial == serial) {
                            self.process_client_input(key);
                        }
                    }
                    Deferred::BackendRead(key, serial) => {
                        if self.backends.get(key).is_some_and(|b| b.serial == serial) {
                            self.backend_read(key);
                        }
                    }
                    Deferred::ResumeAfterKill(key, serial) => {
                        if self.backends.get(key).is_some_and(|b| b.serial == serial) {
                            self.resume_after_kill(key);
                        }
                    }
                }
            }
        }
    }

    /// Count something for a pool and in the totals.
    fn bump(&mut self, pool: usize, f: impl Fn(&mut Counters)) {
        f(&mut self.counters);
        if let Some(p) = self.pools.get_mut(pool) {
            f(&mut p.counters);
        }
    }

    fn stats_queue_wait(&mut self, pool: usize, d: Duration) {
        self.stats.queue_wait(pool, d, self.now);
    }

    fn stats_service_time(&mut self, pool: usize, d: Duration) {
        self.stats.service(pool, d, self.now);
    }

    fn poll_timeout(&self) -> Duration {
        let mut next = self.now + MAX_POLL_TIMEOUT;
        if let Some(Reverse(t)) = self.timers.peek() {
            next = next.min(t.at);
        }
        for p in &self.pools {
            if let Some(at) = p.next_expiry() {
                next = next.min(at);
            }
            if p.missing_shared() > 0 {
                next = next.min(p.next_connect_at.max(self.now));
            }
        }
        if let Some(at) = self.accept_paused_until {
            next = next.min(at);
        }
        if !self.deferred.is_empty() {
            return Duration::ZERO;
        }
        // Round up so a timer is not polled for a few microseconds early.
        next.saturating_duration_since(self.now) + Duration::from_micros(200)
    }

    fn add_timer(&mut self, at: Instant, kind: TimerKind) {
        self.timers.push(Reverse(Timer { at, kind }));
    }

    fn fire_timers(&mut self) {
        while let Some(Reverse(t)) = self.timers.peek() {
            if t.at > self.now {
                break;
            }
            let Some(Reverse(t)) = self.timers.pop() else {
                break;
            };
            match t.kind {
                TimerKind::ClientHandshake { key, serial } => {
                    self.client_handshake_timeout(key, serial)
                }
                TimerKind::BackendConnect { key, serial } => {
                    self.backend_connect_timeout(key, serial)
                }
                TimerKind::ClientHalfClosed { key, serial } => {
                    self.client_half_closed_timeout(key, serial)
                }
                TimerKind::ClientIdle { key, serial } => self.client_idle_timer(key, serial, t.at),
                TimerKind::ClientAuthHold { key, serial } => {
                    self.client_auth_hold_over(key, serial)
                }
            }
        }
    }

    /// Periodic sweep: ping backends idle longer than the health-check
    /// interval (a dead one is replaced before a client meets it), and close
    /// clients that have not read their pending output for
    /// `client_write_timeout_ms`.
    fn janitor(&mut self) {
        // Said even when no event of the kind follows.
        self.log_limit
            .take_ended(self.now, log_limit::log_suppressed);
        self.auth_throttle.sweep(self.now);
        let interval = self.config.backend.health_check_interval;
        for p in 0..self.pools.len() {
            let due: Vec<usize> = self.pools[p]
                .idle
                .iter()
                .copied()
                .filter(|&b| {
                    self.backends.get(b).is_some_and(|b| {
                        self.now.saturating_duration_since(b.idle_since) >= interval
                    })
                })
                .collect();
            for b in due {
                self.pools[p].remove_idle(b);
                self.ping_backend(b);
            }
        }
        // The funnel's own steps (health-check pings, resets, replays) get
        // connect_timeout_ms to answer: a connection a firewall silently
        // dropped would otherwise stay out of service, and out of reach
        // of the pool's refill, for TCP's retransmission timeout.
        let step_timeout = self.config.backend.connect_timeout;
        let hung: Vec<usize> = self
            .backends
            .iter()
            .filter(|(_, b)| {
                !b.connecting
                    && matches!(b.state, backend::BackendState::Internal(_))
                    && self.now.saturating_duration_since(b.sent_at) >= step_timeout
            })
            .map(|(k, _)| k)
            .collect();
        for key in hung {
            let ms = step_timeout.as_millis();
            self.backend_lost(
                key,
                format!("no answer to the funnel's own command within {ms} ms"),
            );
        }
        // A response whose client left is read to its end so the
        // connection can be reused, but not for longer than that either: a
        // long report query would hold a shared backend for nobody.
        let slow_drains: Vec<usize> = self
            .backends
            .iter()
            .filter(|(_, b)| {
                b.state == backend::BackendState::Draining
                    && self.now.saturating_duration_since(b.drain_started) >= step_timeout
            })
            .map(|(k, _)| k)
            .collect();
        for key in slow_drains {
            info!(
                "closing backend connection {key}: the rest of a response its client left did not arrive within {} ms",
                step_timeout.as_millis()
            );
            let pool = self.backends[key].pool;
            self.close_backend(key);
            self.maintain_pool(pool);
        }
        let timeout = self.config.client_write_timeout;
        let stalled: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.write_stalled_since
                    .is_some_and(|t| self.now.saturating_duration_since(t) >= timeout)
            })
            .map(|(k, _)| k)
            .collect();
        for key in stalled {
            let c = &self.clients[key];
            log_limited!(
                self,
                LogEvent::ClientWriteTimeout,
                "client {} ({}) closed: it read none of its pending output for {} ms (client_write_timeout_ms)",
                c.id,
                c.host,
                timeout.as_millis()
            );
            self.close_client(key, "client_write_timeout_ms exceeded");
        }
    }

    fn expire_backlogs(&mut self) {
        for p in 0..self.pools.len() {
            while let Some(req) = self.pools[p].pop_expired(self.now) {
                self.queue_timeout(req);
            }
        }
    }

    fn accept(&mut self, index: usize) {
        if self.accept_paused_until.is_some() || self.shutting_down.is_some() {
            return;
        }
        loop {
            let accepted = match self.listeners.get_mut(index) {
                Some(Listener::Tcp(l)) => l.accept().map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    let sock = socket2::SockRef::from(&s);
                    let _ = sock.set_keepalive(true);
                    io::Stream::Tcp(s)
                }),
                Some(Listener::Unix(l, _)) => l.accept().map(|(s, _)| io::Stream::Unix(s)),
                None => return,
            };
            match accepted {
                Ok(stream) => self.new_client(stream),
                Err(e) if e.kind() == stdio::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == stdio::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the pending connection stays in
                    // the kernel queue; try again shortly.
                    log_limited!(
                        self,
                        LogEvent::AcceptPaused,
                        "accept failed ({e}); pausing accepts for {} ms",
                        ACCEPT_PAUSE.as_millis()
                    );
                    self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    fn handle_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let pending: Vec<i32> = signals.pending().collect();
        for sig in pending {
            match sig {
                signal_hook::consts::SIGHUP => {
                    // Only once READY=1 went out: a reload during start-up
                    // must not announce readiness early.
                    let notify = self.notified_ready && self.notifier.is_some();
                    if notify {
                        self.notify(&notify::reloading_message());
                    }
                    let _ = self.reload("SIGHUP");
                    if notify {
                        self.notify("READY=1\nSTATUS=serving");
                    }
                }
                _ => self.begin_shutdown(),
            }
        }
    }

    /// One message to systemd, if it listens.
    fn notify(&mut self, state: &str) {
        if let Some(n) = self.notifier.as_mut() {
            n.send(state);
        }
    }

    /// READY=1 once the client listeners are bound (they are, by the first
    /// turn of the loop) and a backend connection has logged in to mysqld,
    /// so that a client connecting then is served at once. A funnel with no
    /// configured pool (only relayed users) opens no backend by itself and
    /// is ready as soon as it listens.
    fn notify_ready_when_up(&mut self) {
        let no_pools = self.config.users.is_empty();
        if self.shutting_down.is_some() || !(self.backend_reached || no_pools) {
            return;
        }
        self.notified_ready = true;
        info!("ready: listening, and mysqld answers");
        self.notify("READY=1\nSTATUS=serving");
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down.is_some() {
            return;
        }
        info!(
            "shutting down: no new clients; finishing running and queued requests for up to {} ms",
            self.config.shutdown_timeout.as_millis()
        );
        self.shutting_down = Some(self.now + self.config.shutdown_timeout);
        self.notify("STOPPING=1\nSTATUS=shutting down");
        for l in &mut self.listeners {
            let _ = match l {
                Listener::Tcp(l) => self.poll.registry().deregister(l),
                Listener::Unix(l, path) => {
                    let _ = std::fs::remove_file(&*path);
                    self.poll.registry().deregister(l)
                }
            };
        }
        // Close them too: a deregistered listener still completes
        // handshakes in the kernel, and those clients would hang.
        self.listeners.clear();
    }

    /// During shutdown: idle clients are closed at once; busy ones when done
    /// or when the deadline passes. A client with output still to write is
    /// busy too: it is receiving an answer (a whole result buffered for a
    /// slow reader, with max_buffered_result).
    fn shutdown_complete(&mut self) -> bool {
        let Some(deadline) = self.shutting_down else {
            return false;
        };
        let past_deadline = self.now >= deadline;
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            let busy = self
                .clients
                .get(key)
                .is_some_and(|c| c.is_busy() || !c.wbuf.is_empty());
            if !busy || past_deadline {
                self.close_client_with_error(
                    key,
                    err::ER_SERVER_SHUTDOWN,
                    "funnel: server shutdown in progress",
                );
            }
        }
        self.clients.is_empty()
    }
}

fn bind_tcp(addr: SocketAddr) -> stdio::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn; ask for plenty so a burst
    // of web servers connecting at once is queued rather than refused.
    socket.listen(8192)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// The id of a group given by name or number (`unix_socket_group`).
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group)
        .map_err(|_| format!("unix_socket_group {group:?}: not a group name"))?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives it.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!("unix_socket_group: no group named {group:?}"));
    }
    Ok(grp.gr_gid)
}
