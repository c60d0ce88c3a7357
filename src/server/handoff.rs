//! Handing clients from one funnel process to the next (a restart or an
//! upgrade without dropping clients): the engine's part, without sockets.
//!
//! On SIGTERM, a funnel that has a successor (a newer funnel that took over
//! its listeners, see `handoff_io.rs`) finishes the commands in hand and
//! gives each client that waits for its next command and holds nothing on
//! a backend (no transaction, lock, temporary table, ... : not pinned) to
//! the successor: [`Engine::client_image`] says everything a command of
//! the client may depend on (user, capabilities, connection id, session,
//! prepared statements, ...) as a [`ClientImage`], which travels encoded
//! next to the client's socket, and the successor's
//! [`Engine::adopt_client`] makes it a logged-in, idle client of its own
//! that is served exactly as before (its session is replayed on whichever
//! backend runs its next command, as always; its statements are prepared
//! there when first executed). A pinned client is handed over once it is
//! no longer pinned; one still pinned at `shutdown_timeout_ms` is closed.
//! Without a successor, a client is closed between its commands (no
//! error packet it did not ask for: the socket just closes, as a client
//! pool expects of an idle connection), and busy ones when done.
//!
//! Connection ids stay unique across the processes: the successor
//! continues the old process's sequence from the moment it takes the
//! listeners over (the old one accepts no client after that), and skips an
//! id still in use.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::action::{Action, ConnId};
use super::client::{ClientState, OwnError};
use super::client_track::{TrackSettings, TrackedVars, TransactionInfo};
use super::io::Peer;
use super::session::{timeout_seconds, ClientTimeouts, PinCause, PinSet, SessionVars};
use super::stmt::{own_stmt_key, stmt_key, ClientStmt};
use super::Engine;
use crate::protocol::consts::err;

/// Version of the image encoding; an image of another version is refused
/// (and `handoff_io::PROTOCOL_VERSION` includes it).
pub(crate) const IMAGE_VERSION: u8 = 1;
/// A field after the pending input, tagged: what this version adds to
/// version 1's image without refusing the images of funnels before it.
const EXT_FOUND_ROWS: u8 = 1;
/// Largest encoded image handed over (statements' SQL and unread input
/// make most of it); a client with a bigger one is not handed over (it is
/// closed between its commands at the deadline).
pub(crate) const MAX_IMAGE_BYTES: usize = 128 << 20;

/// The engine's handoff state.
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    pub successor: Successor,
    /// The first loop's word on the successor has come (`loops.rs`).
    pub successor_told: bool,
    /// Clients handed over to a successor, and adopted from a predecessor.
    pub handed_off: u64,
    pub adopted: u64,
}

/// Whether this funnel has a successor to hand its clients to (during a
/// shutdown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Successor {
    /// None: clients are closed between their commands.
    #[default]
    None,
    /// Being reached: idle clients wait (until then at most).
    Pending { until: Instant },
    /// It answered: idle, unpinned clients are handed over.
    Ready,
}

/// The funnel's own error a client has (`client::OwnError`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnErrorImage {
    pub code: u16,
    pub sqlstate: String,
    pub message: String,
    pub due: bool,
}

/// One prepared statement of a client, as its image carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StmtImage {
    /// The id the client knows it by.
    pub id: u32,
    pub sql: Vec<u8>,
    /// The schema it was prepared in.
    pub schema: Option<String>,
    pub num_params: u16,
    /// Parameter types the client last sent (2 bytes each; empty: none yet).
    pub types: Vec<u8>,
}

/// Everything of a logged-in, idle, unpinned client that its next commands
/// may depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientImage {
    /// The connection id it was greeted with (`CONNECTION_ID()`, `KILL`).
    pub id: u32,
    /// The configured user it logged in as (its pool: that user's, or the
    /// user's `CLIENT_FOUND_ROWS` pool, as its capabilities say).
    pub user: String,
    pub host: String,
    pub capabilities: u32,
    pub mariadb_caps: u32,
    pub charset: u8,
    /// The greeting's scramble (`COM_CHANGE_USER` is checked against it).
    pub scramble: [u8; 20],
    pub schema: Option<String>,
    pub vars: Vec<(String, String)>,
    pub user_vars: Vec<(String, String)>,
    pub results_collation: Option<String>,
    /// Its handshake's character set is in `vars`.
    pub session_ready: bool,
    pub track: TrackSettings,
    pub timeouts: ClientTimeouts,
    pub last_insert_id: u64,
    pub row_count: i64,
    /// `Client::found_rows`. Written after everything else, and only when
    /// not 0 (`EXT_FOUND_ROWS`): an image of a funnel that did not know it
    /// is read as 0.
    pub found_rows: u64,
    pub last_status: u16,
    pub multi_statements: bool,
    /// The funnel's own error: due for its next command, or in its
    /// diagnostics area (`client::OwnError`).
    pub own_error: Option<OwnErrorImage>,
    /// How long it has waited for a command (its `wait_timeout` goes on).
    pub idle: Duration,
    pub next_stmt_id: u32,
    pub stmts: Vec<StmtImage>,
    /// The start of its next command, already read.
    pub pending_input: Vec<u8>,
}

/// A malformed encoding.
#[derive(Debug, PartialEq, Eq)]
pub struct WireError(pub &'static str);

/// Appends fields (little-endian integers, length-prefixed bytes).
#[derive(Default)]
pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    pub fn bytes(&mut self, v: &[u8]) {
        // Lengths are bounded by what the engine holds (packets, names).
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(n) => {
                self.u8(1);
                self.u64(n);
            }
        }
    }
}

/// Reads what [`Writer`] wrote; every read is checked against the input.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError("bad boolean")),
        }
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn string(&mut self) -> Result<String, WireError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError("text is not UTF-8"))
    }
    pub fn opt_string(&mut self) -> Result<Option<String>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(WireError("bad option tag")),
        }
    }
    pub fn opt_u64(&mut self) -> Result<Option<u64>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.u64().map(Some),
            _ => Err(WireError("bad option tag")),
        }
    }
    /// A count of items each at least `min_item` bytes long: more than the
    /// input can hold is refused before anything is allocated for them.
    pub fn count(&mut self, min_item: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() - self.pos {
            return Err(WireError("count beyond the input"));
        }
        Ok(n)
    }
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
}

impl ClientImage {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(IMAGE_VERSION);
        w.u32(self.id);
        w.str(&self.user);
        w.str(&self.host);
        w.u32(self.capabilities);
        w.u32(self.mariadb_caps);
        w.u8(self.charset);
        w.0.extend_from_slice(&self.scramble);
        w.opt_str(self.schema.as_deref());
        for list in [&self.vars, &self.user_vars] {
            w.u32(list.len() as u32);
            for (name, value) in list {
                w.str(name);
                w.str(value);
            }
        }
        w.opt_str(self.results_collation.as_deref());
        w.bool(self.session_ready);
        w.bool(self.track.schema);
        w.bool(self.track.state_change);
        match &self.track.vars {
            TrackedVars::All => w.u8(0),
            TrackedVars::List(names) => {
                w.u8(1);
                w.u32(names.len() as u32);
                for n in names.iter() {
                    w.str(n);
                }
            }
        }
        w.u8(match self.track.transaction_info {
            TransactionInfo::Off => 0,
            TransactionInfo::State => 1,
            TransactionInfo::Characteristics => 2,
        });
        w.opt_u64(self.timeouts.wait.map(u64::from));
        w.opt_u64(self.timeouts.interactive.map(u64::from));
        w.bool(self.timeouts.interactive_login);
        w.u64(self.last_insert_id);
        w.u64(self.row_count as u64);
        w.u16(self.last_status);
        w.bool(self.multi_statements);
        match &self.own_error {
            None => w.u8(0),
            Some(e) => {
                // 1: due (what earlier versions wrote), 2: given.
                w.u8(if e.due { 1 } else { 2 });
                w.u16(e.code);
                w.str(&e.sqlstate);
                w.str(&e.message);
            }
        }
        w.u64(u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX));
        w.u32(self.next_stmt_id);
        w.u32(self.stmts.len() as u32);
        for s in &self.stmts {
            w.u32(s.id);
            w.bytes(&s.sql);
            w.opt_str(s.schema.as_deref());
            w.u16(s.num_params);
            w.bytes(&s.types);
        }
        w.bytes(&self.pending_input);
        if self.found_rows != 0 {
            w.u8(EXT_FOUND_ROWS);
            w.u64(self.found_rows);
        }
        w.0
    }

    /// Decode an image; anything malformed (truncated, trailing bytes, bad
    /// tags, text that is not UTF-8, another version) is an error, never a
    /// panic.
    pub fn decode(buf: &[u8]) -> Result<ClientImage, WireError> {
        let mut r = Reader::new(buf);
        if r.u8()? != IMAGE_VERSION {
            return Err(WireError("unknown image version"));
        }
        let id = r.u32()?;
        let user = r.string()?;
        let host = r.string()?;
        let capabilities = r.u32()?;
        let mariadb_caps = r.u32()?;
        let charset = r.u8()?;
        let mut scramble = [0u8; 20];
        for b in scramble.iter_mut() {
            *b = r.u8()?;
        }
        let schema = r.opt_string()?;
        let mut lists = [Vec::new(), Vec::new()];
        for list in lists.iter_mut() {
            let n = r.count(8)?;
            for _ in 0..n {
                list.push((r.string()?, r.string()?));
            }
        }
        let [vars, user_vars] = lists;
        let results_collation = r.opt_string()?;
        let session_ready = r.bool()?;
        let track_schema = r.bool()?;
        let track_state_change = r.bool()?;
        let track_vars = match r.u8()? {
            0 => TrackedVars::All,
            1 => {
                let n = r.count(4)?;
                let mut names = Vec::with_capacity(n);
                for _ in 0..n {
                    names.push(r.string()?);
                }
                TrackedVars::List(names.into())
            }
            _ => return Err(WireError("bad tracked-variables tag")),
        };
        let transaction_info = match r.u8()? {
            0 => TransactionInfo::Off,
            1 => TransactionInfo::State,
            2 => TransactionInfo::Characteristics,
            _ => return Err(WireError("bad transaction-info tag")),
        };
        let timeouts = ClientTimeouts {
            wait: r.opt_u64()?.map(timeout_seconds),
            interactive: r.opt_u64()?.map(timeout_seconds),
            interactive_login: r.bool()?,
        };
        let last_insert_id = r.u64()?;
        let row_count = r.u64()? as i64;
        let last_status = r.u16()?;
        let multi_statements = r.bool()?;
        let own_error = match r.u8()? {
            0 => None,
            tag @ (1 | 2) => Some(OwnErrorImage {
                code: r.u16()?,
                sqlstate: r.string()?,
                message: r.string()?,
                due: tag == 1,
            }),
            _ => return Err(WireError("bad own-error tag")),
        };
        let idle = Duration::from_millis(r.u64()?);
        let next_stmt_id = r.u32()?;
        let n = r.count(4 + 4 + 1 + 2 + 4)?;
        let mut stmts = Vec::with_capacity(n);
        for _ in 0..n {
            stmts.push(StmtImage {
                id: r.u32()?,
                sql: r.bytes()?.to_vec(),
                schema: r.opt_string()?,
                num_params: r.u16()?,
                types: r.bytes()?.to_vec(),
            });
        }
        let pending_input = r.bytes()?.to_vec();
        let mut found_rows = 0;
        while !r.is_empty() {
            match r.u8()? {
                EXT_FOUND_ROWS => found_rows = r.u64()?,
                _ => return Err(WireError("trailing bytes")),
            }
        }
        if stmts.iter().any(|s| s.id == 0 || s.id > next_stmt_id) {
            return Err(WireError("statement id out of range"));
        }
        Ok(ClientImage {
            id,
            user,
            host,
            capabilities,
            mariadb_caps,
            charset,
            scramble,
            schema,
            vars,
            user_vars,
            results_collation,
            session_ready,
            track: TrackSettings {
                schema: track_schema,
                state_change: track_state_change,
                vars: track_vars,
                transaction_info,
            },
            timeouts,
            last_insert_id,
            row_count,
            found_rows,
            last_status,
            multi_statements,
            own_error,
            idle,
            next_stmt_id,
            stmts,
            pending_input,
        })
    }

    /// The session as the engine keeps it.
    pub(super) fn session(&self) -> SessionVars {
        let mut s = SessionVars::new();
        for (name, value) in &self.vars {
            s.set_var(name, value);
        }
        s.set_user_vars(self.user_vars.iter().cloned().collect::<BTreeMap<_, _>>());
        s.set_results_collation(self.results_collation.clone());
        s.set_schema(self.schema.clone());
        s
    }
}

/// The `&'static` SQL state of the funnel's error constants that `state`
/// spells (a pending error's, after a handoff).
fn static_sqlstate(state: &str) -> &'static str {
    const KNOWN: [&str; 6] = ["HY000", "08004", "08S01", "28000", "42000", "70100"];
    KNOWN.into_iter().find(|k| *k == state).unwrap_or("HY000")
}

impl Engine {
    /// The next connection id: the sequence goes on, skipping ids still in
    /// use (clients adopted from another process keep theirs; after a
    /// wrap, long-lived clients).
    pub(super) fn take_connection_id(&mut self) -> u32 {
        loop {
            let id = self.shared.take_connection_id();
            if !self.client_ids.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn clients_len(&self) -> usize {
        self.clients.len()
    }

    /// The id the next client would get (told to a successor, which
    /// continues from it).
    pub(crate) fn next_connection_id(&self) -> u32 {
        self.shared.next_connection_id()
    }

    /// Continue the connection ids of a predecessor whose listeners this
    /// funnel took over (it accepts nobody after that): ids from `next` on.
    pub(crate) fn continue_connection_ids(&mut self, next: u32) {
        self.shared.continue_connection_ids(next);
    }

    /// During a shutdown: a successor is being reached (idle clients wait
    /// for the answer, until `until` at most).
    pub(crate) fn successor_pending(&mut self, until: Instant) {
        self.handoff.successor = Successor::Pending { until };
    }

    /// This funnel's successor as the engine knows it (the first loop
    /// tells the others, `loops.rs`).
    pub(crate) fn successor(&self) -> Successor {
        self.handoff.successor
    }

    /// Take the first loop's word on the successor.
    pub(crate) fn set_successor(&mut self, successor: Successor) {
        self.handoff.successor = successor;
        self.handoff.successor_told = true;
    }

    /// The successor answered: clients are handed over between commands.
    pub(crate) fn successor_ready(&mut self) {
        self.handoff.successor = Successor::Ready;
    }

    /// No successor (any more): clients are closed between commands.
    pub(crate) fn successor_gone(&mut self) {
        self.handoff.successor = Successor::None;
    }

    /// Between two commands, with nothing on a backend: whether the client
    /// can go to another process now.
    fn can_hand_off(&self, key: usize) -> bool {
        let Some(c) = self.clients.get(key) else {
            return false;
        };
        c.waits_for_command()
            && c.sent().is_none()
            && c.pinned.is_none()
            && c.pins.is_empty()
            && c.unreported_held == 0
            && c.open_cursors.is_empty()
            && !c.read_back_pending
            && c.multi_rest.is_none()
            && c.closes_awaited == 0
            && c.auth_hold.is_none()
            && c.relay_privileges.is_none()
            && c.buffered == 0
            && !c.read_closed
            && !c.close_after_flush
            && self.pools.get(c.pool).is_some_and(|p| !p.relay)
    }

    /// The client's image, when it can be handed over now.
    pub(crate) fn client_image(&self, key: usize) -> Option<ClientImage> {
        if !self.can_hand_off(key) {
            return None;
        }
        let c = &self.clients[key];
        if c.rbuf.len() + c.stmts.bytes() > MAX_IMAGE_BYTES / 2 {
            return None;
        }
        let mut stmts: Vec<StmtImage> = c
            .stmts
            .iter()
            .map(|(id, st)| StmtImage {
                id,
                sql: st.sql.to_vec(),
                schema: st.schema.clone(),
                num_params: st.num_params,
                types: st.types.clone(),
            })
            .collect();
        // In the order the client prepared them (adoption gives a second
        // prepare of the same SQL its own key, as the first one's does).
        stmts.sort_unstable_by_key(|st| st.id);
        Some(ClientImage {
            id: c.id,
            user: c.user.clone(),
            host: c.host.clone(),
            capabilities: c.capabilities,
            mariadb_caps: c.mariadb_caps,
            charset: c.charset,
            scramble: c.scramble,
            schema: c.session.schema.clone(),
            vars: c
                .session
                .vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            user_vars: c
                .session
                .user_vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            results_collation: c.session.results_collation.clone(),
            session_ready: c.session_ready,
            track: c.track.clone(),
            timeouts: c.timeouts,
            last_insert_id: c.last_insert_id,
            row_count: c.row_count,
            found_rows: c.found_rows,
            last_status: c.last_status,
            multi_statements: c.multi_statements,
            own_error: c.own_error.as_ref().map(|e| OwnErrorImage {
                code: e.code.0,
                sqlstate: e.code.1.to_string(),
                message: e.message.clone(),
                due: e.due,
            }),
            idle: self.now.saturating_duration_since(c.last_active),
            next_stmt_id: c.next_stmt_id,
            stmts,
            pending_input: c.rbuf.as_slice().to_vec(),
        })
    }

    /// Give the client to the successor: its socket and image go to the I/O
    /// layer (`Action::HandOffClient`), and it is gone from this engine as
    /// if it had left (its statements let go of, and so on). False when it
    /// cannot go now.
    fn hand_off_client(&mut self, key: usize) -> bool {
        self.drop_warnings_pin(key);
        let Some(image) = self.client_image(key).map(|i| i.encode()) else {
            return false;
        };
        if image.len() > MAX_IMAGE_BYTES {
            return false;
        }
        let mut c = self.clients.remove(key);
        self.client_ids.remove(&c.id);
        self.shared.client_gone();
        debug!("client {} ({}) handed over", c.id, c.peer.description());
        self.actions.push(Action::HandOffClient {
            conn: c.conn,
            image,
        });
        self.handoff.handed_off += 1;
        self.shared.count_handed_off();
        c.rbuf.clear();
        self.bufs.release(&mut c.rbuf);
        self.bufs.release(&mut c.wbuf);
        true
    }

    /// A client between commands that only its warnings keep on its
    /// backend (until its next statement) would otherwise wait for the
    /// deadline: it lets its warnings go (its next `SHOW WARNINGS`, on the
    /// new funnel, shows none), as when the pinned allowance is full.
    pub(super) fn drop_warnings_pin(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.pins == PinSet::only(PinCause::Diagnostics)
            && c.waits_for_command()
            && !c.read_back_pending
        {
            c.unpin(PinCause::Diagnostics);
            self.unpin_if_free(key);
        }
    }

    /// During a shutdown, a client that is not busy with a command: handed
    /// over when there is a successor and it can go (else it waits, while
    /// pinned or logging in, until the deadline), or closed: a client that
    /// waits for a command silently (no error it did not ask for), others
    /// (logging in, a command not yet complete) with ERR 1053 as before.
    pub(super) fn shutdown_idle_client(&mut self, key: usize, past_deadline: bool) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        // A TLS client's session (its keys, its record counters) lives in
        // this process: it is closed between its commands, never handed over.
        if !past_deadline && !c.read_closed && !c.tls {
            match self.handoff.successor {
                Successor::Pending { until } if self.now < until => return,
                Successor::Ready => {
                    self.hand_off_client(key);
                    // Not yet (pinned, logging in, ...): it waits.
                    return;
                }
                _ => {}
            }
        }
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let logged_in = !matches!(
            c.state,
            ClientState::Handshake
                | ClientState::AuthSwitch(_)
                | ClientState::Relay { login: true, .. }
        ) && c.auth_hold.is_none();
        if logged_in && c.waits_for_command() && c.rbuf.is_empty() {
            self.close_client(key, "shutdown: closed between its commands");
        } else {
            self.close_client_with_error(
                key,
                err::ER_SERVER_SHUTDOWN,
                "funnel: server shutdown in progress",
            );
        }
    }

    /// Adopt a client another funnel process handed over (its socket is
    /// `conn`): a logged-in, idle client of the same user, with its id,
    /// session and statements, whose next command is served as the old
    /// process would have served it. Its key and serial, or why not (the
    /// I/O layer then closes the socket: the client sees its connection
    /// close between commands).
    pub(crate) fn adopt_client(
        &mut self,
        conn: ConnId,
        peer: Peer,
        image: &[u8],
        queued_at: Option<Instant>,
    ) -> Result<(usize, u64), String> {
        let image = ClientImage::decode(image).map_err(|e| format!("bad client image: {}", e.0))?;
        if image.id == 0 || self.client_ids.contains_key(&image.id) {
            return Err(format!("connection id {} is in use here", image.id));
        }
        let Some(user_pool) = self.user_pool(&image.user) else {
            return Err(format!(
                "user {:?} is not in this funnel's configuration",
                image.user
            ));
        };
        let per_client = self.config.max_prepared_stmts_per_client;
        let total = self.config.max_prepared_stmt_count;
        if image.stmts.len() > per_client || self.prepared_stmts.get() + image.stmts.len() > total {
            return Err(format!(
                "its {} prepared statements exceed max_prepared_stmts_per_client or max_prepared_stmt_count here",
                image.stmts.len()
            ));
        }
        let pool = self.login_pool(user_pool, image.capabilities);
        let (key, serial) = self.insert_adopted_client(conn, peer, pool, &image);
        let c = &mut self.clients[key];
        c.own_error = image.own_error.as_ref().map(|e| {
            Box::new(OwnError {
                code: (e.code, static_sqlstate(&e.sqlstate)),
                message: e.message.clone(),
                due: e.due,
            })
        });
        c.last_active = self.now.checked_sub(image.idle).unwrap_or(self.now);
        // The process list's Time of an idle client counts from here.
        c.command_read_at = c.last_active;
        for s in &image.stmts {
            let mut k = stmt_key(pool, s.schema.as_deref(), &s.sql);
            if c.stmts.values().any(|o| o.key == k) {
                // As a second prepare of the same SQL gets (see backend.rs).
                k = own_stmt_key(k, s.id);
            }
            c.stmts.insert(
                s.id,
                ClientStmt {
                    // Scanned once, for all its executes (as at a prepare).
                    facts: crate::server::statement::statement_facts(&s.sql),
                    sql: s.sql.as_slice().into(),
                    schema: s.schema.clone(),
                    key: k,
                    num_params: s.num_params,
                    types: s.types.clone(),
                },
            );
        }
        c.retally();
        if !image.pending_input.is_empty() {
            self.bufs.ensure(&mut c.rbuf);
            c.rbuf.extend_from_slice(&image.pending_input);
        }
        self.client_ids.insert(image.id, key);
        self.handoff.adopted += 1;
        self.arm_idle_timer(key);
        // What it sent meanwhile is in its socket (or already here).
        self.actions.push(Action::ReadClient { key, serial });
        self.queued_elsewhere = queued_at.map(|at| (key, at));
        self.process_client_input(key);
        // Cleared once its first command was handled; here too, should its
        // input hold no whole command yet.
        self.queued_elsewhere = None;
        if let Some(c) = self.clients.get(key) {
            if c.rbuf.is_empty() {
                self.bufs.release(&mut self.clients[key].rbuf);
            }
        }
        Ok((key, serial))
    }

    /// A client adopted from another loop of this process kept its TLS
    /// session (`loops.rs`).
    pub(crate) fn set_client_tls(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key) {
            c.tls = true;
        }
    }

    /// Say what a handoff did, once the shutdown is complete.
    pub(super) fn log_handoff_summary(&self) {
        if self.share.count > 1 {
            // Said once for all loops, when all are done (`event_loop.rs`).
            return;
        }
        self.log_handoff_total(self.handoff.handed_off);
    }

    /// Say how many clients went to the new funnel (all loops').
    pub(crate) fn log_handoff_total(&self, n: u64) {
        if n > 0 {
            info!("{n} client(s) handed over to the new funnel");
        } else if self.handoff.successor == Successor::Ready {
            warn!("a new funnel was ready, but no client could be handed over to it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn image() -> ClientImage {
        ClientImage {
            id: 4242,
            user: "app".into(),
            host: "127.0.0.1".into(),
            capabilities: 0x00ff_a68f,
            mariadb_caps: 0x8,
            charset: 224,
            scramble: *b"abcdefghij0123456789",
            schema: Some("shop".into()),
            vars: vec![
                ("sql_mode".into(), "ANSI_QUOTES".into()),
                ("time_zone".into(), "+02:00".into()),
            ],
            user_vars: vec![("a".into(), "_binary 0x41".into())],
            results_collation: Some("utf8mb4_unicode_ci".into()),
            session_ready: true,
            track: TrackSettings {
                schema: true,
                state_change: true,
                vars: TrackedVars::List(vec!["autocommit".into(), "time_zone".into()].into()),
                transaction_info: TransactionInfo::Characteristics,
            },
            timeouts: ClientTimeouts {
                wait: Some(77),
                interactive: None,
                interactive_login: true,
            },
            last_insert_id: 99,
            row_count: -1,
            found_rows: 12,
            last_status: 2,
            multi_statements: false,
            own_error: Some(OwnErrorImage {
                code: 2013,
                sqlstate: "HY000".into(),
                message: "funnel: gone".into(),
                due: true,
            }),
            idle: Duration::from_millis(1500),
            next_stmt_id: 7,
            stmts: vec![
                StmtImage {
                    id: 3,
                    sql: b"SELECT ?".to_vec(),
                    schema: Some("shop".into()),
                    num_params: 1,
                    types: vec![8, 0],
                },
                StmtImage {
                    id: 7,
                    sql: b"SELECT ?".to_vec(),
                    schema: None,
                    num_params: 1,
                    types: Vec::new(),
                },
            ],
            pending_input: vec![5, 0, 0, 0, 3],
        }
    }

    #[test]
    fn image_round_trip() {
        let img = image();
        let bytes = img.encode();
        assert_eq!(ClientImage::decode(&bytes), Ok(img.clone()));
        // An error already given (in the diagnostics area) stays given.
        let mut given = img.clone();
        if let Some(e) = given.own_error.as_mut() {
            e.due = false;
        }
        assert_eq!(ClientImage::decode(&given.encode()), Ok(given));
        let mut plain = img;
        plain.schema = None;
        plain.own_error = None;
        plain.stmts.clear();
        plain.next_stmt_id = 0;
        plain.track.vars = TrackedVars::All;
        plain.pending_input.clear();
        assert_eq!(ClientImage::decode(&plain.encode()), Ok(plain));
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let bytes = image().encode();
        // Every truncation, and every byte flipped, either decodes to
        // something or is refused; none panics. Without its tagged fields
        // an image is whole (as a funnel before them wrote it).
        let base = bytes.len() - 9;
        for n in 0..bytes.len() {
            let decoded = ClientImage::decode(&bytes[..n]);
            if n == base {
                assert_eq!(
                    decoded.map(|i| i.found_rows),
                    Ok(0),
                    "without the tagged fields"
                );
            } else {
                assert!(decoded.is_err(), "prefix {n}");
            }
        }
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = ClientImage::decode(&b);
            }
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(ClientImage::decode(&long), Err(WireError("trailing bytes")));
        let mut other = bytes;
        other[0] = 99;
        assert!(ClientImage::decode(&other).is_err());
        // Huge counts and lengths are refused before allocating.
        let mut w = Writer::default();
        w.u8(IMAGE_VERSION);
        w.u32(1);
        w.u32(u32::MAX);
        assert!(ClientImage::decode(&w.0).is_err());
        // Pseudo-random input.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let mut buf = vec![IMAGE_VERSION];
            for _ in 0..len % 97 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            let _ = ClientImage::decode(&buf);
        }
    }

    fn engine() -> Engine {
        let config = Config::parse(
            "[backend]\naddress = 127.0.0.1:3306\n[user app]\npassword = pw\n[user other]\npassword = pw\n",
            "t",
        )
        .unwrap();
        Engine::new(config, Instant::now())
    }

    #[test]
    fn adopted_client_gives_back_its_image() {
        let mut e = engine();
        let img = image();
        let (key, serial) = e
            .adopt_client(ConnId(5), Peer::Tcp(None), &img.encode(), None)
            .unwrap();
        assert!(e.client_is(key, serial));
        let c = &e.clients[key];
        assert_eq!(c.id, 4242);
        assert_eq!(c.session.schema.as_deref(), Some("shop"));
        assert_eq!(c.stmts.len(), 2);
        // The same SQL in another schema has a key of its own; the same SQL
        // twice in one schema would too.
        let keys: Vec<u64> = c.stmts.values().map(|s| s.key).collect();
        assert_ne!(keys[0], keys[1]);
        assert_eq!(e.client_ids.get(&4242), Some(&key));
        // Its pending input is not a whole command: it waits for the rest.
        assert!(e.clients[key].current().is_none());
        // Pending input and all, it can go on to the next process as it came.
        let back = e.client_image(key).unwrap();
        let mut want = img.clone();
        want.idle = back.idle;
        assert!(back.idle >= Duration::from_millis(1500));
        assert_eq!(back, want);
        // New clients never get its id.
        e.continue_connection_ids(4242);
        assert_eq!(e.take_connection_id(), 4243);
        // Its id is taken: a second copy is refused.
        assert!(e
            .adopt_client(ConnId(6), Peer::Tcp(None), &img.encode(), None)
            .is_err());
    }

    #[test]
    fn adoption_is_refused_for_unknown_users_and_garbage() {
        let mut e = engine();
        let mut img = image();
        img.user = "nobody".into();
        let err = e
            .adopt_client(ConnId(1), Peer::Unix, &img.encode(), None)
            .unwrap_err();
        assert!(err.contains("not in this funnel's configuration"), "{err}");
        assert!(e
            .adopt_client(ConnId(1), Peer::Unix, b"\x01garbage", None)
            .is_err());
        assert!(e.clients.is_empty() && e.client_ids.is_empty());
        assert_eq!(e.prepared_stmts.get(), 0);
    }

    #[test]
    fn pinned_or_busy_clients_are_not_imaged() {
        let mut e = engine();
        let (key, _) = e
            .adopt_client(ConnId(1), Peer::Unix, &image().encode(), None)
            .unwrap();
        assert!(e.client_image(key).is_some());
        e.clients[key]
            .pins
            .insert(crate::server::session::PinCause::Transaction);
        assert!(e.client_image(key).is_none());
        e.clients[key].drop_pins();
        e.clients[key].set_state(ClientState::Queued);
        assert!(e.client_image(key).is_none());
        e.clients[key].set_state(ClientState::Idle);
        e.clients[key].wbuf.extend_from_slice(b"x");
        assert!(e.client_image(key).is_none());
    }

    #[test]
    fn connection_ids_continue_a_predecessor() {
        let mut e = engine();
        e.continue_connection_ids(1000);
        assert_eq!(e.take_connection_id(), 1000);
        e.continue_connection_ids(10);
        assert_eq!(e.take_connection_id(), 1001);
        e.continue_connection_ids(u32::MAX);
        assert_eq!(e.take_connection_id(), u32::MAX);
        assert_eq!(e.take_connection_id(), 1);
    }
}
