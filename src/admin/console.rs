//! The admin console: a MySQL-protocol server (blocking I/O, one thread per
//! session) that answers SHOW commands from snapshots of the loop and
//! carries out PAUSE, RESUME, RELOAD, SET and SHUTDOWN through the control
//! channel. It also answers what client libraries and the `mariadb` CLI send
//! on their own (`SELECT @@version_comment LIMIT 1`, `SET NAMES`, `SELECT
//! DATABASE()`, COM_PING, ...) so that they work interactively.
//!
//! Every error a client sees is an ERR packet with a real error code.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::report::{self, Cell, Kind, Table};
use super::{CONTROL_TIMEOUT, SNAPSHOT_TIMEOUT};
use crate::config::{SetError, Setting};
use crate::control::{Control, ControlHandle, Snapshot};
use crate::log_limit::{LogEvent, ThreadLogLimiter};
use crate::protocol::auth::{native_password_stage2, verify_native};
use crate::protocol::command::{command_name, decode_command, Command};
use crate::protocol::consts::*;
use crate::protocol::handshake::{
    is_ssl_request, AuthSwitchRequest, HandshakeResponse, HandshakeV10,
};
use crate::protocol::lenenc::write_lenenc_int;
use crate::protocol::packet::{join_payload, scan_message, write_packet};
use crate::protocol::response::{
    column_flag, column_type, encode_column_def, encode_eof, encode_err, encode_ok,
    encode_text_row, OkPacket,
};

/// Largest command accepted from an admin client.
const MAX_COMMAND: usize = 1 << 20;
/// A silent connection (or one that does not log in) holds a slot this
/// long at most.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// An admin session idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// utf8mb4_general_ci for text columns, binary for numbers.
const CHARSET_UTF8MB4: u16 = 45;
const CHARSET_BINARY: u16 = 63;

/// What the console offers clients: protocol 4.1 with plugin auth; TLS
/// (`CLIENT_SSL`) when the funnel has a certificate; no compression, no
/// multi-statements, no CLIENT_DEPRECATE_EOF.
const CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// The credentials from the configuration at start-up; a snapshot brings
/// the current ones after a reload.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub stage2: [u8; 20],
    /// The read-only account (`stats_user`): SHOW commands only.
    pub stats: Option<(String, [u8; 20])>,
    /// The funnel's certificate, when it has one (`[funnel] tls_cert`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Credentials {
    pub fn new(user: &str, password: &str) -> Self {
        Credentials {
            user: user.to_string(),
            stage2: native_password_stage2(password.as_bytes()),
            stats: None,
            tls: None,
        }
    }
}

pub struct Shared {
    control: ControlHandle,
    initial: Credentials,
    next_id: AtomicU32,
    pub log_limit: Arc<ThreadLogLimiter>,
}

impl Shared {
    pub fn new(
        control: ControlHandle,
        initial: Credentials,
        log_limit: Arc<ThreadLogLimiter>,
    ) -> Self {
        Shared {
            control,
            initial,
            next_id: AtomicU32::new(1),
            log_limit,
        }
    }
}

/// Over the connection limit: ERR 1040 as the first packet, as mysqld does.
pub fn refuse_busy(mut stream: TcpStream) {
    let mut payload = Vec::new();
    let (code, state) = err::ER_CON_COUNT_ERROR;
    encode_err(
        &mut payload,
        code,
        state,
        "Too many connections to the funnel admin console",
    );
    let mut out = Vec::new();
    write_packet(&mut out, 0, &payload);
    let _ = stream.write_all(&out);
}

/// A console session's socket: TLS from the client's SSL request on.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.set_read_timeout(d),
            Stream::Tls(t) => t.sock.set_read_timeout(d),
        }
    }

    /// Start TLS as the server (the client's SSL request was read);
    /// `received`: what the client sent after it, the start of its TLS
    /// handshake.
    fn start_tls(&mut self, config: Arc<rustls::ServerConfig>, received: &[u8]) -> io::Result<()> {
        let Stream::Plain(sock) = self else {
            return Err(io::Error::other("TLS asked twice"));
        };
        let sock = sock.try_clone()?;
        let mut tls = rustls::ServerConnection::new(config).map_err(crate::tls::io_error)?;
        let mut rest = received;
        while !rest.is_empty() && tls.read_tls(&mut rest)? > 0 {
            tls.process_new_packets().map_err(crate::tls::io_error)?;
        }
        *self = Stream::Tls(Box::new(rustls::StreamOwned::new(tls, sock)));
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// A session's socket with its packet framing.
struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    out: Vec<u8>,
    /// Next sequence id to send.
    seq: u8,
    caps: u32,
    /// Until logged in: the whole handshake must be done by then.
    deadline: Option<Instant>,
}

enum ReadError {
    Closed,
    Io(io::Error),
    /// Protocol violation or oversized packet: (code, message).
    Bad((u16, &'static str), String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl Conn {
    /// Reads one packet of the login: None when the login is over (the
    /// client left, or sent a bad packet and was told so).
    fn read_login_packet(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self.read() {
            Ok(p) => Ok(Some(p)),
            Err(ReadError::Bad(code, msg)) => {
                self.error(code, &msg)?;
                Ok(None)
            }
            Err(ReadError::Closed) => Ok(None),
            Err(ReadError::Io(e)) => Err(e),
        }
    }

    /// Reads one logical message; returns its payload and sets the next seq.
    fn read(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            match scan_message(&self.rbuf, MAX_COMMAND) {
                Ok(Some(span)) => {
                    let mut payload = Vec::with_capacity(span.payload_len);
                    join_payload(&self.rbuf, &span, &mut payload);
                    self.rbuf.drain(..span.wire_len);
                    self.seq = span.last_seq.wrapping_add(1);
                    return Ok(payload);
                }
                Ok(None) => {}
                Err(e) => {
                    let code = match e {
                        crate::protocol::ProtocolError::TooLarge { .. } => {
                            err::ER_NET_PACKET_TOO_LARGE
                        }
                        _ => err::ER_NET_PACKETS_OUT_OF_ORDER,
                    };
                    return Err(ReadError::Bad(code, format!("funnel admin: {e}")));
                }
            }
            if let Some(deadline) = self.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ReadError::Io(io::ErrorKind::TimedOut.into()));
                }
                self.stream.set_read_timeout(Some(left))?;
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    fn queue(&mut self, payload: &[u8]) {
        self.seq = write_packet(&mut self.out, self.seq, payload);
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self
            .stream
            .write_all(&self.out)
            .and_then(|_| self.stream.flush());
        self.out.clear();
        r
    }

    fn ok(&mut self, info: &str) -> io::Result<()> {
        // encode_ok writes the info length-encoded, as mysqld does.
        let mut p = Vec::new();
        encode_ok(
            &mut p,
            &OkPacket {
                header: OK_HEADER,
                affected_rows: 0,
                last_insert_id: 0,
                status: SERVER_STATUS_AUTOCOMMIT,
                warnings: 0,
                info: info.as_bytes(),
                session_state: None,
            },
            self.caps,
        );
        self.queue(&p);
        self.flush()
    }

    fn error(&mut self, (code, state): (u16, &str), message: &str) -> io::Result<()> {
        let mut p = Vec::new();
        encode_err(&mut p, code, state, message);
        self.queue(&p);
        self.flush()
    }

    fn eof(&mut self) {
        let mut p = Vec::new();
        encode_eof(&mut p, 0, SERVER_STATUS_AUTOCOMMIT);
        self.queue(&p);
    }

    fn table(&mut self, t: &Table) -> io::Result<()> {
        let mut p = Vec::new();
        write_lenenc_int(&mut p, t.columns.len() as u64);
        self.queue(&p);
        for (name, kind) in &t.columns {
            p.clear();
            match kind {
                Kind::Int => encode_column_def(
                    &mut p,
                    name,
                    column_type::MYSQL_TYPE_LONGLONG,
                    CHARSET_BINARY,
                    20,
                    column_flag::UNSIGNED | column_flag::BINARY,
                    0,
                ),
                Kind::Str => encode_column_def(
                    &mut p,
                    name,
                    column_type::MYSQL_TYPE_VAR_STRING,
                    CHARSET_UTF8MB4,
                    4 * 4096,
                    0,
                    0,
                ),
            }
            self.queue(&p);
        }
        self.eof();
        for row in &t.rows {
            p.clear();
            let texts: Vec<Option<String>> = row.iter().map(Cell::text).collect();
            let values: Vec<Option<&[u8]>> = texts
                .iter()
                .map(|v| v.as_deref().map(str::as_bytes))
                .collect();
            encode_text_row(&mut p, &values);
            self.queue(&p);
            if self.out.len() > 256 * 1024 {
                let r = self.stream.write_all(&self.out);
                self.out.clear();
                r?;
            }
        }
        self.eof();
        self.flush()
    }
}

/// A scramble of printable ASCII without NUL or '$', as mysqld makes them.
fn new_scramble() -> [u8; 20] {
    let mut raw = [0u8; 20];
    if getrandom::getrandom(&mut raw).is_err() {
        // No OS randomness: fall back to the clock (still unique per session).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    let mut out = [0u8; 20];
    for (o, r) in out.iter_mut().zip(raw) {
        // 0x21..=0x7e minus '$' (0x24): 93 values.
        let mut c = 0x21 + r % 93;
        if c >= b'$' {
            c += 1;
        }
        *o = c;
    }
    out
}

/// Serve one admin session until it quits or fails.
pub fn serve(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut conn = Conn {
        stream: Stream::Plain(stream),
        rbuf: Vec::new(),
        out: Vec::new(),
        seq: 0,
        caps: 0,
        deadline: Some(Instant::now() + HANDSHAKE_TIMEOUT),
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (user, read_only) = match login(&mut conn, peer, id, shared) {
        Ok(Some(login)) => login,
        Ok(None) => return,
        Err(e) => {
            debug!("admin console: {peer}: login failed: {e}");
            return;
        }
    };
    conn.deadline = None;
    let _ = conn.stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let session = Session {
        id,
        user,
        read_only,
        peer,
        shared,
    };
    loop {
        let payload = match conn.read() {
            Ok(p) => p,
            Err(ReadError::Closed) => return,
            Err(ReadError::Io(e)) => {
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    debug!("admin console: {peer}: idle for {IDLE_TIMEOUT:?}, closing");
                } else {
                    debug!("admin console: {peer}: {e}");
                }
                return;
            }
            Err(ReadError::Bad(code, msg)) => {
                conn.seq = 1;
                let _ = conn.error(code, &msg);
                return;
            }
        };
        match session.command(&mut conn, &payload) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                debug!("admin console: {peer}: {e}");
                return;
            }
        }
    }
}

/// The handshake. Ok(Some(user)) once logged in; Ok(None) if refused (the
/// client got its ERR).
fn login(
    conn: &mut Conn,
    peer: SocketAddr,
    id: u32,
    shared: &Shared,
) -> io::Result<Option<(String, bool)>> {
    // The credentials in force now (they are reloadable); the ones from
    // start-up if the loop does not answer.
    let creds = shared
        .control
        .call(|reply| Control::Credentials { reply }, SNAPSHOT_TIMEOUT)
        .and_then(|c| {
            let (user, stage2) = c.admin?;
            Some(Credentials {
                user,
                stage2,
                stats: c.stats,
                tls: c.tls,
            })
        })
        .unwrap_or_else(|| shared.initial.clone());
    let scramble = new_scramble();
    let greeting = HandshakeV10 {
        server_version: format!("{}-funnel-admin", env!("CARGO_PKG_VERSION")),
        connection_id: id,
        scramble: scramble.to_vec(),
        capabilities: CAPS | if creds.tls.is_some() { CLIENT_SSL } else { 0 },
        charset: CHARSET_UTF8MB4 as u8,
        status: SERVER_STATUS_AUTOCOMMIT,
        auth_plugin: MYSQL_NATIVE_PASSWORD.to_string(),
    };
    let mut p = Vec::new();
    greeting.encode(&mut p);
    conn.seq = 0;
    conn.queue(&p);
    conn.flush()?;
    let Some(payload) = conn.read_login_packet()? else {
        return Ok(None);
    };
    let payload = match (is_ssl_request(&payload), &creds.tls) {
        (false, _) => payload,
        (true, Some(tls)) => {
            let received = std::mem::take(&mut conn.rbuf);
            conn.stream.start_tls(tls.clone(), &received)?;
            // The handshake response comes inside TLS.
            match conn.read_login_packet()? {
                Some(p) => p,
                None => return Ok(None),
            }
        }
        (true, None) => {
            conn.error(
                err::ER_HANDSHAKE_ERROR,
                "funnel admin: TLS is not supported without a certificate ([funnel] tls_cert); connect without TLS (--skip-ssl / --ssl-mode=DISABLED)",
            )?;
            return Ok(None);
        }
    };
    let resp = match HandshakeResponse::decode(&payload) {
        Ok(r) => r,
        Err(_) => {
            conn.error(err::ER_HANDSHAKE_ERROR, "Bad handshake")?;
            return Ok(None);
        }
    };
    conn.caps = resp.capabilities & CAPS;
    let mut auth = resp.auth_response.clone();
    let plugin_ok = match &resp.auth_plugin {
        None => true,
        Some(p) => p == MYSQL_NATIVE_PASSWORD || p.is_empty(),
    };
    if !plugin_ok {
        if resp.capabilities & CLIENT_PLUGIN_AUTH == 0 {
            conn.error(err::ER_NOT_SUPPORTED_AUTH_MODE, "Client does not support authentication protocol requested by server; consider upgrading MySQL client")?;
            return Ok(None);
        }
        let mut data = scramble.to_vec();
        data.push(0);
        let mut p = Vec::new();
        AuthSwitchRequest {
            plugin: MYSQL_NATIVE_PASSWORD.to_string(),
            data,
        }
        .encode(&mut p);
        conn.queue(&p);
        conn.flush()?;
        auth = match conn.read_login_packet()? {
            Some(p) => p,
            None => return Ok(None),
        };
    }
    let admin = resp.username == creds.user && verify_native(Some(&creds.stage2), &scramble, &auth);
    let read_only = !admin
        && creds.stats.as_ref().is_some_and(|(user, stage2)| {
            resp.username == *user && verify_native(Some(stage2), &scramble, &auth)
        });
    if !admin && !read_only {
        let msg = format!(
            "Access denied for user '{}'@'{}' (using password: {})",
            resp.username,
            peer.ip(),
            if auth.is_empty() { "NO" } else { "YES" }
        );
        if shared.log_limit.admit(LogEvent::AdminLoginRefused) {
            warn!("admin console: {msg}");
        }
        conn.error(err::ER_ACCESS_DENIED_ERROR, &msg)?;
        return Ok(None);
    }
    info!(
        "admin console: {} logged in from {peer}{}",
        resp.username,
        if read_only { " (read-only)" } else { "" }
    );
    conn.ok("")?;
    Ok(Some((resp.username, read_only)))
}

struct Session<'a> {
    id: u32,
    user: String,
    /// The `stats_user` account: SHOW commands only.
    read_only: bool,
    peer: SocketAddr,
    shared: &'a Shared,
}

/// What a query is answered with.
enum Answer {
    Table(Table),
    Ok(String),
    Err((u16, &'static str), String),
    /// OK first, then the shutdown: the process may exit as soon as the
    /// loop has it, before this thread could write anything more.
    Shutdown,
}

const ER_PARSE_ERROR: (u16, &str) = (1064, "42000");
const ER_SPECIFIC_ACCESS_DENIED_ERROR: (u16, &str) = (1227, "42000");
const ER_EMPTY_QUERY: (u16, &str) = (1065, "42000");
const ER_UNKNOWN_SYSTEM_VARIABLE: (u16, &str) = (1193, "HY000");
const ER_GLOBAL_VARIABLE: (u16, &str) = (1229, "HY000");
const ER_WRONG_VALUE_FOR_VAR: (u16, &str) = (1231, "42000");
/// mysqld's ER_INCORRECT_GLOBAL_LOCAL_VAR: "Variable 'x' is a read only variable".
const ER_VARIABLE_IS_READONLY: (u16, &str) = (1238, "HY000");

impl Session<'_> {
    /// Answer one command; false when the session ends.
    fn command(&self, conn: &mut Conn, payload: &[u8]) -> io::Result<bool> {
        let cmd = match decode_command(payload) {
            Ok(c) => c,
            Err(e) => {
                conn.error(err::ER_UNKNOWN_COM_ERROR, &format!("funnel admin: {e}"))?;
                return Ok(true);
            }
        };
        match cmd {
            Command::Quit => return Ok(false),
            Command::Ping | Command::InitDb(_) | Command::ResetConnection => conn.ok("")?,
            Command::Query(sql) => {
                let sql = String::from_utf8_lossy(sql);
                match self.query(&sql) {
                    Answer::Table(t) => conn.table(&t)?,
                    Answer::Ok(info) => conn.ok(&info)?,
                    Answer::Err(code, msg) => conn.error(code, &msg)?,
                    Answer::Shutdown => {
                        info!(
                            "admin console: {} from {} asks: SHUTDOWN",
                            self.user, self.peer
                        );
                        conn.ok("shutting down")?;
                        let (reply, _) = crossbeam_channel::unbounded();
                        if !self.shared.control.broadcast(|| Control::Shutdown {
                            reply: reply.clone(),
                        }) {
                            warn!("admin console: SHUTDOWN: the event loop is already gone");
                        }
                    }
                }
            }
            Command::FieldList { .. } | Command::SetOption(_) => {
                conn.eof();
                conn.flush()?;
            }
            Command::Statistics => {
                let text = match self.snapshot(false) {
                    Ok(s) => format!(
                        "Uptime: {}  Clients: {}  Pools: {}  Paused: {}",
                        s.uptime.as_secs(),
                        s.clients_connected,
                        s.pools.len(),
                        if s.paused { "yes" } else { "no" }
                    ),
                    Err(e) => e,
                };
                conn.queue(text.as_bytes());
                conn.flush()?;
            }
            other => {
                let name = command_name(other.byte());
                conn.error(
                    err::ER_UNKNOWN_COM_ERROR,
                    &format!("funnel admin: {name} is not supported by the admin console"),
                )?;
            }
        }
        Ok(true)
    }

    fn snapshot(&self, detail: bool) -> Result<Box<Snapshot>, String> {
        self.shared
            .control
            .snapshot(detail, SNAPSHOT_TIMEOUT)
            .ok_or_else(|| {
                format!(
                    "funnel admin: the event loop did not answer within {} s (shutting down?)",
                    SNAPSHOT_TIMEOUT.as_secs()
                )
            })
    }

    fn with_snapshot(&self, detail: bool, f: impl FnOnce(&Snapshot) -> Table) -> Answer {
        match self.snapshot(detail) {
            Ok(s) => Answer::Table(f(&s)),
            Err(e) => Answer::Err(err::ER_UNKNOWN_ERROR, e),
        }
    }

    fn control<T: crate::control::Reply>(
        &self,
        what: &str,
        make: impl Fn(crossbeam_channel::Sender<T>) -> Control,
    ) -> Result<T, Answer> {
        info!(
            "admin console: {} from {} asks: {what}",
            self.user, self.peer
        );
        self.shared.control.call(make, CONTROL_TIMEOUT).ok_or_else(|| {
            Answer::Err(
                err::ER_UNKNOWN_ERROR,
                format!(
                    "funnel admin: the event loop did not answer {what} within {} s (shutting down?)",
                    CONTROL_TIMEOUT.as_secs()
                ),
            )
        })
    }

    fn query(&self, sql: &str) -> Answer {
        let text = clean(sql);
        if text.is_empty() {
            return Answer::Err(ER_EMPTY_QUERY, "Query was empty".into());
        }
        let upper = text.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("");
        if self.read_only
            && matches!(
                verb,
                "PAUSE" | "RESUME" | "RELOAD" | "SHUTDOWN" | "KILL" | "RECONNECT"
            )
        {
            info!(
                "admin console: {} from {} (read-only) refused: {upper}",
                self.user, self.peer
            );
            return Answer::Err(
                ER_SPECIFIC_ACCESS_DENIED_ERROR,
                format!(
                    "funnel admin: access denied; {upper} needs the admin account, '{}' may run SHOW commands only",
                    self.user
                ),
            );
        }
        match upper.as_str() {
            "SHOW STATS" => return self.with_snapshot(false, report::show_stats),
            "SHOW POOLS" => return self.with_snapshot(false, report::show_pools),
            "SHOW SERVERS" => return self.with_snapshot(false, report::show_servers),
            "SHOW CLIENTS" => return self.with_snapshot(true, report::show_clients),
            "SHOW BACKENDS" => return self.with_snapshot(true, report::show_backends),
            "SHOW BACKLOG" => return self.with_snapshot(false, report::show_backlog),
            "SHOW LATENCY" => return self.with_snapshot(false, report::show_latency),
            "SHOW QUERIES" => return self.with_snapshot(true, report::show_queries),
            "SHOW RULES" => return self.with_snapshot(false, report::show_rules),
            "SHOW CONFIG" => return self.with_snapshot(false, report::show_config),
            "SHOW VERSION" => return self.with_snapshot(false, report::show_version),
            "HELP" | "SHOW HELP" | "SHOW COMMANDS" => return Answer::Table(report::show_help()),
            "PAUSE" => {
                return match self.control("PAUSE", |reply| Control::Pause { reply }) {
                    Ok(msg) => Answer::Ok(msg),
                    Err(a) => a,
                }
            }
            "RESUME" => {
                return match self.control("RESUME", |reply| Control::Resume { reply }) {
                    Ok(msg) => Answer::Ok(msg),
                    Err(a) => a,
                }
            }
            "RELOAD" => {
                return match self.control("RELOAD", |reply| Control::Reload { reply }) {
                    Ok(Ok(msg)) => Answer::Ok(msg),
                    Ok(Err(msg)) => Answer::Err(err::ER_UNKNOWN_ERROR, msg),
                    Err(a) => a,
                }
            }
            "SHUTDOWN" => return Answer::Shutdown,
            // What clients send on their own.
            "SHOW WARNINGS" | "SHOW ERRORS" => {
                return Answer::Table(Table::new(&[
                    ("Level", Kind::Str),
                    ("Code", Kind::Int),
                    ("Message", Kind::Str),
                ]))
            }
            "SHOW DATABASES" | "SHOW SCHEMAS" => {
                return Answer::Table(Table::new(&[("Database", Kind::Str)]))
            }
            "SHOW TABLES" => return Answer::Table(Table::new(&[("Tables_in_funnel", Kind::Str)])),
            "BEGIN" | "COMMIT" | "ROLLBACK" | "START TRANSACTION" => {
                return Answer::Ok(String::new())
            }
            _ => {}
        }
        if let Some(id) = strip_word(&text, "KILL").and_then(|rest| strip_word(rest, "CLIENT")) {
            let Ok(id) = id.parse::<u64>() else {
                return unknown(&text);
            };
            return match self.control("KILL CLIENT", |reply| Control::KillClient { id, reply }) {
                Ok(Ok(msg)) => Answer::Ok(msg),
                Ok(Err(msg)) => Answer::Err(err::ER_NO_SUCH_THREAD, msg),
                Err(a) => a,
            };
        }
        if let Some(pool) = strip_word(&text, "RECONNECT").filter(|p| !p.is_empty()) {
            let pool = pool.trim_matches('`').to_string();
            return match self.control("RECONNECT", |reply| Control::ReconnectPool {
                pool: pool.clone(),
                reply,
            }) {
                Ok(Ok(msg)) => Answer::Ok(msg),
                Ok(Err(msg)) => Answer::Err(err::ER_UNKNOWN_ERROR, msg),
                Err(a) => a,
            };
        }
        for (word, pause) in [("PAUSE", true), ("RESUME", false)] {
            if let Some(pool) = strip_word(&text, word).filter(|p| !p.is_empty()) {
                let pool = pool.trim_matches('`').to_string();
                return match self.control(word, |reply| Control::PausePool {
                    pool: pool.clone(),
                    pause,
                    reply,
                }) {
                    Ok(Ok(msg)) => Answer::Ok(msg),
                    Ok(Err(msg)) => Answer::Err(err::ER_UNKNOWN_ERROR, msg),
                    Err(a) => a,
                };
            }
        }
        if let Some(rest) = strip_word(&text, "SET") {
            return self.set(rest);
        }
        if upper.starts_with("USE ") {
            return Answer::Ok(String::new());
        }
        if let Some(rest) = strip_word(&text, "SELECT") {
            return self.select(rest);
        }
        unknown(&text)
    }

    /// `SET [GLOBAL] key = value` of a reloadable configuration key: the
    /// running configuration with that value, applied as a reload and kept
    /// until the next reload from the file. What client programs set for
    /// their session (`SET NAMES`, `SET autocommit = 1`, `SET @x = 1`, ...)
    /// is accepted with no effect.
    fn set(&self, rest: &str) -> Answer {
        let mut change = None;
        for item in split_items(rest) {
            match set_item(item) {
                Ok(None) => {}
                Ok(Some(_)) if change.is_some() => {
                    return Answer::Err(
                        ER_PARSE_ERROR,
                        "funnel: SET changes one configuration key at a time".into(),
                    )
                }
                Ok(Some(setting)) => change = Some(setting),
                Err(answer) => return answer,
            }
        }
        let Some((setting, value)) = change else {
            return Answer::Ok(String::new());
        };
        if self.read_only {
            info!(
                "admin console: {} from {} (read-only) refused: SET {setting}",
                self.user, self.peer
            );
            return Answer::Err(
                ER_SPECIFIC_ACCESS_DENIED_ERROR,
                format!(
                    "funnel: access denied; SET needs the admin account, '{}' may run SHOW commands only",
                    self.user
                ),
            );
        }
        // The value stays out of the log: it may be a password.
        let what = format!("SET {setting}");
        match self.control(&what, |reply| Control::Set {
            setting: setting.clone(),
            value: value.clone(),
            reply,
        }) {
            Ok(Ok(msg)) => Answer::Ok(msg),
            Ok(Err(e)) => {
                let code = match e {
                    SetError::Unknown(_) => ER_UNKNOWN_SYSTEM_VARIABLE,
                    SetError::ReadOnly(_) => ER_VARIABLE_IS_READONLY,
                    SetError::Invalid(_) => ER_WRONG_VALUE_FOR_VAR,
                };
                Answer::Err(code, format!("funnel: {e}"))
            }
            Err(a) => a,
        }
    }

    /// The few SELECTs clients send by themselves: system variables,
    /// DATABASE(), USER(), VERSION(), CONNECTION_ID() and literals.
    fn select(&self, rest: &str) -> Answer {
        let mut items = rest.trim();
        // An optional trailing LIMIT n.
        if let Some(pos) = items.to_ascii_uppercase().rfind(" LIMIT ") {
            let n = items[pos + 7..].trim();
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                items = items[..pos].trim();
            }
        }
        let mut t = Table::default();
        let mut row = Vec::new();
        for item in split_items(items) {
            let (expr, alias) = split_alias(item);
            let name = alias.unwrap_or(expr).to_string();
            let value = match self.eval(expr) {
                Ok(v) => v,
                Err(a) => return a,
            };
            let kind = if matches!(value, Cell::Int(_)) {
                Kind::Int
            } else {
                Kind::Str
            };
            t.columns.push((name, kind));
            row.push(value);
        }
        if row.is_empty() {
            return unknown(&format!("SELECT {rest}"));
        }
        t.rows.push(row);
        Answer::Table(t)
    }

    fn eval(&self, expr: &str) -> Result<Cell, Answer> {
        let e = expr.trim();
        let upper = e.to_ascii_uppercase();
        if let Some(var) = upper.strip_prefix("@@") {
            let var = var
                .strip_prefix("SESSION.")
                .or_else(|| var.strip_prefix("GLOBAL."))
                .or_else(|| var.strip_prefix("LOCAL."))
                .unwrap_or(var);
            return system_variable(&var.to_ascii_lowercase()).ok_or_else(|| {
                Answer::Err(
                    ER_UNKNOWN_SYSTEM_VARIABLE,
                    format!("Unknown system variable '{}'", var.to_ascii_lowercase()),
                )
            });
        }
        if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) {
            return e
                .parse::<u64>()
                .map(Cell::Int)
                .map_err(|_| unknown(&format!("SELECT {e}")));
        }
        if e.len() >= 2
            && (e.starts_with('\'') && e.ends_with('\'') || e.starts_with('"') && e.ends_with('"'))
        {
            return Ok(Cell::Str(e[1..e.len() - 1].to_string()));
        }
        let compact: String = upper.chars().filter(|c| !c.is_whitespace()).collect();
        match compact.as_str() {
            "DATABASE()" | "SCHEMA()" => Ok(Cell::Null),
            "USER()" | "CURRENT_USER()" | "CURRENT_USER" | "SESSION_USER()" | "SYSTEM_USER()" => {
                Ok(Cell::Str(format!("{}@{}", self.user, self.peer.ip())))
            }
            "VERSION()" => Ok(Cell::Str(format!(
                "{}-funnel-admin",
                env!("CARGO_PKG_VERSION")
            ))),
            "CONNECTION_ID()" => Ok(Cell::Int(u64::from(self.id))),
            _ => Err(unknown(&format!("SELECT {e}"))),
        }
    }
}

/// A configuration key and its new value (`None`: `DEFAULT`).
type SetChange = (Setting, Option<String>);

/// One assignment of a `SET`: `Ok(None)` for what a client sets for its
/// session (no effect here), a configuration key with its value (`None`:
/// `DEFAULT`), or the error to answer.
fn set_item(item: &str) -> Result<Option<SetChange>, Answer> {
    let first = item.split(' ').next().unwrap_or("").to_ascii_uppercase();
    let Some((lhs, value)) = split_assignment(item) else {
        let second = item.split(' ').nth(1).unwrap_or("").to_ascii_uppercase();
        let session = matches!(
            first.as_str(),
            "NAMES" | "CHARACTER" | "CHARSET" | "TRANSACTION" | "PASSWORD" | "ROLE" | "DEFAULT"
        ) || (matches!(first.as_str(), "SESSION" | "LOCAL" | "GLOBAL")
            && second == "TRANSACTION");
        if session {
            return Ok(None);
        }
        return Err(Answer::Err(
            ER_PARSE_ERROR,
            format!(
                "funnel: expected SET key = value, got SET {}",
                item.chars().take(80).collect::<String>()
            ),
        ));
    };
    let lower = lhs.to_ascii_lowercase();
    let (session, name) = if let Some(name) = strip_word(lhs, "GLOBAL") {
        (false, name)
    } else if let Some(name) = strip_word(lhs, "SESSION").or_else(|| strip_word(lhs, "LOCAL")) {
        (true, name)
    } else if lower.starts_with("@@global.") {
        (false, &lhs[9..])
    } else if lower.starts_with("@@session.") {
        (true, &lhs[10..])
    } else if lower.starts_with("@@local.") {
        (true, &lhs[8..])
    } else if let Some(name) = lhs.strip_prefix("@@") {
        // mysqld's default scope for @@name is the session.
        (true, name)
    } else if lhs.starts_with('@') {
        // A user variable.
        return Ok(None);
    } else {
        (false, lhs)
    };
    let name = name.trim();
    let client_variable = system_variable(&name.to_ascii_lowercase()).is_some()
        || matches!(
            name.to_ascii_lowercase().as_str(),
            "sql_safe_updates" | "sql_select_limit" | "max_join_size"
        );
    let parsed = Setting::parse(name);
    if session {
        return match parsed {
            Ok(_) | Err(SetError::ReadOnly(_)) if !client_variable => Err(Answer::Err(
                ER_GLOBAL_VARIABLE,
                format!(
                    "funnel: Variable '{name}' is a GLOBAL variable and should be set with SET GLOBAL"
                ),
            )),
            _ => Ok(None),
        };
    }
    match parsed {
        Ok(setting) => Ok(Some((setting, set_value(value)))),
        Err(SetError::Unknown(_)) if client_variable => Ok(None),
        Err(e @ SetError::ReadOnly(_)) => {
            Err(Answer::Err(ER_VARIABLE_IS_READONLY, format!("funnel: {e}")))
        }
        Err(e) => Err(Answer::Err(
            ER_UNKNOWN_SYSTEM_VARIABLE,
            format!("funnel: Unknown system variable '{name}': {e}"),
        )),
    }
}

/// `name = value` (or `:=`) split at the first `=` outside quotes.
fn split_assignment(item: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    for (i, c) in item.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '=') => {
                let lhs = item[..i].trim_end();
                let lhs = lhs.strip_suffix(':').unwrap_or(lhs).trim_end();
                return Some((lhs, item[i + 1..].trim()));
            }
            _ => {}
        }
    }
    None
}

/// The value as the file would hold it: a quoted string unquoted (`\x`
/// and a doubled quote are escapes, as in SQL); `DEFAULT` is `None`.
fn set_value(value: &str) -> Option<String> {
    if value.eq_ignore_ascii_case("DEFAULT") {
        return None;
    }
    let quoted = value.len() >= 2
        && (value.starts_with('\'') && value.ends_with('\'')
            || value.starts_with('"') && value.ends_with('"'));
    if !quoted {
        return Some(value.to_string());
    }
    let q = value.chars().next().unwrap_or('\'');
    let mut out = String::new();
    let mut chars = value[1..value.len() - 1].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c if c == q && chars.peek() == Some(&q) => {
                chars.next();
                out.push(q);
            }
            c => out.push(c),
        }
    }
    Some(out)
}

fn unknown(text: &str) -> Answer {
    let shown: String = text.chars().take(80).collect();
    Answer::Err(
        ER_PARSE_ERROR,
        format!(
            "funnel admin: unknown command '{shown}'; valid commands: {}",
            report::command_names()
        ),
    )
}

/// System variables clients ask for at connect time.
fn system_variable(name: &str) -> Option<Cell> {
    let int = |v: u64| Some(Cell::Int(v));
    let s = |v: &str| Some(Cell::Str(v.to_string()));
    match name {
        "version_comment" => s("funnel admin console"),
        "version" => s(&format!("{}-funnel-admin", env!("CARGO_PKG_VERSION"))),
        "max_allowed_packet" => int(MAX_COMMAND as u64),
        "wait_timeout" | "interactive_timeout" => int(IDLE_TIMEOUT.as_secs()),
        "net_write_timeout" | "net_read_timeout" => int(WRITE_TIMEOUT.as_secs()),
        "autocommit" | "auto_increment_increment" | "auto_increment_offset" => int(1),
        "lower_case_table_names" | "sql_auto_is_null" | "read_only" => int(0),
        "socket" | "hostname" => Some(Cell::Null),
        "sql_mode" => s(""),
        "character_set_client"
        | "character_set_connection"
        | "character_set_results"
        | "character_set_server"
        | "character_set_database" => s("utf8mb4"),
        "collation_connection" | "collation_server" | "collation_database" => {
            s("utf8mb4_general_ci")
        }
        "tx_isolation" | "transaction_isolation" => s("REPEATABLE-READ"),
        "tx_read_only" | "transaction_read_only" => int(0),
        "time_zone" => s("SYSTEM"),
        "system_time_zone" => s("UTC"),
        "license" => s("MIT"),
        "performance_schema" => int(0),
        "net_buffer_length" => int(16384),
        "query_cache_size" | "query_cache_type" => int(0),
        _ => None,
    }
}

/// The query without comments, trailing `;` and surrounding whitespace,
/// inner whitespace folded (outside quotes).
pub(crate) fn clean(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut space = false;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                space = true;
            }
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                space = true;
            }
            '#' => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                space = true;
            }
            c if c.is_whitespace() => space = true,
            c => {
                if space && !out.is_empty() {
                    out.push(' ');
                }
                space = false;
                if c == '\'' || c == '"' || c == '`' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    while out.ends_with(';') || out.ends_with(' ') {
        out.pop();
    }
    out
}

/// `text` without its first word if that is `word` (any case).
fn strip_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    let rest = &text[word.len()..];
    if head.eq_ignore_ascii_case(word) && (rest.is_empty() || rest.starts_with(' ')) {
        Some(rest.trim_start())
    } else {
        None
    }
}

/// Splits a select list at top-level commas.
fn split_items(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = s[start..].trim();
    if !last.is_empty() || !out.is_empty() {
        out.push(last);
    }
    out
}

/// `expr AS alias` → (expr, Some(alias)), quotes around the alias removed.
fn split_alias(item: &str) -> (&str, Option<&str>) {
    let upper = item.to_ascii_uppercase();
    match upper.rfind(" AS ") {
        Some(pos) => {
            let alias = item[pos + 4..]
                .trim()
                .trim_matches(|c| c == '`' || c == '\'' || c == '"');
            (item[..pos].trim(), Some(alias))
        }
        None => (item, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_comments_semicolons_and_folds_space() {
        assert_eq!(clean("  show\n\tpools ;; "), "show pools");
        assert_eq!(clean("/* x */ SHOW /* y */ STATS -- z"), "SHOW STATS");
        assert_eq!(clean("select 'a  ;b' ;"), "select 'a  ;b'");
        assert_eq!(clean(""), "");
    }

    #[test]
    fn select_lists() {
        assert_eq!(
            split_items("@@a, f(1, 2) AS x, 'a,b'"),
            vec!["@@a", "f(1, 2) AS x", "'a,b'"]
        );
        assert_eq!(
            split_alias("@@version_comment"),
            ("@@version_comment", None)
        );
        assert_eq!(
            split_alias("DATABASE() as `db`"),
            ("DATABASE()", Some("db"))
        );
        assert_eq!(strip_word("select 1", "SELECT"), Some("1"));
        assert_eq!(strip_word("selected", "SELECT"), None);
    }

    /// What `set_item` makes of one assignment: "session" (no effect),
    /// "SETTING = VALUE", or the error code.
    fn item(text: &str) -> String {
        match set_item(&clean(text)) {
            Ok(None) => "session".into(),
            Ok(Some((s, v))) => format!("{s} = {v:?}"),
            Err(Answer::Err((code, _), msg)) => {
                assert!(msg.starts_with("funnel: "), "{msg}");
                code.to_string()
            }
            Err(_) => panic!("{text}: not an error answer"),
        }
    }

    #[test]
    fn set_items() {
        // What client programs set for their session: no effect, no error.
        for text in [
            "NAMES utf8mb4",
            "NAMES utf8mb4 COLLATE utf8mb4_general_ci",
            "CHARACTER SET utf8",
            "autocommit = 1",
            "AUTOCOMMIT=0",
            "character_set_results = NULL",
            "SESSION sql_mode = 'ANSI'",
            "@@session.wait_timeout = 10",
            "@x := 5",
            "SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "sql_select_limit = DEFAULT",
        ] {
            assert_eq!(item(text), "session", "{text}");
        }
        // Funnel keys, in every accepted form.
        for (text, expected) in [
            (
                "queue_timeout_ms = 50",
                "[pool] queue_timeout_ms = Some(\"50\")",
            ),
            (
                "GLOBAL queue_timeout_ms=50",
                "[pool] queue_timeout_ms = Some(\"50\")",
            ),
            (
                "@@global.pool.queue_timeout_ms = 50",
                "[pool] queue_timeout_ms = Some(\"50\")",
            ),
            (
                "user.app.connections := DEFAULT",
                "[user app] connections = None",
            ),
            (
                "max_allowed_packet = '16M'",
                "[funnel] max_allowed_packet = Some(\"16M\")",
            ),
            (
                "server_version = \"8.0 \\\"x\\\" 'y'\"",
                "[funnel] server_version = Some(\"8.0 \\\"x\\\" 'y'\")",
            ),
            (
                "server_version = 'it''s'",
                "[funnel] server_version = Some(\"it's\")",
            ),
            (
                "user.`a=b`.connections = 2",
                "[user a=b] connections = Some(\"2\")",
            ),
        ] {
            assert_eq!(item(text), expected, "{text}");
        }
        // Unknown, read only, session scope of a funnel key, not an assignment.
        for (text, code) in [
            ("no_such_key = 1", "1193"),
            ("queue_timeout = 1", "1193"),
            ("listen = '127.0.0.1:1'", "1193"),
            ("funnel.listen = '127.0.0.1:1'", "1238"),
            ("GLOBAL unix_socket = ''", "1238"),
            ("SESSION queue_timeout_ms = 5", "1229"),
            ("@@queue_timeout_ms = 5", "1229"),
            ("queue_timeout_ms", "1064"),
        ] {
            assert_eq!(item(text), code, "{text}");
        }
    }

    #[test]
    fn scrambles_are_printable() {
        let a = new_scramble();
        assert!(a.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'$'));
        assert_ne!(a, new_scramble());
    }
}
