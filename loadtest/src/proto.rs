//! The client side of the MySQL protocol, on top of funnel's pure codec:
//! the login exchange as a small state machine (shared by the event loop and
//! the blocking setup connection), the scripted queries, and a blocking
//! connection for `--prepare` and the preflight check.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use funnel::protocol::auth::scramble_native;
use funnel::protocol::consts::*;
use funnel::protocol::handshake::{AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use funnel::protocol::lenenc::Reader;
use funnel::protocol::packet::{next_frame, write_packet, FrameHeader, MAX_PAYLOAD_LEN};
use funnel::protocol::response::decode_err;
use funnel::protocol::tracker::{EndKind, Expect, PacketKind, Progress, ResponseTracker};

use crate::config::{Credentials, QueryKind, Target};

/// Why a login failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginError {
    /// The server answered with an ERR packet.
    Server { code: u16, message: String },
    /// The server asked for something this client cannot do.
    Unsupported(String),
    /// Undecodable packet.
    Protocol(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Server { code, message } => write!(f, "ERR {code}: {message}"),
            LoginError::Unsupported(m) => write!(f, "unsupported: {m}"),
            LoginError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

/// What to do after a login packet.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginStep {
    /// Send these framed bytes and wait for the next packet.
    Send(Vec<u8>),
    /// Wait for the next packet.
    Wait,
    /// Logged in with these capabilities.
    Done {
        capabilities: u32,
    },
    Failed(LoginError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoginState {
    Greeting,
    Reply,
    Done,
}

/// The client's half of the connection phase, for mysql_native_password
/// (with AuthSwitchRequest to it). Feed it each packet the server sends.
#[derive(Clone, Debug)]
pub struct Login {
    state: LoginState,
    caps: u32,
    deprecate_eof: bool,
    /// Collation id for the handshake; None = the server's default (from
    /// its greeting), as PHP's mysqlnd does when no charset is set.
    charset: Option<u8>,
    /// From the greeting, for the report.
    pub server_version: String,
}

impl Login {
    pub fn new(deprecate_eof: bool, charset: Option<u8>) -> Self {
        Login {
            state: LoginState::Greeting,
            caps: 0,
            deprecate_eof,
            charset,
            server_version: String::new(),
        }
    }

    /// The capabilities this client asks for (before intersecting with the
    /// server's): what PHP's mysqlnd sends, minus what we do not speak.
    pub fn wanted_capabilities(with_db: bool, deprecate_eof: bool) -> u32 {
        let mut caps = CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH;
        if with_db {
            caps |= CLIENT_CONNECT_WITH_DB;
        }
        if deprecate_eof {
            caps |= CLIENT_DEPRECATE_EOF;
        }
        caps
    }

    pub fn on_packet(&mut self, creds: &Credentials, seq: u8, payload: &[u8]) -> LoginStep {
        let fail = |e| LoginStep::Failed(e);
        match self.state {
            LoginState::Greeting => {
                if payload.first() == Some(&ERR_HEADER) {
                    // e.g. 1040 Too many connections, 1129 host blocked.
                    return fail(server_error(payload));
                }
                let hs = match HandshakeV10::decode(payload) {
                    Ok(hs) => hs,
                    Err(e) => return fail(LoginError::Protocol(format!("greeting: {e}"))),
                };
                if hs.capabilities & CLIENT_PROTOCOL_41 == 0 {
                    return fail(LoginError::Unsupported(
                        "server without CLIENT_PROTOCOL_41".into(),
                    ));
                }
                self.server_version = hs.version().to_owned();
                let wanted =
                    Self::wanted_capabilities(creds.database.is_some(), self.deprecate_eof);
                self.caps = wanted & hs.capabilities;
                let plugin =
                    (self.caps & CLIENT_PLUGIN_AUTH != 0).then(|| MYSQL_NATIVE_PASSWORD.to_owned());
                let resp = HandshakeResponse {
                    capabilities: self.caps,
                    max_packet: MAX_PAYLOAD_LEN as u32,
                    charset: self.charset.unwrap_or(hs.charset),
                    username: creds.user.clone(),
                    auth_response: scramble_native(creds.password.as_bytes(), &hs.scramble),
                    database: creds.database.clone(),
                    auth_plugin: plugin,
                    attrs: vec![],
                };
                let mut payload = Vec::with_capacity(128);
                resp.encode(&mut payload);
                let mut out = Vec::with_capacity(payload.len() + 4);
                write_packet(&mut out, seq.wrapping_add(1), &payload);
                self.state = LoginState::Reply;
                LoginStep::Send(out)
            }
            LoginState::Reply => match payload.first() {
                Some(&OK_HEADER) => {
                    self.state = LoginState::Done;
                    LoginStep::Done {
                        capabilities: self.caps,
                    }
                }
                Some(&ERR_HEADER) => fail(server_error(payload)),
                Some(&AUTH_SWITCH_HEADER) => match AuthSwitchRequest::decode(payload) {
                    Ok(sw) if sw.plugin == MYSQL_NATIVE_PASSWORD => {
                        let resp = scramble_native(creds.password.as_bytes(), &sw.data);
                        let mut out = Vec::with_capacity(24);
                        write_packet(&mut out, seq.wrapping_add(1), &resp);
                        LoginStep::Send(out)
                    }
                    Ok(sw) => fail(LoginError::Unsupported(format!(
                        "auth plugin {}",
                        sw.plugin
                    ))),
                    Err(e) => fail(LoginError::Protocol(format!("auth switch: {e}"))),
                },
                // caching_sha2_password's "fast auth succeeded": the OK follows.
                Some(&AUTH_MORE_DATA_HEADER) if payload == [AUTH_MORE_DATA_HEADER, 3] => {
                    LoginStep::Wait
                }
                Some(&AUTH_MORE_DATA_HEADER) => fail(LoginError::Unsupported(
                    "caching_sha2_password full authentication (needs TLS or RSA)".into(),
                )),
                _ => fail(LoginError::Protocol(
                    "unexpected packet during login".into(),
                )),
            },
            LoginState::Done => fail(LoginError::Protocol("packet after login".into())),
        }
    }
}

/// The code and message of an ERR payload (best effort).
pub fn server_error(payload: &[u8]) -> LoginError {
    match decode_err(payload) {
        Ok(e) => LoginError::Server {
            code: e.code,
            message: String::from_utf8_lossy(e.message).into_owned(),
        },
        Err(e) => LoginError::Protocol(format!("ERR packet: {e}")),
    }
}

/// Appends a framed COM_QUERY (sequence id 0). `sql` must be shorter than
/// 16 MiB.
pub fn write_com_query(out: &mut Vec<u8>, sql: &[u8]) {
    debug_assert!(sql.len() < MAX_PAYLOAD_LEN);
    FrameHeader {
        payload_len: sql.len() + 1,
        seq: 0,
    }
    .write(out);
    out.push(COM_QUERY);
    out.extend_from_slice(sql);
}

/// Appends a framed COM_QUIT.
pub fn write_com_quit(out: &mut Vec<u8>) {
    write_packet(out, 0, &[COM_QUIT]);
}

/// Appends the SQL of one scripted query. `id` is the row id (point,
/// write) or the start of the range; `sleep_s` the SLEEP() argument.
pub fn write_sql(out: &mut Vec<u8>, kind: QueryKind, table: &str, id: u64, sleep_s: f64) {
    // Writing to a Vec cannot fail.
    let _ = match kind {
        QueryKind::Point => write!(out, "SELECT c FROM {table} WHERE id = {id}"),
        QueryKind::Range => write!(
            out,
            "SELECT c FROM {table} WHERE id BETWEEN {id} AND {}",
            id + 9
        ),
        QueryKind::Sleep => write!(out, "SELECT SLEEP({sleep_s:.3})"),
        QueryKind::Write => write!(out, "UPDATE {table} SET k = k + 1 WHERE id = {id}"),
    };
}

/// The largest valid row-id draw for a kind: ranges start no later than
/// `table_size - 9` so that they cover 10 existing rows.
pub fn id_span(kind: QueryKind, table_size: u64) -> u64 {
    match kind {
        QueryKind::Range => table_size.saturating_sub(9).max(1),
        _ => table_size.max(1),
    }
}

/// Decodes a text-protocol row: lenenc strings, 0xfb for NULL.
pub fn decode_text_row(payload: &[u8]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let mut r = Reader::new(payload);
    let mut row = Vec::new();
    while !r.is_empty() {
        if r.peek_u8() == Some(LOCAL_INFILE_HEADER) {
            r.skip(1).map_err(|e| e.to_string())?;
            row.push(None);
        } else {
            row.push(Some(r.lenenc_str().map_err(|e| e.to_string())?.to_vec()));
        }
    }
    Ok(row)
}

enum SyncStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for SyncStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SyncStream::Tcp(s) => s.read(buf),
            SyncStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for SyncStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SyncStream::Tcp(s) => s.write(buf),
            SyncStream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blocking connection for setup work (`--prepare`, the preflight check).
pub struct SyncConn {
    stream: SyncStream,
    rbuf: Vec<u8>,
    caps: u32,
    pub server_version: String,
}

/// Rows of a text result set, as raw bytes.
pub type Rows = Vec<Vec<Option<Vec<u8>>>>;

impl SyncConn {
    pub fn connect(
        target: &Target,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<SyncConn, String> {
        let stream = match target {
            Target::Tcp { addr, .. } => {
                let s = TcpStream::connect_timeout(addr, timeout)
                    .map_err(|e| format!("connect to {target}: {e}"))?;
                s.set_nodelay(true).ok();
                s.set_read_timeout(Some(timeout)).ok();
                SyncStream::Tcp(s)
            }
            Target::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| format!("connect to {target}: {e}"))?;
                s.set_read_timeout(Some(timeout)).ok();
                SyncStream::Unix(s)
            }
        };
        let mut c = SyncConn {
            stream,
            rbuf: Vec::new(),
            caps: 0,
            server_version: String::new(),
        };
        let mut login = Login::new(false, None);
        loop {
            let (seq, payload) = c.read_packet()?;
            match login.on_packet(creds, seq, &payload) {
                LoginStep::Send(bytes) => c.send(&bytes)?,
                LoginStep::Wait => {}
                LoginStep::Done { capabilities } => {
                    c.caps = capabilities;
                    c.server_version = login.server_version;
                    return Ok(c);
                }
                LoginStep::Failed(e) => return Err(format!("login to {target}: {e}")),
            }
        }
    }

    /// Sets the read timeout (for long statements).
    pub fn set_timeout(&mut self, t: Duration) {
        let t = Some(t);
        match &self.stream {
            SyncStream::Tcp(s) => s.set_read_timeout(t).ok(),
            SyncStream::Unix(s) => s.set_read_timeout(t).ok(),
        };
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write: {e}"))
    }

    /// One physical packet: (sequence id, payload).
    fn read_packet(&mut self) -> Result<(u8, Vec<u8>), String> {
        loop {
            if let Some((h, payload)) = next_frame(&self.rbuf) {
                let out = (h.seq, payload.to_vec());
                self.rbuf.drain(..h.total_len());
                return Ok(out);
            }
            let mut buf = [0u8; 16384];
            let n = self
                .stream
                .read(&mut buf)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed by the server".into());
            }
            self.rbuf.extend_from_slice(&buf[..n]);
        }
    }

    /// Runs one statement; returns the rows of its (first) result set, or
    /// "ERR code: message".
    pub fn query(&mut self, sql: &str) -> Result<Rows, String> {
        let mut out = Vec::with_capacity(sql.len() + 5);
        write_com_query(&mut out, sql.as_bytes());
        self.send(&out)?;
        let mut tracker = ResponseTracker::new(self.caps);
        tracker.start(Expect::Query);
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (_, payload) = self.read_packet()?;
            let progress = tracker
                .feed(&payload)
                .map_err(|e| format!("protocol: {e}"))?;
            match tracker.last_kind() {
                PacketKind::Row => rows.push(decode_text_row(&payload)?),
                PacketKind::Err => error = Some(server_error(&payload)),
                _ => {}
            }
            match progress {
                Progress::NeedMore => {}
                Progress::LocalInfile => return Err("unexpected LOCAL INFILE request".into()),
                Progress::Complete { end, .. } => {
                    if end == EndKind::Err {
                        return Err(error.map(|e| e.to_string()).unwrap_or_default());
                    }
                    return Ok(rows);
                }
            }
        }
    }

    /// Sends COM_QUIT (best effort).
    pub fn quit(mut self) {
        let mut out = Vec::new();
        write_com_quit(&mut out);
        let _ = self.stream.write_all(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel::protocol::auth::native_password_stage2;
    use funnel::protocol::auth::verify_native;
    use funnel::protocol::packet::next_frame;

    fn creds() -> Credentials {
        Credentials {
            user: "app".into(),
            password: "pw".into(),
            database: Some("shop".into()),
        }
    }

    fn greeting(plugin: &str) -> Vec<u8> {
        let hs = HandshakeV10 {
            server_version: "5.5.5-10.11.6-MariaDB".into(),
            connection_id: 7,
            scramble: (1..=20).collect(),
            capabilities: !CLIENT_SSL,
            charset: 33,
            status: 2,
            auth_plugin: plugin.into(),
        };
        let mut out = Vec::new();
        hs.encode(&mut out);
        out
    }

    #[test]
    fn login_native() {
        let mut l = Login::new(false, None);
        let LoginStep::Send(bytes) = l.on_packet(&creds(), 0, &greeting(MYSQL_NATIVE_PASSWORD))
        else {
            panic!("expected a handshake response");
        };
        assert_eq!(l.server_version, "10.11.6-MariaDB");
        let (h, payload) = next_frame(&bytes).unwrap();
        assert_eq!(h.seq, 1);
        let r = HandshakeResponse::decode(payload).unwrap();
        assert_eq!(r.username, "app");
        assert_eq!(r.database.as_deref(), Some("shop"));
        assert_eq!(r.auth_plugin.as_deref(), Some(MYSQL_NATIVE_PASSWORD));
        assert_eq!(r.capabilities & CLIENT_DEPRECATE_EOF, 0);
        let scramble: Vec<u8> = (1..=20).collect();
        assert!(verify_native(
            Some(&native_password_stage2(b"pw")),
            &scramble,
            &r.auth_response
        ));
        let ok = [0u8, 0, 0, 2, 0, 0, 0];
        match l.on_packet(&creds(), 2, &ok) {
            LoginStep::Done { capabilities } => {
                assert_eq!(capabilities, r.capabilities);
                assert_ne!(capabilities & CLIENT_CONNECT_WITH_DB, 0);
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn login_auth_switch_and_errors() {
        let mut l = Login::new(true, Some(45));
        assert!(matches!(
            l.on_packet(&creds(), 0, &greeting("caching_sha2_password")),
            LoginStep::Send(_)
        ));
        let data: Vec<u8> = (50..70).collect();
        let sw = AuthSwitchRequest {
            plugin: MYSQL_NATIVE_PASSWORD.into(),
            data: [&data[..], &[0]].concat(),
        };
        let mut p = Vec::new();
        sw.encode(&mut p);
        let LoginStep::Send(bytes) = l.on_packet(&creds(), 2, &p) else {
            panic!("expected a switch response");
        };
        let (h, payload) = next_frame(&bytes).unwrap();
        assert_eq!(h.seq, 3);
        assert!(verify_native(
            Some(&native_password_stage2(b"pw")),
            &data,
            payload
        ));
        // Fast-auth success, then OK.
        assert_eq!(l.on_packet(&creds(), 4, &[1, 3]), LoginStep::Wait);
        assert!(matches!(
            l.on_packet(&creds(), 5, &[0, 0, 0, 2, 0, 0, 0]),
            LoginStep::Done { .. }
        ));

        let mut l = Login::new(false, None);
        let mut err = vec![0xff, 0x15, 0x04, b'#'];
        err.extend_from_slice(b"28000Access denied");
        l.on_packet(&creds(), 0, &greeting(MYSQL_NATIVE_PASSWORD));
        assert_eq!(
            l.on_packet(&creds(), 2, &err),
            LoginStep::Failed(LoginError::Server {
                code: 1045,
                message: "Access denied".into()
            })
        );
        // ERR instead of a greeting (Too many connections).
        let mut l = Login::new(false, None);
        let err = [0xff, 0x10, 0x04, b'T', b'o', b'o'];
        assert!(matches!(
            l.on_packet(&creds(), 0, &err),
            LoginStep::Failed(LoginError::Server { code: 1040, .. })
        ));
        // Unsupported switch.
        let mut l = Login::new(false, None);
        l.on_packet(&creds(), 0, &greeting(MYSQL_NATIVE_PASSWORD));
        let mut p = Vec::new();
        AuthSwitchRequest {
            plugin: "ed25519".into(),
            data: vec![1; 32],
        }
        .encode(&mut p);
        assert!(matches!(
            l.on_packet(&creds(), 2, &p),
            LoginStep::Failed(LoginError::Unsupported(_))
        ));
        assert!(matches!(
            Login::new(false, None).on_packet(&creds(), 0, &[10, 1, 2]),
            LoginStep::Failed(LoginError::Protocol(_))
        ));
    }

    #[test]
    fn sql_text() {
        let mut out = Vec::new();
        write_sql(&mut out, QueryKind::Point, "sbtest1", 42, 0.0);
        assert_eq!(out, b"SELECT c FROM sbtest1 WHERE id = 42");
        out.clear();
        write_sql(&mut out, QueryKind::Range, "sbtest1", 5, 0.0);
        assert_eq!(out, b"SELECT c FROM sbtest1 WHERE id BETWEEN 5 AND 14");
        out.clear();
        write_sql(&mut out, QueryKind::Sleep, "t", 0, 0.05);
        assert_eq!(out, b"SELECT SLEEP(0.050)");
        out.clear();
        write_sql(&mut out, QueryKind::Write, "t", 9, 0.0);
        assert_eq!(out, b"UPDATE t SET k = k + 1 WHERE id = 9");
        out.clear();
        write_com_query(&mut out, b"SELECT 1");
        assert_eq!(out, b"\x09\x00\x00\x00\x03SELECT 1");
        assert_eq!(id_span(QueryKind::Range, 10_000), 9_991);
        assert_eq!(id_span(QueryKind::Range, 5), 1);
        assert_eq!(id_span(QueryKind::Point, 10_000), 10_000);
    }

    #[test]
    fn text_rows() {
        assert_eq!(
            decode_text_row(&[2, b'4', b'2', 0xfb, 0]).unwrap(),
            vec![Some(b"42".to_vec()), None, Some(vec![])]
        );
        assert!(decode_text_row(&[5, b'a']).is_err());
    }
}
