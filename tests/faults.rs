//! Fault-tolerance tests ("Faults and bad input" issue): the real `funnel`
//! binary in front of MariaDB servers that get killed, restarted and have
//! their connections killed by a DBA; clients that stall, flood, pipeline or
//! send garbage; reloads and graceful shutdown; and a scripted fake backend
//! ([`fake`]) for faults a real server cannot produce on demand (garbage,
//! half-written packets, a stall in the middle of a result).
//!
//! Tests that kill or restart mysqld, or count the funnel's connections on
//! it, own their server (`MariaDb::new()`); the others use the binary's
//! shared server. Misbehaving clients speak the protocol by hand ([`raw`]),
//! well-behaved ones use the `mysql` crate. Nothing sleeps to synchronise
//! where a condition can be polled; every wait has a deadline.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::sql::error_code;
use common::{rss_kib, wait_until, FunnelConfig, FunnelProcess, MariaDb, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use raw::{Raw, Reply};

// ---------------------------------------------------------------------------
// Helpers.

/// A ~200 MB result (200,000 rows of 1000 bytes; MariaDB's sequence engine).
const BIG_QUERY: &str = "SELECT REPEAT('x', 1000) FROM seq_1_to_200000";

/// A funnel configuration in front of `backend_port`: users funnel_a and
/// funnel_b, logging at debug.
fn cfg(backend_port: u16) -> FunnelConfig {
    FunnelConfig::new()
        .backend_port(backend_port)
        .rust_log("debug")
}

/// A `mysql` crate connection through the funnel (database funnel_test)
/// with a short read timeout, so that a hang fails the test quickly.
fn mconn(f: &FunnelProcess, read_timeout: Duration) -> Conn {
    let opts = OptsBuilder::from_opts(f.opts(USER_A, PASS_A))
        .read_timeout(Some(read_timeout))
        .write_timeout(Some(Duration::from_secs(10)));
    Conn::new(opts).unwrap_or_else(|e| {
        panic!(
            "cannot connect through the funnel: {e}\n{}",
            f.log_tail(4000)
        )
    })
}

/// `SELECT <n>` through a mysql-crate connection; panics unless it answers n.
fn select_n(c: &mut Conn, n: i64) {
    let got: Option<i64> = c
        .query_first(format!("SELECT {n}"))
        .unwrap_or_else(|e| panic!("SELECT {n} failed: {e}"));
    assert_eq!(got, Some(n));
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14 and 15 (utime, stime), counted after the ")" from field 3.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A funnel_a counter of `SHOW STATS` on the admin console at `admin_port`
/// (user admin, password adm).
fn pool_stat(admin_port: u16, counter: &str) -> u64 {
    let mut a = common::admin_console(admin_port, "admin", "adm");
    common::admin::pool_counter(&mut a, "SHOW STATS", USER_A, counter)
}

/// A raw client logged in as funnel_a with database funnel_test; panics on failure.
fn raw_a(f: &FunnelProcess) -> Raw {
    Raw::open(f.port, USER_A, PASS_A, Some(TEST_DB))
}

/// The single value of a one-row, one-column reply; panics otherwise.
fn single(r: &Reply) -> String {
    match r {
        Reply::Rows(rows) if rows.len() == 1 && rows[0].len() == 1 => {
            rows[0][0].clone().unwrap_or_else(|| "NULL".into())
        }
        other => panic!("expected one value, got {other:?}"),
    }
}

/// Reads until the peer closes; panics if that takes longer than `timeout`.
/// Returns everything read.
fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!(
                "connection not closed by the funnel within {timeout:?} ({} bytes read): {e}",
                out.len()
            ),
        }
        assert!(
            Instant::now() < deadline,
            "connection not closed by the funnel within {timeout:?}"
        );
    }
}

/// The packets in `bytes` (payloads, in order; a trailing partial packet is
/// ignored).
fn split_packets(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    common::raw::split_packets(bytes).0
}

/// The ERR packets among `packets`, parsed (and checked to be well-formed).
fn errors_in(packets: &[(u8, Vec<u8>)]) -> Vec<raw::ServerError> {
    packets
        .iter()
        .filter(|(_, p)| p.first() == Some(&0xff))
        .map(|(_, p)| raw::parse_err(p))
        .collect()
}

// ---------------------------------------------------------------------------
// A minimal client speaking the protocol by hand.

mod raw {
    pub use super::common::raw::{frame, query_packet, ServerError};
    use super::common::raw::{lossy_rows, Answer, Greeting, Login, ReadFault, Wire};
    pub use super::common::raw::{BASE_CAPS, CLIENT_SSL, UTF8MB4_GENERAL_CI};
    use std::io::{self, Write};
    use std::ops::{Deref, DerefMut};
    use std::time::Duration;

    /// What came back for one command.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Reply {
        Ok,
        Rows(Vec<Vec<Option<String>>>),
        Err(ServerError),
        /// The connection ended (EOF or reset) before a complete answer.
        Closed(String),
        /// Nothing (more) arrived within the read timeout.
        TimedOut,
        /// Bytes that are no valid answer.
        Garbage(String),
    }

    /// A client at the packet level ([`Wire`]: `stream`, `read_packet`,
    /// `first_seq`, the sequence id of the first packet of the last reply).
    pub struct Raw {
        wire: Wire,
        greeting: Option<Greeting>,
    }

    impl Deref for Raw {
        type Target = Wire;
        fn deref(&self) -> &Wire {
            &self.wire
        }
    }

    impl DerefMut for Raw {
        fn deref_mut(&mut self) -> &mut Wire {
            &mut self.wire
        }
    }

    /// An ERR payload (0xff, code, '#', state, message), checked to be well-formed.
    pub fn parse_err(p: &[u8]) -> ServerError {
        ServerError::parse_checked(p)
    }

    fn io_reply(e: io::Error) -> Reply {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Reply::TimedOut,
            _ => Reply::Closed(e.to_string()),
        }
    }

    impl Raw {
        /// A TCP connection to the funnel (nothing read yet).
        pub fn connect(port: u16, read_timeout: Duration) -> Raw {
            Raw {
                wire: Wire::connect(port, read_timeout, Some(Duration::from_secs(10))),
                greeting: None,
            }
        }

        /// Connects, reads the greeting and logs in; panics on any failure.
        pub fn open(port: u16, user: &str, pw: &str, db: Option<&str>) -> Raw {
            let mut r = Raw::connect(port, Duration::from_secs(20));
            r.read_greeting().expect("read the greeting");
            if let Err(e) = r.login(user, pw, db) {
                panic!("raw login as {user} failed: {e:?}");
            }
            r
        }

        pub fn set_read_timeout(&self, d: Duration) {
            self.stream.set_read_timeout(Some(d)).unwrap();
        }

        /// Reads the greeting and keeps its scramble.
        pub fn read_greeting(&mut self) -> io::Result<()> {
            self.greeting = Some(self.wire.read_greeting()?);
            Ok(())
        }

        /// Sends the handshake response and reads the answer (handles an
        /// auth switch to mysql_native_password).
        pub fn login(&mut self, user: &str, pw: &str, db: Option<&str>) -> Result<(), Reply> {
            let greeting = self.greeting.clone().expect("read_greeting first");
            match self.wire.login(&greeting, &Login::new(user, pw, db)) {
                Err(e) => Err(io_reply(e)),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(reply)) if reply.first() == Some(&0xff) => {
                    Err(Reply::Err(parse_err(&reply)))
                }
                Ok(Err(reply)) => Err(Reply::Garbage(format!("login reply {reply:?}"))),
            }
        }

        pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.stream.write_all(bytes)
        }

        pub fn send_query(&mut self, sql: &str) -> io::Result<()> {
            self.write(&query_packet(sql))
        }

        pub fn query(&mut self, sql: &str) -> Reply {
            if let Err(e) = self.send_query(sql) {
                return io_reply(e);
            }
            self.read_reply()
        }

        /// Sends a command that consists of one byte (COM_PING, ...).
        pub fn send_command(&mut self, cmd: u8) -> io::Result<()> {
            self.write(&frame(0, &[cmd]))
        }

        /// Reads the complete answer to one command (a single result).
        pub fn read_reply(&mut self) -> Reply {
            match self.wire.read_result() {
                Ok(Answer::Ok { .. }) => Reply::Ok,
                Ok(Answer::Err(p)) => Reply::Err(parse_err(&p)),
                Ok(Answer::Rows { rows, .. }) => Reply::Rows(lossy_rows(rows)),
                Err(ReadFault::Io(e)) => io_reply(e),
                Err(ReadFault::Garbage(what)) => Reply::Garbage(what),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A scripted fake backend.

/// A tiny TCP server speaking just enough of the MySQL protocol for the
/// funnel to log in and set up its backend connections (greeting, OK to any
/// login, result sets for the funnel's own set-up queries), and that answers
/// `SELECT <text>` with one row holding `<text>` — except for the
/// `SELECT fault:<what>` statements, which misbehave on purpose:
///
/// * `fault:close` — close the connection instead of answering;
/// * `fault:empty` — answer with an empty packet (not a valid first packet);
/// * `fault:half` — send the column count and half of a column definition,
///   wait 0.3 s, close;
/// * `fault:gated_half` — wait until the test opens the gate
///   ([`gate_reached`](FakeMysql::gate_reached), [`gate_open`](FakeMysql::gate_open)),
///   then send the same half answer and close at once;
/// * `fault:stall` — send the result's metadata, wait 1.2 s, then the rest;
/// * `fault:stall_close` — send the column count, wait 0.3 s, close;
/// * `fault:garbage_later` — answer properly, then 0.2 s later send unasked
///   garbage on the idle connection;
/// * `fault:blackhole` — answer properly, then read every further command on
///   this connection and answer none ([`ignored`](FakeMysql::ignored) counts them);
/// * `fault:close_n` anywhere in any statement — close the connection
///   instead of answering while [`close_budget`](FakeMysql::close_budget)
///   lasts (one per close), then answer as usual;
/// * `fault:partial` — send two bytes of the first packet's header, close.
///
/// Only the word after `fault:` counts (`SELECT fault:close FOR UPDATE` is
/// `fault:close`). Every statement that mentions `fault:` is recorded
/// ([`seen`](FakeMysql::seen)).
///
/// New connections can be made to get a garbage greeting
/// ([`bad_greetings`](FakeMysql::bad_greetings)) or half a greeting and then
/// nothing ([`stall_greetings`](FakeMysql::stall_greetings)).
mod fake {
    use super::common::raw::{frame, read_packet_from as read_packet};
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    pub struct FakeMysql {
        pub port: u16,
        /// Connections accepted so far.
        pub accepted: Arc<AtomicUsize>,
        /// Logins completed so far.
        pub logged_in: Arc<AtomicUsize>,
        /// The next this-many connections get a garbage greeting.
        pub bad_greetings: Arc<AtomicUsize>,
        /// The next this-many connections get half a greeting, then silence.
        pub stall_greetings: Arc<AtomicUsize>,
        /// A `fault:gated_half` statement arrived and waits for `gate_open`.
        pub gate_reached: Arc<AtomicBool>,
        pub gate_open: Arc<AtomicBool>,
        /// Commands read and left unanswered by black-holed connections.
        pub ignored: Arc<AtomicUsize>,
        /// Closes left for `fault:close_n`.
        pub close_budget: Arc<AtomicUsize>,
        /// Statements received that mention `fault:`, in order.
        pub seen: Arc<std::sync::Mutex<Vec<String>>>,
        stop: Arc<AtomicBool>,
    }

    impl FakeMysql {
        /// How many times a statement with exactly this text was received.
        pub fn times_seen(&self, sql: &str) -> usize {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.as_str() == sql)
                .count()
        }
    }

    /// What the connection threads share with the test.
    struct Shared {
        logged_in: Arc<AtomicUsize>,
        gate_reached: Arc<AtomicBool>,
        gate_open: Arc<AtomicBool>,
        ignored: Arc<AtomicUsize>,
        close_budget: Arc<AtomicUsize>,
        seen: Arc<std::sync::Mutex<Vec<String>>>,
        stop: Arc<AtomicBool>,
    }

    impl Drop for FakeMysql {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Takes one from a counter if it is above zero.
    fn take(n: &AtomicUsize) -> bool {
        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
    }

    impl FakeMysql {
        pub fn start() -> FakeMysql {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let fake = FakeMysql {
                port: listener.local_addr().unwrap().port(),
                accepted: Arc::default(),
                logged_in: Arc::default(),
                bad_greetings: Arc::default(),
                stall_greetings: Arc::default(),
                gate_reached: Arc::default(),
                gate_open: Arc::default(),
                ignored: Arc::default(),
                close_budget: Arc::default(),
                seen: Arc::default(),
                stop: Arc::default(),
            };
            let (accepted, bad, stall) = (
                fake.accepted.clone(),
                fake.bad_greetings.clone(),
                fake.stall_greetings.clone(),
            );
            let shared = Arc::new(Shared {
                logged_in: fake.logged_in.clone(),
                gate_reached: fake.gate_reached.clone(),
                gate_open: fake.gate_open.clone(),
                ignored: fake.ignored.clone(),
                close_budget: fake.close_budget.clone(),
                seen: fake.seen.clone(),
                stop: fake.stop.clone(),
            });
            thread::spawn(move || {
                while !shared.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            s.set_nodelay(true).unwrap();
                            let id = accepted.fetch_add(1, Ordering::SeqCst) as u32 + 1;
                            let bad = take(&bad);
                            let stall = !bad && take(&stall);
                            let shared = shared.clone();
                            thread::spawn(move || {
                                let _ = serve(s, id, bad, stall, &shared);
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            fake
        }
    }

    fn greeting(id: u32) -> Vec<u8> {
        // LONG_PASSWORD | LONG_FLAG | PROTOCOL_41 | TRANSACTIONS |
        // SECURE_CONNECTION | MULTI_STATEMENTS | MULTI_RESULTS |
        // PS_MULTI_RESULTS | PLUGIN_AUTH; no SESSION_TRACK, no DEPRECATE_EOF.
        let caps: u32 = 1 | 4 | 0x200 | 0x2000 | 0x8000 | 0x1_0000 | 0x2_0000 | 0x4_0000 | 0x8_0000;
        let mut p = vec![10];
        p.extend_from_slice(b"10.11.0-fake\0");
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    fn ok() -> Vec<u8> {
        vec![0, 0, 0, 2, 0, 0, 0]
    }

    fn eof() -> Vec<u8> {
        vec![0xfe, 0, 0, 2, 0]
    }

    fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
        assert!(s.len() < 251);
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }

    fn column_def(name: &str) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "", "", "", name, name] {
            lenenc_str(&mut p, s.as_bytes());
        }
        p.push(0x0c);
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(&1024u32.to_le_bytes());
        p.push(0xfd); // VAR_STRING
        p.extend_from_slice(&0u16.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&[0, 0]);
        p
    }

    /// A complete text result set, as framed packets starting at sequence 1.
    fn result_set(cols: &[&str], rows: &[Vec<Option<&str>>]) -> Vec<Vec<u8>> {
        let mut out = vec![frame(1, &[cols.len() as u8])];
        let mut seq = 2u8;
        for c in cols {
            out.push(frame(seq, &column_def(c)));
            seq += 1;
        }
        out.push(frame(seq, &eof()));
        seq += 1;
        for r in rows {
            let mut p = Vec::new();
            for v in r {
                match v {
                    Some(v) => lenenc_str(&mut p, v.as_bytes()),
                    None => p.push(0xfb),
                }
            }
            out.push(frame(seq, &p));
            seq += 1;
        }
        out.push(frame(seq, &eof()));
        out
    }

    fn serve(
        mut s: TcpStream,
        id: u32,
        bad_greeting: bool,
        stall_greeting: bool,
        shared: &Shared,
    ) -> io::Result<()> {
        if bad_greeting {
            s.write_all(&frame(0, b"garbage, not a greeting"))?;
            let _ = s.shutdown(Shutdown::Both);
            return Ok(());
        }
        let g = frame(0, &greeting(id));
        if stall_greeting {
            s.write_all(&g[..g.len() / 2])?;
            // Silence until the funnel gives up on us.
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
            return Ok(());
        }
        s.write_all(&g)?;
        let (seq, _) = read_packet(&mut s)?;
        s.write_all(&frame(seq.wrapping_add(1), &ok()))?;
        shared.logged_in.fetch_add(1, Ordering::SeqCst);
        let mut blackhole = false;
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let (_, p) = read_packet(&mut s)?;
            if blackhole {
                shared.ignored.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            match p.first() {
                Some(0x01) | None => return Ok(()), // COM_QUIT
                Some(0x03) => {}
                Some(_) => {
                    // COM_PING, COM_INIT_DB, COM_RESET_CONNECTION, ...
                    s.write_all(&frame(1, &ok()))?;
                    continue;
                }
            }
            let sql = String::from_utf8_lossy(&p[1..]).into_owned();
            let send = |s: &mut TcpStream, packets: &[Vec<u8>]| -> io::Result<()> {
                s.write_all(&packets.concat())
            };
            if sql.contains("fault:") {
                shared.seen.lock().unwrap().push(sql.clone());
            }
            if sql.contains("fault:close_n") && take(&shared.close_budget) {
                let _ = s.shutdown(Shutdown::Both);
                return Ok(());
            }
            if sql.contains("@@character_set_client") {
                let cols = ["a", "b", "c", "d", "e", "clean"];
                let row = vec![
                    Some("utf8mb4"),
                    Some("utf8mb4"),
                    Some("utf8mb4"),
                    Some("utf8mb4_general_ci"),
                    None,
                    Some("1"),
                ];
                send(&mut s, &result_set(&cols, &[row]))?;
            } else if sql.contains("information_schema.COLLATIONS") {
                let row = vec![Some("45"), Some("utf8mb4"), Some("utf8mb4_general_ci")];
                send(&mut s, &result_set(&["ID", "CS", "COLL"], &[row]))?;
            } else if sql.contains("USER_VARIABLES") {
                send(&mut s, &result_set(&["N", "V", "T", "C"], &[]))?;
            } else if let Some(what) = sql.strip_prefix("SELECT fault:") {
                let what = what.split(' ').next().unwrap_or_default();
                let rs = result_set(&["v"], &[vec![Some(what)]]);
                match what {
                    "close" => {
                        let _ = s.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                    "empty" => s.write_all(&frame(1, &[]))?,
                    "half" | "gated_half" => {
                        if what == "gated_half" {
                            shared.gate_reached.store(true, Ordering::SeqCst);
                            while !shared.gate_open.load(Ordering::SeqCst) {
                                thread::sleep(Duration::from_millis(2));
                            }
                        }
                        let coldef = &rs[1];
                        let mut bytes = rs[0].clone();
                        bytes.extend_from_slice(&coldef[..coldef.len() / 2]);
                        s.write_all(&bytes)?;
                        if what == "half" {
                            thread::sleep(Duration::from_millis(300));
                        }
                        let _ = s.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                    "stall" => {
                        send(&mut s, &rs[..3])?;
                        thread::sleep(Duration::from_millis(1200));
                        send(&mut s, &rs[3..])?;
                    }
                    "partial" => {
                        s.write_all(&rs[0][..2])?;
                        thread::sleep(Duration::from_millis(50));
                        let _ = s.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                    "stall_close" => {
                        send(&mut s, &rs[..1])?;
                        thread::sleep(Duration::from_millis(300));
                        let _ = s.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                    "blackhole" => {
                        send(&mut s, &rs)?;
                        blackhole = true;
                    }
                    "garbage_later" => {
                        send(&mut s, &rs)?;
                        thread::sleep(Duration::from_millis(200));
                        s.write_all(b"\x05\x00\x00\x07hello, funnel")?;
                    }
                    _ => send(&mut s, &rs)?,
                }
            } else if let Some(v) = sql.strip_prefix("SELECT ") {
                send(&mut s, &result_set(&["v"], &[vec![Some(v)]]))?;
            } else {
                // SET ... and anything else.
                s.write_all(&frame(1, &ok()))?;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 1. mysqld SIGKILLed under load, then restarted.

/// What one client's command ended with, during the kill test.
#[derive(Default, Debug)]
struct LoadStats {
    ok: usize,
    lost: usize,
    queue_timeouts: usize,
    closed: usize,
    /// Anything that is neither the right answer nor a clean error.
    bad: Vec<String>,
    rounds: usize,
    /// Slowest answer seen.
    max_latency: Duration,
}

#[test]
fn mysqld_sigkill_under_load_then_restart() {
    const THREADS: usize = 5;
    const PER_THREAD: usize = 100;
    const POOL: usize = 4;
    const QUEUE_TIMEOUT_MS: u64 = 1500;
    // Every answer must come within this (the queue timeout plus slack).
    const ANSWER_BOUND: Duration = Duration::from_secs(12);

    let db = MariaDb::new();
    let f = cfg(db.port)
        .pool(&format!("connections = {POOL}"))
        .pool(&format!("queue_timeout_ms = {QUEUE_TIMEOUT_MS}"))
        .backend("connect_timeout_ms = 2000")
        .backend("reconnect_backoff_min_ms = 50")
        .backend("reconnect_backoff_max_ms = 500")
        .rust_log("info")
        .start();

    // 0: before the kill, 1: mysqld dead, 2: mysqld restarted.
    let phase = Arc::new(AtomicU8::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let (phase, rounds, port) = (phase.clone(), rounds.clone(), f.port);
        handles.push(thread::spawn(move || {
            let mut clients: Vec<Option<Raw>> = (0..PER_THREAD)
                .map(|_| {
                    // No default schema: logging in needs no backend, so
                    // the short queue timeout cannot fail a login.
                    let r = Raw::open(port, USER_A, PASS_A, None);
                    r.set_read_timeout(Duration::from_secs(15));
                    Some(r)
                })
                .collect();
            let mut st = LoadStats::default();
            let deadline = Instant::now() + Duration::from_secs(75);
            for round in 0.. {
                let started_in = phase.load(Ordering::SeqCst);
                let t0 = Instant::now();
                let mut all_ok = true;
                for (i, c) in clients.iter_mut().enumerate() {
                    if let Some(r) = c {
                        if let Err(e) = r.send_query(&format!("SELECT '{t}-{i}-{round}'")) {
                            st.bad.push(format!("client {t}-{i}: send failed: {e}"));
                            *c = None;
                        }
                    }
                }
                for (i, c) in clients.iter_mut().enumerate() {
                    let Some(r) = c else {
                        all_ok = false;
                        continue;
                    };
                    let want = format!("{t}-{i}-{round}");
                    let reply = r.read_reply();
                    let latency = t0.elapsed();
                    st.max_latency = st.max_latency.max(latency);
                    if latency > ANSWER_BOUND {
                        st.bad
                            .push(format!("client {t}-{i}: answer after {latency:?}"));
                    }
                    match reply {
                        Reply::Rows(rows)
                            if rows.len() == 1 && rows[0] == vec![Some(want.clone())] =>
                        {
                            st.ok += 1;
                            continue;
                        }
                        Reply::Err(e)
                            if e.code == 2013
                                && e.message.starts_with("funnel: lost connection") =>
                        {
                            st.lost += 1
                        }
                        Reply::Err(e)
                            if e.code == 1969 && e.message.contains("queue_timeout_ms") =>
                        {
                            st.queue_timeouts += 1
                        }
                        Reply::Closed(e) => {
                            st.closed += 1;
                            st.bad.push(format!("client {t}-{i}: closed ({e})"));
                            *c = None;
                        }
                        other => {
                            st.bad
                                .push(format!("client {t}-{i}: expected {want}, got {other:?}"));
                            if matches!(other, Reply::TimedOut | Reply::Garbage(_)) {
                                *c = None;
                            }
                        }
                    }
                    all_ok = false;
                }
                st.rounds += 1;
                rounds.fetch_add(1, Ordering::SeqCst);
                if started_in == 2 && all_ok {
                    return st;
                }
                if Instant::now() > deadline {
                    st.bad.push(format!(
                        "thread {t}: no round with every answer right after the restart"
                    ));
                    return st;
                }
            }
            unreachable!()
        }));
    }

    // The load runs; now one long statement so that mysqld's death
    // certainly hits a running command.
    assert!(
        wait_until(Duration::from_secs(60), || rounds.load(Ordering::SeqCst)
            >= 3 * THREADS),
        "the load did not get going"
    );
    let mut sleeper = raw_a(&f);
    sleeper.send_query("SELECT SLEEP(30)").unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || !db
            .threads_of(USER_A, Some("SELECT SLEEP(30)"))
            .is_empty()),
        "SELECT SLEEP(30) never ran"
    );

    let killed_at = Instant::now();
    db.kill();
    phase.store(1, Ordering::SeqCst);
    sleeper.set_read_timeout(Duration::from_secs(10));
    let reply = sleeper.read_reply();
    let waited = killed_at.elapsed();
    match &reply {
        Reply::Err(e) => {
            assert_eq!(e.code, 2013, "{e:?}");
            assert_eq!(e.message, "funnel: lost connection to backend during query");
        }
        other => panic!("the running SLEEP(30) got {other:?} after mysqld died"),
    }
    assert!(waited < Duration::from_secs(3), "the error took {waited:?}");

    // Down for longer than the queue timeout (clients keep sending, so
    // some of their commands time out in the backlog), then back on the
    // same port and datadir.
    thread::sleep(Duration::from_millis(QUEUE_TIMEOUT_MS + 700));
    db.start();
    let restarted_at = Instant::now();
    phase.store(2, Ordering::SeqCst);

    let mut total = LoadStats::default();
    for h in handles {
        let st = h.join().expect("load thread panicked");
        total.ok += st.ok;
        total.lost += st.lost;
        total.queue_timeouts += st.queue_timeouts;
        total.closed += st.closed;
        total.rounds += st.rounds;
        total.max_latency = total.max_latency.max(st.max_latency);
        total.bad.extend(st.bad);
    }
    let resumed = restarted_at.elapsed();
    eprintln!(
        "[faults] sigkill: {} clients, {} rounds; ok {}, lost (2013) {}, queue timeouts (1969) {}, \
         closed {}; slowest answer {:?}; all clients served {:?} after the restart",
        THREADS * PER_THREAD,
        total.rounds,
        total.ok,
        total.lost,
        total.queue_timeouts,
        total.closed,
        total.max_latency,
        resumed
    );
    // Only a command whose answer was partly forwarded may end with a
    // closed connection, and at most one per backend can be in that state.
    let unclean: Vec<&String> = total.bad.iter().filter(|b| !b.contains("closed")).collect();
    assert!(
        unclean.is_empty() && total.closed <= POOL,
        "{} bad outcomes, e.g. {:?}\n{}",
        total.bad.len(),
        &total.bad[..total.bad.len().min(10)],
        f.log_tail(4000)
    );

    assert!(
        total.queue_timeouts > 0,
        "mysqld was down longer than queue_timeout_ms, yet no command timed out"
    );
    // The same client connection works again, and the pool is full again.
    sleeper.set_read_timeout(Duration::from_secs(10));
    assert_eq!(single(&sleeper.query("SELECT 42")), "42");
    db.wait_connections(USER_A, POOL, Duration::from_secs(10));
    let mut f = f;
    assert!(f.is_running(), "the funnel died");
}

/// mysqld is killed while statements wait for a table lock (so they surely
/// reached it, and surely had no answer yet), then restarted within
/// queue_timeout_ms: the plain reads (text and prepared) are run again and
/// answered, as if nothing happened; the write, the locking read and the
/// read in a transaction get ERR 2013, and the write did not happen.
#[test]
fn mysqld_killed_under_blocked_statements() {
    let db = MariaDb::new();
    db.admin_sql(
        "CREATE TABLE funnel_test.retry_t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; \
         INSERT INTO funnel_test.retry_t VALUES (1, 10)",
    );
    let admin_port = common::free_port();
    let f = cfg(db.port)
        .pool("connections = 6")
        .pool("queue_timeout_ms = 30000")
        .backend("connect_timeout_ms = 2000")
        .backend("reconnect_backoff_min_ms = 50")
        .backend("reconnect_backoff_max_ms = 300")
        .admin(admin_port, "adm")
        .rust_log("info")
        .start();
    let read = "SELECT v FROM retry_t WHERE id = 1";
    let open = || {
        let r = raw_a(&f);
        r.set_read_timeout(Duration::from_secs(90));
        r
    };
    let mut prepared = mconn(&f, Duration::from_secs(90));
    let stmt = prepared.prep("SELECT v FROM retry_t WHERE id = ?").unwrap();
    let (mut text, mut write, mut locking, mut in_trx) = (open(), open(), open(), open());
    assert_eq!(single(&text.query(read)), "10");
    assert_eq!(in_trx.query("BEGIN"), Reply::Ok);

    let mut locker = db.admin_conn();
    locker
        .query_drop("LOCK TABLES funnel_test.retry_t WRITE")
        .unwrap();
    text.send_query(read).unwrap();
    write
        .send_query("UPDATE retry_t SET v = v + 1 WHERE id = 1")
        .unwrap();
    locking.send_query(&format!("{read} FOR UPDATE")).unwrap();
    in_trx.send_query(read).unwrap();
    let exec = thread::spawn(move || {
        let r = prepared.exec_first::<i64, _, _>(&stmt, (1,));
        (r, prepared)
    });
    let waiting = || -> u64 {
        db.admin_query::<u64>(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{USER_A}' \
             AND STATE = 'Waiting for table metadata lock'"
        ))[0]
    };
    assert!(
        wait_until(Duration::from_secs(20), || waiting() == 5),
        "the five statements are not all waiting for the lock: {}",
        waiting()
    );

    db.kill();
    drop(locker);
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    db.start();
    eprintln!("[faults] mysqld restarted in {:?}", t.elapsed());

    // The reads: answered, no error.
    assert_eq!(single(&text.read_reply()), "10");
    let (r, mut prepared) = exec.join().unwrap();
    assert_eq!(r.unwrap(), Some(10));
    // The others: 2013.
    let lost = |reply: Reply, what: &str, state_gone: bool| match reply {
        Reply::Err(e) => {
            assert_eq!(e.code, 2013, "{what}: {e:?}");
            assert!(
                e.message
                    .starts_with("funnel: lost connection to backend during query"),
                "{what}: {e:?}"
            );
            assert_eq!(
                e.message.contains("transaction and state are gone"),
                state_gone,
                "{what}: {e:?}"
            );
        }
        other => panic!("{what}: expected ERR 2013, got {other:?}"),
    };
    lost(write.read_reply(), "the UPDATE", false);
    lost(locking.read_reply(), "the locking read", false);
    lost(in_trx.read_reply(), "the read in a transaction", true);
    // (A retry may first meet another connection that died with mysqld,
    // not yet noticed: then it is retried once more.)
    let retried = pool_stat(admin_port, "retried");
    assert!((2..=8).contains(&retried), "retried {retried}");

    // The write was not run again; every connection goes on.
    let v: Vec<i64> = db.admin_query("SELECT v FROM funnel_test.retry_t WHERE id = 1");
    assert_eq!(v, vec![10]);
    for c in [&mut text, &mut write, &mut locking, &mut in_trx] {
        assert_eq!(single(&c.query(read)), "10");
    }
    assert_eq!(
        prepared
            .exec_first::<i64, _, _>("SELECT v FROM retry_t WHERE id = ?", (1,))
            .unwrap(),
        Some(10)
    );
}

/// Many clients run point selects (text and prepared) while mysqld is
/// SIGKILLed and restarted within queue_timeout_ms: no client sees an
/// error; the commands the crash caught in flight were run again.
#[test]
fn point_selects_survive_a_mysqld_restart() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    const PREPARED_THREADS: usize = 4;
    const ROWS: i64 = 1000;

    let db = MariaDb::new();
    db.admin_sql(&format!(
        "CREATE TABLE funnel_test.retry_load (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; \
         INSERT INTO funnel_test.retry_load SELECT seq, seq * 7 FROM funnel_test.seq_1_to_{ROWS}"
    ));
    let admin_port = common::free_port();
    let f = cfg(db.port)
        .pool("connections = 4")
        .pool("queue_timeout_ms = 30000")
        .backend("connect_timeout_ms = 2000")
        .backend("reconnect_backoff_min_ms = 50")
        .backend("reconnect_backoff_max_ms = 300")
        .admin(admin_port, "adm")
        .rust_log("info")
        .start();

    // 0: before the kill, 1: mysqld dead, 2: restarted.
    let phase = Arc::new(AtomicU8::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let (phase, rounds, errors, port) = (phase.clone(), rounds.clone(), errors.clone(), f.port);
        handles.push(thread::spawn(move || {
            let mut clients: Vec<Raw> = (0..PER_THREAD)
                .map(|_| {
                    let r = Raw::open(port, USER_A, PASS_A, Some(TEST_DB));
                    r.set_read_timeout(Duration::from_secs(90));
                    r
                })
                .collect();
            let mut after_restart = 0;
            for round in 0i64.. {
                let ids: Vec<i64> = (0..PER_THREAD as i64)
                    .map(|i| (round * 31 + i * 17 + t as i64) % ROWS + 1)
                    .collect();
                for (c, id) in clients.iter_mut().zip(&ids) {
                    c.send_query(&format!("SELECT v FROM retry_load WHERE id = {id}"))
                        .unwrap();
                }
                for (i, (c, id)) in clients.iter_mut().zip(&ids).enumerate() {
                    match c.read_reply() {
                        Reply::Rows(rows) if rows == vec![vec![Some((id * 7).to_string())]] => {}
                        other => {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("text client {t}-{i}, id {id}: {other:?}"));
                            return;
                        }
                    }
                }
                rounds.fetch_add(1, Ordering::SeqCst);
                if phase.load(Ordering::SeqCst) == 2 {
                    after_restart += 1;
                    if after_restart >= 3 {
                        return;
                    }
                }
            }
        }));
    }
    for t in 0..PREPARED_THREADS {
        let (phase, errors) = (phase.clone(), errors.clone());
        let mut c = mconn(&f, Duration::from_secs(90));
        handles.push(thread::spawn(move || {
            let stmt = c.prep("SELECT v FROM retry_load WHERE id = ?").unwrap();
            let mut after_restart = 0;
            for n in 0i64.. {
                let id = (n * 13 + t as i64) % ROWS + 1;
                match c.exec_first::<i64, _, _>(&stmt, (id,)) {
                    Ok(Some(v)) if v == id * 7 => {}
                    other => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("prepared client {t}, id {id}: {other:?}"));
                        return;
                    }
                }
                if phase.load(Ordering::SeqCst) == 2 {
                    after_restart += 1;
                    if after_restart >= 50 {
                        return;
                    }
                }
            }
        }));
    }
    assert!(
        wait_until(Duration::from_secs(60), || rounds.load(Ordering::SeqCst)
            >= 3 * THREADS),
        "the load did not get going: {} rounds, errors {:?}",
        rounds.load(Ordering::SeqCst),
        errors.lock().unwrap()
    );
    db.kill();
    phase.store(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    db.start();
    phase.store(2, Ordering::SeqCst);
    eprintln!("[faults] mysqld restarted in {:?}", t.elapsed());
    for h in handles {
        h.join().expect("load thread panicked");
    }
    let errors = errors.lock().unwrap();
    let retried = pool_stat(admin_port, "retried");
    let lost = pool_stat(admin_port, "backend_lost");
    eprintln!(
        "[faults] point selects through a mysqld restart: {retried} retried, {lost} backends lost"
    );
    assert!(
        errors.is_empty(),
        "{} clients saw an error, e.g. {:?}\n{}",
        errors.len(),
        &errors[..errors.len().min(5)],
        f.log_tail(4000)
    );
    assert!(
        lost >= 4,
        "mysqld's death went unnoticed: {lost} backends lost"
    );
    assert!(retried >= 1, "the crash caught no command in flight");
}

/// mysqld dies while a slow client's large result is held back by the
/// funnel's backpressure: once the client has read what the funnel got, its
/// connection must be closed (part of the answer was sent), not left waiting
/// for the rest of a result that will never come.
#[test]
fn mysqld_killed_mid_result_closes_the_client() {
    let db = MariaDb::new();
    let mut f = cfg(db.port)
        .pool("connections = 1")
        .backend("reconnect_backoff_min_ms = 50")
        .backend("reconnect_backoff_max_ms = 300")
        .start();
    let mut r = raw_a(&f);
    r.send_query(BIG_QUERY).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !db
            .threads_of(USER_A, Some("SELECT REPEAT"))
            .is_empty()),
        "the big statement never ran"
    );
    // Let the pipe fill up: the funnel pauses reading the backend.
    thread::sleep(Duration::from_millis(300));
    db.kill();
    // The client now reads everything that is buffered, then must see the end.
    let got = read_until_closed(&mut r.stream, Duration::from_secs(8));
    assert!(got.len() < 200_000_000, "{} bytes", got.len());
    assert!(
        f.wait_for_log(
            "pool funnel_a: lost backend connection",
            Duration::from_secs(2)
        ),
        "the funnel did not notice the lost backend"
    );
    eprintln!(
        "[faults] mysqld killed mid-result: the client read {} bytes, then EOF",
        got.len()
    );
    db.start();
    let mut c = mconn(&f, Duration::from_secs(10));
    select_n(&mut c, 3);
    assert!(f.is_running());
}

/// A client that disconnects while its statement runs does not hold the
/// backend for the statement's whole run: the rest of the answer is drained
/// for at most connect_timeout_ms, then the connection is closed and
/// replaced, and a queued client is served.
#[test]
fn client_leaving_a_long_statement_frees_the_backend() {
    let db = common::mariadb();
    let f = cfg(db.port)
        .pool("connections = 1")
        .pool("queue_timeout_ms = 25000")
        .backend("connect_timeout_ms = 1000")
        .start();
    let mut cli = common::clients::mariadb_cli(f.port, USER_A, PASS_A)
        .args(["-e", "SELECT SLEEP(20) AS funnel_drain_probe"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run mariadb");
    assert!(
        wait_until(Duration::from_secs(10), || !db
            .threads_of(USER_A, Some("SELECT SLEEP(20) AS funnel_drain_probe"))
            .is_empty()),
        "the long statement never ran"
    );
    cli.kill().expect("kill the client");
    let _ = cli.wait();
    let t = Instant::now();
    let mut c = mconn(&f, Duration::from_secs(15));
    select_n(&mut c, 2);
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "the next client waited {waited:?} for a backend whose client had left"
    );
    assert!(f.wait_for_log("did not arrive within 1000 ms", Duration::from_secs(2)));
}

// ---------------------------------------------------------------------------
// 2. mysqld down longer than queue_timeout_ms.

#[test]
fn mysqld_down_longer_than_queue_timeout() {
    let db = MariaDb::new();
    let mut f = cfg(db.port)
        .pool("connections = 2")
        .pool("queue_timeout_ms = 1000")
        .backend("reconnect_backoff_min_ms = 50")
        .backend("reconnect_backoff_max_ms = 300")
        .start();
    let mut clients: Vec<Raw> = (0..5).map(|_| raw_a(&f)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(single(&c.query(&format!("SELECT {i}"))), i.to_string());
    }

    db.kill();

    // Queued commands fail after queue_timeout_ms with the funnel's error.
    let t0 = Instant::now();
    for c in clients.iter_mut() {
        c.send_query("SELECT 'while down'").unwrap();
    }
    for c in clients.iter_mut() {
        c.set_read_timeout(Duration::from_secs(10));
        let reply = c.read_reply();
        let waited = t0.elapsed();
        let Reply::Err(e) = &reply else {
            panic!("a command queued while mysqld is down got {reply:?}");
        };
        assert_eq!((e.code, e.state.as_str()), (1969, "70100"), "{e:?}");
        assert!(
            e.message.starts_with("funnel: the command waited ")
                && e.message
                    .contains("in the backlog of pool 'funnel_a' (queue_timeout_ms = 1000)")
                && e.message.contains("it was not run"),
            "{e:?}"
        );
        // README: the error names the backend error.
        assert!(
            e.message.contains("backend unavailable"),
            "the queue timeout does not say why: {e:?}"
        );
        eprintln!("[faults] queue timeout after {waited:?}: {}", e.message);
        assert!(
            waited >= Duration::from_millis(950) && waited < Duration::from_secs(5),
            "queue timeout after {waited:?}"
        );
    }

    // New clients can still log in (the funnel authenticates them itself)
    // and get answers the funnel can give alone.
    let t1 = Instant::now();
    let mut fresh = Raw::open(f.port, USER_A, PASS_A, None);
    assert!(
        t1.elapsed() < Duration::from_secs(2),
        "login took {:?}",
        t1.elapsed()
    );
    fresh.send_command(0x0e).unwrap(); // COM_PING
    assert_eq!(fresh.read_reply(), Reply::Ok);
    let mut wrong = Raw::connect(f.port, Duration::from_secs(5));
    wrong.read_greeting().unwrap();
    match wrong.login(USER_A, "not the password", None) {
        Err(Reply::Err(e)) => assert_eq!(e.code, 1045, "{e:?}"),
        other => panic!("wrong password while mysqld is down: {other:?}"),
    }
    // A login naming a schema mysqld confirmed for this user before (the
    // clients above logged in with it) is answered by the funnel at once.
    let mut with_known = Raw::connect(f.port, Duration::from_secs(10));
    with_known.read_greeting().unwrap();
    let t2 = Instant::now();
    with_known
        .login(USER_A, PASS_A, Some(TEST_DB))
        .expect("login with a confirmed schema while mysqld is down");
    assert!(t2.elapsed() < Duration::from_secs(2), "{:?}", t2.elapsed());
    // A schema never confirmed needs mysqld to check it: the login fails
    // cleanly after the queue timeout rather than hanging.
    let mut with_db = Raw::connect(f.port, Duration::from_secs(10));
    with_db.read_greeting().unwrap();
    let t3 = Instant::now();
    match with_db.login(USER_A, PASS_A, Some("mysql")) {
        Err(Reply::Err(e)) => assert_eq!(e.code, 1969, "{e:?}"),
        other => panic!("login with an unchecked schema while mysqld is down: {other:?}"),
    }
    assert!(t3.elapsed() < Duration::from_secs(5));
    // The fresh client's query waits and times out too.
    fresh.set_read_timeout(Duration::from_secs(10));
    match fresh.query("SELECT 1") {
        Reply::Err(e) => assert_eq!(e.code, 1969, "{e:?}"),
        other => panic!("{other:?}"),
    }

    db.start();

    // Service resumes on the same client connections, with no funnel restart.
    let mut last = Reply::TimedOut;
    let resumed = wait_until(Duration::from_secs(20), || {
        last = clients[0].query("SELECT 'back'");
        matches!(&last, Reply::Rows(_))
    });
    assert!(resumed, "service did not resume: {last:?}");
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(single(&c.query(&format!("SELECT {i}"))), i.to_string());
    }
    fresh.set_read_timeout(Duration::from_secs(10));
    assert_eq!(single(&fresh.query("SELECT 7")), "7");
    let mut after = raw_a(&f);
    assert_eq!(single(&after.query("SELECT DATABASE()")), TEST_DB);
    db.wait_connections(USER_A, 2, Duration::from_secs(10));
    assert!(f.is_running());
}

// ---------------------------------------------------------------------------
// 3. A DBA kills backend connections.

#[test]
fn dba_kills_backend_connections() {
    let db = MariaDb::new();
    let f = cfg(db.port).pool("connections = 2").start();
    let mut c1 = mconn(&f, Duration::from_secs(10));
    select_n(&mut c1, 1);
    db.wait_connections(USER_A, 2, Duration::from_secs(10));

    // Idle backends killed: the funnel notices and replaces them.
    let killed = db.threads_of(USER_A, None);
    assert_eq!(killed.len(), 2);
    for id in &killed {
        db.admin_sql(&format!("KILL {id}"));
    }
    assert!(wait_until(Duration::from_secs(10), || {
        let now = db.threads_of(USER_A, None);
        killed.iter().all(|k| !now.contains(k))
    }));
    for n in 0..20 {
        select_n(&mut c1, n);
    }
    let mut c2 = mconn(&f, Duration::from_secs(10));
    select_n(&mut c2, 2);
    assert!(wait_until(Duration::from_secs(10), || {
        let now = db.threads_of(USER_A, None);
        now.len() == 2 && now.iter().all(|t| !killed.contains(t))
    }));

    // A backend killed while it runs a client's SELECT SLEEP(5): that client
    // gets an error at once; the others, queued behind one backend, do not.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let mut others = Vec::new();
    for t in 0..4 {
        let mut c = mconn(&f, Duration::from_secs(10));
        let (stop, errors, served) = (stop.clone(), errors.clone(), served.clone());
        others.push(thread::spawn(move || {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let v = t * 1_000_000 + n;
                match c.query_first::<i64, _>(format!("SELECT {v}")) {
                    Ok(Some(got)) if got == v => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    other => errors
                        .lock()
                        .unwrap()
                        .push(format!("SELECT {v}: {other:?}")),
                }
            }
        }));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mut x = mconn(&f, Duration::from_secs(20));
    let sleeper = thread::spawn(move || {
        let r = x.query_first::<i64, _>("SELECT SLEEP(5)");
        let _ = tx.send((r, Instant::now()));
        x
    });
    let mut target = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            target = db.threads_of(USER_A, Some("SELECT SLEEP(5)"));
            !target.is_empty()
        }),
        "SELECT SLEEP(5) never ran"
    );
    let before = served.load(Ordering::Relaxed);
    let killed_at = Instant::now();
    db.admin_sql(&format!("KILL {}", target[0]));
    let (result, at) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the client of the killed backend got no answer");
    let waited = at.saturating_duration_since(killed_at);
    eprintln!("[faults] DBA KILL during SLEEP(5): client got {result:?} after {waited:?}");
    assert!(
        matches!(error_code(&result), Some(1927 | 2013)),
        "expected mysqld's 1927 or the funnel's 2013, got {result:?}"
    );
    assert!(waited < Duration::from_secs(2), "error after {waited:?}");
    // Others keep being served after the kill.
    assert!(wait_until(Duration::from_secs(10), || served
        .load(Ordering::Relaxed)
        > before + 200));
    stop.store(true, Ordering::Relaxed);
    for h in others {
        h.join().unwrap();
    }
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "other clients saw {} errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // The victim's connection to the funnel still works.
    let mut x = sleeper.join().unwrap();
    select_n(&mut x, 5);
    db.wait_connections(USER_A, 2, Duration::from_secs(10));

    // A client pinned by an open transaction, whose backend is killed while
    // idle: its next command is told the transaction is gone (README), the
    // one after works, and nothing of the transaction was committed.
    db.admin_sql("CREATE TABLE funnel_test.faults_pinned (id INT PRIMARY KEY) ENGINE=InnoDB");
    let mut p = mconn(&f, Duration::from_secs(10));
    p.query_drop("BEGIN").unwrap();
    p.query_drop("INSERT INTO faults_pinned VALUES (1)")
        .unwrap();
    let trx: Vec<u64> =
        db.admin_query("SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX");
    assert_eq!(trx.len(), 1, "{trx:?}");
    db.admin_sql(&format!("KILL {}", trx[0]));
    assert!(wait_until(Duration::from_secs(10), || !db
        .threads_of(USER_A, None)
        .contains(&trx[0])));
    let r = p.query_drop("INSERT INTO faults_pinned VALUES (2)");
    match &r {
        Err(mysql::Error::MySqlError(e)) => {
            assert_eq!(e.code, 2013, "{e:?}");
            assert!(
                e.message.contains("transaction and state are gone"),
                "{e:?}"
            );
        }
        other => panic!("pinned client after its backend was killed: {other:?}"),
    }
    select_n(&mut p, 9);
    let rows: Vec<u64> = db.admin_query("SELECT COUNT(*) FROM funnel_test.faults_pinned");
    assert_eq!(rows, vec![0]);
}

// ---------------------------------------------------------------------------
// 4. A client that reads nothing of a 200 MB result.

const RSS_BOUND_KIB: u64 = 64 * 1024;

#[test]
fn stalled_reader_is_bounded_then_closed() {
    let db = common::mariadb();

    // Phase 1: memory stays bounded and other clients are served.
    let f = cfg(db.port).pool("connections = 2").start();
    let pid = f.pid().unwrap();
    let rss_before = rss_kib(pid).unwrap();
    let mut stalled = raw_a(&f);
    stalled.send_query(BIG_QUERY).unwrap();
    let mut other = mconn(&f, Duration::from_secs(5));
    let mut max_rss = 0;
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_millis(2500) {
        n += 1;
        let q = Instant::now();
        select_n(&mut other, n);
        assert!(
            q.elapsed() < Duration::from_secs(1),
            "a query took {:?}",
            q.elapsed()
        );
        max_rss = max_rss.max(rss_kib(pid).unwrap());
        thread::sleep(Duration::from_millis(20));
    }
    // The big statement is still running: mysqld is held back, not the
    // funnel's memory filled.
    let running: Vec<u64> = db.admin_query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT REPEAT(''x'', 1000) FROM seq_1_to_200000%'",
    );
    eprintln!(
        "[faults] stalled reader: funnel RSS {} KiB before, max {} KiB during ({} queries served meanwhile)",
        rss_before, max_rss, n
    );
    assert!(max_rss < RSS_BOUND_KIB, "funnel RSS reached {max_rss} KiB");
    assert!(!running.is_empty(), "the 200 MB result was not held back");
    drop(stalled);
    drop(f);

    // Phase 2: client_write_timeout_ms closes the stalled client; its only
    // backend is drained and reset, so the pool still serves.
    let f = cfg(db.port)
        .pool("connections = 1")
        .funnel("client_write_timeout_ms = 2000")
        .start();
    let pid = f.pid().unwrap();
    let mut stalled = raw_a(&f);
    let sent = Instant::now();
    stalled.send_query(BIG_QUERY).unwrap();
    let mut max_rss = 0;
    assert!(
        wait_until(Duration::from_secs(15), || {
            max_rss = max_rss.max(rss_kib(pid).unwrap_or(0));
            f.log().contains("client_write_timeout_ms")
        }),
        "the stalled client was not closed"
    );
    let closed_after = sent.elapsed();
    assert!(
        closed_after >= Duration::from_millis(2000),
        "closed after only {closed_after:?}"
    );
    // Its socket ends (buffered data, then EOF).
    let got = read_until_closed(&mut stalled.stream, Duration::from_secs(20));
    assert!(got.len() < 150_000_000, "{} bytes arrived", got.len());
    max_rss = max_rss.max(rss_kib(pid).unwrap_or(0));
    // (The login checks its schema on the only backend, so it waits for the
    // drain and reset of the rest of the 200 MB.)
    let q = Instant::now();
    let mut c = mconn(&f, Duration::from_secs(30));
    select_n(&mut c, 77);
    eprintln!(
        "[faults] stalled reader closed {closed_after:?} after its query; login + query on \
         connections=1 answered in {:?}; RSS {max_rss} KiB",
        q.elapsed()
    );
    // And again: the backend is back in the pool for good.
    select_n(&mut c, 78);
}

// ---------------------------------------------------------------------------
// 5. A flood of silent connections; max_client_connections.

#[test]
fn flood_of_silent_connections_and_connection_limit() {
    const FLOOD: usize = 2000;
    let limit = common::raise_nofile(FLOOD as u64 * 2 + 1000);
    let flood = FLOOD.min((limit as usize).saturating_sub(500) / 2);
    let db = common::mariadb();
    let f = cfg(db.port)
        .funnel("handshake_timeout_ms = 1000")
        .pool("connections = 2")
        .rust_log("info")
        .start();

    // A served client keeps working throughout.
    let mut served = mconn(&f, Duration::from_secs(5));
    select_n(&mut served, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0;
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = Instant::now();
                select_n(&mut served, n);
                slowest = slowest.max(t.elapsed());
                thread::sleep(Duration::from_millis(5));
            }
            (n, slowest)
        })
    };

    let t0 = Instant::now();
    let mut silent: Vec<TcpStream> = (0..flood)
        .map(|_| TcpStream::connect(("127.0.0.1", f.port)).expect("flood connect"))
        .collect();
    let opened = t0.elapsed();
    // One of them is timed exactly: greeting at once, ERR after ~1 s.
    let mut first = silent.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let all = read_until_closed(&mut first, Duration::from_secs(10));
    let closed_after = t0.elapsed();
    let packets = split_packets(&all);
    assert_eq!(packets[0].1.first(), Some(&10), "no greeting first");
    let errs = errors_in(&packets);
    assert_eq!(errs.len(), 1, "{packets:?}");
    assert_eq!(errs[0].code, 1043);
    assert_eq!(
        errs[0].message,
        "funnel: handshake not completed within handshake_timeout_ms = 1000"
    );
    assert!(
        closed_after >= Duration::from_millis(950),
        "closed after {closed_after:?}"
    );

    // New clients get in while the flood is there.
    let mut during = mconn(&f, Duration::from_secs(5));
    select_n(&mut during, 2);

    // Every silent connection is closed by the funnel, with the ERR.
    let mut with_err = 0;
    for s in silent.iter_mut() {
        let all = read_until_closed(s, Duration::from_secs(10));
        let errs = errors_in(&split_packets(&all));
        if errs.iter().any(|e| e.code == 1043) {
            with_err += 1;
        }
    }
    let all_closed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (n, slowest) = worker.join().unwrap();
    eprintln!(
        "[faults] flood: {flood} silent connections opened in {opened:?}, all closed {all_closed:?} \
         after the first ({with_err} with ERR 1043); served client: {n} queries, slowest {slowest:?}"
    );
    assert_eq!(with_err, flood - 1, "some silent connections got no ERR");
    assert!(
        slowest < Duration::from_secs(1),
        "a served query took {slowest:?}"
    );
    drop(silent);

    // max_client_connections = N: the N+1th gets ERR 1040.
    const N: usize = 20;
    let g = cfg(db.port)
        .funnel(&format!("max_client_connections = {N}"))
        .pool("connections = 1")
        .start();
    let mut held: Vec<Raw> = (0..N).map(|_| raw_a(&g)).collect();
    let mut extra = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    let all = read_until_closed(&mut extra, Duration::from_secs(5));
    let packets = split_packets(&all);
    assert_eq!(packets.len(), 1, "{packets:?}");
    let e = raw::parse_err(&packets[0].1);
    assert_eq!((e.code, e.state.as_str()), (1040, "08004"));
    assert_eq!(e.message, "Too many connections");
    // The refused one disturbed nobody; a freed slot can be taken.
    assert_eq!(single(&held[0].query("SELECT 3")), "3");
    let quitter = held.pop().unwrap();
    drop(quitter);
    let mut again = None;
    assert!(wait_until(Duration::from_secs(5), || {
        let mut r = Raw::connect(g.port, Duration::from_secs(5));
        if r.read_greeting().is_ok() && r.login(USER_A, PASS_A, Some(TEST_DB)).is_ok() {
            again = Some(r);
            true
        } else {
            false
        }
    }));
    assert_eq!(single(&again.unwrap().query("SELECT 4")), "4");
}

// ---------------------------------------------------------------------------
// 6. Bad input.

#[test]
fn bad_input_closes_only_that_client() {
    let db = common::mariadb();
    let mut f = cfg(db.port)
        .funnel("max_allowed_packet = 1M")
        .pool("connections = 2")
        .start();
    let mut bystander = mconn(&f, Duration::from_secs(5));
    let mut check = |what: &str, n: i64| {
        let got: Result<Option<i64>, _> = bystander.query_first(format!("SELECT {n}"));
        assert_eq!(got.ok().flatten(), Some(n), "bystander broken after {what}");
    };
    let greeted = || {
        let mut r = Raw::connect(f.port, Duration::from_secs(5));
        r.read_greeting().unwrap();
        r
    };
    /// Sends `bytes`, then expects the funnel to close the connection,
    /// having sent nothing but ERR packets; returns them.
    fn expect_close(r: &mut Raw, bytes: &[u8]) -> Vec<raw::ServerError> {
        r.write(bytes).unwrap();
        let all = read_until_closed(&mut r.stream, Duration::from_secs(5));
        let packets = split_packets(&all);
        assert!(
            packets.iter().all(|(_, p)| p.first() == Some(&0xff)),
            "expected only an ERR before the close, got {packets:?}"
        );
        errors_in(&packets)
    }

    // Garbage instead of a handshake response: an HTTP request (its first
    // three bytes read as a 5 MB length)...
    let errs = expect_close(&mut greeted(), b"GET / HTTP/1.1\r\nHost: funnel\r\n\r\n");
    assert!(errs.iter().all(|e| e.code == 1043), "{errs:?}");
    check("an HTTP request", 1);
    // ... a well-framed packet of junk ...
    let mut junk = raw::frame(1, &[0xab; 10]);
    let errs = expect_close(&mut greeted(), &junk);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].code, 1043);
    check("a junk handshake packet", 2);
    // ... pseudo-random bytes ...
    let mut x: u32 = 0x1234_5678;
    junk = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut r = greeted();
    let _ = r.write(&junk);
    let _ = read_until_closed(&mut r.stream, Duration::from_secs(5));
    check("random bytes", 3);
    // ... and half a packet, then the client goes away.
    let mut r = greeted();
    r.write(&[0x20, 0x00]).unwrap();
    drop(r);
    check("half a header", 4);

    // An SSLRequest: ERR 1043, TLS not supported.
    let mut ssl = Vec::new();
    ssl.extend_from_slice(&(raw::BASE_CAPS | raw::CLIENT_SSL).to_le_bytes());
    ssl.extend_from_slice(&(16u32 << 20).to_le_bytes());
    ssl.push(raw::UTF8MB4_GENERAL_CI);
    ssl.extend_from_slice(&[0; 23]);
    let errs = expect_close(&mut greeted(), &raw::frame(1, &ssl));
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].code, errs[0].state.as_str()), (1043, "08S01"));
    assert!(errs[0].message.contains("TLS is not supported"), "{errs:?}");
    check("an SSLRequest", 5);

    // A command with a wrong sequence id.
    let mut r = raw_a(&f);
    let mut q = raw::query_packet("SELECT 1");
    q[3] = 5;
    let errs = expect_close(&mut r, &q);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].code, 1156, "{errs:?}");
    check("a wrong sequence id", 6);

    // A header announcing 2 MB with max_allowed_packet = 1M: refused from
    // the header alone, before the payload is sent.
    let mut r = raw_a(&f);
    let t = Instant::now();
    let errs = expect_close(&mut r, &[0x00, 0x00, 0x20, 0x00, 0x03, b'S']);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].code, 1153, "{errs:?}");
    assert_eq!(
        errs[0].message,
        "funnel: got a packet of 2097152 bytes, bigger than max_allowed_packet (1048576 bytes)"
    );
    check("an oversized packet", 7);

    // An empty command packet.
    let errs = expect_close(&mut raw_a(&f), &[0, 0, 0, 0]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    check("an empty command", 8);

    // A malformed COM_CHANGE_USER.
    let errs = expect_close(&mut raw_a(&f), &raw::frame(0, &[0x11, 0xff]));
    assert!(errs.len() <= 1, "{errs:?}");
    check("a malformed COM_CHANGE_USER", 9);

    // An unknown command byte is an error, not a reason to hang up.
    let mut r = raw_a(&f);
    r.write(&raw::frame(0, &[0xee, 1, 2, 3])).unwrap();
    match r.read_reply() {
        Reply::Err(e) => assert_eq!(e.code, 1047, "{e:?}"),
        other => panic!("unknown command: {other:?}"),
    }
    assert_eq!(single(&r.query("SELECT 10")), "10");
    check("an unknown command", 10);

    assert!(f.is_running(), "the funnel died");
}

// ---------------------------------------------------------------------------
// 7. Pipelining.

#[test]
fn pipelined_commands_are_answered_in_order() {
    let db = common::mariadb();
    let f = cfg(db.port).pool("connections = 1").start();
    let mut r = raw_a(&f);
    let mut bytes = raw::query_packet("SELECT 1");
    bytes.extend(raw::query_packet("SELECT 2"));
    bytes.extend(raw::frame(0, &[0x0e])); // COM_PING
    r.write(&bytes).unwrap();
    assert_eq!(single(&r.read_reply()), "1");
    assert_eq!(r.first_seq, 1);
    assert_eq!(single(&r.read_reply()), "2");
    assert_eq!(r.first_seq, 1);
    assert_eq!(r.read_reply(), Reply::Ok);
    assert_eq!(r.first_seq, 1);

    // A longer pipeline mixing queries (queued behind one busy backend) with
    // commands the funnel answers itself: still strictly in order.
    let mut busy = mconn(&f, Duration::from_secs(10));
    let blocker = thread::spawn(move || {
        let _: Option<i64> = busy.query_first("SELECT SLEEP(0.3)").unwrap();
    });
    let mut bytes = Vec::new();
    for i in 0..50 {
        if i % 3 == 2 {
            bytes.extend(raw::frame(0, &[0x0e]));
        } else {
            bytes.extend(raw::query_packet(&format!("SELECT {i}")));
        }
    }
    r.write(&bytes).unwrap();
    for i in 0..50 {
        let reply = r.read_reply();
        if i % 3 == 2 {
            assert_eq!(reply, Reply::Ok, "answer {i}");
        } else {
            assert_eq!(single(&reply), i.to_string(), "answer {i}");
        }
    }
    blocker.join().unwrap();
}

/// COM_SET_OPTION gets what mysqld answers, byte for byte: EOF for
/// MULTI_STATEMENTS_ON (0) and OFF (1), missing bytes read as 0 and extra
/// ones ignored; ERR 1047 "Unknown command" for any other option, with
/// the setting unchanged.
#[test]
fn set_option_is_answered_as_mysqld_answers_it() {
    let db = common::mariadb();
    let f = cfg(db.port).pool("connections = 1").start();
    // The answer to the option, and what "SELECT 1; SELECT 2" gets then.
    let run = |port: u16, payload: &[u8]| -> (Vec<u8>, String) {
        let mut r = Raw::open(port, USER_A, PASS_A, Some(TEST_DB));
        let mut p = vec![0x1b]; // COM_SET_OPTION
        p.extend_from_slice(payload);
        r.write(&raw::frame(0, &p)).unwrap();
        let (_, answer) = r.read_packet().expect("an answer to COM_SET_OPTION");
        let multi = match r.query("SELECT 1; SELECT 2") {
            Reply::Rows(rows) => {
                let second = r.read_reply();
                format!("{rows:?} then {second:?}")
            }
            other => format!("{other:?}"),
        };
        (answer, multi)
    };
    let cases: [&[u8]; 8] = [
        &[0, 0],
        &[1, 0],
        &[2, 0],
        &[0xff, 0xff],
        &[0, 1],
        &[],
        &[1],
        &[1, 0, 7],
    ];
    for payload in cases {
        let direct = run(db.port, payload);
        let funnel = run(f.port, payload);
        assert_eq!(funnel, direct, "COM_SET_OPTION {payload:?}");
    }
    let (answer, _) = run(f.port, &[2, 0]);
    let err = raw::parse_err(&answer);
    assert_eq!(
        (err.code, err.state.as_str(), err.message.as_str()),
        (1047, "08S01", "Unknown command")
    );
}

/// A client that sends its commands and then shuts down its sending side
/// gets every answer, then the funnel closes, as mysqld does.
#[test]
fn half_closed_client_gets_its_answers() {
    let db = common::mariadb();
    let f = cfg(db.port).pool("connections = 1").start();
    let mut busy = mconn(&f, Duration::from_secs(10));
    for port in [db.port, f.port] {
        let mut r = Raw::open(port, USER_A, PASS_A, Some(TEST_DB));
        r.send_query("SELECT 1").unwrap();
        r.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(single(&r.read_reply()), "1", "port {port}");
        let rest = read_until_closed(&mut r.stream, Duration::from_secs(5));
        assert!(rest.is_empty(), "port {port}: {rest:?}");

        // Pipelined, one of them queued behind another client's statement.
        let blocker = (port == f.port).then(|| {
            let mut c = mconn(&f, Duration::from_secs(10));
            thread::spawn(move || {
                let _: Option<i64> = c.query_first("SELECT SLEEP(0.3)").unwrap();
            })
        });
        let mut r = Raw::open(port, USER_A, PASS_A, Some(TEST_DB));
        let mut bytes = raw::query_packet("SELECT 2");
        bytes.extend(raw::query_packet("SELECT SLEEP(0.1) + 3"));
        bytes.extend(raw::frame(0, &[0x0e])); // COM_PING
        bytes.extend(raw::query_packet("SELECT 4"));
        // Half a command: never complete, never answered.
        bytes.extend_from_slice(&[0x20, 0x00]);
        r.write(&bytes).unwrap();
        r.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(single(&r.read_reply()), "2", "port {port}");
        assert_eq!(single(&r.read_reply()), "3", "port {port}");
        assert_eq!(r.read_reply(), Reply::Ok, "port {port}");
        assert_eq!(single(&r.read_reply()), "4", "port {port}");
        let rest = read_until_closed(&mut r.stream, Duration::from_secs(5));
        assert!(rest.is_empty(), "port {port}: {rest:?}");
        if let Some(b) = blocker {
            b.join().unwrap();
        }
    }
    // Nothing was left behind: the pool still serves.
    select_n(&mut busy, 5);
}

// ---------------------------------------------------------------------------
// 8. Reload.

#[test]
fn sighup_resizes_pool_live_and_refuses_broken_config() {
    let db = MariaDb::new();
    // One event loop: with several, clients logged in before a reload that
    // adds loops stay where they are (README, "Several event loops"), and
    // this test counts statements its five clients run at once.
    let cfg = cfg(db.port).pool("connections = 2").funnel("threads = 1");
    let f = cfg.start();
    let text = cfg.text(f.port);
    let mut clients: Vec<Conn> = (0..5).map(|_| mconn(&f, Duration::from_secs(10))).collect();
    let ids: Vec<u64> = clients
        .iter_mut()
        .map(|c| c.query_first("SELECT CONNECTION_ID()").unwrap().unwrap())
        .collect();
    db.wait_connections(USER_A, 2, Duration::from_secs(10));
    let same_clients = |clients: &mut Vec<Conn>, when: &str| {
        for (c, id) in clients.iter_mut().zip(&ids) {
            let now: u64 = c
                .query_first("SELECT CONNECTION_ID()")
                .unwrap_or_else(|e| panic!("client dropped {when}: {e}"))
                .unwrap();
            assert_eq!(now, *id, "client reconnected {when}");
            select_n(c, 12);
        }
    };

    // 2 -> 4, live.
    f.write_config(&text.replace("connections = 2", "connections = 4"));
    f.signal(libc::SIGHUP);
    db.wait_connections(USER_A, 4, Duration::from_secs(10));
    assert!(f.wait_for_log("connections 2 -> 4", Duration::from_secs(5)));
    same_clients(&mut clients, "after growing the pool");
    // All four are really used: four sleeps run at once.
    let sleepers: Vec<_> = clients
        .drain(1..)
        .map(|mut c| {
            thread::spawn(move || {
                let _: Option<i64> = c.query_first("SELECT SLEEP(1.5)").unwrap();
                c
            })
        })
        .collect();
    let mut most = 0;
    let all_four = wait_until(Duration::from_secs(5), || {
        most = most.max(db.threads_of(USER_A, Some("SELECT SLEEP(1.5)")).len());
        most == 4
    });
    for s in sleepers {
        clients.push(s.join().unwrap());
    }
    assert!(all_four, "at most {most} statements ran at once");

    // A broken file is refused, logged, and the old configuration stays.
    f.write_config(&text.replace("connections = 2", "connections = banana"));
    f.signal(libc::SIGHUP);
    assert!(
        f.wait_for_log("reload refused", Duration::from_secs(5)),
        "{}",
        f.log_tail(2000)
    );
    assert_eq!(db.connections_of(USER_A), 4);
    // (clients were re-ordered by the sleeper threads; compare as sets)
    let mut now: Vec<u64> = clients
        .iter_mut()
        .map(|c| c.query_first("SELECT CONNECTION_ID()").unwrap().unwrap())
        .collect();
    now.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(now, want, "clients were dropped by the refused reload");
    let mut fresh = mconn(&f, Duration::from_secs(10));
    select_n(&mut fresh, 13);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(db.connections_of(USER_A), 4);

    // And a valid reload after it still applies (4 -> 1).
    f.write_config(&text.replace("connections = 2", "connections = 1"));
    f.signal(libc::SIGHUP);
    db.wait_connections(USER_A, 1, Duration::from_secs(10));
    for c in clients.iter_mut() {
        select_n(c, 14);
    }
    let mut f = f;
    assert!(f.is_running());
}

// ---------------------------------------------------------------------------
// 9. Graceful shutdown.

#[test]
fn sigterm_lets_running_query_finish_and_exits_zero() {
    let db = common::mariadb();
    let mut f = cfg(db.port)
        .funnel("shutdown_timeout_ms = 5000")
        .pool("connections = 2")
        .start();
    let marker = common::unique_name("shutdown");
    let mut c = mconn(&f, Duration::from_secs(10));
    let mut idle = raw_a(&f);
    let sql = format!("SELECT SLEEP(1), '{marker}'");
    let running = thread::spawn(move || c.query_first::<(i64, String), _>(sql));
    assert!(wait_until(Duration::from_secs(10), || {
        let n: Vec<u64> = db.admin_query(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(1), ''{marker}''%'"
        ));
        !n.is_empty()
    }));
    let t0 = Instant::now();
    f.signal(libc::SIGTERM);
    let status = f
        .wait_exit(Duration::from_secs(8))
        .expect("the funnel did not exit after SIGTERM");
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_millis(5000), "exit took {took:?}");
    let result = running.join().unwrap();
    assert_eq!(result.unwrap(), Some((0, marker.clone())));
    // The idle client's connection was closed between its commands, with
    // no ERR 1053 left to answer the next command it sends (tests/restart.rs).
    let all = read_until_closed(&mut idle.stream, Duration::from_secs(5));
    assert!(all.is_empty(), "{:?}", errors_in(&split_packets(&all)));
    eprintln!("[faults] SIGTERM during SLEEP(1): exit 0 after {took:?}");

    // A statement longer than shutdown_timeout_ms is cut off at the deadline.
    let mut f = cfg(db.port)
        .funnel("shutdown_timeout_ms = 1000")
        .pool("connections = 1")
        .start();
    let mut c = mconn(&f, Duration::from_secs(20));
    let marker = common::unique_name("shutdown_long");
    let sql = format!("SELECT SLEEP(8), '{marker}'");
    let running = thread::spawn(move || c.query_first::<(i64, String), _>(sql));
    let mut target: Vec<u64> = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        target = db.admin_query(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(8), ''{marker}''%'"
        ));
        !target.is_empty()
    }));
    let t0 = Instant::now();
    f.signal(libc::SIGTERM);
    let status = f
        .wait_exit(Duration::from_secs(5))
        .expect("the funnel did not exit at its shutdown deadline");
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(3000),
        "exit took {took:?}"
    );
    let result = running.join().unwrap();
    assert!(
        error_code(&result) == Some(1053) || matches!(result, Err(mysql::Error::IoError(_))),
        "{result:?}"
    );
    // Do not leave the statement sleeping on the shared server.
    for id in target {
        let _ = db.admin_conn().query_drop(format!("KILL {id}"));
    }
}

// ---------------------------------------------------------------------------
// 10. A backend that misbehaves (the fake).

#[test]
fn misbehaving_backend_garbage_half_packets_and_stalls() {
    let fake = fake::FakeMysql::start();
    let mut f = cfg(fake.port)
        .pool("connections = 1")
        .pool("queue_timeout_ms = 8000")
        .backend("connect_timeout_ms = 500")
        .backend("reconnect_backoff_min_ms = 50")
        .backend("reconnect_backoff_max_ms = 200")
        .start();
    let open = || {
        let r = Raw::open(f.port, USER_A, PASS_A, None);
        r.set_read_timeout(Duration::from_secs(10));
        r
    };
    let lost = |reply: &Reply, what: &str| match reply {
        Reply::Err(e) => {
            assert_eq!(e.code, 2013, "{what}: {e:?}");
            assert!(
                e.message.starts_with("funnel: lost connection"),
                "{what}: {e:?}"
            );
        }
        other => panic!("{what}: expected ERR 2013, got {other:?}"),
    };
    let mut r = open();
    assert_eq!(single(&r.query("SELECT hello")), "hello");

    // Connection closed instead of an answer: 2013; the client goes on.
    // (A locking read, so that it is not repeated on another backend:
    // `backend_dying_before_the_answer_repeats_only_safe_statements`.)
    lost(&r.query("SELECT fault:close FOR UPDATE"), "close");
    assert_eq!(fake.times_seen("SELECT fault:close FOR UPDATE"), 1);
    assert_eq!(single(&r.query("SELECT after close")), "after close");

    // An invalid first packet: 2013; the backend is replaced.
    let before = fake.logged_in.load(Ordering::SeqCst);
    lost(&r.query("SELECT fault:empty FOR UPDATE"), "empty packet");
    assert_eq!(single(&r.query("SELECT after empty")), "after empty");
    assert!(fake.logged_in.load(Ordering::SeqCst) > before);

    // A stall in the middle of a result is only a delay.
    let t = Instant::now();
    assert_eq!(single(&r.query("SELECT fault:stall")), "stall");
    assert!(t.elapsed() >= Duration::from_millis(1100));

    // Half a packet, then the backend closes: part of the answer was
    // forwarded, so the client is disconnected, promptly.
    let t = Instant::now();
    match r.query("SELECT fault:half") {
        Reply::Closed(_) => {}
        other => panic!("half a result: expected the connection closed, got {other:?}"),
    }
    // A read, but its answer had started: not repeated.
    assert_eq!(fake.times_seen("SELECT fault:half"), 1);
    assert!(t.elapsed() < Duration::from_secs(3));
    let mut r = open();
    assert_eq!(single(&r.query("SELECT after half")), "after half");

    // A stall after the column count, then close: same.
    match r.query("SELECT fault:stall_close") {
        Reply::Closed(_) => {}
        other => panic!("stall + close: expected the connection closed, got {other:?}"),
    }
    assert_eq!(fake.times_seen("SELECT fault:stall_close"), 1);
    let mut r = open();

    // Unasked garbage on an idle backend: dropped and replaced; clients
    // do not notice.
    assert_eq!(
        single(&r.query("SELECT fault:garbage_later")),
        "garbage_later"
    );
    assert!(
        f.wait_for_log(
            "server sent a packet no command asked for",
            Duration::from_secs(5)
        ),
        "the backend that sent garbage was not dropped"
    );
    assert_eq!(single(&r.query("SELECT after garbage")), "after garbage");

    // Reconnection through garbage greetings and a greeting that stalls
    // (connect_timeout_ms): a command sent meanwhile waits and is served.
    fake.bad_greetings.store(2, Ordering::SeqCst);
    fake.stall_greetings.store(1, Ordering::SeqCst);
    lost(
        &r.query("SELECT fault:close FOR UPDATE"),
        "close before bad greetings",
    );
    let t = Instant::now();
    assert_eq!(single(&r.query("SELECT patient")), "patient");
    eprintln!(
        "[faults] fake backend: served after 2 garbage greetings and a stalled one in {:?}",
        t.elapsed()
    );
    assert_eq!(fake.bad_greetings.load(Ordering::SeqCst), 0);
    assert_eq!(fake.stall_greetings.load(Ordering::SeqCst), 0);
    assert!(f.is_running(), "the funnel died");
}

/// A backend that dies after it received a statement and before any of the
/// answer reached the client: a plain read is sent again (to the next
/// backend connection), at most twice to a newly connected backend; a
/// write, a locking read, a lock, a sleep, a stored function, or a read
/// whose answer had started (`misbehaving_backend_...`) gets ERR 2013 (or
/// the connection closed) and is not repeated. (The fake knows no
/// transactions: `mysqld_killed_under_blocked_statements` has those.)
#[test]
fn backend_dying_before_the_answer_repeats_only_safe_statements() {
    let fake = fake::FakeMysql::start();
    let admin_port = common::free_port();
    let f = cfg(fake.port)
        .pool("connections = 1")
        .pool("queue_timeout_ms = 8000")
        .backend("connect_timeout_ms = 500")
        .backend("reconnect_backoff_min_ms = 20")
        .backend("reconnect_backoff_max_ms = 100")
        .admin(admin_port, "adm")
        .start();
    let retried = || pool_stat(admin_port, "retried");
    let mut r = Raw::open(f.port, USER_A, PASS_A, None);
    r.set_read_timeout(Duration::from_secs(10));
    assert_eq!(single(&r.query("SELECT warm")), "warm");
    assert_eq!(retried(), 0);

    // Closed once after receiving a plain read: answered by the next
    // backend connection, no error.
    fake.close_budget.store(1, Ordering::SeqCst);
    assert_eq!(single(&r.query("SELECT fault:close_n")), "close_n");
    assert_eq!(fake.times_seen("SELECT fault:close_n"), 2);
    assert_eq!(retried(), 1);

    // Always closed: tried on three connections (two retries), then 2013.
    let before = fake.times_seen("SELECT fault:close_n");
    fake.close_budget.store(100, Ordering::SeqCst);
    match r.query("SELECT fault:close_n") {
        Reply::Err(e) => assert_eq!(
            (e.code, e.message.as_str()),
            (2013, "funnel: lost connection to backend during query")
        ),
        other => panic!("a read that kills every backend: {other:?}"),
    }
    assert_eq!(fake.times_seen("SELECT fault:close_n") - before, 3);
    assert_eq!(retried(), 3);
    fake.close_budget.store(0, Ordering::SeqCst);

    // Bytes of the answer arrived but none reached the client (half a
    // header): still safe to repeat; the fake does it every time: 2013.
    match r.query("SELECT fault:partial") {
        Reply::Err(e) => assert_eq!(e.code, 2013, "{e:?}"),
        other => panic!("half a header every time: {other:?}"),
    }
    assert_eq!(fake.times_seen("SELECT fault:partial"), 3);
    assert_eq!(retried(), 5);

    // What may have changed something is not repeated: 2013 at once.
    for sql in [
        "INSERT INTO t VALUES ('fault:close_n')",
        "UPDATE t SET v = 'fault:close_n'",
        "SELECT v FROM t WHERE v = 'fault:close_n' FOR UPDATE",
        "SELECT 'fault:close_n' INTO @x",
        "SELECT GET_LOCK('fault:close_n', 0)",
        "SELECT SLEEP(0), 'fault:close_n'",
        "SELECT my_function('fault:close_n')",
    ] {
        fake.close_budget.store(1, Ordering::SeqCst);
        match r.query(sql) {
            Reply::Err(e) => assert_eq!(e.code, 2013, "{sql}: {e:?}"),
            other => panic!("{sql}: expected ERR 2013, got {other:?}"),
        }
        assert_eq!(fake.times_seen(sql), 1, "{sql} was repeated");
        assert_eq!(single(&r.query("SELECT next")), "next", "after {sql}");
    }
    assert_eq!(retried(), 5);

    assert_eq!(single(&r.query("SELECT after")), "after");
}

/// The backend sends the last bytes it will ever send and closes at once, so
/// that the funnel sees the data and the end of the stream in one wake-up
/// (made certain by stopping the funnel meanwhile): the client, which got
/// part of an answer, must be disconnected, and the pool must recover.
#[test]
fn backend_close_arriving_with_its_last_data_is_noticed() {
    let fake = fake::FakeMysql::start();
    let f = cfg(fake.port)
        .pool("connections = 1")
        .pool("queue_timeout_ms = 3000")
        .start();
    let mut r = Raw::open(f.port, USER_A, PASS_A, None);
    r.set_read_timeout(Duration::from_secs(5));
    assert_eq!(single(&r.query("SELECT warm")), "warm");
    r.send_query("SELECT fault:gated_half").unwrap();
    assert!(wait_until(Duration::from_secs(5), || fake
        .gate_reached
        .load(Ordering::SeqCst)));
    f.signal(libc::SIGSTOP);
    fake.gate_open.store(true, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(200));
    f.signal(libc::SIGCONT);
    let t = Instant::now();
    let reply = r.read_reply();
    assert!(
        matches!(reply, Reply::Closed(_)),
        "half an answer, then the backend closed: the client got {reply:?} after {:?}",
        t.elapsed()
    );
    let mut r2 = Raw::open(f.port, USER_A, PASS_A, None);
    r2.set_read_timeout(Duration::from_secs(5));
    assert_eq!(single(&r2.query("SELECT after")), "after");
}

/// SIGTERM: "stop accepting". A client connecting during the drain should
/// be refused (or told) at once, not left hanging until the funnel exits.
#[test]
fn sigterm_stops_accepting_at_once() {
    let db = common::mariadb();
    let mut f = cfg(db.port)
        .funnel("shutdown_timeout_ms = 5000")
        .pool("connections = 1")
        .start();
    let marker = common::unique_name("drain");
    let mut c = mconn(&f, Duration::from_secs(10));
    let sql = format!("SELECT SLEEP(2), '{marker}'");
    let running = thread::spawn(move || c.query_first::<(i64, String), _>(sql));
    assert!(wait_until(Duration::from_secs(10), || {
        let n: Vec<u64> = db.admin_query(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(2), ''{marker}''%'"
        ));
        !n.is_empty()
    }));
    f.signal(libc::SIGTERM);
    assert!(f.wait_for_log("shutting down", Duration::from_secs(5)));
    let t = Instant::now();
    let outcome = match TcpStream::connect(("127.0.0.1", f.port)) {
        Err(e) => format!("refused ({e})"),
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 1024];
            match s.read(&mut buf) {
                Ok(0) => "closed".to_string(),
                Ok(n) if buf[0..n].get(4) == Some(&0xff) => "ERR".to_string(),
                Ok(n) => format!("{n} bytes (a greeting?)"),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset".into(),
                Err(e) => format!("nothing for {:?} ({e})", t.elapsed()),
            }
        }
    };
    let result = running.join().unwrap();
    let status = f.wait_exit(Duration::from_secs(8));
    assert_eq!(result.unwrap().map(|r| r.0), Some(0));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        outcome.starts_with("refused")
            || outcome == "closed"
            || outcome == "reset"
            || outcome == "ERR",
        "a client connecting during shutdown got: {outcome}"
    );
}

/// When the funnel runs out of file descriptors, accepting pauses and
/// resumes (README "Floods"): connections beyond the limit wait in the
/// kernel's queue and are served once descriptors are free again.
#[test]
fn out_of_file_descriptors_pauses_and_resumes_accepting() {
    const SILENT: usize = 100;
    let db = common::mariadb();
    let mut f = cfg(db.port)
        .funnel("handshake_timeout_ms = 500")
        .pool("connections = 1")
        .start();
    let mut served = mconn(&f, Duration::from_secs(10));
    select_n(&mut served, 1);
    let pid = f.pid().unwrap();
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let limit = open_fds + 20;
    let new = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: 20000.max(limit) as libc::rlim_t,
    };
    // SAFETY: prlimit on our own child with a valid struct.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    let t0 = Instant::now();
    let mut silent: Vec<TcpStream> = (0..SILENT)
        .map(|_| TcpStream::connect(("127.0.0.1", f.port)).unwrap())
        .collect();
    // The served client is not disturbed.
    for n in 2..20 {
        select_n(&mut served, n);
    }
    let mut greeted_and_told = 0;
    for s in silent.iter_mut() {
        let left = Duration::from_secs(20).saturating_sub(t0.elapsed());
        assert!(
            !left.is_zero(),
            "not all queued connections were served in time"
        );
        let all = read_until_closed(s, left);
        let packets = split_packets(&all);
        if packets.first().is_some_and(|(_, p)| p.first() == Some(&10))
            && errors_in(&packets).iter().any(|e| e.code == 1043)
        {
            greeted_and_told += 1;
        }
    }
    eprintln!(
        "[faults] fd limit {limit}: {SILENT} silent connections all handled in {:?}; funnel CPU {:?}",
        t0.elapsed(),
        cpu_time(pid)
    );
    assert_eq!(greeted_and_told, SILENT);
    assert!(
        f.log().contains("accept failed"),
        "the fd limit was never hit"
    );
    select_n(&mut served, 99);
    let mut late = mconn(&f, Duration::from_secs(10));
    select_n(&mut late, 100);
    assert!(f.is_running());
}

/// A backend that stops answering (a firewall that silently dropped the
/// connection, a hung mysqld thread) while idle: the health-check ping is
/// never answered. funnel.conf.example: idle backends are pinged "so that
/// connections killed by mysqld's wait_timeout or a firewall are replaced
/// before a client needs them". Clients must still be served.
#[test]
fn unanswered_health_check_is_replaced() {
    let fake = fake::FakeMysql::start();
    let f = cfg(fake.port)
        .pool("connections = 1")
        .pool("queue_timeout_ms = 4000")
        .backend("health_check_interval_ms = 300")
        .backend("connect_timeout_ms = 500")
        .start();
    let mut r = Raw::open(f.port, USER_A, PASS_A, None);
    r.set_read_timeout(Duration::from_secs(10));
    assert_eq!(single(&r.query("SELECT fault:blackhole")), "blackhole");
    assert!(
        wait_until(Duration::from_secs(5), || fake
            .ignored
            .load(Ordering::SeqCst)
            >= 1),
        "no health-check ping arrived"
    );
    let t = Instant::now();
    let reply = r.query("SELECT still served");
    assert_eq!(
        reply,
        Reply::Rows(vec![vec![Some("still served".into())]]),
        "after {:?}",
        t.elapsed()
    );
}
