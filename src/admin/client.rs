//! A minimal MySQL client for `funnel stats`: log in with
//! mysql_native_password, run text queries, read result sets.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::protocol::auth::scramble_native;
use crate::protocol::consts::*;
use crate::protocol::handshake::{AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use crate::protocol::lenenc::Reader;
use crate::protocol::packet::{join_payload, scan_message, write_packet};
use crate::protocol::response::{decode_err, is_eof, is_err, is_ok};

const MAX_MESSAGE: usize = 64 << 20;

pub struct Client {
    stream: TcpStream,
    rbuf: Vec<u8>,
    seq: u8,
}

/// A result set as text.
#[derive(Debug, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The value of column `name` in `row` ("" if absent or NULL).
    pub fn get<'a>(&'a self, row: &'a [Option<String>], name: &str) -> &'a str {
        self.col(name)
            .and_then(|i| row.get(i))
            .and_then(|v| v.as_deref())
            .unwrap_or("")
    }

    pub fn num(&self, row: &[Option<String>], name: &str) -> u64 {
        self.get(row, name).parse().unwrap_or(0)
    }
}

fn proto(e: impl std::fmt::Display) -> String {
    format!("protocol error: {e}")
}

impl Client {
    pub fn connect(
        addr: &str,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Client, String> {
        let sockaddr = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let stream = TcpStream::connect_timeout(&sockaddr, timeout)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        let mut c = Client {
            stream,
            rbuf: Vec::new(),
            seq: 0,
        };
        let greeting = c.read().map_err(|e| format!("{addr}: {e}"))?;
        if is_err(&greeting) {
            return Err(server_error(&greeting));
        }
        let hs = HandshakeV10::decode(&greeting).map_err(proto)?;
        let caps = CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH;
        let resp = HandshakeResponse {
            capabilities: caps & hs.capabilities | CLIENT_PROTOCOL_41,
            max_packet: MAX_MESSAGE as u32,
            charset: 45,
            username: user.to_string(),
            auth_response: scramble_native(password.as_bytes(), &hs.scramble),
            database: None,
            auth_plugin: Some(MYSQL_NATIVE_PASSWORD.to_string()),
            attrs: Vec::new(),
        };
        let mut p = Vec::new();
        resp.encode(&mut p);
        c.send(&p).map_err(|e| e.to_string())?;
        loop {
            let reply = c.read()?;
            if is_ok(&reply) {
                return Ok(c);
            }
            if is_err(&reply) {
                return Err(server_error(&reply));
            }
            if reply.first() == Some(&AUTH_SWITCH_HEADER) {
                let switch = AuthSwitchRequest::decode(&reply).map_err(proto)?;
                if switch.plugin != MYSQL_NATIVE_PASSWORD {
                    return Err(format!(
                        "unsupported authentication plugin {}",
                        switch.plugin
                    ));
                }
                let answer = scramble_native(password.as_bytes(), &switch.data);
                c.send(&answer).map_err(|e| e.to_string())?;
                continue;
            }
            return Err(proto("unexpected packet during login"));
        }
    }

    fn read(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(span) = scan_message(&self.rbuf, MAX_MESSAGE).map_err(proto)? {
                let mut payload = Vec::with_capacity(span.payload_len);
                join_payload(&self.rbuf, &span, &mut payload);
                self.rbuf.drain(..span.wire_len);
                self.seq = span.last_seq.wrapping_add(1);
                return Ok(payload);
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_string(),
                _ => e.to_string(),
            })?;
            if n == 0 {
                return Err("connection closed by the server".into());
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        self.seq = write_packet(&mut out, self.seq, payload);
        self.stream.write_all(&out)
    }

    /// Runs a query: Ok(rows) for a result set (no columns for an OK).
    pub fn query(&mut self, sql: &str) -> Result<Rows, String> {
        let mut p = vec![COM_QUERY];
        p.extend_from_slice(sql.as_bytes());
        self.seq = 0;
        self.send(&p).map_err(|e| e.to_string())?;
        let first = self.read()?;
        if is_err(&first) {
            return Err(server_error(&first));
        }
        if is_ok(&first) {
            return Ok(Rows::default());
        }
        let n = Reader::new(&first).lenenc_int().map_err(proto)?;
        let mut rows = Rows::default();
        for _ in 0..n {
            let def = self.read()?;
            let mut r = Reader::new(&def);
            for _ in 0..4 {
                r.lenenc_str().map_err(proto)?; // catalog, schema, table, org_table
            }
            let name = r.lenenc_str().map_err(proto)?;
            rows.columns
                .push(String::from_utf8_lossy(name).into_owned());
        }
        let eof = self.read()?;
        if !is_eof(&eof) {
            return Err(proto("expected EOF after the column definitions"));
        }
        loop {
            let row = self.read()?;
            if is_eof(&row) {
                return Ok(rows);
            }
            if is_err(&row) {
                return Err(server_error(&row));
            }
            let mut r = Reader::new(&row);
            let mut values = Vec::with_capacity(rows.columns.len());
            for _ in 0..rows.columns.len() {
                if r.peek_u8() == Some(0xfb) {
                    r.skip(1).map_err(proto)?;
                    values.push(None);
                } else {
                    let v = r.lenenc_str().map_err(proto)?;
                    values.push(Some(String::from_utf8_lossy(v).into_owned()));
                }
            }
            rows.rows.push(values);
        }
    }
}

fn server_error(payload: &[u8]) -> String {
    match decode_err(payload) {
        Ok(e) => format!(
            "ERROR {} ({}): {}",
            e.code,
            e.sql_state
                .map(|s| String::from_utf8_lossy(&s).into_owned())
                .unwrap_or_default(),
            String::from_utf8_lossy(e.message)
        ),
        Err(e) => proto(e),
    }
}
