//! A backend server: one mysqld the funnel connects to, and what the funnel
//! has learnt of it from its connections (version, character sets, limits,
//! defaults). Pools are per (user, server): each pool names its server, so
//! that several servers per user (replicas) are an addition, not a rewrite.

use std::collections::HashMap;

use super::client_track::TrackSettings;
use super::session::ServerTimeouts;
use crate::config::BackendAddr;

/// Collation id → (character set name, collation name), read from the
/// server once so that a client's handshake charset can be replayed.
pub type CharsetTable = HashMap<u8, (String, String)>;

/// One mysqld. Everything but the address is learnt from its connections
/// and stays `None` (or mysqld's default) until one has said.
pub struct BackendServer {
    pub address: BackendAddr,
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
}

impl BackendServer {
    pub fn new(address: BackendAddr) -> Self {
        BackendServer {
            address,
            version: None,
            charset: None,
            mariadb_caps: None,
            charsets: None,
            max_prepared: None,
            timeouts: ServerTimeouts::default(),
            track_defaults: TrackSettings::default(),
            track_order: Vec::new(),
            reached: false,
        }
    }
}
