//! The whole funnel in one thread, driven by a byte string: the fuzz target
//! for the client and backend state machines (the codec has its own).
//!
//! The funnel's engine runs without sockets: [`mem_io::MemIo`], an I/O
//! layer over in-memory pipes ([`pipe`]), drives it one turn at a time as
//! the real event loop does over sockets (readiness reported
//! edge-triggered, the engine's actions carried out), with a clock of the
//! simulation's own that the input can move forward. So a case runs the
//! same way every time. Its backend is [`fake_mysqld::FakeMysqld`], a
//! scripted MySQL server in the same thread; up to four clients do what
//! the input says: raw bytes, framed packets, proper logins, canned
//! commands (prepared statements, cursors, transactions, locks, KILL,
//! change-user, LOCAL INFILE, …), pipelines, stopping reading, closing.
//! The input can also make mysqld misbehave, die, go down, refuse
//! connects or leave them pending, reload the configuration, and send the
//! admin console's requests (snapshot, pause, resume, reload).
//!
//! Checked after every turn: the loop's invariants
//! ([`Engine::check_invariants`](super::Engine)), and that everything each client received
//! is well-framed with every ERR well-formed. At the end every client
//! leaves; the funnel must settle (no clients, no queued work, every
//! backend idle, pools refilled) and then serve a new client's `SELECT 1`.
//! No panic anywhere, of course.
//!
//! Isolation is checked by content. Every client has a tag of its own
//! (never reused within a case) and runs statements that leave session
//! state the funnel cannot see in the fake mysqld's connection (stored
//! procedures and functions, `EXECUTE IMMEDIATE`, a trigger, `FLUSH TABLES
//! WITH READ LOCK`) or warnings in its diagnostics area; the probes
//! `SHOW STATUS LIKE 'sim_owner'`, `SHOW WARNINGS` and `SHOW ERRORS` answer
//! whose state they find, and must never name another client. After every
//! turn, no backend in an idle list, and none serving a client, may hold
//! another client's hidden state. And no statement may be interrupted
//! (ERR 1317, or `SLEEP` answering 1) unless a `KILL` was in flight while
//! it was outstanding.

mod fake_mysqld;
mod invariants;
mod mem_io;
mod pipe;

use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Config;
use crate::control::Control;
use crate::protocol::auth::scramble_native;
use crate::protocol::consts::*;
use crate::protocol::handshake::{AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use crate::protocol::lenenc::write_lenenc_str;
use crate::protocol::packet::{next_frame, write_packet, HEADER_LEN};
use crate::protocol::response::decode_err;
use crate::protocol::tracker::{expect_for, Expect, Progress, ResponseTracker};
use fake_mysqld::{Answer, ConnectFate, FakeMysqld, OWNER_MARK};
use mem_io::MemIo;
use pipe::PipeEnd;

const MAX_CLIENTS: usize = 4;
/// Operations read from one input; the rest is ignored.
const MAX_OPS: usize = 256;
/// Steps allowed for the funnel to settle at the end.
const SETTLE_STEPS: usize = 600;
/// Clock moved forward per settling step after the first few, so that
/// timeouts and reconnect backoffs run out.
const SETTLE_TICK: Duration = Duration::from_millis(25);
/// Bytes a client may have written but the socket not yet taken.
const MAX_UNSENT: usize = 1 << 20;

/// The first canned command index of [`Sim::isolation_command`]'s.
const ISOLATION_CANNED: u8 = 48;

const USERS: [(&str, &str); 2] = [("app", "app_pw"), ("other", "other_pw")];
const ADMIN_RESUME: u8 = 2;

static CASE: AtomicU64 = AtomicU64::new(0);

/// Run one input. `Err` means an invariant broke (the fuzz target panics
/// with it); inputs that make no sense simply do less.
pub fn run_case(input: &[u8]) -> Result<(), String> {
    let mut sim = Sim::new()?;
    let result = sim.run(input).and_then(|()| sim.finish());
    result.map_err(|e| format!("{e}\nstate: {}", sim.funnel.engine.describe_state()))
}

/// What an answer is checked for beyond its form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    None,
    /// `SHOW STATUS LIKE 'sim_owner'`, `SHOW WARNINGS`, `SHOW ERRORS`: may
    /// name no other client's tag.
    Owner,
    /// `SELECT SLEEP(n)`: "1" when a KILL QUERY stopped it.
    Sleep,
    /// A `KILL`: until its answer, any client's statement may be stopped.
    Kill,
}

/// A command whose answer has not ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Awaited {
    cmd: u8,
    probe: Probe,
    /// A KILL was in flight while it was outstanding: it may be interrupted.
    killable: bool,
}

#[cfg(test)]
impl Awaited {
    fn plain(cmd: u8) -> Awaited {
        Awaited {
            cmd,
            probe: Probe::None,
            killable: false,
        }
    }
}

fn probe_of(payload: &[u8]) -> Probe {
    if payload.first() != Some(&COM_QUERY) {
        return Probe::None;
    }
    let sql = String::from_utf8_lossy(&payload[1..]).to_ascii_lowercase();
    let sql = sql.trim_start();
    if sql.contains("kill") {
        Probe::Kill
    } else if sql.starts_with("show warnings")
        || sql.starts_with("show errors")
        || sql.starts_with("show status like 'sim_owner'")
    {
        Probe::Owner
    } else if sql.contains("sleep(") {
        Probe::Sleep
    } else {
        Probe::None
    }
}

/// The tag a row names after [`OWNER_MARK`], if it names one.
fn owner_named(payload: &[u8]) -> Option<u32> {
    let at = payload
        .windows(OWNER_MARK.len())
        .position(|w| w == OWNER_MARK)?;
    let digits: Vec<u8> = payload[at + OWNER_MARK.len()..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    // A mark without a number names nobody the client could be.
    Some(
        std::str::from_utf8(&digits)
            .ok()?
            .parse()
            .unwrap_or(u32::MAX),
    )
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Login {
    None,
    /// Handshake response (or change-user) sent with this password; an auth
    /// switch is answered with it.
    Sent(&'static str),
    Done,
    Refused,
}

struct SimClient {
    /// Its own, in the statements that leave session state.
    tag: u32,
    /// The connection id the funnel's greeting gave it.
    conn_id: Option<u32>,
    /// The last bytes it sent raw, to spot a KILL spread over two sends.
    raw_tail: Vec<u8>,
    stream: PipeEnd,
    received: Vec<u8>,
    /// Bytes of `received` already checked as whole frames.
    checked: usize,
    reading: bool,
    scramble: Vec<u8>,
    got_greeting: bool,
    login: Login,
    unsent: Vec<u8>,
    peer_closed: bool,
    /// The frames received after its login (the first 64).
    frames: Vec<Vec<u8>>,
    /// The ERR that refused its login.
    login_error: Option<Vec<u8>>,
    /// Capabilities it logged in with.
    caps: u32,
    /// Sent nothing but whole commands since its login: what it
    /// receives must be the answers to them, in order, each well-formed
    /// for its capabilities with consecutive sequence ids.
    clean: bool,
    /// Commands sent whose answer has not started.
    awaiting: std::collections::VecDeque<Awaited>,
    /// Follows the answer being received (None: between answers).
    answer: Option<(ResponseTracker, Awaited)>,
    answer_seq: u8,
    /// The answer being received is the fake mysqld's to `SLEEP` (its
    /// column is named so), not a scripted one.
    answer_sleeps: bool,
}

struct Sim {
    funnel: MemIo,
    /// The admin side of the loop's control channel.
    control: crossbeam_channel::Sender<Control>,
    dir: PathBuf,
    mysqld: FakeMysqld,
    clients: Vec<Option<SimClient>>,
    op: usize,
    /// The tag the next client gets.
    next_tag: u32,
    /// A KILL went out that nobody follows to its answer (raw bytes, a
    /// client that stopped checking or left): from now on any statement
    /// may be interrupted.
    kill_unknown: bool,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config_text(dir: &std::path::Path, variant: u8) -> String {
    let connections = 1 + variant % 3;
    let backlog = 2 + variant % 4;
    let pinned = variant % 2;
    let max_clients = 5 + variant % 3;
    let broken = if variant % 7 == 6 {
        "connections = many\n"
    } else {
        ""
    };
    // Connection first (see max_buffered_result) in half the variants.
    let buffered = if variant & 8 != 0 { 1 << 20 } else { 0 };
    // Pipelined backends in half the variants.
    let pipeline_depth = if variant & 32 != 0 { 3 } else { 1 };
    // Two servers (the same fake mysqld behind both addresses) in some:
    // two primaries, or a primary and a replica with app's reads split.
    let d = dir.display();
    let (servers, split) = match variant % 5 {
        3 => (
            format!("[server a]\naddress = {d}/backend.sock\n[server b]\naddress = {d}/backend-b.sock\n"),
            "",
        ),
        4 => (
            format!("[server a]\naddress = {d}/backend.sock\n[server b]\naddress = {d}/backend-b.sock\nrole = replica\n"),
            "read_write_split = true\n",
        ),
        _ => (String::new(), ""),
    };
    let address = if servers.is_empty() {
        format!("address = {d}/backend.sock")
    } else {
        String::new()
    };
    // Users taking turns on each server (max_concurrency) in most, the
    // first configuration included.
    let server_limit = match (variant / 16 + 1) % 3 {
        1 => "max_concurrency = 1",
        2 => "max_concurrency = 2",
        _ => "",
    };
    format!(
        "[funnel]
listen =
unix_socket = {dir}/funnel.sock
max_client_connections = {max_clients}
handshake_timeout_ms = 3000
max_allowed_packet = 65536
max_client_pending_input = 65536
client_write_timeout_ms = 4000
output_high_watermark = 131072
output_low_watermark = 32768
max_buffered_result = {buffered}
max_buffered_total = 1572864
max_prepared_stmts_per_client = 4
max_prepared_stmt_count = 6
shutdown_timeout_ms = 1000
allow_local_infile = true
cache_size = 4K
cache_max_result_size = 512

[backend]
{address}
connect_timeout_ms = 1000
pipeline_depth = {pipeline_depth}
health_check_interval_ms = 2000
reconnect_backoff_min_ms = 10
reconnect_backoff_max_ms = 200
{server_limit}

[pool]
connections = {connections}
backlog_size = {backlog}
queue_timeout_ms = 1500
max_pinned_backends = {pinned}
{broken}
{servers}
[user app]
password = app_pw
{split}
[user other]
password = other_pw

# The result cache, small enough to evict, on reads the random scripts
# repeat (the targeted tests' SELECT 1, as app, must reach mysqld).
[rule sim_cache]
pattern = \"^SELECT 1; SELECT 2\"
cache_ttl_ms = 2000

[rule sim_cache_other]
user = other
pattern = \"^SELECT 1$\"
cache_ttl_ms = 500

# Limits on the random scripts' sleeps: held clients, queued outside
# the backlog, under the invariants (no timeout_ms: the scripts check
# that nothing is interrupted without a KILL).
[rule sim_limit]
pattern = \"^SELECT SLEEP\\\\((3|24)\\\\)\"
max_concurrency = 1
rate_limit = 20
rate_burst = 2
",
        dir = dir.display()
    )
}

impl Sim {
    fn new() -> Result<Sim, String> {
        let n = CASE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("funnel-sim-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let config_path = dir.join("funnel.conf");
        std::fs::write(&config_path, config_text(&dir, 1))
            .map_err(|e| format!("cannot write the config: {e}"))?;
        let config = Config::from_file(&config_path).map_err(|e| format!("config: {e}"))?;
        let mut mysqld = FakeMysqld::new();
        let mut funnel = MemIo::new(config);
        let (control, rx) = crossbeam_channel::unbounded();
        funnel.engine.control = Some(rx);
        funnel.start(&mut mysqld);
        let mut sim = Sim {
            funnel,
            control,
            dir,
            mysqld,
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            op: 0,
            next_tag: 1,
            kill_unknown: false,
        };
        // Let the pools connect, so that most inputs start from a served state.
        for _ in 0..40 {
            sim.step()?;
            if sim.funnel.engine.is_settled() {
                break;
            }
        }
        Ok(sim)
    }

    /// One turn of the funnel's loop, then mysqld and the clients do what
    /// they can; then the checks.
    fn step(&mut self) -> Result<(), String> {
        self.funnel.turn(&mut self.mysqld);
        self.mysqld.pump();
        for i in 0..MAX_CLIENTS {
            self.pump_client(i)?;
        }
        self.funnel
            .engine
            .check_invariants()
            .map_err(|e| format!("after op {}: invariant broken: {e}", self.op))?;
        self.check_hidden_state()
            .map_err(|e| format!("after op {}: isolation broken: {e}", self.op))
    }

    /// No backend another client may get holds a client's hidden session
    /// state or an open transaction (by the fake mysqld's account of the
    /// connection behind it).
    fn check_hidden_state(&self) -> Result<(), String> {
        for (key, b) in self.funnel.engine.backends.iter() {
            if b.kill_query.is_some() {
                continue;
            }
            let idle = self.funnel.engine.pools[b.pool].idle().contains(&key);
            if idle && self.mysqld.in_transaction(b.thread_id) {
                return Err(format!(
                    "idle backend {key} (thread {}) has a transaction open",
                    b.thread_id
                ));
            }
            let Some(owner) = self.mysqld.hidden_owner(b.thread_id) else {
                continue;
            };
            if idle {
                return Err(format!(
                    "idle backend {key} (thread {}) holds client tag {owner}'s hidden session state",
                    b.thread_id
                ));
            }
            let serves = b
                .client
                .and_then(|cr| {
                    self.funnel
                        .engine
                        .clients
                        .get(cr.key)
                        .filter(|c| c.serial == cr.serial)
                })
                .and_then(|c| self.tag_of_connection(c.id));
            if let Some(tag) = serves.filter(|&t| t != owner) {
                return Err(format!(
                    "backend {key} (thread {}, {:?}) serves client tag {tag} but holds client tag {owner}'s hidden session state",
                    b.thread_id, b.state
                ));
            }
        }
        Ok(())
    }

    /// The tag of the simulated client the funnel gave this connection id.
    fn tag_of_connection(&self, id: u32) -> Option<u32> {
        self.clients
            .iter()
            .flatten()
            .find(|c| c.conn_id == Some(id))
            .map(|c| c.tag)
    }

    /// A KILL may be on its way: any statement outstanding may be stopped.
    fn kill_in_flight(&self) -> bool {
        self.kill_unknown || self.clients.iter().flatten().any(SimClient::awaits_kill)
    }

    /// A KILL went out now: every statement outstanding may be stopped.
    fn kill_sent(&mut self) {
        for c in self.clients.iter_mut().flatten() {
            for a in &mut c.awaiting {
                a.killable = true;
            }
            if let Some((_, a)) = c.answer.as_mut() {
                a.killable = true;
            }
        }
    }

    /// Bytes a client sends unchecked: if they may hold a KILL, nobody
    /// knows when it lands.
    fn scan_raw(&mut self, who: usize, bytes: &[u8]) {
        let Some(c) = self.clients[who].as_mut() else {
            return;
        };
        let mut seen = std::mem::take(&mut c.raw_tail);
        seen.extend_from_slice(bytes);
        seen.make_ascii_lowercase();
        let kill = seen.windows(4).any(|w| w == b"kill");
        c.raw_tail = seen[seen.len().saturating_sub(3)..].to_vec();
        if kill {
            self.kill_sent();
            self.kill_unknown = true;
        }
    }

    fn drop_client(&mut self, who: usize) {
        if self.clients[who].take().is_some_and(|c| c.awaits_kill()) {
            // Its KILL may still be read and carried out.
            self.kill_unknown = true;
        }
    }

    fn steps(&mut self, n: usize) -> Result<(), String> {
        for _ in 0..n {
            self.step()?;
        }
        Ok(())
    }

    fn advance(&mut self, d: Duration) {
        self.funnel.clock_offset += d;
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let mut r = Input {
            data: input,
            pos: 0,
        };
        while self.op < MAX_OPS {
            let Some(b) = r.byte() else {
                break;
            };
            self.op += 1;
            let who = usize::from(b >> 5) % MAX_CLIENTS;
            match (b & 0x1f) % 19 {
                0 => {
                    let bytes = r.chunk();
                    self.unclean(who);
                    self.connect(who)?;
                    self.scan_raw(who, bytes);
                    self.send(who, bytes)?;
                }
                1 => {
                    self.unclean(who);
                    let seq = r.byte().unwrap_or(0);
                    let payload = r.chunk();
                    let mut framed = Vec::new();
                    write_packet(&mut framed, seq, payload);
                    self.connect(who)?;
                    self.scan_raw(who, &framed);
                    self.send(who, &framed)?;
                }
                2 => {
                    let flags = r.byte().unwrap_or(0);
                    self.login(who, flags)?;
                }
                3 => {
                    self.unclean(who);
                    let cmd = r.byte().unwrap_or(COM_QUERY);
                    let mut payload = vec![cmd];
                    payload.extend_from_slice(r.chunk());
                    self.connect(who)?;
                    self.scan_raw(who, &payload);
                    self.command(who, &payload)?;
                }
                4 => {
                    let idx = r.byte().unwrap_or(0);
                    let payload = self.canned(who, idx);
                    self.command(who, &payload)?;
                }
                5 => {
                    let n = usize::from(r.byte().unwrap_or(0) % 16) + 1;
                    self.steps(n)?;
                }
                6 => {
                    let ms = u64::from(r.byte().unwrap_or(0)) * 10;
                    self.advance(Duration::from_millis(ms));
                }
                7 => self.set_reading(who, false),
                8 => self.set_reading(who, true),
                9 => self.drop_client(who),
                10 => {
                    self.unclean(who);
                    if let Some(c) = &self.clients[who] {
                        let _ = c.stream.shutdown(std::net::Shutdown::Write);
                    }
                }
                11 => {
                    // From 0xf0 on, what becomes of the next connect; below,
                    // the next answer (as before connects could be scripted).
                    let b = r.byte().unwrap_or(0);
                    match b {
                        0xf0.. if b & 1 == 0 => self.mysqld.script_connect(ConnectFate::Refuse),
                        0xf0.. => self.mysqld.script_connect(ConnectFate::Hang),
                        _ => self.mysqld.script(Answer::from_byte(b)),
                    }
                }
                12 => {
                    let which = r.byte().unwrap_or(0);
                    self.mysqld.kill(which);
                }
                13 => self.mysqld.toggle_down(),
                14 => {
                    self.unclean(who);
                    let kib = usize::from(r.byte().unwrap_or(0));
                    let mut payload = vec![COM_QUERY];
                    payload.extend_from_slice(b"SELECT '");
                    payload.resize(payload.len() + kib * 1024, b'x');
                    payload.push(b'\'');
                    self.command(who, &payload)?;
                }
                15 => {
                    let variant = r.byte().unwrap_or(0);
                    self.reload(variant)?;
                }
                16 => {
                    let n = r.byte().unwrap_or(0) % 8;
                    let mut framed = Vec::new();
                    for _ in 0..n {
                        let payload = self.canned(who, r.byte().unwrap_or(0));
                        self.expect_answer(who, &payload);
                        write_packet(&mut framed, 0, &payload);
                    }
                    self.send(who, &framed)?;
                }
                17 => self.mysqld.behave(),
                _ => {
                    let what = r.byte().unwrap_or(0);
                    self.admin(what);
                }
            }
            self.step()?;
        }
        Ok(())
    }

    /// Everyone leaves; the funnel must settle, then serve a newcomer.
    fn finish(&mut self) -> Result<(), String> {
        self.op = usize::MAX;
        self.mysqld.behave();
        self.admin(ADMIN_RESUME);
        for who in 0..MAX_CLIENTS {
            self.drop_client(who);
        }
        self.settle()?;
        self.serve_newcomer()?;
        self.drop_client(0);
        self.settle()
    }

    fn settle(&mut self) -> Result<(), String> {
        for i in 0..SETTLE_STEPS {
            self.step()?;
            if self.funnel.engine.is_settled() {
                return Ok(());
            }
            if i >= 8 {
                self.advance(SETTLE_TICK);
            }
        }
        Err("the funnel did not settle after every client left".into())
    }

    fn serve_newcomer(&mut self) -> Result<(), String> {
        self.drop_client(0);
        self.login(0, 0)?;
        for _ in 0..SETTLE_STEPS {
            if self.clients[0]
                .as_ref()
                .is_none_or(|c| c.login != Login::Sent("app_pw"))
            {
                break;
            }
            self.step()?;
            self.advance(SETTLE_TICK);
        }
        let login = self.clients[0].as_ref().map(|c| c.login.clone());
        if login != Some(Login::Done) {
            return Err(format!("a newcomer could not log in: {login:?}"));
        }
        if let Some(c) = self.clients[0].as_mut() {
            c.frames.clear();
        }
        self.command(0, b"\x03SELECT 1")?;
        for _ in 0..SETTLE_STEPS {
            self.step()?;
            let frames = self.clients[0]
                .as_ref()
                .map(|c| c.frames.clone())
                .unwrap_or_default();
            if let Some(err) = frames.iter().find(|f| f.first() == Some(&ERR_HEADER)) {
                let e = decode_err(err).map(|e| String::from_utf8_lossy(e.message).into_owned());
                return Err(format!("a newcomer's SELECT 1 failed: {e:?}"));
            }
            // Column count, definition, EOF, row, EOF.
            if frames.len() >= 5 {
                if frames[0] != [1]
                    || frames[3] != [1, b'1']
                    || frames[4].first() != Some(&EOF_HEADER)
                {
                    return Err(format!("a newcomer's SELECT 1 got {frames:?}"));
                }
                return Ok(());
            }
            self.advance(SETTLE_TICK);
        }
        Err("a newcomer's SELECT 1 got no answer".into())
    }

    fn connect(&mut self, who: usize) -> Result<(), String> {
        if self.clients[who].is_some() {
            return Ok(());
        }
        let Some(stream) = self.funnel.connect_client() else {
            return Ok(()); // refused (the funnel shuts down): fine
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        self.clients[who] = Some(SimClient {
            tag,
            conn_id: None,
            raw_tail: Vec::new(),
            stream,
            received: Vec::new(),
            checked: 0,
            reading: true,
            scramble: Vec::new(),
            got_greeting: false,
            login: Login::None,
            unsent: Vec::new(),
            peer_closed: false,
            frames: Vec::new(),
            login_error: None,
            caps: 0,
            clean: false,
            awaiting: std::collections::VecDeque::new(),
            answer: None,
            answer_seq: 0,
            answer_sleeps: false,
        });
        Ok(())
    }

    fn send(&mut self, who: usize, bytes: &[u8]) -> Result<(), String> {
        self.connect(who)?;
        if let Some(c) = self.clients[who].as_mut() {
            let room = MAX_UNSENT.saturating_sub(c.unsent.len());
            c.unsent
                .extend_from_slice(bytes.get(..room).unwrap_or(bytes));
        }
        self.pump_client(who)
    }

    fn command(&mut self, who: usize, payload: &[u8]) -> Result<(), String> {
        self.expect_answer(who, payload);
        let mut framed = Vec::new();
        write_packet(&mut framed, 0, payload);
        self.send(who, &framed)
    }

    /// Note the answer a command sent now must get (see `SimClient::clean`).
    fn expect_answer(&mut self, who: usize, payload: &[u8]) {
        let Some(clean) = self.clients[who].as_ref().map(|c| c.clean) else {
            return;
        };
        let probe = probe_of(payload);
        if probe == Probe::Kill {
            self.kill_sent();
            if !clean {
                self.kill_unknown = true;
            }
        }
        // A KILL QUERY of one's own id is answered 1317, as by mysqld.
        let killable = probe == Probe::Kill || self.kill_in_flight();
        let Some(c) = self.clients[who].as_mut() else {
            return;
        };
        let cmd = payload.first().copied().unwrap_or(0);
        if !c.clean {
            return;
        }
        match cmd {
            // Answered by an auth exchange, or by nothing and a close.
            COM_CHANGE_USER | COM_QUIT => c.clean = false,
            _ if expect_for(cmd) == Expect::None => {}
            _ => c.awaiting.push_back(Awaited {
                cmd,
                probe,
                killable,
            }),
        }
    }

    fn unclean(&mut self, who: usize) {
        if let Some(c) = self.clients[who].as_mut() {
            c.clean = false;
        }
    }

    fn set_reading(&mut self, who: usize, reading: bool) {
        if let Some(c) = self.clients[who].as_mut() {
            c.reading = reading;
        }
    }

    /// A client's proper login. `flags`: bit 0 wrong password, bit 1 the
    /// other user, bit 2 with a default schema, bit 3 CLIENT_DEPRECATE_EOF,
    /// bit 4 another auth plugin (the funnel asks to switch), bit 5 LOCAL
    /// INFILE, bit 6 no multi-statements, bit 7 CLIENT_FOUND_ROWS (a pool
    /// of its own).
    fn login(&mut self, who: usize, flags: u8) -> Result<(), String> {
        self.connect(who)?;
        for _ in 0..50 {
            match &self.clients[who] {
                Some(c) if !c.got_greeting && !c.peer_closed => self.step()?,
                _ => break,
            }
        }
        let Some(c) = self.clients[who].as_mut() else {
            return Ok(());
        };
        if !c.got_greeting || c.login != Login::None {
            return Ok(());
        }
        let (user, right) = USERS[usize::from(flags & 2 != 0)];
        let password = if flags & 1 != 0 { "wrong" } else { right };
        let mut caps = CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_RESULTS
            | CLIENT_PS_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CLIENT_CONNECT_ATTRS;
        if flags & 4 != 0 {
            caps |= CLIENT_CONNECT_WITH_DB;
        }
        if flags & 8 != 0 {
            caps |= CLIENT_DEPRECATE_EOF;
        }
        if flags & 32 != 0 {
            caps |= CLIENT_LOCAL_FILES;
        }
        if flags & 64 == 0 {
            caps |= CLIENT_MULTI_STATEMENTS;
        }
        if flags & 128 != 0 {
            caps |= CLIENT_FOUND_ROWS;
        }
        let other_plugin = flags & 16 != 0;
        let response = HandshakeResponse {
            capabilities: caps,
            max_packet: 1 << 24,
            charset: 45,
            username: user.into(),
            auth_response: if other_plugin {
                vec![1; 32]
            } else {
                scramble_native(password.as_bytes(), &c.scramble)
            },
            database: (flags & 4 != 0).then(|| "db1".to_string()),
            auth_plugin: Some(
                if other_plugin {
                    "caching_sha2_password"
                } else {
                    MYSQL_NATIVE_PASSWORD
                }
                .into(),
            ),
            attrs: vec![("_client_name".into(), "sim".into())],
        };
        let mut payload = Vec::new();
        response.encode(&mut payload);
        let mut framed = Vec::new();
        write_packet(&mut framed, 1, &payload);
        c.login = Login::Sent(password);
        c.caps = caps;
        // Commands may follow at once, before the login's answer.
        c.clean = true;
        self.send(who, &framed)
    }

    /// A meaningful command, picked by `idx`.
    fn canned(&self, who: usize, idx: u8) -> Vec<u8> {
        const QUERIES: [&[u8]; 24] = [
            b"SELECT 1",
            b"SET @a = 1",
            b"SELECT @a",
            b"BEGIN",
            b"COMMIT",
            b"USE db2",
            b"SET autocommit = 0",
            b"SET autocommit = 1",
            b"SET sql_mode = 'ANSI_QUOTES'",
            b"SELECT GET_LOCK('l', 0)",
            b"SELECT RELEASE_ALL_LOCKS()",
            b"SELECT LAST_INSERT_ID()",
            b"SELECT CONNECTION_ID()",
            b"CREATE TEMPORARY TABLE t (a INT)",
            b"LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t",
            b"KILL QUERY 1",
            b"KILL 2",
            b"SELECT SQL_CALC_FOUND_ROWS 1",
            b"SELECT FOUND_ROWS()",
            b"SET NAMES latin1",
            b"SELECT 1; SELECT 2",
            b"SELECT @x := 5",
            b"LOCK TABLES t READ",
            b"UNLOCK TABLES",
        ];
        let i = usize::from(idx);
        if let Some(q) = QUERIES.get(i) {
            let mut p = vec![COM_QUERY];
            p.extend_from_slice(q);
            return p;
        }
        let stmt = |id: u32, rest: &[u8]| {
            let mut p = id.to_le_bytes().to_vec();
            p.extend_from_slice(rest);
            p
        };
        let (cmd, arg): (u8, Vec<u8>) = match i - QUERIES.len() {
            0 => (COM_INIT_DB, b"db1".to_vec()),
            1 => (COM_PING, vec![]),
            2 => (COM_STATISTICS, vec![]),
            3 => (COM_PROCESS_INFO, vec![]),
            4 => (COM_FIELD_LIST, b"t\0".to_vec()),
            5 => (COM_RESET_CONNECTION, vec![]),
            6 => (COM_SET_OPTION, vec![0, 0]),
            7 => (COM_SET_OPTION, vec![1, 0]),
            8 => (COM_STMT_PREPARE, b"SELECT ?".to_vec()),
            9 => (COM_STMT_PREPARE, b"INSERT INTO t VALUES (?, ?)".to_vec()),
            10 => (COM_STMT_PREPARE, b"SELECT * FROM no_such_table".to_vec()),
            // id 1, no cursor, 1 iteration, NULL bitmap, types bound, VAR_STRING, "x"
            11 => (
                COM_STMT_EXECUTE,
                stmt(1, &[0, 1, 0, 0, 0, 0, 1, 0xfd, 0, 1, b'x']),
            ),
            12 => (
                COM_STMT_EXECUTE,
                stmt(1, &[1, 1, 0, 0, 0, 0, 1, 0xfd, 0, 1, b'y']),
            ),
            // id 2 without types: the funnel supplies the cached ones.
            13 => (
                COM_STMT_EXECUTE,
                stmt(2, &[0, 1, 0, 0, 0, 0, 0, 1, b'a', 1, b'b']),
            ),
            14 => (COM_STMT_FETCH, stmt(1, &[2, 0, 0, 0])),
            15 => (COM_STMT_SEND_LONG_DATA, stmt(1, &[0, 0, b'a', b'b', b'c'])),
            16 => (COM_STMT_RESET, stmt(1, &[])),
            17 => (COM_STMT_CLOSE, stmt(1, &[])),
            18 => (COM_STMT_CLOSE, stmt(2, &[])),
            19 => return self.change_user(who, false),
            20 => return self.change_user(who, true),
            21 => (COM_QUIT, vec![]),
            22 => (COM_BINLOG_DUMP, vec![0; 10]),
            23 => (COM_STMT_EXECUTE, stmt(77, &[0, 1, 0, 0, 0])),
            n => match self
                .isolation_command(who, n + QUERIES.len() - usize::from(ISOLATION_CANNED))
            {
                Some(p) => return p,
                None => (COM_QUERY, b"SELECT 1".to_vec()),
            },
        };
        let mut p = vec![cmd];
        p.extend_from_slice(&arg);
        p
    }

    /// Canned commands from index [`ISOLATION_CANNED`] on: statements that leave
    /// session state the funnel cannot see, tagged with the client's tag,
    /// the probes that show it, slow statements and KILL QUERYs.
    fn isolation_command(&self, who: usize, n: usize) -> Option<Vec<u8>> {
        let tag = self.clients[who].as_ref().map_or(0, |c| c.tag);
        let id_of = |other: usize| {
            self.clients[other % MAX_CLIENTS]
                .as_ref()
                .and_then(|c| c.conn_id)
                .unwrap_or(0)
        };
        let (cmd, sql) = match n {
            0 => (COM_QUERY, format!("CALL sim_p{tag}()")),
            1 => (COM_QUERY, format!("EXECUTE IMMEDIATE 'sim{tag}'")),
            2 => (COM_QUERY, format!("SELECT sim_f{tag}()")),
            3 => (COM_QUERY, format!("SELECT sim_fs{tag}()")),
            4 => (COM_QUERY, format!("INSERT INTO sim_trig VALUES ({tag})")),
            5 => (
                COM_QUERY,
                format!("FLUSH TABLES WITH READ LOCK /* {tag} */"),
            ),
            6 => (COM_QUERY, format!("SELECT 1/0 AS w{tag}")),
            7 => (COM_QUERY, format!("SELECT * FROM sim_missing{tag}")),
            8 => (COM_QUERY, "SHOW WARNINGS".into()),
            9 => (COM_QUERY, "SHOW ERRORS".into()),
            10 => (COM_QUERY, "SHOW STATUS LIKE 'sim_owner'".into()),
            11 => (
                COM_QUERY,
                "DO (SELECT 1 FROM information_schema.ENGINES LIMIT 0)".into(),
            ),
            12 => (COM_QUERY, "SELECT SLEEP(3)".into()),
            13 => (COM_QUERY, "SELECT SLEEP(24)".into()),
            14 => (COM_QUERY, format!("KILL QUERY {}", id_of(who + 1))),
            15 => (COM_QUERY, format!("KILL QUERY {}", id_of(who + 3))),
            16 => (COM_STMT_PREPARE, format!("CALL sim_p{tag}()")),
            17 => (COM_STMT_PREPARE, format!("SELECT sim_f{tag}()")),
            18 => (COM_STMT_PREPARE, format!("SELECT sim_fs{tag}()")),
            19 => (
                COM_STMT_PREPARE,
                format!("INSERT INTO sim_trig VALUES ({tag})"),
            ),
            // Warnings from a statement before the last of a query.
            20 => (COM_QUERY, format!("SELECT 1/0 AS w{tag}; SELECT 1")),
            // A slow plain read: what is pipelined behind it waits.
            21 => (COM_QUERY, format!("SELECT * FROM sim_slow{tag}")),
            _ => return None,
        };
        let mut p = vec![cmd];
        p.extend_from_slice(sql.as_bytes());
        Some(p)
    }

    /// COM_CHANGE_USER to the other user (or back), scrambled with the
    /// funnel's greeting.
    fn change_user(&self, who: usize, wrong: bool) -> Vec<u8> {
        let scramble = self.clients[who]
            .as_ref()
            .map(|c| c.scramble.clone())
            .unwrap_or_default();
        let (user, password) = USERS[1];
        let password = if wrong { "wrong" } else { password };
        let mut p = vec![COM_CHANGE_USER];
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        let auth = scramble_native(password.as_bytes(), &scramble);
        p.push(auth.len() as u8);
        p.extend_from_slice(&auth);
        p.extend_from_slice(b"db1\0");
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(MYSQL_NATIVE_PASSWORD.as_bytes());
        p.push(0);
        write_lenenc_str(&mut p, b"");
        p
    }

    /// What the admin console asks of the loop (the answers are dropped:
    /// the console's side is tested in tests/admin.rs).
    fn admin(&mut self, what: u8) {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let (tx_s, _rx_s) = crossbeam_channel::bounded(1);
        let (tx_r, _rx_r) = crossbeam_channel::bounded(1);
        if what >= 0xe0 {
            // A server's health check: bit 0 good or failed, bit 1 which.
            self.health_report(usize::from(what >> 1 & 1), what & 1 == 0);
            return;
        }
        let req = match what % 4 {
            0 => Control::Snapshot {
                detail: what & 4 != 0,
                reply: tx_s,
            },
            1 => Control::Pause { reply: tx },
            ADMIN_RESUME => Control::Resume { reply: tx },
            _ => Control::Reload { reply: tx_r },
        };
        let _ = self.control.send(req);
        self.funnel.engine.handle_control();
    }

    /// What a checker would report of server `server` (when it is one the
    /// checkers look at): up and replicating, or unreachable.
    fn health_report(&mut self, server: usize, good: bool) {
        let now = self.funnel.clock();
        let outcome = if good {
            Ok(crate::health::ServerFacts {
                read_only: false,
                lag: Some(Duration::ZERO),
                replicating: true,
                gtid: crate::health::GtidPosition::default(),
            })
        } else {
            Err("sim: connect refused".to_string())
        };
        let report = crate::health::HealthReport {
            server,
            checked_at: now,
            rtt: Duration::from_micros(100),
            outcome,
        };
        let _ = self.control.send(Control::Health(Box::new(report)));
        self.funnel.engine.handle_control();
    }

    fn reload(&mut self, variant: u8) -> Result<(), String> {
        let path = self.dir.join("funnel.conf");
        std::fs::write(&path, config_text(&self.dir, variant))
            .map_err(|e| format!("cannot write the config: {e}"))?;
        let _ = self.funnel.engine.reload("sim");
        Ok(())
    }

    /// Write what the client has queued, read what it is sent (if it reads),
    /// and check every complete frame.
    fn pump_client(&mut self, who: usize) -> Result<(), String> {
        let Some(c) = self.clients[who].as_mut() else {
            return Ok(());
        };
        if !c.peer_closed && !write_now(&mut c.stream, &mut c.unsent) {
            c.unsent.clear();
        }
        if c.reading && !c.peer_closed && !read_now(&mut c.stream, &mut c.received) {
            c.peer_closed = true;
        }
        let reply = c.check_frames().map_err(|e| format!("client {who}: {e}"))?;
        if let Some(reply) = reply {
            c.unsent.extend_from_slice(&reply);
        }
        // Keep only the unchecked tail.
        c.received.drain(..c.checked);
        c.checked = 0;
        Ok(())
    }
}

impl SimClient {
    /// Check the complete frames received so far; returns what the client
    /// answers (an auth switch).
    fn check_frames(&mut self) -> Result<Option<Vec<u8>>, String> {
        let received = std::mem::take(&mut self.received);
        let result = self.check_received(&received);
        self.received = received;
        result
    }

    fn check_received(&mut self, received: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut reply = None;
        while let Some((header, payload)) = next_frame(&received[self.checked..]) {
            self.checked += HEADER_LEN + header.payload_len;
            if let Some(&ERR_HEADER) = payload.first() {
                let e = decode_err(payload).map_err(|e| format!("malformed ERR: {e}"))?;
                if e.code == 0 || e.message.is_empty() || e.sql_state.is_none() {
                    return Err(format!(
                        "ERR without a code, SQLSTATE or message: {:?}",
                        String::from_utf8_lossy(payload)
                    ));
                }
            }
            if !self.got_greeting {
                self.got_greeting = true;
                match HandshakeV10::decode(payload) {
                    Ok(g) => {
                        self.scramble = g.scramble;
                        self.conn_id = Some(g.connection_id);
                    }
                    Err(_) if payload.first() == Some(&ERR_HEADER) => self.login = Login::Refused,
                    Err(e) => return Err(format!("bad greeting: {e}")),
                }
                continue;
            }
            if let Login::Sent(password) = self.login {
                match payload.first() {
                    Some(&OK_HEADER) => self.login = Login::Done,
                    Some(&ERR_HEADER) => {
                        self.login = Login::Refused;
                        self.login_error = Some(payload.to_vec());
                        self.clean = false;
                    }
                    Some(&AUTH_SWITCH_HEADER) => {
                        let req = AuthSwitchRequest::decode(payload)
                            .map_err(|e| format!("bad auth switch: {e}"))?;
                        let data = req.data.strip_suffix(&[0]).unwrap_or(&req.data);
                        let mut framed = Vec::new();
                        write_packet(
                            &mut framed,
                            header.seq.wrapping_add(1),
                            &scramble_native(password.as_bytes(), data),
                        );
                        reply = Some(framed);
                    }
                    _ => {}
                }
                continue;
            }
            if self.frames.len() < 64 {
                self.frames.push(payload.to_vec());
            }
            if self.clean {
                self.check_answer(header.seq, payload)?;
            }
        }
        Ok(reply)
    }

    /// A KILL it sent has not been answered.
    fn awaits_kill(&self) -> bool {
        self.awaiting.iter().any(|a| a.probe == Probe::Kill)
            || self
                .answer
                .as_ref()
                .is_some_and(|(_, a)| a.probe == Probe::Kill)
    }

    /// What one packet of an answer says: no other client's session state,
    /// no interruption without a KILL.
    fn check_content(&mut self, a: Awaited, payload: &[u8]) -> Result<(), String> {
        if a.probe == Probe::Sleep && payload.windows(6).any(|w| w == b"\x05SLEEP") {
            self.answer_sleeps = true;
        }
        if !a.killable {
            let interrupted = decode_err(payload).is_ok_and(|e| e.code == 1317)
                || (self.answer_sleeps && payload == [1, b'1']);
            if interrupted {
                return Err(format!(
                    "client tag {}: command 0x{:02x} interrupted with no KILL in flight: {:?}",
                    self.tag,
                    a.cmd,
                    String::from_utf8_lossy(payload)
                ));
            }
        }
        if a.probe == Probe::Owner {
            if let Some(owner) = owner_named(payload).filter(|&t| t != self.tag) {
                return Err(format!(
                    "client tag {} sees client tag {owner}'s session state: {:?}",
                    self.tag,
                    String::from_utf8_lossy(payload)
                ));
            }
        }
        Ok(())
    }

    /// One packet of the answers a clean client is owed.
    fn check_answer(&mut self, seq: u8, payload: &[u8]) -> Result<(), String> {
        if self.answer.is_none() {
            let Some(awaited) = self.awaiting.pop_front() else {
                if payload.first() == Some(&ERR_HEADER) {
                    // A parting error (the connection closes after it).
                    self.clean = false;
                    return Ok(());
                }
                return Err(format!("a packet no command asked for: {payload:02x?}"));
            };
            let mut tracker = ResponseTracker::new(self.caps);
            tracker.start(expect_for(awaited.cmd));
            self.answer = Some((tracker, awaited));
            self.answer_seq = 1;
            self.answer_sleeps = false;
        }
        let Some(&(_, awaited)) = self.answer.as_ref() else {
            return Ok(());
        };
        self.check_content(awaited, payload)?;
        let Some((tracker, _)) = self.answer.as_mut() else {
            return Ok(());
        };
        let cmd = awaited.cmd;
        if seq != self.answer_seq {
            return Err(format!(
                "answer to command 0x{cmd:02x}: sequence id {seq}, expected {}",
                self.answer_seq
            ));
        }
        self.answer_seq = self.answer_seq.wrapping_add(1);
        match tracker.feed(payload) {
            Err(e) => Err(format!(
                "malformed answer to command 0x{cmd:02x} (caps {:#x}): {e}: {payload:02x?}",
                self.caps
            )),
            Ok(Progress::Complete { .. }) => {
                self.answer = None;
                Ok(())
            }
            Ok(Progress::LocalInfile) => {
                // It would now have to send a file: it never does.
                self.clean = false;
                Ok(())
            }
            Ok(Progress::NeedMore) => Ok(()),
        }
    }
}

/// Writes what the stream takes now from the front of `queued`; false if
/// the stream failed.
fn write_now(stream: &mut impl Write, queued: &mut Vec<u8>) -> bool {
    while !queued.is_empty() {
        match stream.write(queued) {
            Ok(0) => break,
            Ok(n) => {
                queued.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    true
}

/// Appends what the stream holds now to `into`; false once the peer has
/// closed (or the stream failed).
fn read_now(stream: &mut PipeEnd, into: &mut Vec<u8>) -> bool {
    loop {
        match stream.read_available(into) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Reads the input: bytes, and chunks with a length byte first.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte().unwrap_or(0));
        let end = (self.pos + n).min(self.data.len());
        let s = &self.data[self.pos..end];
        self.pos = end;
        s
    }
}

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod tests;
