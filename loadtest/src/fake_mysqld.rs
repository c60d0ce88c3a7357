//! `loadtest --fake-server ADDR`: a minimal mysqld that answers at once, so
//! that whatever sits in front of it (the funnel) is the bottleneck, not the
//! database. Any login is accepted; `SELECT` gets one row, every other
//! statement an OK (see [`answer_query`]). One mio event loop per thread
//! (`--fake-threads`, each with its own SO_REUSEPORT listening socket), no
//! thread per connection; buffers are per connection and reused, so a
//! query costs no allocation.
//!
//! Commands read in one go (pipelined) are all answered, in one write.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Socket, Type};

use funnel::protocol::consts::*;
use funnel::protocol::handshake::{is_ssl_request, HandshakeResponse, HandshakeV10};
use funnel::protocol::lenenc::write_lenenc_str;
use funnel::protocol::packet::{next_frame, write_packet};
use funnel::protocol::response::{
    column_type, encode_column_def, encode_eof, encode_err, encode_ok, OkPacket, StmtPrepareOk,
};
use funnel::protocol::session_track::{encode_state_change, StateChange};

/// The version the greeting announces: MariaDB's form, as the funnel's
/// backends usually are.
pub const SERVER_VERSION: &str = "5.5.5-10.11.6-MariaDB-fake";
/// What `@@version` and `VERSION()` answer.
const VERSION: &[u8] = b"10.11.6-MariaDB-fake";
/// Collation of the greeting and of string columns: utf8mb4_general_ci.
const COLLATION_ID: u8 = 45;
/// What `MAX(...)` and `COUNT(...)` answer: loadtest's preflight reads the
/// table size from `SELECT MAX(id) FROM sbtest1`.
pub const TABLE_ROWS: &[u8] = b"10000";
/// A column that is not a known expression gets sysbench's `c` shape:
/// 119 characters.
const C_VALUE: &[u8] =
    b"68487932199-96439406143-93774651418-41631865787-96406072701-20604855487-25459966574-28203206787-41238978918-19503783441";

/// What the greeting offers. MariaDB's and MySQL's usual set, without TLS
/// and LOCAL INFILE, which the fake does not do. CLIENT_LONG_PASSWORD set
/// (the CLIENT_MYSQL bit): no MariaDB extended capabilities.
const SERVER_CAPS: u32 = CLIENT_LONG_PASSWORD
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
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF;

/// Past this much unsent output a connection is not read until it drains.
const OUTPUT_HIGH_WATER: usize = 1 << 20;
const READ_CHUNK: usize = 64 * 1024;
const LISTENER: Token = Token(usize::MAX);
/// How often a loop looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Listening sockets for `threads` event loops on `addr`, all bound with
/// SO_REUSEPORT so that the kernel spreads connections over them (port 0:
/// the first one's port for all).
pub fn bind(addr: SocketAddr, threads: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut listeners = Vec::new();
    for _ in 0..threads.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        let l: std::net::TcpListener = s.into();
        addr = l.local_addr()?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Serves with one event loop per listener (from [`bind`]) until `stop`
/// is set.
pub fn serve(listeners: Vec<std::net::TcpListener>, stop: Arc<AtomicBool>) -> io::Result<()> {
    let conn_ids = Arc::new(AtomicU32::new(1));
    let mut listeners = listeners.into_iter().map(TcpListener::from_std);
    let Some(first) = listeners.next() else {
        return Ok(());
    };
    let handles: Vec<_> = listeners
        .map(|l| {
            let (stop, ids) = (stop.clone(), conn_ids.clone());
            std::thread::spawn(move || run_loop(l, &stop, &ids))
        })
        .collect();
    let result = run_loop(first, &stop, &conn_ids);
    // Ended by an error: the other loops end too.
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        match h.join() {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::other("a fake server thread panicked")),
        }
    }
    result
}

fn run_loop(mut listener: TcpListener, stop: &AtomicBool, conn_ids: &AtomicU32) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(STOP_CHECK)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns, conn_ids);
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let mut alive = true;
            if ev.is_writable() && !c.output.is_empty() {
                alive = c.flush();
            }
            let resume = c.read_paused && c.output.len() < OUTPUT_HIGH_WATER;
            if alive && (ev.is_readable() || ev.is_read_closed() || ev.is_error() || resume) {
                alive = c.read_and_answer(&mut chunk) && c.flush();
            }
            if !alive {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
    Ok(())
}

/// Accepts what is waiting. A failure (out of file descriptors, a
/// connection reset before accept) loses that connection only.
fn accept_all(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>, conn_ids: &AtomicU32) {
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                eprintln!("fake server: accept: {e}");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let entry = conns.vacant_entry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = poll
            .registry()
            .register(&mut stream, Token(entry.key()), interest)
        {
            eprintln!("fake server: cannot poll a new connection: {e}");
            continue;
        }
        let id = conn_ids.fetch_add(1, Ordering::Relaxed);
        let key = entry.key();
        let c = entry.insert(Conn::new(stream, id));
        c.greet();
        if !c.flush() {
            let mut c = conns.remove(key);
            let _ = poll.registry().deregister(&mut c.stream);
        }
    }
}

/// A prepared statement: its text, whose select list is answered at each
/// execute.
struct Statement {
    sql: Vec<u8>,
    columns: u16,
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Payload being built (reused).
    scratch: Vec<u8>,
    /// A session-state block being built (reused).
    state: Vec<u8>,
    /// Capabilities agreed at login; None before.
    caps: Option<u32>,
    id: u32,
    /// The connection id as text, for `CONNECTION_ID()`.
    id_text: Vec<u8>,
    user: Vec<u8>,
    schema: Option<Vec<u8>>,
    stmts: HashMap<u32, Statement>,
    next_stmt: u32,
    /// The socket had more to read when output passed the high water.
    read_paused: bool,
}

impl Conn {
    fn new(stream: TcpStream, id: u32) -> Self {
        Conn {
            stream,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(4096),
            scratch: Vec::with_capacity(512),
            state: Vec::new(),
            caps: None,
            id,
            id_text: id.to_string().into_bytes(),
            user: Vec::new(),
            schema: None,
            stmts: HashMap::new(),
            next_stmt: 1,
            read_paused: false,
        }
    }

    fn greet(&mut self) {
        // The fake checks no password: any scramble will do.
        let scramble: Vec<u8> = (0..20u32)
            .map(|i| (self.id.wrapping_mul(31).wrapping_add(i * 7) % 94 + 33) as u8)
            .collect();
        HandshakeV10 {
            server_version: SERVER_VERSION.into(),
            connection_id: self.id,
            scramble,
            capabilities: SERVER_CAPS,
            charset: COLLATION_ID,
            status: SERVER_STATUS_AUTOCOMMIT,
            auth_plugin: MYSQL_NATIVE_PASSWORD.into(),
        }
        .encode(&mut self.scratch);
        write_packet(&mut self.output, 0, &self.scratch);
    }

    /// Writes what is pending; false if the connection is gone.
    fn flush(&mut self) -> bool {
        let mut sent = 0;
        while sent < self.output.len() {
            match self.stream.write(&self.output[sent..]) {
                Ok(0) => return false,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.output.drain(..sent);
        true
    }

    /// Reads all there is (edge-triggered), answering each complete
    /// command; false if the connection is to be closed.
    fn read_and_answer(&mut self, chunk: &mut [u8]) -> bool {
        if self.read_paused && self.output.len() >= OUTPUT_HIGH_WATER {
            return true;
        }
        self.read_paused = false;
        loop {
            match self.stream.read(chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    if !self.answer_input() {
                        return false;
                    }
                    // A short read emptied the socket: data arriving later
                    // is a new edge. Saves the read that would say EAGAIN.
                    if n < chunk.len() && self.output.len() < OUTPUT_HIGH_WATER {
                        return true;
                    }
                    if self.output.len() >= OUTPUT_HIGH_WATER {
                        if !self.flush() {
                            return false;
                        }
                        if self.output.len() >= OUTPUT_HIGH_WATER {
                            // Resumed when a writable event drains it.
                            self.read_paused = true;
                            return true;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Answers every complete packet in `input`; false to close.
    fn answer_input(&mut self) -> bool {
        let input = std::mem::take(&mut self.input);
        let mut pos = 0;
        let mut open = true;
        while let Some((h, payload)) = next_frame(&input[pos..]) {
            pos += h.total_len();
            if h.is_continued() {
                // A command of 16 MiB or more: not for this fake.
                open = false;
                break;
            }
            open = match self.caps {
                None => self.login(h.seq, payload),
                Some(caps) => self.command(caps, payload),
            };
            if !open {
                break;
            }
        }
        self.input = input;
        self.input.drain(..pos);
        open
    }

    /// The handshake response: any user, any password, any plugin is let in.
    fn login(&mut self, seq: u8, payload: &[u8]) -> bool {
        let seq = seq.wrapping_add(1);
        if is_ssl_request(payload) {
            Reply::new(self, seq, 0).err(1043, "08S01", "the fake server does not do TLS");
            return false;
        }
        let resp = match HandshakeResponse::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                Reply::new(self, seq, 0).err(1043, "08S01", &format!("bad handshake: {e}"));
                return false;
            }
        };
        let caps = resp.capabilities & SERVER_CAPS;
        self.user = resp.username.into_bytes();
        self.schema = resp.database.map(String::into_bytes);
        self.caps = Some(caps);
        Reply::new(self, seq, caps).ok(0, None);
        true
    }

    /// One command; false to close the connection.
    fn command(&mut self, caps: u32, payload: &[u8]) -> bool {
        let Some((&cmd, arg)) = payload.split_first() else {
            return false;
        };
        match cmd {
            COM_QUIT => return false,
            COM_QUERY => self.query(caps, arg),
            COM_PING => Reply::new(self, 1, caps).ok(0, None),
            COM_INIT_DB => self.set_schema(caps, arg),
            COM_RESET_CONNECTION => {
                // Statements and session go; the schema stays, as in mysqld.
                self.stmts.clear();
                Reply::new(self, 1, caps).ok(0, None);
            }
            COM_CHANGE_USER => {
                let cu = funnel::protocol::change_user::decode_change_user(payload, caps);
                let Ok(cu) = cu else {
                    Reply::new(self, 1, caps).err(1047, "08S01", "malformed COM_CHANGE_USER");
                    return false;
                };
                self.user = cu.username.into_bytes();
                self.schema = cu.database.map(String::into_bytes);
                self.stmts.clear();
                Reply::new(self, 1, caps).ok(0, None);
            }
            // mysqld answers it with an EOF (an OK with CLIENT_DEPRECATE_EOF).
            COM_SET_OPTION => Reply::new(self, 1, caps).eof(),
            COM_STMT_PREPARE => self.prepare(caps, arg),
            COM_STMT_EXECUTE => self.execute(caps, arg),
            COM_STMT_CLOSE => {
                if let Some(id) = stmt_id(arg) {
                    self.stmts.remove(&id);
                }
            }
            COM_STMT_SEND_LONG_DATA => {}
            COM_STMT_RESET => match stmt_id(arg).filter(|id| self.stmts.contains_key(id)) {
                Some(_) => Reply::new(self, 1, caps).ok(0, None),
                None => unknown_stmt(self, caps),
            },
            COM_STMT_FETCH => {
                Reply::new(self, 1, caps).err(1421, "HY000", "no open cursor (fake server)")
            }
            // An empty field list.
            COM_FIELD_LIST => Reply::new(self, 1, caps).eof(),
            COM_STATISTICS => {
                let mut r = Reply::new(self, 1, caps);
                r.scratch
                    .extend_from_slice(b"Uptime: 1  Threads: 1  Questions: 1");
                r.send();
            }
            _ => Reply::new(self, 1, caps).err(1047, "08S01", "Unknown command"),
        }
        true
    }

    fn set_schema(&mut self, caps: u32, name: &[u8]) {
        let schema = self.schema.get_or_insert_with(Vec::new);
        schema.clear();
        schema.extend_from_slice(name);
        self.state.clear();
        encode_state_change(&mut self.state, &StateChange::Schema(name));
        let state = std::mem::take(&mut self.state);
        Reply::new(self, 1, caps).ok(0, Some(&state));
        self.state = state;
    }

    fn query(&mut self, caps: u32, sql: &[u8]) {
        let sql = skip_space_and_comments(sql);
        if starts_with_word(sql, b"USE") {
            let name = trim(&sql[3..]);
            let name = name
                .strip_prefix(b"`")
                .and_then(|n| n.strip_suffix(b"`"))
                .unwrap_or(name);
            return self.set_schema(caps, name);
        }
        let session = Session {
            id: &self.id_text,
            schema: self.schema.as_deref(),
            user: &self.user,
        };
        let mut reply = Reply::start(&mut self.output, &mut self.scratch, 1, caps);
        answer_query(&mut reply, sql, &session);
    }

    fn prepare(&mut self, caps: u32, sql: &[u8]) {
        let sql = skip_space_and_comments(sql);
        let columns = if starts_with_word(sql, b"SELECT") {
            select_items(sql).count().min(usize::from(u16::MAX)) as u16
        } else {
            0
        };
        let params = count_placeholders(sql);
        let id = self.next_stmt;
        self.next_stmt = self.next_stmt.wrapping_add(1).max(1);
        let sql = sql.to_vec();
        let mut reply = Reply::new(self, 1, caps);
        StmtPrepareOk {
            statement_id: id,
            num_columns: columns,
            num_params: params,
            warnings: 0,
        }
        .encode(reply.scratch);
        reply.send();
        if params > 0 {
            for _ in 0..params {
                reply.column(b"?");
            }
            reply.metadata_end();
        }
        if columns > 0 {
            for item in select_items(&sql) {
                reply.column(column_name(item));
            }
            reply.metadata_end();
        }
        self.stmts.insert(id, Statement { sql, columns });
    }

    fn execute(&mut self, caps: u32, arg: &[u8]) {
        let Some(st) = stmt_id(arg).and_then(|id| self.stmts.get(&id)) else {
            return unknown_stmt(self, caps);
        };
        let mut reply = Reply::start(&mut self.output, &mut self.scratch, 1, caps);
        if st.columns == 0 {
            return reply.ok(1, None);
        }
        let session = Session {
            id: &self.id_text,
            schema: self.schema.as_deref(),
            user: &self.user,
        };
        reply.column_count(u64::from(st.columns));
        for item in select_items(&st.sql) {
            reply.column(column_name(item));
        }
        reply.metadata_end();
        // A binary row: header, NULL bitmap (offset 2), the values.
        reply.scratch.push(0);
        let bitmap_at = reply.scratch.len();
        let bitmap_len = (usize::from(st.columns) + 7 + 2) / 8;
        reply.scratch.resize(bitmap_at + bitmap_len, 0);
        for (i, item) in select_items(&st.sql).enumerate() {
            match value_of(item, &session) {
                Some(v) => write_lenenc_str(reply.scratch, v),
                None => reply.scratch[bitmap_at + (i + 2) / 8] |= 1 << ((i + 2) % 8),
            }
        }
        reply.send();
        reply.rows_end();
    }
}

fn unknown_stmt(c: &mut Conn, caps: u32) {
    Reply::new(c, 1, caps).err(1243, "HY000", "Unknown prepared statement handler");
}

fn stmt_id(arg: &[u8]) -> Option<u32> {
    match arg {
        [a, b, c, d, ..] => Some(u32::from_le_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// What a query's values may depend on.
struct Session<'a> {
    id: &'a [u8],
    schema: Option<&'a [u8]>,
    user: &'a [u8],
}

/// The answer to a COM_QUERY (its text without leading space and comments):
///
/// - `SELECT`: one row, one column per item of the select list, each value
///   plausible for what it asks ([`value_of`]); the funnel's own queries for
///   collations and user variables get rows of their shape.
/// - `SHOW GRANTS`: all privileges; any other `SHOW`: an empty result.
/// - anything else: OK.
fn answer_query(reply: &mut Reply<'_>, sql: &[u8], session: &Session<'_>) {
    if starts_with_word(sql, b"SELECT") {
        let table = from_table(sql);
        if table.eq_ignore_ascii_case(b"information_schema.COLLATIONS") {
            return reply.rows(&["ID", "CHARACTER_SET_NAME", "COLLATION_NAME"], COLLATIONS);
        }
        if table.eq_ignore_ascii_case(b"information_schema.USER_VARIABLES") {
            return reply.rows(
                &[
                    "VARIABLE_NAME",
                    "VARIABLE_VALUE",
                    "VARIABLE_TYPE",
                    "CHARACTER_SET_NAME",
                ],
                USER_VARIABLES,
            );
        }
        reply.column_count(select_items(sql).count() as u64);
        for item in select_items(sql) {
            reply.column(column_name(item));
        }
        reply.metadata_end();
        for item in select_items(sql) {
            match value_of(item, session) {
                Some(v) => write_lenenc_str(reply.scratch, v),
                None => reply.scratch.push(0xfb),
            }
        }
        reply.send();
        reply.rows_end();
    } else if starts_with_word(sql, b"SHOW") {
        if starts_with_word(trim(&sql[4..]), b"GRANTS") {
            let mut grant = b"GRANT ALL PRIVILEGES ON *.* TO `".to_vec();
            grant.extend_from_slice(session.user);
            grant.extend_from_slice(b"`@`%`");
            reply.rows(&["Grants"], &[&[Some(grant.as_slice())]]);
        } else {
            reply.rows(&["Variable_name", "Value"], &[]);
        }
    } else {
        reply.ok(0, None);
    }
}

/// A few collations, as `information_schema.COLLATIONS` lists them.
const COLLATIONS: &[&[Option<&[u8]>]] = &[
    &[Some(b"8"), Some(b"latin1"), Some(b"latin1_swedish_ci")],
    &[Some(b"33"), Some(b"utf8mb3"), Some(b"utf8mb3_general_ci")],
    &[Some(b"45"), Some(b"utf8mb4"), Some(b"utf8mb4_general_ci")],
    &[Some(b"46"), Some(b"utf8mb4"), Some(b"utf8mb4_bin")],
    &[Some(b"63"), Some(b"binary"), Some(b"binary")],
    &[Some(b"224"), Some(b"utf8mb4"), Some(b"utf8mb4_unicode_ci")],
];

/// No user variables; the funnel's two extra rows (its read-back's UNIONs).
const USER_VARIABLES: &[&[Option<&[u8]>]] = &[
    &[
        Some(b" funnel:collation_connection"),
        Some(b"utf8mb4_general_ci"),
        Some(b"SYSVAR"),
        None,
    ],
    &[
        Some(b" funnel:last_insert_id"),
        Some(b"0"),
        Some(b"SYSVAR"),
        None,
    ],
];

/// The value of one select-list item: comparisons are true (so the funnel's
/// "is the session clean" checks pass), `@@variables` have typical
/// MariaDB 10.11 values, literals are themselves, aggregates give
/// [`TABLE_ROWS`], and a plain column gives [`C_VALUE`].
fn value_of<'a>(item: &'a [u8], session: &Session<'a>) -> Option<&'a [u8]> {
    let expr = strip_alias(item);
    if is_comparison(expr) {
        return Some(b"1");
    }
    if let Some(var) = expr.strip_prefix(b"@@") {
        return Some(variable(var));
    }
    if expr.eq_ignore_ascii_case(b"NULL") {
        return None;
    }
    if let Some(s) = expr
        .strip_prefix(b"'")
        .and_then(|s| s.strip_suffix(b"'"))
        .or_else(|| expr.strip_prefix(b"\"").and_then(|s| s.strip_suffix(b"\"")))
    {
        return Some(s);
    }
    if expr
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'-')
    {
        return Some(expr);
    }
    let call = |name: &[u8]| {
        expr.len() > name.len()
            && expr[..name.len()].eq_ignore_ascii_case(name)
            && trim(&expr[name.len()..]).starts_with(b"(")
    };
    if call(b"DATABASE") || call(b"SCHEMA") {
        return session.schema;
    }
    if call(b"CONNECTION_ID") {
        return Some(session.id);
    }
    if call(b"VERSION") {
        return Some(VERSION);
    }
    if call(b"USER") || call(b"CURRENT_USER") || call(b"SESSION_USER") {
        return Some(session.user);
    }
    if call(b"LAST_INSERT_ID") || call(b"ROW_COUNT") || call(b"FOUND_ROWS") || call(b"SLEEP") {
        return Some(b"0");
    }
    if call(b"MAX") || call(b"MIN") || call(b"COUNT") || call(b"SUM") {
        return Some(TABLE_ROWS);
    }
    if expr
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'`' | b'*'))
    {
        return Some(C_VALUE);
    }
    Some(b"1")
}

/// `@@[global.|session.|local.]name`, as MariaDB 10.11 answers it by default.
fn variable(var: &[u8]) -> &'static [u8] {
    let name = [&b"global."[..], b"session.", b"local."]
        .iter()
        .find_map(|p| {
            var.get(..p.len())
                .filter(|v| v.eq_ignore_ascii_case(p))
                .map(|_| &var[p.len()..])
        })
        .unwrap_or(var);
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let starts = |n: &[u8]| name.len() >= n.len() && name[..n.len()].eq_ignore_ascii_case(n);
    if starts(b"character_set_") {
        b"utf8mb4"
    } else if starts(b"collation_") {
        b"utf8mb4_general_ci"
    } else if is(b"version") {
        VERSION
    } else if is(b"version_comment") {
        b"loadtest fake server"
    } else if is(b"max_allowed_packet") {
        b"16777216"
    } else if is(b"wait_timeout") || is(b"interactive_timeout") {
        b"28800"
    } else if is(b"max_prepared_stmt_count") {
        b"16382"
    } else if is(b"long_query_time") {
        b"10.000000"
    } else if is(b"session_track_system_variables") {
        b"autocommit,character_set_client,character_set_connection,character_set_results,time_zone"
    } else if is(b"session_track_transaction_info") {
        b"OFF"
    } else if is(b"time_zone") || is(b"system_time_zone") {
        b"SYSTEM"
    } else if is(b"sql_mode") {
        b"STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION"
    } else if is(b"tx_isolation") || is(b"transaction_isolation") {
        b"REPEATABLE-READ"
    } else if is(b"in_transaction")
        || is(b"profiling")
        || is(b"tx_read_only")
        || is(b"transaction_read_only")
        || is(b"lower_case_table_names")
        || is(b"max_statement_time")
    {
        b"0"
    } else {
        // autocommit, session_track_schema, session_track_state_change, ...
        b"1"
    }
}

/// The name mysqld gives a select-list item: its alias, or its text.
fn column_name(item: &[u8]) -> &[u8] {
    match alias_at(item) {
        Some(at) => {
            let a = trim(&item[at + 4..]);
            a.strip_prefix(b"`")
                .and_then(|a| a.strip_suffix(b"`"))
                .unwrap_or(a)
        }
        None => item,
    }
}

fn strip_alias(item: &[u8]) -> &[u8] {
    match alias_at(item) {
        Some(at) => trim(&item[..at]),
        None => item,
    }
}

/// Where ` AS ` starts in an item, outside parentheses and quotes.
fn alias_at(item: &[u8]) -> Option<usize> {
    let mut last = None;
    scan_top_level(item, |i, _| {
        if i > 0 && item.len() >= i + 4 && item[i..i + 4].eq_ignore_ascii_case(b" AS ") {
            last = Some(i);
        }
        false
    });
    last
}

/// A top-level comparison or logical operator: `=`, `<`, `>`, `AND`,
/// `OR`, `IS`, `NOT`, `LIKE`, `IN`.
fn is_comparison(expr: &[u8]) -> bool {
    let mut found = false;
    scan_top_level(expr, |i, b| {
        if matches!(b, b'=' | b'<' | b'>') {
            found = true;
        } else if b == b' ' {
            let rest = &expr[i + 1..];
            found = [&b"AND "[..], b"OR ", b"IS ", b"NOT ", b"LIKE ", b"IN "]
                .iter()
                .any(|w| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w));
        }
        found
    });
    found
}

/// Calls `f(index, byte)` for each byte outside quotes and parentheses
/// until it returns true.
fn scan_top_level(s: &[u8], mut f: impl FnMut(usize, u8) -> bool) {
    let mut depth = 0usize;
    let mut quote = None;
    for (i, &b) in s.iter().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"' | b'`') => quote = Some(b),
            (None, b'(') => depth += 1,
            (None, b')') => depth = depth.saturating_sub(1),
            (None, _) if depth == 0 && f(i, b) => return,
            _ => {}
        }
    }
}

/// The items of a `SELECT`'s select list, trimmed: split at top-level
/// commas, up to the first top-level `FROM`, `WHERE`, `UNION`, `LIMIT`,
/// `ORDER`, `GROUP`, `HAVING`, `INTO`, `FOR` or `;`. No allocation.
fn select_items(sql: &[u8]) -> impl Iterator<Item = &[u8]> {
    let list = &sql[b"SELECT".len().min(sql.len())..];
    let mut end = list.len();
    scan_top_level(list, |i, b| {
        let word_start = i == 0 || matches!(list[i - 1], b' ' | b'\n' | b'\t' | b'\r' | b')');
        let ends = b == b';'
            || (word_start
                && [
                    &b"FROM"[..],
                    b"WHERE",
                    b"UNION",
                    b"LIMIT",
                    b"ORDER",
                    b"GROUP",
                    b"HAVING",
                    b"INTO",
                    b"FOR",
                ]
                .iter()
                .any(|w| starts_with_word(&list[i..], w)));
        if ends {
            end = i;
        }
        ends
    });
    let list = &list[..end];
    let mut start = 0;
    let mut done = list.iter().all(u8::is_ascii_whitespace);
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let rest = &list[start..];
        let mut comma = None;
        scan_top_level(rest, |i, b| {
            if b == b',' {
                comma = Some(i);
            }
            comma.is_some()
        });
        let item = match comma {
            Some(i) => {
                start += i + 1;
                &rest[..i]
            }
            None => {
                done = true;
                rest
            }
        };
        Some(trim(item))
    })
}

/// `?` placeholders outside quotes.
fn count_placeholders(sql: &[u8]) -> u16 {
    let mut quote = None;
    let mut n = 0u16;
    for &b in sql {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"' | b'`') => quote = Some(b),
            (None, b'?') => n = n.saturating_add(1),
            _ => {}
        }
    }
    n
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

fn skip_space_and_comments(mut s: &[u8]) -> &[u8] {
    loop {
        s = s.trim_ascii_start();
        match s.strip_prefix(b"/*") {
            Some(rest) => match rest.windows(2).position(|w| w == b"*/") {
                Some(end) => s = &rest[end + 2..],
                None => return &[],
            },
            None => return s,
        }
    }
}

/// `s` starts with keyword `w` (any case) followed by a non-word byte.
fn starts_with_word(s: &[u8], w: &[u8]) -> bool {
    s.len() >= w.len()
        && s[..w.len()].eq_ignore_ascii_case(w)
        && s.get(w.len())
            .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
}

/// The first table of a query's top-level `FROM` (empty if none).
fn from_table(sql: &[u8]) -> &[u8] {
    let mut at = None;
    scan_top_level(sql, |i, b| {
        if b.is_ascii_whitespace() && starts_with_word(&sql[i + 1..], b"FROM") {
            at = Some(i + 5);
        }
        at.is_some()
    });
    let Some(rest) = at.and_then(|i| sql.get(i..)) else {
        return &[];
    };
    let rest = rest.trim_ascii_start();
    let end = rest
        .iter()
        .position(|b| b.is_ascii_whitespace() || matches!(b, b',' | b';' | b')'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Writes one response's packets into a connection's output, numbering
/// them from `seq`; framing follows the capabilities agreed
/// (CLIENT_DEPRECATE_EOF, CLIENT_SESSION_TRACK).
pub struct Reply<'a> {
    out: &'a mut Vec<u8>,
    /// The payload of the next packet ([`Reply::send`] frames it).
    pub scratch: &'a mut Vec<u8>,
    seq: u8,
    caps: u32,
}

impl<'a> Reply<'a> {
    fn new(c: &'a mut Conn, seq: u8, caps: u32) -> Self {
        Reply::start(&mut c.output, &mut c.scratch, seq, caps)
    }

    /// A reply into `out`, `scratch` being the payload buffer to reuse.
    pub fn start(out: &'a mut Vec<u8>, scratch: &'a mut Vec<u8>, seq: u8, caps: u32) -> Self {
        scratch.clear();
        Reply {
            out,
            scratch,
            seq,
            caps,
        }
    }

    /// Frames `scratch` as the next packet and empties it.
    pub fn send(&mut self) {
        self.seq = write_packet(self.out, self.seq, self.scratch);
        self.scratch.clear();
    }

    pub fn ok(&mut self, affected_rows: u64, session_state: Option<&[u8]>) {
        self.terminator(OK_HEADER, affected_rows, session_state);
    }

    fn terminator(&mut self, header: u8, affected_rows: u64, session_state: Option<&[u8]>) {
        let track = session_state.is_some() && self.caps & CLIENT_SESSION_TRACK != 0;
        let status = if track {
            SERVER_STATUS_AUTOCOMMIT | SERVER_SESSION_STATE_CHANGED
        } else {
            SERVER_STATUS_AUTOCOMMIT
        };
        encode_ok(
            self.scratch,
            &OkPacket {
                header,
                affected_rows,
                last_insert_id: 0,
                status,
                warnings: 0,
                info: b"",
                session_state: session_state.filter(|_| track),
            },
            self.caps,
        );
        self.send();
    }

    pub fn err(&mut self, code: u16, sql_state: &str, message: &str) {
        encode_err(self.scratch, code, sql_state, message);
        self.send();
    }

    /// An EOF, or with CLIENT_DEPRECATE_EOF the OK that stands for it.
    pub fn eof(&mut self) {
        if self.caps & CLIENT_DEPRECATE_EOF != 0 {
            self.terminator(EOF_HEADER, 0, None);
        } else {
            encode_eof(self.scratch, 0, SERVER_STATUS_AUTOCOMMIT);
            self.send();
        }
    }

    pub fn column_count(&mut self, n: u64) {
        funnel::protocol::lenenc::write_lenenc_int(self.scratch, n);
        self.send();
    }

    /// A string column's definition.
    pub fn column(&mut self, name: &[u8]) {
        let name = std::str::from_utf8(name).unwrap_or("?");
        encode_column_def(
            self.scratch,
            name,
            column_type::MYSQL_TYPE_VAR_STRING,
            u16::from(COLLATION_ID),
            1024,
            0,
            0,
        );
        self.send();
    }

    /// After the column definitions: an EOF, unless CLIENT_DEPRECATE_EOF.
    pub fn metadata_end(&mut self) {
        if self.caps & CLIENT_DEPRECATE_EOF == 0 {
            encode_eof(self.scratch, 0, SERVER_STATUS_AUTOCOMMIT);
            self.send();
        }
    }

    /// After the rows.
    pub fn rows_end(&mut self) {
        self.eof();
    }

    /// A whole text result set of string columns.
    pub fn rows(&mut self, names: &[&str], rows: &[&[Option<&[u8]>]]) {
        self.column_count(names.len() as u64);
        for name in names {
            self.column(name.as_bytes());
        }
        self.metadata_end();
        for row in rows {
            funnel::protocol::response::encode_text_row(self.scratch, row);
            self.send();
        }
        self.rows_end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(sql: &str) -> Vec<String> {
        select_items(sql.as_bytes())
            .map(|i| String::from_utf8_lossy(i).into_owned())
            .collect()
    }

    fn values(sql: &str) -> Vec<Option<String>> {
        let session = Session {
            id: b"7",
            schema: Some(b"app"),
            user: b"app",
        };
        select_items(sql.as_bytes())
            .map(|i| value_of(i, &session).map(|v| String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    #[test]
    fn select_list_is_split_at_top_level_commas() {
        assert_eq!(items("SELECT c FROM sbtest1 WHERE id = 5"), ["c"]);
        assert_eq!(
            items("SELECT @@a, (SELECT COUNT(*) FROM t) = 0 AND @@b = 'x,y', 3"),
            ["@@a", "(SELECT COUNT(*) FROM t) = 0 AND @@b = 'x,y'", "3"]
        );
        assert_eq!(items("SELECT 1;"), ["1"]);
        assert_eq!(items("SELECT 1 AS `from`, 2 LIMIT 1"), ["1 AS `from`", "2"]);
        assert_eq!(
            items("SELECT\n@@version_comment limit 1"),
            ["@@version_comment"]
        );
    }

    #[test]
    fn values_are_plausible() {
        assert_eq!(
            values("SELECT @@session.character_set_client, @@max_allowed_packet, DATABASE(), CONNECTION_ID()"),
            [
                Some("utf8mb4".into()),
                Some("16777216".into()),
                Some("app".into()),
                Some("7".into())
            ]
        );
        assert_eq!(
            values("SELECT @@session.wait_timeout = @@global.wait_timeout AND @@profiling = 0, NULL, 'x', 42, MAX(id) FROM sbtest1"),
            [
                Some("1".into()),
                None,
                Some("x".into()),
                Some("42".into()),
                Some("10000".into())
            ]
        );
        assert_eq!(
            values("SELECT c FROM sbtest1 WHERE id=1")[0]
                .as_deref()
                .map(str::len),
            Some(119)
        );
        assert_eq!(column_name(b"1 AS `n`"), b"n");
    }

    #[test]
    fn the_top_level_from_names_the_table() {
        assert_eq!(
            from_table(b"SELECT (SELECT COUNT(*) FROM information_schema.USER_VARIABLES) = 0, @@a"),
            b""
        );
        assert_eq!(
            from_table(b"SELECT a, b FROM information_schema.USER_VARIABLES UNION ALL SELECT 1"),
            b"information_schema.USER_VARIABLES"
        );
    }

    #[test]
    fn placeholders_outside_quotes_count() {
        assert_eq!(
            count_placeholders(b"SELECT ?, '?', \"?\" FROM t WHERE a = ?"),
            2
        );
    }

    /// Starts a server on a free port; stops it when dropped.
    struct Running {
        port: u16,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<io::Result<()>>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn start() -> Running {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        Running {
            port,
            stop,
            thread: Some(std::thread::spawn(move || serve(listeners, s))),
        }
    }

    /// Packets from a blocking socket.
    struct Packets {
        s: std::net::TcpStream,
        buf: Vec<u8>,
    }

    impl Packets {
        fn next(&mut self) -> Vec<u8> {
            loop {
                if let Some((h, p)) = next_frame(&self.buf) {
                    let p = p.to_vec();
                    self.buf.drain(..h.total_len());
                    return p;
                }
                let mut b = [0u8; 4096];
                let n = self.s.read(&mut b).expect("an answer in time");
                assert!(n > 0, "connection closed");
                self.buf.extend_from_slice(&b[..n]);
            }
        }

        /// One whole response (CLIENT_DEPRECATE_EOF framing), named: "ok",
        /// "err", or "rows:N" for a result set of N rows. `prepare` reads
        /// a COM_STMT_PREPARE answer instead: "prepared:PARAMS:COLUMNS".
        fn response(&mut self, prepare: bool) -> String {
            let first = self.next();
            match first[0] {
                0x00 if prepare => {
                    let ok = funnel::protocol::response::decode_stmt_prepare_ok(&first).unwrap();
                    for _ in 0..ok.num_params + ok.num_columns {
                        self.next();
                    }
                    format!("prepared:{}:{}", ok.num_params, ok.num_columns)
                }
                0x00 => "ok".into(),
                0xff => "err".into(),
                n => {
                    for _ in 0..n {
                        self.next();
                    }
                    let mut rows = 0;
                    while self.next()[0] != 0xfe {
                        rows += 1;
                    }
                    format!("rows:{rows}")
                }
            }
        }
    }

    #[test]
    fn pipelined_commands_are_all_answered_in_order() {
        let server = start();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut packets = Packets {
            s: s.try_clone().unwrap(),
            buf: Vec::new(),
        };
        let hs = HandshakeV10::decode(&packets.next()).unwrap();
        assert!(hs.capabilities & CLIENT_DEPRECATE_EOF != 0);
        let mut login = Vec::new();
        HandshakeResponse {
            capabilities: CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH
                | CLIENT_DEPRECATE_EOF,
            max_packet: 1 << 24,
            charset: 45,
            username: "anyone".into(),
            auth_response: vec![1; 20],
            database: None,
            auth_plugin: Some(MYSQL_NATIVE_PASSWORD.into()),
            attrs: vec![],
        }
        .encode(&mut login);
        let mut out = Vec::new();
        write_packet(&mut out, 1, &login);
        s.write_all(&out).unwrap();
        assert_eq!(packets.response(false), "ok");

        // Everything in one write: the server reads it in one go.
        let execute = [
            COM_STMT_EXECUTE,
            1,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            1,
            3,
            0,
            5,
            0,
            0,
            0,
        ];
        let commands: [(&[u8], &str); 10] = [
            (b"\x03SELECT c FROM sbtest1 WHERE id = 1", "rows:1"),
            (b"\x03UPDATE sbtest1 SET k = k + 1 WHERE id = 1", "ok"),
            (&[COM_PING], "ok"),
            (b"\x02app", "ok"),
            (&[COM_RESET_CONNECTION], "ok"),
            (b"\x16SELECT c, 2 FROM sbtest1 WHERE id = ?", "prepared:1:2"),
            (&execute, "rows:1"),
            (&[COM_STMT_CLOSE, 1, 0, 0, 0], ""),
            (&execute, "err"),
            (b"\x03SELECT 1, 2, 3 FROM dual", "rows:1"),
        ];
        let mut out = Vec::new();
        for (payload, _) in commands {
            write_packet(&mut out, 0, payload);
        }
        s.write_all(&out).unwrap();
        for (payload, want) in commands {
            if !want.is_empty() {
                let got = packets.response(payload[0] == COM_STMT_PREPARE);
                assert_eq!(
                    got,
                    want,
                    "answer to {:?}",
                    String::from_utf8_lossy(payload)
                );
            }
        }
    }
}
