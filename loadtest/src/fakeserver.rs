//! A tiny blocking MySQL server for the tests (thread per connection), so
//! the event loop can be exercised without mysqld. It answers the scripted
//! queries with result sets of the right shape, built with funnel's codec.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use funnel::protocol::auth::{native_password_stage2, verify_native};
use funnel::protocol::consts::*;
use funnel::protocol::handshake::{AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use funnel::protocol::packet::{next_frame, write_packet};
use funnel::protocol::response::{
    column_type, encode_column_def, encode_eof, encode_err, encode_ok, encode_text_row, OkPacket,
};

#[derive(Clone, Debug)]
pub struct FakeConfig {
    pub password: String,
    /// Ask every client to switch to mysql_native_password.
    pub auth_switch: bool,
    /// Close the connection instead of answering the n-th query.
    pub close_after: Option<u64>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            password: "pw".into(),
            auth_switch: false,
            close_after: None,
        }
    }
}

pub struct FakeServer {
    pub port: u16,
    pub logins: Arc<AtomicU64>,
    pub queries: Arc<AtomicU64>,
}

/// Starts a server on 127.0.0.1 (any port) serving until the process ends.
pub fn start(cfg: FakeConfig) -> FakeServer {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let logins = Arc::new(AtomicU64::new(0));
    let queries = Arc::new(AtomicU64::new(0));
    let (lg, qs) = (logins.clone(), queries.clone());
    let conn_ids = Arc::new(AtomicU32::new(1));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (cfg, lg, qs, ids) = (cfg.clone(), lg.clone(), qs.clone(), conn_ids.clone());
            std::thread::spawn(move || {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let _ = serve(s, &cfg, id, &lg, &qs);
            });
        }
    });
    FakeServer {
        port,
        logins,
        queries,
    }
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((h, p)) = next_frame(&self.buf) {
                let out = (h.seq, p.to_vec());
                self.buf.drain(..h.total_len());
                return Some(out);
            }
            let mut b = [0u8; 4096];
            match self.s.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
            }
        }
    }

    fn send(&mut self, seq: u8, payloads: &[Vec<u8>]) -> Option<()> {
        let mut out = Vec::new();
        let mut seq = seq;
        for p in payloads {
            seq = write_packet(&mut out, seq, p);
        }
        self.s.write_all(&out).ok()
    }
}

fn ok() -> Vec<u8> {
    let mut p = Vec::new();
    encode_ok(
        &mut p,
        &OkPacket {
            header: OK_HEADER,
            affected_rows: 1,
            last_insert_id: 0,
            status: SERVER_STATUS_AUTOCOMMIT,
            warnings: 0,
            info: b"",
            session_state: None,
        },
        CLIENT_PROTOCOL_41,
    );
    p
}

fn err(code: u16, msg: &str) -> Vec<u8> {
    let mut p = Vec::new();
    encode_err(&mut p, code, "HY000", msg);
    p
}

/// A one-column text result set with `rows` rows.
fn result_set(rows: usize, value: &[u8], deprecate_eof: bool) -> Vec<Vec<u8>> {
    let mut v = vec![vec![1u8]];
    let mut col = Vec::new();
    encode_column_def(&mut col, "c", column_type::MYSQL_TYPE_STRING, 33, 120, 0, 0);
    v.push(col);
    let eof = || {
        let mut e = Vec::new();
        encode_eof(&mut e, 0, SERVER_STATUS_AUTOCOMMIT);
        e
    };
    if !deprecate_eof {
        v.push(eof());
    }
    for _ in 0..rows {
        let mut r = Vec::new();
        encode_text_row(&mut r, &[Some(value)]);
        v.push(r);
    }
    if deprecate_eof {
        let mut p = Vec::new();
        encode_ok(
            &mut p,
            &OkPacket {
                header: EOF_HEADER,
                affected_rows: 0,
                last_insert_id: 0,
                status: SERVER_STATUS_AUTOCOMMIT,
                warnings: 0,
                info: b"",
                session_state: None,
            },
            CLIENT_PROTOCOL_41,
        );
        v.push(p);
    } else {
        v.push(eof());
    }
    v
}

fn serve(
    s: TcpStream,
    cfg: &FakeConfig,
    id: u32,
    logins: &AtomicU64,
    queries: &AtomicU64,
) -> Option<()> {
    s.set_nodelay(true).ok();
    let mut c = Conn { s, buf: Vec::new() };
    let scramble: Vec<u8> = (0..20u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(id as u8) | 1)
        .collect();
    let caps = CLIENT_LONG_PASSWORD
        | CLIENT_PROTOCOL_41
        | CLIENT_SECURE_CONNECTION
        | CLIENT_PLUGIN_AUTH
        | CLIENT_CONNECT_WITH_DB
        | CLIENT_TRANSACTIONS
        | CLIENT_MULTI_RESULTS
        | CLIENT_DEPRECATE_EOF;
    let hs = HandshakeV10 {
        server_version: "5.5.5-10.11.0-FakeDB".into(),
        connection_id: id,
        scramble: scramble.clone(),
        capabilities: caps,
        charset: 33,
        status: SERVER_STATUS_AUTOCOMMIT,
        auth_plugin: if cfg.auth_switch {
            "caching_sha2_password".into()
        } else {
            MYSQL_NATIVE_PASSWORD.into()
        },
    };
    let mut p = Vec::new();
    hs.encode(&mut p);
    c.send(0, &[p])?;
    let (seq, payload) = c.read()?;
    let resp = HandshakeResponse::decode(&payload).ok()?;
    let stage2 = native_password_stage2(cfg.password.as_bytes());
    let (seq, auth, used_scramble) = if cfg.auth_switch {
        let new: Vec<u8> = scramble.iter().map(|b| b ^ 0x55 | 1).collect();
        let mut p = Vec::new();
        AuthSwitchRequest {
            plugin: MYSQL_NATIVE_PASSWORD.into(),
            data: [&new[..], &[0]].concat(),
        }
        .encode(&mut p);
        c.send(seq.wrapping_add(1), &[p])?;
        let (seq, auth) = c.read()?;
        (seq, auth, new)
    } else {
        (seq, resp.auth_response.clone(), scramble)
    };
    if !verify_native(Some(&stage2), &used_scramble, &auth) {
        c.send(seq.wrapping_add(1), &[err(1045, "Access denied for user")])?;
        return None;
    }
    c.send(seq.wrapping_add(1), &[ok()])?;
    logins.fetch_add(1, Ordering::Relaxed);
    let deprecate_eof = resp.capabilities & CLIENT_DEPRECATE_EOF != 0;
    let mut n = 0u64;
    loop {
        let (_, cmd) = c.read()?;
        match cmd.first() {
            Some(&COM_QUIT) => return None,
            Some(&COM_QUERY) => {}
            _ => {
                c.send(1, &[err(1047, "Unknown command")])?;
                continue;
            }
        }
        n += 1;
        if cfg.close_after.is_some_and(|k| n >= k) {
            return None;
        }
        queries.fetch_add(1, Ordering::Relaxed);
        let sql = String::from_utf8_lossy(&cmd[1..]).into_owned();
        let answer = if let Some(rest) = sql.strip_prefix("SELECT SLEEP(") {
            let secs: f64 = rest.trim_end_matches(')').parse().unwrap_or(0.0);
            std::thread::sleep(Duration::from_secs_f64(secs));
            result_set(1, b"0", deprecate_eof)
        } else if sql.contains("FROM bad") || sql.contains("UPDATE bad") {
            vec![err(1146, "Table 'app.bad' doesn't exist")]
        } else if sql.contains("BETWEEN") {
            result_set(10, &[b'7'; 119], deprecate_eof)
        } else if sql.starts_with("SELECT c FROM") {
            result_set(1, &[b'7'; 119], deprecate_eof)
        } else {
            vec![ok()]
        };
        c.send(1, &answer)?;
    }
}
