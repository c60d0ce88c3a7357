//! Client connections: the funnel's front end.
//!
//! handshake → (auth switch) → (connect-with-db check) → idle ⇄ queued →
//! running on a backend → idle; closing at any point. The funnel
//! authenticates clients itself, so a client costs mysqld nothing until it
//! sends a command.

use std::time::{Duration, Instant};

use log::{debug, info};

use super::action::{Action, ConnId};
use super::auth_throttle::{AddrKey, Admit, Limits};
use super::client_track::TrackSettings;
use super::io::{Buf, Peer, ReadOutcome};
use super::log_limit::LogEvent;
use super::pool::{ClientRef, Request};
use super::session::{
    parse_kill, ClientTimeouts, FunnelAnswered, Kill, PinCause, PinSet, SessionVars,
};
use super::statement::{kill_split, query_facts, StatementFacts};
use super::stmt::{
    execute_layout, execute_types, release_free_memory, ClientStmts, TRIM_AFTER_BYTES,
};
use super::timer::TimerKind;
use super::{Engine, POOLED_BUF_MAX};
use crate::config::Credential;
use crate::protocol::auth::{
    ed25519_public_key, native_password_stage2, verify_ed25519, verify_native, CLIENT_ED25519,
    ED25519_NONCE_LEN,
};
use crate::protocol::caching_sha2::{self, CACHING_SHA2_PASSWORD};
use crate::protocol::change_user::{decode_change_user, ChangeUser};
use crate::protocol::command::command_name;
use crate::protocol::consts::err::*;
use crate::protocol::consts::*;
use crate::protocol::deprecate_eof::encode_end_of_rows;
use crate::protocol::handshake::{
    is_ssl_request, AuthSwitchRequest, HandshakeResponse, HandshakeV10,
};
use crate::protocol::mariadb_ext::{
    bulk_layout, bulk_types, column_def_names_end, response_mariadb_caps,
    set_greeting_mariadb_caps, MARIADB_CLIENT_EXTENDED_METADATA,
    MARIADB_CLIENT_STMT_BULK_OPERATIONS,
};
use crate::protocol::packet::{scan_message, write_packet, MessageSpan, UploadFramer, HEADER_LEN};
use crate::protocol::response::{encode_eof, encode_err, encode_ok, OkPacket};
use crate::protocol::session_track::{encode_state_change, StateChange};
use crate::protocol::tracker::{expect_for, Expect};
use crate::protocol::ProtocolError;

/// The answer to a `KILL` the funnel cannot run for its clients.
const KILL_UNSUPPORTED: &str =
    "funnel: only KILL [CONNECTION | QUERY] <id> is supported, with the id CONNECTION_ID() returns";

/// Largest handshake response the funnel reads (attributes included).
const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;

/// What the funnel offers clients. `CLIENT_DEPRECATE_EOF` is honoured per
/// client: backends always answer with EOF packets, which reach a client
/// that asked for OK terminators translated (`protocol::deprecate_eof`).
/// `CLIENT_FOUND_ROWS` is honoured by running such clients' commands on
/// backends that logged in with it (the user's `found_rows` pool).
/// `CLIENT_SESSION_TRACK` is honoured per client: the backends track
/// everything, and each client gets what its own `session_track_*` settings
/// would report (`client_track`).
/// No `CLIENT_SSL` (not yet), no `CLIENT_COMPRESS`.
pub const SERVER_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_NO_SCHEMA
    | CLIENT_ODBC
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF;

/// See [`Client::label`].
struct ClientLabel<'a>(&'a Client);

impl std::fmt::Display for ClientLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.0;
        match c.peer {
            Peer::Unix => write!(f, "client {} (unix socket)", c.id),
            Peer::Tcp(Some(a)) => write!(f, "client {} ({a})", c.id),
            Peer::Tcp(None) => write!(f, "client {} ({})", c.id, c.host),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PendingAuth {
    pub pool: Option<usize>,
    pub user: String,
    pub database: Option<String>,
    pub capabilities: u32,
    pub charset: u8,
    /// MariaDB's extended capabilities it asked for, of those offered.
    pub mariadb_caps: u32,
    /// The nonce of a client_ed25519 auth switch sent for this login.
    pub nonce: Option<[u8; ED25519_NONCE_LEN]>,
    /// The response is caching_sha2_password's (over the scramble).
    pub sha2: bool,
}

#[derive(Clone, Debug)]
pub enum ClientState {
    /// Greeting sent; waiting for the handshake response.
    Handshake,
    /// Asked the client to switch to mysql_native_password.
    AuthSwitch(Box<PendingAuth>),
    /// Waits for its relayed login's connection (`relay.rs`): logging in
    /// (`login`: its packets go to mysqld), or being reset.
    Relay {
        backend: usize,
        login: bool,
    },
    /// Authenticated; the schema it asked for is being checked on a backend.
    ConnectDb,
    Idle,
    /// A command waits in the pool's backlog.
    Queued,
    /// A command runs on this backend.
    Running(usize),
}

/// A login held back by `auth_throttle` until its timer fires.
#[derive(Debug)]
pub struct AuthHold {
    pub auth: PendingAuth,
    pub response: Vec<u8>,
    pub seq: u8,
}

pub struct Client {
    pub serial: u64,
    /// The connection id the funnel announced (what `CONNECTION_ID()` should say).
    pub id: u32,
    /// Its socket in the I/O layer.
    pub conn: ConnId,
    /// Who connected (read once, at accept).
    pub peer: Peer,
    pub state: ClientState,
    pub pool: usize,
    pub rbuf: Buf,
    pub wbuf: Buf,
    pub capabilities: u32,
    /// MariaDB's extended capabilities negotiated (`mariadb_ext`).
    pub mariadb_caps: u32,
    pub charset: u8,
    pub scramble: [u8; 20],
    pub user: String,
    pub host: String,
    pub session: SessionVars,
    pub session_ready: bool,
    /// Its `session_track_*` settings (with CLIENT_SESSION_TRACK).
    pub track: TrackSettings,
    /// The backend this client holds (pinned), if any.
    pub pinned: Option<usize>,
    pub pins: PinSet,
    /// The command being handled: the first message in `rbuf`.
    pub current: Option<MessageSpan>,
    /// The command sent to a backend whose answer has not started: still
    /// the first message in `rbuf`, so that it can be sent again if that
    /// backend dies first (see `Server::retry_current`). Dropped when the
    /// answer starts, or the client goes idle.
    pub sent: Option<MessageSpan>,
    /// The current command's retries after its backend died: all of them,
    /// and those after it may have reached a mysqld that had not yet been
    /// tried (`retried_at`: when the last one was made).
    pub retries: u8,
    pub retries_reached: u8,
    pub retried_at: Option<Instant>,
    /// Added to backend sequence ids (non-zero only for the connect-with-db check).
    pub seq_offset: u8,
    pub command_read_at: Instant,
    pub command_sent_at: Instant,
    pub last_insert_id: u64,
    /// What `ROW_COUNT()` returns: the client's previous statement's
    /// affected rows, -1 after a result set or an error.
    pub row_count: i64,
    pub last_status: u16,
    pub bytes_out: u64,
    /// An error to give as the answer to the next command.
    pub pending_error: Option<((u16, &'static str), String)>,
    /// What the running statement may take and release of the session
    /// state mysqld does not report (`session::unreported` bits).
    pub unreported_taken: u8,
    pub unreported_released: u8,
    /// That state, held now: pins while not empty.
    pub unreported_held: u8,
    pub multi_statements: bool,
    /// Stopped reading: too much unprocessed input.
    pub read_paused: bool,
    /// A `FlushClient` action is queued (one per pass is enough).
    pub flush_queued: bool,
    pub close_after_flush: bool,
    /// The client shut down its sending side (FIN): what it sent before is
    /// answered, then the connection is closed, as mysqld does.
    pub read_closed: bool,
    /// Output has been waiting since then without the client reading it.
    pub write_stalled_since: Option<Instant>,
    /// Bytes of pending output held for this slow reader past
    /// output_high_watermark (connection first), counted in the server's
    /// `buffered_total`; 0 once the output has drained.
    pub buffered: usize,
    /// The client's prepared statements, by the ids the funnel gave them.
    pub stmts: ClientStmts,
    pub next_stmt_id: u32,
    /// The statement the current command is about.
    pub current_stmt: Option<u32>,
    /// Backends closing statements this client let go of: its next command
    /// waits until they have (mysqld's `Prepared_stmt_count` is down then,
    /// as after a close on a direct connection).
    pub closes_awaited: u16,
    /// Statements whose cursor is open on the pinned backend (PinCause::Cursor).
    pub open_cursors: Vec<u32>,
    /// What the current statement may do to the session (default for
    /// commands that are not statements).
    pub facts: StatementFacts,
    /// Its user variables (and, with `read_back_insert_id`, its
    /// `LAST_INSERT_ID()`) changed while its warnings were on its backend:
    /// they are read back after the statement that empties the warnings.
    pub read_back_pending: bool,
    pub read_back_insert_id: bool,
    /// A response finished; end-to-end latency is recorded when its last
    /// byte is written.
    pub e2e_pending: bool,
    /// The backend checking the connect-with-db schema, while in `ConnectDb`.
    pub running_connect_db: Option<usize>,
    /// Its own `wait_timeout` / `interactive_timeout` (never replayed).
    pub timeouts: ClientTimeouts,
    /// When it last sent a command or was written to: its idle time, for
    /// its `wait_timeout`, counts from here.
    pub last_active: Instant,
    /// When its one `TimerKind::ClientIdle` in the heap fires (an earlier
    /// one may be added when its `wait_timeout` shrinks; the later one is
    /// then ignored when it fires).
    pub idle_timer_at: Option<Instant>,
    /// The rest of a multi-statement query that holds a `KILL`, run in
    /// parts (see [`MultiRest`]).
    pub multi_rest: Option<MultiRest>,
    /// The current command is the funnel's to answer by the user's
    /// privileges, which a backend is asked for first.
    pub awaiting_privileges: bool,
    /// The current command is a query whose process-list references the
    /// funnel replaced already (not to be looked at again).
    pub rewritten: bool,
    /// A relayed login's own privileges (its pool is shared by every
    /// unlisted user, so they cannot be the pool's).
    pub relay_privileges: Option<super::processlist::Privileges>,
    /// When the connection was accepted (its login's deadline counts from it).
    pub accepted_at: Instant,
    /// A login held back after failed logins (`auth_throttle`).
    pub auth_hold: Option<Box<AuthHold>>,
}

/// What is left of a multi-statement query with a `KILL` in it: the
/// funnel runs such a query in parts (the statements before the `KILL` on a
/// backend, the `KILL` itself, the rest after), and the client gets one
/// answer stream, as from mysqld.
#[derive(Clone, Debug)]
pub struct MultiRest {
    /// The query text left to run.
    pub sql: Vec<u8>,
    /// Sequence id of the rest's first packet to the client.
    pub seq: u8,
    /// The part before ended without an error (its last result now says
    /// more results follow): the rest runs. Not ready when the client is
    /// idle again means the part ended with an error: as mysqld, the
    /// statements after it are not run.
    pub ready: bool,
}

impl Client {
    pub fn is_busy(&self) -> bool {
        matches!(
            self.state,
            ClientState::Queued | ClientState::Running(_) | ClientState::ConnectDb
        )
    }
    pub fn is_queued(&self) -> bool {
        matches!(self.state, ClientState::Queued | ClientState::ConnectDb) && self.current.is_some()
    }
    pub fn is_running(&self) -> bool {
        matches!(self.state, ClientState::Running(_))
    }
    pub fn set_running(&mut self, backend: usize) {
        if matches!(self.state, ClientState::ConnectDb) {
            // Stay in ConnectDb: its completion is handled differently.
            self.running_connect_db = Some(backend);
            return;
        }
        self.state = ClientState::Running(backend);
    }
    /// Waiting for its next command, as mysqld's `wait_timeout` counts:
    /// nothing queued or running, its answers all written.
    pub fn waits_for_command(&self) -> bool {
        matches!(self.state, ClientState::Idle) && self.current.is_none() && self.wbuf.is_empty()
    }
    pub fn set_idle(&mut self) {
        self.drop_sent();
        self.state = ClientState::Idle;
        self.seq_offset = 0;
        self.running_connect_db = None;
    }
    /// The answer to the command sent has started (or it is over): its
    /// bytes are no longer needed.
    pub fn drop_sent(&mut self) {
        if let Some(span) = self.sent.take() {
            self.rbuf.consume(span.wire_len);
        }
    }
    /// The session state that held the client to its backend is gone (the
    /// backend is reset or lost).
    pub fn drop_pins(&mut self) {
        self.pins.clear();
        self.read_back_pending = false;
        self.read_back_insert_id = false;
        self.unreported_held = 0;
        self.open_cursors.clear();
    }

    /// Track whether `stmt` has an open cursor; the cursor pin lasts while
    /// any statement has one.
    pub fn set_cursor_open(&mut self, stmt: u32, open: bool) {
        self.open_cursors.retain(|&s| s != stmt);
        if open {
            self.open_cursors.push(stmt);
        }
        if self.open_cursors.is_empty() {
            self.pins.remove(PinCause::Cursor);
        } else {
            self.pins.insert(PinCause::Cursor);
        }
    }

    /// Status flags for an answer the funnel makes itself: those of the
    /// session (transaction, autocommit, backslash escapes) as the last
    /// response left them, without those that described only the statement
    /// that gave it (no index used, more results, cursor, ...), as mysqld's
    /// own answer to the next command would have them.
    /// How log lines name the client: its connection id, address and port.
    pub fn label(&self) -> impl std::fmt::Display + '_ {
        ClientLabel(self)
    }

    pub fn answer_status(&self) -> u16 {
        self.last_status
            & (SERVER_STATUS_IN_TRANS
                | SERVER_STATUS_AUTOCOMMIT
                | SERVER_STATUS_NO_BACKSLASH_ESCAPES
                | SERVER_STATUS_IN_TRANS_READONLY)
    }
    fn cref(&self, key: usize) -> ClientRef {
        ClientRef {
            key,
            serial: self.serial,
        }
    }
}

impl Engine {
    /// The I/O layer accepted a connection: greet it, or refuse it (ERR
    /// 1040) when `max_client_connections` is reached. The key and serial
    /// of the new client, or None when refused.
    pub(crate) fn accept_client(&mut self, conn: ConnId, peer: Peer) -> Option<(usize, u64)> {
        self.counters.clients_accepted += 1;
        if self.clients.len() >= self.config.max_client_connections {
            self.counters.clients_refused += 1;
            let mut payload = Vec::new();
            encode_err(
                &mut payload,
                ER_CON_COUNT_ERROR.0,
                ER_CON_COUNT_ERROR.1,
                "Too many connections",
            );
            let mut framed = Vec::new();
            write_packet(&mut framed, 0, &payload);
            self.actions.push(Action::CloseClient {
                conn,
                last_words: framed,
                reset: false,
            });
            log_limited!(
                self,
                LogEvent::ClientRefused,
                "refusing a client from {}: max_client_connections = {} reached ({} refused so far)",
                peer.description(),
                self.config.max_client_connections,
                self.counters.clients_refused
            );
            return None;
        }
        let serial = self.next_serial();
        let id = self.take_connection_id();
        let mut scramble = [0u8; 20];
        fill_scramble(&mut scramble);
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let host = peer.host();
        self.client_ids.insert(id, key);
        entry.insert(Client {
            serial,
            id,
            conn,
            peer,
            state: ClientState::Handshake,
            pool: 0,
            rbuf: Buf::new(),
            wbuf: Buf::new(),
            capabilities: 0,
            mariadb_caps: 0,
            charset: 0,
            scramble,
            user: String::new(),
            host,
            session: SessionVars::new(),
            session_ready: false,
            track: TrackSettings::default(),
            pinned: None,
            pins: PinSet::default(),
            current: None,
            sent: None,
            retries: 0,
            retries_reached: 0,
            retried_at: None,
            seq_offset: 0,
            command_read_at: self.now,
            command_sent_at: self.now,
            last_insert_id: 0,
            row_count: 0,
            last_status: SERVER_STATUS_AUTOCOMMIT,
            bytes_out: 0,
            pending_error: None,
            unreported_taken: 0,
            unreported_released: 0,
            unreported_held: 0,
            multi_statements: true,
            read_paused: false,
            flush_queued: false,
            close_after_flush: false,
            read_closed: false,
            running_connect_db: None,
            multi_rest: None,
            awaiting_privileges: false,
            rewritten: false,
            relay_privileges: None,
            e2e_pending: false,
            stmts: ClientStmts::new(self.prepared_stmts.clone(), self.stmt_holders.clone()),
            closes_awaited: 0,
            next_stmt_id: 0,
            current_stmt: None,
            open_cursors: Vec::new(),
            write_stalled_since: None,
            buffered: 0,
            facts: StatementFacts::default(),
            read_back_pending: false,
            read_back_insert_id: false,
            timeouts: ClientTimeouts::default(),
            last_active: self.now,
            idle_timer_at: None,
            accepted_at: self.now,
            auth_hold: None,
        });
        let greeting = HandshakeV10 {
            server_version: self.announced_version(),
            connection_id: id,
            scramble: scramble.to_vec(),
            capabilities: SERVER_CAPS
                | if self.config.allow_local_infile {
                    CLIENT_LOCAL_FILES
                } else {
                    0
                },
            charset: self.servers[0].charset.unwrap_or(45),
            status: SERVER_STATUS_AUTOCOMMIT,
            auth_plugin: MYSQL_NATIVE_PASSWORD.to_string(),
        };
        self.scratch.clear();
        greeting.encode(&mut self.scratch);
        let offered = self.offered_mariadb_caps();
        if offered != 0 {
            // As MariaDB announces them: without CLIENT_MYSQL.
            set_greeting_mariadb_caps(&mut self.scratch, offered);
        }
        let payload = std::mem::take(&mut self.scratch);
        self.send_to_client(key, 0, &payload);
        self.scratch = payload;
        let at = self.now + self.config.handshake_timeout;
        self.add_timer(at, TimerKind::ClientHandshake { key, serial });
        Some((key, serial))
    }

    /// A client another funnel process handed over (`handoff.rs`), as it
    /// was there: logged in to `pool`, idle, with the image's session. Its
    /// statements, pending error and input are the caller's to add.
    pub(super) fn insert_adopted_client(
        &mut self,
        conn: ConnId,
        peer: Peer,
        pool: usize,
        image: &super::handoff::ClientImage,
    ) -> (usize, u64) {
        let serial = self.next_serial();
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        entry.insert(Client {
            serial,
            id: image.id,
            conn,
            peer,
            state: ClientState::Idle,
            pool,
            rbuf: Buf::new(),
            wbuf: Buf::new(),
            capabilities: image.capabilities,
            mariadb_caps: image.mariadb_caps,
            charset: image.charset,
            scramble: image.scramble,
            user: image.user.clone(),
            host: image.host.clone(),
            session: image.session(),
            session_ready: image.session_ready,
            track: image.track.clone(),
            pinned: None,
            pins: PinSet::default(),
            current: None,
            sent: None,
            retries: 0,
            retries_reached: 0,
            retried_at: None,
            seq_offset: 0,
            command_read_at: self.now,
            command_sent_at: self.now,
            last_insert_id: image.last_insert_id,
            row_count: image.row_count,
            last_status: image.last_status,
            bytes_out: 0,
            pending_error: None,
            unreported_taken: 0,
            unreported_released: 0,
            unreported_held: 0,
            multi_statements: image.multi_statements,
            read_paused: false,
            flush_queued: false,
            close_after_flush: false,
            read_closed: false,
            running_connect_db: None,
            multi_rest: None,
            awaiting_privileges: false,
            rewritten: false,
            relay_privileges: None,
            e2e_pending: false,
            stmts: ClientStmts::new(self.prepared_stmts.clone(), self.stmt_holders.clone()),
            closes_awaited: 0,
            next_stmt_id: image.next_stmt_id,
            current_stmt: None,
            open_cursors: Vec::new(),
            write_stalled_since: None,
            buffered: 0,
            facts: StatementFacts::default(),
            read_back_pending: false,
            read_back_insert_id: false,
            timeouts: image.timeouts,
            last_active: self.now,
            idle_timer_at: None,
            accepted_at: self.now,
            auth_hold: None,
        });
        (key, serial)
    }

    /// The server a client's commands go to (its pool's; before login, the
    /// first server, which clients are greeted as).
    pub(super) fn client_server(&self, key: usize) -> &super::backend_server::BackendServer {
        let server = self
            .clients
            .get(key)
            .and_then(|c| self.pools.get(c.pool))
            .map_or(0, |p| p.server);
        &self.servers[server]
    }

    /// MariaDB's extended capabilities offered to clients: those the
    /// backends negotiated with mysqld (see `backend::MARIADB_CAPS`), none
    /// until a backend has answered.
    fn offered_mariadb_caps(&self) -> u32 {
        self.servers[0].mariadb_caps.unwrap_or(0)
    }

    fn announced_version(&self) -> String {
        if !self.config.server_version.is_empty() {
            return self.config.server_version.clone();
        }
        match &self.servers[0].version {
            Some(v) => v.clone(),
            // Until a backend has answered: MariaDB's own convention, so
            // clients that look for "MariaDB" see it.
            None => "5.5.5-10.11.0-MariaDB-funnel".to_string(),
        }
    }

    /// Whether the I/O layer should read from the client now: not while
    /// its reading is paused (a command in flight, backpressure), nor once
    /// it is closing or has closed its side.
    pub(crate) fn client_may_read(&self, key: usize) -> bool {
        self.clients
            .get(key)
            .is_some_and(|c| !(c.read_paused || c.close_after_flush || c.read_closed))
    }

    /// The buffer the I/O layer reads the client's bytes into (lent from
    /// the buffer pool until `client_read_done`).
    pub(crate) fn client_rbuf(&mut self, key: usize) -> Option<&mut Buf> {
        let c = self.clients.get_mut(key)?;
        self.bufs.ensure(&mut c.rbuf);
        Some(&mut c.rbuf)
    }

    /// The I/O layer read from the client into `client_rbuf`.
    pub(crate) fn client_read_done(&mut self, key: usize, outcome: std::io::Result<ReadOutcome>) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        // Bytes count for the client's pool once it has one (logged in);
        // the funnel-wide total counts the handshakes too.
        let pool = (!matches!(
            c.state,
            ClientState::Handshake
                | ClientState::AuthSwitch(_)
                | ClientState::Relay { login: true, .. }
        ))
        .then_some(c.pool);
        if let Ok(ReadOutcome::Drained(n) | ReadOutcome::Capped(n) | ReadOutcome::Closed(n)) =
            outcome
        {
            self.counters.bytes_from_clients += n as u64;
            if let Some(p) = pool.and_then(|p| self.pools.get_mut(p)) {
                p.counters.bytes_from_clients += n as u64;
            }
        }
        match outcome {
            Ok(ReadOutcome::Drained(_)) => {
                self.process_client_input(key);
            }
            Ok(ReadOutcome::Capped(_)) => {
                self.process_client_input(key);
                if let Some(c) = self.clients.get(key) {
                    self.actions.push(Action::ReadClient {
                        key,
                        serial: c.serial,
                    });
                }
            }
            Ok(ReadOutcome::Closed(_)) => {
                // Commands the client sent before its FIN still get their
                // answers (process_client_input closes once they are out).
                if let Some(c) = self.clients.get_mut(key) {
                    c.read_closed = true;
                }
                self.process_client_input(key);
                self.watch_half_closed(key);
            }
            Err(e) => {
                self.close_client(key, &format!("read failed: {e}"));
            }
        }
        if let Some(c) = self.clients.get_mut(key) {
            self.bufs.release(&mut c.rbuf);
        }
    }

    /// Handle what the client sent, as far as its state allows.
    pub(super) fn process_client_input(&mut self, key: usize) {
        loop {
            let Some(c) = self.clients.get_mut(key) else {
                return;
            };
            if c.close_after_flush {
                return;
            }
            if c.auth_hold.is_some() {
                // Its login is held: whatever else it sent waits.
                return;
            }
            match c.state {
                ClientState::Handshake
                | ClientState::AuthSwitch(_)
                | ClientState::Relay { login: true, .. } => {
                    let span = match scan_message(c.rbuf.as_slice(), MAX_HANDSHAKE_PACKET) {
                        Ok(Some(span)) => span,
                        Ok(None) if c.read_closed => {
                            self.close_client(key, "client closed the connection");
                            return;
                        }
                        Ok(None) => break,
                        Err(_) => {
                            self.close_client_logged(
                                key,
                                LogEvent::BadClientInput,
                                ER_HANDSHAKE_ERROR,
                                "Bad handshake",
                            );
                            return;
                        }
                    };
                    self.scratch.clear();
                    crate::protocol::packet::join_payload(
                        c.rbuf.as_slice(),
                        &span,
                        &mut self.scratch,
                    );
                    c.rbuf.consume(span.wire_len);
                    let payload = std::mem::take(&mut self.scratch);
                    if let ClientState::Relay { backend, .. } = c.state {
                        self.relay_client_packet(key, backend, &payload, span.last_seq);
                    } else if matches!(c.state, ClientState::Handshake) {
                        self.client_handshake_response(key, &payload, span.last_seq);
                    } else {
                        self.client_auth_switch_response(key, &payload, span.last_seq);
                    }
                    self.scratch = payload;
                }
                ClientState::Idle => {
                    if c.current.is_some() || c.closes_awaited > 0 {
                        break;
                    }
                    if let Some(m) = c.multi_rest.take() {
                        if m.ready {
                            // The next part of the client's query.
                            self.start_multi_rest(key, m);
                        }
                        continue;
                    }
                    let span = match scan_message(c.rbuf.as_slice(), self.config.max_allowed_packet)
                    {
                        Ok(Some(span)) => span,
                        Ok(None) if c.read_closed => {
                            // Every command sent before the FIN is answered
                            // (a partial one never will be complete).
                            c.close_after_flush = true;
                            self.flush_client(key);
                            return;
                        }
                        Ok(None) => break,
                        Err(ProtocolError::TooLarge { len, max }) => {
                            let msg = format!(
                                "funnel: got a packet of {len} bytes, bigger than max_allowed_packet ({max} bytes)"
                            );
                            self.close_client_logged(
                                key,
                                LogEvent::PacketTooLarge,
                                ER_NET_PACKET_TOO_LARGE,
                                &msg,
                            );
                            return;
                        }
                        Err(e) => {
                            let msg = format!("funnel: malformed packet from client: {e}");
                            self.close_client_logged(
                                key,
                                LogEvent::BadClientInput,
                                ER_NET_PACKETS_OUT_OF_ORDER,
                                &msg,
                            );
                            return;
                        }
                    };
                    if span.first_seq != 0 {
                        self.close_client_logged(
                            key,
                            LogEvent::BadClientInput,
                            ER_NET_PACKETS_OUT_OF_ORDER,
                            "Got packets out of order",
                        );
                        return;
                    }
                    c.current = Some(span);
                    // A command from the client: its answer starts at 1
                    // (only parts of a query with a KILL number on).
                    c.seq_offset = 0;
                    c.command_read_at = self.now;
                    c.last_active = self.now;
                    c.retries = 0;
                    c.retries_reached = 0;
                    c.retried_at = None;
                    self.handle_command(key);
                }
                ClientState::Running(b) => {
                    if self.backends.get(b).is_some_and(|b| b.infile) {
                        if !self.forward_infile(key, b) {
                            break;
                        }
                    } else {
                        break;
                    }
                }
                ClientState::Queued | ClientState::ConnectDb | ClientState::Relay { .. } => break,
            }
        }
        // Bound the unprocessed input one client may hold.
        let limit =
            self.config.max_allowed_packet + HEADER_LEN + self.config.max_client_pending_input;
        if let Some(c) = self.clients.get_mut(key) {
            if c.rbuf.len() > limit {
                c.read_paused = true;
            } else if c.read_paused {
                c.read_paused = false;
                self.actions.push(Action::ReadClient {
                    key,
                    serial: c.serial,
                });
            }
        }
    }

    /// A client that sent its FIN while a command of its was queued or
    /// running: check on it after `connect_timeout_ms`.
    fn watch_half_closed(&mut self, key: usize) {
        if let Some(c) = self.clients.get(key) {
            if c.is_busy() && !c.close_after_flush {
                let at = self.now + self.config.backend.connect_timeout;
                let serial = c.serial;
                self.add_timer(at, TimerKind::ClientHalfClosed { key, serial });
            }
        }
    }

    /// A half-closed client's command still waits or runs. A client that
    /// only shut down its sending side reads the answer, but one that is
    /// gone (the same FIN) would hold a shared backend for nobody: a
    /// command still running after `connect_timeout_ms` is treated as the
    /// client having left (its backend drained, then reset or replaced).
    pub(super) fn client_half_closed_timeout(&mut self, key: usize, serial: u64) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        if c.serial != serial || c.close_after_flush {
            return;
        }
        match c.state {
            ClientState::Running(_) | ClientState::ConnectDb => self.close_client(
                key,
                "client closed the connection; its command was still running after connect_timeout_ms",
            ),
            // Not yet on a backend: nothing is held for it.
            ClientState::Queued => self.watch_half_closed(key),
            _ => {}
        }
    }

    /// Relay what the client sent of a `LOAD DATA LOCAL INFILE` upload, as
    /// it arrives (its packets may be bigger than the input bound). Returns
    /// false when nothing could be relayed.
    fn forward_infile(&mut self, key: usize, backend: usize) -> bool {
        let c = &mut self.clients[key];
        let b = &mut self.backends[backend];
        if b.wbuf.len() >= self.config.output_high_watermark {
            // mysqld reads slower than the client sends: wait for it to
            // drain (flush_backend resumes us); the client's input bound
            // then stops reading from the client.
            return false;
        }
        // The client numbers its file after the request it saw, which
        // comes later in the backend's numbering if EOFs were left out.
        let seq_shift = b.eof.backend_seq(0);
        let (n, done) = b.upload.advance(c.rbuf.as_mut_slice(), seq_shift);
        if n == 0 && !done {
            return false;
        }
        self.bufs.ensure(&mut b.wbuf);
        b.wbuf.extend_from_slice(&c.rbuf.as_slice()[..n]);
        c.rbuf.consume(n);
        if done {
            b.infile = false;
            b.upload = UploadFramer::default();
            b.tracker.infile_sent();
        }
        self.flush_backend(backend);
        true
    }

    fn client_handshake_response(&mut self, key: usize, payload: &[u8], seq: u8) {
        if is_ssl_request(payload) {
            self.close_client_logged(
                key,
                LogEvent::ClientRefused,
                ER_HANDSHAKE_ERROR,
                "funnel: TLS is not supported; connect without TLS (e.g. --ssl-mode=DISABLED / --skip-ssl)",
            );
            return;
        }
        let resp = match HandshakeResponse::decode(payload) {
            Ok(r) => r,
            Err(_) => {
                self.close_client_logged(
                    key,
                    LogEvent::BadClientInput,
                    ER_HANDSHAKE_ERROR,
                    "Bad handshake",
                );
                return;
            }
        };
        // mysqld gives an interactive client's session wait_timeout the
        // global interactive_timeout, at login only.
        self.clients[key].timeouts.interactive_login = resp.capabilities & CLIENT_INTERACTIVE != 0;
        if self.config.relay_unlisted && self.user_pool(&resp.username).is_none() {
            // What it negotiated of MariaDB's extensions with the funnel's
            // greeting (its column definitions are edited to it).
            self.clients[key].mariadb_caps =
                response_mariadb_caps(payload) & self.offered_mariadb_caps();
            self.relay_login(key, resp, seq);
            return;
        }
        let pending = PendingAuth {
            pool: self.user_pool(&resp.username),
            user: resp.username.clone(),
            database: resp.database.clone().filter(|d| !d.is_empty()),
            capabilities: resp.capabilities,
            charset: resp.charset,
            mariadb_caps: response_mariadb_caps(payload) & self.offered_mariadb_caps(),
            nonce: None,
            sha2: false,
        };
        let plugin = resp.auth_plugin.as_deref().filter(|p| !p.is_empty());
        let wanted = self.auth_plugin_of(pending.pool);
        // A client that answered the greeting's scramble with the plugin
        // its user needs goes on without a switch (MySQL 8 clients answer
        // with caching_sha2_password by default).
        let switch = match plugin {
            None => wanted != MYSQL_NATIVE_PASSWORD,
            Some(p) => p != wanted,
        };
        let mut pending = pending;
        pending.sha2 = !switch && wanted == CACHING_SHA2_PASSWORD;
        if switch && resp.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            self.ask_auth_switch(key, pending, seq.wrapping_add(1));
            return;
        }
        self.client_verify(key, pending, &resp.auth_response, seq.wrapping_add(1));
    }

    /// The client offered another auth plugin than its user's: ask it to
    /// switch (to mysql_native_password or caching_sha2_password with this
    /// connection's scramble, to client_ed25519 with a fresh nonce).
    fn ask_auth_switch(&mut self, key: usize, mut pending: PendingAuth, seq: u8) {
        let wanted = self.auth_plugin_of(pending.pool);
        let switch = if wanted == CLIENT_ED25519 {
            // MariaDB's ed25519: a fresh 32-byte nonce, as mysqld sends it.
            let mut nonce = [0u8; ED25519_NONCE_LEN];
            let _ = getrandom::getrandom(&mut nonce);
            pending.nonce = Some(nonce);
            AuthSwitchRequest {
                plugin: CLIENT_ED25519.to_string(),
                data: nonce.to_vec(),
            }
        } else {
            let mut data = self.clients[key].scramble.to_vec();
            data.push(0);
            pending.sha2 = wanted == CACHING_SHA2_PASSWORD;
            AuthSwitchRequest {
                plugin: wanted.to_string(),
                data,
            }
        };
        let c = &mut self.clients[key];
        c.state = ClientState::AuthSwitch(Box::new(pending));
        let mut out = Vec::new();
        switch.encode(&mut out);
        self.send_to_client(key, seq, &out);
    }

    /// The auth plugin a pool's user logs in with (`auth_plugin`); for an
    /// unknown user, mysql_native_password (its login fails either way).
    fn auth_plugin_of(&self, pool: Option<usize>) -> &'static str {
        match pool.map(|p| &self.pools[p].user.credential) {
            Some(Credential::Ed25519(_) | Credential::Ed25519Key(_)) => CLIENT_ED25519,
            Some(Credential::CachingSha2(_)) => CACHING_SHA2_PASSWORD,
            _ => MYSQL_NATIVE_PASSWORD,
        }
    }

    fn client_auth_switch_response(&mut self, key: usize, payload: &[u8], seq: u8) {
        let c = &mut self.clients[key];
        let ClientState::AuthSwitch(pending) =
            std::mem::replace(&mut c.state, ClientState::Handshake)
        else {
            return;
        };
        self.client_verify(key, *pending, payload, seq.wrapping_add(1));
    }

    /// The key a user's failed logins are counted under: unknown users
    /// share one, so that made-up names cannot fill the table.
    fn throttle_user(auth: &PendingAuth) -> &str {
        if auth.pool.is_some() {
            &auth.user
        } else {
            "\0unknown user"
        }
    }

    fn client_verify(&mut self, key: usize, auth: PendingAuth, response: &[u8], seq: u8) {
        let limits = self.auth_limits();
        if !limits.delay.is_zero() {
            let c = &self.clients[key];
            let addr = c.host.parse().ok().map(AddrKey::of);
            let deadline = c.accepted_at + self.config.handshake_timeout;
            let user = Self::throttle_user(&auth);
            match self
                .auth_throttle
                .admit(addr, user, self.now, deadline, &limits)
            {
                Admit::Now => {}
                Admit::HoldUntil(at) => {
                    self.counters.auth_held += 1;
                    let c = &mut self.clients[key];
                    c.auth_hold = Some(Box::new(AuthHold {
                        auth,
                        response: response.to_vec(),
                        seq,
                    }));
                    let serial = c.serial;
                    self.add_timer(at, TimerKind::ClientAuthHold { key, serial });
                    return;
                }
                Admit::Refuse => {
                    self.counters.auth_throttled += 1;
                    let c = &mut self.clients[key];
                    let peer = c.peer.description();
                    log_limited!(
                        self,
                        LogEvent::AuthFailure,
                        "client {} from {peer} refused unchecked: too many failed logins for user '{}' or from this address",
                        c.id,
                        auth.user
                    );
                    let c = &mut self.clients[key];
                    let msg = format!(
                        "funnel: Host '{}' is blocked because of many failed logins for this user or from this address; try again later",
                        c.host
                    );
                    c.state = ClientState::Idle;
                    self.client_error(key, seq, ER_HOST_IS_BLOCKED, &msg);
                    if let Some(c) = self.clients.get_mut(key) {
                        c.close_after_flush = true;
                    }
                    self.flush_client(key);
                    return;
                }
            }
        }
        self.client_check(key, auth, response, seq);
    }

    /// Answer a login (or COM_CHANGE_USER) with an error and close.
    fn refuse_login(
        &mut self,
        key: usize,
        seq: u8,
        code: (u16, &'static str),
        msg: &str,
        user: &str,
    ) {
        self.counters.clients_refused += 1;
        let c = &mut self.clients[key];
        let peer = c.peer.description();
        log_limited!(
            self,
            LogEvent::ClientRefused,
            "client {} from {peer} refused as user '{user}': {msg}",
            c.id
        );
        let c = &mut self.clients[key];
        c.state = ClientState::Idle;
        self.client_error(key, seq, code, msg);
        if let Some(c) = self.clients.get_mut(key) {
            c.close_after_flush = true;
        }
        self.flush_client(key);
    }

    fn auth_limits(&self) -> Limits {
        Limits {
            threshold: u32::try_from(self.config.auth_failure_threshold).unwrap_or(u32::MAX),
            delay: self.config.auth_failure_delay,
            max_delay: self.config.auth_failure_max_delay,
        }
    }

    /// A held login's turn has come.
    pub(super) fn client_auth_hold_over(&mut self, key: usize, serial: u64) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.serial != serial {
            return;
        }
        let Some(hold) = c.auth_hold.take() else {
            return;
        };
        let AuthHold {
            auth,
            response,
            seq,
        } = *hold;
        self.client_check(key, auth, &response, seq);
        // Whatever it sent meanwhile (a pipelined first command).
        self.process_client_input(key);
    }

    fn client_check(&mut self, key: usize, auth: PendingAuth, response: &[u8], seq: u8) {
        if let Some(p) = auth.pool {
            // As mysqld checks the host before the password.
            let nets = &self.pools[p].user.allowed_networks;
            let host = &self.clients[key].host;
            let ip = match host.as_str() {
                "localhost" => Some(std::net::IpAddr::from([127, 0, 0, 1])),
                h => h.parse().ok(),
            };
            if !nets.is_empty() && !ip.is_some_and(|ip| nets.iter().any(|n| n.contains(ip))) {
                let msg = format!("Host '{host}' is not allowed to connect to this MariaDB server");
                self.refuse_login(key, seq, ER_HOST_NOT_PRIVILEGED, &msg, &auth.user);
                return;
            }
        }
        let verified = auth.pool.is_some_and(|p| {
            let stage2 = match &self.pools[p].user.credential {
                Credential::Plain(pw) if pw.is_empty() => None,
                Credential::Plain(pw) => Some(native_password_stage2(pw.as_bytes())),
                Credential::Stage2(h) => Some(*h),
                Credential::Ed25519(pw) => {
                    return auth.nonce.is_some_and(|nonce| {
                        verify_ed25519(&ed25519_public_key(pw.as_bytes()), &nonce, response)
                    })
                }
                Credential::Ed25519Key(key) => {
                    return auth
                        .nonce
                        .is_some_and(|nonce| verify_ed25519(key, &nonce, response))
                }
                Credential::CachingSha2(pw) => {
                    let stage2 = (!pw.is_empty()).then(|| caching_sha2::stage2(pw.as_bytes()));
                    return auth.sha2
                        && caching_sha2::verify(
                            stage2.as_ref(),
                            &self.clients[key].scramble,
                            response,
                        );
                }
            };
            verify_native(stage2.as_ref(), &self.clients[key].scramble, response)
        });
        if !verified {
            match auth.pool {
                Some(p) => self.bump(p, |c| c.auth_failures += 1),
                None => self.counters.auth_failures += 1,
            }
            let limits = self.auth_limits();
            let c = &mut self.clients[key];
            let addr = c.host.parse().ok().map(AddrKey::of);
            let user = Self::throttle_user(&auth);
            self.auth_throttle.failed(addr, user, self.now, &limits);
            let (by_addr, by_user) = self.auth_throttle.failures(addr, user);
            let msg = format!(
                "Access denied for user '{}'@'{}' (using password: {})",
                auth.user,
                c.host,
                if response.is_empty() { "NO" } else { "YES" }
            );
            let peer = c.peer.description();
            log_limited!(
                self,
                LogEvent::AuthFailure,
                "client {} from {peer} refused: {msg} (consecutive failures: {by_addr} from this address, {by_user} for this user)",
                c.id
            );
            let c = &mut self.clients[key];
            c.state = ClientState::Idle;
            self.client_error(key, seq, ER_ACCESS_DENIED_ERROR, &msg);
            if let Some(c) = self.clients.get_mut(key) {
                c.close_after_flush = true;
            }
            self.flush_client(key);
            return;
        }
        let addr = self.clients[key].host.parse().ok().map(AddrKey::of);
        self.auth_throttle
            .succeeded(addr, Self::throttle_user(&auth), self.now);
        let mut seq = seq;
        if auth.sha2 {
            // caching_sha2_password: the fast path succeeded (the funnel
            // knows the password: no full authentication ever). What
            // follows (OK or an error) comes after it.
            self.send_to_client(
                key,
                seq,
                &[
                    caching_sha2::AUTH_MORE_DATA,
                    caching_sha2::FAST_AUTH_SUCCESS,
                ],
            );
            seq = seq.wrapping_add(1);
        }
        let max = auth
            .pool
            .map_or(0, |p| self.pools[p].user.max_client_connections);
        if max > 0 {
            // Only for users with a limit, so a scan of the clients is fine.
            let others = self
                .clients
                .iter()
                .filter(|(k, c)| {
                    *k != key
                        && c.user == auth.user
                        && !c.close_after_flush
                        && !matches!(
                            c.state,
                            ClientState::Handshake
                                | ClientState::AuthSwitch(_)
                                | ClientState::Relay { .. }
                        )
                })
                .count();
            if others >= max {
                let msg = format!(
                    "User {} already has more than 'max_user_connections' active connections",
                    auth.user
                );
                self.refuse_login(key, seq, ER_TOO_MANY_USER_CONNECTIONS, &msg, &auth.user);
                return;
            }
        }
        let pool = self.login_pool(auth.pool.unwrap_or(0), auth.capabilities);
        let server = self.pools[pool].server;
        let c = &mut self.clients[key];
        c.pool = pool;
        c.user = auth.user;
        c.capabilities = auth.capabilities & (SERVER_CAPS | CLIENT_LOCAL_FILES);
        c.mariadb_caps = auth.mariadb_caps;
        c.charset = auth.charset;
        c.track.clone_from(&self.servers[server].track_defaults);
        c.multi_statements = auth.capabilities & CLIENT_MULTI_STATEMENTS != 0;
        c.last_active = self.now;
        debug!("{} authenticated as {}", c.label(), c.user);
        match auth.database {
            Some(db) if self.pools[pool].known_schemas.contains(&db) => {
                // mysqld confirmed this schema for this user before: no
                // need to wait in the backlog for it again.
                let c = &mut self.clients[key];
                c.session.set_schema(Some(db));
                c.state = ClientState::Idle;
                self.arm_idle_timer(key);
                self.client_login_ok(key, seq);
                self.process_client_input(key);
            }
            Some(db) => {
                // The schema must exist: ask a backend, and let its answer
                // (OK, or ERR 1049) be the answer to the login.
                let mut payload = Vec::with_capacity(db.len() + 1);
                payload.push(COM_INIT_DB);
                payload.extend_from_slice(db.as_bytes());
                let mut framed = Vec::new();
                write_packet(&mut framed, 0, &payload);
                let rest = c.rbuf.as_slice().to_vec();
                c.rbuf.clear();
                c.rbuf.extend_from_slice(&framed);
                c.rbuf.extend_from_slice(&rest);
                c.seq_offset = seq.wrapping_sub(1);
                c.state = ClientState::ConnectDb;
                // Counted as a request: it waits in the backlog and runs on
                // a backend like one, so latency counts stay equal to it.
                self.pools[pool].counters.requests += 1;
                self.counters.requests += 1;
                let c = &mut self.clients[key];
                match scan_message(c.rbuf.as_slice(), usize::MAX) {
                    Ok(Some(span)) => c.current = Some(span),
                    _ => {
                        self.close_client_with_error(key, ER_HANDSHAKE_ERROR, "Bad handshake");
                        return;
                    }
                }
                self.arm_idle_timer(key);
                self.enqueue_current(key);
            }
            None => {
                c.state = ClientState::Idle;
                self.arm_idle_timer(key);
                self.client_ok(key, seq);
                self.process_client_input(key);
            }
        }
    }

    /// The pool that verifies logins as `user` (its `CLIENT_FOUND_ROWS`
    /// twin has the same user).
    pub(super) fn user_pool(&self, user: &str) -> Option<usize> {
        self.pools
            .iter()
            .position(|p| p.user.name == user && !p.found_rows)
    }

    /// The pool a client logged in through `user_pool` runs its commands
    /// in: that one, or for a client that negotiated `CLIENT_FOUND_ROWS`
    /// its twin, created at the first such login.
    pub(super) fn login_pool(&mut self, user_pool: usize, capabilities: u32) -> usize {
        if capabilities & CLIENT_FOUND_ROWS == 0 {
            return user_pool;
        }
        let name = &self.pools[user_pool].user.name;
        if let Some(twin) = self
            .pools
            .iter()
            .position(|p| p.found_rows && p.user.name == *name)
        {
            return twin;
        }
        let twin = self.pools[user_pool].found_rows_twin(self.pools.len(), self.now);
        info!(
            "pool {} added: the first client of user {} that asked for CLIENT_FOUND_ROWS",
            twin.name(),
            twin.user.name
        );
        self.add_pool(twin)
    }

    pub(super) fn client_handshake_timeout(&mut self, key: usize, serial: u64) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        if c.serial == serial
            && matches!(
                c.state,
                ClientState::Handshake
                    | ClientState::AuthSwitch(_)
                    | ClientState::Relay { login: true, .. }
            )
        {
            let ms = self.config.handshake_timeout.as_millis();
            self.close_client_logged(
                key,
                LogEvent::HandshakeTimeout,
                ER_HANDSHAKE_ERROR,
                &format!("funnel: handshake not completed within handshake_timeout_ms = {ms}"),
            );
        }
    }

    /// Decide what to do with the client's next command.
    pub(super) fn handle_command(&mut self, key: usize) {
        let c = &mut self.clients[key];
        let Some(span) = c.current else {
            return;
        };
        let data = c.rbuf.as_slice();
        let cmd = data.get(HEADER_LEN).copied();
        let Some(cmd) = cmd.filter(|_| span.payload_len > 0) else {
            self.close_client_logged(
                key,
                LogEvent::BadClientInput,
                ER_NET_READ_ERROR,
                "funnel: empty command packet",
            );
            return;
        };
        if cmd == COM_QUIT {
            self.close_client(key, "quit");
            return;
        }
        // The error is the answer to the next command that has one
        // (COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA have none).
        if !matches!(cmd, COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA) {
            if let Some((code, msg)) = c.pending_error.take() {
                let seq = 1u8.wrapping_add(c.seq_offset);
                self.discard_current(key);
                self.client_error(key, seq, code, &msg);
                return;
            }
        }
        // A slot taken for the previous command's prepare that made no
        // statement (mysqld refused it) is free again.
        c.stmts.release();
        if cmd == COM_STMT_PREPARE {
            let (per_client, total) = (
                self.config.max_prepared_stmts_per_client,
                self.config.max_prepared_stmt_count.min(
                    self.servers[self.pools[c.pool].server]
                        .max_prepared
                        .unwrap_or(usize::MAX),
                ),
            );
            if let Err(limit) = c.stmts.reserve(per_client, total) {
                self.discard_current(key);
                self.client_error(key, 1, ER_MAX_PREPARED_STMT_COUNT_REACHED, &limit.message());
                return;
            }
        }
        let privileges_known = self.privileges_known(key);
        let c = &mut self.clients[key];
        let data = c.rbuf.as_slice();
        let pinned = c.pinned;
        // Set again below where the command waits for them.
        c.awaiting_privileges = false;
        // Set again below for the commands that may take or release locks.
        c.unreported_taken = 0;
        c.unreported_released = 0;
        match cmd {
            COM_PING => {
                self.discard_current(key);
                self.client_ok(key, 1);
            }
            COM_SET_OPTION => {
                // Per client: the backend keeps multi-statements on.
                let end = (HEADER_LEN + span.payload_len).min(data.len());
                let option = set_option_value(&data[HEADER_LEN..end]);
                let known = matches!(
                    option,
                    MYSQL_OPTION_MULTI_STATEMENTS_ON | MYSQL_OPTION_MULTI_STATEMENTS_OFF
                );
                if known {
                    c.multi_statements = option == MYSQL_OPTION_MULTI_STATEMENTS_ON;
                }
                self.discard_current(key);
                if known {
                    self.client_eof(key, 1);
                } else {
                    // As mysqld answers it, the setting unchanged.
                    self.client_error(key, 1, ER_UNKNOWN_COM_ERROR, "Unknown command");
                }
            }
            COM_CHANGE_USER => {
                let end = (HEADER_LEN + span.payload_len).min(data.len());
                let parsed = if span.packets == 1 {
                    decode_change_user(&data[HEADER_LEN..end], c.capabilities).ok()
                } else {
                    None
                };
                self.discard_current(key);
                match parsed {
                    Some(cu) => self.change_user(key, cu),
                    None => self.close_client_logged(
                        key,
                        LogEvent::BadClientInput,
                        ER_NET_READ_ERROR,
                        "funnel: malformed COM_CHANGE_USER packet",
                    ),
                }
            }
            COM_RESET_CONNECTION => {
                // The client gets a fresh session; the backend it held (if
                // any) is reset before anyone else uses it.
                self.discard_current(key);
                if self.relay_reset(key) {
                    return;
                }
                self.reset_client_session(key);
                self.client_ok(key, 1);
            }
            COM_STMT_CLOSE => {
                // No answer is due. Backends keep the statement while
                // another client holds the same SQL (and schema); when none
                // does, its copies are closed, and this client's next
                // command waits for the idle backends to have done so. An
                // open cursor's statement is closed on the pinned backend
                // in any case (before its next command), and the client may
                // be free.
                let id = stmt_id_of(&data[HEADER_LEN..]);
                let st = id.and_then(|id| c.stmts.remove(&id));
                let cursor = id.filter(|id| c.open_cursors.contains(id));
                let cref = c.cref(key);
                self.discard_current(key);
                if let (Some(id), Some(st)) = (cursor, &st) {
                    let c = &mut self.clients[key];
                    c.set_cursor_open(id, false);
                    if let Some(b) = c.pinned.and_then(|b| self.backends.get_mut(b)) {
                        b.stmts.close(st.key);
                    }
                    self.unpin_if_free(key);
                }
                if st.is_some() {
                    self.close_released_stmts(Some(cref));
                }
            }
            COM_STMT_BULK_EXECUTE if c.mariadb_caps & MARIADB_CLIENT_STMT_BULK_OPERATIONS == 0 => {
                // mysqld's answer to a bulk execute from a client that did
                // not negotiate bulk operations.
                self.discard_current(key);
                self.client_error(
                    key,
                    1,
                    ER_UNSUPPORTED_PS,
                    "This command is not supported in the prepared statement protocol yet",
                );
            }
            COM_STMT_EXECUTE
            | COM_STMT_BULK_EXECUTE
            | COM_STMT_SEND_LONG_DATA
            | COM_STMT_RESET
            | COM_STMT_FETCH => {
                let end = (HEADER_LEN + span.payload_len).min(data.len());
                let payload = &data[HEADER_LEN..end];
                let Some(id) = stmt_id_of(payload) else {
                    self.close_client_logged(
                        key,
                        LogEvent::BadClientInput,
                        ER_NET_READ_ERROR,
                        "funnel: malformed statement command",
                    );
                    return;
                };
                let Some(st) = c.stmts.get_mut(&id) else {
                    self.discard_current(key);
                    if cmd != COM_STMT_SEND_LONG_DATA {
                        let msg = format!(
                            "Unknown prepared statement handler ({id}) given to {}",
                            match cmd {
                                COM_STMT_EXECUTE => "mysqld_stmt_execute",
                                COM_STMT_BULK_EXECUTE => "mysqld_stmt_bulk_execute",
                                COM_STMT_RESET => "mysqld_stmt_reset",
                                _ => "mysqld_stmt_fetch",
                            }
                        );
                        self.client_error(key, 1, ER_UNKNOWN_STMT_HANDLER, &msg);
                    }
                    return;
                };
                c.facts = StatementFacts::default();
                if cmd == COM_STMT_BULK_EXECUTE {
                    // Judged, counted and pinned as an execute of its statement.
                    let facts = st.facts;
                    c.unreported_taken = facts.takes;
                    c.unreported_released = facts.releases;
                    c.facts = facts;
                    let Ok(layout) = bulk_layout(payload, st.num_params) else {
                        self.close_client_logged(
                            key,
                            LogEvent::BadClientInput,
                            ER_NET_READ_ERROR,
                            "funnel: malformed COM_STMT_BULK_EXECUTE",
                        );
                        return;
                    };
                    if let Some(types) = bulk_types(payload, layout, st.num_params) {
                        if st.types != types {
                            st.types = types.to_vec();
                        }
                    }
                }
                if cmd == COM_STMT_EXECUTE {
                    // A prepared `SELECT GET_LOCK(?, 0)` takes a lock as
                    // surely as the text one, and a prepared `CALL` is as
                    // unproven.
                    let facts = st.facts;
                    c.unreported_taken = facts.takes;
                    c.unreported_released = facts.releases;
                    c.facts = facts;
                    let Some(layout) = execute_layout(payload, st.num_params) else {
                        self.close_client_logged(
                            key,
                            LogEvent::BadClientInput,
                            ER_NET_READ_ERROR,
                            "funnel: malformed COM_STMT_EXECUTE",
                        );
                        return;
                    };
                    if let Some(types) = execute_types(payload, layout, st.num_params) {
                        if st.types != types {
                            st.types = types.to_vec();
                        }
                    }
                }
                if cmd == COM_STMT_RESET && pinned.is_none() {
                    // Nothing (long data, cursor) is pending anywhere.
                    self.discard_current(key);
                    self.client_ok(key, 1);
                    return;
                }
                c.current_stmt = Some(id);
                self.forward_current(key);
            }
            COM_QUERY | COM_INIT_DB | COM_FIELD_LIST | COM_STATISTICS | COM_STMT_PREPARE
            | COM_PROCESS_INFO | COM_REFRESH | COM_DEBUG | COM_CREATE_DB | COM_DROP_DB => {
                c.facts = StatementFacts::default();
                if cmd == COM_REFRESH {
                    // FLUSH by another name (it resets session status, too).
                    c.facts.unproven = Some("COM_REFRESH");
                }
                if cmd == COM_QUERY {
                    let end = (HEADER_LEN + span.payload_len).min(data.len());
                    let sql = &data[HEADER_LEN + 1..end];
                    let facts = query_facts(sql, self.stats.shape_buf());
                    if !privileges_known && facts.needs_privileges() {
                        // What the funnel answers (KILL, the process list)
                        // depends on the user's privileges: a backend is
                        // asked for them first, then the command comes back.
                        c.awaiting_privileges = true;
                        c.current_stmt = None;
                        self.forward_current(key);
                        return;
                    }
                    if let Some(full) = facts.show_processlist {
                        // mysqld would list backend connections: the
                        // funnel lists its clients, with the ids they KILL.
                        let sql = sql.to_vec();
                        let seq = 1u8.wrapping_add(c.seq_offset);
                        self.discard_current(key);
                        self.answer_processlist(key, seq, full, &sql);
                        return;
                    }
                    if let Some((which, (start, end))) = facts.answered {
                        let name = sql[start..end].to_vec();
                        // Typed as MariaDB types them: (type, length, flags).
                        const UNSIGNED: u16 = 0x0001 | 0x0020 | 0x0080;
                        let (value, column) = match which {
                            FunnelAnswered::LastInsertId => {
                                (c.last_insert_id.to_string(), (0x08, 21, UNSIGNED))
                            }
                            FunnelAnswered::ConnectionId => {
                                (c.id.to_string(), (0x03, 10, UNSIGNED))
                            }
                            FunnelAnswered::RowCount => {
                                (c.row_count.to_string(), (0x08, 21, 0x0001 | 0x0080))
                            }
                        };
                        // As after any SELECT.
                        c.row_count = -1;
                        let seq = 1u8.wrapping_add(c.seq_offset);
                        self.discard_current(key);
                        self.client_single_value(key, seq, &name, &value, column);
                        return;
                    }
                    if facts.first_is_kill || facts.later_kill {
                        let sql = sql.to_vec();
                        let seq = 1u8.wrapping_add(c.seq_offset);
                        self.discard_current(key);
                        self.query_with_kill(key, sql, seq);
                        return;
                    }
                    if !std::mem::take(&mut c.rewritten) && facts.names_processlist {
                        let bare = c
                            .session
                            .schema
                            .as_deref()
                            .is_some_and(|s| s.eq_ignore_ascii_case("information_schema"));
                        if let Ok(refs) = super::statement::processlist_refs(sql, bare) {
                            if refs.iter().any(|r| !r.connection_id) {
                                // mysqld's table lists backend connections:
                                // the client gets the funnel's clients, for
                                // mysqld to evaluate the query over.
                                let sql = sql.to_vec();
                                let sql = self.rewrite_processlist(key, &sql, &refs);
                                let seq = 1u8.wrapping_add(self.clients[key].seq_offset);
                                self.discard_current(key);
                                self.push_query_part(key, &sql, seq);
                                self.clients[key].rewritten = true;
                                self.handle_command(key);
                                return;
                            }
                        }
                    }
                    if facts.load_local && c.capabilities & CLIENT_LOCAL_FILES == 0 {
                        // As mysqld answers such a client, which must never
                        // get the backend's request for a file.
                        let seq = 1u8.wrapping_add(c.seq_offset);
                        self.discard_current(key);
                        self.client_error(
                            key,
                            seq,
                            ER_LOAD_INFILE_CAPABILITY_DISABLED,
                            "The used command is not allowed because the MariaDB server or client has disabled the local infile capability",
                        );
                        return;
                    }
                    let (pool, unpinned) = (c.pool, c.pinned.is_none());
                    if facts.will_pin() && unpinned && !self.pin_available(pool) {
                        // Refused before it runs, rather than run and its
                        // state discarded after: the connection stays usable.
                        let p = &self.pools[pool];
                        let msg = format!(
                            "funnel: too many pinned clients in pool '{}' (max_pinned_backends = {}); this statement would keep a backend connection for this client and was not run",
                            p.name(),
                            p.user.max_pinned_backends
                        );
                        log_limited!(
                            self,
                            LogEvent::PinnedExhausted,
                            "pool {}: max_pinned_backends = {} reached; a statement that would pin was refused",
                            p.name(),
                            p.user.max_pinned_backends
                        );
                        let seq = 1u8.wrapping_add(self.clients[key].seq_offset);
                        self.discard_current(key);
                        self.client_error(key, seq, ER_CON_COUNT_ERROR, &msg);
                        return;
                    }
                    let c = &mut self.clients[key];
                    c.unreported_taken = facts.takes;
                    c.unreported_released = facts.releases;
                    c.facts = facts;
                }
                self.clients[key].current_stmt = None;
                self.forward_current(key);
            }
            _ => {
                self.discard_current(key);
                let msg = format!(
                    "funnel: {} is not supported through the funnel (commands are multiplexed over shared backend connections)",
                    command_name(cmd)
                );
                self.client_error(key, 1, ER_UNKNOWN_COM_ERROR, &msg);
            }
        }
    }

    /// A query with a `KILL` statement in it: the statements before the
    /// first `KILL` run on a backend as a query of their own, the `KILL` is
    /// the funnel's, and the rest runs after, each part's answer numbered on
    /// from the last (`seq`: the first answer packet's sequence id).
    fn query_with_kill(&mut self, key: usize, sql: Vec<u8>, seq: u8) {
        let split = match kill_split(&sql) {
            Ok(Some(split)) => split,
            _ => {
                // Not splittable: a KILL inside a compound statement, ...
                self.client_error(key, seq, ER_UNKNOWN_COM_ERROR, KILL_UNSUPPORTED);
                return;
            }
        };
        if let Some(end) = split.before {
            // The statements before the KILL, as a query of their own; the
            // KILL and what follows wait for its answer.
            let rest = sql[split.kill.0..].to_vec();
            self.clients[key].multi_rest = Some(MultiRest {
                sql: rest,
                seq: 0,
                ready: false,
            });
            self.push_query_part(key, &sql[..end], seq);
            self.handle_command(key);
            return;
        }
        let more = split.more_after(&sql);
        match parse_kill(&sql[split.kill.0..split.kill.1]) {
            Ok(Some(kill)) => {
                if self.kill(key, kill, seq, more) && more {
                    if let Some(c) = self.clients.get_mut(key) {
                        c.multi_rest = Some(MultiRest {
                            sql: sql[split.rest..].to_vec(),
                            seq: seq.wrapping_add(1),
                            ready: true,
                        });
                    }
                }
            }
            _ => self.client_error(key, seq, ER_UNKNOWN_COM_ERROR, KILL_UNSUPPORTED),
        }
    }

    /// Make `sql` the client's current command, a `COM_QUERY` whose answer
    /// starts with sequence id `seq`, ahead of anything it sent after.
    fn push_query_part(&mut self, key: usize, sql: &[u8], seq: u8) {
        let c = &mut self.clients[key];
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(COM_QUERY);
        payload.extend_from_slice(sql);
        let mut framed = Vec::with_capacity(payload.len() + 8);
        write_packet(&mut framed, 0, &payload);
        let Ok(Some(span)) = scan_message(&framed, usize::MAX) else {
            return;
        };
        framed.extend_from_slice(c.rbuf.as_slice());
        c.rbuf.clear();
        self.bufs.ensure(&mut c.rbuf);
        c.rbuf.extend_from_slice(&framed);
        c.current = Some(span);
        c.seq_offset = seq.wrapping_sub(1);
    }

    /// The next part of a query with a `KILL` in it.
    fn start_multi_rest(&mut self, key: usize, m: MultiRest) {
        self.push_query_part(key, &m.sql, m.seq);
        self.handle_command(key);
    }

    /// `KILL [QUERY] id` from client `key`, for a funnel connection id,
    /// answered with sequence id `seq`; `more`: statements follow in the
    /// same query. `true` when the client got an OK and its query goes on.
    fn kill(&mut self, key: usize, kill: Kill, seq: u8, more: bool) -> bool {
        const ER_KILL_DENIED: (u16, &str) = (1095, "HY000");
        let target = u32::try_from(kill.id)
            .ok()
            .and_then(|id| self.client_ids.get(&id).copied())
            .filter(|&t| {
                self.clients.get(t).is_some_and(|c| {
                    !matches!(
                        c.state,
                        ClientState::Handshake
                            | ClientState::AuthSwitch(_)
                            | ClientState::Relay { login: true, .. }
                    )
                })
            });
        let Some(target) = target else {
            self.client_error(
                key,
                seq,
                ER_NO_SUCH_THREAD,
                &format!("Unknown thread id: {}", kill.id),
            );
            return false;
        };
        // As mysqld decides: its own user's connections, any with SUPER or
        // CONNECTION ADMIN.
        if self.clients[target].user != self.clients[key].user && !self.privileges_of(key).kill_any
        {
            self.client_error(
                key,
                seq,
                ER_KILL_DENIED,
                &format!("You are not owner of thread {}", kill.id),
            );
            return false;
        }
        if kill.query_only && target == key {
            // The statement being killed is the KILL itself, as on mysqld.
            self.client_error(
                key,
                seq,
                ER_QUERY_INTERRUPTED,
                "Query execution was interrupted",
            );
            return false;
        }
        if kill.query_only
            && self.clients[target].is_running()
            && self.relayed_backend(target).is_some()
        {
            // Stopping it takes a second connection as that user, which
            // only mysqld could authenticate.
            self.client_error(
                key,
                seq,
                ER_UNKNOWN_COM_ERROR,
                "funnel: KILL QUERY of a relayed login's statement is not supported; KILL CONNECTION is",
            );
            return false;
        }
        self.interrupt_client(target);
        if !kill.query_only {
            if target == key {
                // mysqld answers a self-kill with an error and closes.
                self.clients[key].seq_offset = seq.wrapping_sub(1);
                self.close_client_with_error(key, (1927, "70100"), "Connection was killed");
                return false;
            }
            self.close_client(target, "killed");
        }
        let more = if more { SERVER_MORE_RESULTS_EXISTS } else { 0 };
        self.client_ok_with(key, seq, more);
        true
    }

    /// What `KILL` does to its target's current command: taken out of the
    /// backlog with an error, or killed on mysqld.
    pub(super) fn interrupt_client(&mut self, target: usize) {
        let pool = self.clients[target].pool;
        self.bump(pool, |c| c.killed += 1);
        let tref = self.clients[target].cref(target);
        match self.clients[target].state {
            ClientState::Queued => {
                self.pools[pool].remove_client(tref);
                self.fail_request(
                    tref,
                    ER_QUERY_INTERRUPTED,
                    "Query execution was interrupted",
                );
            }
            ClientState::Running(b) => self.open_killer(pool, b),
            _ => {}
        }
    }

    /// Send the current command to the client's pinned backend, or queue it.
    fn forward_current(&mut self, key: usize) {
        let c = &self.clients[key];
        let pool = c.pool;
        let cref = c.cref(key);
        let pinned = c.pinned;
        self.bump(pool, |c| c.requests += 1);
        match pinned {
            Some(b) => self.start_request(b, cref),
            None => self.enqueue_current(key),
        }
    }

    /// Put the client's current command in its pool's backlog.
    pub(super) fn enqueue_current(&mut self, key: usize) {
        let c = &mut self.clients[key];
        let pool = c.pool;
        let req = Request {
            client: c.cref(key),
            enqueued: self.now,
        };
        if !matches!(c.state, ClientState::ConnectDb) {
            c.state = ClientState::Queued;
        }
        match self.pools[pool].enqueue(req) {
            Ok(()) => {
                self.stats
                    .backlog_depth(pool, self.pools[pool].backlog_len(), self.now);
                self.dispatch(pool);
                self.fail_refused_backlog(pool);
            }
            Err(full) => {
                self.bump(pool, |c| c.backlog_full += 1);
                let msg = format!(
                    "funnel: backlog full in pool '{}' (backlog_size = {}); the command was not run",
                    self.pools[pool].name(), full.limit
                );
                let c = &self.clients[key];
                log_limited!(self, LogEvent::BacklogFull, "{}: {msg}", c.label());
                self.fail_request(req.client, ER_CON_COUNT_ERROR, &msg);
            }
        }
    }

    /// Put the client's command back at the head of its pool's backlog: its
    /// backend died before any of its answer reached the client, and the
    /// command either never reached mysqld or is safe to repeat (see
    /// `Server::backend_lost`). It waits for a backend like any queued
    /// command, and times out like one: its clock is that of the oldest
    /// command waiting (its own, now, when none is), so the backlog stays
    /// in the order of its clocks.
    pub(super) fn retry_current(&mut self, key: usize) {
        let c = &mut self.clients[key];
        if let Some(span) = c.sent.take() {
            // Still the first message in the client's input.
            c.current = Some(span);
        }
        c.retries = c.retries.saturating_add(1);
        c.retried_at = Some(self.now);
        c.state = ClientState::Queued;
        let pool = c.pool;
        let client = c.cref(key);
        let p = &mut self.pools[pool];
        let enqueued = p.oldest_enqueued().map_or(self.now, |t| t.min(self.now));
        // Not refused when the backlog is full: the command was let in once.
        p.push_front(Request { client, enqueued });
        self.bump(pool, |c| c.retried += 1);
        self.stats
            .backlog_depth(pool, self.pools[pool].backlog_len(), self.now);
        self.dispatch(pool);
    }

    /// Answer a queued (or just started) command with an error instead.
    pub(super) fn fail_request(&mut self, client: ClientRef, code: (u16, &'static str), msg: &str) {
        let Some(c) = self
            .clients
            .get_mut(client.key)
            .filter(|c| c.serial == client.serial)
        else {
            return;
        };
        let connect_db = matches!(c.state, ClientState::ConnectDb);
        let seq = 1u8.wrapping_add(c.seq_offset);
        let cmd = c
            .current
            .and_then(|_| c.rbuf.as_slice().get(HEADER_LEN).copied());
        if let Some(span) = c.current.take() {
            c.rbuf.consume(span.wire_len);
        }
        c.drop_sent();
        self.bufs.release(&mut c.rbuf);
        c.set_idle();
        if cmd.is_some_and(|cmd| expect_for(cmd) == Expect::None) {
            // COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE: no answer is due
            // (an ERR now would answer the next command); mysqld reports a
            // long-data error at the execute, the funnel at the next
            // command that has an answer.
            if c.pending_error.is_none() {
                c.pending_error = Some((code, msg.to_string()));
            }
            self.client_ready(client.key);
            return;
        }
        self.client_error(client.key, seq, code, msg);
        if connect_db {
            if let Some(c) = self.clients.get_mut(client.key) {
                c.close_after_flush = true;
            }
            self.flush_client(client.key);
            return;
        }
        self.client_ready(client.key);
    }

    pub(super) fn queue_timeout(&mut self, req: Request) {
        let Some(c) = self.clients.get(req.client.key) else {
            return;
        };
        if c.serial != req.client.serial || !c.is_queued() {
            return;
        }
        let pool = c.pool;
        self.bump(pool, |c| c.queue_timeouts += 1);
        let pool = &self.pools[pool];
        let mut msg = format!(
            "funnel: the command waited {} ms in the backlog of pool '{}' (queue_timeout_ms = {}) without getting a backend connection; it was not run",
            self.now.saturating_duration_since(req.enqueued).as_millis(),
            pool.name(),
            pool.user.queue_timeout.as_millis()
        );
        if let Some(e) = &pool.last_backend_error {
            msg.push_str(&format!(" (backend unavailable: {e})"));
        }
        let c = &self.clients[req.client.key];
        log_limited!(self, LogEvent::QueueTimeout, "{}: {msg}", c.label());
        self.fail_request(req.client, ER_STATEMENT_TIMEOUT, &msg);
    }

    /// The client's command is done: handle what it sent meanwhile.
    pub(super) fn client_ready(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key) {
            if c.close_after_flush {
                return;
            }
            self.process_client_input(key);
        }
    }

    /// Make sure the client's idle timer fires no later than its
    /// `wait_timeout` allows: counted from its last activity when it waits
    /// for a command, from now when busy (checked again then). One timer
    /// per client, moved on only when it fires, so a command costs no heap
    /// operation; an earlier one is added only when the timeout shrinks.
    pub(super) fn arm_idle_timer(&mut self, key: usize) {
        let server = self.client_server(key).timeouts;
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.close_after_flush
            || matches!(c.state, ClientState::Handshake | ClientState::AuthSwitch(_))
        {
            return;
        }
        let (wait, _) = c.timeouts.effective(server);
        let from = if c.waits_for_command() {
            c.last_active
        } else {
            self.now
        };
        let Some(at) = from.checked_add(Duration::from_secs(wait)) else {
            return;
        };
        if c.idle_timer_at.is_some_and(|t| t <= at) {
            return;
        }
        c.idle_timer_at = Some(at);
        let serial = c.serial;
        self.add_timer(at, TimerKind::ClientIdle { key, serial });
    }

    /// A client's idle timer fired: close the client if it has waited for
    /// a command for its whole `wait_timeout`, as mysqld does (MariaDB
    /// 10.11 sends nothing and resets the connection: the client's next
    /// read or write fails), else set the timer again.
    pub(super) fn client_idle_timer(&mut self, key: usize, serial: u64, at: Instant) {
        let server = self.client_server(key).timeouts;
        let Some(c) = self.clients.get_mut(key).filter(|c| c.serial == serial) else {
            return;
        };
        if c.idle_timer_at != Some(at) {
            // Superseded by an earlier one.
            return;
        }
        c.idle_timer_at = None;
        let (wait, _) = c.timeouts.effective(server);
        if c.waits_for_command()
            && self.now.saturating_duration_since(c.last_active) >= Duration::from_secs(wait)
        {
            let reason = format!("idle longer than its wait_timeout ({wait} s)");
            // mysqld's close: SO_LINGER 0, so the client gets a reset.
            self.close_client_socket(key, &reason, true);
            return;
        }
        self.arm_idle_timer(key);
    }

    /// The server's global timeouts were read (or changed): clients'
    /// defaults change, and a smaller one must come due sooner.
    pub(super) fn set_server_timeouts(&mut self, server: usize, t: super::session::ServerTimeouts) {
        if self.servers[server].timeouts == t {
            return;
        }
        self.servers[server].timeouts = t;
        let keys: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| self.pools.get(c.pool).is_some_and(|p| p.server == server))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.arm_idle_timer(key);
        }
    }

    /// Drop the current command's bytes (it was answered by the funnel).
    fn discard_current(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key) {
            if let Some(span) = c.current.take() {
                c.rbuf.consume(span.wire_len);
            }
        }
    }

    /// COM_CHANGE_USER: a fresh session, authenticated again against the
    /// funnel's users and moved to that user's pool.
    fn change_user(&mut self, key: usize, cu: ChangeUser) {
        self.relay_drop(key);
        self.reset_client_session(key);
        let pool = self.user_pool(&cu.username);
        let c = &mut self.clients[key];
        c.session.set_schema(None);
        if let Some(cs) = cu.charset.and_then(|cs| u8::try_from(cs).ok()) {
            c.charset = cs;
        }
        let pending = PendingAuth {
            pool,
            user: cu.username,
            database: cu.database,
            capabilities: c.capabilities,
            charset: c.charset,
            mariadb_caps: c.mariadb_caps,
            nonce: None,
            sha2: false,
        };
        let plugin = cu.auth_plugin.as_deref().filter(|p| !p.is_empty());
        let wanted = self.auth_plugin_of(pending.pool);
        if plugin.unwrap_or(MYSQL_NATIVE_PASSWORD) != wanted {
            self.ask_auth_switch(key, pending, 1);
            return;
        }
        let mut pending = pending;
        pending.sha2 = wanted == CACHING_SHA2_PASSWORD;
        self.client_verify(key, pending, &cu.auth_response, 1);
    }

    /// Back to the session the client had right after its login.
    fn reset_client_session(&mut self, key: usize) {
        let server = self.pools[self.clients[key].pool].server;
        let c = &mut self.clients[key];
        let schema = c.session.schema.clone();
        c.session = SessionVars::new();
        c.session.set_schema(schema);
        c.session_ready = false;
        c.track.clone_from(&self.servers[server].track_defaults);
        c.drop_pins();
        let trim = c.stmts.bytes() >= TRIM_AFTER_BYTES;
        c.stmts.clear();
        c.last_insert_id = 0;
        c.last_status = SERVER_STATUS_AUTOCOMMIT;
        // The global wait_timeout, even for an interactive client (as
        // MariaDB 10.11 does after a reset or a change of user).
        c.timeouts = ClientTimeouts::default();
        let cref = c.cref(key);
        if let Some(b) = c.pinned.take() {
            self.release_pinned(b);
        }
        // Its statements are gone, as on mysqld, before its next command.
        self.close_released_stmts(Some(cref));
        self.arm_idle_timer(key);
        if trim {
            release_free_memory();
        }
    }

    /// Give a client the character-set variables its handshake asked for.
    pub(super) fn ensure_client_session(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.session_ready {
            return;
        }
        let server = self.pools.get(c.pool).map_or(0, |p| p.server);
        if let Some(table) = &self.servers[server].charsets {
            if let Some((cs, coll)) = table.get(&c.charset) {
                let names = super::backend::charset_vars();
                for name in &names[..3] {
                    c.session.set_var(name, cs);
                }
                c.session.set_var(names[3], coll);
                // The handshake's collation labels result columns, too.
                c.session.set_results_collation(Some(coll.clone()));
            }
            c.session_ready = true;
        }
    }

    pub(super) fn send_to_client(&mut self, key: usize, seq: u8, payload: &[u8]) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        self.bufs.ensure(&mut c.wbuf);
        let mut framed = std::mem::take(&mut self.scratch);
        framed.clear();
        write_packet(&mut framed, seq, payload);
        c.wbuf.extend_from_slice(&framed);
        self.scratch = framed;
        self.flush_client(key);
    }

    pub(super) fn client_ok(&mut self, key: usize, seq: u8) {
        self.client_ok_with(key, seq, 0);
    }

    /// An OK whose status has `flags` besides the session's.
    fn client_ok_with(&mut self, key: usize, seq: u8, flags: u16) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let ok = OkPacket {
            header: OK_HEADER,
            affected_rows: 0,
            last_insert_id: 0,
            status: c.answer_status() | flags,
            warnings: 0,
            info: b"",
            session_state: None,
        };
        let mut payload = Vec::with_capacity(16);
        encode_ok(&mut payload, &ok, c.capabilities);
        self.send_to_client(key, seq, &payload);
    }

    /// The OK that ends a login with a default schema: mysqld reports the
    /// schema in it to a client that tracks it.
    fn client_login_ok(&mut self, key: usize, seq: u8) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let Some(schema) = c
            .session
            .schema
            .as_deref()
            .filter(|_| c.capabilities & CLIENT_SESSION_TRACK != 0 && c.track.schema)
        else {
            self.client_ok(key, seq);
            return;
        };
        let mut block = Vec::with_capacity(schema.len() + 4);
        encode_state_change(&mut block, &StateChange::Schema(schema.as_bytes()));
        let ok = OkPacket {
            header: OK_HEADER,
            affected_rows: 0,
            last_insert_id: 0,
            status: c.answer_status() | SERVER_SESSION_STATE_CHANGED,
            warnings: 0,
            info: b"",
            session_state: Some(&block),
        };
        let mut payload = Vec::with_capacity(16 + block.len());
        encode_ok(&mut payload, &ok, c.capabilities);
        self.send_to_client(key, seq, &payload);
    }

    /// Answer with a one-row, one-column result set of an unsigned integer,
    /// typed as mysqld types `LAST_INSERT_ID()` (BIGINT UNSIGNED NOT NULL).
    fn client_single_value(
        &mut self,
        key: usize,
        seq: u8,
        name: &[u8],
        value: &str,
        (column_type, length, flags): (u8, u32, u16),
    ) {
        use crate::protocol::response::{encode_column_def, encode_text_row};
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let mut status = c.answer_status();
        let more = c.multi_rest.as_ref().is_some_and(|m| !m.ready);
        if more {
            // A part of a query with a KILL after it.
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        let mut out = Vec::with_capacity(128);
        let mut payload = Vec::with_capacity(64);
        let mut seq = write_packet(&mut out, seq, &[1]);
        let name = String::from_utf8_lossy(name);
        // Binary charset; `column` is (type, display length, flags).
        encode_column_def(&mut payload, &name, column_type, 63, length, flags, 0);
        if c.mariadb_caps & MARIADB_CLIENT_EXTENDED_METADATA != 0 {
            // mysqld's empty extended metadata for a plain type.
            if let Ok(at) = column_def_names_end(&payload) {
                payload.insert(at, 0);
            }
        }
        seq = write_packet(&mut out, seq, &payload);
        if c.capabilities & CLIENT_DEPRECATE_EOF == 0 {
            payload.clear();
            encode_eof(&mut payload, 0, status);
            seq = write_packet(&mut out, seq, &payload);
        }
        payload.clear();
        encode_text_row(&mut payload, &[Some(value.as_bytes())]);
        seq = write_packet(&mut out, seq, &payload);
        payload.clear();
        encode_end_of_rows(&mut payload, c.capabilities, 0, status);
        let next = write_packet(&mut out, seq, &payload);
        let c = &mut self.clients[key];
        if let Some(m) = c.multi_rest.as_mut().filter(|_| more) {
            m.ready = true;
            m.seq = next;
        }
        self.bufs.ensure(&mut c.wbuf);
        c.wbuf.extend_from_slice(&out);
        self.flush_client(key);
    }

    /// The answer to COM_SET_OPTION: an EOF, or an OK with a 0xfe header
    /// under CLIENT_DEPRECATE_EOF, as mysqld answers it.
    fn client_eof(&mut self, key: usize, seq: u8) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let mut payload = Vec::with_capacity(8);
        let status = c.answer_status();
        encode_end_of_rows(&mut payload, c.capabilities, 0, status);
        self.send_to_client(key, seq, &payload);
    }

    pub(super) fn client_error(
        &mut self,
        key: usize,
        seq: u8,
        code: (u16, &'static str),
        msg: &str,
    ) {
        let mut payload = Vec::with_capacity(msg.len() + 16);
        encode_err(&mut payload, code.0, code.1, msg);
        self.send_to_client(key, seq, &payload);
    }

    /// Have what is queued for the client written (by the I/O layer, at
    /// the end of the handler); `client_written` follows.
    pub(super) fn flush_client(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if !c.flush_queued {
            c.flush_queued = true;
            self.actions.push(Action::FlushClient {
                key,
                serial: c.serial,
            });
        }
    }

    /// The I/O layer wrote `written` bytes of the client's output (or
    /// failed): account for it, and apply backpressure to the backend
    /// that feeds the client.
    pub(crate) fn client_written(&mut self, key: usize, written: std::io::Result<usize>) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        c.flush_queued = false;
        let written = match written {
            Ok(n) => n,
            Err(e) => {
                self.close_client(key, &format!("write failed: {e}"));
                return;
            }
        };
        let before = c.wbuf.len() + written;
        if before > 0 {
            // mysqld's wait_timeout counts from its last write.
            c.last_active = self.now;
        }
        let pending = c.wbuf.len();
        if pending == 0 {
            c.write_stalled_since = None;
        } else if pending < before || c.write_stalled_since.is_none() {
            // Progress (or new output): the stall clock starts now.
            c.write_stalled_since = Some(self.now);
        }
        if c.buffered > 0 {
            // Output held for a slow reader: the charge follows what is
            // left, and the memory too as it drains (down to what the
            // buffer pool would keep).
            c.wbuf.shrink_to_pending(POOLED_BUF_MAX);
            self.buffered_total = self.buffered_total - c.buffered + pending;
            c.buffered = pending;
        }
        if pending == 0 {
            self.bufs.release(&mut c.wbuf);
            if c.e2e_pending {
                c.e2e_pending = false;
                let d = self.now.saturating_duration_since(c.command_read_at);
                self.stats.end_to_end(c.pool, d, self.now);
            }
            if c.close_after_flush {
                self.close_client(key, "closed after error");
                return;
            }
        }
        let feeding = match c.state {
            ClientState::Running(b) => Some(b),
            _ => c.running_connect_db,
        };
        if let Some(b) = feeding {
            if pending > self.config.output_high_watermark {
                if !self.keep_reading_for_slow_reader(b, key) {
                    self.set_backend_paused(b, true);
                }
            } else if pending <= self.config.output_low_watermark
                && self.backends.get(b).is_some_and(|b| b.paused)
            {
                if let Some(bk) = self.backends.get_mut(b) {
                    bk.paused = false;
                    self.actions.push(Action::ReadBackend {
                        key: b,
                        serial: bk.serial,
                    });
                }
            }
        }
    }

    /// Close a client with an error because of `kind` of event, and say so
    /// in the log (rate-limited).
    fn close_client_logged(
        &mut self,
        key: usize,
        kind: LogEvent,
        code: (u16, &'static str),
        msg: &str,
    ) {
        if let Some(c) = self.clients.get(key) {
            log_limited!(self, kind, "{} closed: {msg}", c.label());
        }
        self.close_client_with_error(key, code, msg);
    }

    /// Send an error and close the connection.
    pub(super) fn close_client_with_error(
        &mut self,
        key: usize,
        code: (u16, &'static str),
        msg: &str,
    ) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let seq = match c.state {
            _ if c.auth_hold.is_some() => c.auth_hold.as_ref().map_or(2, |h| h.seq),
            ClientState::Handshake => 2,
            ClientState::AuthSwitch(_) => 4,
            ClientState::Relay {
                backend,
                login: true,
            } => self
                .backends
                .get(backend)
                .and_then(|b| b.relay.as_ref())
                .map_or(2, |r| r.client_seq),
            _ => 1u8.wrapping_add(c.seq_offset),
        };
        c.close_after_flush = true;
        let mut payload = Vec::with_capacity(msg.len() + 16);
        encode_err(&mut payload, code.0, code.1, msg);
        self.bufs.ensure(&mut c.wbuf);
        let mut framed = Vec::new();
        write_packet(&mut framed, seq, &payload);
        c.wbuf.extend_from_slice(&framed);
        // Written once as the connection closes: a client that does not
        // read its error is not waited for.
        self.close_client(key, msg);
    }

    /// Remove a client; whatever backend it was using is drained or reset.
    pub(super) fn close_client(&mut self, key: usize, reason: &str) {
        self.close_client_socket(key, reason, false);
    }

    /// `close_client`; with `reset`, abortively (SO_LINGER 0).
    pub(super) fn close_client_socket(&mut self, key: usize, reason: &str, reset: bool) {
        if !self.clients.contains(key) {
            return;
        }
        let mut c = self.clients.remove(key);
        self.client_ids.remove(&c.id);
        self.buffered_total -= c.buffered;
        debug!("{} closed: {reason}", c.label());
        // An error queued for the client (close_after_flush) is written
        // once as the socket closes; other pending output is dropped.
        let last_words = if c.close_after_flush {
            c.wbuf.as_slice().to_vec()
        } else {
            Vec::new()
        };
        self.actions.push(Action::CloseClient {
            conn: c.conn,
            last_words,
            reset,
        });
        let running = match c.state {
            ClientState::Running(b) => Some(b),
            _ => c.running_connect_db,
        };
        if let Some(b) = running {
            if self
                .backends
                .get(b)
                .is_some_and(|bk| bk.infile && bk.client.map(|r| r.serial) == Some(c.serial))
            {
                // mysqld waits for the rest of the file and nothing will
                // send it: close the connection, as the client's own
                // disconnect would have, so mysqld rolls the statement back
                // (an empty packet would commit a partial load instead).
                debug!("closing backend {b}: its client left during a LOAD DATA LOCAL upload");
                let pool = self.backends[b].pool;
                self.close_backend(b);
                self.maintain_pool(pool);
            }
            if let Some(bk) = self.backends.get_mut(b) {
                if bk.client.map(|r| r.serial) == Some(c.serial) {
                    bk.client = None;
                    if bk.state == super::backend::BackendState::Running {
                        bk.state = super::backend::BackendState::Draining;
                        bk.drain_started = self.now;
                        bk.paused = false;
                        self.actions.push(Action::ReadBackend {
                            key: b,
                            serial: bk.serial,
                        });
                    }
                }
            }
        }
        if let Some(b) = c.pinned {
            if running != Some(b) {
                self.release_pinned_by(b, &c);
            } else if let Some(bk) = self.backends.get_mut(b) {
                // Drained first, then reset (finish_response sees `pinned`).
                bk.client = None;
            }
        }
        c.rbuf.clear();
        c.wbuf.clear();
        self.bufs.release(&mut c.rbuf);
        self.bufs.release(&mut c.wbuf);
        let trim = c.stmts.bytes() >= TRIM_AFTER_BYTES;
        drop(c);
        if trim {
            // Its statements' SQL was many small blocks: without this,
            // glibc keeps them and the RSS stays where the client left it.
            release_free_memory();
        }
    }
}

/// A scramble of printable ASCII without NUL, as mysqld generates, so that
/// clients that treat it as a C string read all 20 bytes.
fn fill_scramble(out: &mut [u8; 20]) {
    let mut raw = [0u8; 20];
    let _ = getrandom::getrandom(&mut raw);
    for (o, r) in out.iter_mut().zip(raw) {
        *o = 0x21 + (r % 94);
    }
}

const MYSQL_OPTION_MULTI_STATEMENTS_ON: u16 = 0;
const MYSQL_OPTION_MULTI_STATEMENTS_OFF: u16 = 1;

/// The option of a COM_SET_OPTION payload (command byte at 0): two bytes,
/// little-endian, read as mysqld reads them: bytes the packet lacks count
/// as 0, bytes after them are ignored.
fn set_option_value(payload: &[u8]) -> u16 {
    let byte = |i: usize| payload.get(i).copied().unwrap_or(0);
    u16::from_le_bytes([byte(1), byte(2)])
}

/// The statement id of a COM_STMT_* payload (command byte at 0).
fn stmt_id_of(payload: &[u8]) -> Option<u32> {
    let b = payload.get(1..5)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::session::PinCause;

    #[test]
    fn scramble_is_printable_and_fresh() {
        let mut a = [0u8; 20];
        let mut b = [0u8; 20];
        fill_scramble(&mut a);
        fill_scramble(&mut b);
        assert!(a.iter().all(|&x| (0x21..0x7f).contains(&x)));
        assert_ne!(a, b);
    }

    #[test]
    fn set_option_reads_two_bytes_padded_with_zeros() {
        assert_eq!(set_option_value(&[COM_SET_OPTION, 0, 0]), 0);
        assert_eq!(set_option_value(&[COM_SET_OPTION, 1, 0]), 1);
        assert_eq!(set_option_value(&[COM_SET_OPTION, 2, 0]), 2);
        assert_eq!(set_option_value(&[COM_SET_OPTION, 0, 1]), 256);
        // Truncated packets, as mysqld reads them: empty = ON, [1] = OFF.
        assert_eq!(set_option_value(&[COM_SET_OPTION]), 0);
        assert_eq!(set_option_value(&[COM_SET_OPTION, 1]), 1);
        assert_eq!(set_option_value(&[COM_SET_OPTION, 1, 0, 9]), 1);
    }

    #[test]
    fn pin_causes_are_distinct_bits() {
        let mut s = PinSet::default();
        for c in PinCause::ALL {
            s.insert(c);
        }
        for c in PinCause::ALL {
            assert!(s.contains(c));
            s.remove(c);
            assert!(!s.contains(c));
        }
        assert!(s.is_empty());
    }
}
