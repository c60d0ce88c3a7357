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

use crate::fake_mysqld::Reply;

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

    /// One response, written by `answer` into a [`Reply`] numbered from
    /// `seq` with the capabilities agreed (`caps`).
    fn send(&mut self, seq: u8, caps: u32, answer: impl FnOnce(&mut Reply<'_>)) -> Option<()> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        answer(&mut Reply::start(&mut out, &mut scratch, seq, caps));
        self.s.write_all(&out).ok()
    }
}

/// A one-column text result set with `rows` rows.
fn result_set(reply: &mut Reply<'_>, rows: usize, value: &[u8]) {
    let row: &[Option<&[u8]>] = &[Some(value)];
    reply.rows(&["c"], &vec![row; rows]);
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
    let mut out = Vec::new();
    write_packet(&mut out, 0, &p);
    c.s.write_all(&out).ok()?;
    let (seq, payload) = c.read()?;
    let resp = HandshakeResponse::decode(&payload).ok()?;
    let stage2 = native_password_stage2(cfg.password.as_bytes());
    let (seq, auth, used_scramble) = if cfg.auth_switch {
        let new: Vec<u8> = scramble.iter().map(|b| b ^ 0x55 | 1).collect();
        c.send(seq.wrapping_add(1), 0, |r| {
            AuthSwitchRequest {
                plugin: MYSQL_NATIVE_PASSWORD.into(),
                data: [&new[..], &[0]].concat(),
            }
            .encode(r.scratch);
            r.send();
        })?;
        let (seq, auth) = c.read()?;
        (seq, auth, new)
    } else {
        (seq, resp.auth_response.clone(), scramble)
    };
    if !verify_native(Some(&stage2), &used_scramble, &auth) {
        c.send(seq.wrapping_add(1), 0, |r| {
            r.err(1045, "28000", "Access denied for user")
        })?;
        return None;
    }
    let caps = resp.capabilities & caps;
    c.send(seq.wrapping_add(1), caps, |r| r.ok(1, None))?;
    logins.fetch_add(1, Ordering::Relaxed);
    let mut n = 0u64;
    loop {
        let (_, cmd) = c.read()?;
        match cmd.first() {
            Some(&COM_QUIT) => return None,
            Some(&COM_QUERY) => {}
            _ => {
                c.send(1, caps, |r| r.err(1047, "08S01", "Unknown command"))?;
                continue;
            }
        }
        n += 1;
        if cfg.close_after.is_some_and(|k| n >= k) {
            return None;
        }
        queries.fetch_add(1, Ordering::Relaxed);
        let sql = String::from_utf8_lossy(&cmd[1..]).into_owned();
        let sleep = sql.strip_prefix("SELECT SLEEP(").map(|rest| {
            let secs: f64 = rest.trim_end_matches(')').parse().unwrap_or(0.0);
            Duration::from_secs_f64(secs)
        });
        if let Some(d) = sleep {
            std::thread::sleep(d);
        }
        c.send(1, caps, |r| {
            if sleep.is_some() {
                result_set(r, 1, b"0")
            } else if sql.contains("FROM bad") || sql.contains("UPDATE bad") {
                r.err(1146, "42S02", "Table 'app.bad' doesn't exist")
            } else if sql.contains("BETWEEN") {
                result_set(r, 10, &[b'7'; 119])
            } else if sql.starts_with("SELECT c FROM") {
                result_set(r, 1, &[b'7'; 119])
            } else {
                r.ok(1, None)
            }
        })?;
    }
}
