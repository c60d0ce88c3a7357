//! The funnel daemon, in two parts:
//!
//! - the **engine** ([`Engine`], this file and the files beside it): every
//!   client's and backend's state and buffers, the pools with their
//!   backlogs, sessions, timers and statistics. It does no I/O: it is fed
//!   events (bytes read, output written, a connect done, the time) and
//!   queues [`action::Action`]s (write, read on, connect, close).
//! - the **I/O layer** ([`event_loop`]): one mio event loop that owns the
//!   sockets and carries the actions out.
//!
//! Each pass, with one cached `now`: poll (timeout = the engine's next
//! deadline), dispatch events, carry out the actions, then the engine's
//! periodic work (timers, backlog expiry, janitor, pool top-up).

pub use crate::control::Counters;
pub(crate) use crate::log_limit;

pub mod action;
mod auth_throttle;
mod backend;
pub mod backend_server;
mod balance;
mod client;
mod client_track;
pub mod event_loop;
mod handoff;
mod handoff_io;
pub mod io;
mod loops;
pub mod notify;
mod ops;
pub mod pool;
mod processlist;
mod relay;
pub mod result_cache;
mod routing;
mod rules;
mod servers;
pub mod session;
/// The whole-funnel simulation (unit tests and the `funnel` fuzz target):
/// only in tests and with the `fuzzing` feature.
#[cfg(any(test, feature = "fuzzing"))]
pub mod sim;
pub mod statement;
pub mod stats;
pub mod stmt;
mod tally;
mod timer;
mod tls_io;
mod transfer;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use log::info;
use slab::Slab;

use crate::config::{Config, LoopShare};
use crate::protocol::consts::err;
use action::{Action, ConnId};
use backend::Backend;
use client::Client;
use io::BufPool;
use log_limit::LogEvent;
use pool::Pool;
use timer::{Timer, TimerKind};

/// Largest buffer the buffer pool keeps for reuse; larger ones are freed.
const POOLED_BUF_MAX: usize = 256 * 1024;
/// How often the janitor sweeps (health checks, stalled writers).
const JANITOR_INTERVAL: Duration = Duration::from_millis(1000);
/// Upper bound on the poll timeout, so periodic work runs without a timer.
const MAX_POLL_TIMEOUT: Duration = Duration::from_millis(1000);

/// Engine work postponed to the end of the current handler, so that
/// resuming one connection from inside another's handler cannot recurse.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deferred {
    /// Handle input already buffered (a read may be paused meanwhile).
    ClientInput(usize, u64),
    /// The last `KILL QUERY` against a backend is over.
    ResumeAfterKill(usize, u64),
    /// Room is free on a server (`max_concurrency`) that pools wait for.
    ServerTurns(usize),
}

/// The funnel's state and decisions, without sockets (see the module
/// documentation).
pub struct Engine {
    /// This loop's share of the configuration (`config::LoopShare`): what
    /// its engine runs with.
    config: Config,
    /// The configuration as the file (and admin SETs) say, for reloads,
    /// SETs and the admin's view.
    full_config: Config,
    /// Which loop this engine runs in, of how many.
    share: LoopShare,
    /// What the loops share (connection ids, the client count).
    shared: std::sync::Arc<loops::Shared>,
    clients: Slab<Client>,
    backends: Slab<Backend>,
    pools: Vec<Pool>,
    timers: BinaryHeap<Reverse<Timer>>,
    bufs: BufPool,
    /// Scratch space for packets the funnel builds itself.
    scratch: Vec<u8>,
    serial: u64,
    shutting_down: Option<Instant>,
    now: Instant,
    pub counters: Counters,
    /// Sum of the clients' `buffered` bytes (bounded by max_buffered_total).
    buffered_total: usize,
    /// Prepared statements all clients hold (max_prepared_stmt_count),
    /// kept by each client's `ClientStmts`.
    prepared_stmts: stmt::StmtTotal,
    /// Each pool's clients by state, pin cause, buffered bytes and
    /// statements, kept by the clients themselves (`tally.rs`).
    tallies: tally::TallyBook,
    /// Which backend cache keys clients' statements hold; the keys let go
    /// of are closed on the backends (`close_released_stmts`).
    stmt_holders: std::rc::Rc<std::cell::RefCell<stmt::StmtHolders>>,
    /// Scratch list of released keys.
    released_keys: Vec<u64>,
    deferred: Vec<Deferred>,
    /// What the I/O layer is to do (`take_actions`).
    actions: Vec<Action>,
    /// Funnel connection id → client key, for KILL.
    client_ids: HashMap<u32, usize>,
    /// The mysqld servers, and what the funnel learnt of each; pools name
    /// theirs (`servers.rs`). Never shrinks: a removed server is marked.
    servers: Vec<backend_server::BackendServer>,
    /// A client's share of an OK's session-state block is built here.
    track_buf: Vec<u8>,
    /// Admin PAUSE: requests stay in the backlog.
    paused: bool,
    /// Rate limit of the log lines remote parties and failures cause.
    log_limit: log_limit::LogLimiter,
    last_janitor: Instant,
    /// When the last periodic summary line was logged, and the request
    /// count then (`stats_log_interval_ms`).
    last_stats_log: Instant,
    requests_at_stats_log: u64,
    stats: stats::Stats,
    control: Option<crate::control::ControlReceiver>,
    started: Instant,
    /// READY=1 announced (`Action::Notify`).
    notified_ready: bool,
    /// "shutdown complete" logged.
    shutdown_said: bool,
    /// Handing clients to a newer funnel process, or adopting them.
    handoff: handoff::Handoff,
    /// The servers' checkers are to be (re)started (`take_health_targets`).
    health_targets_stale: bool,
    /// The pass of the server last given a command (`BackendServer::pass`).
    turns: u64,
    /// `[rule]` sections and the result cache.
    rules: rules::RuleBook,
    /// A client being adopted whose first command, unread again in its
    /// input, waited in another loop's backlog since then (`balance.rs`):
    /// set by `adopt_client`, cleared once that command is handled.
    queued_elsewhere: Option<(usize, Instant)>,
}

pub use event_loop::{run, AdminStarter};

impl Engine {
    /// The engine of the only loop (the simulation's, unit tests').
    #[cfg(any(test, feature = "fuzzing"))]
    fn new(config: Config, now: Instant) -> Engine {
        Engine::in_loop(config, now, LoopShare::ALONE, Default::default())
    }

    /// The engine of loop `share.index` (see `loops.rs`).
    fn in_loop(
        full_config: Config,
        now: Instant,
        share: LoopShare,
        shared: std::sync::Arc<loops::Shared>,
    ) -> Engine {
        let config = full_config.for_loop(share);
        let prepared_stmts = shared.prepared_stmts.clone();
        let npools = config.users.len();
        let servers = servers::from_config(&config);
        let pools = config
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| Pool::new(i, u.clone(), &servers::indexes(&servers, &u.servers), now))
            .collect();
        let rules = rules::RuleBook::new(&config.rules);
        Engine {
            rules,
            config,
            full_config,
            share,
            shared,
            clients: Slab::with_capacity(1024),
            backends: Slab::with_capacity(64),
            pools,
            timers: BinaryHeap::new(),
            bufs: BufPool::new(POOLED_BUF_MAX, 1024),
            scratch: Vec::with_capacity(4096),
            serial: 0,
            shutting_down: None,
            now,
            counters: Counters::default(),
            buffered_total: 0,
            prepared_stmts,
            tallies: Default::default(),
            stmt_holders: Default::default(),
            released_keys: Vec::new(),
            deferred: Vec::new(),
            actions: Vec::with_capacity(64),
            client_ids: HashMap::new(),
            servers,
            track_buf: Vec::with_capacity(256),
            paused: false,
            log_limit: log_limit::LogLimiter::default(),
            last_janitor: now,
            last_stats_log: now,
            requests_at_stats_log: 0,
            stats: stats::Stats::new(npools),
            control: None,
            started: now,
            notified_ready: false,
            shutdown_said: false,
            handoff: handoff::Handoff::default(),
            health_targets_stale: true,
            turns: 0,
            queued_elsewhere: None,
        }
    }

    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// The time of this pass (set by the I/O layer).
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// Before the first pass: open the pools' backend connections.
    pub(crate) fn start(&mut self, now: Instant) {
        self.now = now;
        for p in 0..self.pools.len() {
            self.attach_pool_head(p);
            self.maintain_pool(p);
        }
    }

    /// Hand the queued actions to the I/O layer (into `out`, which must be
    /// empty; the two vectors swap).
    pub(crate) fn take_actions(&mut self, out: &mut Vec<Action>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut self.actions, out);
    }

    pub(crate) fn client_is(&self, key: usize, serial: u64) -> bool {
        self.clients.get(key).is_some_and(|c| c.serial == serial)
    }

    pub(crate) fn backend_is(&self, key: usize, serial: u64) -> bool {
        self.backends.get(key).is_some_and(|b| b.serial == serial)
    }

    pub(crate) fn client_conn(&self, key: usize) -> Option<ConnId> {
        self.clients.get(key).map(|c| c.conn)
    }

    pub(crate) fn backend_conn(&self, key: usize) -> Option<ConnId> {
        self.backends
            .get(key)
            .map(|b| b.conn)
            .filter(|&c| c != ConnId::NONE)
    }

    /// The client's socket and pending output, for the I/O layer to write.
    pub(crate) fn client_output(&mut self, key: usize) -> Option<(ConnId, &mut io::Buf)> {
        self.clients.get_mut(key).map(|c| (c.conn, &mut c.wbuf))
    }

    /// The backend's socket and pending output.
    pub(crate) fn backend_output(&mut self, key: usize) -> Option<(ConnId, &mut io::Buf)> {
        self.backends
            .get_mut(key)
            .filter(|b| b.conn != ConnId::NONE)
            .map(|b| (b.conn, &mut b.wbuf))
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.is_some()
    }

    /// READY=1 has been announced.
    pub(crate) fn ready_announced(&self) -> bool {
        self.notified_ready
    }

    /// The periodic work after each poll. True once a shutdown has completed.
    pub(crate) fn after_events(&mut self) -> bool {
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
        self.dispatch_waiting();
        self.balance_backlogs();
        self.release_stranded_waiters();
        let every = self.config.stats_log_interval;
        if !every.is_zero() && self.now.saturating_duration_since(self.last_stats_log) >= every {
            self.log_stats_summary();
        }
        if self.now.saturating_duration_since(self.last_janitor) >= JANITOR_INTERVAL {
            self.last_janitor = self.now;
            self.janitor();
        }
        for p in 0..self.pools.len() {
            self.maintain_pool(p);
        }
        // Includes closing the statements let go of meanwhile.
        self.run_deferred();
        if self.shutdown_complete() {
            if !self.shutdown_said {
                // (The first loop turns on until the others are done.)
                self.shutdown_said = true;
                self.log_limit.take_all(log_limit::log_suppressed);
                info!("shutdown complete");
            }
            return true;
        }
        false
    }

    /// Engine work deferred by handlers (see `Deferred`), and the closing
    /// of prepared statements nobody holds any more.
    pub(crate) fn run_deferred(&mut self) {
        // Each pass may defer more work; bound the passes so a pathological
        // chain cannot starve the poll.
        for _ in 0..64 {
            if self.deferred.is_empty() {
                // Statements let go of by clients that left (also by a
                // close the I/O layer reported late in a pass): closed on
                // the backends now, not a pass later.
                if !self.stmt_holders.borrow().has_released() {
                    return;
                }
                self.close_released_stmts(None);
                continue;
            }
            let work = std::mem::take(&mut self.deferred);
            for d in work {
                match d {
                    Deferred::ClientInput(key, serial) => {
                        if self.client_is(key, serial) {
                            self.process_client_input(key);
                        }
                    }
                    Deferred::ResumeAfterKill(key, serial) => {
                        if self.backend_is(key, serial) {
                            self.resume_after_kill(key);
                        }
                    }
                    Deferred::ServerTurns(server) => self.serve_turns(server),
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

    /// How long the I/O layer may wait for events: until the next
    /// deadline (timers, backlog expiry, reconnects), or not at all when
    /// work is pending.
    pub(crate) fn poll_timeout(&self) -> Duration {
        let mut next = self.now + MAX_POLL_TIMEOUT;
        if let Some(Reverse(t)) = self.timers.peek() {
            next = next.min(t.at);
        }
        if let Some(at) = self.rules.next_deadline() {
            next = next.min(at.max(self.now));
        }
        if let Some(at) = self.next_balance() {
            next = next.min(at.max(self.now));
        }
        for p in &self.pools {
            if let Some(at) = p.next_expiry() {
                next = next.min(at);
            }
            for (slot, s) in p.servers.iter().enumerate() {
                if p.missing_shared_on(slot) > 0 && self.servers[s.server].in_rotation() {
                    next = next.min(s.next_connect_at.max(self.now));
                }
            }
        }
        if !self.deferred.is_empty() || !self.actions.is_empty() {
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
        self.auth_throttle().sweep(self.now);
        let interval = self.config.backend.health_check_interval;
        for p in 0..self.pools.len() {
            let due: Vec<usize> = self.pools[p]
                .idle()
                .iter()
                .copied()
                .filter(|&b| {
                    self.backends.get(b).is_some_and(|b| {
                        self.now.saturating_duration_since(b.idle_since) >= interval
                    })
                })
                .collect();
            for b in due {
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
                "{} closed: it read none of its pending output for {} ms (client_write_timeout_ms)",
                c.label(),
                timeout.as_millis()
            );
            self.close_client(key, "client_write_timeout_ms exceeded");
        }
    }

    /// The periodic summary line: clients, backlog, queries per second and
    /// end-to-end latency over the interval since the last one.
    fn log_stats_summary(&mut self) {
        let elapsed = self.now.saturating_duration_since(self.last_stats_log);
        self.last_stats_log = self.now;
        let requests = self.counters.requests - self.requests_at_stats_log;
        self.requests_at_stats_log = self.counters.requests;
        let (mut queued, mut running, mut pinned) = (0, 0, 0);
        for (_, c) in &self.clients {
            queued += usize::from(c.is_queued());
            running += usize::from(c.is_running());
            pinned += usize::from(c.pinned.is_some());
        }
        let backlog: usize = self.pools.iter().map(|p| p.backlog_len()).sum();
        let seconds = (elapsed.as_secs_f64().round() as usize).clamp(1, stats::WINDOW_SECONDS);
        let latency: Vec<_> = (0..self.pools.len())
            .map(|p| self.stats.pool_latency(p).end_to_end.last(seconds))
            .collect();
        let e2e = crate::control::Hist::merge(latency.iter());
        let ms = |us: u64| us as f64 / 1000.0;
        // Each loop says its own part (`threads`): the admin side has the sum.
        let part = if self.share.count > 1 {
            format!(
                ", event loop {} of {}",
                self.share.index + 1,
                self.share.count
            )
        } else {
            String::new()
        };
        info!(
            "stats: {} clients ({queued} queued, {running} running, {pinned} pinned), backlog {backlog}, {:.0} queries/s, end to end p50 {:.2} ms p99 {:.2} ms over the last {} s{part}",
            self.clients.len(),
            requests as f64 / elapsed.as_secs_f64().max(0.001),
            ms(e2e.quantile(0.5)),
            ms(e2e.quantile(0.99)),
            elapsed.as_secs()
        );
    }

    /// Once a pass: a pool whose backlog waits while one of its
    /// connections is idle (or, pipelining, busy) dispatches. Every way
    /// room appears should dispatch at once; one that does not (a shared
    /// connection pinned at the end of an answer did not) costs a pass,
    /// not a queue timeout.
    fn dispatch_waiting(&mut self) {
        let pipelining = self.config.backend.pipeline_depth > 1;
        for p in 0..self.pools.len() {
            let pool = &self.pools[p];
            if pool.backlog_len() > 0 && (pipelining || !pool.idle().is_empty()) {
                self.dispatch(p);
            }
        }
    }

    fn expire_backlogs(&mut self) {
        for p in 0..self.pools.len() {
            while let Some(req) = self.pools[p].pop_expired(self.now) {
                self.queue_timeout(req);
            }
        }
        if self.config.backend.pipeline_depth > 1 {
            self.expire_pipelined();
        }
    }

    /// One message to systemd, if it listens.
    fn notify(&mut self, state: &str) {
        self.actions.push(Action::Notify(state.to_string()));
    }

    /// READY=1 once the client listeners are bound (they are, by the first
    /// turn of the loop) and a backend connection has logged in to mysqld,
    /// so that a client connecting then is served at once. A funnel with no
    /// configured pool (only relayed users) opens no backend by itself and
    /// is ready as soon as it listens.
    fn notify_ready_when_up(&mut self) {
        let no_pools = self.config.users.is_empty();
        let reached = self.servers.iter().any(|s| s.reached);
        if self.share.index > 0 {
            // The first loop says it, for all (`loops.rs`).
            if reached {
                self.shared.mysqld_answered();
                self.notified_ready = true;
            }
            return;
        }
        let reached = reached || self.shared.mysqld_answered_anywhere();
        if self.shutting_down.is_some() || !(reached || no_pools) {
            return;
        }
        self.notified_ready = true;
        info!("ready: listening, and mysqld answers");
        self.notify("READY=1\nSTATUS=serving");
    }

    /// Stop taking new clients (the I/O layer closes its listeners) and
    /// finish the work in hand.
    pub(crate) fn begin_shutdown(&mut self) {
        if self.shutting_down.is_some() {
            return;
        }
        info!(
            "shutting down: no new clients; finishing running and queued requests for up to {} ms",
            self.config.shutdown_timeout.as_millis()
        );
        self.shutting_down = Some(self.now + self.config.shutdown_timeout);
        self.leave_balance();
        if self.share.index > 0 && !self.handoff.successor_told {
            // Whether there is a newer funnel to hand the clients to is the
            // first loop's to find out (`loops.rs`): idle clients wait for
            // its word, a few seconds at most.
            self.successor_pending(self.now + loops::SUCCESSOR_WORD_WAIT);
        }
        self.notify("STOPPING=1\nSTATUS=shutting down");
    }

    /// During shutdown: clients not busy with a command are handed over to
    /// a successor, or closed between their commands (`handoff.rs`); busy
    /// ones when done, or with ERR 1053 when the deadline passes. A client
    /// with output still to write is busy too: it is receiving an answer (a
    /// whole result buffered for a slow reader, with max_buffered_result).
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
            if busy && past_deadline {
                self.close_client_with_error(
                    key,
                    err::ER_SERVER_SHUTDOWN,
                    "funnel: server shutdown in progress",
                );
            } else if !busy {
                self.shutdown_idle_client(key, past_deadline);
            }
        }
        if self.clients.is_empty() {
            self.log_handoff_summary();
        }
        self.clients.is_empty()
    }
}
