//! Backend connections: the funnel's own connections to mysqld.
//!
//! connecting → greeting → authenticating → internal steps (session tracking
//! setup, baseline) → idle ⇄ (replay steps →) running a client's command →
//! idle; pinned to one client while its session holds state; reset before
//! anyone else gets it; lost → reconnect with backoff.

mod dispatch;
mod forward;
mod internal;
mod login;
mod pipeline;
mod stmts;

#[cfg(any(test, feature = "fuzzing"))]
pub(in crate::server) use dispatch::DISPATCH_SCAN;
pub use pipeline::Pipelined;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::{debug, error, info};

use super::action::{Action, ConnId};
use super::client::OwnError;
use super::io::{Buf, ReadOutcome};
use super::log_limit::LogEvent;
use super::pool::ClientRef;
use super::processlist::PRIVILEGES_SQL;
use super::session::{
    is_client_charset, string_user_var_literal, unhex_name, user_var_literal, user_var_values_sql,
    Overwrites, PinCause, PinSet, SessionVars, UserVarRead,
};
use super::statement::{plain_set, statement_facts, PlainSet, SetNames};
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
    /// an open transaction and nothing else (see `ends_with_rollback`).
    Rollback,
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
    /// Put the funnel's own error the client was given in the diagnostics
    /// area (`OwnError::raise_sql`), before its `SHOW WARNINGS` (or the
    /// like) runs here. Ends with that error.
    RaiseOwnError,
    /// `SELECT FOUND_ROWS()`: the client's count, which only this backend
    /// had, before a step of the funnel's replaces it.
    ReadFoundRows,
    /// The same right after the client's statement that left it
    /// (`note_found_rows`), unless the user-variable read-back, which
    /// reads it too, follows.
    LearnFoundRows,
    /// Leave what `FOUND_ROWS()` and `ROW_COUNT()` say for the client here
    /// (`previous_counts_sql`), before its statement that reads them.
    SetPreviousCounts,
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

/// What the response to a client's command said so far: one value,
/// started afresh (`Default`) when the command is sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseRead {
    /// Session changes seen: mysqld said "state changed" (in an OK, with
    /// `state_applied` schema and variable changes the funnel applied), or
    /// said so in an EOF, whose details it sends only with a later OK.
    pub saw_state_change: bool,
    pub state_applied: usize,
    pub saw_eof_state_change: bool,
    pub saw_unreplayable: bool,
    /// A statement of the response reported warnings. Not only the last:
    /// mysqld counts each statement's own warnings in its OK or EOF, and a
    /// later statement that reads no table (`SELECT 1/0; SELECT 1`)
    /// reports none but leaves the earlier one's in the diagnostics area.
    pub saw_warnings: bool,
    /// The response is a parse error and nothing else: mysqld ran nothing
    /// of the query (it stops at a statement it cannot parse, and any
    /// earlier statement's result would have come first).
    pub parse_error_only: bool,
    /// A character-set variable changed: re-read collation_connection.
    pub charset_changed: bool,
    /// Rows of its last result set so far (what `FOUND_ROWS()` says after
    /// a `SELECT`), and whether it had one.
    pub rows: u64,
    pub result_set: bool,
    /// Bytes of it already forwarded to the client.
    pub bytes: u64,
    /// How it treats a slow client.
    pub slow_reader: SlowReader,
}

/// How the running response treats a client that reads it more slowly
/// than mysqld sends it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowReader {
    /// The watermarks decide: the client kept up so far, or memory first.
    #[default]
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
    /// Its server: the pool's entry (`Pool::servers[slot]`) and the
    /// engine's index (`Engine::servers[server]`).
    pub slot: usize,
    pub server: usize,
    /// Its socket in the I/O layer (`ConnId::NONE` until the connect
    /// has been carried out).
    pub conn: ConnId,
    /// A `FlushBackend` action is queued.
    pub flush_queued: bool,
    /// Changed only by `Engine::set_backend_state`.
    pub state: BackendState,
    /// What the response to the running client command said so far.
    pub response: ResponseRead,
    /// On its pool's idle list (kept by `sync_idle_listing`).
    pub idle_listed: bool,
    /// Counted in its server's `admission.running` (kept by `sync_running`).
    pub running_counted: bool,
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
    /// The session holds something `COM_RESET_CONNECTION` does not undo
    /// (the profiling history): closed instead of reset.
    pub discard_on_reset: bool,
    /// Affected rows of the current response's last OK packet.
    pub last_affected_rows: u64,
    /// The client (by serial) whose warnings or error this connection's
    /// diagnostics area may hold.
    pub diagnostics_of: Option<u64>,
    /// Which of the client's counts its current command found replayed
    /// here (`previous_counts_sql`): cleared as the command is sent.
    pub counts_replayed: u8,
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
    /// The running client command is a plain `SET` with `NAMES`
    /// (`statement::plain_set`): what it says of the collation, which
    /// mysqld's tracker does not report (`Engine::set_names_collation`).
    pub set_names: Option<SetNames>,
    /// The collation `SET NAMES cs` gives on this connection, per
    /// character set cs: the server's default for cs (or, on MariaDB 11.2+,
    /// its `character_set_collations` choice), as read back after one.
    /// Learnt per connection, forgotten when its session is set up again.
    pub names_defaults: Vec<(String, String)>,
    /// The read-back about to run follows a `SET NAMES cs` for this cs:
    /// what it finds goes to `names_defaults`.
    pub names_learn: Option<String>,
    /// The replay running before a client's plain `SET` leaves what the
    /// statement overwrites as it is (`SessionVars::replay_vars_sql_except`).
    pub replay_skip: Option<Overwrites>,
    /// The running client command is such a `SET`, and this backend's
    /// session differed from the client's in what it overwrites: the
    /// client takes the backend's session after its OK only (after an ERR
    /// nothing was set, and the client's own values stand).
    pub replay_skipped: bool,
    /// The running command is a stateless read (`Engine::pipelines`):
    /// others such may be sent behind it (`pipeline_depth` above 1).
    pub head_stateless: bool,
    /// A `KILL QUERY` for the running command waits until nothing is in
    /// flight behind it (`Engine::kill_running`).
    pub head_kill_deferred: bool,
    /// Commands sent behind the running one, oldest first: their answers
    /// follow its answer, in this order.
    pub pipeline: std::collections::VecDeque<Pipelined>,
    /// The head changed while its answer was being read: bytes already
    /// read may hold the next one's (`process_backend_input`).
    pub answer_switched: bool,
    /// The connection is TLS (its SSL request was sent).
    pub tls: bool,
    /// The login's handshake response, sent once the TLS handshake
    /// completed (`backend_tls_ready`).
    pub login_after_tls: Option<Vec<u8>>,
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
    /// `FOUND_ROWS()` there after it (the read-back, a `SELECT`, replaces
    /// it: a `SQL_CALC_FOUND_ROWS` count is learnt before it is lost).
    pub found_rows: Option<u64>,
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
@@global.session_track_system_variables, @@global.session_track_transaction_info, \
@@global.long_query_time";
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
/// Column of [`BASELINE_SQL`]: the server's global `long_query_time`
/// (`BackendServer::long_query_time`).
const BASELINE_LONG_QUERY_TIME: usize = 14;
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
/// Reads a client's count the backend holds (`ReadFoundRows`, `LearnFoundRows`).
const FOUND_ROWS_SQL: &[u8] = b"SELECT FOUND_ROWS()";
/// The most rows [`previous_counts_sql`] sends back to set `FOUND_ROWS()`.
const FOUND_ROWS_UNION_MAX: u64 = 1000;
/// The next step that makes this backend say what the client's own
/// previous statement left, for a statement of the client's that reads it
/// (not the funnel-answered `SELECT ROW_COUNT()` or `SELECT FOUND_ROWS()`):
/// `FOUND_ROWS()` (the client's count of its last `SELECT`'s rows, when
/// the funnel knows it) and `ROW_COUNT()` (-1 or 0; an affected-rows
/// count is left by nothing without a table, so that one is exact only
/// when nothing else ran on the client's backend since its statement).
/// `done` tells which of the two have been left already.
///
/// `FOUND_ROWS() = n`: a `SELECT SQL_CALC_FOUND_ROWS ... LIMIT 0` of
/// `DUAL` for 0 and 1; `n` times `SELECT 1` joined by `UNION ALL` up to
/// [`FOUND_ROWS_UNION_MAX`] (its rows come back; a `LIMIT` of its own
/// keeps the client's `sql_select_limit` out); beyond, a `SELECT
/// SQL_CALC_FOUND_ROWS` over a recursive common table expression of `n`
/// rows with `LIMIT 0`. No table, no schema needed; each leaves
/// `ROW_COUNT()` -1. The last empties the diagnostics area, so not for a
/// statement that reads that too while the client has warnings or an
/// error there (checked on MariaDB 10.11).
/// `ROW_COUNT() = 0`:
/// `DO 0`; `= -1`: a `SELECT` of no row, which keeps the diagnostics area
/// (checked on MariaDB 10.11), but sets `FOUND_ROWS()` to 0.
pub(super) fn previous_counts_sql(
    c: &crate::server::client::Client,
    done: &mut u8,
) -> Option<Vec<u8>> {
    const FOUND: u8 = 1;
    const ROWS: u8 = 2;
    let f = &c.facts;
    let found_known = c.found_rows != crate::server::client::FOUND_ROWS_ON_BACKEND;
    let keeps_diagnostics = f.reads_diagnostics
        && (c
            .pins
            .contains(crate::server::session::PinCause::Diagnostics)
            || c.own_error.is_some());
    let n = c.found_rows;
    if f.reads_found_rows
        && found_known
        && (n <= FOUND_ROWS_UNION_MAX || !keeps_diagnostics)
        && *done & FOUND == 0
    {
        *done |= FOUND | (ROWS * u8::from(c.row_count == -1));
        return Some(match n {
            0 => b"SELECT SQL_CALC_FOUND_ROWS 1 FROM DUAL WHERE 0 LIMIT 0".to_vec(),
            1 => b"SELECT SQL_CALC_FOUND_ROWS 1 FROM DUAL LIMIT 0".to_vec(),
            2..=FOUND_ROWS_UNION_MAX => {
                let mut sql = b"SELECT 1".to_vec();
                for _ in 1..n {
                    sql.extend_from_slice(b" UNION ALL SELECT 1");
                }
                // Its own LIMIT: a client's sql_select_limit would cut the
                // count too (`SET STATEMENT` would leave the tracker a
                // change to report, cleared by a `SET` that sets ROW_COUNT()).
                sql.extend_from_slice(format!(" LIMIT {n}").as_bytes());
                sql
            }
            _ => format!(
                "WITH RECURSIVE funnel_rows(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM funnel_rows WHERE n < {n}) SELECT SQL_CALC_FOUND_ROWS n FROM funnel_rows LIMIT 0"
            )
            .into_bytes(),
        });
    }
    if f.reads_row_count && *done & ROWS == 0 {
        *done |= ROWS;
        match c.row_count {
            0 => return Some(b"DO 0".to_vec()),
            // Not over a count of FOUND_ROWS() left just before, nor one
            // only the backend has.
            -1 if *done & FOUND == 0 && found_known => {
                return Some(b"SELECT 1 FROM DUAL WHERE 0".to_vec())
            }
            _ => {}
        }
    }
    None
}

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
/// `FOUND_ROWS()` comes first: in a later part of a `UNION` it counts the
/// rows of the parts before it (MariaDB 10.11).
const USER_VARS_SQL: &[u8] = b"SELECT ' funnel:found_rows', FOUND_ROWS(), 'SYSVAR', NULL \
UNION ALL SELECT VARIABLE_NAME, VARIABLE_VALUE, VARIABLE_TYPE, CHARACTER_SET_NAME FROM information_schema.USER_VARIABLES \
UNION ALL SELECT ' funnel:collation_connection', @@collation_connection, 'SYSVAR', NULL \
UNION ALL SELECT ' funnel:last_insert_id', LAST_INSERT_ID(), 'SYSVAR', NULL";
const COLLATION_ROW: &str = " funnel:collation_connection";
const INSERT_ID_ROW: &str = " funnel:last_insert_id";
const FOUND_ROWS_ROW: &str = " funnel:found_rows";
const CHARSET_VARS: [&str; 4] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];
/// Session variables that choose the collation `SET NAMES cs` gives
/// (MariaDB 11.2+, MySQL 8): a session that set one has its `SET NAMES`
/// read back.
const NAMES_CHOOSERS: [&str; 2] = ["character_set_collations", "default_collation_for_utf8mb4"];

impl Engine {
    /// The server a backend connection is to.
    pub(super) fn server_of(&self, key: usize) -> usize {
        self.backends.get(key).map_or(0, |b| b.server)
    }

    /// Open one more backend connection for a pool, to its server `slot`.
    pub(super) fn open_backend(&mut self, pool: usize, slot: usize, pinned: bool) {
        self.open_backend_for(pool, slot, pinned, None);
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
        let slot = b.slot;
        let before = self.backends.len();
        self.open_backend_for(pool, slot, false, Some(target));
        if self.backends.len() > before {
            // Until this killer is gone, the target is handed to nobody,
            // so its KILL cannot land on someone else's statement.
            let b = &mut self.backends[backend];
            b.kills_pending += 1;
            b.killing = b.commands;
        }
    }

    fn open_backend_for(
        &mut self,
        pool: usize,
        slot: usize,
        pinned: bool,
        kill_query: Option<KillTarget>,
    ) {
        let serial = self.next_serial();
        let entry = self.backends.vacant_entry();
        let key = entry.key();
        let server = self.pools[pool].servers[slot].server;
        self.actions.push(Action::Connect {
            key,
            serial,
            addr: self.servers[server].address.clone(),
        });
        entry.insert(Backend {
            serial,
            pool,
            slot,
            server,
            conn: ConnId::NONE,
            flush_queued: false,
            state: BackendState::Connecting,
            idle_listed: false,
            running_counted: false,
            response: ResponseRead::default(),
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
            infile: false,
            upload: UploadFramer::default(),
            drain_started: self.now,
            rows: Vec::new(),
            rows_charset: None,
            baseline_results: None,
            tracker_pending: false,
            command: 0,
            sent_at: self.now,
            discard_on_reset: false,
            last_affected_rows: 0,
            diagnostics_of: None,
            counts_replayed: 0,
            kills_pending: 0,
            killing: 0,
            dirty: false,
            garbage_after_answer: false,
            seq_offset: 0,
            close_when_done: false,
            connecting: true,
            query_shape: 0,
            last_insert_id: 0,
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
            set_names: None,
            names_defaults: Vec::new(),
            names_learn: None,
            replay_skip: None,
            replay_skipped: false,
            head_stateless: false,
            head_kill_deferred: false,
            pipeline: std::collections::VecDeque::new(),
            answer_switched: false,
            tls: false,
            login_after_tls: None,
        });
        if kill_query.is_some() {
            let at = self.now + self.config.backend.connect_timeout;
            self.add_timer(at, TimerKind::BackendConnect { key, serial });
            return;
        }
        self.pools[pool].count_backend(slot, pinned, true, true);
        self.bump(pool, |c| c.backend_connects += 1);
        let at = self.now + self.config.backend.connect_timeout;
        self.add_timer(at, TimerKind::BackendConnect { key, serial });
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

    fn backend_connect_failed(&mut self, pool: usize, slot: usize, reason: String) {
        self.bump(pool, |c| c.backend_connect_failures += 1);
        let min = self.config.backend.reconnect_backoff_min;
        let max = self.config.backend.reconnect_backoff_max;
        let p = &mut self.pools[pool];
        let Some(ps) = p.servers.get_mut(slot) else {
            return;
        };
        ps.backoff = if ps.backoff.is_zero() {
            min
        } else {
            (ps.backoff * 2).min(max)
        };
        // Jitter (up to a quarter of the delay) so that many funnels do not
        // hammer a restarting mysqld in lockstep.
        let jitter = ps.backoff.as_micros() as u64 / 4;
        let jitter = if jitter > 0 { random_u64() % jitter } else { 0 };
        ps.next_connect_at = self.now + ps.backoff + Duration::from_micros(jitter);
        let (server, backoff) = (ps.server, ps.backoff);
        if p.last_backend_error.as_deref() != Some(reason.as_str()) {
            let srv = &self.servers[server];
            log_limited!(
                self,
                LogEvent::BackendConnectFailed,
                "pool {}: backend {}{} unavailable: {reason}; retrying in {} ms",
                p.name(),
                srv.address,
                server_label(srv),
                backoff.as_millis()
            );
        }
        let h = &mut self.servers[server].health;
        h.last_error = Some(reason.clone());
        h.connect_failures += 1;
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
            while let Some(&b) = self.pools[pool].idle().last() {
                self.close_backend(b);
            }
        }
        self.close_idle_extras(pool);
        self.close_idle_out_of_rotation(pool);
        for slot in 0..self.pools[pool].servers.len() {
            let ps = &self.pools[pool].servers[slot];
            if !self.servers[ps.server].in_rotation() {
                continue;
            }
            let missing = self.pools[pool].missing_shared_on(slot);
            if missing == 0 || self.now < ps.next_connect_at {
                continue;
            }
            // While mysqld is failing, probe with one connection at a time.
            let n = if ps.backoff.is_zero() { missing } else { 1 };
            let n = n.saturating_sub(if ps.backoff.is_zero() {
                0
            } else {
                ps.connecting
            });
            for _ in 0..n {
                self.open_backend(pool, slot, false);
            }
        }
    }

    /// Idle connections to a server out of rotation (down, lagging,
    /// removed) or no longer the pool's are closed: none is handed a
    /// command there, and a server that comes back gets fresh ones.
    fn close_idle_out_of_rotation(&mut self, pool: usize) {
        let p = &self.pools[pool];
        // Runs on every pass: nothing to look for (nor allocate) while all
        // the pool's servers take commands.
        if p.servers
            .iter()
            .all(|s| !s.removed && self.servers[s.server].in_rotation())
        {
            return;
        }
        let leaving: Vec<usize> = p
            .idle()
            .iter()
            .copied()
            .filter(|&k| {
                self.backends.get(k).is_some_and(|b| {
                    !self.servers[b.server].in_rotation() || p.servers[b.slot].removed
                })
            })
            .collect();
        for k in leaving {
            self.close_backend(k);
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
            if p.shared <= p.capacity() {
                return;
            }
            let backends = &self.backends;
            let oldest = p
                .idle()
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
                self.set_backend_state(key, BackendState::AwaitGreeting);
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
                    // closed. With commands pipelined, they are the answer
                    // of the next command in flight, now the head.
                    let leftover = self.backends.get_mut(key).is_some_and(|b| {
                        let switched = std::mem::take(&mut b.answer_switched);
                        (switched
                            || !matches!(b.state, BackendState::Running | BackendState::Draining))
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

    /// Health check of an idle backend (taken out of the idle list).
    pub(super) fn ping_backend(&mut self, key: usize) {
        self.start_internal(key, Internal::Ping, Vec::new());
    }

    /// The one place a backend's role in its pool changes (pinned or
    /// shared, connecting or not): the pool's counts follow. A `KILL QUERY`
    /// connection counts in no pool.
    pub(super) fn set_backend_role(&mut self, key: usize, pinned: bool, connecting: bool) {
        let b = &mut self.backends[key];
        if b.kill_query.is_none() {
            let p = &mut self.pools[b.pool];
            p.count_backend(b.slot, b.pinned, b.connecting, false);
            p.count_backend(b.slot, pinned, connecting, true);
        }
        b.pinned = pinned;
        b.connecting = connecting;
        sync_idle_listing(b, key, &mut self.pools, self.now);
    }

    /// Every change of a backend's state goes through here, so that the
    /// pool's idle list cannot drift from it (see `sync_idle_listing`).
    pub(super) fn set_backend_state(&mut self, key: usize, state: BackendState) {
        if let Some(b) = self.backends.get_mut(key) {
            let was_idle = matches!(b.state, BackendState::Idle);
            b.state = state;
            sync_idle_listing(b, key, &mut self.pools, self.now);
            if was_idle != matches!(b.state, BackendState::Idle) && b.client.is_some() {
                sync_running(b, &mut self.servers, &mut self.deferred);
            }
        }
    }

    /// The backend now runs (or is held for) this client's command, or is
    /// held by it pinned: the one place `Backend::client` is set.
    pub(super) fn attach_backend_client(&mut self, key: usize, client: ClientRef) {
        if let Some(b) = self.backends.get_mut(key) {
            let had_none = b.client.is_none();
            if had_none {
                self.servers[b.server].in_use += 1;
            }
            b.client = Some(client);
            sync_idle_listing(b, key, &mut self.pools, self.now);
            if had_none && !matches!(b.state, BackendState::Idle) {
                sync_running(b, &mut self.servers, &mut self.deferred);
            }
        }
    }

    /// The backend serves no client any more: the one place
    /// `Backend::client` is cleared.
    pub(in crate::server) fn detach_backend_client(&mut self, key: usize) {
        if let Some(b) = self.backends.get_mut(key) {
            let had_one = b.client.take().is_some();
            if had_one {
                let s = &mut self.servers[b.server];
                s.in_use = s.in_use.saturating_sub(1);
            }
            sync_idle_listing(b, key, &mut self.pools, self.now);
            if had_one && !matches!(b.state, BackendState::Idle) {
                sync_running(b, &mut self.servers, &mut self.deferred);
            }
        }
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
            let slot = b.slot;
            self.close_backend(key);
            self.backend_connect_failed(pool, slot, reason);
            return;
        }
        let thread_id = b.thread_id;
        let forwarded = b.response.bytes > 0;
        // The running command was written, and none of it reached the
        // socket (an upload, which follows an answer, is never this). With
        // commands pipelined behind it, the buffer's length says nothing
        // of its own bytes: taken as written.
        let unwritten = state == BackendState::Running
            && !b.infile
            && b.pipeline.is_empty()
            && b.wbuf.len() >= b.command_len;
        // A KILL QUERY was asked for the running command: not run again.
        let kill_asked = b.killing == b.commands && b.commands > 0;
        let ready_at = b.ready_at;
        // Nothing more is sent behind its commands (a retry below
        // dispatches).
        self.backends[key].head_stateless = false;
        self.bump(pool, |c| c.backend_lost += 1);
        let server = self.backends[key].server;
        self.servers[server].health.lost += 1;
        log_limited!(
            self,
            LogEvent::BackendLost,
            "pool {}: lost backend connection (thread {thread_id}): {reason}",
            self.pools[pool].name()
        );
        // With named servers, which one went, and why.
        let srv = &self.servers[self.backends[key].server];
        let cause = if srv.role == crate::config::ServerRole::Any {
            String::new()
        } else {
            format!(" (server {}: {reason})", srv.name)
        };
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
                    format!("funnel: lost connection to backend{cause} during query; the session's transaction and state are gone")
                } else {
                    format!("funnel: lost connection to backend{cause} during query")
                };
                let msg = msg.as_str();
                let running = c.is_running();
                // Still in the client's buffer: the funnel was replaying the
                // session or preparing the statement; mysqld never saw it.
                let unsent = running && c.current().is_some();
                // Sent here (or being written), none of its answer forwarded.
                let awaiting =
                    running && c.sent().is_some() && state == BackendState::Running && !forwarded;
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
                    && !c.session.autocommit_off();
                // Bounded: at most MAX_RETRIES_REACHED retries of a command
                // that may have reached a mysqld (a statement that crashes
                // mysqld must not crash it forever), counting only backends
                // set up since its last try (a crash kills every connection
                // at once: those that die with it tell nothing more), and
                // MAX_RETRIES in all.
                let (retries, retries_reached, retried_at) =
                    c.in_flight.map_or((0, 0, None), |f| {
                        (f.retries, f.retries_reached, f.retried_at)
                    });
                let reached = !never_reached && retried_at.is_none_or(|t| ready_at > t);
                let within_bound =
                    retries < MAX_RETRIES && (!reached || retries_reached < MAX_RETRIES_REACHED);
                if c.running_connect_db == Some(key) || (in_command && forwarded && running) {
                    // Mid-answer (or mid-login): no ERR can be placed in
                    // sequence; close, as a direct connection would be.
                    self.close_client(cr.key, msg);
                } else if ((never_reached && !had_state) || repeatable) && within_bound {
                    // Nothing ran (and nothing of the session was lost), or
                    // what ran may run again: another backend (or this
                    // mysqld, once back) can take the command.
                    if let Some(f) = c.in_flight.as_mut().filter(|_| reached) {
                        f.retries_reached += 1;
                    }
                    debug!(
                        "client {}: command {} after its backend was lost; retry {}",
                        c.id,
                        if never_reached {
                            "not sent"
                        } else {
                            "safe to repeat"
                        },
                        retries + 1
                    );
                    self.retry_current(cr.key);
                } else if (in_command || unsent) && running {
                    self.fail_request(cr, crate::protocol::consts::err::CR_SERVER_LOST, msg);
                } else {
                    if had_state {
                        c.own_error = Some(OwnError::due(
                            crate::protocol::consts::err::CR_SERVER_LOST,
                            format!("funnel: lost connection to backend{cause}; the session's transaction and state are gone"),
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
        let behind = std::mem::take(&mut b.pipeline);
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
        if b.idle_listed {
            p.unlist_idle(key, b.slot);
        }
        p.count_backend(b.slot, b.pinned, b.connecting, false);
        if b.client.is_some() {
            let s = &mut self.servers[b.server];
            s.in_use = s.in_use.saturating_sub(1);
        }
        b.client = None;
        sync_running(&mut b, &mut self.servers, &mut self.deferred);
        let mut rbuf = b.rbuf;
        let mut wbuf = b.wbuf;
        rbuf.clear();
        wbuf.clear();
        self.bufs.release(&mut rbuf);
        self.bufs.release(&mut wbuf);
        if let Some(relay) = b.relay.take() {
            self.relay_backend_closed(key, *relay);
        }
        if !behind.is_empty() {
            self.requeue_pipelined(behind, b.ready_at, key);
        }
    }
}

/// A backend is on its pool's idle list exactly when it is idle, shared and
/// serves nobody; called after each change of those (state, role, client:
/// `Engine::set_backend_state`, `set_backend_role`, `attach_backend_client`,
/// `detach_backend_client`), so the list follows them. Listed last: most
/// recently used.
// Inlined: it runs at every state, role and client change, several times
// per query, and mostly finds nothing to do.
#[inline]
fn sync_idle_listing(b: &mut Backend, key: usize, pools: &mut [super::pool::Pool], now: Instant) {
    let free = b.kill_query.is_none()
        && matches!(b.state, BackendState::Idle)
        && !b.pinned
        && b.client.is_none();
    if free != b.idle_listed {
        b.idle_listed = free;
        let pool = &mut pools[b.pool];
        if free {
            b.idle_since = now;
            pool.list_idle(key, b.slot);
        } else {
            pool.unlist_idle(key, b.slot);
        }
    }
    debug_assert_eq!(
        pools[b.pool].idle().contains(&key),
        b.idle_listed,
        "backend {key}'s idle listing drifted"
    );
}

/// Keep the server's count of running backends (`Admission::running`) in
/// step with the backend: it runs while it serves a client and is not idle
/// (a pinned client's backend between its commands does not run). Its
/// callers call it only when one of the two changed (it showed in the
/// instructions per query otherwise). When
/// room frees up on a server some pool waits for, a pass of turns is
/// deferred (`Engine::serve_turns`): never run from inside a handler.
#[inline]
fn sync_running(
    b: &mut Backend,
    servers: &mut [super::backend_server::BackendServer],
    deferred: &mut Vec<Deferred>,
) {
    let runs =
        b.client.is_some() && !matches!(b.state, BackendState::Idle) && b.kill_query.is_none();
    if runs != b.running_counted {
        count_running(b, runs, servers, deferred);
    }
}

/// The change of [`sync_running`], out of its (inlined) check.
fn count_running(
    b: &mut Backend,
    runs: bool,
    servers: &mut [super::backend_server::BackendServer],
    deferred: &mut Vec<Deferred>,
) {
    b.running_counted = runs;
    let Some(server) = servers.get_mut(b.server) else {
        return;
    };
    let a = &mut server.admission;
    if runs {
        a.running += 1;
    } else {
        a.running = a.running.saturating_sub(1);
        if a.defer_turns() {
            deferred.push(Deferred::ServerTurns(b.server));
        }
    }
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

/// ` (server NAME)` after a server's address in log lines, when servers are
/// named in the configuration.
pub(in crate::server) fn server_label(
    server: &crate::server::backend_server::BackendServer,
) -> String {
    if server.role == crate::config::ServerRole::Any {
        String::new()
    } else {
        format!(" (server {})", server.name)
    }
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
