//! The MySQL protocol by hand, for what client libraries will not do or
//! will not show: a socket dropped mid-result, commands pipelined, any
//! handshake charset or capability, every packet of an answer as sent.
//!
//! [`Wire`] is a client connection at the packet level (framing, sequence
//! ids, the greeting, the login with `mysql_native_password` and its auth
//! switch); [`Wire::read_result`] reads one text-protocol answer. Each test
//! file keeps its own view of answers on top of these.

use sha1::{Digest, Sha1};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const CLIENT_LONG_PASSWORD: u32 = 1;
pub const CLIENT_LONG_FLAG: u32 = 4;
pub const CLIENT_CONNECT_WITH_DB: u32 = 8;
pub const CLIENT_PROTOCOL_41: u32 = 0x200;
pub const CLIENT_INTERACTIVE: u32 = 0x400;
pub const CLIENT_SSL: u32 = 0x800;
pub const CLIENT_TRANSACTIONS: u32 = 0x2000;
pub const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub const CLIENT_MULTI_STATEMENTS: u32 = 0x1_0000;
pub const CLIENT_MULTI_RESULTS: u32 = 0x2_0000;
pub const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
pub const CLIENT_SESSION_TRACK: u32 = 1 << 23;
pub const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
/// What every hand-made client asks for (no multi-statements).
pub const BASE_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_LONG_FLAG
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH;

pub const SERVER_MORE_RESULTS_EXISTS: u16 = 8;

pub const UTF8MB4_GENERAL_CI: u8 = 45;
pub const LATIN1_SWEDISH_CI: u8 = 8;

/// The largest payload of one physical packet.
const MAX_PAYLOAD: usize = 0xff_ffff;

/// An ERR packet, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: u16,
    /// Empty when the packet has none.
    pub state: String,
    pub message: String,
}

impl ServerError {
    /// An ERR payload (0xff, code, maybe '#' and the SQL state, message).
    pub fn parse(p: &[u8]) -> ServerError {
        let code = u16::from_le_bytes([p[1], p[2]]);
        let (state, msg) = if p.get(3) == Some(&b'#') {
            (String::from_utf8_lossy(&p[4..9]).into_owned(), &p[9..])
        } else {
            (String::new(), &p[3..])
        };
        ServerError {
            code,
            state,
            message: String::from_utf8_lossy(msg).into_owned(),
        }
    }

    /// An ERR payload that must be well-formed (with its SQL state);
    /// panics otherwise.
    pub fn parse_checked(p: &[u8]) -> ServerError {
        assert!(p.len() >= 3 && p[0] == 0xff, "not an ERR packet: {p:?}");
        assert_eq!(p.get(3), Some(&b'#'), "ERR packet without SQL state: {p:?}");
        assert!(p.len() >= 9, "ERR packet with a short SQL state: {p:?}");
        ServerError::parse(p)
    }
}

/// mysql_native_password's answer to `scramble` (nothing for no password).
pub fn native_token(pw: &str, scramble: &[u8]) -> Vec<u8> {
    if pw.is_empty() {
        return Vec::new();
    }
    let s1 = Sha1::digest(pw.as_bytes());
    let s2 = Sha1::digest(s1);
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(s2);
    let s3 = h.finalize();
    s1.iter().zip(s3.iter()).map(|(a, b)| a ^ b).collect()
}

/// The length-encoded integer at `*pos`, moving past it: `Some(None)` for
/// NULL (0xfb), `None` when `p` ends first.
pub fn lenenc(p: &[u8], pos: &mut usize) -> Option<Option<u64>> {
    let b = *p.get(*pos)?;
    *pos += 1;
    let n = match b {
        0xfb => return Some(None),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        x => return Some(Some(x as u64)),
    };
    let bytes = p.get(*pos..*pos + n)?;
    *pos += n;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    Some(Some(u64::from_le_bytes(v)))
}

/// A length-encoded integer that must be there (not NULL, not cut off).
pub fn lenenc_int(p: &[u8], pos: &mut usize) -> u64 {
    match lenenc(p, pos) {
        Some(Some(v)) => v,
        _ => panic!("no length-encoded integer at {} in {p:?}", *pos),
    }
}

/// Affected rows and status flags of an OK packet (or of an EOF packet
/// that ends a result set under CLIENT_DEPRECATE_EOF).
pub fn ok_fields(p: &[u8]) -> (u64, u16) {
    let mut pos = 1;
    let affected = lenenc_int(p, &mut pos);
    lenenc_int(p, &mut pos); // last insert id
    (affected, u16::from_le_bytes([p[pos], p[pos + 1]]))
}

/// Status flags of an OK packet.
pub fn ok_status(p: &[u8]) -> u16 {
    ok_fields(p).1
}

/// True for an EOF packet (0xfe, shorter than 9 bytes).
pub fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 9
}

/// One physical packet with sequence id `seq`.
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < MAX_PAYLOAD);
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

/// A framed COM_QUERY (sequence 0).
pub fn query_packet(sql: &str) -> Vec<u8> {
    frame(0, &[&[0x03][..], sql.as_bytes()].concat())
}

/// Reads one physical packet: (sequence id, payload).
pub fn read_packet_from(r: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let mut p = vec![0u8; len];
    r.read_exact(&mut p)?;
    Ok((h[3], p))
}

/// The packets in `bytes` as (sequence id, payload), and what is left
/// after the last whole one (a cut-off packet, or nothing).
pub fn split_packets(mut bytes: &[u8]) -> (Vec<(u8, Vec<u8>)>, &[u8]) {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0]) as usize;
        if bytes.len() < 4 + len {
            break;
        }
        out.push((bytes[3], bytes[4..4 + len].to_vec()));
        bytes = &bytes[4 + len..];
    }
    (out, bytes)
}

/// Copies `from` to `to` until `from` ends (or either fails), showing
/// each piece to `seen` once written; then shuts `to` down for writing.
/// One direction of a relay between a client and a server.
pub fn pump(from: &mut TcpStream, to: &mut TcpStream, mut seen: impl FnMut(&[u8])) {
    let mut buf = [0u8; 65536];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        seen(&buf[..n]);
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the server's greeting says.
#[derive(Debug, Clone)]
pub struct Greeting {
    pub connection_id: u32,
    /// Both parts of the auth data (20 bytes from MariaDB and the funnel).
    pub scramble: Vec<u8>,
    pub capabilities: u32,
}

impl Greeting {
    /// A protocol 10 greeting; None for anything else.
    pub fn parse(g: &[u8]) -> Option<Greeting> {
        if g.first() != Some(&10) {
            return None;
        }
        let mut i = 1 + g[1..].iter().position(|&b| b == 0)? + 1;
        let connection_id = u32::from_le_bytes(g.get(i..i + 4)?.try_into().ok()?);
        i += 4;
        let mut scramble = g.get(i..i + 8)?.to_vec();
        i += 8 + 1; // + filler
        let low = u16::from_le_bytes([*g.get(i)?, *g.get(i + 1)?]);
        // charset, status
        let high = u16::from_le_bytes([*g.get(i + 5)?, *g.get(i + 6)?]);
        i += 2 + 1 + 2 + 2;
        let auth_len = *g.get(i)? as usize;
        i += 1 + 10;
        let part2 = auth_len.saturating_sub(8).max(13) - 1;
        scramble.extend_from_slice(g.get(i..i + part2)?);
        Some(Greeting {
            connection_id,
            scramble,
            capabilities: u32::from(low) | (u32::from(high) << 16),
        })
    }
}

/// What a hand-made client logs in with.
#[derive(Debug, Clone)]
pub struct Login<'a> {
    pub user: &'a str,
    pub password: &'a str,
    /// The default schema (CLIENT_CONNECT_WITH_DB is added for it).
    pub db: Option<&'a str>,
    /// The handshake collation id.
    pub charset: u8,
    pub capabilities: u32,
}

impl<'a> Login<'a> {
    /// `BASE_CAPS`, utf8mb4_general_ci.
    pub fn new(user: &'a str, password: &'a str, db: Option<&'a str>) -> Login<'a> {
        Login {
            user,
            password,
            db,
            charset: UTF8MB4_GENERAL_CI,
            capabilities: BASE_CAPS,
        }
    }

    pub fn charset(mut self, charset: u8) -> Login<'a> {
        self.charset = charset;
        self
    }

    /// Capabilities asked for besides `BASE_CAPS`.
    pub fn caps(mut self, extra: u32) -> Login<'a> {
        self.capabilities |= extra;
        self
    }

    /// The capability flags the handshake response carries.
    pub fn sent_capabilities(&self) -> u32 {
        match self.db {
            Some(_) => self.capabilities | CLIENT_CONNECT_WITH_DB,
            None => self.capabilities,
        }
    }

    /// The handshake response payload answering `scramble`.
    pub fn response(&self, scramble: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&self.sent_capabilities().to_le_bytes());
        p.extend_from_slice(&(16u32 << 20).to_le_bytes());
        p.push(self.charset);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(self.user.as_bytes());
        p.push(0);
        let token = native_token(self.password, scramble);
        p.push(token.len() as u8);
        p.extend_from_slice(&token);
        if let Some(db) = self.db {
            p.extend_from_slice(db.as_bytes());
            p.push(0);
        }
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }
}

/// One text-protocol answer, as [`Wire::read_result`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An OK packet: affected rows, status flags.
    Ok { affected_rows: u64, status: u16 },
    /// A result set (NULL is None) and the status flags of its end.
    Rows {
        rows: Vec<Vec<Option<Vec<u8>>>>,
        status: u16,
    },
    /// An ERR packet's payload (first or in place of a row).
    Err(Vec<u8>),
}

impl Answer {
    /// The server says more results of the same statement follow.
    pub fn more_results(&self) -> bool {
        match self {
            Answer::Ok { status, .. } | Answer::Rows { status, .. } => {
                status & SERVER_MORE_RESULTS_EXISTS != 0
            }
            Answer::Err(_) => false,
        }
    }
}

/// Result rows as (lossy) UTF-8 text, NULL as None.
pub fn lossy_rows(rows: Vec<Vec<Option<Vec<u8>>>>) -> Vec<Vec<Option<String>>> {
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                .collect()
        })
        .collect()
}

/// Why [`Wire::read_result`] read no answer.
#[derive(Debug)]
pub enum ReadFault {
    /// The connection failed, closed or timed out.
    Io(io::Error),
    /// Bytes that are no valid answer (described).
    Garbage(String),
}

impl From<io::Error> for ReadFault {
    fn from(e: io::Error) -> ReadFault {
        ReadFault::Io(e)
    }
}

/// A client connection at the packet level.
pub struct Wire {
    pub stream: TcpStream,
    /// Sequence id of the next packet written.
    pub seq: u8,
    /// Sequence id of the first packet of the last answer read by
    /// [`read_result`](Self::read_result).
    pub first_seq: u8,
}

impl Wire {
    /// A TCP connection to 127.0.0.1:`port` (nothing read yet), without
    /// Nagle, with these read and write timeouts (None: no write timeout).
    pub fn connect(port: u16, read_timeout: Duration, write_timeout: Option<Duration>) -> Wire {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        stream.set_write_timeout(write_timeout).unwrap();
        stream.set_nodelay(true).unwrap();
        Wire {
            stream,
            seq: 0,
            first_seq: 0,
        }
    }

    /// Reads one physical packet: (sequence id, payload); the next packet
    /// written follows its sequence id.
    pub fn read_packet(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let (seq, p) = read_packet_from(&mut self.stream)?;
        self.seq = seq.wrapping_add(1);
        Ok((seq, p))
    }

    /// Reads one logical packet: a payload of 16 MiB or more is joined
    /// from its physical packets.
    pub fn read_payload(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let (_, p) = self.read_packet()?;
            let last = p.len() < MAX_PAYLOAD;
            out.extend_from_slice(&p);
            if last {
                return Ok(out);
            }
        }
    }

    /// `payload` framed from the current sequence id on (split into
    /// physical packets past 16 MiB), the sequence id moved past it.
    pub fn frame(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PAYLOAD);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            out.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if n < MAX_PAYLOAD {
                return out;
            }
        }
    }

    /// Writes `payload` as the next packet.
    pub fn write_packet(&mut self, payload: &[u8]) -> io::Result<()> {
        let out = self.frame(payload);
        self.stream.write_all(&out)
    }

    /// Writes a command packet (sequence 0) without reading the answer.
    pub fn command(&mut self, payload: &[u8]) -> io::Result<()> {
        self.seq = 0;
        self.write_packet(payload)
    }

    /// Reads the greeting; an error of kind InvalidData for anything else.
    pub fn read_greeting(&mut self) -> io::Result<Greeting> {
        let (_, g) = self.read_packet()?;
        Greeting::parse(&g).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("not a greeting: {g:?}"))
        })
    }

    /// Sends the handshake response to `greeting` and reads the answer,
    /// answering auth switches to mysql_native_password: Ok with the OK
    /// payload, or Err with whatever else ended the login (an ERR packet).
    pub fn login(
        &mut self,
        greeting: &Greeting,
        login: &Login,
    ) -> io::Result<Result<Vec<u8>, Vec<u8>>> {
        self.write_packet(&login.response(&greeting.scramble))?;
        loop {
            let (_, reply) = self.read_packet()?;
            match reply.first() {
                Some(0x00) => return Ok(Ok(reply)),
                Some(0xfe) => {
                    // Auth switch: plugin name, NUL, new scramble.
                    let nul = reply[1..].iter().position(|&b| b == 0).unwrap_or(0) + 1;
                    let data = &reply[nul + 1..];
                    let data = data.strip_suffix(&[0]).unwrap_or(data);
                    self.write_packet(&native_token(login.password, data))?;
                }
                _ => return Ok(Err(reply)),
            }
        }
    }

    /// Connects, reads the greeting and logs in; panics on any failure.
    pub fn open(port: u16, read_timeout: Duration, login: &Login) -> (Wire, Greeting, Vec<u8>) {
        let mut w = Wire::connect(port, read_timeout, Some(Duration::from_secs(60)));
        let g = w.read_greeting().expect("read the greeting");
        match w.login(&g, login).expect("log in") {
            Ok(ok) => (w, g, ok),
            Err(p) => panic!("login as {} failed: {p:02x?}", login.user),
        }
    }

    /// Sends a COM_QUERY of any bytes without reading the answer.
    pub fn send_query(&mut self, sql: &[u8]) -> io::Result<()> {
        self.command(&[&[0x03][..], sql].concat())
    }

    /// Reads one text-protocol answer: an OK, an ERR, or a result set
    /// (column definitions skipped, EOF packets expected).
    pub fn read_result(&mut self) -> Result<Answer, ReadFault> {
        let (seq, p) = self.read_packet()?;
        self.first_seq = seq;
        match p.first() {
            Some(0x00) => {
                let mut pos = 1;
                let affected_rows = lenenc(&p, &mut pos).flatten().unwrap_or(0);
                lenenc(&p, &mut pos);
                let status = p
                    .get(pos..pos + 2)
                    .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]));
                return Ok(Answer::Ok {
                    affected_rows,
                    status,
                });
            }
            Some(0xff) => return Ok(Answer::Err(p)),
            None => return Err(ReadFault::Garbage("empty packet".into())),
            _ => {}
        }
        let mut pos = 0;
        let Some(Some(ncols)) = lenenc(&p, &mut pos) else {
            return Err(ReadFault::Garbage(format!("bad column count {p:?}")));
        };
        for _ in 0..ncols {
            self.read_packet()?;
        }
        let (_, eof) = self.read_packet()?;
        if !is_eof(&eof) {
            return Err(ReadFault::Garbage(format!("expected EOF, got {eof:?}")));
        }
        let mut rows = Vec::new();
        loop {
            let p = self.read_payload()?;
            if is_eof(&p) {
                let status = p.get(3..5).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]));
                return Ok(Answer::Rows { rows, status });
            }
            if p.first() == Some(&0xff) {
                return Ok(Answer::Err(p));
            }
            let mut pos = 0;
            let mut row = Vec::new();
            for _ in 0..ncols {
                match lenenc(&p, &mut pos) {
                    Some(None) => row.push(None),
                    Some(Some(n)) => {
                        let Some(v) = p.get(pos..pos + n as usize) else {
                            return Err(ReadFault::Garbage(format!("bad row {p:?}")));
                        };
                        row.push(Some(v.to_vec()));
                        pos += n as usize;
                    }
                    None => return Err(ReadFault::Garbage(format!("bad row {p:?}"))),
                }
            }
            rows.push(row);
        }
    }
}
