//! A pool: one per configured user, plus a second one for the user's clients
//! that negotiated `CLIENT_FOUND_ROWS` (see `found_rows`). It owns the
//! bounded backlog of requests waiting for a backend, and the set of idle
//! shared backends. The rule that pairs them is deliberately small: the
//! oldest request goes to an idle backend, preferring one whose session
//! already matches the client's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::UserConfig;

/// A client as seen from elsewhere: its slab key plus a serial number, so a
/// reused slab slot is never mistaken for the client that left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRef {
    pub key: usize,
    pub serial: u64,
}

/// A command waiting in the backlog. The command's bytes stay in the
/// client's input buffer: a client has at most one command in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub client: ClientRef,
    pub enqueued: Instant,
}

#[derive(Debug, PartialEq, Eq)]
pub struct BacklogFull {
    pub limit: usize,
}

pub struct Pool {
    pub index: usize,
    pub user: UserConfig,
    /// The backend server its connections go to (an index of the engine's
    /// servers): a pool is per (user, server).
    pub server: usize,
    /// Its backends log in with `CLIENT_FOUND_ROWS` (affected rows count the
    /// rows matched, not changed). The flag is fixed per connection at login
    /// and cannot be replayed, so clients that ask for it get a pool of their
    /// own, created at the first such login.
    pub found_rows: bool,
    /// The pool of relayed logins (`unlisted_users = relay`): no shared
    /// backends; each of its backends belongs to one client for its life.
    pub relay: bool,
    backlog: VecDeque<Request>,
    /// Idle shared backends, most recently used last: kept by the engine's
    /// `sync_idle_listing` alone (a backend is here exactly when it is idle,
    /// shared and serves nobody), read through `idle()`.
    idle: Vec<usize>,
    /// Shared backends that exist (connecting, idle or busy). These three
    /// counts change only through `count_backend` (from the engine's
    /// `open_backend_for`, `set_backend_role` and `close_backend`).
    pub shared: usize,
    /// Backends held by pinned clients.
    pub pinned: usize,
    /// Backends being connected (included in `shared` or `pinned`).
    pub connecting: usize,
    /// Next time a backend connection may be attempted (reconnect backoff).
    pub next_connect_at: Instant,
    pub backoff: Duration,
    /// Most recent backend connect or login failure, for clients' errors.
    pub last_backend_error: Option<String>,
    /// mysqld refused the pool's login (wrong password, unknown account,
    /// plugin): the ERR message clients get at once instead of waiting in
    /// the backlog, until a backend login succeeds again.
    pub login_refused: Option<String>,
    pub backlog_max: usize,
    pub counters: super::Counters,
    /// Schemas mysqld confirmed this user can use (a COM_INIT_DB that
    /// succeeded): a login naming one of them is answered at once instead
    /// of waiting in the backlog for a check. Forgotten when mysqld refuses.
    pub known_schemas: std::collections::HashSet<String>,
    /// What mysqld lets this pool's backend user do with other users'
    /// connections (process list, KILL); asked on its first backend
    /// connection (or by the first command that needs it, if that comes
    /// first).
    pub privileges: Option<super::processlist::Privileges>,
    /// A reload happened since: ask again on the next backend connection
    /// set up (new or reset), using the old answer until then.
    pub privileges_stale: bool,
    /// Admin `PAUSE pool`: no requests handed to backends until `RESUME pool`.
    pub paused: bool,
    /// The fewest shared backends beyond `connections` there were at any
    /// time since `extra_window_end - EXTRA_IDLE_TIMEOUT` (see
    /// `surplus_extras`).
    extra_low: usize,
    extra_window_end: Instant,
}

/// Before the user name of a removed pool: a name no client can send.
pub const REMOVED_PREFIX: &str = "\0removed:";

/// Bound on `known_schemas`, so a client cycling through names cannot grow it.
const KNOWN_SCHEMAS_MAX: usize = 4096;

/// How long connections kept beyond `connections` after their pinned
/// clients left (see [`Pool::keeps_extra`]) may go unneeded by any pin
/// before they are closed.
pub const EXTRA_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

impl Pool {
    pub fn new(index: usize, user: UserConfig, now: Instant) -> Self {
        Pool {
            index,
            user,
            server: 0,
            found_rows: false,
            relay: false,
            backlog: VecDeque::new(),
            idle: Vec::new(),
            shared: 0,
            pinned: 0,
            connecting: 0,
            next_connect_at: now,
            backoff: Duration::ZERO,
            last_backend_error: None,
            login_refused: None,
            backlog_max: 0,
            counters: super::Counters::default(),
            known_schemas: std::collections::HashSet::new(),
            privileges: None,
            privileges_stale: false,
            paused: false,
            extra_low: usize::MAX,
            extra_window_end: now + EXTRA_IDLE_TIMEOUT,
        }
    }

    /// Count a backend of the pool in (`add`) or out, by its role.
    pub fn count_backend(&mut self, pinned: bool, connecting: bool, add: bool) {
        let step = |n: &mut usize| {
            if add {
                *n += 1;
            } else {
                // The simulation's invariants hold these counts to the
                // backends that exist; a release build must not die of it.
                debug_assert!(*n > 0, "a pool count went below zero");
                *n = n.saturating_sub(1);
            }
        };
        step(if pinned {
            &mut self.pinned
        } else {
            &mut self.shared
        });
        if connecting {
            step(&mut self.connecting);
        }
    }

    /// The pool of this pool's user for clients that negotiated
    /// `CLIENT_FOUND_ROWS`: same user, limits and confirmed schemas (the
    /// schemas are a matter of grants, which the flag does not change).
    pub fn found_rows_twin(&self, index: usize, now: Instant) -> Self {
        Pool {
            found_rows: true,
            known_schemas: self.known_schemas.clone(),
            privileges: self.privileges,
            ..Pool::new(index, self.user.clone(), now)
        }
    }

    /// The name operators and clients see: the user's name, with
    /// `/found_rows` for the `CLIENT_FOUND_ROWS` pool and `removed:` before
    /// a user no longer in the configuration.
    pub fn name(&self) -> String {
        let user = self.user.name.trim_start_matches('\0');
        if self.found_rows {
            format!("{user}/found_rows")
        } else {
            user.to_string()
        }
    }

    /// Its user was removed from the configuration by a reload: no new
    /// logins, and it drains (see `missing_shared`).
    pub fn is_removed(&self) -> bool {
        self.user.name.starts_with(REMOVED_PREFIX)
    }

    /// The configured user a removed pool belonged to.
    pub fn removed_user(&self) -> Option<&str> {
        self.user.name.strip_prefix(REMOVED_PREFIX)
    }

    pub fn schema_confirmed(&mut self, schema: &str) {
        if self.known_schemas.len() >= KNOWN_SCHEMAS_MAX {
            self.known_schemas.clear();
        }
        if !self.known_schemas.contains(schema) {
            self.known_schemas.insert(schema.to_string());
        }
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// The client has a request in the backlog.
    pub fn is_waiting(&self, client: ClientRef) -> bool {
        self.backlog.iter().any(|r| r.client == client)
    }

    /// Add a request at the tail, or refuse it when the backlog is full.
    pub fn enqueue(&mut self, req: Request) -> Result<(), BacklogFull> {
        if self.backlog.len() >= self.user.backlog_size {
            return Err(BacklogFull {
                limit: self.user.backlog_size,
            });
        }
        self.backlog.push_back(req);
        self.backlog_max = self.backlog_max.max(self.backlog.len());
        Ok(())
    }

    pub fn pop(&mut self) -> Option<Request> {
        self.backlog.pop_front()
    }

    /// Put a request back at the head (its backend could not take it).
    pub fn push_front(&mut self, req: Request) {
        self.backlog.push_front(req);
    }

    /// Remove and return the oldest request if it has waited its limit.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Request> {
        let head = self.backlog.front()?;
        if now.duration_since(head.enqueued) >= self.user.queue_timeout {
            self.backlog.pop_front()
        } else {
            None
        }
    }

    pub fn oldest_enqueued(&self) -> Option<Instant> {
        self.backlog.front().map(|r| r.enqueued)
    }

    /// When the oldest request times out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.backlog
            .front()
            .map(|r| r.enqueued + self.user.queue_timeout)
    }

    /// The idle backend to take, the best by `score` (higher is better;
    /// ties go to the most recently used, whose caches are warm). None
    /// also when `connections` shared backends are busy already: those
    /// kept beyond it (`keeps_extra`) wait for pinned clients, they do not
    /// add to how many commands run at once. It leaves the list when the
    /// engine gives it a client.
    pub fn pick_idle(&self, mut score: impl FnMut(usize) -> u32) -> Option<usize> {
        if self.shared.saturating_sub(self.idle.len()) >= self.user.connections {
            return None;
        }
        let mut best: Option<(usize, u32)> = None;
        for &b in self.idle.iter().rev() {
            let s = score(b);
            if best.is_none_or(|(_, bs)| s > bs) {
                best = Some((b, s));
            }
        }
        best.map(|(b, _)| b)
    }

    /// Idle shared backends, most recently used last.
    pub fn idle(&self) -> &[usize] {
        &self.idle
    }

    /// Only for `sync_idle_listing` (backend/mod.rs), and benchmarks.
    pub fn list_idle(&mut self, backend: usize) {
        debug_assert!(
            !self.idle.contains(&backend),
            "backend {backend} listed twice as idle"
        );
        self.idle.push(backend);
    }

    /// Only for `sync_idle_listing` (backend/mod.rs), benchmarks and the
    /// simulation's test of its own checker.
    pub fn unlist_idle(&mut self, backend: usize) {
        if let Some(i) = self.idle.iter().position(|&b| b == backend) {
            self.idle.remove(i);
        }
    }

    /// Shared backends missing from the configured count.
    pub fn missing_shared(&self) -> usize {
        if self.is_removed() {
            // Draining: no backends kept open for nobody (nor logins retried
            // against a mysqld that may refuse them now), only one for each
            // command still waiting, up to the configured count.
            let room = if self.user.max_pinned_backends == 0 {
                self.user.connections.saturating_sub(self.pinned)
            } else {
                self.user.connections
            };
            return self.backlog.len().min(room).saturating_sub(self.shared);
        }
        if self.user.max_pinned_backends == 0 {
            // No extra connections: pinned ones come out of the configured count.
            self.user
                .connections
                .saturating_sub(self.shared + self.pinned)
        } else {
            self.user.connections.saturating_sub(self.shared)
        }
    }

    /// A shared backend beyond `connections` may stay open rather than be
    /// closed: one whose pinned client left, kept for the next client that
    /// pins (which takes a shared backend, and this one takes its place),
    /// so that a pin costs no new mysqld connection. Only within the pinned
    /// allowance: the pool never holds more than `connections +
    /// max_pinned_backends`; and only while pins need them (`surplus_extras`).
    pub fn keeps_extra(&self) -> bool {
        self.user.max_pinned_backends > 0
            && !self.relay
            && !self.is_removed()
            && self.shared + self.pinned <= self.user.connections + self.user.max_pinned_backends
    }

    /// Called at every turn of the loop: how many of the shared backends
    /// beyond `connections` to close now. Those are the fewest there were
    /// at any time over the last `EXTRA_IDLE_TIMEOUT`: that many were not
    /// needed by any pin for that long (a burst of pins is over). Each pin
    /// makes one fewer (it takes a shared backend), so under steady pins
    /// the pool keeps what their peak needs.
    pub fn surplus_extras(&mut self, now: Instant) -> usize {
        let extra = self.shared.saturating_sub(self.user.connections);
        self.extra_low = self.extra_low.min(extra);
        if now < self.extra_window_end {
            return 0;
        }
        let surplus = self.extra_low;
        self.extra_low = usize::MAX;
        self.extra_window_end = now + EXTRA_IDLE_TIMEOUT;
        surplus
    }

    /// How many clients may hold a backend pinned at once.
    pub fn pin_limit(&self) -> usize {
        if self.user.max_pinned_backends == 0 {
            // One connection always stays shared, so unpinned clients progress.
            self.user.connections.saturating_sub(1)
        } else {
            self.user.max_pinned_backends
        }
    }

    /// Requests of clients that left are skipped by the caller; this drops
    /// every request of one client (used when a client is killed).
    pub fn remove_client(&mut self, client: ClientRef) -> bool {
        let before = self.backlog.len();
        self.backlog.retain(|r| r.client != client);
        before != self.backlog.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credential;

    fn user(backlog: usize, timeout_ms: u64) -> UserConfig {
        UserConfig {
            name: "u".into(),
            credential: Credential::Plain("p".into()),
            backend_user: "u".into(),
            backend_password: "p".into(),
            connections: 2,
            backlog_size: backlog,
            queue_timeout: Duration::from_millis(timeout_ms),
            max_pinned_backends: 1,
            max_client_connections: 0,
            allowed_networks: Vec::new(),
            require_tls: false,
            servers: vec!["backend".into()],
            read_write_split: false,
        }
    }

    fn req(key: usize, at: Instant) -> Request {
        Request {
            client: ClientRef { key, serial: 1 },
            enqueued: at,
        }
    }

    #[test]
    fn backlog_is_bounded_fifo() {
        let now = Instant::now();
        let mut p = Pool::new(0, user(3, 1000), now);
        for k in 0..3 {
            p.enqueue(req(k, now)).unwrap();
        }
        assert_eq!(p.enqueue(req(9, now)), Err(BacklogFull { limit: 3 }));
        assert_eq!(p.pop().unwrap().client.key, 0);
        assert_eq!(p.pop().unwrap().client.key, 1);
        p.enqueue(req(7, now)).unwrap();
        assert_eq!(p.pop().unwrap().client.key, 2);
        assert_eq!(p.pop().unwrap().client.key, 7);
        assert!(p.pop().is_none());
        assert_eq!(p.backlog_max, 3);
    }

    #[test]
    fn expiry_takes_only_old_heads() {
        let t0 = Instant::now();
        let mut p = Pool::new(0, user(10, 100), t0);
        p.enqueue(req(1, t0)).unwrap();
        p.enqueue(req(2, t0 + Duration::from_millis(50))).unwrap();
        assert!(p.pop_expired(t0 + Duration::from_millis(99)).is_none());
        assert_eq!(p.next_expiry(), Some(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_millis(120);
        assert_eq!(p.pop_expired(later).unwrap().client.key, 1);
        assert!(p.pop_expired(later).is_none());
        assert_eq!(p.backlog_len(), 1);
    }

    #[test]
    fn idle_choice_prefers_score_then_recency() {
        let mut p = Pool::new(0, user(10, 100), Instant::now());
        p.idle = vec![10, 11, 12];
        assert_eq!(p.pick_idle(|_| 0), Some(12));
        assert_eq!(p.pick_idle(|b| u32::from(b == 10)), Some(10));
        p.unlist_idle(12);
        assert_eq!(p.pick_idle(|_| 0), Some(11));
        p.unlist_idle(11);
        p.unlist_idle(10);
        assert_eq!(p.pick_idle(|_| 0), None);
    }

    #[test]
    fn found_rows_twin_shares_user_and_schemas_not_backlog() {
        let now = Instant::now();
        let mut p = Pool::new(0, user(3, 1000), now);
        p.schema_confirmed("app");
        p.enqueue(req(1, now)).unwrap();
        let twin = p.found_rows_twin(5, now);
        assert!(twin.found_rows && !p.found_rows);
        assert_eq!(twin.index, 5);
        assert_eq!(twin.user.name, "u");
        assert!(twin.known_schemas.contains("app"));
        assert_eq!(twin.backlog_len(), 0);
        assert_eq!(
            (p.name().as_str(), twin.name().as_str()),
            ("u", "u/found_rows")
        );
        p.user.name = "\0removed:u".into();
        assert_eq!(p.name(), "removed:u");
        assert!(p.is_removed() && !twin.is_removed());
        assert_eq!(p.removed_user(), Some("u"));
    }

    #[test]
    fn extras_never_run_more_than_connections_commands() {
        let mut p = Pool::new(0, user(10, 100), Instant::now());
        // connections = 2: two busy shared backends and two idle extras
        // kept after their pinned clients left.
        p.shared = 4;
        p.idle = vec![10, 11];
        assert_eq!(p.pick_idle(|_| 0), None, "two commands run already");
        p.idle = vec![10, 11, 12];
        assert_eq!(p.pick_idle(|_| 0), Some(12), "one of the two is done");
        p.unlist_idle(12);
        assert_eq!(p.pick_idle(|_| 0), None);
    }

    #[test]
    fn extras_are_kept_within_the_pinned_allowance_only() {
        let mut p = Pool::new(0, user(10, 100), Instant::now());
        // connections = 2, max_pinned_backends = 1.
        p.shared = 3;
        assert!(p.keeps_extra(), "2 shared + 1 for the allowance");
        p.pinned = 1;
        assert!(!p.keeps_extra(), "the allowance is in use by a pin");
        p.pinned = 0;
        p.shared = 4;
        assert!(!p.keeps_extra());
        p.shared = 3;
        p.user.max_pinned_backends = 0;
        assert!(!p.keeps_extra(), "pins come out of the shared ones");
        p.user.max_pinned_backends = 1;
        p.user.name = format!("{REMOVED_PREFIX}u");
        assert!(!p.keeps_extra(), "a removed user's pool drains");
    }

    #[test]
    fn extras_no_pin_needed_for_a_whole_window_are_surplus() {
        let t0 = Instant::now();
        let mut p = Pool::new(0, user(10, 100), t0);
        p.user.max_pinned_backends = 4;
        let w = EXTRA_IDLE_TIMEOUT;
        let at = |k: u32| t0 + w * k / 4;
        // Three extras; pins keep taking up to two of them in the first
        // window: one was never needed.
        p.shared = 5;
        assert_eq!(p.surplus_extras(at(1)), 0);
        p.shared = 3;
        assert_eq!(p.surplus_extras(at(2)), 0);
        p.shared = 5;
        assert_eq!(p.surplus_extras(at(4)), 1);
        p.shared = 4;
        // A steady pin uses the one left over.
        for k in 5..8 {
            p.shared = if k % 2 == 0 { 2 } else { 4 };
            assert_eq!(p.surplus_extras(at(k)), 0);
        }
        p.shared = 4;
        assert_eq!(p.surplus_extras(at(8)), 0, "the window saw a pin take both");
        // No pin for a whole window: both go.
        for k in 9..12 {
            assert_eq!(p.surplus_extras(at(k)), 0);
        }
        assert_eq!(p.surplus_extras(at(12)), 2);
        p.shared = 2;
        assert_eq!(p.surplus_extras(at(16)), 0);
    }

    #[test]
    fn removed_pool_wants_backends_only_for_waiting_commands() {
        let now = Instant::now();
        let mut p = Pool::new(0, user(10, 1000), now);
        assert_eq!(p.missing_shared(), 2);
        p.user.name = format!("{REMOVED_PREFIX}u");
        assert_eq!(p.missing_shared(), 0);
        p.enqueue(req(1, now)).unwrap();
        assert_eq!(p.missing_shared(), 1);
        for k in 2..6 {
            p.enqueue(req(k, now)).unwrap();
        }
        assert_eq!(p.missing_shared(), 2, "never beyond the configured count");
        p.shared = 1;
        assert_eq!(p.missing_shared(), 1);
    }
}
