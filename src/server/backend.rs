//! Backend connections: the funnel's own connections to mysqld.
//!
//! connecting → greeting → authenticating → internal steps (session tracking
//! setup, baseline) → idle ⇄ (replay steps →) running a client's command →
//! idle; pinned to one client while its session holds state; reset before
//! anyone else gets it; lost → reconnect with backoff.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::{debug, error, info};

use super::action::{Action, ConnId};
use super::io::{Buf, ReadOutcome};
use super::log_limit::LogEvent;
use super::pool::ClientRef;
use super::processlist::PRIVILEGES_SQL;
use super::session::{
    string_user_var_literal, unhex_name, user_var_literal, user_var_values_sql, PinCause, PinSet,
    SessionVars, UserVarRead,
};
use super::statement::statement_facts;
use super::stmt::{execute_layout, own_stmt_key, rewrite_execute, stmt_key, ClientStmt, StmtCache};
use super::timer::TimerKind;
use super::{Deferred, Engine};
use crate::config::BackendAddr;
use crate::protocol::auth::scramble_native;
use crate::protocol::caching_sha2::{self, CACHING_SHA2_PASSWORD};
use crate::protocol::change_user::ChangeUser;
use crate::protocol::consts::*;
use crate::protocol::deprecate_eof::{EofAction, EofTranslator};
use crate::protocol::handshake::{AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use crate::protocol::lenenc::Reader;
use crate::protocol::mariadb_ext::{
    bulk_layout, column_def_edit, greeting_mariadb_caps, rewrite_bulk, set_response_mariadb_caps,
    ColumnDefEdit, CLIENT_MYSQL, MARIADB_CLIENT_EXTENDED_METADATA,
    MARIADB_CLIENT_STMT_BULK_OPERATIONS,
};
use crate::protocol::packet::{next_frame, set_seq, write_packet, UploadFramer, HEADER_LEN};
use crate::protocol::response::{
    add_status_flags, column_def_charset, decode_err, decode_ok, encode_ok, OkPacket,
};
use crate::protocol::session_track::{session_state_changes, StateChange};
use crate::protocol::tracker::{
    expect_for, EndKind, Expect, PacketKind, Progress, ResponseTracker,
};
use std::rc::Rc;

/// What the funnel asks of a backend connection for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Internal {
    /// On a new connection, before tracking is set up: set the variables
    /// of MariaDB's default `session_track_system_variables` to their own
    /// values, to learn in which order this server writes them
    /// (`client_track`).
    LearnTrackOrder,
    /// Turn on session tracking.
    Setup,
    /// Read the character-set variables the handshake gave this connection.
    Baseline,
    /// Read the collation table (once per process).
    LoadCollations,
    /// Replay a client's schema.
    InitDb,
    /// Replay a client's session variables.
    SetVars,
    /// `COM_RESET_CONNECTION` after a pinned client left.
    Reset,
    /// [`ROLLBACK_SQL`] instead, after a pinned client left whose pin was
    /// an open transaction and nothing else (see `ends_with_rollback`);
    /// with `restore`, followed in the same query by a `SET` that gives
    /// the variables the client set their defaults back (`resting_session`).
    Rollback { restore: bool },
    /// That `SET` on its own, after the `ROLLBACK`, on a connection whose
    /// multi-statements are off.
    Restore,
    /// Read the user variables after a statement changed session state.
    ReadUserVars,
    /// Read the string user variables' bytes, character sets and collations.
    ReadUserVarValues,
    /// Give the backend the client's `LAST_INSERT_ID()` before a statement
    /// that reads it.
    SetInsertId,
    /// `KILL QUERY` on behalf of a client (killer connections only).
    KillQuery,
    /// `COM_PING` health check of an idle backend.
    Ping,
    /// Prepare a client's statement here before running its execute.
    Prepare,
    /// `COM_SET_OPTION`: multi-statements on or off, as the client has it.
    SetOption,
    /// Empty the diagnostics area another client's statement left, before
    /// a client's `SHOW WARNINGS` (or the like) runs here.
    ClearDiagnostics,
    /// `COM_CHANGE_USER` to the pool's own backend account without a
    /// schema: the only way to bring a connection back to "no default
    /// schema" (MariaDB has no `USE NULL`), for a client that has none. It
    /// resets the session like `COM_RESET_CONNECTION`; tracking is set up
    /// and the baseline checked again after it.
    ChangeUser,
    /// Give the backend the client's `wait_timeout` and
    /// `interactive_timeout` before a statement that may read them.
    SetTimeouts,
    /// Bring them back to the global values after such a statement (or
    /// one that set them), before the backend idles or serves anyone else.
    RestoreTimeouts,
    /// Read the pool's backend user's privileges, before a client's command
    /// the funnel answers by them (`KILL`, the process list).
    Privileges,
    /// `COM_STMT_CLOSE`s of statements no client holds any more, then a
    /// `COM_PING`: its answer says mysqld has closed them.
    CloseStmts,
    /// mysqld refused a prepare (ERR 1461, out of statement slots): other
    /// backends are closing the statements they keep only as a cache; the
    /// prepare is sent again when they have. Nothing is in flight.
    AwaitCloses,
    /// [`CLEAR_TRACKER_SQL`] before a client's command: a result set (of
    /// a step of the funnel's own, `SET STATEMENT ... FOR SELECT` restoring
    /// the client's limits; or of a statement like it) left session-state
    /// changes that mysqld has not reported yet; it would report them in the
    /// next OK that reports anything (another client's `SET`, `USE`,
    /// `COM_INIT_DB`), so they are taken first, by a statement that changes
    /// nothing but is reported. What it reports is not applied.
    ClearTracker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    Connecting,
    AwaitGreeting,
    Authenticating,
    Internal(Internal),
    Idle,
    /// Forwarding the response to a client's command.
    Running,
    /// The client left mid-response: read and discard the rest.
    Draining,
    /// The response is complete, but a `KILL QUERY` for it may still be on
    /// its way to mysqld: nobody gets this connection until it has landed.
    AwaitKill {
        read_back: bool,
        draining: bool,
    },
}

/// How the running response treats a client that reads it more slowly
/// than mysqld sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowReader {
    /// The watermarks decide: the client kept up so far, or memory first.
    Watermarks,
    /// Connection first: read on past output_high_watermark, the client's
    /// output buffered, so the backend is freed when the response ends.
    Buffering,
    /// Outgrew max_buffered_result or met max_buffered_total: the
    /// watermarks decide for the rest of the response.
    FellBack,
}

pub struct Backend {
    pub serial: u64,
    pub pool: usize,
    /// Its socket in the I/O layer (`ConnId::NONE` until the connect
    /// has been carried out).
    pub conn: ConnId,
    /// A `FlushBackend` action is queued.
    pub flush_queued: bool,
    pub state: BackendState,
    pub rbuf: Buf,
    pub wbuf: Buf,
    pub tracker: ResponseTracker,
    /// Capabilities negotiated with mysqld.
    pub capabilities: u32,
    /// MariaDB's extended capabilities negotiated with mysqld (`mariadb_ext`).
    pub mariadb_caps: u32,
    pub thread_id: u32,
    pub charset: u8,
    pub scramble: Vec<u8>,
    /// The session this connection carries now.
    pub session: SessionVars,
    /// The client whose command runs (or will run after the replay steps),
    /// or who holds this backend pinned.
    pub client: Option<ClientRef>,
    /// Held by `client` (not in the shared set).
    pub pinned: bool,
    /// Stopped reading because the client's output is over its high watermark.
    pub paused: bool,
    /// How the running response treats a slow client (reset per command).
    pub slow_reader: SlowReader,
    /// Response to a command that came with `LOCAL INFILE`: the client's
    /// file packets are being forwarded.
    pub infile: bool,
    /// Where the client's upload is, while `infile`.
    pub upload: UploadFramer,
    /// When the client left mid-response (state `Draining`).
    pub drain_started: Instant,
    /// Rows of an internal query's result.
    pub rows: Vec<Vec<Option<String>>>,
    /// The collation id of an internal query's first column definition:
    /// for a string column, `character_set_results`' collation.
    pub rows_charset: Option<u16>,
    /// That of the last baseline (the charset table may come after it).
    pub baseline_results: Option<u16>,
    /// A step of the funnel's own left session-state changes that mysqld
    /// has not reported yet (`Internal::ClearTracker`).
    pub tracker_pending: bool,
    /// The client command currently running: its first byte.
    pub command: u8,
    /// When the command (or internal step) was sent.
    pub sent_at: Instant,
    /// Session changes seen during the current response: mysqld said
    /// "state changed" (in an OK, with `state_applied` schema and variable
    /// changes the funnel applied), or said so in an EOF, whose details it
    /// sends only with a later OK.
    pub saw_state_change: bool,
    pub state_applied: usize,
    pub saw_eof_state_change: bool,
    pub saw_unreplayable: bool,
    /// The session holds something `COM_RESET_CONNECTION` does not undo
    /// (the profiling history): closed instead of reset.
    pub discard_on_reset: bool,
    /// A statement of the current response reported warnings. Not only
    /// the last: mysqld counts each statement's own warnings in its OK or
    /// EOF, and a later statement that reads no table (`SELECT 1/0; SELECT
    /// 1`) reports none but leaves the earlier one's in the diagnostics area.
    pub saw_warnings: bool,
    /// Affected rows of the current response's last OK packet.
    pub last_affected_rows: u64,
    /// The current response is a parse error and nothing else: mysqld ran
    /// nothing of the query (it stops at a statement it cannot parse, and
    /// any earlier statement's result would have come first).
    pub parse_error_only: bool,
    /// The client (by serial) whose warnings or error this connection's
    /// diagnostics area may hold.
    pub diagnostics_of: Option<u64>,
    /// `KILL QUERY` connections opened against this one, not yet closed,
    /// and the command (by `commands` count) the last one was opened for.
    pub kills_pending: u32,
    pub killing: u64,
    /// A client ran an unproven statement here: until a reset, this
    /// connection may hold anything of that client's.
    pub dirty: bool,
    /// mysqld sent more than the answer to the command: closed once the
    /// client's answer is settled.
    pub garbage_after_answer: bool,
    /// A character-set variable changed: re-read collation_connection.
    pub charset_changed: bool,
    /// Offset added to sequence ids forwarded to the client (non-zero only
    /// when the command is one the funnel issued in the client's handshake).
    pub seq_offset: u8,
    /// Set when the connection must be closed once its response completes.
    pub close_when_done: bool,
    /// Not yet logged in and set up (counted in the pool's `connecting`).
    pub connecting: bool,
    /// Shape id of the running query (0: not a tracked query).
    pub query_shape: u32,
    /// What `LAST_INSERT_ID()` returns on this connection.
    pub last_insert_id: u64,
    /// Bytes of the current response already forwarded to the client.
    pub response_bytes: u64,
    /// Bytes of the running client command put in `wbuf` (last): while
    /// `wbuf` still holds that many, none of it was written.
    pub command_len: usize,
    /// When it was logged in and set up: a command that failed on a
    /// connection older than its previous try may have met the same
    /// mysqld twice (see `backend_lost`).
    pub ready_at: Instant,
    /// A short-lived connection that only runs `KILL QUERY <thread>` (not
    /// counted in the pool).
    pub kill_query: Option<KillTarget>,
    /// Client commands sent on this connection (identifies one command for KILL).
    pub commands: u64,
    /// When it last became idle (for the health check).
    pub idle_since: Instant,
    /// Statements prepared on this connection.
    pub stmts: StmtCache,
    /// A client's COM_STMT_PREPARE in flight: the id the funnel gives it.
    pub prepare: Option<PendingPrepare>,
    /// Multi-statements allowed on this connection (COM_SET_OPTION).
    pub multi_statements: bool,
    /// Turns the running command's EOF packets into what its client
    /// negotiated (CLIENT_DEPRECATE_EOF).
    pub eof: EofTranslator,
    /// The schema a client's COM_INIT_DB in flight asks for.
    pub init_db: Option<String>,
    /// User variables read back so far, while the string ones' values are
    /// being read (`Internal::ReadUserVarValues`).
    pub user_vars_pending: Option<UserVarsRead>,
    /// The current client command already had this connection's schema
    /// unset (`Internal::ChangeUser`): at most once per command.
    pub schema_unset_tried: bool,
    /// When that `COM_CHANGE_USER` was sent (its cost, with the set-up after
    /// it, counts as replay time).
    pub schema_unset_at: Instant,
    /// Its session's `wait_timeout` / `interactive_timeout` may be a
    /// client's, not the global values: restored after the response.
    pub own_timeouts: bool,
    /// The user-variable read-back the response's end asked for, while
    /// `Internal::RestoreTimeouts` runs first.
    pub read_back_after_restore: bool,
    /// Who waits for this backend's `Internal::CloseStmts` to be answered.
    pub close_waiters: Vec<CloseWaiter>,
    /// Other backends' closes this one waits for (`Internal::AwaitCloses`).
    pub closes_awaited: u16,
    /// Times the current prepare was sent again after ERR 1461.
    pub prepare_retries: u8,
    /// A relayed login's connection (`unlisted_users = relay`): it belongs
    /// to that client alone for its life (`relay.rs`).
    pub relay: Option<Box<super::relay::Relay>>,
}

/// Waits for a backend's statement closes to be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseWaiter {
    /// The client whose `COM_STMT_CLOSE` let go of the statements: its next
    /// command.
    Client(ClientRef),
    /// A backend whose prepare mysqld refused for want of slots: its retry.
    Backend(usize, u64),
}

/// How often a prepare refused with ERR 1461 is sent again after the
/// backends' cached statements made room.
const PREPARE_RETRIES: u8 = 2;

/// Login errors that say the pool's configuration is wrong rather than that
/// mysqld is busy: access denied (1044, 1045, 1698), the auth plugin
/// (1251, 1524), host not allowed (1130), password expired (1820, 1862),
/// account locked (4151).
const LOGIN_REFUSALS: [u16; 9] = [1044, 1045, 1130, 1251, 1524, 1698, 1820, 1862, 4151];

/// What making room for a refused prepare achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StmtRoom {
    /// This backend's cached statements are queued for closing: retry now.
    Now,
    /// Other backends are closing theirs: retry when they have.
    Wait,
    /// Nothing to close: the client gets mysqld's error.
    None,
}

/// Queue `COM_STMT_CLOSE` for each id (no answer comes); how many.
fn write_stmt_closes(wbuf: &mut Buf, ids: &mut Vec<u32>) -> usize {
    let n = ids.len();
    for id in ids.drain(..) {
        let mut close = [0u8; 9];
        close[0] = 5;
        close[4] = COM_STMT_CLOSE;
        close[5..9].copy_from_slice(&id.to_le_bytes());
        wbuf.extend_from_slice(&close);
    }
    n
}

/// A user-variable read-back half done.
#[derive(Clone, Debug, Default)]
pub struct UserVarsRead {
    /// Name → literal, of the numbers (and, after the second step, strings).
    pub vars: BTreeMap<String, String>,
    /// Every variable read so far can be recreated exactly.
    pub exact: bool,
    /// String variables whose values the second step reads, in its order.
    pub strings: Vec<String>,
    /// `LAST_INSERT_ID()` on the backend after the statement.
    pub insert_id: Option<u64>,
}

/// What reading a client's user variables back found.
enum UserVarsOutcome {
    Read(BTreeMap<String, String>, bool),
    /// More than `max_replayed_user_vars` (or too many bytes of them).
    TooMany,
    /// The values could not be read: the client stays pinned.
    Failed,
}

/// Retries of one command after its backend died (see `backend_lost`), and
/// of those, retries after it may have reached a mysqld not tried before.
const MAX_RETRIES: u8 = 8;
const MAX_RETRIES_REACHED: u8 = 2;

/// Bytes of user-variable literals (names included) one replay may carry;
/// a client with more is kept on its backend like one with too many.
pub const MAX_REPLAYED_USER_VAR_BYTES: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct PendingPrepare {
    pub funnel_id: u32,
    pub sql: Rc<[u8]>,
    pub schema: Option<String>,
}

/// The command a killer connection is to stop: only if that backend is
/// still running that very command when the KILL is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillTarget {
    pub backend: usize,
    pub serial: u64,
    pub command: u64,
    pub thread: u32,
}

/// Capabilities the funnel asks of mysqld. No `CLIENT_DEPRECATE_EOF`: every
/// backend frames responses with EOF packets, which pass through byte for
/// byte to clients without it and are translated (`EofTranslator`) for
/// clients with it, since an EOF cannot be made from an OK terminator
/// (the metadata EOF's status is not in it). `CLIENT_SESSION_TRACK` is how
/// session state is learned. `CLIENT_FOUND_ROWS` is added for the backends
/// of a `found_rows` pool only.
pub const BACKEND_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_LONG_FLAG
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_SESSION_TRACK;

/// MariaDB's extended capabilities the funnel asks of mysqld when offered:
/// `EXTENDED_METADATA` (column definitions carry type name and format; cut
/// out for clients that did not ask, see `mariadb_ext::column_def_edit`)
/// and `STMT_BULK_OPERATIONS` (COM_STMT_BULK_EXECUTE, which mysqld refuses
/// on a connection without it, and which only clients that negotiated it
/// may send). Not `PROGRESS` (progress packets in the middle of a
/// response, for `ALTER TABLE` and the like: the tracker does not know
/// them), `CACHE_METADATA` (a result set without its column definitions
/// when the client has them cached: per statement and per connection, so
/// not across backends), `COM_MULTI` (deprecated, not offered by 10.11) nor
/// `BULK_UNIT_RESULTS` (11.5+, not tested here).
pub const MARIADB_CAPS: u32 =
    MARIADB_CLIENT_EXTENDED_METADATA | MARIADB_CLIENT_STMT_BULK_OPERATIONS;

/// [`Internal::LearnTrackOrder`]; reported only if the server tracks them
/// by default (a reset or the baseline after it restores what changes).
const LEARN_TRACK_ORDER_SQL: &[u8] = b"SET SESSION autocommit = @@session.autocommit, \
time_zone = @@session.time_zone, character_set_client = @@session.character_set_client, \
character_set_connection = @@session.character_set_connection, \
character_set_results = @@session.character_set_results";
/// Ends the transaction of a client that left ([`Internal::Rollback`]),
/// whatever its `completion_type`: not chained into a new one, and the
/// connection not released.
const ROLLBACK_SQL: &[u8] = b"ROLLBACK AND NO CHAIN NO RELEASE";
const SETUP_SQL: &[u8] = b"SET SESSION session_track_schema = ON, session_track_system_variables = '*', session_track_state_change = ON";
/// The session a new or reset connection starts with, and the check that
/// it is clean: no user variables, no transaction, no profiling, tracking
/// as set up, and the variables that change what others' statements
/// return at their global values. A connection that fails it is closed.
const BASELINE_SQL: &[u8] = b"SELECT @@character_set_client, @@character_set_connection, @@character_set_results, @@collation_connection, DATABASE(), \
(SELECT COUNT(*) FROM information_schema.USER_VARIABLES) = 0 AND @@in_transaction = 0 AND @@profiling = 0 \
AND @@session.session_track_system_variables = '*' AND @@session.session_track_state_change = 1 AND @@session.session_track_schema = 1 \
AND @@session.sql_select_limit <=> @@global.sql_select_limit AND @@session.max_statement_time <=> @@global.max_statement_time \
AND @@session.time_zone <=> @@global.time_zone AND @@session.sql_mode <=> @@global.sql_mode AND @@session.tx_read_only <=> @@global.tx_read_only \
AND @@session.autocommit <=> @@global.autocommit AND @@session.max_join_size <=> @@global.max_join_size, \
@@global.max_prepared_stmt_count, \
@@global.wait_timeout, @@global.interactive_timeout, \
@@session.wait_timeout = @@global.wait_timeout AND @@session.interactive_timeout = @@global.interactive_timeout, \
@@global.session_track_schema, @@global.session_track_state_change, \
@@global.session_track_system_variables, @@global.session_track_transaction_info";
/// Column of [`BASELINE_SQL`] that says the session is clean ("1").
const BASELINE_CLEAN: usize = 5;
/// Column of [`BASELINE_SQL`]: the server's own prepared-statement limit,
/// which caps the funnel's (clients' statements are the server's, to them).
const BASELINE_MAX_PREPARED: usize = 6;
/// Columns of [`BASELINE_SQL`]: the server's global `wait_timeout` and
/// `interactive_timeout` (clients' defaults), and whether the session has
/// them ("1"; a server that does not say is taken as clean).
const BASELINE_WAIT_TIMEOUT: usize = 7;
const BASELINE_INTERACTIVE_TIMEOUT: usize = 8;
const BASELINE_TIMEOUTS_CLEAN: usize = 9;
/// Gives a backend back the global timeouts (see `Internal::RestoreTimeouts`).
const RESTORE_TIMEOUTS_SQL: &[u8] =
    b"SET SESSION wait_timeout = DEFAULT, interactive_timeout = DEFAULT";
/// Columns of [`BASELINE_SQL`]: the server's `session_track_*` globals,
/// what a client's own tracking starts with.
const BASELINE_TRACK: [(usize, &str); 4] = [
    (10, "session_track_schema"),
    (11, "session_track_state_change"),
    (12, "session_track_system_variables"),
    (13, "session_track_transaction_info"),
];
/// Sets a variable to its own value: reported (with whatever is pending),
/// no effect; leaves the diagnostics area alone.
const CLEAR_TRACKER_SQL: &[u8] = b"SET SESSION sql_select_limit = @@session.sql_select_limit";
/// Empties the diagnostics area: a statement that uses a table does (a
/// `SET` or `DO 0` does not).
const CLEAR_DIAGNOSTICS_SQL: &[u8] = b"DO (SELECT 1 FROM information_schema.ENGINES LIMIT 0)";
const COLLATIONS_SQL: &[u8] = b"SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL AND ID < 256";
/// Reads the user variables back, plus `collation_connection`, which
/// MariaDB's tracker does not report after `SET NAMES x COLLATE y` (the row
/// with [`COLLATION_ROW`] as its name: a user variable cannot start with a
/// space and a colon-prefixed tag together by accident).
///
/// Also `LAST_INSERT_ID()`, for statements that set it with an argument.
/// Run with the limits a client may have set on its own statements lifted
/// (a read-back killed by the client's `max_statement_time`, or cut short
/// by its `sql_select_limit`, would leave its session unknown), when it has
/// set them: `SET STATEMENT` leaves the restored values pending in mysqld's
/// tracker, which costs an `Internal::ClearTracker` before the next command.
const USER_VARS_LIFT: &[u8] =
    b"SET STATEMENT max_statement_time = 0, max_join_size = DEFAULT, sql_select_limit = DEFAULT FOR ";
const USER_VARS_SQL: &[u8] = b"SELECT VARIABLE_NAME, VARIABLE_VALUE, VARIABLE_TYPE, CHARACTER_SET_NAME FROM information_schema.USER_VARIABLES \
UNION ALL SELECT ' funnel:collation_connection', @@collation_connection, 'SYSVAR', NULL \
UNION ALL SELECT ' funnel:last_insert_id', LAST_INSERT_ID(), 'SYSVAR', NULL";
const COLLATION_ROW: &str = " funnel:collation_connection";
const INSERT_ID_ROW: &str = " funnel:last_insert_id";
const CHARSET_VARS: [&str; 4] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

impl Engine {
    /// The server a backend connection is to (its pool's).
    pub(super) fn server_of(&self, key: usize) -> usize {
        self.backends
            .get(key)
            .map_or(0, |b| self.pools[b.pool].server)
    }

    /// Open one more backend connection for a pool.
    pub(super) fn open_backend(&mut self, pool: usize, pinned: bool) {
        self.open_backend_for(pool, pinned, None);
    }

    /// Open a connection that runs `KILL QUERY thread` and closes: mysqld
    /// accepts KILL only from another connection.
    pub(super) fn open_killer(&mut self, pool: usize, backend: usize) {
        let Some(b) = self.backends.get(backend) else {
            return;
        };
        if b.relay.is_some() {
            // No credentials to open another connection as that user.
            return;
        }
        if b.kills_pending > 0 && b.killing == b.commands {
            // A KILL for this very statement is on its way already.
            return;
        }
        let target = KillTarget {
            backend,
            serial: b.serial,
            command: b.commands,
            thread: b.thread_id,
        };
        let before = self.backends.len();
        self.open_backend_for(pool, false, Some(target));
        if self.backends.len() > before {
            // Until this killer is gone, the target is handed to nobody,
            // so its KILL cannot land on someone else's statement.
            let b = &mut self.backends[backend];
            b.kills_pending += 1;
            b.killing = b.commands;
        }
    }

    fn open_backend_for(&mut self, pool: usize, pinned: bool, kill_query: Option<KillTarget>) {
        let serial = self.next_serial();
        let entry = self.backends.vacant_entry();
        let key = entry.key();
        let server = self.pools[pool].server;
        self.actions.push(Action::Connect {
            key,
            serial,
            addr: self.servers[server].address.clone(),
        });
        entry.insert(Backend {
            serial,
            pool,
            conn: ConnId::NONE,
            flush_queued: false,
            state: BackendState::Connecting,
            rbuf: Buf::new(),
            wbuf: Buf::new(),
            tracker: ResponseTracker::new(BACKEND_CAPS),
            capabilities: BACKEND_CAPS,
            mariadb_caps: 0,
            thread_id: 0,
            charset: 0,
            scramble: Vec::new(),
            session: SessionVars::new(),
            client: None,
            pinned,
            paused: false,
            slow_reader: SlowReader::Watermarks,
            infile: false,
            upload: UploadFramer::default(),
            drain_started: self.now,
            rows: Vec::new(),
            rows_charset: None,
            baseline_results: None,
            tracker_pending: false,
            command: 0,
            sent_at: self.now,
            saw_state_change: false,
            state_applied: 0,
            saw_eof_state_change: false,
            saw_unreplayable: false,
            discard_on_reset: false,
            saw_warnings: false,
            last_affected_rows: 0,
            parse_error_only: false,
            diagnostics_of: None,
            kills_pending: 0,
            killing: 0,
            dirty: false,
            garbage_after_answer: false,
            charset_changed: false,
            seq_offset: 0,
            close_when_done: false,
            connecting: true,
            query_shape: 0,
            last_insert_id: 0,
            response_bytes: 0,
            command_len: 0,
            ready_at: self.now,
            kill_query,
            commands: 0,
            idle_since: self.now,
            stmts: StmtCache::default(),
            prepare: None,
            close_waiters: Vec::new(),
            closes_awaited: 0,
            prepare_retries: 0,
            multi_statements: true,
            init_db: None,
            user_vars_pending: None,
            own_timeouts: false,
            read_back_after_restore: false,
            eof: EofTranslator::new(0),
            schema_unset_tried: false,
            schema_unset_at: self.now,
            relay: None,
        });
        if kill_query.is_some() {
            let at = self.now + self.config.backend.connect_timeout;
            self.add_timer(at, TimerKind::BackendConnect { key, serial });
            return;
        }
        self.pools[pool].count_backend(pinned, true, true);
        self.bump(pool, |c| c.backend_connects += 1);
        let at = self.now + self.config.backend.connect_timeout;
        self.add_timer(at, TimerKind::BackendConnect { key, serial });
    }

    /// mysqld refused the login of a backend of the pool: a configuration
    /// error, not a transient one. The connection goes like any failed one
    /// (retried with the backoff, so a fixed password or a reload recovers),
    /// and the pool's waiting clients get ERR 1045 at once, as do new
    /// commands that find no backend, until a login succeeds.
    fn backend_login_refused(&mut self, key: usize, why: String) {
        let Some(b) = self.backends.get(key) else {
            return;
        };
        let pool = b.pool;
        if b.kill_query.is_none() && b.relay.is_none() {
            let p = &mut self.pools[pool];
            let msg = format!(
                "funnel: mysqld refused the pool's login as '{}': {why}",
                p.user.backend_user
            );
            if p.login_refused.as_deref() != Some(msg.as_str()) {
                error!("pool {}: {msg}", p.name());
            }
            p.login_refused = Some(msg);
        }
        self.backend_lost(key, format!("login refused: {why}"));
        self.fail_refused_backlog(pool);
    }

    /// While the pool's login is refused and it has no backend logged in,
    /// answer its waiting commands with that error instead of letting them
    /// wait for `queue_timeout_ms`.
    pub(super) fn fail_refused_backlog(&mut self, pool: usize) {
        let p = &self.pools[pool];
        if p.login_refused.is_none() || p.shared > p.connecting {
            return;
        }
        while let Some(req) = self.pools[pool].pop() {
            let Some(msg) = self.pools[pool].login_refused.clone() else {
                return;
            };
            self.fail_request(req.client, super::err::ER_ACCESS_DENIED_ERROR, &msg);
        }
        self.stats
            .backlog_depth(pool, self.pools[pool].backlog_len(), self.now);
    }

    fn backend_connect_failed(&mut self, pool: usize, reason: String) {
        self.bump(pool, |c| c.backend_connect_failures += 1);
        let min = self.config.backend.reconnect_backoff_min;
        let max = self.config.backend.reconnect_backoff_max;
        let p = &mut self.pools[pool];
        p.backoff = if p.backoff.is_zero() {
            min
        } else {
            (p.backoff * 2).min(max)
        };
        // Jitter (up to a quarter of the delay) so that many funnels do not
        // hammer a restarting mysqld in lockstep.
        let jitter = p.backoff.as_micros() as u64 / 4;
        let jitter = if jitter > 0 { random_u64() % jitter } else { 0 };
        p.next_connect_at = self.now + p.backoff + Duration::from_micros(jitter);
        if p.last_backend_error.as_deref() != Some(reason.as_str()) {
            log_limited!(
                self,
                LogEvent::BackendConnectFailed,
                "pool {}: backend {} unavailable: {reason}; retrying in {} ms",
                p.name(),
                self.servers[p.server].address,
                p.backoff.as_millis()
            );
        }
        p.last_backend_error = Some(reason);
    }

    /// Keep the pool at its configured number of shared backends.
    pub(super) fn maintain_pool(&mut self, pool: usize) {
        if self.shutting_down.is_some() {
            return;
        }
        if self.pools[pool].is_removed() && self.pools[pool].backlog_len() == 0 {
            // A removed user's pool keeps no idle backend (one can be left
            // over when the request it was opened for went elsewhere).
            while let Some(b) = self.pools[pool].idle.pop() {
                self.close_backend(b);
            }
        }
        self.close_idle_extras(pool);
        let p = &self.pools[pool];
        let missing = p.missing_shared();
        if missing == 0 || self.now < p.next_connect_at {
            return;
        }
        // While mysqld is failing, probe with one connection at a time.
        let n = if p.backoff.is_zero() { missing } else { 1 };
        let n = n.saturating_sub(if p.backoff.is_zero() { 0 } else { p.connecting });
        for _ in 0..n {
            self.open_backend(pool, false);
        }
    }

    /// Connections kept beyond `connections` after their pinned clients
    /// left (`Pool::keeps_extra`) that no pin needed for a while
    /// (`Pool::surplus_extras`) are closed, the longest idle first: a burst
    /// of pins does not hold mysqld connections for long.
    fn close_idle_extras(&mut self, pool: usize) {
        let now = self.now;
        for _ in 0..self.pools[pool].surplus_extras(now) {
            let p = &self.pools[pool];
            if p.shared <= p.user.connections {
                return;
            }
            let backends = &self.backends;
            let oldest = p
                .idle
                .iter()
                .filter_map(|&k| Some((k, backends.get(k)?.idle_since)))
                .min_by_key(|&(_, since)| since);
            match oldest {
                Some((k, _)) => self.close_backend(k),
                None => return,
            }
        }
    }

    pub(super) fn backend_connect_timeout(&mut self, key: usize, serial: u64) {
        let Some(b) = self.backends.get(key) else {
            return;
        };
        if b.serial != serial {
            return;
        }
        if b.connecting || b.kill_query.is_some() {
            let ms = self.config.backend.connect_timeout.as_millis();
            self.backend_lost(key, format!("connect timed out after {ms} ms"));
        }
    }

    /// The I/O layer opened the backend's socket (the connect is under way).
    pub(crate) fn backend_opened(&mut self, key: usize, serial: u64, conn: ConnId) {
        if let Some(b) = self.backends.get_mut(key).filter(|b| b.serial == serial) {
            b.conn = conn;
        }
    }

    /// The I/O layer could not open the backend's socket, or its connect
    /// failed.
    pub(crate) fn backend_open_failed(&mut self, key: usize, e: std::io::Error) {
        self.backend_lost(key, format!("cannot connect: {e}"));
    }

    /// The backend's socket waits for its connect to complete.
    pub(crate) fn backend_awaits_connect(&self, key: usize) -> bool {
        self.backends
            .get(key)
            .is_some_and(|b| b.state == BackendState::Connecting)
    }

    /// The backend's connect completed: mysqld's greeting comes next.
    pub(crate) fn backend_connected(&mut self, key: usize) {
        if let Some(b) = self.backends.get_mut(key) {
            if b.state == BackendState::Connecting {
                b.state = BackendState::AwaitGreeting;
            }
        }
    }

    /// Have the backend's pending output written (by the I/O layer, at the
    /// end of the handler); `backend_written` follows.
    pub(super) fn flush_backend(&mut self, key: usize) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        if !b.flush_queued {
            b.flush_queued = true;
            self.actions.push(Action::FlushBackend {
                key,
                serial: b.serial,
            });
        }
    }

    /// Whether the I/O layer may write the backend's output now.
    pub(crate) fn backend_may_write(&self, key: usize) -> bool {
        self.backends
            .get(key)
            .is_some_and(|b| !b.wbuf.is_empty() && b.state != BackendState::Connecting)
    }

    /// The I/O layer wrote the backend's output (or failed).
    pub(crate) fn backend_written(&mut self, key: usize, written: std::io::Result<usize>) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        b.flush_queued = false;
        if let Err(e) = written {
            self.backend_lost(key, format!("write failed: {e}"));
            return;
        }
        if b.wbuf.is_empty() {
            self.bufs.release(&mut b.wbuf);
            if let (true, Some(c)) = (b.infile, b.client) {
                // An upload waiting for room can go on.
                self.deferred.push(Deferred::ClientInput(c.key, c.serial));
            }
        }
    }

    /// Whether the I/O layer should read from the backend now (not while
    /// paused by a slow client, nor before its connect completed).
    pub(crate) fn backend_may_read(&self, key: usize) -> bool {
        self.backends
            .get(key)
            .is_some_and(|b| !b.paused && b.state != BackendState::Connecting)
    }

    /// The buffer the I/O layer reads the backend's bytes into.
    pub(crate) fn backend_rbuf(&mut self, key: usize) -> Option<&mut Buf> {
        let b = self.backends.get_mut(key)?;
        self.bufs.ensure(&mut b.rbuf);
        Some(&mut b.rbuf)
    }

    /// The I/O layer read from the backend into `backend_rbuf`.
    pub(crate) fn backend_read_done(&mut self, key: usize, outcome: std::io::Result<ReadOutcome>) {
        match outcome {
            Ok(ReadOutcome::Drained(_)) => self.process_backend_input(key),
            Ok(ReadOutcome::Capped(_)) => {
                self.process_backend_input(key);
                // More may be waiting and edge-triggered readiness will not
                // say so again: come back to it at the end of this loop pass
                // (not by recursion: a result read on for a slow reader may
                // be thousands of caps long, and others must get a turn).
                if let Some(b) = self.backends.get(key) {
                    if !b.paused {
                        self.actions.push(Action::ReadBackend {
                            key,
                            serial: b.serial,
                        });
                    }
                }
            }
            Ok(ReadOutcome::Closed(_)) => {
                self.process_backend_input(key);
                if self.backends.contains(key) {
                    self.backend_lost(key, "connection closed by the server".into());
                }
            }
            Err(e) => {
                self.process_backend_input(key);
                if self.backends.contains(key) {
                    self.backend_lost(key, format!("read failed: {e}"));
                }
            }
        }
        if let Some(b) = self.backends.get_mut(key) {
            self.bufs.release(&mut b.rbuf);
        }
    }

    /// Handle every complete packet in the backend's input buffer.
    fn process_backend_input(&mut self, key: usize) {
        loop {
            let Some(b) = self.backends.get_mut(key) else {
                return;
            };
            match b.state {
                BackendState::Running | BackendState::Draining => {
                    self.forward_response(key);
                    // mysqld answers one command at a time: bytes after a
                    // complete answer are not the next one's. Left to the
                    // next command, they would be taken for its answer;
                    // handled now, an idle backend that speaks unasked is
                    // closed.
                    let leftover = self.backends.get(key).is_some_and(|b| {
                        !matches!(b.state, BackendState::Running | BackendState::Draining)
                            && !b.rbuf.is_empty()
                    });
                    if leftover {
                        continue;
                    }
                    return;
                }
                BackendState::Connecting => return,
                _ => {}
            }
            let Some((header, _)) = next_frame(b.rbuf.as_slice()) else {
                return;
            };
            let total = header.total_len();
            let seq = header.seq;
            // Copy the (small) packet out so the handlers may borrow `self`.
            self.scratch.clear();
            self.scratch
                .extend_from_slice(&b.rbuf.as_slice()[HEADER_LEN..total]);
            b.rbuf.consume(total);
            let payload = std::mem::take(&mut self.scratch);
            match b.state {
                BackendState::AwaitGreeting => self.backend_greeting(key, &payload),
                BackendState::Authenticating => self.backend_auth_reply(key, &payload, seq),
                BackendState::Internal(Internal::ChangeUser) => {
                    self.backend_change_user_reply(key, &payload, seq)
                }
                BackendState::Internal(step) => self.backend_internal_packet(key, step, &payload),
                BackendState::Idle => {
                    // mysqld speaks unasked only to say goodbye (KILL, wait_timeout).
                    let reason = match decode_err(&payload) {
                        Ok(e) => format!(
                            "server closed the idle connection: {}",
                            String::from_utf8_lossy(e.message)
                        ),
                        Err(_) => "server sent a packet no command asked for".into(),
                    };
                    self.scratch = payload;
                    self.backend_lost(key, reason);
                    return;
                }
                _ => {}
            }
            self.scratch = payload;
        }
    }

    fn backend_greeting(&mut self, key: usize, payload: &[u8]) {
        if payload.first() == Some(&ERR_HEADER) {
            let msg = decode_err(payload)
                .map(|e| format!("{} ({})", String::from_utf8_lossy(e.message), e.code))
                .unwrap_or_else(|_| "malformed error".into());
            self.backend_lost(key, format!("server refused the connection: {msg}"));
            return;
        }
        let greeting = match HandshakeV10::decode(payload) {
            Ok(g) => g,
            Err(e) => {
                self.backend_lost(key, format!("bad handshake from server: {e}"));
                return;
            }
        };
        let server = self.server_of(key);
        let srv = &mut self.servers[server];
        if srv.version.is_none() {
            info!("backend {} is {}", srv.address, greeting.server_version);
            srv.version = Some(greeting.server_version.clone());
        }
        let b = &mut self.backends[key];
        b.thread_id = greeting.connection_id;
        b.scramble = greeting.scramble.clone();
        if self.relay_greeting(key, &greeting, payload) {
            return;
        }
        let b = &mut self.backends[key];
        let found_rows = if self.pools[b.pool].found_rows {
            CLIENT_FOUND_ROWS
        } else {
            0
        };
        let pool = &self.pools[b.pool].user;
        let local_files = if self.config.allow_local_infile {
            CLIENT_LOCAL_FILES
        } else {
            0
        };
        b.capabilities = (BACKEND_CAPS | local_files | found_rows) & greeting.capabilities;
        // MariaDB's extensions, when mysqld offers them (it reads the
        // client's only when the client leaves CLIENT_MYSQL out, as it does).
        b.mariadb_caps = if greeting.capabilities & CLIENT_MYSQL == 0 {
            greeting_mariadb_caps(payload) & MARIADB_CAPS
        } else {
            0
        };
        self.servers[server].mariadb_caps = Some(b.mariadb_caps);
        b.tracker = ResponseTracker::new(b.capabilities);
        b.thread_id = greeting.connection_id;
        b.charset = greeting.charset;
        self.servers[server].charset.get_or_insert(greeting.charset);
        b.scramble = greeting.scramble.clone();
        // MySQL 8's default is answered in its own terms (saves the switch).
        let (plugin, auth_response) = if greeting.auth_plugin == CACHING_SHA2_PASSWORD {
            let pw = pool.backend_password.as_bytes();
            (
                CACHING_SHA2_PASSWORD,
                caching_sha2::scramble(pw, &greeting.scramble),
            )
        } else {
            let pw = pool.backend_password.as_bytes();
            (
                MYSQL_NATIVE_PASSWORD,
                scramble_native(pw, &greeting.scramble),
            )
        };
        let response = HandshakeResponse {
            capabilities: b.capabilities,
            max_packet: 1 << 30,
            charset: greeting.charset,
            username: pool.backend_user.clone(),
            auth_response,
            database: None,
            auth_plugin: Some(plugin.to_string()),
            attrs: vec![
                ("_client_name".into(), "funnel".into()),
                ("_client_version".into(), env!("CARGO_PKG_VERSION").into()),
            ],
        };
        self.scratch.clear();
        response.encode(&mut self.scratch);
        if b.mariadb_caps != 0 {
            set_response_mariadb_caps(&mut self.scratch, b.mariadb_caps);
        }
        b.state = BackendState::Authenticating;
        let payload = std::mem::take(&mut self.scratch);
        self.send_to_backend(key, 1, &payload);
        self.scratch = payload;
    }

    fn backend_auth_reply(&mut self, key: usize, payload: &[u8], seq: u8) {
        if self.relay_auth_reply(key, payload, seq) {
            return;
        }
        match payload.first() {
            Some(&OK_HEADER) => {
                let b = &mut self.backends[key];
                debug!("backend {} (thread {}) logged in", key, b.thread_id);
                if b.kill_query.is_some() {
                    // Runs one KILL for the funnel, for no client: quick.
                    self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec());
                } else {
                    self.start_internal(
                        key,
                        Internal::LearnTrackOrder,
                        LEARN_TRACK_ORDER_SQL.to_vec(),
                    );
                }
            }
            Some(&AUTH_SWITCH_HEADER | &caching_sha2::AUTH_MORE_DATA) => {
                if let Err(msg) = self.answer_auth_request(key, payload, seq) {
                    self.backend_login_refused(key, msg);
                }
            }
            Some(&ERR_HEADER) => {
                let err = decode_err(payload).ok();
                let msg = err
                    .as_ref()
                    .map(|e| format!("{} ({})", String::from_utf8_lossy(e.message), e.code))
                    .unwrap_or_else(|| "malformed error".into());
                if err
                    .as_ref()
                    .is_some_and(|e| LOGIN_REFUSALS.contains(&e.code))
                {
                    let text = err.map(|e| String::from_utf8_lossy(e.message).into_owned());
                    self.backend_login_refused(key, text.unwrap_or(msg));
                } else {
                    self.backend_lost(key, format!("login refused: {msg}"));
                }
            }
            _ => self.backend_lost(key, "unexpected packet during login".into()),
        }
    }

    /// Answer mysqld's auth switch request or AuthMoreData packet during a
    /// login or a `COM_CHANGE_USER`, as the account's plugin needs:
    /// mysql_native_password, client_ed25519, or caching_sha2_password
    /// (its fast path, or its full authentication: the password in clear
    /// over a unix socket, as MySQL's clients send it there, else RSA-OAEP
    /// encrypted with the server's public key). `Err`: what makes the
    /// login impossible.
    fn answer_auth_request(&mut self, key: usize, payload: &[u8], seq: u8) -> Result<(), String> {
        let pool = self.backends[key].pool;
        let pw = self.pools[pool].user.backend_password.clone();
        let pw = pw.as_bytes();
        let reply = if payload.first() == Some(&caching_sha2::AUTH_MORE_DATA) {
            let data = caching_sha2::decode_auth_more_data(payload)
                .map_err(|e| format!("bad AuthMoreData from server: {e}"))?;
            match data {
                [caching_sha2::FAST_AUTH_SUCCESS] => return Ok(()), // an OK follows
                [caching_sha2::PERFORM_FULL_AUTH] => {
                    let server = self.pools[pool].server;
                    if matches!(self.servers[server].address, BackendAddr::Unix(_)) {
                        let mut clear = pw.to_vec();
                        clear.push(0);
                        clear
                    } else {
                        vec![caching_sha2::REQUEST_PUBLIC_KEY]
                    }
                }
                pem => caching_sha2::encrypt_password(pw, &self.backends[key].scramble, pem)
                    .map_err(|e| format!("cannot use the server's RSA public key: {e}"))?,
            }
        } else {
            let req = AuthSwitchRequest::decode(payload)
                .map_err(|e| format!("bad auth switch from server: {e}"))?;
            match req.plugin.as_str() {
                MYSQL_NATIVE_PASSWORD => scramble_native(pw, &req.data),
                CACHING_SHA2_PASSWORD => {
                    let reply = caching_sha2::scramble(pw, &req.data);
                    // Full authentication, if asked for, uses this nonce.
                    self.backends[key].scramble = req.data;
                    reply
                }
                crate::protocol::auth::CLIENT_ED25519 => {
                    // The nonce is the rest of the packet as is: 32 random
                    // bytes (decode drops a last NUL, which may be one).
                    let nonce = payload.get(2 + req.plugin.len()..).unwrap_or_default();
                    crate::protocol::auth::sign_ed25519(pw, nonce).to_vec()
                }
                other => {
                    return Err(format!(
                        "server asks for auth plugin {other}; the funnel logs in with mysql_native_password, caching_sha2_password or client_ed25519 only"
                    ))
                }
            }
        };
        self.send_to_backend(key, seq.wrapping_add(1), &reply);
        Ok(())
    }

    /// Frame `payload` as packets starting at `seq` and queue it for mysqld.
    pub(super) fn send_to_backend(&mut self, key: usize, seq: u8, payload: &[u8]) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        self.bufs.ensure(&mut b.wbuf);
        let mut framed = std::mem::take(&mut self.scratch);
        framed.clear();
        write_packet(&mut framed, seq, payload);
        b.wbuf.extend_from_slice(&framed);
        self.scratch = framed;
        self.flush_backend(key);
    }

    /// Send a command the funnel itself needs answered.
    pub(super) fn start_internal(&mut self, key: usize, step: Internal, sql: Vec<u8>) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        let (cmd, expect) = match step {
            Internal::InitDb => (COM_INIT_DB, Expect::Simple),
            Internal::Reset => (COM_RESET_CONNECTION, Expect::Simple),
            Internal::Ping | Internal::CloseStmts => (COM_PING, Expect::Simple),
            Internal::Prepare => (COM_STMT_PREPARE, Expect::Prepare),
            Internal::SetOption => (COM_SET_OPTION, Expect::Simple),
            _ => (COM_QUERY, Expect::Query),
        };
        b.state = BackendState::Internal(step);
        b.tracker.start(expect);
        b.rows.clear();
        b.rows_charset = None;
        b.sent_at = self.now;
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(cmd);
        payload.extend_from_slice(&sql);
        self.send_to_backend(key, 0, &payload);
    }

    fn backend_internal_packet(&mut self, key: usize, step: Internal, payload: &[u8]) {
        let b = &mut self.backends[key];
        let progress = match b.tracker.feed(payload) {
            Ok(p) => p,
            Err(e) => {
                self.backend_lost(key, format!("malformed response to {step:?}: {e}"));
                return;
            }
        };
        // Warnings of this packet, if it is an OK or a rows' EOF.
        let warnings = match b.tracker.last_kind() {
            PacketKind::Row => {
                b.rows.push(parse_text_row(payload));
                0
            }
            PacketKind::ColumnDef if b.rows_charset.is_none() => {
                b.rows_charset = column_def_charset(
                    payload,
                    b.mariadb_caps & MARIADB_CLIENT_EXTENDED_METADATA != 0,
                )
                .ok();
                0
            }
            PacketKind::Ok => match decode_ok(payload, b.capabilities) {
                Ok(ok) => {
                    if let (Some(block), Internal::LearnTrackOrder) = (ok.session_state, step) {
                        let server = self.pools[b.pool].server;
                        self.servers[server].track_order = session_state_changes(block)
                            .filter_map(|c| match c {
                                Ok(StateChange::SystemVariable { name, .. }) => {
                                    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
                                }
                                _ => None,
                            })
                            .collect();
                    }
                    if let Some(block) = ok.session_state.filter(|_| {
                        !matches!(step, Internal::ClearTracker | Internal::LearnTrackOrder)
                    }) {
                        let changes = b.session.apply_tracked(block);
                        b.discard_on_reset |= changes.survives_reset;
                    }
                    if ok.session_state.is_some() {
                        // Reported: nothing is pending any more.
                        b.tracker_pending = false;
                    }
                    if step == Internal::Restore && ok.status & SERVER_STATUS_IN_TRANS != 0 {
                        b.dirty = true;
                    }
                    if let Internal::Rollback { restore } = step {
                        // The ROLLBACK's own OK (followed by the SET's, with
                        // `restore`) must report no change; no OK may say a
                        // transaction is open. Otherwise more than the
                        // transaction was there: reset (`internal_done`).
                        let rollbacks = !restore || ok.status & SERVER_MORE_RESULTS_EXISTS != 0;
                        let changed = ok.status & SERVER_SESSION_STATE_CHANGED != 0;
                        if ok.status & SERVER_STATUS_IN_TRANS != 0 || (rollbacks && changed) {
                            b.dirty = true;
                        }
                    }
                    ok.warnings
                }
                Err(_) => 0,
            },
            PacketKind::Eof => match crate::protocol::response::decode_eof(payload) {
                Ok(e) => {
                    b.tracker_pending |= e.status & SERVER_SESSION_STATE_CHANGED != 0;
                    e.warnings
                }
                Err(_) => 0,
            },
            _ => 0,
        };
        let Progress::Complete { end, .. } = progress else {
            if progress == Progress::LocalInfile {
                self.backend_lost(key, "unexpected LOCAL INFILE request".into());
            }
            return;
        };
        // A step of the funnel's own that ended with an error or warnings
        // left them in the diagnostics area: nobody's to see but the
        // client it ran for (0: nobody's).
        if end == EndKind::Err || warnings > 0 {
            b.diagnostics_of = Some(b.client.map_or(0, |c| c.serial));
        }
        if matches!(
            step,
            Internal::InitDb
                | Internal::SetVars
                | Internal::SetInsertId
                | Internal::SetOption
                | Internal::Prepare
                | Internal::ReadUserVars
                | Internal::ReadUserVarValues
                | Internal::SetTimeouts
                | Internal::RestoreTimeouts
        ) {
            // What multiplexing costs a client, beyond its own commands.
            let b = &self.backends[key];
            let spent = self.now.saturating_duration_since(b.sent_at).as_micros() as u64;
            self.bump(b.pool, |c| c.replay_micros += spent);
        }
        if step == Internal::LearnTrackOrder {
            // Refused or not: tracking is set up next.
            self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec());
            return;
        }
        if end == EndKind::Err && step == Internal::Prepare {
            // The statement no longer prepares (a table dropped since): the
            // client gets mysqld's error for its execute.
            let (code, msg) = decode_err(payload)
                .map(|e| (e.code, String::from_utf8_lossy(e.message).into_owned()))
                .unwrap_or((1105, "malformed error".into()));
            if code == crate::protocol::consts::err::ER_MAX_PREPARED_STMT_COUNT_REACHED.0 {
                // Out of statement slots: cached statements make room.
                match self.make_stmt_room(key) {
                    StmtRoom::Now => return self.retry_prepare(key),
                    StmtRoom::Wait => return,
                    StmtRoom::None => {}
                }
            }
            self.fail_before_command(key, (code, "HY000"), &msg);
            return;
        }
        if end == EndKind::Err
            && step == Internal::InitDb
            && decode_err(payload)
                .is_ok_and(|e| e.code == crate::protocol::consts::err::ER_BAD_DB_ERROR.0)
            && self.forget_dropped_stmt_schema(key)
        {
            self.continue_request(key);
            return;
        }
        if end == EndKind::Err {
            let msg = decode_err(payload)
                .map(|e| format!("{} ({})", String::from_utf8_lossy(e.message), e.code))
                .unwrap_or_else(|_| "malformed error".into());
            self.internal_failed(key, step, msg);
            return;
        }
        self.internal_done(key, step);
    }

    fn internal_done(&mut self, key: usize, step: Internal) {
        match step {
            Internal::Setup => {
                self.start_internal(key, Internal::Baseline, BASELINE_SQL.to_vec());
            }
            Internal::Baseline => {
                let b = &mut self.backends[key];
                let row = b.rows.first().cloned().unwrap_or_default();
                let mut session = SessionVars::new();
                for (i, name) in CHARSET_VARS.iter().enumerate() {
                    if let Some(Some(v)) = row.get(i) {
                        session.set_var(name, v);
                    }
                }
                session.set_schema(row.get(4).cloned().flatten());
                let results = b.rows_charset;
                b.baseline_results = results;
                b.session = session;
                self.learn_results_collation(key, results);
                let server = self.server_of(key);
                for (i, name) in BASELINE_TRACK {
                    if let Some(Some(v)) = row.get(i) {
                        self.servers[server].track_defaults.set(name, v);
                    }
                }
                if let Some(n) = row
                    .get(BASELINE_MAX_PREPARED)
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse::<usize>().ok())
                {
                    self.servers[server].max_prepared = Some(n);
                }
                let global = |i: usize| {
                    row.get(i)
                        .cloned()
                        .flatten()
                        .and_then(|v| v.parse::<u64>().ok())
                };
                if let (Some(wait), Some(interactive)) = (
                    global(BASELINE_WAIT_TIMEOUT),
                    global(BASELINE_INTERACTIVE_TIMEOUT),
                ) {
                    self.set_server_timeouts(
                        server,
                        super::session::ServerTimeouts { wait, interactive },
                    );
                }
                let timeouts_clean = row
                    .get(BASELINE_TIMEOUTS_CLEAN)
                    .cloned()
                    .flatten()
                    .as_deref()
                    != Some("0");
                self.backends[key].own_timeouts = false;
                if row.get(BASELINE_CLEAN).cloned().flatten().as_deref() != Some("1")
                    || !timeouts_clean
                {
                    self.backend_lost(
                        key,
                        "session not clean after connect or reset (user variables, transaction, profiling, tracking or a variable left)".into(),
                    );
                    return;
                }
                let b = &self.backends[key];
                if b.client.is_some() {
                    // Set up again after a COM_CHANGE_USER that unset the
                    // schema for a client's command (a new or reset
                    // connection has no client): the command goes on.
                    let spent = self.now.saturating_duration_since(b.schema_unset_at);
                    let spent = spent.as_micros() as u64;
                    let pool = b.pool;
                    self.bump(pool, |c| c.replay_micros += spent);
                    self.continue_request(key);
                } else if self.servers[self.server_of(key)].charsets.is_none() {
                    self.start_internal(key, Internal::LoadCollations, COLLATIONS_SQL.to_vec());
                } else {
                    self.setup_done(key);
                }
            }
            Internal::LoadCollations => {
                let server = self.server_of(key);
                let b = &mut self.backends[key];
                let mut table = super::backend_server::CharsetTable::new();
                let rows_seen = b.rows.len();
                for row in b.rows.drain(..) {
                    if let [Some(id), Some(cs), Some(coll)] = row.as_slice() {
                        if let Ok(id) = id.parse::<u8>() {
                            table.insert(id, (cs.clone(), coll.clone()));
                        }
                    }
                }
                debug!(
                    "loaded {} collations from the backend ({} rows)",
                    table.len(),
                    rows_seen
                );
                self.servers[server].charsets = Some(table);
                // The baseline that came before could not name it yet.
                let results = self.backends[key].baseline_results;
                self.learn_results_collation(key, results);
                self.setup_done(key);
            }
            Internal::Rollback { restore } => {
                let b = &mut self.backends[key];
                if b.dirty {
                    self.reset_backend(key);
                    return;
                }
                let pool = b.pool;
                self.bump(pool, |c| c.pin_rollbacks += 1);
                let b = &mut self.backends[key];
                let resting = resting_session(&b.session);
                if restore {
                    // Set to their defaults: the session a new client of
                    // the same character set and schema has.
                    b.session = resting;
                } else if let Some(sql) = resting.replay_vars_sql(&b.session) {
                    self.start_internal(key, Internal::Restore, sql);
                    return;
                }
                self.backend_ready(key);
            }
            Internal::Restore => {
                let b = &mut self.backends[key];
                if b.dirty {
                    self.reset_backend(key);
                    return;
                }
                b.session = resting_session(&b.session);
                self.backend_ready(key);
            }
            Internal::Reset => {
                self.bump(self.backends[key].pool, |c| c.backend_resets += 1);
                // The reset returned the session to the server defaults:
                // tracking is off again, and the charset is the handshake's.
                self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec());
            }
            Internal::KillQuery => self.close_backend(key),
            // Its answer is read by `backend_change_user_reply`, not here.
            Internal::ChangeUser => self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec()),
            Internal::SetOption => {
                let b = &mut self.backends[key];
                b.multi_statements = !b.multi_statements;
                self.continue_request(key);
            }
            Internal::Prepare => {
                let b = &mut self.backends[key];
                let prepared = b.tracker.prepared();
                let st = b
                    .client
                    .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
                    .and_then(|c| c.current_stmt.and_then(|id| c.stmts.get(&id)));
                match (prepared, st) {
                    (Some(ok), Some(st)) => {
                        b.stmts
                            .insert(st.key, ok.statement_id, st.sql.clone(), st.schema.clone());
                        self.continue_request(key);
                    }
                    (Some(ok), None) => {
                        // The client left meanwhile: keep nothing half-known.
                        b.stmts.to_close.push(ok.statement_id);
                        self.continue_request(key);
                    }
                    _ => self.continue_request(key),
                }
            }
            Internal::Ping => self.backend_ready(key),
            Internal::CloseStmts => {
                let mut waiters = std::mem::take(&mut self.backends[key].close_waiters);
                self.closes_done(&mut waiters);
                if let Some(b) = self.backends.get_mut(key) {
                    b.close_waiters = waiters;
                }
                self.backend_ready(key);
            }
            // Nothing is in flight in this state: an answer is unasked for.
            Internal::AwaitCloses => {
                self.backend_lost(key, "server sent a packet no command asked for".into())
            }
            Internal::ClearDiagnostics => {
                self.backends[key].diagnostics_of = None;
                self.continue_request(key);
            }
            Internal::SetTimeouts => {
                if self.backends[key].client.is_some() {
                    self.continue_request(key);
                } else {
                    self.release_orphan(key);
                }
            }
            Internal::RestoreTimeouts => {
                let b = &mut self.backends[key];
                b.own_timeouts = false;
                let read_back = std::mem::take(&mut b.read_back_after_restore);
                self.after_response(key, read_back, false);
            }
            Internal::ClearTracker => self.continue_request(key),
            // Handled as its answer arrives.
            Internal::LearnTrackOrder => {}
            Internal::ReadUserVars => self.user_vars_read(key),
            Internal::ReadUserVarValues => self.user_var_values_read(key),
            Internal::Privileges => {
                let b = &mut self.backends[key];
                let privileges = super::processlist::Privileges::from_grants(
                    b.rows.iter().filter_map(|r| r.first()?.as_deref()),
                );
                b.rows.clear();
                debug!(
                    "pool {}: privileges {privileges:?}",
                    self.pools[b.pool].name()
                );
                self.store_privileges(key, privileges);
                if self.backends[key].client.is_some() {
                    self.continue_request(key);
                } else {
                    self.backend_ready(key);
                }
            }
            Internal::SetInsertId => {
                let b = &mut self.backends[key];
                if let Some(c) = b.client.and_then(|cr| self.clients.get(cr.key)) {
                    b.last_insert_id = c.last_insert_id;
                }
                if b.client.is_some() {
                    self.continue_request(key);
                } else {
                    self.release_orphan(key);
                }
            }
            Internal::InitDb | Internal::SetVars => {
                let b = &mut self.backends[key];
                if let Some(schema) = b.init_db.take() {
                    b.session.set_schema(Some(schema));
                }
                let Some(client) = b.client else {
                    // The client left while its state was being replayed.
                    self.release_orphan(key);
                    return;
                };
                if step == Internal::SetVars {
                    if let Some(c) = self.clients.get(client.key) {
                        // The variables are the client's now; the schema
                        // is what the connection has (a SET leaves it).
                        let schema = b.session.schema.take();
                        b.session.copy_from(&c.session);
                        b.session.set_schema(schema);
                    }
                }
                self.continue_request(key);
            }
        }
    }

    /// The schema a client's statement was prepared in no longer exists
    /// (the `COM_INIT_DB` before re-preparing it here failed with 1049),
    /// though it is not the client's own schema: mysqld runs such a
    /// statement with no default schema, so the statement is prepared
    /// without one from now on (under a key of its own: the backend
    /// statement is not the one others prepared in that schema). False when
    /// this was not such a step.
    fn forget_dropped_stmt_schema(&mut self, key: usize) -> bool {
        let b = &mut self.backends[key];
        let (Some(schema), Some(cr)) = (b.init_db.clone(), b.client) else {
            return false;
        };
        let Some(c) = self
            .clients
            .get_mut(cr.key)
            .filter(|c| c.serial == cr.serial)
        else {
            return false;
        };
        if c.session.schema.as_deref() == Some(schema.as_str()) {
            return false;
        }
        let Some(id) = c.current_stmt else {
            return false;
        };
        let Some(st) = c.stmts.get_mut(&id) else {
            return false;
        };
        if st.schema.as_deref() != Some(schema.as_str()) {
            return false;
        }
        st.schema = None;
        let new_key = own_stmt_key(stmt_key(b.pool, None, &st.sql), id);
        c.stmts.rekey(id, new_key);
        b.init_db = None;
        // The failed COM_INIT_DB's error is nobody's to see.
        b.diagnostics_of = Some(0);
        self.pools[b.pool].known_schemas.remove(&schema);
        true
    }

    /// A backend connection (new or reset) is set up: the first of its
    /// pool (or the first after a reload) also learns the pool user's
    /// privileges, so that a KILL never waits for a busy pool to ask.
    fn setup_done(&mut self, key: usize) {
        let b = &self.backends[key];
        let p = &self.pools[b.pool];
        let ask = match &b.relay {
            // A relayed login's own user: asked on its own connection.
            Some(r) => self
                .clients
                .get(r.owner.key)
                .is_some_and(|c| c.relay_privileges.is_none()),
            None => p.privileges.is_none() || p.privileges_stale,
        };
        if ask {
            self.start_internal(key, Internal::Privileges, PRIVILEGES_SQL.to_vec());
        } else {
            self.backend_ready(key);
        }
    }

    fn internal_failed(&mut self, key: usize, step: Internal, msg: String) {
        match step {
            Internal::InitDb => {
                // The client's schema is gone (dropped since): tell the client,
                // as its next statement would have told it on a direct
                // connection; the backend itself is fine.
                let b = &mut self.backends[key];
                if let Some(schema) = b.init_db.take() {
                    self.pools[b.pool].known_schemas.remove(&schema);
                }
                self.fail_before_command(
                    key,
                    crate::protocol::consts::err::ER_BAD_DB_ERROR,
                    &format!("funnel: cannot restore your default schema: {msg}"),
                );
            }
            Internal::RestoreTimeouts => {
                // The client has its answer already (see below); the
                // backend, which may keep the client's timeouts, goes
                // once the client is done with it.
                debug!("backend {key}: restoring the global timeouts failed: {msg}");
                let b = &mut self.backends[key];
                b.own_timeouts = false;
                b.close_when_done = true;
                let read_back = std::mem::take(&mut b.read_back_after_restore);
                self.after_response(key, read_back, false);
            }
            Internal::Privileges => {
                // mysqld refused to say: none beyond the user's own
                // connections, as for a user without them.
                debug!("backend {key}: reading privileges failed: {msg}");
                self.store_privileges(key, Default::default());
                if self.backends[key].client.is_some() {
                    self.continue_request(key);
                } else {
                    self.backend_ready(key);
                }
            }
            Internal::Rollback { .. } | Internal::Restore => {
                // (Say, an XA transaction's.) The reset ends whatever it is.
                debug!("backend {key}: {step:?} failed: {msg}; resetting");
                self.reset_backend(key);
            }
            Internal::ReadUserVars | Internal::ReadUserVarValues => {
                // The client has its answer already: an ERR now would be
                // taken as the answer to its next command. What could not
                // be read back keeps the client on this backend instead.
                debug!("backend {key}: reading user variables failed: {msg}");
                let b = &mut self.backends[key];
                b.user_vars_pending = None;
                self.finish_user_vars(key, UserVarsOutcome::Failed, None);
            }
            _ => {
                let b = &mut self.backends[key];
                if let Some(client) = b.client.take() {
                    // The backend goes: a client that held it pinned holds
                    // nothing any more (its state went with it).
                    if let Some(c) = self
                        .clients
                        .get_mut(client.key)
                        .filter(|c| c.serial == client.serial && c.pinned == Some(key))
                    {
                        c.pinned = None;
                        c.drop_pins();
                    }
                    self.fail_request(
                        client,
                        crate::protocol::consts::err::ER_UNKNOWN_ERROR,
                        &format!(
                            "funnel: cannot restore your session on a backend connection: {msg}"
                        ),
                    );
                }
                self.backend_lost(key, format!("{step:?} failed: {msg}"));
            }
        }
    }

    /// The collation `character_set_results` has on this backend, from an
    /// internal query's metadata (`id`: its first column's, a string's).
    /// Not known (None) when the table cannot name it or it is not of the
    /// character set the variable names (`character_set_results` NULL: the
    /// column's own).
    fn learn_results_collation(&mut self, key: usize, id: Option<u16>) {
        let server = self.server_of(key);
        let b = &mut self.backends[key];
        let charsets = self.servers[server].charsets.as_ref();
        let name = id
            .and_then(|id| u8::try_from(id).ok())
            .and_then(|id| charsets?.get(&id))
            .filter(|(cs, _)| b.session.vars.get("character_set_results") == Some(cs))
            .map(|(_, coll)| coll.clone());
        b.session.set_results_collation(name);
    }

    /// The user variables of the client of `key` were read back from
    /// `information_schema.USER_VARIABLES`: numbers are exact as shown;
    /// strings are read again with their bytes, character set and
    /// collation; a client with more than `max_replayed_user_vars` stays
    /// on this backend instead.
    fn user_vars_read(&mut self, key: usize) {
        let results = self.backends[key].rows_charset;
        self.learn_results_collation(key, results);
        let limit = self.config.max_replayed_user_vars;
        let b = &mut self.backends[key];
        let mut read = UserVarsRead {
            exact: true,
            ..UserVarsRead::default()
        };
        let mut count = 0usize;
        for row in b.rows.drain(..) {
            let [Some(name), value, Some(ty), _charset] = row.as_slice() else {
                read.exact = false;
                continue;
            };
            if name == COLLATION_ROW {
                if let Some(v) = value {
                    b.session.set_var("collation_connection", v);
                }
                continue;
            }
            if name == INSERT_ID_ROW {
                read.insert_id = value.as_deref().and_then(|v| v.parse::<u64>().ok());
                continue;
            }
            if name.contains(char::REPLACEMENT_CHARACTER) {
                // Not UTF-8 as read (the client's character_set_results):
                // a replay could not name it.
                read.exact = false;
                continue;
            }
            match user_var_literal(value.as_deref(), ty) {
                // A NULL of a type the funnel does not know: as if unset.
                UserVarRead::Null => continue,
                UserVarRead::Literal(lit) => {
                    read.vars.insert(name.clone(), lit);
                }
                UserVarRead::String => read.strings.push(name.clone()),
                UserVarRead::Inexact => read.exact = false,
            }
            // A variable set to NULL is replayed (for its type) but does not
            // count against max_replayed_user_vars: setting one to NULL is
            // how a client goes back below it.
            count += usize::from(value.is_some());
        }
        if count > limit {
            self.finish_user_vars(key, UserVarsOutcome::TooMany, read.insert_id);
            return;
        }
        if read.strings.is_empty() {
            let insert_id = read.insert_id;
            self.finish_user_vars(key, UserVarsOutcome::Read(read.vars, read.exact), insert_id);
            return;
        }
        let names: Vec<&str> = read.strings.iter().map(String::as_str).collect();
        // As USER_VARS_SQL, whatever the client's max_statement_time.
        let mut sql = if b.session.vars.contains_key("max_statement_time") {
            b"SET STATEMENT max_statement_time = 0 FOR ".to_vec()
        } else {
            Vec::new()
        };
        sql.extend_from_slice(&user_var_values_sql(&names));
        b.user_vars_pending = Some(read);
        self.start_internal(key, Internal::ReadUserVarValues, sql);
    }

    /// The string user variables' values arrived (`user_var_values_sql`).
    fn user_var_values_read(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let Some(mut read) = b.user_vars_pending.take() else {
            self.finish_user_vars(key, UserVarsOutcome::Failed, None);
            return;
        };
        if b.rows.len() != read.strings.len() {
            read.exact = false;
        }
        for (row, name) in b.rows.drain(..).zip(&read.strings) {
            let literal = match row.as_slice() {
                [Some(hex_name), value, charset, collation]
                    if unhex_name(hex_name).as_deref() == Some(name.as_str()) =>
                {
                    match (value, charset, collation) {
                        (hex, Some(cs), Some(coll)) => {
                            string_user_var_literal(hex.as_deref(), cs, coll)
                        }
                        // No character set: the name did not reach the
                        // variable (a character lost on the way).
                        _ => None,
                    }
                }
                _ => None,
            };
            match literal {
                Some(lit) => {
                    read.vars.insert(name.clone(), lit);
                }
                None => read.exact = false,
            }
        }
        let insert_id = read.insert_id;
        self.finish_user_vars(key, UserVarsOutcome::Read(read.vars, read.exact), insert_id);
    }

    /// Record what the read-back found, for the backend and its client, and
    /// finish the client's command.
    fn finish_user_vars(&mut self, key: usize, outcome: UserVarsOutcome, insert_id: Option<u64>) {
        let b = &mut self.backends[key];
        let outcome = match outcome {
            UserVarsOutcome::Read(vars, _)
                if vars.iter().map(|(n, l)| n.len() + l.len()).sum::<usize>()
                    > MAX_REPLAYED_USER_VAR_BYTES =>
            {
                UserVarsOutcome::TooMany
            }
            other => other,
        };
        let pin = match outcome {
            UserVarsOutcome::Read(vars, exact) => {
                b.session.set_user_vars(vars);
                (!exact).then_some(PinCause::SessionState)
            }
            UserVarsOutcome::TooMany => {
                // Nothing will be replayed: the client keeps this backend,
                // whose variables are its own.
                b.session.set_user_vars(BTreeMap::new());
                Some(PinCause::UserVars)
            }
            UserVarsOutcome::Failed => Some(PinCause::SessionState),
        };
        if let Some(cr) = b.client {
            if let Some(c) = self
                .clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial)
            {
                c.session.copy_from(&b.session);
                if pin != Some(PinCause::UserVars) {
                    c.pins.remove(PinCause::UserVars);
                }
                if let Some(pin) = pin {
                    c.pins.insert(pin);
                }
                // Only the client's own `LAST_INSERT_ID(expr)` made this
                // connection's value the client's.
                if let Some(id) =
                    insert_id.filter(|_| c.facts.sets_insert_id || c.read_back_insert_id)
                {
                    c.last_insert_id = id;
                    b.last_insert_id = id;
                }
                c.read_back_pending = false;
                c.read_back_insert_id = false;
            }
        }
        self.release_after_response(key, false);
    }

    /// The backend is set up (or freed): give it to the pinned client that
    /// waits for it, or back to its pool.
    pub(super) fn backend_ready(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let pool = b.pool;
        if b.state == BackendState::Connecting
            || matches!(
                b.state,
                BackendState::AwaitGreeting | BackendState::Authenticating
            )
        {
            return;
        }
        if let Some(target) = b.kill_query {
            let state = b.state;
            self.set_backend_role(key, false, false);
            let still_running = state != BackendState::Internal(Internal::KillQuery)
                && self.backends.get(target.backend).is_some_and(|t| {
                    t.serial == target.serial
                        && t.commands == target.command
                        && t.state == BackendState::Running
                });
            if still_running {
                let sql = format!("KILL QUERY {}", target.thread);
                self.start_internal(key, Internal::KillQuery, sql.into_bytes());
            } else {
                // Done already (or the KILL ran): never stop someone else's query.
                self.close_backend(key);
            }
            return;
        }
        if self.relay_backend_ready(key) {
            return;
        }
        let was_connecting = self.backends[key].connecting;
        let was_pinned = self.backends[key].pinned;
        // Connected now, and shared: a pinned connection whose client is
        // gone is given back (closed below when it is one too many).
        self.set_backend_role(key, false, false);
        let b = &mut self.backends[key];
        if was_connecting {
            b.ready_at = self.now;
            let server = self.pools[pool].server;
            self.servers[server].reached = true;
        }
        b.state = BackendState::Idle;
        b.client = None;
        let p = &mut self.pools[pool];
        if was_connecting {
            if !p.backoff.is_zero() {
                log_limited!(
                    self,
                    LogEvent::BackendRestored,
                    "pool {}: backend {} reachable again",
                    p.name(),
                    self.servers[p.server].address
                );
            }
            p.backoff = Duration::ZERO;
            p.last_backend_error = None;
            if p.login_refused.take().is_some() {
                error!("pool {}: mysqld accepts the pool's login again", p.name());
            }
        }
        if b.close_when_done
            || (p.shared > p.user.connections && (was_pinned || !p.keeps_extra()))
            || (p.is_removed() && p.backlog_len() == 0)
        {
            // More shared backends than configured: this was a pinned
            // client's extra connection, given back while the client stays
            // (one whose client left may be kept: `Pool::keeps_extra`);
            // close it. A removed user's pool closes its backends as they
            // go idle (none waits for them).
            self.close_backend(key);
            return;
        }
        if !b.stmts.to_close.is_empty() {
            // Statements nobody holds any more go before the backend is
            // anyone's again, and it is idle once mysqld has closed them.
            self.start_close_stmts(key);
            return;
        }
        b.idle_since = self.now;
        p.idle.push(key);
        self.dispatch(pool);
    }

    /// Close the statements queued on this backend, then `COM_PING`:
    /// `Internal::CloseStmts` until its answer.
    fn start_close_stmts(&mut self, key: usize) {
        let b = &mut self.backends[key];
        self.bufs.ensure(&mut b.wbuf);
        let n = write_stmt_closes(&mut b.wbuf, &mut b.stmts.to_close) as u64;
        let pool = b.pool;
        self.bump(pool, |c| c.stmts_closed += n);
        self.start_internal(key, Internal::CloseStmts, Vec::new());
    }

    /// Close on every backend the statements no client holds any more
    /// (see `StmtHolders`). `waiter`: the client whose `COM_STMT_CLOSE` let
    /// go of them; its next command waits until the idle backends have
    /// closed them.
    pub(super) fn close_released_stmts(&mut self, waiter: Option<ClientRef>) {
        let mut keys = std::mem::take(&mut self.released_keys);
        self.stmt_holders.borrow_mut().take_released(&mut keys);
        if !keys.is_empty() {
            for (_, b) in self.backends.iter_mut() {
                if b.stmts.is_empty() {
                    continue;
                }
                for &k in &keys {
                    b.stmts.close(k);
                }
            }
        }
        keys.clear();
        self.released_keys = keys;
        let waits = self.send_stmt_closes(waiter.map(CloseWaiter::Client));
        if let Some(c) = waiter.and_then(|cr| {
            self.clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial)
        }) {
            c.closes_awaited = c.closes_awaited.saturating_add(waits);
        }
    }

    /// Send the closes queued on idle backends now (a busy one sends its
    /// own before its next command, or when it goes idle). An idle shared
    /// backend closes them as `Internal::CloseStmts`, and `waiter` waits
    /// for it; a pinned one gets them ahead of its client's next command.
    /// How many backends `waiter` waits for.
    fn send_stmt_closes(&mut self, waiter: Option<CloseWaiter>) -> u16 {
        let mut waits = 0u16;
        let mut i = 0;
        while let Some((key, b)) = self
            .backends
            .iter()
            .find(|&(k, b)| k >= i && b.state == BackendState::Idle && !b.stmts.to_close.is_empty())
        {
            i = key + 1;
            let pool = b.pool;
            if self.pools[pool].remove_idle(key) {
                self.start_close_stmts(key);
                if let (Some(w), Some(b)) = (waiter, self.backends.get_mut(key)) {
                    if b.state == BackendState::Internal(Internal::CloseStmts) {
                        b.close_waiters.push(w);
                        waits = waits.saturating_add(1);
                    }
                }
            } else {
                self.write_stmt_closes_now(key);
            }
        }
        waits
    }

    /// Send the closes queued on a backend that waits for its pinned
    /// client's next command (no answer comes; they go ahead of it).
    fn write_stmt_closes_now(&mut self, key: usize) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        if b.stmts.to_close.is_empty() {
            return;
        }
        self.bufs.ensure(&mut b.wbuf);
        let n = write_stmt_closes(&mut b.wbuf, &mut b.stmts.to_close) as u64;
        let pool = b.pool;
        self.bump(pool, |c| c.stmts_closed += n);
        self.flush_backend(key);
    }

    /// This backend's closes are done (or it is gone): tell who waited.
    fn closes_done(&mut self, waiters: &mut Vec<CloseWaiter>) {
        for w in waiters.drain(..) {
            match w {
                CloseWaiter::Client(cr) => {
                    if let Some(c) = self
                        .clients
                        .get_mut(cr.key)
                        .filter(|c| c.serial == cr.serial)
                    {
                        c.closes_awaited = c.closes_awaited.saturating_sub(1);
                        if c.closes_awaited == 0 {
                            self.deferred.push(Deferred::ClientInput(cr.key, cr.serial));
                        }
                    }
                }
                CloseWaiter::Backend(key, serial) => {
                    if let Some(b) = self.backends.get_mut(key).filter(|b| {
                        b.serial == serial
                            && b.state == BackendState::Internal(Internal::AwaitCloses)
                    }) {
                        b.closes_awaited = b.closes_awaited.saturating_sub(1);
                        if b.closes_awaited == 0 {
                            self.retry_prepare(key);
                        }
                    }
                }
            }
        }
    }

    /// The statement keys on backend `key` that must not be closed to make
    /// room: those of the client pinned there while it has a cursor open
    /// or long data sent (they live in that backend statement).
    fn protected_stmt_keys(&self, key: usize) -> Vec<u64> {
        let Some(b) = self.backends.get(key) else {
            return Vec::new();
        };
        b.client
            .filter(|_| b.pinned)
            .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
            .filter(|c| !c.open_cursors.is_empty() || c.pins.contains(PinCause::PreparedStatement))
            .map(|c| c.stmts.values().map(|s| s.key).collect())
            .unwrap_or_default()
    }

    /// mysqld refused to prepare a statement on backend `key` with ERR
    /// 1461: it holds `max_prepared_stmt_count` statements, the funnel's
    /// backend caches among them (the funnel's own limit already keeps the
    /// clients' statements within it). Make room: the cached statements of
    /// this backend go first (closed ahead of the retried prepare); failing
    /// those, the idle shared backends', and the retry waits for them.
    fn make_stmt_room(&mut self, key: usize) -> StmtRoom {
        if self.backends[key].prepare_retries >= PREPARE_RETRIES {
            return StmtRoom::None;
        }
        let keep = self.protected_stmt_keys(key);
        if self.backends[key].stmts.evict(|k| keep.contains(&k)) > 0 {
            return StmtRoom::Now;
        }
        let idle: Vec<usize> = self
            .backends
            .iter()
            .filter(|&(k, b)| {
                k != key
                    && b.state == BackendState::Idle
                    && !b.pinned
                    && b.kill_query.is_none()
                    && !b.stmts.is_empty()
            })
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            self.backends[k].stmts.evict(|_| false);
        }
        let serial = self.backends[key].serial;
        let waits = self.send_stmt_closes(Some(CloseWaiter::Backend(key, serial)));
        if waits == 0 {
            return StmtRoom::None;
        }
        let b = &mut self.backends[key];
        b.closes_awaited = waits;
        b.state = BackendState::Internal(Internal::AwaitCloses);
        b.sent_at = self.now;
        StmtRoom::Wait
    }

    /// Send the refused prepare again, after the closes that made room:
    /// the client's own `COM_STMT_PREPARE` (its answer is forwarded as if
    /// it were the first), or the funnel's before a client's execute.
    fn retry_prepare(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let client_alive = b.client.is_some_and(|cr| {
            self.clients
                .get(cr.key)
                .is_some_and(|c| c.serial == cr.serial)
        });
        if !client_alive {
            b.prepare = None;
            self.release_orphan(key);
            return;
        }
        b.prepare_retries += 1;
        let pool = b.pool;
        self.bump(pool, |c| c.prepare_retries += 1);
        let b = &mut self.backends[key];
        self.bufs.ensure(&mut b.wbuf);
        let n = write_stmt_closes(&mut b.wbuf, &mut b.stmts.to_close) as u64;
        self.bump(pool, |c| c.stmts_closed += n);
        let b = &mut self.backends[key];
        let Some(sql) = b.prepare.as_ref().map(|p| p.sql.clone()) else {
            // The funnel's own prepare for an execute: the next step is it
            // again, the statement not being on this backend yet.
            b.state = BackendState::Running;
            self.continue_request(key);
            return;
        };
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(COM_STMT_PREPARE);
        payload.extend_from_slice(&sql);
        if let Some(c) = b.client.and_then(|cr| self.clients.get(cr.key)) {
            b.eof = EofTranslator::new(c.capabilities);
        }
        b.tracker.start(Expect::Prepare);
        b.state = BackendState::Running;
        b.sent_at = self.now;
        self.send_to_backend(key, 0, &payload);
    }

    /// Pair queued requests with idle backends.
    pub(super) fn dispatch(&mut self, pool: usize) {
        if self.paused || self.pools[pool].paused {
            return;
        }
        loop {
            if self.pools[pool].idle.is_empty() {
                return;
            }
            let Some(req) = self.pools[pool].pop() else {
                return;
            };
            let Some(c) = self.clients.get(req.client.key) else {
                continue;
            };
            if c.serial != req.client.serial || !c.is_queued() {
                continue;
            }
            let fingerprint = c.session.fingerprint();
            let schema = c.session.schema.as_deref();
            let backends = &self.backends;
            let Some(b) = self.pools[pool].take_idle(|b| {
                backends
                    .get(b)
                    .map_or(0, |b| session_score(&b.session, fingerprint, schema))
            }) else {
                self.pools[pool].push_front(req);
                return;
            };
            let waited = self.now.saturating_duration_since(req.enqueued);
            self.stats_queue_wait(pool, waited);
            self.start_request(b, req.client);
        }
    }

    /// Give a backend to a client's command: replay its session first where
    /// the backend's differs, then send the command.
    pub(super) fn start_request(&mut self, key: usize, client: ClientRef) {
        self.ensure_client_session(client.key);
        let b = &mut self.backends[key];
        b.client = Some(client);
        b.schema_unset_tried = false;
        b.prepare_retries = 0;
        // Nothing of this command has been forwarded yet.
        b.response_bytes = 0;
        if let Some(c) = self.clients.get_mut(client.key) {
            c.set_running(key);
        }
        self.continue_request(key);
    }

    /// Next step for the client's command on this backend.
    fn continue_request(&mut self, key: usize) {
        let b = &self.backends[key];
        let Some(client) = b.client else {
            self.release_orphan(key);
            return;
        };
        let Some(c) = self
            .clients
            .get(client.key)
            .filter(|c| c.serial == client.serial)
        else {
            self.backends[key].client = None;
            self.release_orphan(key);
            return;
        };
        if c.awaiting_privileges {
            // The command is the funnel's to answer once the user's
            // privileges are known: learn them here, then give it back.
            if !self.privileges_known(client.key) {
                self.start_internal(key, Internal::Privileges, PRIVILEGES_SQL.to_vec());
            } else {
                self.hand_back(key, client);
            }
            return;
        }
        // A statement prepared without a default schema runs without one
        // (mysqld switches to the statement's schema for each execute,
        // NULL included): it is prepared here on a connection without one.
        let stmt_needs_no_schema = match c.current_stmt.and_then(|id| c.stmts.get(&id)) {
            Some(st) if st.schema.is_none() => self.backends[key]
                .stmts
                .get_mut(st.key, None, &st.sql)
                .is_none(),
            _ => false,
        };
        let b = &self.backends[key];
        if (c.session.schema.is_none() || stmt_needs_no_schema)
            && b.session.schema.is_some()
            && !b.pinned
            && !b.dirty
            && !b.schema_unset_tried
        {
            // A client without a default schema must not run where another
            // client's schema is (its unqualified names would resolve there,
            // and DATABASE() would show it). Before anything else: the
            // change-user forgets the connection's prepared statements.
            self.unset_schema(key);
            return;
        }
        if let Some(st) = c.current_stmt.and_then(|id| c.stmts.get(&id)) {
            let cached = self.backends[key]
                .stmts
                .get_mut(st.key, st.schema.as_deref(), &st.sql)
                .is_some();
            if !cached {
                let b = &self.backends[key];
                if st.schema.is_some() && st.schema != b.session.schema {
                    // Prepare in the schema the client prepared it in.
                    let schema = st.schema.clone().unwrap_or_default();
                    self.backends[key].init_db = Some(schema.clone());
                    self.start_internal(key, Internal::InitDb, schema.into_bytes());
                } else {
                    let sql = st.sql.to_vec();
                    self.start_internal(key, Internal::Prepare, sql);
                }
                return;
            }
        }
        let b = &self.backends[key];
        if c.multi_statements != b.multi_statements {
            // 0 = MYSQL_OPTION_MULTI_STATEMENTS_ON, 1 = OFF.
            let option: u16 = if c.multi_statements { 0 } else { 1 };
            self.start_internal(key, Internal::SetOption, option.to_le_bytes().to_vec());
            return;
        }
        if c.session.fingerprint() != b.session.fingerprint() {
            if c.session.schema.is_some() && c.session.schema != b.session.schema {
                let schema = c.session.schema.clone().unwrap_or_default();
                self.bump(b.pool, |c| c.replays += 1);
                self.backends[key].init_db = Some(schema.clone());
                self.start_internal(key, Internal::InitDb, schema.into_bytes());
                return;
            }
            if let Some(sql) = c.session.replay_vars_sql(&b.session) {
                let vars = c.session.user_vars_to_replay(&b.session) as u64;
                self.bump(b.pool, |c| {
                    c.replays += 1;
                    c.user_vars_replayed += vars;
                });
                self.start_internal(key, Internal::SetVars, sql);
                return;
            }
        }
        if c.facts.reads_diagnostics && b.diagnostics_of.is_some_and(|s| s != client.serial) {
            // Another client's warnings are in this connection's
            // diagnostics area: empty it first.
            self.bump(b.pool, |c| c.diagnostics_cleared += 1);
            self.start_internal(
                key,
                Internal::ClearDiagnostics,
                CLEAR_DIAGNOSTICS_SQL.to_vec(),
            );
            return;
        }
        if c.facts.reads_insert_id && c.last_insert_id != b.last_insert_id {
            let sql = format!("SELECT LAST_INSERT_ID({})", c.last_insert_id);
            self.bump(b.pool, |c| c.replays += 1);
            self.start_internal(key, Internal::SetInsertId, sql.into_bytes());
            return;
        }
        if self.backends[key].tracker_pending {
            self.start_internal(key, Internal::ClearTracker, CLEAR_TRACKER_SQL.to_vec());
            return;
        }
        if c.facts.mentions_timeouts && !b.own_timeouts {
            // The statement may read the client's timeouts: the backend
            // has the global ones (restored after the response).
            let server = self.servers[self.pools[b.pool].server].timeouts;
            let (wait, interactive) = c.timeouts.effective(server);
            if (wait, interactive) != (server.wait, server.interactive) {
                let sql = format!(
                    "SET SESSION wait_timeout = {wait}, interactive_timeout = {interactive}"
                );
                self.backends[key].own_timeouts = true;
                self.start_internal(key, Internal::SetTimeouts, sql.into_bytes());
                return;
            }
        }
        self.send_client_command(key, client);
    }

    /// Copy the client's command from its input buffer to the backend.
    fn send_client_command(&mut self, key: usize, client: ClientRef) {
        let Some(c) = self.clients.get_mut(client.key) else {
            return;
        };
        let Some(span) = c.current else {
            // Nothing to send (cannot happen: a running client has a command).
            self.backends[key].client = None;
            self.backend_ready(key);
            return;
        };
        let b = &mut self.backends[key];
        let cmd = c.rbuf.as_slice().get(HEADER_LEN).copied().unwrap_or(0);
        b.query_shape = if cmd == COM_QUERY {
            let end = span.wire_len.min(HEADER_LEN + span.payload_len);
            self.stats.query_shape_hashed(
                b.pool,
                c.facts.shape,
                &c.rbuf.as_slice()[HEADER_LEN + 1..end],
            )
        } else {
            0
        };
        self.bufs.ensure(&mut b.wbuf);
        // Statements this backend no longer needs (no answer comes).
        let closed = write_stmt_closes(&mut b.wbuf, &mut b.stmts.to_close) as u64;
        if closed > 0 {
            self.counters.stmts_closed += closed;
            if let Some(p) = self.pools.get_mut(b.pool) {
                p.counters.stmts_closed += closed;
            }
        }
        let stmt = c.current_stmt.and_then(|id| c.stmts.get(&id));
        b.init_db = None;
        if cmd == COM_INIT_DB {
            let end = span.wire_len.min(HEADER_LEN + span.payload_len);
            b.init_db =
                Some(String::from_utf8_lossy(&c.rbuf.as_slice()[HEADER_LEN + 1..end]).into_owned());
        }
        let queued_before = b.wbuf.len();
        match (cmd, stmt) {
            (COM_STMT_PREPARE, _) => {
                let end = span.wire_len.min(HEADER_LEN + span.payload_len);
                c.next_stmt_id = c.next_stmt_id.wrapping_add(1).max(1);
                b.prepare = Some(PendingPrepare {
                    funnel_id: c.next_stmt_id,
                    sql: Rc::from(&c.rbuf.as_slice()[HEADER_LEN + 1..end]),
                    schema: c.session.schema.clone(),
                });
                b.wbuf
                    .extend_from_slice(&c.rbuf.as_slice()[..span.wire_len]);
            }
            (
                COM_STMT_EXECUTE
                | COM_STMT_BULK_EXECUTE
                | COM_STMT_SEND_LONG_DATA
                | COM_STMT_RESET
                | COM_STMT_FETCH,
                Some(st),
            ) => {
                // The backend's own id for this statement, and for an
                // execute the parameter types it needs.
                let mut payload = std::mem::take(&mut self.scratch);
                payload.clear();
                crate::protocol::packet::join_payload(c.rbuf.as_slice(), &span, &mut payload);
                let mut out =
                    Vec::with_capacity(payload.len() + 2 * usize::from(st.num_params) + 1);
                if let Some(entry) = b.stmts.get_mut(st.key, st.schema.as_deref(), &st.sql) {
                    if cmd == COM_STMT_EXECUTE {
                        let layout = execute_layout(&payload, st.num_params);
                        match layout {
                            Some(layout) => {
                                let insert = (!layout.bound
                                    && layout.bound_at.is_some()
                                    && !st.types.is_empty()
                                    && entry.types != st.types)
                                    .then_some(st.types.as_slice());
                                rewrite_execute(&mut out, &payload, entry.id, layout, insert);
                                if layout.bound || insert.is_some() {
                                    entry.types.clone_from(&st.types);
                                }
                            }
                            None => out.extend_from_slice(&payload),
                        }
                    } else if cmd == COM_STMT_BULK_EXECUTE {
                        match bulk_layout(&payload, st.num_params) {
                            Ok(layout) => {
                                // Types inserted as for an execute: the
                                // backend's statement keeps the last it got.
                                let insert = (!layout.has_types
                                    && !st.types.is_empty()
                                    && entry.types != st.types)
                                    .then_some(st.types.as_slice());
                                rewrite_bulk(&mut out, &payload, entry.id, layout, insert);
                                if layout.has_types || insert.is_some() {
                                    entry.types.clone_from(&st.types);
                                }
                            }
                            Err(_) => out.extend_from_slice(&payload),
                        }
                    } else {
                        out.extend_from_slice(&payload);
                        if out.len() >= 5 {
                            out[1..5].copy_from_slice(&entry.id.to_le_bytes());
                        }
                    }
                } else {
                    out.extend_from_slice(&payload);
                }
                let mut framed = Vec::with_capacity(out.len() + 8);
                write_packet(&mut framed, 0, &out);
                b.wbuf.extend_from_slice(&framed);
                self.scratch = payload;
            }
            _ => b
                .wbuf
                .extend_from_slice(&c.rbuf.as_slice()[..span.wire_len]),
        }
        // The command stays in the client's input until its answer starts:
        // if this backend dies first, it may be sent again elsewhere.
        b.command_len = b.wbuf.len() - queued_before;
        c.current = None;
        c.sent = Some(span);
        b.command = cmd;
        b.seq_offset = c.seq_offset;
        b.eof = EofTranslator::new(c.capabilities);
        b.sent_at = self.now;
        b.saw_state_change = false;
        b.state_applied = 0;
        b.saw_eof_state_change = false;
        b.saw_unreplayable = false;
        b.charset_changed = false;
        b.saw_warnings = false;
        b.parse_error_only = false;
        b.response_bytes = 0;
        b.slow_reader = SlowReader::Watermarks;
        b.commands += 1;
        let expect = expect_for(cmd);
        b.tracker.start(expect);
        b.state = BackendState::Running;
        c.command_sent_at = self.now;
        let serial = b.serial;
        self.flush_backend(key);
        // A failed write has lost the backend (and told its client).
        let alive = self.backends.get(key).is_some_and(|b| b.serial == serial);
        if expect == Expect::None && alive {
            // COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA: no answer comes.
            self.finish_response(key, 0, EndKind::Other);
        }
    }

    /// Forward complete response packets to the client, rewriting only OK
    /// packets that carry session state (their session-tracking part is the
    /// funnel's: a client with CLIENT_SESSION_TRACK gets what its own
    /// settings track, `client_track`; others nothing).
    fn forward_response(&mut self, key: usize) {
        let track_server = self.server_of(key);
        let b = &mut self.backends[key];
        let client = b.client;
        let draining = b.state == BackendState::Draining;
        let mut c = match client {
            Some(cr) if !draining => self
                .clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial),
            _ => None,
        };
        if let Some(c) = c.as_mut() {
            self.bufs.ensure(&mut c.wbuf);
        }
        let mut pos = 0; // bytes of rbuf handled
        let mut run_start = 0; // start of frames not yet copied to the client
        let mut finished: Option<(u16, EndKind)> = None;
        let mut infile = false;
        let mut timeouts_changed = false;
        let mut error: Option<String> = None;
        // mysqld's ERR 1461 to a client's prepare, held back while cached
        // statements make room for a retry: the frame, and its end.
        let mut refused: Option<(Vec<u8>, u16, EndKind)> = None;
        let offset = b.seq_offset;
        // Extended column metadata: the backend's and the client's.
        let ext_backend = b.mariadb_caps & MARIADB_CLIENT_EXTENDED_METADATA != 0;
        let ext_client = c.as_ref().map_or(ext_backend, |c| {
            c.mariadb_caps & MARIADB_CLIENT_EXTENDED_METADATA != 0
        });
        // A query with a KILL after this part: its last result must say
        // that more follow, as in mysqld's answer to the whole query.
        let more_after = c
            .as_ref()
            .is_some_and(|c| c.multi_rest.as_ref().is_some_and(|m| !m.ready));
        {
            let data = b.rbuf.as_mut_slice();
            while let Some((header, _)) = next_frame(&data[pos..]) {
                let total = header.total_len();
                let payload = &data[pos + HEADER_LEN..pos + total];
                let progress = match b.tracker.feed(payload) {
                    Ok(p) => p,
                    Err(e) => {
                        error = Some(format!("malformed response: {e}"));
                        break;
                    }
                };
                let kind = b.tracker.last_kind();
                let part_done = more_after
                    && matches!(progress, Progress::Complete { end, .. } if end != EndKind::Err);
                if more_after
                    && matches!(
                        kind,
                        PacketKind::Ok | PacketKind::Eof | PacketKind::MetadataEof
                    )
                {
                    // Every status of a result but the last already says
                    // so; the last one's too (its column definitions' EOF
                    // included).
                    add_status_flags(
                        &mut data[pos + HEADER_LEN..pos + total],
                        SERVER_MORE_RESULTS_EXISTS,
                    );
                }
                let payload = &data[pos + HEADER_LEN..pos + total];
                // What the client gets for this packet: the backend speaks
                // EOF packets, the client may have asked for OK terminators.
                let action = match b.eof.translate(kind, payload) {
                    Ok(a) => a,
                    Err(e) => {
                        error = Some(format!("malformed response: {e}"));
                        break;
                    }
                };
                let seq = b.eof.client_seq(header.seq.wrapping_add(offset));
                if part_done {
                    if let Some(m) = c.as_mut().and_then(|c| c.multi_rest.as_mut()) {
                        m.ready = true;
                        m.seq = seq.wrapping_add(1);
                    }
                }
                if kind == PacketKind::Err
                    && b.command == COM_STMT_PREPARE
                    && pos == 0
                    && b.response_bytes == 0
                    && c.is_some()
                    && b.prepare.is_some()
                    && b.prepare_retries < PREPARE_RETRIES
                    && decode_err(payload).is_ok_and(|e| {
                        e.code == crate::protocol::consts::err::ER_MAX_PREPARED_STMT_COUNT_REACHED.0
                    })
                {
                    if let Progress::Complete { status, end } = progress {
                        let mut frame = data[pos..pos + total].to_vec();
                        set_seq(&mut frame, seq);
                        refused = Some((frame, status, end));
                        pos += total;
                        run_start = pos;
                        break;
                    }
                }
                match action {
                    EofAction::Pass if seq != header.seq => {
                        set_seq(&mut data[pos..pos + total], seq);
                    }
                    EofAction::Pass => {}
                    EofAction::Drop | EofAction::ReplaceWithOk(_) => {
                        if let Some(c) = c.as_mut() {
                            c.wbuf.extend_from_slice(&data[run_start..pos]);
                            if let EofAction::ReplaceWithOk(ok) = action {
                                let len = ok.len() as u8;
                                c.wbuf.extend_from_slice(&[len, 0, 0, seq]);
                                c.wbuf.extend_from_slice(&ok);
                            }
                        }
                        run_start = pos + total;
                    }
                }
                let payload = &data[pos + HEADER_LEN..pos + total];
                if kind == PacketKind::PrepareOk {
                    if let (Some(p), Ok(ok)) = (
                        b.prepare.take(),
                        crate::protocol::response::decode_stmt_prepare_ok(payload),
                    ) {
                        let mut key_hash = stmt_key(b.pool, p.schema.as_deref(), &p.sql);
                        if c.as_ref()
                            .is_some_and(|c| c.stmts.values().any(|s| s.key == key_hash))
                        {
                            key_hash = own_stmt_key(key_hash, p.funnel_id);
                        }
                        b.stmts
                            .insert(key_hash, ok.statement_id, p.sql.clone(), p.schema.clone());
                        if c.is_none() && !self.stmt_holders.borrow().is_held(key_hash) {
                            // Its client left: nobody will execute it.
                            b.stmts.close(key_hash);
                        }
                        if let Some(c) = c.as_mut() {
                            c.stmts.insert(
                                p.funnel_id,
                                ClientStmt {
                                    // Scanned once, for all its executes.
                                    facts: statement_facts(&p.sql),
                                    sql: p.sql,
                                    schema: p.schema,
                                    key: key_hash,
                                    num_params: ok.num_params,
                                    types: Vec::new(),
                                },
                            );
                        }
                        // The client sees the funnel's id, not this backend's.
                        let at = pos + HEADER_LEN + 1;
                        data[at..at + 4].copy_from_slice(&p.funnel_id.to_le_bytes());
                    }
                    pos += total;
                    match progress {
                        Progress::Complete { status, end } => {
                            finished = Some((status, end));
                            break;
                        }
                        _ => continue,
                    }
                }
                if kind == PacketKind::ColumnDef && ext_backend != ext_client {
                    // As mysqld describes columns to this client: with or
                    // without the extended metadata it negotiated.
                    let edit = match column_def_edit(payload, ext_backend, ext_client) {
                        Ok(e) => e,
                        Err(e) => {
                            error = Some(format!("malformed column definition: {e}"));
                            break;
                        }
                    };
                    if let Some(c) = c.as_mut() {
                        c.wbuf.extend_from_slice(&data[run_start..pos]);
                        let (head, pad, rest): (&[u8], &[u8], &[u8]) = match edit {
                            ColumnDefEdit::Strip { at, len } => {
                                (&payload[..at], &[], &payload[at + len..])
                            }
                            ColumnDefEdit::InsertEmpty { at } => {
                                (&payload[..at], &[0], &payload[at..])
                            }
                            ColumnDefEdit::Pass => (payload, &[], &[]),
                        };
                        // A column definition is far below the 16 MiB split.
                        let len = head.len() + pad.len() + rest.len();
                        c.wbuf.extend_from_slice(&[
                            len as u8,
                            (len >> 8) as u8,
                            (len >> 16) as u8,
                            seq,
                        ]);
                        c.wbuf.extend_from_slice(head);
                        c.wbuf.extend_from_slice(pad);
                        c.wbuf.extend_from_slice(rest);
                    }
                    run_start = pos + total;
                }
                match kind {
                    PacketKind::Err if pos == 0 && b.response_bytes == 0 => {
                        b.parse_error_only = decode_err(payload).is_ok_and(|e| {
                            e.code == crate::protocol::consts::err::ER_PARSE_ERROR.0
                        });
                    }
                    PacketKind::Ok => {
                        if let Ok(ok) = decode_ok(payload, b.capabilities) {
                            if ok.session_state.is_some()
                                || ok.status & SERVER_SESSION_STATE_CHANGED != 0
                            {
                                if let Some(block) = ok.session_state {
                                    // Whatever was pending is reported now.
                                    b.tracker_pending = false;
                                    let changes = b.session.apply_tracked(block);
                                    b.saw_unreplayable |= changes.unreplayable;
                                    b.discard_on_reset |= changes.survives_reset;
                                    b.saw_state_change |= changes.state_changed;
                                    b.state_applied += changes.applied;
                                    b.charset_changed |= changes.charset_changed;
                                    if changes.wait_timeout.is_some()
                                        || changes.interactive_timeout.is_some()
                                    {
                                        // The client's own; the backend
                                        // gets the global ones back.
                                        b.own_timeouts = true;
                                        if let Some(c) = c.as_mut() {
                                            c.timeouts.apply(&changes);
                                            timeouts_changed = true;
                                        }
                                    }
                                } else {
                                    b.saw_state_change = true;
                                }
                                if let Some(c) = c.as_mut() {
                                    c.wbuf.extend_from_slice(&data[run_start..pos]);
                                    let mut state = None;
                                    if let Some(block) = ok
                                        .session_state
                                        .filter(|_| c.capabilities & CLIENT_SESSION_TRACK != 0)
                                    {
                                        // mysqld reports the statement that
                                        // changes the settings under the new ones.
                                        c.track.update(block);
                                        self.track_buf.clear();
                                        if c.track
                                            .filter(
                                                block,
                                                &mut self.track_buf,
                                                &self.servers[track_server].track_order,
                                            )
                                            .is_ok_and(|n| n > 0)
                                        {
                                            state = Some(&self.track_buf[..]);
                                        }
                                    }
                                    let flag = if state.is_some() {
                                        SERVER_SESSION_STATE_CHANGED
                                    } else {
                                        0
                                    };
                                    let rewritten = OkPacket {
                                        status: (ok.status & !SERVER_SESSION_STATE_CHANGED) | flag,
                                        session_state: state,
                                        ..ok
                                    };
                                    self.scratch.clear();
                                    encode_ok(&mut self.scratch, &rewritten, c.capabilities);
                                    // An OK packet is far below the 16 MiB split.
                                    let len = self.scratch.len();
                                    c.wbuf.extend_from_slice(&[
                                        len as u8,
                                        (len >> 8) as u8,
                                        (len >> 16) as u8,
                                        seq,
                                    ]);
                                    c.wbuf.extend_from_slice(&self.scratch);
                                }
                                run_start = pos + total;
                            }
                            b.saw_warnings |= ok.warnings > 0;
                            b.last_affected_rows = ok.affected_rows;
                            if ok.last_insert_id != 0 {
                                b.last_insert_id = ok.last_insert_id;
                                if let Some(c) = c.as_mut() {
                                    c.last_insert_id = ok.last_insert_id;
                                }
                            }
                        }
                    }
                    PacketKind::Eof | PacketKind::MetadataEof => {
                        if let Ok(eof) = crate::protocol::response::decode_eof(payload) {
                            if eof.status & SERVER_SESSION_STATE_CHANGED != 0 {
                                b.saw_eof_state_change = true;
                                b.tracker_pending = true;
                            }
                            if kind == PacketKind::Eof {
                                b.saw_warnings |= eof.warnings > 0;
                            }
                        }
                    }
                    _ => {}
                }
                pos += total;
                match progress {
                    Progress::NeedMore => {}
                    Progress::Complete { status, end } => {
                        finished = Some((status, end));
                        break;
                    }
                    Progress::LocalInfile => {
                        infile = true;
                        break;
                    }
                }
            }
            if let Some(c) = c.as_mut() {
                c.wbuf.extend_from_slice(&data[run_start..pos]);
                c.bytes_out += pos as u64;
                if pos > 0 && c.sent.is_some() {
                    // The answer has started: the command cannot be sent again.
                    c.drop_sent();
                    self.bufs.release(&mut c.rbuf);
                }
            }
        }
        b.rbuf.consume(pos);
        if let Some((frame, status, end)) = refused {
            match self.make_stmt_room(key) {
                StmtRoom::Now => self.retry_prepare(key),
                StmtRoom::Wait => {}
                StmtRoom::None => {
                    // As mysqld said it.
                    let b = &mut self.backends[key];
                    b.response_bytes += frame.len() as u64;
                    if let Some(cr) = b.client {
                        if let Some(c) = self.clients.get_mut(cr.key) {
                            self.bufs.ensure(&mut c.wbuf);
                            c.wbuf.extend_from_slice(&frame);
                            c.bytes_out += frame.len() as u64;
                        }
                        self.flush_client(cr.key);
                    }
                    let b = &mut self.backends[key];
                    b.garbage_after_answer = !b.rbuf.is_empty();
                    self.finish_response(key, status, end);
                }
            }
            return;
        }
        b.response_bytes += pos as u64;
        let pool = b.pool;
        self.counters.bytes_to_clients += pos as u64;
        self.pools[pool].counters.bytes_to_clients += pos as u64;
        if let Some(reason) = error {
            self.backend_lost(key, reason);
            return;
        }
        if infile {
            b.infile = true;
        }
        // The session after the command: the backend's is the client's.
        if let Some(cr) = client {
            if !draining {
                if let Some(c) = self.clients.get_mut(cr.key) {
                    if c.serial == cr.serial {
                        c.session.copy_from(&b.session);
                    }
                }
            }
        }
        if let Some(cr) = client {
            if !draining {
                if timeouts_changed {
                    // A smaller wait_timeout may come due before the timer set.
                    self.arm_idle_timer(cr.key);
                }
                self.flush_client(cr.key);
            }
        }
        if infile {
            // The client now sends the file; its input is forwarded.
            if let Some(cr) = client {
                self.process_client_input(cr.key);
            }
        }
        if let Some((status, end)) = finished {
            // mysqld answers one command at a time: bytes after a complete
            // answer are no answer to anything. The backend goes once the
            // client's answer is settled, before a command pipelined behind
            // it could be sent there and take them for its own.
            let b = &mut self.backends[key];
            b.garbage_after_answer = !b.rbuf.is_empty();
            self.finish_response(key, status, end);
        }
    }

    /// A response is complete: update the client's session and pins, then
    /// decide what happens to the client and the backend.
    pub(super) fn finish_response(&mut self, key: usize, status: u16, end: EndKind) {
        let b = &mut self.backends[key];
        let pool = b.pool;
        let service = self.now.saturating_duration_since(b.sent_at);
        b.infile = false;
        b.prepare = None;
        let client = b.client;
        let draining = b.state == BackendState::Draining;
        let cmd = b.command;
        let buffered_whole =
            b.slow_reader == SlowReader::Buffering && client.is_some() && !draining;
        // COM_STMT_CLOSE / SEND_LONG_DATA have no answer, COM_STATISTICS no
        // status: neither says anything about the transaction.
        let has_status = end != EndKind::Other;
        let mut read_user_vars = false;
        let mut newly_dirty = false;
        if let Some(cr) = client.filter(|_| !draining) {
            if let Some(c) = self
                .clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial)
            {
                if c.sent.is_some() {
                    // A command without an answer (COM_STMT_SEND_LONG_DATA).
                    c.drop_sent();
                    self.bufs.release(&mut c.rbuf);
                }
                if end == EndKind::Err {
                    // An ERR carries no status flags. A transaction that was
                    // open stays open; with autocommit off, the failed
                    // statement may have opened one.
                    if c.session
                        .vars
                        .get("autocommit")
                        .is_some_and(|v| v.eq_ignore_ascii_case("OFF"))
                    {
                        c.pins.insert(PinCause::Transaction);
                    }
                } else if has_status {
                    c.last_status = status;
                    if status & SERVER_STATUS_IN_TRANS != 0 {
                        c.pins.insert(PinCause::Transaction);
                    } else {
                        c.pins.remove(PinCause::Transaction);
                    }
                }
                if matches!(cmd, COM_QUERY | COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE) {
                    c.row_count = match end {
                        EndKind::Ok => i64::try_from(b.last_affected_rows).unwrap_or(i64::MAX),
                        _ => -1,
                    };
                }
                if c.running_connect_db.is_some() && end == EndKind::Err {
                    // The schema given at login does not exist: the login fails.
                    c.close_after_flush = true;
                }
                // A statement's cursor is open from the execute that opens
                // it until the fetch that reads its last row, a reset, an
                // execute without one (mysqld closes the cursor of a
                // statement it runs again) or the statement's close. After
                // an ERR it is left as it was.
                if let Some(stmt) = c.current_stmt.filter(|_| end != EndKind::Err) {
                    match cmd {
                        COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => {
                            c.set_cursor_open(stmt, b.tracker.cursor_opened())
                        }
                        COM_STMT_FETCH if status & SERVER_STATUS_LAST_ROW_SENT != 0 => {
                            c.set_cursor_open(stmt, false)
                        }
                        COM_STMT_RESET => c.set_cursor_open(stmt, false),
                        _ => {}
                    }
                }
                match cmd {
                    // Long data lives in that backend's statement until the
                    // execute (or a reset) consumes it.
                    COM_STMT_SEND_LONG_DATA => c.pins.insert(PinCause::PreparedStatement),
                    COM_STMT_EXECUTE | COM_STMT_RESET => c.pins.remove(PinCause::PreparedStatement),
                    _ => {}
                }
                if end != EndKind::Err {
                    c.unreported_held =
                        (c.unreported_held & !c.unreported_released) | c.unreported_taken;
                    if c.unreported_held != 0 {
                        c.pins.insert(PinCause::Lock);
                    } else {
                        c.pins.remove(PinCause::Lock);
                    }
                }
                c.unreported_taken = 0;
                c.unreported_released = 0;
                if cmd == COM_INIT_DB && end == EndKind::Ok {
                    // The command's whole effect is the schema, whatever
                    // else the tracker says: take it from the command.
                    if let Some(schema) = b.init_db.take() {
                        self.pools[pool].schema_confirmed(&schema);
                        b.session.set_schema(Some(schema));
                        c.session.copy_from(&b.session);
                    }
                } else if cmd == COM_INIT_DB {
                    if let Some(schema) = b.init_db.take() {
                        self.pools[pool].known_schemas.remove(&schema);
                    }
                } else {
                    let facts = c.facts;
                    // "State changed" that no schema or variable change
                    // explains (or that may hide a user variable beside
                    // them): user variables, temporary tables, ...
                    let unexplained =
                        b.saw_state_change && (b.state_applied == 0 || facts.mentions_user_var);
                    let dirty = facts
                        .unproven
                        .filter(|_| !b.parse_error_only)
                        .or((b.saw_eof_state_change && !facts.set_statement)
                            .then_some("a stored program changed the session"))
                        .or((b.saw_state_change && facts.may_fire_triggers)
                            .then_some("a trigger changed the session"));
                    let clean_end = end != EndKind::Err && !b.saw_warnings;
                    // After this statement, the diagnostics area holds the
                    // client's warnings, which a read-back (it reads a
                    // table) would empty.
                    let holds_diagnostics = !clean_end
                        || (c.pins.contains(PinCause::Diagnostics) && !facts.clears_diagnostics);
                    if let Some(why) = dirty {
                        if !c.pins.contains(PinCause::Unproven) {
                            debug!(
                                "client {}: backend dirty ({why}); pinned until it leaves",
                                c.id
                            );
                        }
                        c.pins.insert(PinCause::Unproven);
                        newly_dirty = !b.dirty;
                        b.dirty = true;
                    } else if b.saw_unreplayable {
                        c.pins.insert(PinCause::SessionState);
                    } else if unexplained
                        || b.charset_changed
                        || facts.assigns_user_var
                        || facts.sets_insert_id
                    {
                        // Most often user variables, which the funnel reads
                        // back and replays (with the collation the tracker
                        // omits); what cannot be read back pins. While the
                        // client's warnings are on the backend (it keeps it
                        // meanwhile), the read-back waits for the statement
                        // that empties them.
                        if !matches!(cmd, COM_QUERY | COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE)
                            || (facts.opaque_state && unexplained)
                        {
                            c.pins.insert(PinCause::SessionState);
                        } else if holds_diagnostics {
                            c.read_back_pending = true;
                            c.read_back_insert_id |= facts.sets_insert_id;
                        } else {
                            read_user_vars = true;
                        }
                    }
                    if !clean_end {
                        // SHOW WARNINGS / SHOW ERRORS may follow: they must
                        // run here, and nobody else may see these. They
                        // last until a statement that empties the area.
                        c.pins.insert(PinCause::Diagnostics);
                        b.diagnostics_of = Some(cr.serial);
                    } else if facts.clears_diagnostics {
                        c.pins.remove(PinCause::Diagnostics);
                        b.diagnostics_of = None;
                        read_user_vars |= c.read_back_pending && dirty.is_none();
                    }
                }
                if c.wbuf.is_empty() {
                    let d = self.now.saturating_duration_since(c.command_read_at);
                    self.stats.end_to_end(pool, d, self.now);
                } else {
                    c.e2e_pending = true;
                }
            }
        }
        if newly_dirty {
            self.bump(pool, |c| c.dirty_backends += 1);
        }
        self.stats_service_time(pool, service);
        let b = &mut self.backends[key];
        if b.query_shape != 0 {
            self.stats
                .query_done(pool, b.query_shape, service, end == EndKind::Err);
        }
        if end == EndKind::Err {
            self.bump(pool, |c| c.backend_errors += 1);
        }
        if buffered_whole {
            self.bump(pool, |c| c.buffered_results += 1);
        }
        let b = &mut self.backends[key];
        if b.garbage_after_answer {
            // As if lost while idle: the client's answer is complete; a
            // session it held is gone, and it hears so at its next command.
            b.state = BackendState::Idle;
            self.backend_lost(key, "server sent bytes after a complete answer".into());
            return;
        }
        if b.kills_pending > 0 {
            b.state = BackendState::AwaitKill {
                read_back: read_user_vars,
                draining,
            };
            return;
        }
        self.after_response(key, read_user_vars, draining);
    }

    fn after_response(&mut self, key: usize, read_back: bool, draining: bool) {
        let b = &mut self.backends[key];
        if b.own_timeouts && !draining && b.client.is_some() {
            // A client's timeouts must not stay on a backend: mysqld would
            // close it when idle for the client's wait_timeout. (A backend
            // whose client left is reset, which restores them too.)
            b.read_back_after_restore = read_back;
            self.start_internal(
                key,
                Internal::RestoreTimeouts,
                RESTORE_TIMEOUTS_SQL.to_vec(),
            );
            return;
        }
        if read_back {
            let limited = ["max_statement_time", "max_join_size", "sql_select_limit"]
                .iter()
                .any(|v| self.backends[key].session.vars.contains_key(*v));
            let mut sql = Vec::with_capacity(USER_VARS_LIFT.len() + USER_VARS_SQL.len());
            if limited {
                sql.extend_from_slice(USER_VARS_LIFT);
            }
            sql.extend_from_slice(USER_VARS_SQL);
            self.start_internal(key, Internal::ReadUserVars, sql);
            return;
        }
        self.release_after_response(key, draining);
    }

    /// The last `KILL QUERY` against this connection has landed (or given
    /// up): carry on with what its response's end decided.
    pub(super) fn resume_after_kill(&mut self, key: usize) {
        let Some(b) = self.backends.get(key) else {
            return;
        };
        if let BackendState::AwaitKill {
            read_back,
            draining,
        } = b.state
        {
            if b.kills_pending == 0 {
                self.after_response(key, read_back, draining);
            }
        }
    }

    /// The client's command is over: the backend stays with the client
    /// (pinned), goes back to the pool, or is reset.
    fn release_after_response(&mut self, key: usize, draining: bool) {
        let b = &mut self.backends[key];
        // A big last packet may have paused it; the response is complete,
        // so nothing is left to hold back (the next answer must be read).
        b.paused = false;
        let pool = b.pool;
        let client = b.client;
        b.state = BackendState::Idle;
        let pins_now = client
            .filter(|_| !draining)
            .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
            .map(|c| c.pins);
        let p = &self.pools[pool];
        if !b.pinned
            && p.pinned >= p.pin_limit()
            && pins_now.is_some_and(|s| !s.is_empty() && s != PinSet::only(PinCause::Diagnostics))
        {
            // An idle client's warnings may make room for state that must
            // not be lost.
            self.revoke_diagnostics_pin(pool, key);
        }
        let b = &mut self.backends[key];
        match (client, pins_now) {
            (Some(cr), Some(pins)) if !pins.is_empty() => {
                // The client keeps this backend.
                if !b.pinned {
                    let p = &mut self.pools[pool];
                    if p.pinned >= p.pin_limit() && pins == PinSet::only(PinCause::Diagnostics) {
                        // Warnings are worth a pin only while one is free;
                        // they stay marked as this client's on the backend.
                        if let Some(c) = self.clients.get_mut(cr.key) {
                            c.pins.remove(PinCause::Diagnostics);
                        }
                        return self.release_after_response(key, draining);
                    }
                    if p.pinned >= p.pin_limit() {
                        // Over the cap: the state dies with a reset, and the
                        // client learns at its next command.
                        let limit = p.user.max_pinned_backends;
                        if let Some(c) = self.clients.get_mut(cr.key) {
                            c.drop_pins();
                            c.pending_error = Some((
                                crate::protocol::consts::err::ER_CON_COUNT_ERROR,
                                format!(
                                    "funnel: too many pinned clients in pool '{}' (max_pinned_backends = {limit}); your transaction or session state was discarded",
                                    p.name()
                                ),
                            ));
                            c.set_idle();
                        }
                        log_limited!(
                            self,
                            LogEvent::PinnedExhausted,
                            "pool {}: max_pinned_backends = {limit} reached; a client's session state was discarded",
                            p.name()
                        );
                        b.client = None;
                        self.reset_backend(key);
                        self.client_ready(cr.key);
                        return;
                    }
                    let connecting = b.connecting;
                    self.set_backend_role(key, true, connecting);
                }
                if let Some(c) = self.clients.get_mut(cr.key) {
                    c.pinned = Some(key);
                    c.set_idle();
                }
                // Statements let go of meanwhile go now, not with the
                // client's next command.
                self.write_stmt_closes_now(key);
                self.client_ready(cr.key);
                self.maintain_pool(pool);
            }
            (Some(cr), Some(_)) => {
                // Nothing holds the client to this backend any more.
                let mut closing = false;
                if let Some(c) = self.clients.get_mut(cr.key) {
                    c.pinned = None;
                    c.set_idle();
                    closing = c.close_after_flush;
                }
                b.client = None;
                self.backend_ready(key);
                if closing {
                    self.flush_client(cr.key);
                } else {
                    self.client_ready(cr.key);
                }
            }
            _ => {
                // The client left during the response: whatever the command
                // did to the session (a transaction, variables, locks) must
                // not reach the next client.
                b.client = None;
                self.end_pin(key);
                let b = &mut self.backends[key];
                if b.close_when_done {
                    self.close_backend(key);
                } else {
                    self.reset_backend(key);
                }
            }
        }
    }

    /// A step of the funnel's own before a client's command failed in a way
    /// that leaves the backend fine: the command is answered with the
    /// error instead of run. A backend the client holds pinned stays its
    /// (idle, before the client may send its next command); a shared one
    /// goes back to the pool.
    fn fail_before_command(&mut self, key: usize, code: (u16, &'static str), msg: &str) {
        let b = &mut self.backends[key];
        let client = b.client;
        let pinned_here = client
            .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
            .is_some_and(|c| c.pinned == Some(key));
        if pinned_here {
            b.state = BackendState::Idle;
        } else {
            b.client = None;
            self.backend_ready(key);
        }
        if let Some(cr) = client {
            self.fail_request(cr, code, msg);
        }
    }

    /// The client's command waited for a backend only for a step of the
    /// funnel's own: the backend goes back (to the pool, or idle with the
    /// client that holds it pinned) and the funnel handles the command.
    fn hand_back(&mut self, key: usize, client: ClientRef) {
        let pinned_here = self
            .clients
            .get(client.key)
            .is_some_and(|c| c.pinned == Some(key));
        let b = &mut self.backends[key];
        if pinned_here {
            b.state = BackendState::Idle;
        } else {
            b.client = None;
            self.backend_ready(key);
        }
        if let Some(c) = self.clients.get_mut(client.key) {
            c.awaiting_privileges = false;
            // Not set_idle: the command's sequence ids stay as they were.
            c.state = super::client::ClientState::Idle;
            self.handle_command(client.key);
        }
    }

    /// The client a step of the funnel's own ran for has left before its
    /// command: a backend it held pinned (or made dirty) carries its session
    /// and is reset; a shared one only had its tracked session replayed,
    /// which the backend's own view records, and goes back to the pool.
    fn release_orphan(&mut self, key: usize) {
        let b = &mut self.backends[key];
        b.client = None;
        if b.pinned || b.dirty || b.own_timeouts {
            self.end_pin(key);
            self.reset_backend(key);
        } else {
            self.backend_ready(key);
        }
    }

    /// A client of `pool` could be given a pinned backend now: the allowance
    /// has room, or an idle client's warnings hold one that can be taken
    /// back.
    pub(super) fn pin_available(&self, pool: usize) -> bool {
        let p = &self.pools[pool];
        p.pinned < p.pin_limit() || self.revocable_pin(pool, usize::MAX).is_some()
    }

    /// A pinned backend of `pool` (not `except`) that only an idle client's
    /// warnings hold, and that client: (backend, client key).
    fn revocable_pin(&self, pool: usize, except: usize) -> Option<(usize, usize)> {
        self.backends.iter().find_map(|(k, b)| {
            let cr = b.client?;
            let c = self.clients.get(cr.key).filter(|c| c.serial == cr.serial)?;
            (k != except
                && b.pool == pool
                && b.pinned
                && b.state == BackendState::Idle
                && !c.is_busy()
                && !c.read_back_pending
                && c.pins == PinSet::only(PinCause::Diagnostics))
            .then_some((k, cr.key))
        })
    }

    /// Take back one pinned backend of `pool` (not `except`) that only an
    /// idle client's warnings hold: they are lost (that client's next
    /// `SHOW WARNINGS` shows none), so that a transaction or a lock can
    /// have the pin.
    fn revoke_diagnostics_pin(&mut self, pool: usize, except: usize) {
        let Some((backend, client)) = self.revocable_pin(pool, except) else {
            return;
        };
        if let Some(c) = self.clients.get_mut(client) {
            c.pins.remove(PinCause::Diagnostics);
            c.pinned = None;
        }
        self.backends[backend].client = None;
        self.backend_ready(backend);
    }

    /// The idle client `key` holds a pinned backend but nothing pins it any
    /// more (it closed its last open cursor): the backend goes back to the
    /// pool as after a response.
    pub(super) fn unpin_if_free(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if !c.pins.is_empty() || c.is_busy() {
            return;
        }
        let Some(b) = c.pinned.take() else {
            return;
        };
        if let Some(bk) = self.backends.get_mut(b) {
            bk.client = None;
            if bk.state == BackendState::Idle {
                self.backend_ready(b);
            }
        }
    }

    /// Health check of an idle backend (taken out of the idle list).
    pub(super) fn ping_backend(&mut self, key: usize) {
        self.start_internal(key, Internal::Ping, Vec::new());
    }

    /// Bring the connection back to "no default schema" for the client
    /// whose command is about to run on it: `COM_CHANGE_USER` to the pool's
    /// own backend account, without a schema (then tracking is set up and
    /// the baseline checked, as after a reset, and the command goes on).
    fn unset_schema(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let user = &self.pools[b.pool].user;
        b.schema_unset_tried = true;
        b.schema_unset_at = self.now;
        // What the change-user clears, as a reset does.
        b.stmts.clear();
        b.prepare = None;
        b.last_insert_id = 0;
        b.session = SessionVars::new();
        b.diagnostics_of = None;
        let cu = ChangeUser {
            username: user.backend_user.clone(),
            auth_response: scramble_native(user.backend_password.as_bytes(), &b.scramble),
            database: None,
            charset: Some(u16::from(b.charset)),
            auth_plugin: Some(MYSQL_NATIVE_PASSWORD.to_string()),
        };
        let attrs = [
            ("_client_name".to_string(), "funnel".to_string()),
            (
                "_client_version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ];
        let mut payload = Vec::with_capacity(64 + cu.username.len());
        cu.encode(&mut payload, b.capabilities, &attrs);
        b.state = BackendState::Internal(Internal::ChangeUser);
        b.rows.clear();
        b.sent_at = self.now;
        self.send_to_backend(key, 0, &payload);
    }

    /// mysqld's answer to [`Server::unset_schema`]'s `COM_CHANGE_USER`.
    fn backend_change_user_reply(&mut self, key: usize, payload: &[u8], seq: u8) {
        match payload.first() {
            Some(&OK_HEADER) => {
                self.bump(self.backends[key].pool, |c| c.schema_unsets += 1);
                // The session is the account's fresh one: tracking is off
                // again, and the charset is the one the packet named.
                self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec());
            }
            Some(&AUTH_SWITCH_HEADER | &caching_sha2::AUTH_MORE_DATA) => {
                if let Err(msg) = self.answer_auth_request(key, payload, seq) {
                    self.internal_failed(key, Internal::ChangeUser, msg);
                }
            }
            Some(&ERR_HEADER) => {
                let msg = decode_err(payload)
                    .map(|e| format!("{} ({})", String::from_utf8_lossy(e.message), e.code))
                    .unwrap_or_else(|_| "malformed error".into());
                self.internal_failed(key, Internal::ChangeUser, msg);
            }
            _ => self.internal_failed(
                key,
                Internal::ChangeUser,
                "unexpected packet in answer to COM_CHANGE_USER".into(),
            ),
        }
    }

    /// `ROLLBACK` the transaction a departed client left on its backend,
    /// and give the variables it set their defaults back (in the same
    /// query when multi-statements are on, else right after it), so that
    /// the next new client, whose session is the default one, needs no
    /// replay here.
    fn end_transaction(&mut self, key: usize) {
        let b = &self.backends[key];
        let mut sql = ROLLBACK_SQL.to_vec();
        let restore = resting_session(&b.session)
            .replay_vars_sql(&b.session)
            .filter(|_| b.multi_statements);
        if let Some(set) = &restore {
            sql.extend_from_slice(b"; ");
            sql.extend_from_slice(set);
        }
        let step = Internal::Rollback {
            restore: restore.is_some(),
        };
        self.start_internal(key, step, sql);
    }

    /// The client that held this backend pinned is gone: the pin is over,
    /// and the connection counts among the pool's shared ones from now on
    /// (while it is reset or rolled back), so that `backend_ready` may keep
    /// it open for the next pinned client instead of closing it.
    fn end_pin(&mut self, key: usize) {
        let b = &self.backends[key];
        if b.pinned && b.relay.is_none() {
            let connecting = b.connecting;
            self.set_backend_role(key, false, connecting);
        }
    }

    /// The one place a backend's role in its pool changes (pinned or
    /// shared, connecting or not): the pool's counts follow. A `KILL QUERY`
    /// connection counts in no pool.
    pub(super) fn set_backend_role(&mut self, key: usize, pinned: bool, connecting: bool) {
        let b = &mut self.backends[key];
        if b.kill_query.is_none() {
            let p = &mut self.pools[b.pool];
            p.count_backend(b.pinned, b.connecting, false);
            p.count_backend(pinned, connecting, true);
        }
        b.pinned = pinned;
        b.connecting = connecting;
    }

    /// Return a backend's session to a clean state before anyone else uses it.
    pub(super) fn reset_backend(&mut self, key: usize) {
        let b = &mut self.backends[key];
        // The option survives COM_RESET_CONNECTION (it is a capability).
        b.client = None;
        b.stmts.clear();
        b.prepare = None;
        b.last_insert_id = 0;
        b.session = SessionVars::new();
        b.diagnostics_of = None;
        b.dirty = false;
        b.own_timeouts = false;
        if b.discard_on_reset {
            // Its profiling history would survive the reset.
            let pool = b.pool;
            self.close_backend(key);
            self.maintain_pool(pool);
            return;
        }
        self.start_internal(key, Internal::Reset, Vec::new());
    }

    /// The client that held this backend pinned has let go of it with its
    /// session (`COM_RESET_CONNECTION`, `COM_CHANGE_USER`): it is reset.
    pub(super) fn release_pinned(&mut self, key: usize) {
        self.release_pinned_as(key, false);
    }

    /// The client `c` that held this backend pinned has left: a `ROLLBACK`
    /// ends its session there when its pin was an open transaction and
    /// nothing else (`ends_with_rollback`); otherwise it is reset.
    pub(super) fn release_pinned_by(&mut self, key: usize, c: &super::client::Client) {
        let rollback = self
            .backends
            .get(key)
            .is_some_and(|b| ends_with_rollback(c, b));
        self.release_pinned_as(key, rollback);
    }

    fn release_pinned_as(&mut self, key: usize, rollback: bool) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        b.client = None;
        if b.state == BackendState::Idle && b.relay.is_some() {
            // A relayed login's connection is never anyone else's.
            b.relay = None;
            self.close_backend(key);
            return;
        }
        match b.state {
            BackendState::Idle => {
                self.end_pin(key);
                if rollback {
                    self.end_transaction(key);
                } else {
                    self.reset_backend(key);
                }
            }
            BackendState::Running => {
                b.state = BackendState::Draining;
                b.drain_started = self.now;
            }
            // Draining or internal steps: finish_response / internal_done
            // see that the client is gone.
            _ => {}
        }
    }

    /// Stop paying attention to a backend's output because the client's
    /// output queue is full, or resume when it has drained.
    pub(super) fn set_backend_paused(&mut self, key: usize, paused: bool) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        if b.paused == paused {
            return;
        }
        b.paused = paused;
        if !paused {
            self.actions.push(Action::ReadBackend {
                key,
                serial: b.serial,
            });
        }
    }

    /// Connection first (`max_buffered_result`): whether to go on reading
    /// backend `key` although the output pending for `client` passed
    /// output_high_watermark. Yes while that output stays within
    /// max_buffered_result and all output held this way within
    /// max_buffered_total; the first no falls back to the watermarks for
    /// the rest of the response, and is counted.
    pub(super) fn keep_reading_for_slow_reader(&mut self, key: usize, client: usize) -> bool {
        let limit = self.config.max_buffered_result;
        let (Some(b), Some(c)) = (self.backends.get_mut(key), self.clients.get_mut(client)) else {
            return false;
        };
        match (b.state, b.slow_reader) {
            (BackendState::Running, SlowReader::FellBack) => return false,
            // Memory first; and a pinned client would free nothing.
            (BackendState::Running, SlowReader::Watermarks) if limit == 0 || b.pinned => {
                return false
            }
            (BackendState::Running, _) => {}
            // The response is complete, buffered whole: the funnel's own
            // step after it (reading user variables back) adds no output.
            (_, SlowReader::Buffering) => return true,
            _ => return false,
        }
        let pending = c.wbuf.len();
        let others = self.buffered_total - c.buffered;
        if pending <= limit && others + pending <= self.config.max_buffered_total {
            b.slow_reader = SlowReader::Buffering;
            self.buffered_total = others + pending;
            c.buffered = pending;
            return true;
        }
        b.slow_reader = SlowReader::FellBack;
        let pool = b.pool;
        self.bump(pool, |c| c.buffered_fallbacks += 1);
        false
    }

    /// The backend connection broke or was found unusable.
    pub(super) fn backend_lost(&mut self, key: usize, reason: String) {
        let Some(b) = self.backends.get(key) else {
            return;
        };
        let pool = b.pool;
        let client = b.client;
        let state = b.state;
        let command = b.command;
        if b.kill_query.is_some() {
            log_limited!(
                self,
                LogEvent::BackendConnectFailed,
                "KILL QUERY connection failed: {reason}"
            );
            self.close_backend(key);
            return;
        }
        let connecting = b.connecting;
        if connecting {
            self.close_backend(key);
            self.backend_connect_failed(pool, reason);
            return;
        }
        let thread_id = b.thread_id;
        let forwarded = b.response_bytes > 0;
        // The running command was written, and none of it reached the
        // socket (an upload, which follows an answer, is never this).
        let unwritten =
            state == BackendState::Running && !b.infile && b.wbuf.len() >= b.command_len;
        // A KILL QUERY was asked for the running command: not run again.
        let kill_asked = b.killing == b.commands && b.commands > 0;
        let ready_at = b.ready_at;
        self.bump(pool, |c| c.backend_lost += 1);
        log_limited!(
            self,
            LogEvent::BackendLost,
            "pool {}: lost backend connection (thread {thread_id}): {reason}",
            self.pools[pool].name()
        );
        if let Some(cr) = client {
            // Still before or inside the client's command (not the funnel's
            // own read-back after it, when the answer is already complete).
            // A command without an answer (COM_STMT_CLOSE, long data) is
            // owed nothing: the client hears at its next command.
            let owes_answer = expect_for(command) != Expect::None;
            let in_command = matches!(
                state,
                BackendState::Running
                    | BackendState::Internal(
                        Internal::InitDb
                            | Internal::SetVars
                            | Internal::SetInsertId
                            | Internal::SetTimeouts
                            | Internal::AwaitCloses
                    )
            ) && (owes_answer || state != BackendState::Running);
            if let Some(c) = self
                .clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial)
            {
                let had_state = !c.pins.is_empty();
                let was_pinned = c.pinned.is_some();
                c.drop_pins();
                c.pinned = None;
                let msg = if had_state {
                    "funnel: lost connection to backend during query; the session's transaction and state are gone"
                } else {
                    "funnel: lost connection to backend during query"
                };
                let running = c.is_running();
                // Still in the client's buffer: the funnel was replaying the
                // session or preparing the statement; mysqld never saw it.
                let unsent = running && c.current.is_some();
                // Sent here (or being written), none of its answer forwarded.
                let awaiting =
                    running && c.sent.is_some() && state == BackendState::Running && !forwarded;
                let never_reached = unsent || (awaiting && unwritten);
                // It may have run, but running it again is running it once:
                // a plain read, in autocommit mode, with nothing of the
                // session on this backend alone.
                let repeatable = awaiting
                    && c.facts.safe_to_repeat
                    && !had_state
                    && !was_pinned
                    && !kill_asked
                    && c.last_status & SERVER_STATUS_IN_TRANS == 0
                    && !c
                        .session
                        .vars
                        .get("autocommit")
                        .is_some_and(|v| v.eq_ignore_ascii_case("OFF"));
                // Bounded: at most MAX_RETRIES_REACHED retries of a command
                // that may have reached a mysqld (a statement that crashes
                // mysqld must not crash it forever), counting only backends
                // set up since its last try (a crash kills every connection
                // at once: those that die with it tell nothing more), and
                // MAX_RETRIES in all.
                let reached = !never_reached && c.retried_at.is_none_or(|t| ready_at > t);
                let within_bound = c.retries < MAX_RETRIES
                    && (!reached || c.retries_reached < MAX_RETRIES_REACHED);
                if c.running_connect_db == Some(key) || (in_command && forwarded && running) {
                    // Mid-answer (or mid-login): no ERR can be placed in
                    // sequence; close, as a direct connection would be.
                    self.close_client(cr.key, msg);
                } else if ((never_reached && !had_state) || repeatable) && within_bound {
                    // Nothing ran (and nothing of the session was lost), or
                    // what ran may run again: another backend (or this
                    // mysqld, once back) can take the command.
                    if reached {
                        c.retries_reached += 1;
                    }
                    debug!(
                        "client {}: command {} after its backend was lost; retry {}",
                        c.id,
                        if never_reached {
                            "not sent"
                        } else {
                            "safe to repeat"
                        },
                        c.retries + 1
                    );
                    self.retry_current(cr.key);
                } else if (in_command || unsent) && running {
                    self.fail_request(cr, crate::protocol::consts::err::CR_SERVER_LOST, msg);
                } else {
                    if had_state {
                        c.pending_error = Some((
                            crate::protocol::consts::err::CR_SERVER_LOST,
                            "funnel: lost connection to backend; the session's transaction and state are gone".into(),
                        ));
                    }
                    if running {
                        c.set_idle();
                        self.client_ready(cr.key);
                    }
                }
            }
        }
        self.close_backend(key);
        self.maintain_pool(pool);
    }

    /// Remove a backend connection and fix the pool's counts.
    pub(super) fn close_backend(&mut self, key: usize) {
        if !self.backends.contains(key) {
            return;
        }
        let mut b = self.backends.remove(key);
        if b.conn != ConnId::NONE {
            self.actions.push(Action::CloseBackend { conn: b.conn });
        }
        if !b.close_waiters.is_empty() {
            // Its statements are gone with it.
            self.closes_done(&mut b.close_waiters);
        }
        if let Some(target) = b.kill_query {
            if let Some(t) = self
                .backends
                .get_mut(target.backend)
                .filter(|t| t.serial == target.serial)
            {
                t.kills_pending = t.kills_pending.saturating_sub(1);
                if t.kills_pending == 0 && matches!(t.state, BackendState::AwaitKill { .. }) {
                    self.deferred
                        .push(Deferred::ResumeAfterKill(target.backend, target.serial));
                }
            }
            return;
        }
        let p = &mut self.pools[b.pool];
        p.remove_idle(key);
        p.count_backend(b.pinned, b.connecting, false);
        let mut rbuf = b.rbuf;
        let mut wbuf = b.wbuf;
        rbuf.clear();
        wbuf.clear();
        self.bufs.release(&mut rbuf);
        self.bufs.release(&mut wbuf);
        if let Some(relay) = b.relay.take() {
            self.relay_backend_closed(key, *relay);
        }
    }
}

/// The session a connection rests in after `Internal::Rollback { restore:
/// true }`: `s`'s character set, results collation and schema (a client's
/// handshake and login give those), every other variable at its default.
fn resting_session(s: &SessionVars) -> SessionVars {
    let mut r = SessionVars::new();
    for name in CHARSET_VARS {
        if let Some(v) = s.vars.get(name) {
            r.set_var(name, v);
        }
    }
    r.set_results_collation(s.results_collation.clone());
    r.set_schema(s.schema.clone());
    r
}

/// Whether a `ROLLBACK` leaves the backend a client `c` held pinned as a
/// reset would, when that client leaves: its only pin is an open
/// transaction (no lock, temporary table or other state mysqld does not
/// report or the funnel cannot replay, no cursor, no long data, no warnings
/// kept for it, no unproven statement: the backend is not dirty), it has no
/// user variables (nor any waiting to be read back), and the connection
/// keeps none of the client's timeouts, profiling history or pending
/// tracker reports. What the session holds besides is what any shared
/// backend holds after a command: the tracked schema and session
/// variables, which the next client's replay turns into its own. Row locks
/// of the transaction (`FOR UPDATE`, `LOCK IN SHARE MODE`) go with the
/// `ROLLBACK`; table locks and `GET_LOCK` do not, and pin as locks.
fn ends_with_rollback(c: &super::client::Client, b: &Backend) -> bool {
    c.pins == PinSet::only(PinCause::Transaction)
        && !c.read_back_pending
        && c.unreported_held == 0
        && c.open_cursors.is_empty()
        && c.session.user_vars.is_empty()
        && b.session.user_vars.is_empty()
        && b.state == BackendState::Idle
        && b.relay.is_none()
        && !b.dirty
        && !b.own_timeouts
        && !b.discard_on_reset
        && !b.tracker_pending
        && !b.close_when_done
        && b.kills_pending == 0
}

/// Parse a text-protocol row into strings (NULL → None). Only used for the
/// funnel's own small queries.
/// How well an idle backend's session suits a client's (higher is better).
/// The same session needs no replay, the same schema no `COM_INIT_DB`. A
/// backend with a schema would cost a client without one a
/// `COM_CHANGE_USER`, the dearest step, so for such a client any backend
/// without a schema comes first; a client with a schema prefers a backend
/// with some schema, so that the ones without stay so for the clients that
/// need them.
fn session_score(backend: &SessionVars, fingerprint: u64, schema: Option<&str>) -> u32 {
    let same = backend.fingerprint() == fingerprint;
    let same_schema = same || backend.schema.as_deref() == schema;
    4 * u32::from(same_schema)
        + 2 * u32::from(same)
        + u32::from(backend.schema.is_some() == schema.is_some())
}

fn parse_text_row(payload: &[u8]) -> Vec<Option<String>> {
    let mut r = Reader::new(payload);
    let mut out = Vec::new();
    while !r.is_empty() {
        if payload.get(r.pos()) == Some(&0xfb) {
            let _ = r.u8();
            out.push(None);
            continue;
        }
        match r.lenenc_str() {
            Ok(s) => out.push(Some(String::from_utf8_lossy(s).into_owned())),
            Err(_) => break,
        }
    }
    out
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    u64::from_le_bytes(b)
}

pub(super) fn charset_vars() -> [&'static str; 4] {
    CHARSET_VARS
}

#[cfg(test)]
mod session_score_tests {
    use super::*;

    fn with_schema(schema: Option<&str>) -> SessionVars {
        let mut s = SessionVars::new();
        s.set_schema(schema.map(str::to_string));
        s
    }

    #[test]
    fn clients_keep_to_backends_of_their_kind() {
        let none = with_schema(None);
        let app = with_schema(Some("app"));
        let other = with_schema(Some("other"));
        let score = |b: &SessionVars, c: &SessionVars| {
            session_score(b, c.fingerprint(), c.schema.as_deref())
        };
        // Without a schema: any backend without one beats every backend
        // with one (that would cost a COM_CHANGE_USER).
        let mut none_vars = with_schema(None);
        none_vars.set_var("time_zone", "+01:00");
        assert!(score(&none_vars, &none) > score(&app, &none));
        assert!(score(&none, &none) > score(&none_vars, &none));
        // With a schema: its own, then some other schema, then none.
        assert!(score(&app, &app) > score(&other, &app));
        assert!(score(&other, &app) > score(&none, &app));
    }
}
