//! A blocking MySQL client just big enough for health checks: connect with
//! a timeout (TCP or unix socket), log in, run text queries and read their
//! rows as strings. It speaks through the funnel's own codec
//! (`crate::protocol`); every read and write is bounded by the timeout, so a
//! hung server gives an error, never a stuck thread.
//!
//! Logins: mysql_native_password, caching_sha2_password (its fast path, and
//! its full authentication: the password in clear over a unix socket, RSA
//! encrypted over TCP) and client_ed25519, answering the server's auth
//! switch. No TLS: the monitor account must be allowed to log in without it.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::BackendAddr;
use crate::protocol::auth::{scramble_native, sign_ed25519, CLIENT_ED25519};
use crate::protocol::caching_sha2::{self, CACHING_SHA2_PASSWORD};
use crate::protocol::consts::*;
use crate::protocol::handshake::{AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use crate::protocol::lenenc::{Field, Reader};
use crate::protocol::packet::{join_payload, scan_message, write_packet};
use crate::protocol::response::{decode_column_count, decode_err, is_eof};

/// Largest message the client accepts: health answers are a few hundred
/// bytes; this bounds what a confused server can make it buffer.
const MAX_MESSAGE: usize = 1 << 20;
/// Most columns and rows of an answer (SHOW ALL SLAVES STATUS has about
/// 60 columns and a row per replication source).
const MAX_COLUMNS: u64 = 1024;
const MAX_ROWS: usize = 1024;
/// Auth exchanges after the handshake response (a switch, a key request,
/// the encrypted password, ...) before the login is given up.
const MAX_AUTH_ROUNDS: usize = 6;

const CLIENT_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_CONNECT_ATTRS;

/// Why a query gave no rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// The server answered with an error; the connection is still usable.
    Refused { code: u16, message: String },
    /// The connection broke, timed out or the server spoke nonsense: it
    /// must be dropped.
    Broken(String),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Refused { code, message } => write!(f, "{message} ({code})"),
            QueryError::Broken(why) => f.write_str(why),
        }
    }
}

/// A text result set, values as (lossy UTF-8) strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSet {
    /// Index of the column of this name, compared without case.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
    }
}

pub struct MiniClient {
    socket: Socket,
    over_unix: bool,
    timeout: Duration,
    /// Bytes read and not yet taken as a message.
    input: Vec<u8>,
    /// Logged in: a COM_QUIT is in order when dropped.
    logged_in: bool,
}

impl MiniClient {
    /// Connects and logs in; `timeout` bounds the connect and then the
    /// whole login, and later each query's answer.
    pub fn connect(
        address: &BackendAddr,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<MiniClient, String> {
        let (domain, peer) = match address {
            BackendAddr::Tcp(a) => (Domain::for_address(*a), SockAddr::from(*a)),
            BackendAddr::Unix(path) => (
                Domain::UNIX,
                SockAddr::unix(path).map_err(|e| format!("socket path {}: {e}", path.display()))?,
            ),
        };
        let connect_error = |e: std::io::Error| match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                format!("connect to {address}: no answer within {timeout:?}")
            }
            _ => format!("connect to {address}: {e}"),
        };
        let socket = Socket::new(domain, Type::STREAM, None).map_err(connect_error)?;
        socket
            .connect_timeout(&peer, timeout)
            .map_err(connect_error)?;
        let over_unix = matches!(address, BackendAddr::Unix(_));
        if !over_unix {
            // Small request and answer packets: no Nagle delay.
            socket.set_nodelay(true).map_err(connect_error)?;
        }
        socket
            .set_write_timeout(Some(timeout))
            .map_err(connect_error)?;
        let mut client = MiniClient {
            socket,
            over_unix,
            timeout,
            input: Vec::new(),
            logged_in: false,
        };
        client.login(user, password.as_bytes())?;
        client.logged_in = true;
        Ok(client)
    }

    fn login(&mut self, user: &str, password: &[u8]) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let (_, greeting) = self.read_message(deadline)?;
        if greeting.first() == Some(&ERR_HEADER) {
            return Err(format!(
                "server refused the connection: {}",
                err_text(&greeting)
            ));
        }
        let greeting = HandshakeV10::decode(&greeting)
            .map_err(|e| format!("bad handshake from server: {e}"))?;
        if greeting.capabilities & CLIENT_PROTOCOL_41 == 0 {
            return Err("server does not speak protocol 4.1".into());
        }
        // The nonce the next auth answer is computed from.
        let mut nonce = greeting.scramble.clone();
        let (plugin, auth_response) = if greeting.auth_plugin == CACHING_SHA2_PASSWORD {
            (
                CACHING_SHA2_PASSWORD,
                caching_sha2::scramble(password, &nonce),
            )
        } else {
            (MYSQL_NATIVE_PASSWORD, scramble_native(password, &nonce))
        };
        let response = HandshakeResponse {
            capabilities: (CLIENT_CAPS & greeting.capabilities) | CLIENT_PROTOCOL_41,
            max_packet: MAX_MESSAGE as u32,
            charset: greeting.charset,
            username: user.to_owned(),
            auth_response,
            database: None,
            auth_plugin: Some(plugin.to_owned()),
            attrs: vec![
                ("_client_name".into(), "funnel".into()),
                ("_client_version".into(), env!("CARGO_PKG_VERSION").into()),
                ("program_name".into(), "funnel health check".into()),
            ],
        };
        let mut payload = Vec::new();
        response.encode(&mut payload);
        self.send(1, &payload)?;
        for _ in 0..MAX_AUTH_ROUNDS {
            let (seq, reply) = self.read_message(deadline)?;
            let answer = match reply.first() {
                Some(&OK_HEADER) => return Ok(()),
                Some(&ERR_HEADER) => return Err(format!("login refused: {}", err_text(&reply))),
                Some(&AUTH_SWITCH_HEADER) => {
                    let switch = AuthSwitchRequest::decode(&reply)
                        .map_err(|e| format!("bad auth switch from server: {e}"))?;
                    match switch.plugin.as_str() {
                        MYSQL_NATIVE_PASSWORD => scramble_native(password, &switch.data),
                        CACHING_SHA2_PASSWORD => {
                            nonce = switch.data;
                            caching_sha2::scramble(password, &nonce)
                        }
                        CLIENT_ED25519 => {
                            // The nonce is the rest of the packet as sent
                            // (decode drops a last NUL, which may be one of
                            // its 32 random bytes).
                            let nonce = reply.get(2 + switch.plugin.len()..).unwrap_or_default();
                            sign_ed25519(password, nonce).to_vec()
                        }
                        other => {
                            return Err(format!(
                                "server asks for auth plugin {other}; the health check logs in with \
                                 mysql_native_password, caching_sha2_password or client_ed25519 only"
                            ))
                        }
                    }
                }
                Some(&caching_sha2::AUTH_MORE_DATA) => {
                    match caching_sha2::decode_auth_more_data(&reply)
                        .map_err(|e| format!("bad AuthMoreData from server: {e}"))?
                    {
                        [caching_sha2::FAST_AUTH_SUCCESS] => continue, // an OK follows
                        [caching_sha2::PERFORM_FULL_AUTH] if self.over_unix => {
                            let mut clear = password.to_vec();
                            clear.push(0);
                            clear
                        }
                        [caching_sha2::PERFORM_FULL_AUTH] => vec![caching_sha2::REQUEST_PUBLIC_KEY],
                        pem => caching_sha2::encrypt_password(password, &nonce, pem)
                            .map_err(|e| format!("cannot use the server's RSA public key: {e}"))?,
                    }
                }
                _ => return Err("unexpected packet during login".into()),
            };
            self.send(seq.wrapping_add(1), &answer)?;
        }
        Err(format!(
            "login not finished after {MAX_AUTH_ROUNDS} auth exchanges"
        ))
    }

    /// Runs one statement (COM_QUERY) and reads its whole answer.
    pub fn query(&mut self, sql: &str) -> Result<ResultSet, QueryError> {
        let mut command = Vec::with_capacity(1 + sql.len());
        command.push(COM_QUERY);
        command.extend_from_slice(sql.as_bytes());
        self.send(0, &command).map_err(QueryError::Broken)?;
        let deadline = Instant::now() + self.timeout;
        let broken = QueryError::Broken;
        let (_, first) = self.read_message(deadline).map_err(broken)?;
        match first.first() {
            Some(&ERR_HEADER) => return Err(refusal(&first)),
            Some(&OK_HEADER) => return Ok(ResultSet::default()),
            _ => {}
        }
        let count = decode_column_count(&first)
            .map_err(|e| QueryError::Broken(format!("bad result set header: {e}")))?;
        if count > MAX_COLUMNS {
            return Err(QueryError::Broken(format!(
                "answer with {count} columns (at most {MAX_COLUMNS} expected)"
            )));
        }
        let mut answer = ResultSet::default();
        for _ in 0..count {
            let (_, def) = self.read_message(deadline).map_err(broken)?;
            answer.columns.push(column_name(&def).map_err(broken)?);
        }
        // Without CLIENT_DEPRECATE_EOF an EOF packet ends the definitions.
        let (_, eof) = self.read_message(deadline).map_err(broken)?;
        if !is_eof(&eof) {
            return Err(QueryError::Broken(
                "no EOF packet after the column definitions".into(),
            ));
        }
        loop {
            let (_, row) = self.read_message(deadline).map_err(broken)?;
            if is_eof(&row) {
                return Ok(answer);
            }
            if row.first() == Some(&ERR_HEADER) {
                return Err(refusal(&row));
            }
            if answer.rows.len() >= MAX_ROWS {
                return Err(QueryError::Broken(format!(
                    "answer with more than {MAX_ROWS} rows"
                )));
            }
            answer
                .rows
                .push(text_row(&row, answer.columns.len()).map_err(broken)?);
        }
    }

    fn send(&mut self, seq: u8, payload: &[u8]) -> Result<(), String> {
        let mut frame = Vec::with_capacity(payload.len() + 4);
        write_packet(&mut frame, seq, payload);
        self.socket.write_all(&frame).map_err(|e| match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                format!("server took nothing within {:?}", self.timeout)
            }
            _ => format!("write: {e}"),
        })
    }

    /// The next whole message (packets joined) and its last sequence id,
    /// read before `deadline`.
    fn read_message(&mut self, deadline: Instant) -> Result<(u8, Vec<u8>), String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(span) =
                scan_message(&self.input, MAX_MESSAGE).map_err(|e| format!("bad packet: {e}"))?
            {
                let mut payload = Vec::with_capacity(span.payload_len);
                join_payload(&self.input, &span, &mut payload);
                self.input.drain(..span.wire_len);
                return Ok((span.last_seq, payload));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let no_answer = || format!("no answer within {:?}", self.timeout);
            if left.is_zero() {
                return Err(no_answer());
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(|e| format!("read: {e}"))?;
            match self.socket.read(&mut chunk) {
                Ok(0) => return Err("server closed the connection".into()),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    return Err(no_answer())
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// Says goodbye (COM_QUIT) after a login, so that mysqld does not count
/// and log an aborted connection each time a checker reconnects or stops.
/// Best effort: five bytes into the socket buffer, bounded by the write
/// timeout.
impl Drop for MiniClient {
    fn drop(&mut self) {
        if self.logged_in {
            let _ = self.send(0, &[COM_QUIT]);
        }
    }
}

/// "message (code)" of an ERR packet.
fn err_text(payload: &[u8]) -> String {
    match decode_err(payload) {
        Ok(e) => format!("{} ({})", String::from_utf8_lossy(e.message), e.code),
        Err(e) => format!("malformed error packet: {e}"),
    }
}

fn refusal(payload: &[u8]) -> QueryError {
    match decode_err(payload) {
        Ok(e) => QueryError::Refused {
            code: e.code,
            message: String::from_utf8_lossy(e.message).into_owned(),
        },
        Err(e) => QueryError::Broken(format!("malformed error packet: {e}")),
    }
}

/// The name of a ColumnDefinition41: after catalog, schema, table and
/// org_table.
fn column_name(payload: &[u8]) -> Result<String, String> {
    let mut r = Reader::new(payload);
    for what in ["catalog", "schema", "table", "org_table"] {
        r.lenenc_str()
            .field(what)
            .map_err(|e| format!("bad column definition: {e}"))?;
    }
    let name = r
        .lenenc_str()
        .field("column name")
        .map_err(|e| format!("bad column definition: {e}"))?;
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// A text-protocol row of `columns` values: lenenc strings, 0xfb for NULL.
fn text_row(payload: &[u8], columns: usize) -> Result<Vec<Option<String>>, String> {
    let mut r = Reader::new(payload);
    let mut values = Vec::with_capacity(columns);
    for _ in 0..columns {
        if r.peek_u8() == Some(LOCAL_INFILE_HEADER) {
            r.skip(1).map_err(|e| format!("bad row: {e}"))?;
            values.push(None);
        } else {
            let v = r
                .lenenc_str()
                .field("row value")
                .map_err(|e| format!("bad row: {e}"))?;
            values.push(Some(String::from_utf8_lossy(v).into_owned()));
        }
    }
    if !r.is_empty() {
        return Err(format!(
            "bad row: {} bytes after its {columns} values",
            r.remaining()
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::response::{encode_column_def, encode_text_row};

    #[test]
    fn column_names_and_rows_decode_and_bad_ones_are_errors() {
        let mut def = Vec::new();
        encode_column_def(&mut def, "Slave_IO_Running", 0xfd, 33, 3, 0, 0);
        assert_eq!(column_name(&def).unwrap(), "Slave_IO_Running");
        for cut in 0..def.len().min(20) {
            // Cut inside the names: an error, never a panic.
            let _ = column_name(&def[..cut]);
        }
        assert!(column_name(&[0xfc]).is_err());

        let mut row = Vec::new();
        encode_text_row(&mut row, &[Some(b"Yes"), None, Some(b"")]);
        assert_eq!(
            text_row(&row, 3).unwrap(),
            vec![Some("Yes".into()), None, Some(String::new())]
        );
        assert!(text_row(&row, 4).is_err(), "too few values");
        assert!(text_row(&row, 2).is_err(), "values left over");
        for cut in 0..row.len() {
            assert!(text_row(&row[..cut], 3).is_err());
        }
    }

    /// A server that greets (or not) and then sends random bytes, framed or
    /// not, in the login and in a query's answer: the client gives errors,
    /// never panics, and never waits past its timeout.
    #[test]
    fn garbage_from_the_server_gives_errors_not_panics() {
        use crate::protocol::packet::write_packet;
        use std::os::unix::net::UnixListener;

        const ROUNDS: usize = 300;
        let dir = std::env::temp_dir().join(format!("funnel-health-smoke-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("garbage.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let greeting = HandshakeV10 {
                server_version: "5.5.5-10.11.0-MariaDB".into(),
                connection_id: 7,
                scramble: (1..=20).collect(),
                capabilities: CLIENT_CAPS,
                charset: 45,
                status: SERVER_STATUS_AUTOCOMMIT,
                auth_plugin: MYSQL_NATIVE_PASSWORD.into(),
            };
            for round in 0..ROUNDS {
                let (mut stream, _) = listener.accept().unwrap();
                let mut out = Vec::new();
                let mut seq = 0;
                if round % 3 > 0 {
                    let mut payload = Vec::new();
                    greeting.encode(&mut payload);
                    write_packet(&mut out, 0, &payload);
                    seq = 2;
                }
                if round % 3 == 2 {
                    write_packet(&mut out, 2, &[OK_HEADER, 0, 0, 2, 0, 0, 0]);
                    seq = 1;
                }
                let packets = next() % 6;
                for p in 0..packets {
                    let len = (next() % 40) as usize;
                    let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    // Often a first byte the client acts on.
                    let firsts = [
                        OK_HEADER,
                        ERR_HEADER,
                        AUTH_SWITCH_HEADER,
                        0x01,
                        0x02,
                        0xfb,
                        0xfc,
                    ];
                    if let Some(b) = payload.first_mut() {
                        *b = firsts[(next() % firsts.len() as u64) as usize];
                    }
                    if p == 0 && round % 2 == 0 && !payload.is_empty() {
                        payload.truncate(1); // a column count
                    }
                    seq = write_packet(&mut out, seq, &payload);
                }
                if packets == 0 {
                    out.extend((0..next() % 40).map(|_| next() as u8));
                }
                let _ = stream.write_all(&out);
                // The client then reads the end of the stream, at once.
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let _ = stream.read_to_end(&mut Vec::new());
            }
        });
        let address = BackendAddr::Unix(path);
        let timeout = Duration::from_secs(5);
        let (mut logins, mut answers) = (0, 0);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            if let Ok(mut client) = MiniClient::connect(&address, "u", "p", timeout) {
                logins += 1;
                if client.query("SELECT 1").is_ok() {
                    answers += 1;
                }
            }
            assert!(started.elapsed() < timeout, "waited for a closed stream");
        }
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(logins > 0, "no round reached the query");
        assert!(answers < ROUNDS);
    }

    #[test]
    fn columns_are_found_by_name_without_case() {
        let answer = ResultSet {
            columns: vec!["Slave_IO_Running".into(), "seconds_behind_master".into()],
            rows: Vec::new(),
        };
        assert_eq!(answer.column("Slave_IO_Running"), Some(0));
        assert_eq!(answer.column("Seconds_Behind_Master"), Some(1));
        assert_eq!(answer.column("Slave_SQL_Running"), None);
    }
}
