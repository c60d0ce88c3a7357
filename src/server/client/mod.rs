//! Client connections: the funnel's front end.
//!
//! handshake → (auth switch) → (connect-with-db check) → idle ⇄ queued →
//! running on a backend → idle; closing at any point. The funnel
//! authenticates clients itself, so a client costs mysqld nothing until it
//! sends a command.

mod command;
mod login;
mod output;

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
use super::tally::{Counted, TallyBook, TallyState};
use super::timer::TimerKind;
use super::{Engine, POOLED_BUF_MAX};
use crate::config::{Credential, ServerRole};
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
/// `CLIENT_SSL` is added to the greeting when a certificate is configured
/// (`[funnel] tls_cert`). No `CLIENT_COMPRESS`.
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

/// A client's command in flight: all that is per command, so that "no
/// command" is one `None` (`Client::in_flight`) rather than a dozen fields
/// to reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub bytes: CommandBytes,
    /// Its retries after its backend died: all of them, and those after it
    /// may have reached a mysqld that had not yet been tried (`retried_at`:
    /// when the last one was made).
    pub retries: u8,
    pub retries_reached: u8,
    pub retried_at: Option<Instant>,
    /// The prepared statement it is about.
    pub stmt: Option<u32>,
    /// The funnel answers it by the user's privileges, which a backend is
    /// asked for first.
    pub awaiting_privileges: bool,
    /// A query whose process-list references the funnel replaced already
    /// (not to be looked at again).
    pub rewritten: bool,
    /// The role its matching rule routes it to (`[rule] route`).
    pub route: Option<ServerRole>,
    /// A rule matched it or its user's limit applies: what they decided
    /// (a concurrency slot, a rate, a cache fill) belongs to this loop,
    /// and it is not handed to another (`balance.rs`).
    pub ruled: bool,
}

impl InFlight {
    /// A command just read (its bytes: `span`, first in `rbuf`).
    pub fn new(span: MessageSpan) -> Self {
        InFlight {
            bytes: CommandBytes::Handling(span),
            retries: 0,
            retries_reached: 0,
            retried_at: None,
            stmt: None,
            awaiting_privileges: false,
            rewritten: false,
            route: None,
            ruled: false,
        }
    }
}

/// Where a command's bytes are: the first message in the client's `rbuf`
/// while the command is handled, and still after it was sent to a backend,
/// until its answer starts, so that it can be sent again if that backend
/// dies first (see `Engine::retry_current`); then consumed. One value: a
/// command is never both handled and sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandBytes {
    Handling(MessageSpan),
    Sent(MessageSpan),
    /// Its answer started: the bytes are gone.
    Answering,
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
    /// It asked for TLS: its connection is encrypted from its SSL request
    /// on (by the I/O layer).
    pub tls: bool,
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
    /// The command in flight, from the read of its bytes until its answer
    /// is complete (or the funnel answered it): what is per command.
    pub in_flight: Option<InFlight>,
    /// Added to backend sequence ids (non-zero only for the connect-with-db
    /// check and the parts of a query with a `KILL`).
    pub seq_offset: u8,
    /// When its last command was read (the process list's Time counts
    /// from it, also once the command is done).
    pub command_read_at: Instant,
    pub last_insert_id: u64,
    /// What `ROW_COUNT()` returns: the client's previous statement's
    /// affected rows, -1 after a result set or an error.
    pub row_count: i64,
    /// What `FOUND_ROWS()` says now: the rows of its last `SELECT`'s
    /// result, or [`FOUND_ROWS_ON_BACKEND`].
    pub found_rows: u64,
    pub last_status: u16,
    /// Its last command that may have written completed on a primary then
    /// (`read_write_split`): its reads go to the primary until a replica
    /// has caught up with that moment.
    pub wrote_at: Option<std::time::Instant>,
    pub bytes_out: u64,
    /// An error the funnel made itself: due as the answer to the next
    /// command, or given and still in what mysqld would keep as the
    /// session's diagnostics area ([`OwnError`]).
    /// Boxed, as the other rarely held fields: an idle client's `Client`
    /// is most of its memory (`client_size_stays_small`).
    pub own_error: Option<Box<OwnError>>,
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
    pub multi_rest: Option<Box<MultiRest>>,
    /// A relayed login's own privileges (its pool is shared by every
    /// unlisted user, so they cannot be the pool's).
    pub relay_privileges: Option<super::processlist::Privileges>,
    /// When the connection was accepted (its login's deadline counts from it).
    pub accepted_at: Instant,
    /// A login held back after failed logins (`auth_throttle`).
    pub auth_hold: Option<Box<AuthHold>>,
    /// Waiting for the other loops' answers (`loops.rs`).
    pub(crate) loop_wait: Option<Box<crate::server::loops::LoopWait>>,
    /// The pools' client tallies, and what this client adds to them now
    /// (`retally`; taken out when it is dropped).
    tally: TallyBook,
    counted: Option<Counted>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.tally.apply(self.counted.take(), None);
    }
}

/// What is left of a multi-statement query with a `KILL` in it: the
/// funnel runs such a query in parts (the statements before the `KILL` on a
/// backend, the `KILL` itself, the rest after), and the client gets one
/// answer stream, as from mysqld.
/// `Client::found_rows` after a `SELECT SQL_CALC_FOUND_ROWS`: the count
/// is on the backend that ran it (which the client keeps: `takes`), not
/// known to the funnel.
pub const FOUND_ROWS_ON_BACKEND: u64 = u64::MAX;

/// An error no mysqld said: the funnel's own (a limit, a refused rule, a
/// `KILL` it answers, a lost session). On mysqld an error stays in the
/// diagnostics area until a statement that uses a table, or one with
/// warnings or an error of its own, replaces it, and `SHOW WARNINGS`,
/// `@@warning_count` and `GET DIAGNOSTICS` read it in the meantime. The
/// funnel keeps it here, and `SIGNAL`s it on the backend before a
/// statement that reads the diagnostics (`Internal::RaiseOwnError`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnError {
    pub code: (u16, &'static str),
    pub message: String,
    /// Not yet given: the answer to the next command that has one
    /// (COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA have none).
    pub due: bool,
}

impl OwnError {
    /// An error to answer the client's next command with.
    pub fn due(code: (u16, &'static str), message: String) -> Box<OwnError> {
        Box::new(OwnError {
            code,
            message,
            due: true,
        })
    }

    /// The statement that puts this error in a backend's diagnostics area
    /// as mysqld would have it: `SHOW WARNINGS`, `@@warning_count`,
    /// `@@error_count`, `GET DIAGNOSTICS` and `ROW_COUNT()` read it as
    /// they read a mysqld error (checked on MariaDB 10.11). The message is
    /// a hex literal, whatever the client's `sql_mode` and character set;
    /// mysqld takes at most 512 characters of it. SQLSTATE class `00` is
    /// not an error to SIGNAL: none of the funnel's errors has it.
    pub fn raise_sql(&self) -> Vec<u8> {
        use std::fmt::Write;
        let mut end = self.message.len();
        if let Some((i, _)) = self.message.char_indices().nth(512) {
            end = i;
        }
        let mut sql = String::with_capacity(96 + 2 * end);
        let _ = write!(
            sql,
            "SIGNAL SQLSTATE '{}' SET MYSQL_ERRNO = {}, MESSAGE_TEXT = _utf8mb4 X'",
            self.code.1, self.code.0
        );
        for b in &self.message.as_bytes()[..end] {
            let _ = write!(sql, "{b:02x}");
        }
        sql.push('\'');
        sql.into_bytes()
    }
}

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
    /// The command being handled (not yet sent to a backend).
    pub fn current(&self) -> Option<MessageSpan> {
        match self.in_flight?.bytes {
            CommandBytes::Handling(span) => Some(span),
            _ => None,
        }
    }
    /// The text of the query being handled (a `COM_QUERY`'s payload after
    /// its command byte).
    pub fn current_sql(&self) -> Option<&[u8]> {
        let span = self.current()?;
        Some(
            span.payload_in(self.rbuf.as_slice())
                .get(1..)
                .unwrap_or_default(),
        )
    }
    /// The command sent to a backend whose answer has not started.
    pub fn sent(&self) -> Option<MessageSpan> {
        match self.in_flight?.bytes {
            CommandBytes::Sent(span) => Some(span),
            _ => None,
        }
    }
    /// The command being handled is done with (answered, or failed): no
    /// command is in flight any more. Its span, whose bytes the caller
    /// consumes.
    pub fn take_current(&mut self) -> Option<MessageSpan> {
        let span = self.current()?;
        self.in_flight = None;
        Some(span)
    }
    /// The prepared statement the command in flight is about.
    pub fn current_stmt(&self) -> Option<u32> {
        self.in_flight?.stmt
    }
    /// The command in flight waits for the user's privileges.
    pub fn awaiting_privileges(&self) -> bool {
        self.in_flight.is_some_and(|f| f.awaiting_privileges)
    }
    pub fn is_busy(&self) -> bool {
        matches!(
            self.state,
            ClientState::Queued | ClientState::Running(_) | ClientState::ConnectDb
        )
    }
    pub fn is_queued(&self) -> bool {
        matches!(self.state, ClientState::Queued | ClientState::ConnectDb)
            && self.current().is_some()
    }
    /// Past its login (a `KILL` or the process list may name it).
    pub fn logged_in(&self) -> bool {
        !matches!(
            self.state,
            ClientState::Handshake
                | ClientState::AuthSwitch(_)
                | ClientState::Relay { login: true, .. }
        )
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
        self.set_state(ClientState::Running(backend));
    }
    /// The one place a client's state changes: its pool's tally follows.
    pub fn set_state(&mut self, state: ClientState) {
        self.state = state;
        self.retally();
    }
    pub fn pin(&mut self, cause: PinCause) {
        if !self.pins.contains(cause) {
            self.pins.insert(cause);
            self.retally();
        }
    }
    pub fn unpin(&mut self, cause: PinCause) {
        if self.pins.contains(cause) {
            self.pins.remove(cause);
            self.retally();
        }
    }
    /// Its output held for it as a slow reader (`buffered`) changed.
    pub fn set_buffered(&mut self, bytes: usize) {
        self.buffered = bytes;
        self.retally();
    }
    /// What the client adds to its pool's tally, as it is now.
    pub fn counted_as(&self) -> Counted {
        let state = match self.state {
            ClientState::Handshake
            | ClientState::AuthSwitch(_)
            | ClientState::Relay { login: true, .. } => TallyState::Handshaking,
            ClientState::Relay { login: false, .. } => TallyState::Other,
            ClientState::Idle => TallyState::Idle,
            ClientState::Queued | ClientState::ConnectDb => TallyState::Queued,
            ClientState::Running(_) => TallyState::Running,
        };
        Counted {
            pool: self.pool,
            state,
            pin: self.pins.primary(),
            buffered: self.buffered,
            stmts: self.stmts.len(),
        }
    }
    /// Move the client's share of the tallies to what it counts as now:
    /// after each change of its state, pool, pins, buffered output or
    /// statements (the simulation checks none is missed).
    pub fn retally(&mut self) {
        let now = Some(self.counted_as());
        self.tally.apply(self.counted, now);
        self.counted = now;
    }
    /// What it was last counted as (for the checks against a walk).
    pub fn counted(&self) -> Option<Counted> {
        self.counted
    }
    /// Waiting for its next command, as mysqld's `wait_timeout` counts:
    /// nothing queued or running, its answers all written.
    pub fn waits_for_command(&self) -> bool {
        matches!(self.state, ClientState::Idle)
            && self.current().is_none()
            && self.wbuf.is_empty()
            && self.loop_wait.is_none()
    }
    /// The funnel answered the client's command with an error of its own:
    /// the diagnostics area holds it now, and `ROW_COUNT()` is -1, as
    /// after any error.
    pub fn answered_own_error(&mut self, code: (u16, &'static str), message: &str) {
        self.row_count = -1;
        match &mut self.own_error {
            Some(e) => {
                e.code = code;
                e.message.clear();
                e.message.push_str(message);
                e.due = false;
            }
            None => {
                self.own_error = Some(Box::new(OwnError {
                    code,
                    message: message.to_string(),
                    due: false,
                }))
            }
        }
    }
    /// A statement replaced the diagnostics area (it ended with warnings
    /// or an error, or used a table): the funnel's error given before is
    /// gone from it. One still due stays.
    pub fn diagnostics_replaced(&mut self) {
        if self.own_error.as_ref().is_some_and(|e| !e.due) {
            self.own_error = None;
        }
    }
    /// The funnel's error given before, which the diagnostics area holds.
    pub fn own_error_given(&self) -> Option<&OwnError> {
        self.own_error.as_deref().filter(|e| !e.due)
    }
    /// An error of the funnel's is due as the answer to its next command.
    pub fn own_error_due(&self) -> bool {
        self.own_error.as_ref().is_some_and(|e| e.due)
    }
    /// The funnel learnt the count `FOUND_ROWS()` says, which only the
    /// backend had: no longer a reason to keep that backend.
    pub fn found_rows_learnt(&mut self, n: u64) {
        self.found_rows = n;
        self.unreported_held &= !super::statement::unreported::FOUND_ROWS;
        if self.unreported_held == 0 {
            self.unpin(PinCause::Lock);
        }
    }
    pub fn set_idle(&mut self) {
        self.drop_sent();
        self.in_flight = None;
        self.seq_offset = 0;
        self.running_connect_db = None;
        self.set_state(ClientState::Idle);
    }
    /// The answer to the command sent has started (or it is over): its
    /// bytes are no longer needed.
    pub fn drop_sent(&mut self) {
        if let Some(f) = &mut self.in_flight {
            if let CommandBytes::Sent(span) = f.bytes {
                f.bytes = CommandBytes::Answering;
                self.rbuf.consume(span.wire_len);
            }
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
        self.retally();
    }

    /// Track whether `stmt` has an open cursor; the cursor pin lasts while
    /// any statement has one.
    pub fn set_cursor_open(&mut self, stmt: u32, open: bool) {
        self.open_cursors.retain(|&s| s != stmt);
        if open {
            self.open_cursors.push(stmt);
        }
        if self.open_cursors.is_empty() {
            self.unpin(PinCause::Cursor);
        } else {
            self.pin(PinCause::Cursor);
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
        // All loops' clients count (`loops.rs`).
        if !self
            .shared
            .admit_client(self.full_config.max_client_connections)
        {
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
                self.full_config.max_client_connections,
                self.counters.clients_refused
            );
            return None;
        }
        self.learn_shared_greeting();
        let serial = self.next_serial();
        let id = self.take_connection_id();
        let mut scramble = [0u8; 20];
        fill_scramble(&mut scramble);
        let host = peer.host();
        let mut c = self.new_client(serial, id, conn, peer);
        c.host = host;
        c.scramble = scramble;
        c.retally();
        let key = self.clients.insert(c);
        self.client_ids.insert(id, key);
        let greeting = HandshakeV10 {
            server_version: self.announced_version(),
            connection_id: id,
            scramble: scramble.to_vec(),
            capabilities: SERVER_CAPS
                | if self.config.allow_local_infile {
                    CLIENT_LOCAL_FILES
                } else {
                    0
                }
                | if self.config.tls.is_some() {
                    CLIENT_SSL
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

    /// A new client as accepted: logging in, nothing of a session yet. Not
    /// counted in the tallies until its first `retally`.
    pub(in crate::server) fn new_client(
        &self,
        serial: u64,
        id: u32,
        conn: ConnId,
        peer: Peer,
    ) -> Client {
        Client {
            serial,
            id,
            conn,
            peer,
            tls: false,
            state: ClientState::Handshake,
            pool: 0,
            rbuf: Buf::new(),
            wbuf: Buf::new(),
            capabilities: 0,
            mariadb_caps: 0,
            charset: 0,
            scramble: [0; 20],
            user: String::new(),
            host: String::new(),
            session: SessionVars::new(),
            session_ready: false,
            track: TrackSettings::default(),
            pinned: None,
            pins: PinSet::default(),
            in_flight: None,
            seq_offset: 0,
            command_read_at: self.now,
            last_insert_id: 0,
            row_count: 0,
            found_rows: 0,
            last_status: SERVER_STATUS_AUTOCOMMIT,
            wrote_at: None,
            bytes_out: 0,
            own_error: None,
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
            relay_privileges: None,
            e2e_pending: false,
            stmts: ClientStmts::new(self.prepared_stmts.clone(), self.stmt_holders.clone()),
            closes_awaited: 0,
            next_stmt_id: 0,
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
            loop_wait: None,
            tally: self.tallies.clone(),
            counted: None,
        }
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
        let mut c = self.new_client(serial, image.id, conn, peer);
        // `tls` stays false: TLS clients are never handed over (their TLS
        // session stays in the process that made it).
        c.set_state(ClientState::Idle);
        c.pool = pool;
        c.capabilities = image.capabilities;
        c.mariadb_caps = image.mariadb_caps;
        c.charset = image.charset;
        c.scramble = image.scramble;
        c.user = image.user.clone();
        c.host = image.host.clone();
        c.session = image.session();
        c.session_ready = image.session_ready;
        c.track = image.track.clone();
        c.last_insert_id = image.last_insert_id;
        c.row_count = image.row_count;
        c.found_rows = image.found_rows;
        c.last_status = image.last_status;
        c.multi_statements = image.multi_statements;
        c.next_stmt_id = image.next_stmt_id;
        c.timeouts = image.timeouts;
        c.retally();
        let key = self.clients.insert(c);
        self.shared.count_client();
        (key, serial)
    }

    /// The server a client's commands go to (its pool's; before login, the
    /// first server, which clients are greeted as).
    pub(super) fn client_server(&self, key: usize) -> &super::backend_server::BackendServer {
        let server = self
            .clients
            .get(key)
            .and_then(|c| self.pools.get(c.pool))
            .map_or(0, |p| p.home_server());
        &self.servers[server]
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
                    if c.current().is_some() || c.closes_awaited > 0 || c.loop_wait.is_some() {
                        break;
                    }
                    if let Some(m) = c.multi_rest.take() {
                        if m.ready {
                            // The next part of the client's query.
                            self.start_multi_rest(key, *m);
                        }
                        continue;
                    }
                    if self.loop_lost_pool(key) {
                        // A reload gave its pool to other loops: it goes
                        // to one with its next command (`loops.rs`).
                        return;
                    }
                    // One another loop read and queued (`balance.rs`): its
                    // latency counts from there.
                    let queued_elsewhere = self.queued_elsewhere(key);
                    let Some(c) = self.clients.get_mut(key) else {
                        return;
                    };
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
                    c.in_flight = Some(InFlight::new(span));
                    // A command from the client: its answer starts at 1
                    // (only parts of a query with a KILL number on).
                    c.seq_offset = 0;
                    c.command_read_at = queued_elsewhere.unwrap_or(self.now);
                    c.last_active = self.now;
                    self.handle_command(key);
                    if queued_elsewhere.is_some() {
                        // That was its first command only.
                        self.queued_elsewhere = None;
                    }
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
            .filter(|(_, c)| {
                self.pools
                    .get(c.pool)
                    .is_some_and(|p| p.home_server() == server)
            })
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.arm_idle_timer(key);
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
    fn an_own_error_is_raised_with_its_code_state_and_message_in_hex() {
        let e = OwnError {
            code: (1094, "HY000"),
            message: "it's \\ ☃".into(),
            due: false,
        };
        assert_eq!(
            String::from_utf8(e.raise_sql()).unwrap(),
            "SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 1094, MESSAGE_TEXT = _utf8mb4 X'69742773205c20e29883'"
        );
        // At most 512 characters, cut at a character's boundary.
        let long = OwnError {
            message: "☃".repeat(600),
            ..e
        };
        let sql = String::from_utf8(long.raise_sql()).unwrap();
        let hex = &sql[sql.find("X'").unwrap() + 2..sql.len() - 1];
        assert_eq!(hex.len(), 512 * 6);
        assert!(hex.ends_with("e29883"));
    }

    /// `size_of::<Client>()` was 976 B before the rarely held fields were
    /// boxed (2026-12-07), 856 B after; `wrote_at` (read-your-writes for
    /// read_write_split) added 16 B, `loop_wait` (a `KILL` or the process
    /// list waiting for the other event loops, boxed) 8 B, `found_rows`
    /// and the statement facts it needs (`FOUND_ROWS()` answered as mysqld
    /// would, 2026-12-08) 16 B.
    const CLIENT_SIZE_MAX: usize = 896;

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

    /// Every idle client holds one `Client` (most of its memory): what it
    /// rarely has is boxed. A new field that does not fit shows here.
    #[test]
    fn client_size_stays_small() {
        let size = std::mem::size_of::<Client>();
        println!("size_of::<Client>() = {size}");
        assert!(size <= CLIENT_SIZE_MAX, "size_of::<Client>() = {size}");
    }
}
