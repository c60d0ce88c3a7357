//! A client's session state as the funnel tracks it, and the statements that
//! bring a backend connection's session to a client's.
//!
//! The source of truth is mysqld's session tracker: backend connections run
//! with `session_track_schema`, `session_track_system_variables='*'` and
//! `session_track_state_change` on, and every OK packet reports what the
//! command changed. The funnel does not parse SQL to learn state, except for
//! the few things the server does not report (see `statement.rs`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use crate::protocol::session_track::{session_state_changes, StateChange};

/// Why a client keeps its backend connection to itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinCause {
    /// `SERVER_STATUS_IN_TRANS`: an open transaction.
    Transaction,
    /// A server-side prepared statement (`COM_STMT_PREPARE`) lives on that backend.
    PreparedStatement,
    /// The tracker reported a state change the funnel cannot replay (user
    /// variables, temporary tables, SQL `PREPARE`, ...).
    SessionState,
    /// `GET_LOCK`, `LOCK TABLES`, `SQL_CALC_FOUND_ROWS`: state mysqld does not report.
    Lock,
    /// An open cursor (`SERVER_STATUS_CURSOR_EXISTS`).
    Cursor,
    /// A statement whose effect on the session the funnel cannot prove
    /// (stored routines, dynamic SQL, `FLUSH`, a trigger or stored
    /// function that changed the session, ...): the backend is dirty, the
    /// client keeps it until it leaves, and it is reset after.
    Unproven,
    /// The last statement left warnings or an error: the client keeps the
    /// backend for the `SHOW WARNINGS` that may follow, until a statement
    /// that empties them.
    Diagnostics,
    /// More user variables than `max_replayed_user_vars` (or too many bytes
    /// of them) to replay on another backend: kept on this one until fewer.
    UserVars,
    /// A relayed login (`unlisted_users = relay`): mysqld authenticated the
    /// client on this connection, which is the client's alone until it
    /// leaves (then closed, never shared).
    UnlistedUser,
}

impl PinCause {
    pub const ALL: [PinCause; 9] = [
        PinCause::Transaction,
        PinCause::PreparedStatement,
        PinCause::SessionState,
        PinCause::Lock,
        PinCause::Cursor,
        PinCause::Unproven,
        PinCause::Diagnostics,
        PinCause::UserVars,
        PinCause::UnlistedUser,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PinCause::Transaction => "transaction",
            PinCause::PreparedStatement => "prepared_statement",
            PinCause::SessionState => "session_state",
            PinCause::Lock => "lock",
            PinCause::Cursor => "cursor",
            PinCause::Unproven => "unproven_statement",
            PinCause::Diagnostics => "diagnostics",
            PinCause::UserVars => "user_vars",
            PinCause::UnlistedUser => "unlisted_user",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of pin causes, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinSet(u16);

impl PinSet {
    pub fn only(c: PinCause) -> PinSet {
        PinSet(c.bit())
    }
    pub fn insert(&mut self, c: PinCause) {
        self.0 |= c.bit();
    }
    pub fn remove(&mut self, c: PinCause) {
        self.0 &= !c.bit();
    }
    pub fn contains(self, c: PinCause) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn clear(&mut self) {
        self.0 = 0;
    }
    /// The first cause, for stats and messages.
    pub fn primary(self) -> Option<PinCause> {
        // Bit i is `ALL[i]` (`bit`): the lowest set bit is the first cause.
        PinCause::ALL.get(self.0.trailing_zeros() as usize).copied()
    }
}

/// Replayable session state: default schema and session system variables.
///
/// `vars` holds every variable whose session value may differ from the
/// server's global default; on a backend connection that includes the
/// character-set variables its handshake set. A variable absent from the map
/// has its default value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionVars {
    pub schema: Option<String>,
    pub vars: VarMap,
    /// User variables: name → SQL literal that recreates the value with its
    /// type (read back from `information_schema.USER_VARIABLES`). A variable
    /// set to NULL is the same as one never set, as `SELECT @x` sees it.
    pub user_vars: BTreeMap<String, String>,
    /// The collation of `character_set_results`, when known: what result
    /// columns are labelled with. `@@character_set_results` names only the
    /// character set, but the handshake's collation id (and `SET NAMES x
    /// COLLATE y`) sets it to that collation, where `SET
    /// character_set_results = x` gives x's default: both show in column
    /// metadata (utf8mb4_unicode_ci 224 vs utf8mb4_general_ci 45). Read
    /// from the metadata of the funnel's own queries; None: not known (a
    /// replay then sets only the variables).
    pub results_collation: Option<String>,
    /// Hash of `schema` and `vars`, kept current so that the common case
    /// (client and backend already agree) costs one comparison.
    fingerprint: u64,
}

/// Session system variables by lowercase name, in name order: a sorted
/// vector, not a `BTreeMap`. Every client that logs in holds its
/// handshake's four character-set variables, and few hold many more: four
/// entries here are one 128-B block where a `BTreeMap` leaf is 544 B, and
/// their names and usual values are `COMMON_VAR_TEXTS`, not allocated.
/// The part of the `BTreeMap` interface the funnel uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VarMap(Vec<(VarText, VarText)>);

/// A variable's name or value: borrowed from `COMMON_VAR_TEXTS` when it is
/// one of them, else owned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct VarText(Cow<'static, str>);

/// What most sessions hold: the character-set variables a handshake sets
/// and their usual values.
const COMMON_VAR_TEXTS: &[&str] = &[
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
    "autocommit",
    "sql_mode",
    "time_zone",
    "ON",
    "OFF",
    "binary",
    "latin1",
    "latin1_swedish_ci",
    "utf8mb3",
    "utf8mb3_general_ci",
    "utf8mb4",
    "utf8mb4_bin",
    "utf8mb4_general_ci",
    "utf8mb4_unicode_ci",
    "utf8mb4_uca1400_ai_ci",
];

impl VarText {
    fn new(text: &str) -> VarText {
        VarText(match COMMON_VAR_TEXTS.iter().find(|c| **c == text) {
            Some(common) => Cow::Borrowed(common),
            None => Cow::Owned(text.to_string()),
        })
    }
}

impl VarMap {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| (*n.0).cmp(name))
    }

    // Generic over the name, as `BTreeMap`'s are, so that callers pass
    // what they hold (`&String`, `&&str`).
    pub fn get<N: AsRef<str> + ?Sized>(&self, name: &N) -> Option<&str> {
        self.find(name.as_ref()).ok().map(|i| &*self.0[i].1 .0)
    }

    pub fn contains_key<N: AsRef<str> + ?Sized>(&self, name: &N) -> bool {
        self.find(name.as_ref()).is_ok()
    }

    pub fn insert(&mut self, name: &str, value: &str) {
        match self.find(name) {
            Ok(i) => self.0[i].1 = VarText::new(value),
            Err(i) => self.0.insert(i, (VarText::new(name), VarText::new(value))),
        }
    }

    pub fn remove<N: AsRef<str> + ?Sized>(&mut self, name: &N) {
        if let Ok(i) = self.find(name.as_ref()) {
            self.0.remove(i);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&*n.0, &*v.0))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| &*n.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for VarMap {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        let mut map = VarMap::default();
        for (name, value) in iter {
            map.insert(name, value);
        }
        map
    }
}

/// Variables that a client must not change on a shared backend: the
/// funnel's own view of the session depends on them (tracking), replaying
/// them would hand one client's value to others' statements (`profiling`
/// records their texts), or they describe one connection's statements.
/// Read-only variables mysqld reports as changed that describe the backend
/// connection, not the client's session: nothing to replay (and `SET` of
/// them fails with 1238). `last_gtid`: the GTID of the connection's last
/// binlogged transaction, reported after every write on a server with a
/// binlog.
const CONNECTION_FACTS_VARS: &[&str] = &["last_gtid"];

const UNREPLAYABLE_VARS: &[&str] = &[
    "session_track_schema",
    "session_track_system_variables",
    "session_track_state_change",
    "session_track_transaction_info",
    "profiling",
    "profiling_history_size",
    "pseudo_thread_id",
    "insert_id",
    "last_insert_id",
    "identity",
    "rand_seed1",
    "rand_seed2",
];

/// Of those, what `COM_RESET_CONNECTION` does not undo: the profiling
/// history (it survives a reset). A backend that had it is closed instead.
const SURVIVES_RESET_VARS: &[&str] = &["profiling", "profiling_history_size"];

/// What one OK packet's session-state information told us.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TrackedChanges {
    /// The tracker said "state changed" (type 2).
    pub state_changed: bool,
    /// Number of schema and system-variable changes applied.
    pub applied: usize,
    /// A change the funnel cannot replay was reported.
    pub unreplayable: bool,
    /// A character-set variable changed.
    pub charset_changed: bool,
    /// A change a reset does not undo: the backend must be closed after.
    pub survives_reset: bool,
    /// New session values of `wait_timeout` and `interactive_timeout`:
    /// the client's own (they govern its idle time at the funnel), never
    /// part of the replayed session.
    pub wait_timeout: Option<u64>,
    pub interactive_timeout: Option<u64>,
}

/// A client's own `wait_timeout` and `interactive_timeout` (seconds). They
/// are not replayed onto backends (mysqld would close a shared backend
/// idle for the client's `wait_timeout`): the funnel closes the client
/// itself, and gives a backend the client's values only for a statement
/// that may read them (`StatementFacts::mentions_timeouts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Set by the client (as mysqld's tracker reported it); None: the default.
    /// u32: mysqld's maximum is 31536000 (a year), and every idle client
    /// holds these.
    pub wait: Option<u32>,
    pub interactive: Option<u32>,
    /// Logged in with `CLIENT_INTERACTIVE`: mysqld starts such a session
    /// with `wait_timeout` = the global `interactive_timeout` (and, checked
    /// on MariaDB 10.11, not again after `COM_RESET_CONNECTION` or
    /// `COM_CHANGE_USER`, which give the global `wait_timeout`).
    pub interactive_login: bool,
}

/// The server's global `wait_timeout` and `interactive_timeout` (what a
/// backend connection's session has when no client's values are on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTimeouts {
    pub wait: u64,
    pub interactive: u64,
}

impl Default for ServerTimeouts {
    /// mysqld's defaults, until a backend has said.
    fn default() -> Self {
        ServerTimeouts {
            wait: 28800,
            interactive: 28800,
        }
    }
}

/// A timeout as [`ClientTimeouts`] holds it. Above mysqld's maximum
/// cannot be reported; it would saturate.
pub fn timeout_seconds(seconds: u64) -> u32 {
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

impl ClientTimeouts {
    /// The client's session values: (`wait_timeout`, `interactive_timeout`).
    pub fn effective(&self, server: ServerTimeouts) -> (u64, u64) {
        let default_wait = if self.interactive_login {
            server.interactive
        } else {
            server.wait
        };
        (
            self.wait.map_or(default_wait, u64::from),
            self.interactive.map_or(server.interactive, u64::from),
        )
    }

    /// Take what a statement's OK reported.
    pub fn apply(&mut self, changes: &TrackedChanges) {
        if let Some(wait) = changes.wait_timeout {
            self.wait = Some(timeout_seconds(wait));
        }
        if let Some(interactive) = changes.interactive_timeout {
            self.interactive = Some(timeout_seconds(interactive));
        }
    }
}

impl SessionVars {
    /// The session has autocommit off: a statement may open a transaction.
    pub fn autocommit_off(&self) -> bool {
        self.vars
            .get("autocommit")
            .is_some_and(|v| v.eq_ignore_ascii_case("OFF"))
    }

    pub fn new() -> Self {
        let mut s = SessionVars::default();
        s.refresh_fingerprint();
        s
    }

    /// Its `sql_select_limit`: unlimited (mysqld's default) when it has
    /// none; 0 for a value that is not a number (mysqld reports numbers),
    /// so that no row count is trusted under it.
    pub fn select_limit(&self) -> u64 {
        self.vars
            .get("sql_select_limit")
            .map_or(u64::MAX, |v| v.parse().unwrap_or(0))
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn refresh_fingerprint(&mut self) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.schema.hash(&mut h);
        self.vars.hash(&mut h);
        self.user_vars.hash(&mut h);
        self.results_collation.hash(&mut h);
        self.fingerprint = h.finish();
    }

    pub fn set_schema(&mut self, schema: Option<String>) {
        self.schema = schema;
        self.refresh_fingerprint();
    }

    pub fn set_var(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        if self.vars.get(&name) != Some(value) {
            self.vars.insert(&name, value);
            self.refresh_fingerprint();
        }
    }

    pub fn set_results_collation(&mut self, collation: Option<String>) {
        if self.results_collation != collation {
            self.results_collation = collation;
            self.refresh_fingerprint();
        }
    }

    /// Replace the whole state (used when a backend has taken a client's state).
    pub fn copy_from(&mut self, other: &SessionVars) {
        // Done after every answer, and the session rarely changed: compare
        // (no allocation) before cloning (an allocation per entry).
        if self.schema != other.schema {
            self.schema.clone_from(&other.schema);
        }
        if self.vars != other.vars {
            self.vars.clone_from(&other.vars);
        }
        if self.user_vars != other.user_vars {
            self.user_vars.clone_from(&other.user_vars);
        }
        if self.results_collation != other.results_collation {
            self.results_collation.clone_from(&other.results_collation);
        }
        self.fingerprint = other.fingerprint;
    }

    /// Apply the session-state-change block of an OK packet.
    pub fn apply_tracked(&mut self, block: &[u8]) -> TrackedChanges {
        let mut out = TrackedChanges::default();
        for change in session_state_changes(block) {
            match change {
                Ok(StateChange::Schema(name)) => {
                    let name = String::from_utf8_lossy(name).into_owned();
                    self.schema = if name.is_empty() { None } else { Some(name) };
                    out.applied += 1;
                }
                Ok(StateChange::SystemVariable { name, value }) => {
                    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                    let timeout_slot = match name.as_str() {
                        "wait_timeout" => Some(&mut out.wait_timeout),
                        "interactive_timeout" => Some(&mut out.interactive_timeout),
                        _ => None,
                    };
                    if let Some(slot) = timeout_slot {
                        // The client's own, not the backend's session.
                        match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                            Some(v) => *slot = Some(v),
                            None => out.unreplayable = true,
                        }
                        continue;
                    }
                    if CONNECTION_FACTS_VARS.contains(&name.as_str()) {
                        continue;
                    }
                    if UNREPLAYABLE_VARS.contains(&name.as_str()) {
                        out.unreplayable = true;
                        out.survives_reset |= SURVIVES_RESET_VARS.contains(&name.as_str());
                        continue;
                    }
                    let value = String::from_utf8_lossy(value).into_owned();
                    out.charset_changed |=
                        name.starts_with("character_set_") || name == "collation_connection";
                    if name == "character_set_results" {
                        // Its collation is read back with the metadata.
                        self.results_collation = None;
                    }
                    self.vars.insert(&name, &value);
                    out.applied += 1;
                }
                Ok(StateChange::StateChanged(changed)) => out.state_changed |= changed,
                // Transaction state and characteristics are reported by the
                // status flags the funnel already reads; GTIDs are not state.
                Ok(StateChange::Gtids(_))
                | Ok(StateChange::TransactionCharacteristics(_))
                | Ok(StateChange::TransactionState(_)) => {}
                Ok(StateChange::Unknown { .. }) | Err(_) => {
                    out.unreplayable = true;
                    break;
                }
            }
        }
        self.refresh_fingerprint();
        out
    }

    /// Replace the user variables (after reading them back from mysqld).
    pub fn set_user_vars(&mut self, vars: BTreeMap<String, String>) {
        self.user_vars = vars;
        self.refresh_fingerprint();
    }

    /// The `SET ...` statement that turns a backend whose state is
    /// `backend` into one whose variables equal `self`'s, or None when they
    /// already agree. Schema is handled separately (`COM_INIT_DB`).
    pub fn replay_vars_sql(&self, backend: &SessionVars) -> Option<Vec<u8>> {
        let mut sql = Vec::new();
        // The collation of character_set_results can only be set with
        // `SET NAMES cs COLLATE coll` (which sets the client and
        // connection character sets and collation_connection too: the
        // assignments after it compare against that).
        let mut names: Option<(&str, &str)> = None;
        if let (Some(coll), Some(cs)) = (
            self.results_collation.as_deref(),
            self.vars.get("character_set_results"),
        ) {
            if backend.results_collation.as_deref() != Some(coll)
                && is_plain_name(cs)
                && is_plain_name(coll)
                && !NOT_CLIENT_CHARSETS.contains(&cs)
            {
                sql.extend_from_slice(b"SET NAMES '");
                sql.extend_from_slice(cs.as_bytes());
                sql.extend_from_slice(b"' COLLATE '");
                sql.extend_from_slice(coll.as_bytes());
                sql.push(b'\'');
                names = Some((cs, coll));
            }
        }
        let backend_var = |name: &str| -> Option<&str> {
            match names {
                Some((cs, _)) if RESULTS_NAMES[..3].contains(&name) => Some(cs),
                Some((_, coll)) if name == RESULTS_NAMES[3] => Some(coll),
                _ => backend.vars.get(name),
            }
        };
        for (name, literal) in &self.user_vars {
            if backend.user_vars.get(name) != Some(literal) {
                push_user_var(&mut sql, name, literal);
            }
        }
        for name in backend.user_vars.keys() {
            if !self.user_vars.contains_key(name) {
                push_user_var(&mut sql, name, "NULL");
            }
        }
        for (name, value) in self.vars.iter() {
            if backend_var(name) != Some(value) {
                push_assignment(&mut sql, name, Some(value));
            }
        }
        let set_by_names = names.map_or(&[][..], |_| &RESULTS_NAMES[..]);
        for name in backend.vars.keys().chain(
            set_by_names
                .iter()
                .copied()
                .filter(|n| !backend.vars.contains_key(*n)),
        ) {
            if !self.vars.contains_key(name) {
                push_assignment(&mut sql, name, None);
            }
        }
        if sql.is_empty() {
            None
        } else {
            Some(sql)
        }
    }

    /// How many user variables `replay_vars_sql` sets (or unsets).
    pub fn user_vars_to_replay(&self, backend: &SessionVars) -> usize {
        let differ = self
            .user_vars
            .iter()
            .filter(|(name, literal)| backend.user_vars.get(*name) != Some(*literal))
            .count();
        let gone = backend
            .user_vars
            .keys()
            .filter(|name| !self.user_vars.contains_key(*name))
            .count();
        differ + gone
    }

    /// True when variables (not schema) agree.
    pub fn vars_equal(&self, other: &SessionVars) -> bool {
        self.vars == other.vars
    }

    /// Whether variable `name` is one that `o` overwrites on a backend
    /// whose session is `backend`, for a client whose session is this.
    fn overwritten(&self, backend: &SessionVars, o: &Overwrites, name: &str) -> bool {
        o.vars.iter().any(|v| v == name)
            || (RESULTS_NAMES.contains(&name) && o.skips_names(self, backend))
    }

    /// `backend` with what `o` overwrites at this session's values: where
    /// the client's plain `SET` leaves it, as far as the replay before it
    /// is concerned.
    fn overwritten_by(&self, backend: &SessionVars, o: &Overwrites) -> SessionVars {
        let mut to = backend.clone();
        self.copy_overwritten(backend, o, self, &mut to);
        to.refresh_fingerprint();
        to
    }

    /// Copy into `to`, from `from` (this session or `backend`), what the
    /// plain `SET` `o` overwrites in a replay of this session over
    /// `backend`'s.
    fn copy_overwritten(
        &self,
        backend: &SessionVars,
        o: &Overwrites,
        from: &SessionVars,
        to: &mut SessionVars,
    ) {
        for name in self.vars.keys().chain(backend.vars.keys()) {
            if self.overwritten(backend, o, name) {
                match from.vars.get(name) {
                    Some(v) => to.vars.insert(name, v),
                    None => to.vars.remove(name),
                };
            }
        }
        if o.skips_names(self, backend) {
            to.results_collation.clone_from(&from.results_collation);
        }
    }

    /// [`Self::replay_vars_sql`] for a command that is a plain `SET`: what
    /// it overwrites (`o`) is left as the backend has it.
    pub fn replay_vars_sql_except(&self, backend: &SessionVars, o: &Overwrites) -> Option<Vec<u8>> {
        self.replay_vars_sql(&self.overwritten_by(backend, o))
    }

    /// The session of a backend (`backend` before) once that replay has
    /// run: this one's variables and user variables, but what `o`
    /// overwrites as the backend had it; the backend's schema.
    pub fn replayed_except(&self, backend: &SessionVars, o: &Overwrites) -> SessionVars {
        let mut after = self.clone();
        self.copy_overwritten(backend, o, backend, &mut after);
        after.schema.clone_from(&backend.schema);
        after.refresh_fingerprint();
        after
    }

    /// The sessions are equal but for what `o` overwrites: a backend with
    /// `other` runs the client's plain `SET` without a replay.
    pub fn equal_except(&self, other: &SessionVars, o: &Overwrites) -> bool {
        self.schema == other.schema
            && self.user_vars == other.user_vars
            && (self.results_collation == other.results_collation || o.skips_names(self, other))
            && self
                .vars
                .iter()
                .all(|(k, v)| other.vars.get(k) == Some(v) || self.overwritten(other, o, k))
            && other
                .vars
                .keys()
                .all(|k| self.vars.contains_key(k) || self.overwritten(other, o, k))
    }

    /// The sessions agree on what `o` overwrites.
    pub fn agrees_on(&self, other: &SessionVars, o: &Overwrites) -> bool {
        let names = o.skips_names(self, other);
        (!names || self.results_collation == other.results_collation)
            && o.vars
                .iter()
                .map(String::as_str)
                .chain(RESULTS_NAMES.iter().copied().filter(|_| names))
                .all(|k| self.vars.get(k) == other.vars.get(k))
    }
}

/// What a client's command that is a plain `SET` (`statement::plain_set`)
/// sets whatever the session had, so that a replay before it may leave it
/// be: its value before is neither read nor kept. On a shared backend only
/// (no transaction open there, which `SET autocommit = 1` would commit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overwrites {
    /// `SET NAMES`: the character-set variables and the results collation.
    /// Only where the client and the backend have the same
    /// `character_set_client`, which the statement's own text is read in.
    pub names: bool,
    /// Other variables, by name (lower case). Not the character-set ones,
    /// which set each other (only `NAMES` sets them all), nor `sql_mode`
    /// and `old_mode`, which the statement itself is parsed and checked
    /// under.
    pub vars: Vec<String>,
}

impl Overwrites {
    /// What `set` overwrites, or None when nothing.
    pub fn of(set: &super::statement::PlainSet) -> Option<Overwrites> {
        let o = Overwrites {
            names: set.names.is_some(),
            vars: set
                .vars
                .iter()
                .map(|(v, _)| v)
                .filter(|v| {
                    !(v.starts_with("character_set")
                        || v.starts_with("collation")
                        || matches!(v.as_str(), "sql_mode" | "old_mode"))
                })
                .cloned()
                .collect(),
        };
        (o.names || !o.vars.is_empty()).then_some(o)
    }

    /// `SET NAMES` counts for a client whose session is `client` on a
    /// backend whose session is `backend`.
    fn skips_names(&self, client: &SessionVars, backend: &SessionVars) -> bool {
        self.names
            && client.vars.get("character_set_client") == backend.vars.get("character_set_client")
    }
}

/// What `SET NAMES` sets.
const RESULTS_NAMES: [&str; 4] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

/// Character sets mysqld refuses for `character_set_client` (so for `SET
/// NAMES`): their results collation can only be their default.
const NOT_CLIENT_CHARSETS: &[&str] = &["ucs2", "utf16", "utf16le", "utf32"];

/// Whether mysqld takes character set `cs` for `character_set_client`
/// (`SET NAMES cs`).
pub fn is_client_charset(cs: &str) -> bool {
    !NOT_CLIENT_CHARSETS.contains(&cs)
}

fn push_separator(sql: &mut Vec<u8>) {
    if sql.is_empty() {
        sql.extend_from_slice(b"SET ");
    } else {
        sql.extend_from_slice(b", ");
    }
}

fn push_quoted_name(sql: &mut Vec<u8>, name: &str) {
    sql.push(b'`');
    for &b in name.as_bytes() {
        if b == b'`' {
            sql.push(b'`');
        }
        sql.push(b);
    }
    sql.push(b'`');
}

fn push_user_var(sql: &mut Vec<u8>, name: &str, literal: &str) {
    push_separator(sql);
    sql.push(b'@');
    push_quoted_name(sql, name);
    sql.extend_from_slice(b" = ");
    sql.extend_from_slice(literal.as_bytes());
}

fn push_assignment(sql: &mut Vec<u8>, name: &str, value: Option<&str>) {
    push_separator(sql);
    // Names come from the server's own tracker; quote them anyway.
    sql.extend_from_slice(b"SESSION ");
    push_quoted_name(sql, name);
    sql.extend_from_slice(b" = ");
    match value {
        None => sql.extend_from_slice(b"DEFAULT"),
        // `SET character_set_results = NULL` is reported as an empty value
        // (no character set has an empty name).
        Some("") if name.starts_with("character_set_") => sql.extend_from_slice(b"NULL"),
        Some(v) => push_value_literal(sql, v),
    }
}

/// The tracker reports values as text. Numeric variables reject string
/// literals ("Incorrect argument type"), so numbers go unquoted; everything
/// else is a quoted string, which enum, set and string variables accept.
fn push_value_literal(sql: &mut Vec<u8>, v: &str) {
    if is_numeric_literal(v) {
        sql.extend_from_slice(v.as_bytes());
        return;
    }
    sql.push(b'\'');
    for &b in v.as_bytes() {
        match b {
            b'\'' => sql.extend_from_slice(b"''"),
            b'\\' => sql.extend_from_slice(b"\\\\"),
            0 => sql.extend_from_slice(b"\\0"),
            _ => sql.push(b),
        }
    }
    sql.push(b'\'');
}

fn is_numeric_literal(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    if digits.is_empty() {
        return false;
    }
    let mut seen_dot = false;
    for (i, c) in digits.char_indices() {
        match c {
            '0'..='9' => {}
            '.' if !seen_dot && i > 0 && i + 1 < digits.len() => seen_dot = true,
            _ => return false,
        }
    }
    true
}

/// What a row of `information_schema.USER_VARIABLES` (value, type, character
/// set) says about recreating the variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserVarRead {
    /// This literal recreates it with its type (numbers: their text is exact).
    Literal(String),
    /// NULL: the same as never set.
    Null,
    /// A string: its bytes, character set and collation must be read with
    /// [`user_var_values_sql`] (the table shows the value converted to
    /// utf8mb3, cut at 2048 characters, and no collation).
    String,
    /// A type the funnel does not know how to recreate: the client stays pinned.
    Inexact,
}

/// Classify a user variable read from `information_schema.USER_VARIABLES`.
/// MariaDB 10.5+ names the types `INT`, `INT UNSIGNED`, `DECIMAL`, `DOUBLE`
/// and `VARCHAR` (strings of every character set, binary ones, bit values,
/// dates and times, NULL); older versions `INTEGER`, `DECIMAL`, `REAL` and
/// `STRING`.
pub fn user_var_literal(value: Option<&str>, ty: &str) -> UserVarRead {
    let ty = ty.to_ascii_uppercase();
    let Some(value) = value else {
        // A variable set to NULL keeps its type (and a string its
        // character set and collation, read like a string's value).
        return match ty.as_str() {
            "INT" | "INTEGER" | "BIGINT" => UserVarRead::Literal("CAST(NULL AS SIGNED)".into()),
            "INT UNSIGNED" | "INTEGER UNSIGNED" | "BIGINT UNSIGNED" => {
                UserVarRead::Literal("CAST(NULL AS UNSIGNED)".into())
            }
            "DECIMAL" => UserVarRead::Literal("CAST(NULL AS DECIMAL)".into()),
            "DOUBLE" | "REAL" => UserVarRead::Literal("CAST(NULL AS DOUBLE)".into()),
            "VARCHAR" | "STRING" | "CHAR" | "TEXT" => UserVarRead::String,
            _ => UserVarRead::Null,
        };
    };
    match ty.as_str() {
        "INT" | "INTEGER" | "BIGINT" if is_integer(value) => UserVarRead::Literal(value.into()),
        // Unsigned: a value that fits a signed BIGINT would come back signed.
        "INT UNSIGNED" | "INTEGER UNSIGNED" | "BIGINT UNSIGNED"
            if is_integer(value) && !value.starts_with('-') =>
        {
            UserVarRead::Literal(format!("CAST({value} AS UNSIGNED)"))
        }
        // `12.` is DECIMAL where `12` would be an integer.
        "DECIMAL" if is_numeric_literal(value) && !value.contains('.') => {
            UserVarRead::Literal(format!("{value}."))
        }
        "DECIMAL" if is_numeric_literal(value) => UserVarRead::Literal(value.into()),
        // MariaDB prints a DOUBLE as the shortest text that reads back as
        // the same value; an exponent makes the literal a DOUBLE too.
        "DOUBLE" | "REAL" if is_double_text(value) => {
            if value.contains(['e', 'E']) {
                UserVarRead::Literal(value.into())
            } else {
                UserVarRead::Literal(format!("{value}e0"))
            }
        }
        "VARCHAR" | "STRING" | "CHAR" | "TEXT" => UserVarRead::String,
        _ => UserVarRead::Inexact,
    }
}

fn is_integer(v: &str) -> bool {
    is_numeric_literal(v) && !v.contains('.')
}

/// `-1.5`, `1e301`, `2.2250738585072014e-308`, `-0`.
fn is_double_text(v: &str) -> bool {
    let (mantissa, exponent) = match v.find(['e', 'E']) {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    });
    is_numeric_literal(mantissa) && exponent_ok
}

/// A name the funnel may put into SQL unquoted (character sets, collations).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The query that reads the string variables `names` exactly: per variable
/// its name (as hex, to be matched whatever the result character set),
/// `HEX()` of its bytes, its character set and its collation.
pub fn user_var_values_sql(names: &[&str]) -> Vec<u8> {
    let mut sql = Vec::with_capacity(names.len() * 120 + 32);
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            sql.extend_from_slice(b" UNION ALL ");
        }
        sql.extend_from_slice(b"SELECT '");
        for b in name.as_bytes() {
            sql.extend_from_slice(format!("{b:02X}").as_bytes());
        }
        sql.push(b'\'');
        for f in ["HEX(", "CHARSET(", "COLLATION("] {
            sql.extend_from_slice(b", ");
            sql.extend_from_slice(f.as_bytes());
            sql.push(b'@');
            push_quoted_name(&mut sql, name);
            sql.push(b')');
        }
    }
    // Whatever the client's sql_select_limit.
    sql.extend_from_slice(b" LIMIT 18446744073709551615");
    sql
}

/// The literal that recreates a string variable from its `HEX()`, character
/// set and collation (a row of [`user_var_values_sql`]), or None when the
/// row does not make one.
/// A NULL string (`hex` None) keeps its character set and collation.
pub fn string_user_var_literal(
    hex: Option<&str>,
    charset: &str,
    collation: &str,
) -> Option<String> {
    if !is_plain_name(charset) || !is_plain_name(collation) {
        return None;
    }
    let binary = charset.eq_ignore_ascii_case("binary");
    let Some(hex) = hex else {
        return Some(if binary {
            "CAST(NULL AS BINARY)".into()
        } else {
            format!("CAST(NULL AS CHAR CHARACTER SET {charset}) COLLATE `{collation}`")
        });
    };
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if binary {
        return Some(format!("_binary X'{hex}'"));
    }
    Some(format!("_{charset} X'{hex}' COLLATE `{collation}`"))
}

/// Decode the hex text of a name read back by [`user_var_values_sql`].
pub fn unhex_name(hex: &str) -> Option<String> {
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod user_var_tests {
    use super::*;

    #[test]
    fn every_reported_type_is_classified() {
        let lit = |v: &str, ty: &str| match user_var_literal(Some(v), ty) {
            UserVarRead::Literal(l) => Some(l),
            _ => None,
        };
        assert_eq!(lit("42", "INT").as_deref(), Some("42"));
        assert_eq!(lit("-5", "INTEGER").as_deref(), Some("-5"));
        assert_eq!(
            lit("18446744073709551615", "INT UNSIGNED").as_deref(),
            Some("CAST(18446744073709551615 AS UNSIGNED)")
        );
        assert_eq!(lit("-1.50", "DECIMAL").as_deref(), Some("-1.50"));
        assert_eq!(lit("12", "DECIMAL").as_deref(), Some("12."));
        assert_eq!(
            lit("0.30000000000000004", "DOUBLE").as_deref(),
            Some("0.30000000000000004e0")
        );
        assert_eq!(lit("1e301", "DOUBLE").as_deref(), Some("1e301"));
        assert_eq!(
            lit("2.2250738585072014e-308", "REAL").as_deref(),
            Some("2.2250738585072014e-308")
        );
        assert_eq!(lit("-0", "DOUBLE").as_deref(), Some("-0e0"));
        assert_eq!(lit("1.5", "INT"), None);
        assert_eq!(lit("x", "DOUBLE"), None);
        assert_eq!(lit("1e", "DOUBLE"), None);
        assert_eq!(user_var_literal(None, "VARCHAR"), UserVarRead::String);
        assert_eq!(
            user_var_literal(None, "INT UNSIGNED"),
            UserVarRead::Literal("CAST(NULL AS UNSIGNED)".into())
        );
        assert_eq!(user_var_literal(None, "ROW"), UserVarRead::Null);
        assert_eq!(user_var_literal(Some("x"), "VARCHAR"), UserVarRead::String);
        assert_eq!(user_var_literal(Some("x"), "STRING"), UserVarRead::String);
        assert_eq!(user_var_literal(Some("x"), "ROW"), UserVarRead::Inexact);
    }

    #[test]
    fn strings_come_back_as_hex_with_charset_and_collation() {
        assert_eq!(
            String::from_utf8(user_var_values_sql(&["a", "b`c"])).unwrap(),
            "SELECT '61', HEX(@`a`), CHARSET(@`a`), COLLATION(@`a`) UNION ALL \
             SELECT '626063', HEX(@`b``c`), CHARSET(@`b``c`), COLLATION(@`b``c`) \
             LIMIT 18446744073709551615"
        );
        assert_eq!(
            string_user_var_literal(Some("612762"), "utf8mb4", "utf8mb4_bin").as_deref(),
            Some("_utf8mb4 X'612762' COLLATE `utf8mb4_bin`")
        );
        assert_eq!(
            string_user_var_literal(Some("00FF"), "binary", "binary").as_deref(),
            Some("_binary X'00FF'")
        );
        assert_eq!(
            string_user_var_literal(Some(""), "latin1", "latin1_swedish_ci").as_deref(),
            Some("_latin1 X'' COLLATE `latin1_swedish_ci`")
        );
        assert_eq!(
            string_user_var_literal(Some("0"), "latin1", "latin1_bin"),
            None
        );
        assert_eq!(
            string_user_var_literal(Some("ZZ"), "latin1", "latin1_bin"),
            None
        );
        assert_eq!(string_user_var_literal(Some("41"), "bad name", "x"), None);
        assert_eq!(
            string_user_var_literal(None, "latin1", "latin1_bin").as_deref(),
            Some("CAST(NULL AS CHAR CHARACTER SET latin1) COLLATE `latin1_bin`")
        );
        assert_eq!(
            string_user_var_literal(None, "binary", "binary").as_deref(),
            Some("CAST(NULL AS BINARY)")
        );
        assert_eq!(unhex_name("626063").as_deref(), Some("b`c"));
        assert_eq!(unhex_name("6"), None);
        assert_eq!(unhex_name("FF"), None);
    }

    #[test]
    fn counts_the_variables_a_replay_sets() {
        let mut client = SessionVars::new();
        let mut backend = SessionVars::new();
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        client.set_user_vars(vars(&[("a", "1"), ("b", "2"), ("c", "3")]));
        backend.set_user_vars(vars(&[("a", "1"), ("b", "9"), ("z", "0")]));
        assert_eq!(client.user_vars_to_replay(&backend), 3);
        assert_eq!(client.user_vars_to_replay(&client.clone()), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timeouts are held as u32 seconds: a reported value keeps its
    /// meaning, and one past u32 (mysqld never reports it) saturates.
    #[test]
    fn client_timeouts_take_reported_seconds() {
        let mut t = ClientTimeouts::default();
        t.apply(&TrackedChanges {
            wait_timeout: Some(31_536_000),
            interactive_timeout: Some((1 << 32) + 5),
            ..Default::default()
        });
        let server = ServerTimeouts::default();
        assert_eq!(t.effective(server), (31_536_000, u64::from(u32::MAX)));
    }

    /// The sorted vector behaves as the map it replaced: name order, one
    /// entry per name; common texts are borrowed, others owned.
    #[test]
    fn var_map_is_a_sorted_map() {
        let mut m = VarMap::default();
        m.insert("time_zone", "+01:00");
        m.insert("autocommit", "OFF");
        m.insert("sql_mode", "ANSI");
        m.insert("autocommit", "ON");
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            ["autocommit", "sql_mode", "time_zone"]
        );
        assert_eq!(m.get("autocommit"), Some("ON"));
        assert!(m.contains_key("sql_mode") && !m.contains_key("sql"));
        m.remove("sql_mode");
        m.remove("sql_mode");
        assert_eq!(m.len(), 2);
        let same: VarMap = [("time_zone", "+01:00"), ("autocommit", "ON")]
            .into_iter()
            .collect();
        assert_eq!(m, same);
        let borrowed = |t: &VarText| matches!(t.0, Cow::Borrowed(_));
        assert!(m.0.iter().all(|(n, _)| borrowed(n)));
        assert_eq!(m.0.iter().filter(|(_, v)| borrowed(v)).count(), 1);
    }

    #[test]
    fn replay_sets_differences_and_defaults_the_rest() {
        let mut client = SessionVars::new();
        client.set_var("sql_mode", "ANSI_QUOTES");
        client.set_var("sql_select_limit", "10");
        let mut backend = SessionVars::new();
        backend.set_var("time_zone", "+01:00");
        backend.set_var("sql_select_limit", "10");
        let sql = client.replay_vars_sql(&backend).unwrap();
        assert_eq!(
            String::from_utf8(sql).unwrap(),
            "SET SESSION `sql_mode` = 'ANSI_QUOTES', SESSION `time_zone` = DEFAULT"
        );
        backend.copy_from(&client);
        assert!(client.replay_vars_sql(&backend).is_none());
        assert_eq!(client.fingerprint(), backend.fingerprint());
    }

    #[test]
    fn copy_from_copies_every_part_whatever_already_matches() {
        let mut a = SessionVars::new();
        a.set_schema(Some("app".into()));
        a.set_var("sql_mode", "ANSI");
        a.set_user_vars([("x".to_string(), "1".to_string())].into());
        a.results_collation = Some("utf8mb4_unicode_ci".into());
        a.refresh_fingerprint();
        let mut b = SessionVars::new();
        b.set_var("sql_mode", "ANSI");
        b.copy_from(&a);
        assert_eq!(b.schema, a.schema);
        assert_eq!(b.vars, a.vars);
        assert_eq!(b.user_vars, a.user_vars);
        assert_eq!(b.results_collation, a.results_collation);
        assert_eq!(b.fingerprint(), a.fingerprint());
        // And back to nothing, one part at a time.
        let mut c = b.clone();
        c.set_user_vars(BTreeMap::new());
        b.copy_from(&c);
        assert!(b.user_vars.is_empty());
        assert_eq!(b.schema.as_deref(), Some("app"));
        let empty = SessionVars::new();
        b.copy_from(&empty);
        assert!(b.vars.is_empty() && b.schema.is_none() && b.results_collation.is_none());
        assert_eq!(b.fingerprint(), empty.fingerprint());
    }

    #[test]
    fn results_collation_is_replayed_with_set_names() {
        let charset = |s: &mut SessionVars, cs: &str, coll: &str| {
            for name in &RESULTS_NAMES[..3] {
                s.set_var(name, cs);
            }
            s.set_var("collation_connection", coll);
        };
        // A client that logged in with utf8mb4_unicode_ci (224), a backend
        // with utf8mb4_general_ci (45): same variables, other results.
        let mut client = SessionVars::new();
        charset(&mut client, "utf8mb4", "utf8mb4_unicode_ci");
        client.results_collation = Some("utf8mb4_unicode_ci".into());
        client.refresh_fingerprint();
        let mut backend = SessionVars::new();
        charset(&mut backend, "utf8mb4", "utf8mb4_unicode_ci");
        backend.results_collation = Some("utf8mb4_general_ci".into());
        backend.refresh_fingerprint();
        assert_ne!(client.fingerprint(), backend.fingerprint());
        assert_eq!(
            String::from_utf8(client.replay_vars_sql(&backend).unwrap()).unwrap(),
            "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'"
        );
        // What SET NAMES sets and the client has otherwise is set after it.
        client.set_var("character_set_client", "latin1");
        client.set_var("collation_connection", "utf8mb4_bin");
        client.set_var("time_zone", "+01:00");
        backend.set_var("character_set_results", "latin1");
        assert_eq!(
            String::from_utf8(client.replay_vars_sql(&backend).unwrap()).unwrap(),
            "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci', \
             SESSION `character_set_client` = 'latin1', \
             SESSION `collation_connection` = 'utf8mb4_bin', SESSION `time_zone` = '+01:00'"
        );
        // Same collation: no SET NAMES. Unknown on the client: none either.
        backend.results_collation = client.results_collation.clone();
        backend.refresh_fingerprint();
        let sql = String::from_utf8(client.replay_vars_sql(&backend).unwrap()).unwrap();
        assert!(!sql.contains("NAMES"), "{sql}");
        client.results_collation = None;
        backend.results_collation = Some("latin1_bin".into());
        let sql = String::from_utf8(client.replay_vars_sql(&backend).unwrap()).unwrap();
        assert!(!sql.contains("NAMES"), "{sql}");
        // Not a client character set: SET NAMES would fail.
        let mut client = SessionVars::new();
        charset(&mut client, "ucs2", "ucs2_general_ci");
        client.results_collation = Some("ucs2_general_ci".into());
        let sql = String::from_utf8(client.replay_vars_sql(&SessionVars::new()).unwrap()).unwrap();
        assert!(!sql.contains("NAMES"), "{sql}");
        // A tracked change of character_set_results forgets the collation.
        client.apply_tracked(&[
            0, 0x1e, 0x15, b'c', b'h', b'a', b'r', b'a', b'c', b't', b'e', b'r', b'_', b's', b'e',
            b't', b'_', b'r', b'e', b's', b'u', b'l', b't', b's', 7, b'u', b't', b'f', b'8', b'm',
            b'b', b'4',
        ]);
        assert_eq!(client.results_collation, None);
        assert_eq!(client.vars.get("character_set_results"), Some("utf8mb4"));
    }

    #[test]
    fn user_variables_replay_before_system_variables() {
        let mut client = SessionVars::new();
        let mut vars = BTreeMap::new();
        vars.insert("me".to_string(), "42".to_string());
        client.set_user_vars(vars);
        let mut backend = SessionVars::new();
        let mut other = BTreeMap::new();
        other.insert("old".to_string(), "1".to_string());
        backend.set_user_vars(other);
        backend.set_var("time_zone", "+01:00");
        let sql = String::from_utf8(client.replay_vars_sql(&backend).unwrap()).unwrap();
        assert_eq!(
            sql,
            "SET @`me` = 42, @`old` = NULL, SESSION `time_zone` = DEFAULT"
        );
    }

    #[test]
    fn a_null_character_set_is_replayed_as_null() {
        let mut client = SessionVars::new();
        client.set_var("character_set_results", "");
        client.set_var("sql_mode", "");
        assert_eq!(
            String::from_utf8(client.replay_vars_sql(&SessionVars::new()).unwrap()).unwrap(),
            "SET SESSION `character_set_results` = NULL, SESSION `sql_mode` = ''"
        );
    }

    #[test]
    fn literals_are_quoted_unless_numeric() {
        let mut sql = Vec::new();
        push_value_literal(&mut sql, "it's\\");
        assert_eq!(sql, b"'it''s\\\\'");
        for n in ["0", "10", "-3", "1.5"] {
            assert!(is_numeric_literal(n), "{n}");
        }
        for s in ["", "-", "+01:00", "1.", ".5", "1e5", "ON", "1.2.3"] {
            assert!(!is_numeric_literal(s), "{s}");
        }
    }

    #[test]
    fn last_gtid_is_the_connections_not_replayed() {
        use crate::protocol::session_track::encode_state_change;
        let mut block = Vec::new();
        for (name, value) in [(&b"last_gtid"[..], &b"0-1-42"[..]), (b"sql_mode", b"ANSI")] {
            encode_state_change(&mut block, &StateChange::SystemVariable { name, value });
        }
        let mut s = SessionVars::new();
        let changes = s.apply_tracked(&block);
        assert!(
            !changes.unreplayable,
            "a write on a binlogged server does not pin"
        );
        assert_eq!(changes.applied, 1);
        assert!(!s.vars.contains_key("last_gtid"));
        assert!(s.replay_vars_sql(&SessionVars::new()).is_some_and(|sql| {
            let sql = String::from_utf8_lossy(&sql).to_string();
            sql.contains("sql_mode") && !sql.contains("last_gtid")
        }));
    }

    #[test]
    fn timeouts_are_the_clients_not_the_replayed_session() {
        use crate::protocol::session_track::encode_state_change;
        let mut block = Vec::new();
        for (name, value) in [
            (&b"wait_timeout"[..], &b"1"[..]),
            (b"interactive_timeout", b"7"),
            (b"sql_mode", b"ANSI"),
        ] {
            encode_state_change(&mut block, &StateChange::SystemVariable { name, value });
        }
        let mut s = SessionVars::new();
        let changes = s.apply_tracked(&block);
        assert_eq!(changes.wait_timeout, Some(1));
        assert_eq!(changes.interactive_timeout, Some(7));
        assert!(!changes.unreplayable);
        assert_eq!(changes.applied, 1);
        assert!(!s.vars.contains_key("wait_timeout"));
        assert!(!s.vars.contains_key("interactive_timeout"));
        assert_eq!(s.vars.get("sql_mode"), Some("ANSI"));

        let server = ServerTimeouts {
            wait: 100,
            interactive: 50,
        };
        let mut t = ClientTimeouts::default();
        assert_eq!(t.effective(server), (100, 50));
        t.interactive_login = true;
        assert_eq!(t.effective(server), (50, 50));
        t.apply(&changes);
        assert_eq!(t.effective(server), (1, 7));
        let mut only_interactive = ClientTimeouts {
            interactive_login: true,
            ..Default::default()
        };
        only_interactive.apply(&TrackedChanges {
            interactive_timeout: Some(9),
            ..Default::default()
        });
        // The session's wait_timeout was set at login, not by this.
        assert_eq!(only_interactive.effective(server), (50, 9));
    }

    #[test]
    fn a_plain_set_leaves_what_it_overwrites_to_itself() {
        use crate::server::statement::plain_set;
        let of = |sql: &str| Overwrites::of(&plain_set(sql.as_bytes()).unwrap());
        let text = |sql: Option<Vec<u8>>| sql.map(|s| String::from_utf8(s).unwrap());
        let charset = |s: &mut SessionVars, cs: &str, coll: &str| {
            for name in &RESULTS_NAMES[..3] {
                s.set_var(name, cs);
            }
            s.set_var("collation_connection", coll);
            s.set_results_collation(Some(coll.into()));
        };
        let mut client = SessionVars::new();
        charset(&mut client, "utf8mb4", "utf8mb4_general_ci");
        let mut backend = client.clone();
        backend.set_var("autocommit", "OFF");
        backend.set_var("time_zone", "+05:00");
        let set = of("SET autocommit = 0").unwrap();
        // The time zone is still replayed, autocommit left to the SET.
        assert_eq!(
            text(client.replay_vars_sql_except(&backend, &set)).as_deref(),
            Some("SET SESSION `time_zone` = DEFAULT")
        );
        let after = client.replayed_except(&backend, &set);
        assert_eq!(after.vars.get("autocommit"), Some("OFF"));
        assert!(!after.vars.contains_key("time_zone"));
        assert_eq!(client.replay_vars_sql_except(&after, &set), None);
        assert!(!client.agrees_on(&after, &set));
        assert!(client.equal_except(&after, &set));
        assert!(!client.equal_except(&backend, &set));
        assert!(client.agrees_on(&client.clone(), &set));
        // The SET sets both: nothing to replay.
        let both = of("SET time_zone = '+01:00', @@session.autocommit = 1").unwrap();
        assert_eq!(client.replay_vars_sql_except(&backend, &both), None);
        assert!(client.equal_except(&backend, &both));
        // Never left: what the statement is read and checked under, and the
        // character sets one by one.
        assert_eq!(of("SET sql_mode = '', old_mode = ''"), None);
        assert_eq!(of("SET character_set_results = latin1"), None);
        // NAMES: the character sets and the results collation, where the
        // statement's text is read in the same character_set_client.
        let names = of("SET NAMES latin1").unwrap();
        let mut other = client.clone();
        charset(&mut other, "utf8mb4", "utf8mb4_unicode_ci");
        other.set_var("character_set_results", "latin1");
        assert_eq!(client.replay_vars_sql_except(&other, &names), None);
        assert!(client.equal_except(&other, &names));
        assert_eq!(client.replayed_except(&other, &names), other);
        charset(&mut other, "latin1", "latin1_swedish_ci");
        assert!(client.replay_vars_sql_except(&other, &names).is_some());
        assert!(!client.equal_except(&other, &names));
    }

    #[test]
    fn fingerprint_follows_content() {
        let mut a = SessionVars::new();
        let b = SessionVars::new();
        assert_eq!(a.fingerprint(), b.fingerprint());
        a.set_schema(Some("x".into()));
        assert_ne!(a.fingerprint(), b.fingerprint());
        a.set_schema(None);
        assert_eq!(a.fingerprint(), b.fingerprint());
    }
}

/// Statements the funnel answers itself, because only it knows the answer
/// for this client (its id, its last insert id), whatever backend ran what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunnelAnswered {
    LastInsertId,
    ConnectionId,
    /// `ROW_COUNT()`: what the client's own previous statement changed,
    /// whatever ran on the backend since.
    RowCount,
    /// `FOUND_ROWS()`: the rows of the client's own last `SELECT` (unless
    /// it used `SQL_CALC_FOUND_ROWS`: then its backend answers).
    FoundRows,
}

/// Recognise exactly `SELECT LAST_INSERT_ID()`, `SELECT CONNECTION_ID()`,
/// `SELECT ROW_COUNT()` or `SELECT FOUND_ROWS()`,
/// with an optional alias (`AS x`, `x`, quoted) and trailing `;`. Returns the
/// column name mysqld would give (the alias, or the expression as typed),
/// as the statement scan finds it (`StatementFacts::answered`).
pub fn funnel_answered_select(sql: &[u8]) -> Option<(FunnelAnswered, Vec<u8>)> {
    let (which, (start, end)) = super::statement::statement_facts(sql).answered?;
    Some((which, sql[start..end].to_vec()))
}

/// [`funnel_answered_select`] with the column name as a span of `sql`: the
/// statement scan's check, for a query whose first words are right.
pub fn funnel_answered_span(sql: &[u8]) -> Option<(FunnelAnswered, (usize, usize))> {
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - sql.as_ptr() as usize;
        (start, start + part.len())
    };
    let mut s = sql.trim_ascii();
    while let Some(rest) = s.strip_suffix(b";") {
        s = rest.trim_ascii_end();
    }
    let (kw, rest) = s.split_at_checked(6)?;
    if !kw.eq_ignore_ascii_case(b"SELECT") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    let rest = rest.trim_ascii_start();
    let (which, name_len) =
        if rest.len() >= 14 && rest[..14].eq_ignore_ascii_case(b"LAST_INSERT_ID") {
            (FunnelAnswered::LastInsertId, 14)
        } else if rest.len() >= 13 && rest[..13].eq_ignore_ascii_case(b"CONNECTION_ID") {
            (FunnelAnswered::ConnectionId, 13)
        } else if rest.len() >= 9 && rest[..9].eq_ignore_ascii_case(b"ROW_COUNT") {
            (FunnelAnswered::RowCount, 9)
        } else if rest.len() >= 10 && rest[..10].eq_ignore_ascii_case(b"FOUND_ROWS") {
            (FunnelAnswered::FoundRows, 10)
        } else {
            return None;
        };
    let after = rest[name_len..].trim_ascii_start();
    let after = after.strip_prefix(b"(")?.trim_ascii_start();
    let after = after.strip_prefix(b")")?;
    let expr_len = rest.len() - after.len();
    let expr = &rest[..expr_len];
    let tail = after.trim_ascii();
    if tail.is_empty() {
        return Some((which, span(expr)));
    }
    if !after.first()?.is_ascii_whitespace() && !matches!(after.first(), Some(b'`' | b'\'' | b'"'))
    {
        return None;
    }
    let mut alias = tail;
    if alias.len() > 3 && alias[..2].eq_ignore_ascii_case(b"AS") && alias[2].is_ascii_whitespace() {
        alias = alias[3..].trim_ascii_start();
    }
    match alias.first() {
        Some(&q @ (b'`' | b'\'' | b'"')) => {
            let inner = alias.get(1..alias.len() - 1)?;
            if alias.len() < 2
                || alias[alias.len() - 1] != q
                || inner.contains(&q)
                || inner.contains(&b'\\')
            {
                return None;
            }
            Some((which, span(inner)))
        }
        Some(_)
            if alias
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$') =>
        {
            if alias.eq_ignore_ascii_case(b"FROM") || alias[0].is_ascii_digit() {
                return None;
            }
            Some((which, span(alias)))
        }
        _ => None,
    }
}

/// A `KILL` statement the funnel carries out itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kill {
    /// `KILL QUERY n`: stop the running statement, keep the connection.
    pub query_only: bool,
    pub id: u64,
}

/// Parse `KILL [HARD|SOFT] [CONNECTION|QUERY] n`. `Ok(None)`: not a KILL;
/// `Err(())`: a KILL form the funnel does not support (`KILL USER`,
/// `KILL QUERY ID`).
#[allow(clippy::result_unit_err)]
pub fn parse_kill(sql: &[u8]) -> Result<Option<Kill>, ()> {
    let mut words: Vec<&[u8]> = Vec::with_capacity(5);
    words.extend(super::statement::words(sql));
    // Anything besides words, comments and a trailing ';' makes it unsupported.
    let other = !super::statement::only_words(sql);
    let mut it = words.into_iter().peekable();
    match it.next() {
        Some(w) if w.eq_ignore_ascii_case(b"KILL") => {}
        _ => return Ok(None),
    }
    if other {
        return Err(());
    }
    if it
        .peek()
        .is_some_and(|w| w.eq_ignore_ascii_case(b"HARD") || w.eq_ignore_ascii_case(b"SOFT"))
    {
        it.next();
    }
    let mut query_only = false;
    match it.peek() {
        Some(w) if w.eq_ignore_ascii_case(b"CONNECTION") => {
            it.next();
        }
        Some(w) if w.eq_ignore_ascii_case(b"QUERY") => {
            query_only = true;
            it.next();
        }
        _ => {}
    }
    let id = it
        .next()
        .and_then(|w| std::str::from_utf8(w).ok())
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or(())?;
    if it.next().is_some() {
        return Err(());
    }
    Ok(Some(Kill { query_only, id }))
}

#[cfg(test)]
mod answered_tests {
    use super::*;

    #[test]
    fn recognises_only_the_exact_selects() {
        let ok = |s: &str| {
            funnel_answered_select(s.as_bytes()).map(|(w, n)| (w, String::from_utf8(n).unwrap()))
        };
        assert_eq!(
            ok("SELECT LAST_INSERT_ID()"),
            Some((FunnelAnswered::LastInsertId, "LAST_INSERT_ID()".into()))
        );
        assert_eq!(
            ok(" select  last_insert_id( ) ; "),
            Some((FunnelAnswered::LastInsertId, "last_insert_id( )".into()))
        );
        assert_eq!(
            ok("SELECT CONNECTION_ID() AS id"),
            Some((FunnelAnswered::ConnectionId, "id".into()))
        );
        assert_eq!(
            ok("SELECT CONNECTION_ID() `my id`"),
            Some((FunnelAnswered::ConnectionId, "my id".into()))
        );
        assert_eq!(
            ok("SELECT CONNECTION_ID() cid;"),
            Some((FunnelAnswered::ConnectionId, "cid".into()))
        );
        assert_eq!(
            ok("select row_count() rc"),
            Some((FunnelAnswered::RowCount, "rc".into()))
        );
        assert_eq!(ok("SELECT ROW_COUNT() + 1"), None);
        assert_eq!(ok("SELECT LAST_INSERT_ID(5)"), None);
        assert_eq!(ok("SELECT LAST_INSERT_ID() + 1"), None);
        assert_eq!(ok("SELECT LAST_INSERT_ID() FROM t"), None);
        assert_eq!(ok("SELECT CONNECTION_ID(), 1"), None);
        assert_eq!(ok("SELECTCONNECTION_ID()"), None);
        assert_eq!(ok("SELECT CONNECTION_ID() 'a''b'"), None);
        assert_eq!(ok("SELECT"), None);
        assert_eq!(ok(""), None);
    }

    #[test]
    fn parses_kill_forms() {
        assert_eq!(
            parse_kill(b"KILL 5"),
            Ok(Some(Kill {
                query_only: false,
                id: 5
            }))
        );
        assert_eq!(
            parse_kill(b"kill query 7;"),
            Ok(Some(Kill {
                query_only: true,
                id: 7
            }))
        );
        assert_eq!(
            parse_kill(b"KILL HARD CONNECTION 9"),
            Ok(Some(Kill {
                query_only: false,
                id: 9
            }))
        );
        assert_eq!(parse_kill(b"KILL USER bob"), Err(()));
        assert_eq!(parse_kill(b"KILL QUERY ID 3"), Err(()));
        assert_eq!(parse_kill(b"KILL 1+1"), Err(()));
        assert_eq!(parse_kill(b"SELECT 1"), Ok(None));
    }
}
