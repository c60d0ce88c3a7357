//! A scripted MySQL server for the simulation: answers the funnel's own
//! queries (session tracking setup, baseline, collations, user variables)
//! and clients' commands the way mysqld would, unless the script says to
//! misbehave for the next answer (errors, garbage, a dropped connection, a
//! stall, a big result, an unreplayable session change).
//!
//! Each connection also holds session state the funnel cannot see, owned
//! by a simulated client's tag, so that the simulation can check isolation
//! by what clients are told rather than by the funnel's own bookkeeping:
//!
//! - hidden state (`hidden_owner`), as stored programs and the like leave
//!   it: `CALL sim_p<t>()` and `EXECUTE IMMEDIATE 'sim<t>'` (an OK without
//!   any tracking information: a procedure can act silently), `SELECT
//!   sim_f<t>()` (a result whose EOF flags nothing, like a stored function
//!   taking a GET_LOCK), `SELECT sim_fs<t>()` (its EOF has
//!   SERVER_SESSION_STATE_CHANGED), `INSERT INTO sim_trig VALUES (<t>)`
//!   (an OK saying "state changed", as a trigger setting a user variable
//!   gives), `FLUSH TABLES WITH READ LOCK /* <t> */`, and the first four
//!   prepared and executed. `SHOW STATUS LIKE 'sim_owner'` (which the
//!   funnel can prove harmless) answers one row naming the owner, or none.
//!   Only COM_RESET_CONNECTION clears it.
//! - the diagnostics area (`warnings_owner`): `SELECT 1/0 AS w<t>` answers
//!   a row with one warning (`SELECT 1/0 AS w<t>; SELECT 1` two results,
//!   the warning counted in the first only, as mysqld counts each
//!   statement's own), `SELECT * FROM sim_missing<t>` an error;
//!   `SHOW WARNINGS` / `SHOW ERRORS` answer a row naming their owner (or
//!   none). As in mysqld, a statement without diagnostics that reads no
//!   table (`SELECT 1`) leaves them; one that uses a table (`FROM t`, DML), a
//!   `SHOW` other than of diagnostics, the funnel's `DO (SELECT 1 FROM
//!   information_schema.ENGINES LIMIT 0)`, any error (a failed prepare, an
//!   unknown statement id, a scripted error: naming its statement's tag, if
//!   any) and COM_RESET_CONNECTION replace or clear them. `SIGNAL SQLSTATE
//!   ...` (the funnel putting back an error of its own) answers that
//!   error, and leaves them nobody's.
//!
//! A reset or that `DO` still runs when the script gives it an odd answer
//! (anything but an error): the funnel may take such an answer for done.
//!
//! Rows naming an owner carry `sim-owner:<t>` (see [`OWNER_MARK`]).
//!
//! `SELECT SLEEP(n)` runs for `n` pumps (at most 64), and answers "0", or
//! "1" if a `KILL QUERY <thread>` from another connection reached it while
//! it ran (as MariaDB's SLEEP does). A KILL QUERY finding nothing running
//! does nothing: only the statement running when it arrives is stopped.
//!
//! `SELECT * FROM sim_slow<t>` (a plain read the funnel may pipeline)
//! runs for 4 pumps and answers a row naming `<t>` (or ERR 1317 if a KILL
//! QUERY reached it), so that commands sent behind it wait for it.
//!
//! Its connections are in-memory pipes ([`super::pipe`]): the
//! simulation's I/O layer opens one for each connect the funnel makes
//! ([`FakeMysqld::connect`]), which the script may refuse at once or
//! leave pending ([`ConnectFate`]); a mysqld that is `down` accepts and
//! drops the connection.
//!
//! Non-blocking and driven by `pump`; it never waits.

use std::collections::{HashMap, VecDeque};
use std::io::Write;

use super::pipe::{connecting, pipe, PipeEnd};
use super::{read_now, write_now};
use crate::protocol::consts::*;
use crate::protocol::handshake::HandshakeV10;
use crate::protocol::lenenc::write_lenenc_str;
use crate::protocol::packet::{next_frame, write_packet};
use crate::protocol::response::{
    encode_column_def, encode_eof, encode_err, encode_ok, encode_text_row, OkPacket, StmtPrepareOk,
};
use crate::protocol::session_track::{encode_state_change, StateChange};

/// How the next command is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// As mysqld would.
    Normal,
    Err,
    /// OK with a session-tracker entry the funnel cannot replay.
    Unreplayable,
    /// A result set of about 600 KiB (past the output watermarks).
    Big,
    /// Two result sets and an OK (SERVER_MORE_RESULTS_EXISTS).
    MultiResult,
    /// A packet that does not fit the response's framing.
    Garbage,
    /// Half a packet, then the connection closes.
    HalfThenClose,
    /// The connection closes without an answer (mysqld killed).
    Close,
    /// No answer until released.
    Stall,
}

/// What becomes of the next connection the funnel opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFate {
    /// Refused at once (ECONNREFUSED: nothing listens).
    Refuse,
    /// Left pending (a SYN into a black hole) until `behave`, or until the
    /// funnel gives up on it.
    Hang,
}

impl Answer {
    pub fn from_byte(b: u8) -> Answer {
        match b % 9 {
            0 => Answer::Normal,
            1 => Answer::Err,
            2 => Answer::Unreplayable,
            3 => Answer::Big,
            4 => Answer::MultiResult,
            5 => Answer::Garbage,
            6 => Answer::HalfThenClose,
            7 => Answer::Close,
            _ => Answer::Stall,
        }
    }
}

const CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_LOCAL_FILES
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF;

const UTF8MB4: u16 = 45;
const T_VAR_STRING: u8 = 0xfd;
/// Rows a cursor opened by COM_STMT_EXECUTE holds.
const CURSOR_ROWS: u32 = 3;

/// What rows naming a session state's owner carry before the owner's tag.
pub const OWNER_MARK: &[u8] = b"sim-owner:";

/// Pumps a `SELECT SLEEP(n)` may run at most.
const MAX_SLEEP: u32 = 64;

/// Queries kept in `FakeMysqld::queries`.
const MAX_QUERIES_LOGGED: usize = 64;

#[derive(Default)]
struct Statement {
    columns: u16,
    cursor_rows_left: u32,
    /// Its text, upper case (for the hidden state executing it leaves).
    sql: String,
}

/// A `SELECT SLEEP(n)` running.
struct Sleeping {
    /// Sequence id of its answer.
    seq: u8,
    /// Pumps until it ends.
    left: u32,
    /// A KILL QUERY reached it.
    interrupted: bool,
    /// A `SELECT * FROM sim_slow<t>`: its tag (a `SLEEP` otherwise).
    slow_read: Option<u32>,
}

struct Conn {
    stream: PipeEnd,
    input: Vec<u8>,
    output: Vec<u8>,
    logged_in: bool,
    /// Capabilities the funnel asked for.
    caps: u32,
    /// Reading a LOCAL INFILE upload: the sequence id of the next packet.
    infile_seq: Option<u8>,
    stalled: bool,
    closed: bool,
    in_trans: bool,
    autocommit: bool,
    user_var_set: bool,
    stmts: HashMap<u32, Statement>,
    next_stmt: u32,
    /// The connection id its greeting gave (the funnel's `thread_id`).
    thread: u32,
    /// The client tag whose hidden session state this connection holds.
    hidden_owner: Option<u32>,
    /// The client tag whose warnings or error the diagnostics area holds.
    warnings_owner: Option<u32>,
    sleeping: Option<Sleeping>,
}

pub struct FakeMysqld {
    /// Connections made and not yet accepted (the listen queue).
    backlog: VecDeque<PipeEnd>,
    /// Connects left pending (`ConnectFate::Hang`).
    hung: Vec<PipeEnd>,
    conns: Vec<Conn>,
    script: VecDeque<Answer>,
    /// What becomes of the next connects (then they are accepted).
    connect_script: VecDeque<ConnectFate>,
    /// Connects refused by the script.
    pub connects_refused: u64,
    /// Drops the connections it accepts (mysqld down; see `toggle_down`).
    pub down: bool,
    next_thread: u32,
    /// Commands answered, for the driver's progress checks.
    pub answered: u64,
    /// KILL QUERYs that stopped a running statement, and that found
    /// nothing running on their thread.
    pub kills_landed: u64,
    pub kills_missed: u64,
    /// `DO (SELECT 1 FROM information_schema.ENGINES LIMIT 0)` run.
    pub diagnostics_cleared: u64,
    /// COM_RESET_CONNECTIONs answered.
    pub resets: u64,
    /// COM_CHANGE_USERs answered (the funnel unsetting a schema).
    pub change_users: u64,
    /// mysqld's `max_prepared_stmt_count`: statements of all connections;
    /// a prepare past it gets ERR 1461.
    pub stmt_limit: usize,
    /// Prepares refused with ERR 1461.
    pub stmts_refused: u64,
    /// The latest queries run (`COM_QUERY`, upper case), with the thread
    /// that ran each.
    pub queries: VecDeque<(u32, String)>,
}

impl FakeMysqld {
    pub fn new() -> FakeMysqld {
        FakeMysqld {
            backlog: VecDeque::new(),
            hung: Vec::new(),
            conns: Vec::new(),
            script: VecDeque::new(),
            connect_script: VecDeque::new(),
            connects_refused: 0,
            down: false,
            next_thread: 100,
            answered: 0,
            kills_landed: 0,
            kills_missed: 0,
            diagnostics_cleared: 0,
            resets: 0,
            change_users: 0,
            // Below the funnel's own limit in the simulation (6): the
            // backends' cached copies must make room (the funnel retries
            // the prepare), and a client with more gets mysqld's ERR 1461.
            stmt_limit: 2,
            stmts_refused: 0,
            queries: VecDeque::new(),
        }
    }

    /// The funnel connects: its end of the connection, or the connect's
    /// error. As on a unix socket, a connect completes once it is in the
    /// listen queue, before `pump` accepts it.
    pub fn connect(&mut self) -> std::io::Result<PipeEnd> {
        match self.connect_script.pop_front() {
            Some(ConnectFate::Refuse) => {
                self.connects_refused += 1;
                Err(std::io::ErrorKind::ConnectionRefused.into())
            }
            Some(ConnectFate::Hang) => {
                let (funnel, mine) = connecting();
                self.hung.push(mine);
                Ok(funnel)
            }
            None => {
                let (funnel, mine) = pipe();
                self.backlog.push_back(mine);
                Ok(funnel)
            }
        }
    }

    /// mysqld goes down (or comes back up). Going down, it refuses the
    /// connects left pending: the host answers now, and nothing listens.
    pub fn toggle_down(&mut self) {
        self.down = !self.down;
        if self.down {
            for end in self.hung.drain(..) {
                end.refuse_connect();
            }
        }
    }

    /// The next connect the funnel makes meets this fate.
    pub fn script_connect(&mut self, fate: ConnectFate) {
        if self.connect_script.len() < 64 {
            self.connect_script.push_back(fate);
        }
    }

    /// Connects left pending now.
    #[cfg(test)]
    pub fn connects_pending(&self) -> usize {
        self.hung.len()
    }

    /// The tag of the client whose hidden session state the connection
    /// with this thread id holds.
    pub fn hidden_owner(&self, thread: u32) -> Option<u32> {
        self.conns
            .iter()
            .find(|c| c.thread == thread)
            .and_then(|c| c.hidden_owner)
    }

    /// The connection with this thread id has a transaction open.
    pub fn in_transaction(&self, thread: u32) -> bool {
        self.conns.iter().any(|c| c.thread == thread && c.in_trans)
    }

    /// The tag of the client whose diagnostics the connection holds.
    #[cfg(test)]
    pub fn warnings_owner(&self, thread: u32) -> Option<u32> {
        self.conns
            .iter()
            .find(|c| c.thread == thread)
            .and_then(|c| c.warnings_owner)
    }

    /// The next command any connection receives is answered this way.
    pub fn script(&mut self, a: Answer) {
        if self.script.len() < 64 {
            self.script.push_back(a);
        }
    }

    /// Back to answering like mysqld: no script, stalls answered, up,
    /// pending connects completed.
    pub fn behave(&mut self) {
        self.script.clear();
        self.connect_script.clear();
        for end in self.hung.drain(..) {
            end.accept_connect();
            self.backlog.push_back(end);
        }
        self.down = false;
        for c in &mut self.conns {
            c.stalled = false;
        }
    }

    /// Close the `which`-th live connection (as mysqld's KILL or a crash).
    pub fn kill(&mut self, which: u8) {
        let live: Vec<usize> = (0..self.conns.len())
            .filter(|&i| !self.conns[i].closed)
            .collect();
        if live.is_empty() {
            return;
        }
        let i = live[usize::from(which) % live.len()];
        self.conns[i].closed = true;
        let _ = self.conns[i].stream.shutdown(std::net::Shutdown::Both);
    }

    /// Accept, read, answer and write whatever can be done now.
    pub fn pump(&mut self) {
        // A pending connect the funnel gave up on is forgotten.
        self.hung.retain(|end| !end.peer_gone());
        while let Some(stream) = self.backlog.pop_front() {
            if self.down {
                continue; // dropped: the funnel sees the connection close
            }
            self.next_thread += 1;
            let mut conn = Conn {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                logged_in: false,
                caps: 0,
                infile_seq: None,
                stalled: false,
                closed: false,
                in_trans: false,
                autocommit: true,
                user_var_set: false,
                stmts: HashMap::new(),
                next_stmt: 1,
                thread: self.next_thread,
                hidden_owner: None,
                warnings_owner: None,
                sleeping: None,
            };
            let greeting = HandshakeV10 {
                server_version: "5.5.5-10.11.6-MariaDB-sim".into(),
                connection_id: self.next_thread,
                scramble: b"abcdefghijklmnopqrst".to_vec(),
                capabilities: CAPS,
                charset: UTF8MB4 as u8,
                status: SERVER_STATUS_AUTOCOMMIT,
                auth_plugin: MYSQL_NATIVE_PASSWORD.into(),
            };
            let mut payload = Vec::new();
            greeting.encode(&mut payload);
            write_packet(&mut conn.output, 0, &payload);
            self.conns.push(conn);
        }
        let mut i = 0;
        while i < self.conns.len() {
            self.pump_conn(i);
            if self.conns[i].closed && self.conns[i].output.is_empty() {
                self.conns.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn pump_conn(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.closed && !read_now(&mut c.stream, &mut c.input) {
            c.closed = true;
        }
        if let Some(s) = c.sleeping.as_mut() {
            if s.interrupted || s.left == 0 {
                let value: &[u8] = if s.interrupted { b"1" } else { b"0" };
                let seq = s.seq;
                let (slow_read, interrupted) = (s.slow_read, s.interrupted);
                c.sleeping = None;
                match slow_read {
                    Some(_) if interrupted => {
                        Reply::new(c, seq).err(1317, "70100", "Query execution was interrupted")
                    }
                    Some(tag) => {
                        Reply::new(c, seq).text_result(&["slow"], &[&[Some(&owner_value(tag))]], 0)
                    }
                    None => Reply::new(c, seq).text_result(&["SLEEP"], &[&[Some(value)]], 0),
                }
            } else {
                s.left -= 1;
            }
        }
        loop {
            let c = &mut self.conns[i];
            if c.closed || c.stalled || c.sleeping.is_some() {
                break;
            }
            let Some((header, payload)) = next_frame(&c.input) else {
                break;
            };
            let total = header.total_len();
            let payload = payload.to_vec();
            c.input.drain(..total);
            self.handle_packet(i, header.seq, &payload);
        }
        let c = &mut self.conns[i];
        if !write_now(&mut c.stream, &mut c.output) {
            c.closed = true;
            c.output.clear();
        }
    }

    fn handle_packet(&mut self, i: usize, seq: u8, payload: &[u8]) {
        let c = &mut self.conns[i];
        if !c.logged_in {
            c.logged_in = true;
            c.caps = payload
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            let mut r = Reply::new(c, seq.wrapping_add(1));
            r.ok(0, None);
            return;
        }
        if let Some(next) = c.infile_seq {
            if payload.is_empty() {
                c.infile_seq = None;
                let mut r = Reply::new(c, seq.wrapping_add(1));
                r.ok(1, None);
            } else {
                c.infile_seq = Some(next.wrapping_add(1));
            }
            return;
        }
        let Some(&cmd) = payload.first() else {
            return;
        };
        // Commands without an answer do not consume a scripted one.
        if matches!(cmd, COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA) {
            if cmd == COM_STMT_CLOSE {
                if let Some(id) = stmt_id(payload) {
                    c.stmts.remove(&id);
                }
            }
            return;
        }
        if cmd == COM_QUIT {
            c.closed = true;
            return;
        }
        let answer = self.script.pop_front().unwrap_or(Answer::Normal);
        self.answered += 1;
        let sql = if cmd == COM_QUERY {
            String::from_utf8_lossy(&payload[1..]).to_ascii_uppercase()
        } else {
            String::new()
        };
        // An executed statement empties the diagnostics area as the same
        // statement sent as a query does (a DML one: it uses a table).
        let executed = if matches!(cmd, COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE) {
            payload
                .get(1..5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .and_then(|id| self.conns[i].stmts.get(&id))
                .map(|st| st.sql.to_ascii_uppercase())
        } else {
            None
        };
        if cmd == COM_QUERY && answer != Answer::Stall {
            if self.queries.len() >= MAX_QUERIES_LOGGED {
                self.queries.pop_front();
            }
            self.queries.push_back((self.conns[i].thread, sql.clone()));
        }
        if !matches!(answer, Answer::Err | Answer::Stall) {
            // These ran, however odd the answer the script gives them.
            if cmd == COM_RESET_CONNECTION {
                self.resets += 1;
                self.conns[i].reset_session();
            }
            if cmd == COM_CHANGE_USER {
                // To the same account without a schema: a reset too.
                self.change_users += 1;
                self.conns[i].reset_session();
            }
            if sql.trim_start().starts_with(CLEAR_DIAGNOSTICS) {
                self.diagnostics_cleared += 1;
            }
            // A statement that uses a table empties the area when it starts,
            // whatever its answer (rows, a big result, ...).
            if empties_diagnostics(&sql) || executed.as_deref().is_some_and(empties_diagnostics) {
                self.conns[i].warnings_owner = None;
            }
        }
        if answer == Answer::Normal {
            if let Some(thread) = kill_query_target(&sql) {
                self.kill_query(i, seq.wrapping_add(1), thread);
                return;
            }
            if let Some(n) = digits_after(&sql, "SELECT SLEEP(") {
                self.conns[i].sleeping = Some(Sleeping {
                    seq: seq.wrapping_add(1),
                    left: n.min(MAX_SLEEP),
                    interrupted: false,
                    slow_read: None,
                });
                return;
            }
            if let Some(tag) = digits_after(&sql, "SELECT * FROM SIM_SLOW") {
                self.conns[i].sleeping = Some(Sleeping {
                    seq: seq.wrapping_add(1),
                    left: 4,
                    interrupted: false,
                    slow_read: Some(tag),
                });
                return;
            }
        }
        if cmd == COM_STMT_PREPARE && answer == Answer::Normal {
            let held: usize = self
                .conns
                .iter()
                .filter(|c| !c.closed)
                .map(|c| c.stmts.len())
                .sum();
            if held >= self.stmt_limit {
                self.stmts_refused += 1;
                let limit = self.stmt_limit;
                let mut r = Reply::new(&mut self.conns[i], seq.wrapping_add(1));
                r.err(
                    1461,
                    "42000",
                    &format!("Can't create more than max_prepared_stmt_count statements (current value: {limit})"),
                );
                return;
            }
        }
        let c = &mut self.conns[i];
        let mut r = Reply::new(c, seq.wrapping_add(1));
        match answer {
            Answer::Normal => r.normal(cmd, &payload[1..]),
            Answer::Err => {
                r.err(1064, "42000", "You have an error in your SQL syntax (sim)");
                // The error is what the diagnostics area holds now.
                r.conn.warnings_owner = diagnostics_tag(&sql).or_else(|| hidden_tag(&sql));
            }
            Answer::Unreplayable => {
                // An entry of a type the funnel does not know.
                let mut state = vec![0x20, 1, b'x'];
                encode_state_change(&mut state, &StateChange::StateChanged(true));
                r.ok(0, Some(&state));
            }
            Answer::Big => r.big_result(),
            Answer::MultiResult => {
                r.text_result(&["a"], &[&[Some(b"1")]], SERVER_MORE_RESULTS_EXISTS);
                r.text_result(&["b"], &[&[Some(b"2")]], SERVER_MORE_RESULTS_EXISTS);
                r.ok(0, None);
            }
            Answer::Garbage => {
                // A column count of 0xfc with no bytes after it.
                r.packet(&[0xfc]);
            }
            Answer::HalfThenClose => {
                r.conn.output.extend_from_slice(&[20, 0, 0, r.seq, 3, b'd']);
                r.conn.closed_after_write();
            }
            Answer::Close => {
                r.conn.closed = true;
                let _ = r.conn.stream.shutdown(std::net::Shutdown::Both);
            }
            Answer::Stall => {
                // Put the command back and wait for `behave`.
                r.conn.stalled = true;
                let mut again = Vec::new();
                write_packet(&mut again, seq, payload);
                again.extend_from_slice(&r.conn.input);
                r.conn.input = again;
                self.answered -= 1;
            }
        }
    }
}

impl FakeMysqld {
    /// `KILL QUERY thread` from connection `i`: stops the statement running
    /// on that thread now, if any.
    fn kill_query(&mut self, i: usize, seq: u8, thread: u32) {
        let target = self
            .conns
            .iter_mut()
            .find(|c| c.thread == thread && !c.closed);
        let found = target.is_some();
        match target.and_then(|t| t.sleeping.as_mut()) {
            Some(s) => {
                s.interrupted = true;
                self.kills_landed += 1;
            }
            None if found => self.kills_missed += 1,
            None => {}
        }
        let mut r = Reply::new(&mut self.conns[i], seq);
        if found {
            r.ok(0, None);
        } else {
            r.err(1094, "HY000", &format!("Unknown thread id: {thread}"));
        }
    }
}

/// What the funnel runs to empty a connection's diagnostics area (upper case).
const CLEAR_DIAGNOSTICS: &str = "DO (SELECT 1 FROM INFORMATION_SCHEMA.ENGINES LIMIT 0)";

/// As in mysqld (10.11): a statement (upper case) that uses a table, or a
/// SHOW other than of the diagnostics, empties the diagnostics area.
fn empties_diagnostics(text: &str) -> bool {
    let text = text.trim_start();
    let diagnostics_show = ["SHOW WARNINGS", "SHOW ERRORS", "SHOW COUNT"]
        .iter()
        .any(|p| text.starts_with(p));
    let dml = ["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD"]
        .iter()
        .any(|p| text.starts_with(p));
    dml || (text.starts_with("SHOW") && !diagnostics_show)
        || (text.contains(" FROM ") && !text.contains(" FROM DUAL"))
}

/// The decimal number right after `prefix` at the start of `sql` (upper
/// case, leading blanks skipped).
fn digits_after(sql: &str, prefix: &str) -> Option<u32> {
    let rest = sql.trim_start().strip_prefix(prefix)?;
    let end = rest
        .find(|ch: char| !ch.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `KILL QUERY n` (upper case): `n`.
fn kill_query_target(sql: &str) -> Option<u32> {
    digits_after(sql, "KILL QUERY ")
}

/// The client tag of a statement that leaves hidden session state.
fn hidden_tag(sql: &str) -> Option<u32> {
    [
        "CALL SIM_P",
        "EXECUTE IMMEDIATE 'SIM",
        "SELECT SIM_FS",
        "SELECT SIM_F",
        "INSERT INTO SIM_TRIG VALUES (",
        "FLUSH TABLES WITH READ LOCK /* ",
    ]
    .iter()
    .find_map(|p| digits_after(sql, p))
}

/// The client tag of a statement that leaves diagnostics.
fn diagnostics_tag(sql: &str) -> Option<u32> {
    digits_after(sql, "SELECT 1/0 AS W").or_else(|| digits_after(sql, "SELECT * FROM SIM_MISSING"))
}

/// A row value naming a state's owner.
fn owner_value(tag: u32) -> Vec<u8> {
    let mut v = OWNER_MARK.to_vec();
    v.extend_from_slice(tag.to_string().as_bytes());
    v
}

impl Conn {
    /// COM_RESET_CONNECTION: it releases everything the session held.
    fn reset_session(&mut self) {
        self.in_trans = false;
        self.autocommit = true;
        self.user_var_set = false;
        self.stmts.clear();
        self.hidden_owner = None;
        self.warnings_owner = None;
    }

    /// Write what is queued (best effort), then close.
    fn closed_after_write(&mut self) {
        let _ = self.stream.write(&self.output);
        self.output.clear();
        self.closed = true;
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn stmt_id(payload: &[u8]) -> Option<u32> {
    let b = payload.get(1..5)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// One response being written, with its running sequence id.
struct Reply<'a> {
    conn: &'a mut Conn,
    seq: u8,
    scratch: Vec<u8>,
}

impl<'a> Reply<'a> {
    fn new(conn: &'a mut Conn, seq: u8) -> Self {
        Reply {
            conn,
            seq,
            scratch: Vec::new(),
        }
    }

    fn packet(&mut self, payload: &[u8]) {
        self.seq = write_packet(&mut self.conn.output, self.seq, payload);
    }

    fn status(&self) -> u16 {
        let mut s = 0;
        if self.conn.autocommit {
            s |= SERVER_STATUS_AUTOCOMMIT;
        }
        if self.conn.in_trans {
            s |= SERVER_STATUS_IN_TRANS;
        }
        s
    }

    fn ok(&mut self, affected: u64, state: Option<&[u8]>) {
        let mut status = self.status();
        if state.is_some() {
            status |= SERVER_SESSION_STATE_CHANGED;
        }
        let ok = OkPacket {
            header: OK_HEADER,
            affected_rows: affected,
            last_insert_id: 0,
            status,
            warnings: 0,
            info: b"",
            session_state: state,
        };
        self.scratch.clear();
        encode_ok(&mut self.scratch, &ok, self.conn.caps);
        let p = std::mem::take(&mut self.scratch);
        self.packet(&p);
    }

    /// An error, which (as in mysqld, any command's: a failed prepare's, an
    /// unknown statement's) replaces what the diagnostics area held: it
    /// names nobody unless the caller then says whose it is.
    fn err(&mut self, code: u16, state: &str, msg: &str) {
        self.conn.warnings_owner = None;
        self.scratch.clear();
        encode_err(&mut self.scratch, code, state, msg);
        let p = std::mem::take(&mut self.scratch);
        self.packet(&p);
    }

    fn eof(&mut self, extra_status: u16) {
        self.eof_warnings(extra_status, 0);
    }

    fn eof_warnings(&mut self, extra_status: u16, warnings: u16) {
        let status = self.status() | extra_status;
        self.scratch.clear();
        encode_eof(&mut self.scratch, warnings, status);
        let p = std::mem::take(&mut self.scratch);
        self.packet(&p);
    }

    fn column_defs(&mut self, names: &[&str]) {
        for name in names {
            self.scratch.clear();
            encode_column_def(&mut self.scratch, name, T_VAR_STRING, UTF8MB4, 256, 0, 0);
            let p = std::mem::take(&mut self.scratch);
            self.packet(&p);
        }
    }

    /// The connection negotiated OK packets instead of EOFs.
    fn deprecate_eof(&self) -> bool {
        self.conn.caps & CLIENT_DEPRECATE_EOF != 0
    }

    fn end_of_rows(&mut self, extra_status: u16, warnings: u16) {
        if self.deprecate_eof() {
            // An OK that says "state changed" says which state.
            let mut state = Vec::new();
            if extra_status & SERVER_SESSION_STATE_CHANGED != 0 {
                encode_state_change(&mut state, &StateChange::StateChanged(true));
            }
            let ok = OkPacket {
                header: EOF_HEADER,
                affected_rows: 0,
                last_insert_id: 0,
                status: self.status() | extra_status,
                warnings,
                info: b"",
                session_state: (!state.is_empty()).then_some(&state[..]),
            };
            self.scratch.clear();
            encode_ok(&mut self.scratch, &ok, self.conn.caps);
            let p = std::mem::take(&mut self.scratch);
            self.packet(&p);
        } else {
            self.eof_warnings(extra_status, warnings);
        }
    }

    fn text_result(&mut self, names: &[&str], rows: &[&[Option<&[u8]>]], extra_status: u16) {
        self.text_result_warnings(names, rows, extra_status, 0);
    }

    fn text_result_warnings(
        &mut self,
        names: &[&str],
        rows: &[&[Option<&[u8]>]],
        extra_status: u16,
        warnings: u16,
    ) {
        self.packet(&[names.len() as u8]);
        self.column_defs(names);
        if !self.deprecate_eof() {
            self.eof(0);
        }
        for row in rows {
            self.scratch.clear();
            encode_text_row(&mut self.scratch, row);
            let p = std::mem::take(&mut self.scratch);
            self.packet(&p);
        }
        self.end_of_rows(extra_status, warnings);
    }

    fn big_result(&mut self) {
        self.packet(&[1]);
        self.column_defs(&["big"]);
        if !self.deprecate_eof() {
            self.eof(0);
        }
        let value = vec![b'x'; 60_000];
        for _ in 0..10 {
            self.scratch.clear();
            write_lenenc_str(&mut self.scratch, &value);
            let p = std::mem::take(&mut self.scratch);
            self.packet(&p);
        }
        self.end_of_rows(0, 0);
    }

    /// One binary-protocol row of one VARCHAR column.
    fn binary_row(&mut self, value: &[u8]) {
        self.scratch.clear();
        self.scratch.push(0); // header
        self.scratch.push(0); // NULL bitmap (offset 2): nothing NULL
        write_lenenc_str(&mut self.scratch, value);
        let p = std::mem::take(&mut self.scratch);
        self.packet(&p);
    }

    fn normal(&mut self, cmd: u8, arg: &[u8]) {
        match cmd {
            COM_QUERY => self.query(arg),
            COM_INIT_DB => {
                let mut state = Vec::new();
                encode_state_change(&mut state, &StateChange::Schema(arg));
                self.ok(0, Some(&state));
            }
            COM_FIELD_LIST => {
                self.column_defs(&["a", "b"]);
                self.eof(0);
            }
            COM_STATISTICS => self.packet(b"Uptime: 1  Threads: 1  Questions: 1"),
            COM_PROCESS_INFO => self.text_result(&["Id"], &[&[Some(b"1")]], 0),
            COM_RESET_CONNECTION => {
                self.conn.reset_session();
                self.ok(0, None);
            }
            COM_STMT_PREPARE => self.prepare(arg),
            COM_STMT_EXECUTE => self.execute(arg),
            COM_STMT_FETCH => self.fetch(arg),
            COM_STMT_RESET => {
                let id = arg
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                match id.and_then(|id| self.conn.stmts.get_mut(&id)) {
                    Some(st) => {
                        st.cursor_rows_left = 0;
                        self.ok(0, None);
                    }
                    None => self.err(1243, "HY000", "Unknown prepared statement handler"),
                }
            }
            _ => self.ok(0, None),
        }
    }

    fn query(&mut self, sql: &[u8]) {
        let text = String::from_utf8_lossy(sql).to_ascii_uppercase();
        let text = text.trim_start();
        if text.starts_with("SET SESSION SESSION_TRACK") {
            self.ok(0, None);
        } else if text.contains("@@CHARACTER_SET_CLIENT") {
            self.text_result(
                &["a", "b", "c", "d", "e", "clean"],
                &[&[
                    Some(b"utf8mb4"),
                    Some(b"utf8mb4"),
                    Some(b"utf8mb4"),
                    Some(b"utf8mb4_general_ci"),
                    None,
                    Some(b"1"),
                ]],
                0,
            );
        } else if text.contains("INFORMATION_SCHEMA.COLLATIONS") {
            self.text_result(
                &["ID", "CHARACTER_SET_NAME", "COLLATION_NAME"],
                &[
                    &[Some(b"8"), Some(b"latin1"), Some(b"latin1_swedish_ci")],
                    &[Some(b"33"), Some(b"utf8mb3"), Some(b"utf8mb3_general_ci")],
                    &[Some(b"45"), Some(b"utf8mb4"), Some(b"utf8mb4_general_ci")],
                    &[Some(b"63"), Some(b"binary"), Some(b"binary")],
                ],
                0,
            );
        } else if text.contains("INFORMATION_SCHEMA.USER_VARIABLES") {
            let collation: &[Option<&[u8]>] = &[
                Some(b" funnel:collation_connection"),
                Some(b"utf8mb4_general_ci"),
                Some(b"SYSVAR"),
                None,
            ];
            let var: &[Option<&[u8]>] = &[Some(b"a"), Some(b"1"), Some(b"INT"), None];
            let names = [
                "VARIABLE_NAME",
                "VARIABLE_VALUE",
                "VARIABLE_TYPE",
                "CHARACTER_SET_NAME",
            ];
            if self.conn.user_var_set {
                self.text_result(&names, &[var, collation], 0);
            } else {
                self.text_result(&names, &[collation], 0);
            }
        } else if let Some(tag) = hidden_tag(text) {
            self.conn.hidden_owner = Some(tag);
            if text.starts_with("SELECT SIM_FS") {
                self.text_result(&["f"], &[&[Some(b"1")]], SERVER_SESSION_STATE_CHANGED);
            } else if text.starts_with("SELECT") {
                self.text_result(&["f"], &[&[Some(b"1")]], 0);
            } else if text.starts_with("INSERT") {
                let mut state = Vec::new();
                encode_state_change(&mut state, &StateChange::StateChanged(true));
                self.ok(1, Some(&state));
            } else {
                self.ok(0, None);
            }
        } else if let Some(tag) = digits_after(text, "SELECT 1/0 AS W") {
            self.conn.warnings_owner = Some(tag);
            if text.contains(';') {
                // `SELECT 1/0 AS w<t>; SELECT 1`: the warning is the first
                // statement's; the last counts none of its own and, reading
                // no table, leaves it in the diagnostics area.
                self.text_result_warnings(&["w"], &[&[None]], SERVER_MORE_RESULTS_EXISTS, 1);
                self.text_result(&["1"], &[&[Some(b"1")]], 0);
            } else {
                self.text_result_warnings(&["w"], &[&[None]], 0, 1);
            }
        } else if let Some(tag) = digits_after(text, "SELECT * FROM SIM_MISSING") {
            self.err(
                1146,
                "42S02",
                &format!("Table 'sim.sim_missing{tag}' doesn't exist"),
            );
            self.conn.warnings_owner = Some(tag);
        } else if text.starts_with("SHOW WARNINGS") || text.starts_with("SHOW ERRORS") {
            let message = self.conn.warnings_owner.map(|t| {
                let mut m = b"Division by 0 (".to_vec();
                m.extend_from_slice(&owner_value(t));
                m.push(b')');
                m
            });
            let row: [Option<&[u8]>; 3] = [Some(b"Warning"), Some(b"1365"), message.as_deref()];
            let rows: &[&[Option<&[u8]>]] = if message.is_some() { &[&row] } else { &[] };
            self.text_result(&["Level", "Code", "Message"], rows, 0);
        } else if text.starts_with("SHOW STATUS LIKE 'SIM_OWNER'") {
            let value = self.conn.hidden_owner.map(owner_value);
            let row: [Option<&[u8]>; 2] = [Some(b"sim_owner"), value.as_deref()];
            let rows: &[&[Option<&[u8]>]] = if value.is_some() { &[&row] } else { &[] };
            self.text_result(&["Variable_name", "Value"], rows, 0);
        } else if text.starts_with(CLEAR_DIAGNOSTICS) {
            self.conn.warnings_owner = None;
            self.ok(0, None);
        } else if text.starts_with("BEGIN") || text.starts_with("START TRANSACTION") {
            self.conn.in_trans = true;
            self.ok(0, None);
        } else if text.starts_with("COMMIT") || text.starts_with("ROLLBACK") {
            self.conn.in_trans = false;
            self.ok(0, None);
        } else if let Some(schema) = text.strip_prefix("USE ") {
            let schema = schema.trim().to_ascii_lowercase();
            let mut state = Vec::new();
            encode_state_change(&mut state, &StateChange::Schema(schema.as_bytes()));
            self.ok(0, Some(&state));
        } else if text.starts_with("SET") && text.contains('@') && !text.contains("@@") {
            self.conn.user_var_set = true;
            let mut state = Vec::new();
            encode_state_change(&mut state, &StateChange::StateChanged(true));
            self.ok(0, Some(&state));
        } else if text.starts_with("SET AUTOCOMMIT") {
            self.conn.autocommit = text.ends_with('1') || text.ends_with("ON");
            let value: &[u8] = if self.conn.autocommit { b"ON" } else { b"OFF" };
            let mut state = Vec::new();
            encode_state_change(
                &mut state,
                &StateChange::SystemVariable {
                    name: b"autocommit",
                    value,
                },
            );
            self.ok(0, Some(&state));
        } else if text.starts_with("SET") {
            let mut state = Vec::new();
            encode_state_change(
                &mut state,
                &StateChange::SystemVariable {
                    name: b"sql_mode",
                    value: b"ANSI_QUOTES",
                },
            );
            self.ok(0, Some(&state));
        } else if text.starts_with("CREATE TEMPORARY") {
            let mut state = Vec::new();
            encode_state_change(&mut state, &StateChange::StateChanged(true));
            self.ok(0, Some(&state));
        } else if text.starts_with("LOAD DATA LOCAL") && self.conn.caps & CLIENT_LOCAL_FILES != 0 {
            self.conn.infile_seq = Some(self.seq.wrapping_add(1));
            self.packet(b"\xfb/tmp/sim-infile");
        } else if text.starts_with("SIGNAL SQLSTATE") {
            // The funnel's own error, put back in the diagnostics area
            // (nobody's tag: its message is the funnel's).
            let code = text
                .find("MYSQL_ERRNO = ")
                .and_then(|at| digits_after(&text[at..], "MYSQL_ERRNO = "))
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(1644);
            self.err(code, "HY000", "signalled");
            self.conn.warnings_owner = None;
        } else if text.starts_with("SELECT") || text.starts_with("SHOW") {
            self.text_result(&["1"], &[&[Some(b"1")]], 0);
        } else {
            self.ok(1, None);
        }
    }

    fn prepare(&mut self, sql: &[u8]) {
        let text = String::from_utf8_lossy(sql).to_ascii_uppercase();
        if text.contains("NO_SUCH_TABLE") {
            self.err(1146, "42S02", "Table 'sim.no_such_table' doesn't exist");
            return;
        }
        let params = sql.iter().filter(|&&b| b == b'?').count().min(8) as u16;
        let columns = u16::from(text.trim_start().starts_with("SELECT"));
        let id = self.conn.next_stmt;
        self.conn.next_stmt += 1;
        self.conn.stmts.insert(
            id,
            Statement {
                columns,
                cursor_rows_left: 0,
                sql: text.trim_start().to_string(),
            },
        );
        self.scratch.clear();
        StmtPrepareOk {
            statement_id: id,
            num_columns: columns,
            num_params: params,
            warnings: 0,
        }
        .encode(&mut self.scratch);
        let p = std::mem::take(&mut self.scratch);
        self.packet(&p);
        let deprecate = self.deprecate_eof();
        if params > 0 {
            let names: Vec<String> = (0..params).map(|i| format!("?{i}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            self.column_defs(&names);
            if !deprecate {
                self.eof(0);
            }
        }
        if columns > 0 {
            self.column_defs(&["c"]);
            if !deprecate {
                self.eof(0);
            }
        }
    }

    fn execute(&mut self, arg: &[u8]) {
        let id = arg
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let flags = arg.get(4).copied().unwrap_or(0);
        let Some(st) = id.and_then(|id| self.conn.stmts.get_mut(&id)) else {
            self.err(1243, "HY000", "Unknown prepared statement handler");
            return;
        };
        let hidden = hidden_tag(&st.sql);
        let stored_function_status = if st.sql.starts_with("SELECT SIM_FS") {
            SERVER_SESSION_STATE_CHANGED
        } else {
            0
        };
        let trigger = hidden.is_some() && st.sql.starts_with("INSERT");
        if hidden.is_some() {
            self.conn.hidden_owner = hidden;
        }
        let Some(st) = id.and_then(|id| self.conn.stmts.get_mut(&id)) else {
            return;
        };
        if st.columns == 0 {
            if trigger {
                let mut state = Vec::new();
                encode_state_change(&mut state, &StateChange::StateChanged(true));
                self.ok(1, Some(&state));
            } else {
                self.ok(1, None);
            }
            return;
        }
        let cursor = flags & 0x01 != 0; // CURSOR_TYPE_READ_ONLY
        if cursor {
            st.cursor_rows_left = CURSOR_ROWS;
        }
        self.packet(&[1]);
        self.column_defs(&["c"]);
        if cursor {
            // mysqld ends the metadata with an EOF either way and sends no rows.
            self.eof(SERVER_STATUS_CURSOR_EXISTS);
            return;
        }
        if !self.deprecate_eof() {
            self.eof(0);
        }
        self.binary_row(b"one");
        self.binary_row(b"two");
        self.end_of_rows(stored_function_status, 0);
    }

    fn fetch(&mut self, arg: &[u8]) {
        let id = arg
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let rows = arg
            .get(4..8)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(1);
        let Some(st) = id.and_then(|id| self.conn.stmts.get_mut(&id)) else {
            self.err(1243, "HY000", "Unknown prepared statement handler");
            return;
        };
        if st.cursor_rows_left == 0 {
            self.err(1421, "HY000", "The statement (sim) has no open cursor");
            return;
        }
        let n = rows.clamp(1, st.cursor_rows_left);
        st.cursor_rows_left -= n;
        let last = st.cursor_rows_left == 0;
        for _ in 0..n {
            self.binary_row(b"row");
        }
        let flag = if last {
            SERVER_STATUS_LAST_ROW_SENT
        } else {
            SERVER_STATUS_CURSOR_EXISTS
        };
        self.end_of_rows(flag, 0);
    }
}
