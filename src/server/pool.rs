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
    /// Taken from another loop's backlog (`balance.rs`): it stays here.
    pub moved: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct BacklogFull {
    pub limit: usize,
}

/// A pool's connections to one of its servers.
pub struct PoolServer {
    /// The engine's index of the server.
    pub server: usize,
    /// The user's configuration no longer names it: its connections close
    /// as they go idle and none is opened.
    pub removed: bool,
    /// Its shared backends (connecting, idle or busy), pinned ones, and
    /// those being connected (in `shared` or `pinned`): this server's part
    /// of the pool's counts, changed with them in `Pool::count_backend`.
    pub shared: usize,
    pub pinned: usize,
    pub connecting: usize,
    /// Its backends on the pool's idle list.
    pub idle: usize,
    /// Next time a connection to it may be attempted (reconnect backoff).
    pub next_connect_at: Instant,
    pub backoff: Duration,
}

impl PoolServer {
    pub fn new(server: usize, now: Instant) -> Self {
        PoolServer {
            server,
            removed: false,
            shared: 0,
            pinned: 0,
            connecting: 0,
            idle: 0,
            next_connect_at: now,
            backoff: Duration::ZERO,
        }
    }

    /// Its shared backends that serve a command now.
    fn busy(&self) -> usize {
        self.shared.saturating_sub(self.idle)
    }
}

pub struct Pool {
    pub index: usize,
    pub user: UserConfig,
    /// The servers its connections go to, each with its part of the
    /// counts. A backend names its entry (`Backend::slot`); entries are
    /// never removed (a server the user no longer names is marked
    /// `removed`), so that a slot stays valid for the pool's life.
    pub servers: Vec<PoolServer>,
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
    /// Where this loop tells the others when its oldest waiting request
    /// was queued (`threads` above 1: `balance.rs`).
    pub head: Option<super::balance::HeadSlot>,
    /// When this loop next compares its oldest waiting request with the
    /// other loops' (`balance.rs`).
    pub balance_at: Option<Instant>,
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
    /// A pool over the engine's servers `servers` (never empty).
    pub fn new(index: usize, user: UserConfig, servers: &[usize], now: Instant) -> Self {
        Pool {
            index,
            user,
            servers: servers.iter().map(|&s| PoolServer::new(s, now)).collect(),
            found_rows: false,
            relay: false,
            backlog: VecDeque::new(),
            idle: Vec::new(),
            shared: 0,
            pinned: 0,
            connecting: 0,
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
            head: None,
            balance_at: None,
        }
    }

    /// Use the servers `servers` (engine indexes) from now on: new ones get
    /// an entry, those no longer named are marked removed (their entries
    /// stay: backends name them).
    pub fn use_servers(&mut self, servers: &[usize], now: Instant) {
        for s in &mut self.servers {
            s.removed = !servers.contains(&s.server);
        }
        for &server in servers {
            if !self.servers.iter().any(|s| s.server == server) {
                self.servers.push(PoolServer::new(server, now));
            }
        }
    }

    /// The server whose defaults (character sets, timeouts, session
    /// tracking) its clients start from: the first it names. The servers of
    /// one pool are to be alike (a primary and its replicas).
    pub fn home_server(&self) -> usize {
        self.servers
            .iter()
            .find(|s| !s.removed)
            .or(self.servers.first())
            .map_or(0, |s| s.server)
    }

    /// Count a backend of the pool in (`add`) or out, by its role and its
    /// server (`slot`, its entry in `servers`).
    pub fn count_backend(&mut self, slot: usize, pinned: bool, connecting: bool, add: bool) {
        if let Some(s) = self.servers.get_mut(slot) {
            count(
                &mut s.shared,
                &mut s.pinned,
                &mut s.connecting,
                pinned,
                connecting,
                add,
            );
        }
        count(
            &mut self.shared,
            &mut self.pinned,
            &mut self.connecting,
            pinned,
            connecting,
            add,
        );
        if self.backlog.is_empty() {
            // The room the other loops see (`balance.rs`).
            self.publish_head();
        }
    }

    /// The pool of this pool's user for clients that negotiated
    /// `CLIENT_FOUND_ROWS`: same user, limits and confirmed schemas (the
    /// schemas are a matter of grants, which the flag does not change).
    pub fn found_rows_twin(&self, index: usize, now: Instant) -> Self {
        let servers: Vec<usize> = self.servers.iter().map(|s| s.server).collect();
        let mut twin = Pool {
            found_rows: true,
            known_schemas: self.known_schemas.clone(),
            privileges: self.privileges,
            ..Pool::new(index, self.user.clone(), &servers, now)
        };
        for (t, s) in twin.servers.iter_mut().zip(&self.servers) {
            t.removed = s.removed;
        }
        twin
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

    /// The requests waiting, oldest first.
    pub fn waiting(&self) -> impl Iterator<Item = &Request> {
        self.backlog.iter()
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
        if self.backlog.len() == 1 {
            self.publish_head();
        }
        Ok(())
    }

    /// Add a request taken from another loop's backlog (`balance.rs`) where
    /// its clock puts it: the backlog stays in the order of its clocks.
    /// Not refused when full: it was let in once.
    pub fn enqueue_in_order(&mut self, req: Request) {
        let at = self.backlog.partition_point(|r| r.enqueued <= req.enqueued);
        self.backlog.insert(at, req);
        self.backlog_max = self.backlog_max.max(self.backlog.len());
        if at == 0 {
            self.publish_head();
        }
    }

    pub fn pop(&mut self) -> Option<Request> {
        let req = self.backlog.pop_front();
        if req.is_some() {
            self.publish_head();
        }
        req
    }

    /// Put a request back at the head (its backend could not take it).
    pub fn push_front(&mut self, req: Request) {
        self.backlog.push_front(req);
        self.publish_head();
    }

    /// Remove and return the oldest request if it has waited its limit.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Request> {
        let head = self.backlog.front()?;
        if now.duration_since(head.enqueued) >= self.user.queue_timeout {
            self.pop()
        } else {
            None
        }
    }

    /// Tell the other loops when the oldest waiting request was queued, or
    /// that none waits and how many connections will take the next ones
    /// (or that this loop does not serve the pool).
    pub fn publish_head(&self) {
        if let Some(slot) = &self.head {
            let head = match self.backlog.front() {
                Some(r) => super::balance::Head::Since(r.enqueued),
                None if self.user.connections == 0 || self.is_removed() => {
                    super::balance::Head::NotServed
                }
                None => super::balance::Head::Empty { room: self.shared },
            };
            slot.publish(head);
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

    /// The idle backend to take, the best by `rank`: the backend's server
    /// entry (`slot`) and score, higher is better, or None when it cannot
    /// take the command; ties go to the most recently used, whose caches
    /// are warm. A server with `connections` shared backends busy already
    /// is passed over: those kept beyond it (`keeps_extra`) wait for pinned
    /// clients, they do not add to how many commands run at once. It leaves
    /// the list when the engine gives it a client.
    pub fn pick_idle(&self, mut rank: impl FnMut(usize) -> Option<(usize, u64)>) -> Option<usize> {
        let limit = self.user.connections;
        if let [only] = &self.servers[..] {
            if only.busy() >= limit {
                return None;
            }
        }
        let mut best: Option<(usize, u64)> = None;
        for &b in self.idle.iter().rev() {
            let Some((slot, s)) = rank(b) else {
                continue;
            };
            if self.servers.len() > 1 && self.servers.get(slot).is_none_or(|e| e.busy() >= limit) {
                continue;
            }
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
    pub fn list_idle(&mut self, backend: usize, slot: usize) {
        debug_assert!(
            !self.idle.contains(&backend),
            "backend {backend} listed twice as idle"
        );
        self.idle.push(backend);
        if let Some(s) = self.servers.get_mut(slot) {
            s.idle += 1;
        }
    }

    /// Only for `sync_idle_listing` (backend/mod.rs), benchmarks and the
    /// simulation's test of its own checker.
    pub fn unlist_idle(&mut self, backend: usize, slot: usize) {
        if let Some(i) = self.idle.iter().position(|&b| b == backend) {
            self.idle.remove(i);
            if let Some(s) = self.servers.get_mut(slot) {
                s.idle = s.idle.saturating_sub(1);
            }
        }
    }

    /// Shared backends missing from the configured count, on all its
    /// servers that are to have them (`wanted`: in rotation).
    pub fn missing_shared(&self, mut wanted: impl FnMut(usize) -> bool) -> usize {
        (0..self.servers.len())
            .filter(|&slot| wanted(self.servers[slot].server))
            .map(|slot| self.missing_shared_on(slot))
            .sum()
    }

    /// Shared backends missing from the configured count on one server.
    pub fn missing_shared_on(&self, slot: usize) -> usize {
        let Some(s) = self.servers.get(slot) else {
            return 0;
        };
        if s.removed {
            return 0;
        }
        if self.is_removed() {
            // Draining: no backends kept open for nobody (nor logins retried
            // against a mysqld that may refuse them now), only one for each
            // command still waiting, up to the configured count.
            let room = if self.user.max_pinned_backends == 0 {
                self.user.connections.saturating_sub(s.pinned)
            } else {
                self.user.connections
            };
            return self.backlog.len().min(room).saturating_sub(s.shared);
        }
        if self.user.max_pinned_backends == 0 {
            // No extra connections: pinned ones come out of the configured count.
            self.user.connections.saturating_sub(s.shared + s.pinned)
        } else {
            self.user.connections.saturating_sub(s.shared)
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
            && self.shared + self.pinned <= self.capacity() + self.user.max_pinned_backends
    }

    /// Shared backends the pool is to have: `connections` on each of its
    /// servers (not those it no longer uses).
    pub fn capacity(&self) -> usize {
        let servers = self.servers.iter().filter(|s| !s.removed).count();
        self.user.connections * servers.max(1)
    }

    /// Called at every turn of the loop: how many of the shared backends
    /// beyond `connections` to close now. Those are the fewest there were
    /// at any time over the last `EXTRA_IDLE_TIMEOUT`: that many were not
    /// needed by any pin for that long (a burst of pins is over). Each pin
    /// makes one fewer (it takes a shared backend), so under steady pins
    /// the pool keeps what their peak needs.
    pub fn surplus_extras(&mut self, now: Instant) -> usize {
        let extra = self.shared.saturating_sub(self.capacity());
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
            self.capacity().saturating_sub(1)
        } else {
            self.user.max_pinned_backends
        }
    }

    /// Drop the requests of `clients`, all among the first `within` (the
    /// oldest): a pass over those only, not the whole backlog.
    pub fn remove_oldest_of(&mut self, clients: &[ClientRef], within: usize) {
        let within = within.min(self.backlog.len());
        let mut kept: Vec<Request> = Vec::with_capacity(within);
        for _ in 0..within {
            if let Some(r) = self.backlog.pop_front() {
                if !clients.contains(&r.client) {
                    kept.push(r);
                }
            }
        }
        for r in kept.into_iter().rev() {
            self.backlog.push_front(r);
        }
        self.publish_head();
    }

    /// Requests of clients that left are skipped by the caller; this drops
    /// every request of one client (used when a client is killed).
    pub fn remove_client(&mut self, client: ClientRef) -> bool {
        let before = self.backlog.len();
        self.backlog.retain(|r| r.client != client);
        let removed = before != self.backlog.len();
        if removed {
            self.publish_head();
        }
        removed
    }
}

/// One step of a role's counts (see `Pool::count_backend`).
fn count(
    shared: &mut usize,
    pinned_count: &mut usize,
    connecting_count: &mut usize,
    pinned: bool,
    connecting: bool,
    add: bool,
) {
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
    step(if pinned { pinned_count } else { shared });
    if connecting {
        step(connecting_count);
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
            max_concurrency: None,
            rate: None,
        }
    }

    /// The idle list and its count on the one server.
    fn set_idle(p: &mut Pool, idle: Vec<usize>) {
        p.servers[0].idle = idle.len();
        p.idle = idle;
    }

    fn set_shared(p: &mut Pool, n: usize) {
        p.shared = n;
        p.servers[0].shared = n;
    }

    fn set_pinned(p: &mut Pool, n: usize) {
        p.pinned = n;
        p.servers[0].pinned = n;
    }

    fn req(key: usize, at: Instant) -> Request {
        Request {
            client: ClientRef { key, serial: 1 },
            enqueued: at,
            moved: false,
        }
    }

    #[test]
    fn backlog_is_bounded_fifo() {
        let now = Instant::now();
        let mut p = Pool::new(0, user(3, 1000), &[0], now);
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
        let mut p = Pool::new(0, user(10, 100), &[0], t0);
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
        let mut p = Pool::new(0, user(10, 100), &[0], Instant::now());
        set_idle(&mut p, vec![10, 11, 12]);
        assert_eq!(p.pick_idle(|_| Some((0, 0))), Some(12));
        assert_eq!(p.pick_idle(|b| Some((0, u64::from(b == 10)))), Some(10));
        p.unlist_idle(12, 0);
        assert_eq!(p.pick_idle(|_| Some((0, 0))), Some(11));
        p.unlist_idle(11, 0);
        p.unlist_idle(10, 0);
        assert_eq!(p.pick_idle(|_| Some((0, 0))), None);
    }

    #[test]
    fn found_rows_twin_shares_user_and_schemas_not_backlog() {
        let now = Instant::now();
        let mut p = Pool::new(0, user(3, 1000), &[0], now);
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
        let mut p = Pool::new(0, user(10, 100), &[0], Instant::now());
        // connections = 2: two busy shared backends and two idle extras
        // kept after their pinned clients left.
        set_shared(&mut p, 4);
        set_idle(&mut p, vec![10, 11]);
        assert_eq!(
            p.pick_idle(|_| Some((0, 0))),
            None,
            "two commands run already"
        );
        set_idle(&mut p, vec![10, 11, 12]);
        assert_eq!(
            p.pick_idle(|_| Some((0, 0))),
            Some(12),
            "one of the two is done"
        );
        p.unlist_idle(12, 0);
        assert_eq!(p.pick_idle(|_| Some((0, 0))), None);
    }

    #[test]
    fn extras_are_kept_within_the_pinned_allowance_only() {
        let mut p = Pool::new(0, user(10, 100), &[0], Instant::now());
        // connections = 2, max_pinned_backends = 1.
        set_shared(&mut p, 3);
        assert!(p.keeps_extra(), "2 shared + 1 for the allowance");
        set_pinned(&mut p, 1);
        assert!(!p.keeps_extra(), "the allowance is in use by a pin");
        set_pinned(&mut p, 0);
        set_shared(&mut p, 4);
        assert!(!p.keeps_extra());
        set_shared(&mut p, 3);
        p.user.max_pinned_backends = 0;
        assert!(!p.keeps_extra(), "pins come out of the shared ones");
        p.user.max_pinned_backends = 1;
        p.user.name = format!("{REMOVED_PREFIX}u");
        assert!(!p.keeps_extra(), "a removed user's pool drains");
    }

    #[test]
    fn extras_no_pin_needed_for_a_whole_window_are_surplus() {
        let t0 = Instant::now();
        let mut p = Pool::new(0, user(10, 100), &[0], t0);
        p.user.max_pinned_backends = 4;
        let w = EXTRA_IDLE_TIMEOUT;
        let at = |k: u32| t0 + w * k / 4;
        // Three extras; pins keep taking up to two of them in the first
        // window: one was never needed.
        set_shared(&mut p, 5);
        assert_eq!(p.surplus_extras(at(1)), 0);
        set_shared(&mut p, 3);
        assert_eq!(p.surplus_extras(at(2)), 0);
        set_shared(&mut p, 5);
        assert_eq!(p.surplus_extras(at(4)), 1);
        set_shared(&mut p, 4);
        // A steady pin uses the one left over.
        for k in 5..8 {
            set_shared(&mut p, if k % 2 == 0 { 2 } else { 4 });
            assert_eq!(p.surplus_extras(at(k)), 0);
        }
        set_shared(&mut p, 4);
        assert_eq!(p.surplus_extras(at(8)), 0, "the window saw a pin take both");
        // No pin for a whole window: both go.
        for k in 9..12 {
            assert_eq!(p.surplus_extras(at(k)), 0);
        }
        assert_eq!(p.surplus_extras(at(12)), 2);
        set_shared(&mut p, 2);
        assert_eq!(p.surplus_extras(at(16)), 0);
    }

    #[test]
    fn removed_pool_wants_backends_only_for_waiting_commands() {
        let now = Instant::now();
        let mut p = Pool::new(0, user(10, 1000), &[0], now);
        assert_eq!(p.missing_shared(|_| true), 2);
        p.user.name = format!("{REMOVED_PREFIX}u");
        assert_eq!(p.missing_shared(|_| true), 0);
        p.enqueue(req(1, now)).unwrap();
        assert_eq!(p.missing_shared(|_| true), 1);
        for k in 2..6 {
            p.enqueue(req(k, now)).unwrap();
        }
        assert_eq!(
            p.missing_shared(|_| true),
            2,
            "never beyond the configured count"
        );
        set_shared(&mut p, 1);
        assert_eq!(p.missing_shared(|_| true), 1);
    }
}
