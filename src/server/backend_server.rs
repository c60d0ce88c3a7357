//! A backend server: one mysqld the funnel connects to, and what the funnel
//! has learnt of it from its connections (version, character sets, limits,
//! defaults). Pools are per (user, server): each pool names its server, so
//! that several servers per user (replicas) are an addition, not a rewrite.

use std::collections::{HashMap, VecDeque};

use std::time::{Duration, Instant};

use super::client_track::TrackSettings;
use super::session::ServerTimeouts;
use crate::config::{BackendAddr, ServerConfig, ServerRole};

/// Collation id → (character set name, collation name), read from the
/// server once so that a client's handshake charset can be replayed.
pub type CharsetTable = HashMap<u8, (String, String)>;

/// One mysqld. Everything but the address is learnt from its connections
/// and stays `None` (or mysqld's default) until one has said.
pub struct BackendServer {
    /// Its `[server NAME]` (or `backend` for `[backend] address`).
    pub name: String,
    pub address: BackendAddr,
    pub role: ServerRole,
    pub weight: u32,
    /// A reload removed it: no new connections, the open ones close as
    /// they go idle; its index stays (backends and pools name it).
    pub removed: bool,
    /// Its backends that serve a client now (running a command, or held by
    /// a pinned client), of all pools: its load. Kept by
    /// `attach_backend_client`, `detach_backend_client` and `close_backend`.
    pub in_use: usize,
    /// Its `max_concurrency`: commands running on it, and the users whose
    /// commands wait for room, in turn.
    pub admission: Admission,
    /// Its place in the weighted turns (stride scheduling): each command
    /// given adds `STRIDE / weight`; among servers equally loaded, the one
    /// furthest behind goes next (see `Engine::turns`).
    pub pass: u64,
    /// What its health checker says (servers of no role are not checked:
    /// always in rotation).
    pub health: ServerHealth,
    /// Its rotation with hysteresis, fed by its checker's reports (None:
    /// not checked).
    pub rotation: Option<crate::health::Rotation>,
    pub max_lag: Option<Duration>,
    /// The version its greeting announced (clients are greeted with it).
    pub version: Option<String>,
    /// Its default collation id, from its greeting.
    pub charset: Option<u8>,
    /// MariaDB's extended capabilities the funnel negotiates with it (of
    /// `backend::MARIADB_CAPS`), from its latest greeting.
    pub mariadb_caps: Option<u32>,
    pub charsets: Option<CharsetTable>,
    /// Its `max_prepared_stmt_count`, once read.
    pub max_prepared: Option<usize>,
    /// Its global `wait_timeout` / `interactive_timeout`: clients' defaults.
    pub timeouts: ServerTimeouts,
    /// Its global `session_track_*` settings: what a client with
    /// CLIENT_SESSION_TRACK starts with (read with each backend's baseline).
    pub track_defaults: TrackSettings,
    /// The order in which it writes the variables of its default tracking
    /// list (learnt on each new backend connection).
    pub track_order: Vec<String>,
    /// A connection has logged in to it since start-up.
    pub reached: bool,
    /// The collation `SET NAMES cs` gives, per character set cs, as read
    /// back after one; kept only for a server where it is the character
    /// set's fixed default (`names_default_fixed`).
    pub names_defaults: HashMap<String, String>,
    /// Its global `long_query_time` (seconds), from each backend's
    /// baseline: mysqld flags an answer `SERVER_QUERY_WAS_SLOW` when its
    /// statement took that long, so a short one flags even a `SET`'s.
    pub long_query_time: Option<f64>,
}

/// A server's `max_concurrency`, and fair queuing across the users (pools)
/// that share it: while it is reached, a pool with a command that could
/// run here but for the limit waits for a turn, and as room frees up the
/// waiting pools start one command each, in the order they began to wait
/// (round robin). A pool that has just had its turn goes to the back, so a
/// user with a deep backlog cannot take every freed place from a user with
/// one command. Commands of pinned clients are never held (they may hold
/// locks the running ones wait for) but count.
#[derive(Debug, Default)]
pub struct Admission {
    /// None: no limit (and no turns).
    pub limit: Option<usize>,
    /// Its backends running a client's command (or a step of the funnel's
    /// own before one): kept by `sync_running` (backend/mod.rs).
    pub running: usize,
    /// Pools waiting for a turn, oldest first; each at most once.
    waiting: VecDeque<usize>,
    /// The pool whose turn it is while its dispatch runs (`next_turn`):
    /// it alone may take the room.
    turn: Option<usize>,
    /// A pass of turns is deferred (`Deferred::ServerTurns`).
    pub turns_due: bool,
    /// Times a pool had to wait for a turn (a command held by the limit).
    pub waits: u64,
}

impl Admission {
    pub fn new(limit: Option<usize>) -> Self {
        Admission {
            limit,
            ..Default::default()
        }
    }

    fn has_room(&self) -> bool {
        self.limit.is_none_or(|n| self.running < n)
    }

    /// Whether `pool` may start a command here now: there is room, and no
    /// other pool waits for it (or it is `pool`'s turn).
    pub fn admits(&self, pool: usize) -> bool {
        self.limit.is_none()
            || (self.has_room()
                && match self.turn {
                    Some(p) => p == pool,
                    None => self.waiting.is_empty(),
                })
    }

    /// `pool` has a command `admits` refused: it waits for a turn.
    pub fn wait_turn(&mut self, pool: usize) {
        if self.turn != Some(pool) && !self.waiting.contains(&pool) {
            self.waiting.push_back(pool);
            self.waits += 1;
        }
    }

    /// `pool` started a command here: its turn (if it had one) is used.
    pub fn started(&mut self, pool: usize) {
        if self.turn == Some(pool) {
            self.turn = None;
        }
    }

    /// Room is free and a pool waits: it is that pool's turn (until it
    /// starts a command or `end_turn`).
    pub fn next_turn(&mut self) -> Option<usize> {
        if self.limit.is_none() || !self.has_room() {
            return None;
        }
        let p = self.waiting.pop_front()?;
        self.turn = Some(p);
        Some(p)
    }

    /// The pool given the turn had nothing to start here.
    pub fn end_turn(&mut self) {
        self.turn = None;
    }

    /// A pass of turns should run (room, and a pool waits).
    pub fn turns_wanted(&self) -> bool {
        self.limit.is_some() && self.has_room() && !self.waiting.is_empty()
    }

    /// A pass of turns should run and none is deferred yet: the caller
    /// defers one (`Deferred::ServerTurns`), now marked as due.
    pub fn defer_turns(&mut self) -> bool {
        let due = !self.turns_due && self.turns_wanted();
        self.turns_due |= due;
        due
    }

    /// A pool other than `pool` waits for a turn here: `pool` must not
    /// load the server beyond its turns (commands pipelined behind its
    /// running ones would keep the others waiting longer).
    pub fn others_wait(&self, pool: usize) -> bool {
        self.waiting.iter().any(|&p| p != pool)
    }

    pub fn waiting_pools(&self) -> usize {
        self.waiting.len()
    }
}

/// A server's place in rotation and what its last check found.
#[derive(Clone, Debug, Default)]
pub struct ServerHealth {
    /// Out of rotation, and why (None: in rotation).
    pub out: Option<String>,
    /// Its last check, and what it found.
    pub checked_at: Option<Instant>,
    pub check_time: Duration,
    pub read_only: Option<bool>,
    pub lag: Option<Duration>,
    pub last_error: Option<String>,
    /// Times it went out of rotation, and came back.
    pub went_out: u64,
    pub came_back: u64,
    /// Connections to it that failed to open or log in, and that broke.
    pub connect_failures: u64,
    pub lost: u64,
    /// Replicas: the latest time at which the primary's GTID position,
    /// read then, is known to be applied here (read-your-writes: a client
    /// whose last write completed before it may read here).
    pub fresh_as_of: Option<Instant>,
    /// Its GTID position at its last good check (a primary's binlog
    /// position, a replica's applied one).
    pub gtid: Option<crate::health::GtidPosition>,
}

/// The rotation of a server its role has checked (not `[backend] address`).
fn checked_rotation(config: &ServerConfig) -> Option<crate::health::Rotation> {
    let role = match config.role {
        ServerRole::Any => return None,
        ServerRole::Primary => crate::health::ServerRole::Primary,
        ServerRole::Replica => crate::health::ServerRole::Replica,
    };
    Some(crate::health::Rotation::new(
        role,
        config.max_replication_lag,
    ))
}

impl BackendServer {
    pub fn new(config: &ServerConfig) -> Self {
        BackendServer {
            name: config.name.clone(),
            address: config.address.clone(),
            role: config.role,
            weight: config.weight.max(1),
            removed: false,
            in_use: 0,
            admission: Admission::new(config.max_concurrency),
            pass: 0,
            health: ServerHealth::default(),
            rotation: checked_rotation(config),
            max_lag: config.max_replication_lag,
            version: None,
            charset: None,
            mariadb_caps: None,
            charsets: None,
            max_prepared: None,
            timeouts: ServerTimeouts::default(),
            track_defaults: TrackSettings::default(),
            track_order: Vec::new(),
            reached: false,
            names_defaults: HashMap::new(),
            long_query_time: None,
        }
    }

    /// It may be given commands: not removed, and in rotation.
    pub fn in_rotation(&self) -> bool {
        !self.removed && self.health.out.is_none()
    }

    /// Its load for balancing: backends in use per weight (scaled so that
    /// weights of 1 to 1000 compare in whole numbers).
    pub fn load(&self) -> u64 {
        self.in_use as u64 * 1_000_000 / u64::from(self.weight)
    }

    /// It was given a command at `turns` (the pass of the latest server
    /// given one): its next turn comes `STRIDE / weight` later, so that
    /// servers equally loaded share the commands by weight. A server behind
    /// (new, or back in rotation) starts from now, not from its old pass.
    pub fn take_turn(&mut self, turns: &mut u64) {
        const STRIDE: u64 = 1_000_000;
        *turns = (*turns).max(self.pass);
        self.pass = self.pass.max(*turns) + STRIDE / u64::from(self.weight);
    }

    /// Take a reload's settings (address changes apply to new connections).
    pub fn reconfigure(&mut self, config: &ServerConfig) {
        self.address = config.address.clone();
        if self.role != config.role || self.max_lag != config.max_replication_lag {
            // Judged afresh by the new rules, from its next check on.
            self.rotation = checked_rotation(config);
        }
        self.role = config.role;
        self.max_lag = config.max_replication_lag;
        self.weight = config.weight.max(1);
        self.admission.limit = config.max_concurrency;
        self.removed = false;
    }

    /// `SET NAMES cs` gives cs's default collation whatever the session
    /// (MariaDB before 11.2, which has no `character_set_collations`; not
    /// MySQL, whose `default_collation_for_utf8mb4` may choose another).
    pub fn names_default_fixed(&self) -> bool {
        let Some(v) = self.version.as_deref() else {
            return false;
        };
        if !v.contains("MariaDB") {
            return false;
        }
        // MariaDB 10 greets with "5.5.5-" before its own version.
        let v = v.strip_prefix("5.5.5-").unwrap_or(v);
        let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(major), Some(minor)) => (major, minor) < (11, 2),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(weight: u32) -> BackendServer {
        BackendServer::new(&ServerConfig {
            name: format!("w{weight}"),
            address: BackendAddr::Unix("/tmp/x.sock".into()),
            role: ServerRole::Primary,
            weight,
            max_replication_lag: None,
            max_concurrency: None,
        })
    }

    #[test]
    fn admission_gives_freed_room_to_waiting_pools_in_turn() {
        let mut a = Admission::new(Some(2));
        assert!(a.admits(0));
        a.running = 2;
        // Pool 0 floods, pool 1 has one command: both wait.
        assert!(!a.admits(0));
        a.wait_turn(0);
        a.wait_turn(0);
        assert!(!a.admits(1));
        a.wait_turn(1);
        assert_eq!((a.waiting_pools(), a.waits), (2, 2));
        // Neither may pipeline more onto the server: the other waits.
        assert!(a.others_wait(0) && a.others_wait(1) && a.others_wait(2));
        // One of pool 0's commands ends: its own next command may not take
        // the room ahead of the pools waiting; pool 0 waited first.
        a.running = 1;
        assert!(!a.admits(1) && !a.admits(0));
        assert!(a.turns_wanted());
        assert_eq!(a.next_turn(), Some(0));
        assert!(a.admits(0) && !a.admits(1));
        a.running = 2;
        a.started(0);
        a.wait_turn(0); // more of pool 0's: to the back
        a.running = 1;
        assert_eq!(a.next_turn(), Some(1));
        assert!(a.admits(1) && !a.admits(0));
        a.started(1);
        a.running = 2;
        assert_eq!(a.next_turn(), None);
        a.running = 1;
        assert_eq!(a.next_turn(), Some(0));
        // Pool 0 had nothing left to start: its turn ends, room stays free
        // for whoever comes.
        a.end_turn();
        assert!(!a.turns_wanted());
        assert!(a.admits(1) && a.admits(0));
        // Without a limit everything is admitted and nobody waits.
        let free = Admission::new(None);
        assert!(free.admits(3) && !free.turns_wanted());
    }

    #[test]
    fn turns_share_commands_by_weight_and_a_newcomer_starts_now() {
        let mut servers = [server(100), server(200), server(1000)];
        let mut turns = 0;
        let mut given = [0; 3];
        for _ in 0..1300 {
            // As dispatch does when all are equally loaded: the furthest behind.
            let next = (0..3).min_by_key(|&i| servers[i].pass).unwrap();
            servers[next].take_turn(&mut turns);
            given[next] += 1;
        }
        assert_eq!(given, [100, 200, 1000]);
        // A server added now takes a turn at once, then its share: it is
        // not owed the turns it missed.
        let mut newcomer = server(100);
        assert!(newcomer.pass < turns);
        newcomer.take_turn(&mut turns);
        assert!(newcomer.pass > turns && newcomer.pass - turns == 10_000);
    }

    #[test]
    fn names_defaults_are_fixed_on_mariadb_before_11_2() {
        let mut s = BackendServer::new(&ServerConfig {
            name: "x".into(),
            address: BackendAddr::Unix("/tmp/x.sock".into()),
            role: ServerRole::Any,
            weight: 100,
            max_replication_lag: None,
            max_concurrency: None,
        });
        for (version, fixed) in [
            (None, false),
            (Some("5.5.5-10.11.14-MariaDB-0+deb12u2"), true),
            (Some("10.6.2-MariaDB"), true),
            (Some("11.1.6-MariaDB"), true),
            (Some("11.2.1-MariaDB"), false),
            (Some("11.8.2-MariaDB-ubu2404"), false),
            (Some("8.4.3"), false),
            (Some("5.7.44-log"), false),
            (Some("MariaDB"), false),
        ] {
            s.version = version.map(str::to_string);
            assert_eq!(s.names_default_fixed(), fixed, "{version:?}");
        }
    }
}
