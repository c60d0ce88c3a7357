//! The event loop: one thread, one mio `Poll`, N simulated clients.
//!
//! Each client is a small state machine:
//!
//! ```text
//! Idle -> Queued -> Connecting -> Login -> Ready <-> Query
//!                                            \-> Quitting -> Idle (page mode)
//! any error: close, back to Idle with a reconnect delay
//! ```
//!
//! A run goes through phases: ramp (every client makes its first connect,
//! at most `max_connecting` at a time), warmup, the measured window, and a
//! drain during which the queries of the window still in flight may finish.
//! Only the window is measured: queries whose intended send time is in it
//! (the send time in closed loop, the scheduled time in open loop, so that a
//! late send counts against the server: no coordinated omission), and
//! connects and pages that began in it. In open loop the schedule has one
//! slot per query (persistent mode) or one per page (page mode: the page's
//! queries then run back to back and the page latency is the one measured
//! from the schedule).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpStream, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use funnel::protocol::packet::next_frame;
use funnel::protocol::tracker::{EndKind, Expect, PacketKind, Progress, ResponseTracker};

use crate::config::{ConnMode, Credentials, QueryKind, Target, Workload};
use crate::proto::{
    id_span, server_error, write_com_query, write_com_quit, write_sql, Login, LoginError, LoginStep,
};
use crate::schedule::{slot_offset_ns, slots_in, think_time, Rng};
use crate::stats::{ErrKind, RunResult};

/// How long a client waits for the server to close after COM_QUIT.
const QUIT_WAIT: Duration = Duration::from_secs(1);
/// Longest reconnect back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often connect/query timeouts are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// An open-loop send this far behind its schedule counts as late.
const LATE: Duration = Duration::from_millis(1);
const READ_CHUNK: usize = 64 * 1024;
/// The token of the timerfd (client tokens are id | generation << 32).
const TIMER_TOKEN: Token = Token(usize::MAX);

/// epoll_wait's timeout is in whole milliseconds (mio rounds it up), too
/// coarse for open-loop schedules and think times: a timerfd wakes the
/// loop at the exact deadline.
struct PreciseTimer {
    fd: OwnedFd,
    armed: Option<Instant>,
}

impl PreciseTimer {
    fn new(poll: &Poll) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned by the OwnedFd from here on.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            TIMER_TOKEN,
            Interest::READABLE,
        )?;
        Ok(PreciseTimer { fd, armed: None })
    }

    /// Makes the loop wake at `at` (no-op if already armed for it).
    fn arm(&mut self, at: Instant, now: Instant) {
        if self.armed == Some(at) {
            return;
        }
        let d = at
            .saturating_duration_since(now)
            .max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
            },
        };
        // SAFETY: valid fd and struct; a relative one-shot timer.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        self.armed = (rc == 0).then_some(at);
    }

    /// The timer fired: consume the expiration count.
    fn fired(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into a local buffer.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        self.armed = None;
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// Ok(true) once the non-blocking connect has completed.
    fn is_connected(&self) -> io::Result<bool> {
        let r = match self {
            Stream::Tcp(s) => s.peer_addr().map(|_| ()),
            Stream::Unix(s) => s.peer_addr().map(|_| ()),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// No connection; maybe a timer to reconnect or start the next page.
    Idle,
    /// Waiting for a connect slot.
    Queued,
    Connecting,
    Login,
    /// Logged in, no query in flight (thinking, or waiting for its slot).
    Ready,
    Query,
    /// COM_QUIT sent, waiting for the server to close.
    Quitting,
    /// Finished for this run.
    Done,
}

impl St {
    fn connecting(self) -> bool {
        matches!(self, St::Connecting | St::Login)
    }
    fn connected(self) -> bool {
        matches!(self, St::Ready | St::Query | St::Quitting)
    }
}

struct InFlight {
    kind: QueryKind,
    intended: Instant,
    in_window: bool,
}

struct Client {
    st: St,
    stream: Option<Stream>,
    /// Bumped at each close, so events of an old socket are ignored.
    conn_gen: u32,
    /// Bumped at each `set_timer`: only the newest timer fires.
    timer_gen: u32,
    /// Connect/login, query or quit deadline (checked by the sweep).
    timeout_at: Option<Instant>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    login: Login,
    tracker: ResponseTracker,
    q: Option<InFlight>,
    connect_start: Instant,
    page_start: Instant,
    page_queries: u32,
    page_ok: bool,
    /// Open loop: index of the next slot to send.
    slot: u64,
    backoff: Duration,
    /// The first connect attempt has concluded.
    ramped: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Ramp,
    Warmup,
    Measure,
    Drain,
    Finished,
}

/// Set by SIGINT/SIGTERM: the current run ends its window now and reports.
pub fn stop_flag() -> &'static Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

pub fn stopped() -> bool {
    stop_flag().load(Ordering::Relaxed)
}

/// CPU time of this process so far (user, system).
pub fn cpu_times() -> (Duration, Duration) {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

struct Engine<'a> {
    w: &'a Workload,
    target: &'a Target,
    creds: &'a Credentials,
    poll: Poll,
    timer: PreciseTimer,
    clients: Vec<Client>,
    rng: Rng,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    queue: VecDeque<u32>,
    connecting: usize,
    connected: usize,
    active: usize,
    ramp_pending: usize,
    phase: Phase,
    t0: Instant,
    sched_start: Option<Instant>,
    measure_start: Option<Instant>,
    measure_end: Option<Instant>,
    drain_deadline: Option<Instant>,
    next_sweep: Instant,
    cpu_start: (Duration, Duration),
    res: RunResult,
    read_buf: Vec<u8>,
    sql: Vec<u8>,
    out: Vec<u8>,
    sleep_s: f64,
    page_queries: Option<u32>,
    // Progress lines.
    next_tick: Instant,
    /// Successful answers, window or not.
    answered: u64,
    tick_answered: u64,
    tick_errors: u64,
}

/// Runs one workload against one target and returns what the window
/// measured.
pub fn run(
    w: &Workload,
    target: &Target,
    creds: &Credentials,
    label: &str,
    seed: u64,
) -> io::Result<RunResult> {
    let now = Instant::now();
    let clients = (0..w.clients)
        .map(|_| Client {
            st: St::Idle,
            stream: None,
            conn_gen: 0,
            timer_gen: 0,
            timeout_at: None,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            login: Login::new(w.deprecate_eof, w.charset),
            tracker: ResponseTracker::new(0),
            q: None,
            connect_start: now,
            page_start: now,
            page_queries: 0,
            page_ok: true,
            slot: 0,
            backoff: w.reconnect_delay,
            ramped: false,
        })
        .collect();
    let poll = Poll::new()?;
    let timer = PreciseTimer::new(&poll)?;
    let mut e = Engine {
        w,
        target,
        creds,
        poll,
        timer,
        clients,
        rng: Rng::new(seed),
        timers: BinaryHeap::new(),
        queue: VecDeque::with_capacity(w.clients),
        connecting: 0,
        connected: 0,
        active: w.clients,
        ramp_pending: w.clients,
        phase: Phase::Ramp,
        t0: now,
        sched_start: None,
        measure_start: None,
        measure_end: None,
        drain_deadline: None,
        next_sweep: now + SWEEP_EVERY,
        cpu_start: (Duration::ZERO, Duration::ZERO),
        res: RunResult::new(label, &target.to_string()),
        read_buf: vec![0u8; READ_CHUNK],
        sql: Vec::with_capacity(256),
        out: Vec::with_capacity(256),
        sleep_s: w.sleep.as_secs_f64(),
        page_queries: match w.mode {
            ConnMode::Page { queries } => Some(queries.max(1)),
            ConnMode::Persistent => None,
        },
        next_tick: now + Duration::from_secs(1),
        answered: 0,
        tick_answered: 0,
        tick_errors: 0,
    };
    e.res.rounds = 1;
    for id in 0..w.clients {
        if e.open_pages() {
            // Pages arrive on the schedule: nothing to pre-connect.
            e.settle_ramp(id);
        } else if e.page_queries.is_some() {
            e.begin_page(id, now);
        } else {
            e.enqueue(id);
        }
    }
    e.run_loop()?;
    let qps = e.res.qps();
    e.res.round_qps = vec![qps];
    Ok(e.res)
}

impl<'a> Engine<'a> {
    fn run_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(4096);
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + SWEEP_EVERY;
            }
            self.update_phase(now);
            if self.phase == Phase::Finished {
                return Ok(());
            }
            self.start_connects(Instant::now());
            if self.w.progress && now >= self.next_tick {
                self.progress_line(now);
                self.next_tick += Duration::from_secs(1);
            }
            let now = Instant::now();
            let until = self.next_deadline();
            let timeout = if until <= now {
                Duration::ZERO
            } else {
                self.timer.arm(until, now);
                // The timerfd wakes us on time; this is only a fallback.
                (until - now + Duration::from_millis(2)).min(Duration::from_millis(100))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in events.iter() {
                if ev.token() == TIMER_TOKEN {
                    self.timer.fired();
                    continue;
                }
                let t = ev.token().0;
                let (id, gen) = (t & 0xffff_ffff, (t >> 32) as u32);
                if id < self.clients.len() && self.clients[id].conn_gen == gen {
                    self.on_event(id, ev);
                }
            }
        }
    }

    /// When the loop must wake next, at the latest.
    fn next_deadline(&self) -> Instant {
        let mut until = self.next_sweep;
        if let Some(Reverse((at, _, _))) = self.timers.peek() {
            until = until.min(*at);
        }
        let phase_end = match self.phase {
            Phase::Warmup => self.measure_start,
            Phase::Measure => self.measure_end,
            Phase::Drain => self.drain_deadline,
            _ => None,
        };
        if let Some(p) = phase_end {
            until = until.min(p);
        }
        if self.w.progress {
            until = until.min(self.next_tick);
        }
        until
    }

    fn progress_line(&mut self, now: Instant) {
        let errors = self.res.errors.total() + self.res.early_errors.total();
        eprintln!(
            "  [{:>6.1}s {:<7}] {:>8} q/s  connected {:>6}  connecting {:>5}  errors +{}",
            now.duration_since(self.t0).as_secs_f64(),
            format!("{:?}", self.phase).to_lowercase(),
            self.answered - self.tick_answered,
            self.connected,
            self.connecting,
            errors - self.tick_errors
        );
        self.tick_errors = errors;
        self.tick_answered = self.answered;
    }

    // ---- phases -------------------------------------------------------

    fn update_phase(&mut self, now: Instant) {
        if stopped() && !matches!(self.phase, Phase::Drain | Phase::Finished) {
            // Interrupted: the window ends now (possibly before it began).
            if self.phase == Phase::Ramp {
                self.res.ramp = now.duration_since(self.t0);
            }
            let end = self.measure_end.map_or(now, |e| e.min(now));
            let start = self.measure_start.map_or(now, |s| s.min(end));
            self.measure_start = Some(start);
            self.measure_end = Some(end);
            if self.phase != Phase::Measure {
                self.cpu_start = cpu_times();
                self.res.connected_start = self.connected;
            }
            self.phase = Phase::Measure;
        }
        if self.phase == Phase::Ramp
            && (self.ramp_pending == 0 || now.duration_since(self.t0) >= self.w.ramp_timeout)
        {
            self.res.ramp = now.duration_since(self.t0);
            let ms = now + self.w.warmup;
            self.measure_start = Some(ms);
            self.measure_end = Some(ms + self.w.duration);
            self.phase = Phase::Warmup;
            if self.w.rate.is_some() {
                self.sched_start = Some(now);
                for id in 0..self.clients.len() {
                    match self.clients[id].st {
                        St::Ready => self.next(id, now),
                        St::Idle if self.open_pages() => self.schedule_page(id, now),
                        _ => {}
                    }
                }
            }
        }
        if self.phase == Phase::Warmup && self.measure_start.is_some_and(|t| now >= t) {
            self.phase = Phase::Measure;
            self.cpu_start = cpu_times();
            self.res.connected_start = self.connected;
        }
        if self.phase == Phase::Measure && self.measure_end.is_some_and(|t| now >= t) {
            let (u, s) = cpu_times();
            self.res.cpu_user = u.saturating_sub(self.cpu_start.0);
            self.res.cpu_sys = s.saturating_sub(self.cpu_start.1);
            self.res.connected_end = self.connected;
            if let (Some(s), Some(e)) = (self.measure_start, self.measure_end) {
                self.res.window = e.saturating_duration_since(s);
            }
            self.phase = Phase::Drain;
            self.drain_deadline = Some(now + self.w.drain_timeout);
            for id in 0..self.clients.len() {
                // A page begun in the window is finished (connect included).
                let page_goes_on =
                    self.page_queries.is_some() && self.in_window(self.clients[id].page_start);
                match self.clients[id].st {
                    St::Queued | St::Connecting | St::Login if page_goes_on => {}
                    St::Idle | St::Queued => self.set_state(id, St::Done),
                    St::Connecting | St::Login | St::Quitting => {
                        self.close(id);
                        self.set_state(id, St::Done);
                    }
                    St::Ready => self.next(id, now),
                    St::Query | St::Done => {}
                }
            }
        }
        if self.phase == Phase::Drain
            && (self.active == 0 || self.drain_deadline.is_some_and(|t| now >= t))
        {
            for id in 0..self.clients.len() {
                let st = self.clients[id].st;
                if self.page_queries.is_some()
                    && st != St::Quitting
                    && st != St::Done
                    && self.in_window(self.clients[id].page_start)
                {
                    self.res.pages_unfinished += 1;
                }
                if st == St::Query && self.clients[id].q.as_ref().is_some_and(|q| q.in_window) {
                    self.res.unfinished += 1;
                }
                if st != St::Done {
                    self.close(id);
                }
                if self.clients[id].st != St::Done {
                    self.set_state(id, St::Done);
                }
            }
            self.count_missed();
            self.phase = Phase::Finished;
        }
    }

    /// Open loop: slots of the window that were never sent.
    fn count_missed(&mut self) {
        let (Some(rate), Some(sched), Some(ms), Some(me)) = (
            self.slot_rate(),
            self.sched_start,
            self.measure_start,
            self.measure_end,
        ) else {
            return;
        };
        let from = ns_since(ms, sched);
        let to = ns_since(me, sched);
        let n = self.clients.len();
        self.res.missed = (0..n)
            .map(|id| slots_in(id, self.clients[id].slot, from, to, n, rate))
            .sum();
    }

    fn in_window(&self, t: Instant) -> bool {
        match (self.measure_start, self.measure_end) {
            (Some(s), Some(e)) => t >= s && t < e,
            _ => false,
        }
    }

    // ---- state bookkeeping --------------------------------------------

    fn set_state(&mut self, id: usize, st: St) {
        let old = self.clients[id].st;
        if old == st {
            return;
        }
        if old.connecting() {
            self.connecting -= 1;
        }
        if st.connecting() {
            self.connecting += 1;
        }
        if old.connected() {
            self.connected -= 1;
        }
        if st.connected() {
            self.connected += 1;
        }
        if st == St::Done {
            self.active -= 1;
        }
        self.clients[id].st = st;
    }

    fn set_timer(&mut self, id: usize, at: Instant) {
        let c = &mut self.clients[id];
        c.timer_gen = c.timer_gen.wrapping_add(1);
        self.timers.push(Reverse((at, id as u32, c.timer_gen)));
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id, gen))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = id as usize;
            if self.clients[id].timer_gen != gen {
                continue;
            }
            match self.clients[id].st {
                St::Idle => {
                    if self.open_pages() {
                        self.schedule_page(id, now);
                    } else if self.page_queries.is_some() {
                        self.begin_page(id, now);
                    } else {
                        self.enqueue(id);
                    }
                }
                St::Ready => {
                    let intended = match self.query_slots() {
                        true => self.slot_time(id).unwrap_or(now),
                        false => now,
                    };
                    self.send_query(id, intended, now);
                }
                _ => {}
            }
        }
    }

    /// Connect, query and quit timeouts.
    fn sweep(&mut self, now: Instant) {
        for id in 0..self.clients.len() {
            let Some(t) = self.clients[id].timeout_at else {
                continue;
            };
            if t > now {
                continue;
            }
            match self.clients[id].st {
                St::Connecting | St::Login => {
                    self.fail(id, ErrKind::Timeout, None, "connect/login timeout", now)
                }
                St::Query => self.fail(id, ErrKind::Timeout, None, "query timeout", now),
                St::Quitting => {
                    self.close(id);
                    self.after_quit(id, now);
                }
                _ => self.clients[id].timeout_at = None,
            }
        }
    }

    // ---- connecting ---------------------------------------------------

    fn enqueue(&mut self, id: usize) {
        self.set_state(id, St::Queued);
        self.queue.push_back(id as u32);
    }

    /// Page mode: a new page starts (at `start`) with a connect.
    fn begin_page(&mut self, id: usize, start: Instant) {
        let c = &mut self.clients[id];
        c.page_start = start;
        c.page_queries = 0;
        c.page_ok = true;
        self.enqueue(id);
    }

    /// Open loop, page mode: the client's next page starts at its slot
    /// (now if the slot has passed: a late start counts in the page's
    /// latency, which runs from the slot).
    fn schedule_page(&mut self, id: usize, now: Instant) {
        let Some(t) = self.slot_time(id) else {
            return;
        };
        if t > now {
            return self.set_timer(id, t);
        }
        self.note_lag(t, now);
        self.clients[id].slot += 1;
        self.begin_page(id, t);
    }

    /// Open loop: a slot taken up more than [`LATE`] after its time.
    fn note_lag(&mut self, intended: Instant, now: Instant) {
        if self.in_window(intended) {
            let lag = now.saturating_duration_since(intended);
            if lag > LATE {
                self.res.late += 1;
                self.res.max_lag = self.res.max_lag.max(lag);
            }
        }
    }

    /// Open loop with one slot per page (page mode) rather than per query.
    fn open_pages(&self) -> bool {
        self.w.rate.is_some() && self.page_queries.is_some()
    }

    /// Open loop with one slot per query (persistent mode).
    fn query_slots(&self) -> bool {
        self.w.rate.is_some() && self.page_queries.is_none()
    }

    fn start_connects(&mut self, now: Instant) {
        while self.connecting < self.w.max_connecting {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            let id = id as usize;
            if self.clients[id].st == St::Queued {
                self.connect(id, now);
            }
        }
    }

    fn connect(&mut self, id: usize, now: Instant) {
        if self.in_window(now) {
            self.res.connect_attempts += 1;
        }
        let stream = match self.target {
            Target::Tcp { addr, .. } => TcpStream::connect(*addr).map(|s| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            Target::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
        };
        let c = &mut self.clients[id];
        c.connect_start = now;
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Counted as in flight so that fail() can settle it.
                self.set_state(id, St::Connecting);
                return self.fail(id, ErrKind::Connect, None, &e.to_string(), now);
            }
        };
        let token = Token(((c.conn_gen as usize) << 32) | id);
        let reg = match &mut stream {
            Stream::Tcp(s) => {
                self.poll
                    .registry()
                    .register(s, token, Interest::READABLE | Interest::WRITABLE)
            }
            Stream::Unix(s) => {
                self.poll
                    .registry()
                    .register(s, token, Interest::READABLE | Interest::WRITABLE)
            }
        };
        let c = &mut self.clients[id];
        c.stream = Some(stream);
        c.rbuf.clear();
        c.wbuf.clear();
        c.login = Login::new(self.w.deprecate_eof, self.w.charset);
        c.timeout_at = Some(now + self.w.connect_timeout);
        self.set_state(id, St::Connecting);
        if let Err(e) = reg {
            self.fail(id, ErrKind::Connect, None, &format!("register: {e}"), now);
        }
    }

    /// Drops the connection (if any). The caller sets the next state.
    fn close(&mut self, id: usize) {
        let c = &mut self.clients[id];
        if let Some(s) = c.stream.take() {
            let r = self.poll.registry();
            let _ = match s {
                Stream::Tcp(mut s) => r.deregister(&mut s),
                Stream::Unix(mut s) => r.deregister(&mut s),
            };
        }
        c.conn_gen = c.conn_gen.wrapping_add(1);
        c.rbuf.clear();
        c.wbuf.clear();
        c.timeout_at = None;
        c.q = None;
        if c.rbuf.capacity() > READ_CHUNK {
            c.rbuf.shrink_to(4096);
        }
    }

    /// Records an error, closes the connection and schedules a reconnect.
    fn fail(&mut self, id: usize, kind: ErrKind, code: Option<u16>, msg: &str, now: Instant) {
        let st = self.clients[id].st;
        self.record_error(kind, code, msg, now);
        if self.page_queries.is_some()
            && (st.connected() || st.connecting())
            && self.in_window(self.clients[id].page_start)
        {
            self.res.pages_failed += 1;
        }
        self.close(id);
        self.settle_ramp(id);
        if self.phase == Phase::Drain || self.phase == Phase::Finished {
            self.set_state(id, St::Done);
            return;
        }
        self.set_state(id, St::Idle);
        let c = &mut self.clients[id];
        let delay = if st.connecting() {
            let d = c.backoff;
            c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
            d
        } else {
            c.backoff = self.w.reconnect_delay;
            self.w.reconnect_delay
        };
        let jitter = 0.5 + self.rng.unit();
        let at = now + delay.mul_f64(jitter);
        self.set_timer(id, at);
    }

    fn record_error(&mut self, kind: ErrKind, code: Option<u16>, msg: &str, now: Instant) {
        if self.measure_start.is_some_and(|s| now >= s) {
            self.res.errors.add(kind, code, msg);
        } else {
            self.res.early_errors.add(kind, code, msg);
        }
    }

    fn settle_ramp(&mut self, id: usize) {
        if !self.clients[id].ramped {
            self.clients[id].ramped = true;
            self.ramp_pending -= 1;
        }
    }

    fn on_login(&mut self, id: usize, caps: u32, now: Instant) {
        let c = &mut self.clients[id];
        c.tracker = ResponseTracker::new(caps);
        c.timeout_at = None;
        c.backoff = self.w.reconnect_delay;
        if self.res.server_version.is_empty() {
            self.res.server_version = c.login.server_version.clone();
        }
        let (start, first) = (c.connect_start, !c.ramped);
        let took = crate::stats::us(now - start);
        if self.in_window(start) {
            self.res.connect.saturating_record(took);
        }
        if first {
            self.res.ramp_connect.saturating_record(took);
        }
        self.settle_ramp(id);
        self.set_state(id, St::Ready);
        self.next(id, now);
    }

    // ---- the workload ---------------------------------------------------

    /// Open loop: when the client's next slot is due.
    fn slot_time(&self, id: usize) -> Option<Instant> {
        let (rate, start) = (self.slot_rate()?, self.sched_start?);
        let ns = slot_offset_ns(id, self.clients[id].slot, self.clients.len(), rate);
        Some(start + Duration::from_nanos(ns))
    }

    /// Open loop: slots per second over all clients (pages in page mode).
    fn slot_rate(&self) -> Option<f64> {
        let rate = self.w.rate?;
        Some(match self.page_queries {
            Some(k) => rate / f64::from(k),
            None => rate,
        })
    }

    /// A logged-in client with nothing in flight decides what to do next.
    fn next(&mut self, id: usize, now: Instant) {
        let draining = self.phase == Phase::Drain || self.phase == Phase::Finished;
        if draining && self.query_slots() {
            // Only the open-loop backlog of the window is still sent.
            if let (Some(t), Some(end)) = (self.slot_time(id), self.measure_end) {
                if t < end {
                    return self.send_query(id, t, now);
                }
            }
        }
        // A page begun in the window is finished, so that its latency counts.
        let page_goes_on =
            self.page_queries.is_some() && self.in_window(self.clients[id].page_start);
        if draining && !page_goes_on {
            return self.quit_now(id);
        }
        if let Some(k) = self.page_queries {
            if self.clients[id].page_queries >= k {
                return self.end_page(id, now);
            }
        }
        if draining {
            return self.send_query(id, now, now);
        }
        match self.slot_rate().filter(|_| self.query_slots()) {
            None => {
                let think = think_time(self.w.think_dist, self.w.think, &mut self.rng);
                if think.is_zero() {
                    self.send_query(id, now, now);
                } else {
                    self.set_timer(id, now + think);
                }
            }
            Some(_) => match self.slot_time(id) {
                // Ramp not over: the schedule has not started.
                None => {}
                Some(t) if t <= now => self.send_query(id, t, now),
                Some(t) => self.set_timer(id, t),
            },
        }
    }

    fn send_query(&mut self, id: usize, intended: Instant, now: Instant) {
        let open = self.query_slots();
        let mut r = self.rng.below(u64::from(self.w.mix.total()));
        let kind = self.w.mix.pick(r as u32);
        r = 1 + self.rng.below(id_span(kind, self.w.table_size));
        self.sql.clear();
        write_sql(&mut self.sql, kind, &self.w.table, r, self.sleep_s);
        self.out.clear();
        write_com_query(&mut self.out, &self.sql);
        let in_window = self.in_window(intended);
        if open {
            self.note_lag(intended, now);
            self.clients[id].slot += 1;
        }
        let c = &mut self.clients[id];
        c.q = Some(InFlight {
            kind,
            intended,
            in_window,
        });
        c.tracker.start(Expect::Query);
        c.timeout_at = (!self.w.query_timeout.is_zero()).then(|| now + self.w.query_timeout);
        self.set_state(id, St::Query);
        let out = std::mem::take(&mut self.out);
        self.write(id, &out, now);
        self.out = out;
    }

    fn on_answer(&mut self, id: usize, err: Option<(u16, String)>, now: Instant) {
        let c = &mut self.clients[id];
        let Some(q) = c.q.take() else {
            return;
        };
        c.timeout_at = None;
        c.page_queries += 1;
        match err {
            None => {
                self.answered += 1;
                if self.in_window(now) {
                    self.res.answers += 1;
                }
                if q.in_window {
                    let lat = now.saturating_duration_since(q.intended);
                    self.res.record_query(q.kind, lat);
                }
            }
            Some((code, msg)) => {
                c.page_ok = false;
                self.record_error(ErrKind::Query, Some(code), &msg, now);
            }
        }
        self.set_state(id, St::Ready);
        self.next(id, now);
    }

    /// Page mode: the last query of the page is answered: COM_QUIT.
    fn end_page(&mut self, id: usize, now: Instant) {
        let c = &self.clients[id];
        if c.page_ok && self.in_window(c.page_start) {
            let d = now.saturating_duration_since(c.page_start);
            self.res.pages.saturating_record(crate::stats::us(d));
        } else if !c.page_ok && self.in_window(c.page_start) {
            self.res.pages_failed += 1;
        }
        self.out.clear();
        write_com_quit(&mut self.out);
        let out = std::mem::take(&mut self.out);
        self.set_state(id, St::Quitting);
        self.clients[id].timeout_at = Some(now + QUIT_WAIT);
        self.write(id, &out, now);
        self.out = out;
    }

    /// Page mode: the connection is gone after COM_QUIT: next page.
    fn after_quit(&mut self, id: usize, now: Instant) {
        if self.phase == Phase::Drain || self.phase == Phase::Finished {
            self.set_state(id, St::Done);
            return;
        }
        self.set_state(id, St::Idle);
        if self.open_pages() {
            return self.schedule_page(id, now);
        }
        let think = think_time(self.w.think_dist, self.w.think, &mut self.rng);
        if think.is_zero() {
            self.begin_page(id, now);
        } else {
            self.set_timer(id, now + think);
        }
    }

    /// End of run for a logged-in client: COM_QUIT (best effort) and close.
    fn quit_now(&mut self, id: usize) {
        if let Some(s) = self.clients[id].stream.as_mut() {
            let mut q = Vec::with_capacity(5);
            write_com_quit(&mut q);
            let _ = s.write(&q);
        }
        self.close(id);
        self.set_state(id, St::Done);
    }

    // ---- I/O --------------------------------------------------------------

    fn write(&mut self, id: usize, bytes: &[u8], now: Instant) {
        let c = &mut self.clients[id];
        let Some(s) = c.stream.as_mut() else {
            return;
        };
        if !c.wbuf.is_empty() {
            c.wbuf.extend_from_slice(bytes);
            return;
        }
        let (n, r) = write_some(s, bytes);
        self.res.bytes_out += n as u64;
        c.wbuf.extend_from_slice(&bytes[n..]);
        if let Err(e) = r {
            self.io_error(id, &e, now);
        }
    }

    fn flush(&mut self, id: usize, now: Instant) {
        let c = &mut self.clients[id];
        let Some(s) = c.stream.as_mut() else {
            return;
        };
        let (n, r) = write_some(s, &c.wbuf);
        self.res.bytes_out += n as u64;
        c.wbuf.drain(..n);
        if let Err(e) = r {
            self.io_error(id, &e, now);
        }
    }

    fn io_error(&mut self, id: usize, e: &io::Error, now: Instant) {
        let st = self.clients[id].st;
        match st {
            St::Quitting => {
                self.close(id);
                self.after_quit(id, now);
            }
            St::Connecting | St::Login => {
                self.fail(id, ErrKind::Connect, None, &e.to_string(), now)
            }
            _ => self.fail(id, ErrKind::Closed, None, &e.to_string(), now),
        }
    }

    fn on_event(&mut self, id: usize, ev: &Event) {
        let now = Instant::now();
        let gen = self.clients[id].conn_gen;
        if self.clients[id].st == St::Connecting {
            let Some(s) = self.clients[id].stream.as_ref() else {
                return;
            };
            let check = match s.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => s.is_connected(),
            };
            match check {
                Ok(true) => self.set_state(id, St::Login),
                Ok(false) => return,
                Err(e) => return self.fail(id, ErrKind::Connect, None, &e.to_string(), now),
            }
        }
        if ev.is_writable() && !self.clients[id].wbuf.is_empty() {
            self.flush(id, now);
            if self.clients[id].conn_gen != gen {
                return;
            }
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read(id, ev.is_read_closed() || ev.is_error(), now);
        }
    }

    fn read(&mut self, id: usize, hup: bool, now: Instant) {
        let gen = self.clients[id].conn_gen;
        let mut eof = false;
        let mut error = None;
        {
            let c = &mut self.clients[id];
            let Some(s) = c.stream.as_mut() else {
                return;
            };
            loop {
                match s.read(&mut self.read_buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.res.bytes_in += n as u64;
                        c.rbuf.extend_from_slice(&self.read_buf[..n]);
                        // A short read emptied the socket; an edge comes with
                        // the next data. On hang-up, read on to see the end.
                        if n < self.read_buf.len() && !hup {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        self.process(id, now);
        if self.clients[id].conn_gen != gen {
            return;
        }
        if let Some(e) = error {
            return self.io_error(id, &e, now);
        }
        if eof {
            match self.clients[id].st {
                St::Quitting => {
                    self.close(id);
                    self.after_quit(id, now);
                }
                St::Connecting | St::Login => self.fail(
                    id,
                    ErrKind::Connect,
                    None,
                    "connection closed by the server during login",
                    now,
                ),
                St::Query => self.fail(
                    id,
                    ErrKind::Closed,
                    None,
                    "connection closed by the server during a query",
                    now,
                ),
                St::Ready => self.fail(
                    id,
                    ErrKind::Closed,
                    None,
                    "connection closed by the server while idle",
                    now,
                ),
                _ => {}
            }
        }
    }

    /// Handles every complete packet in the client's read buffer.
    fn process(&mut self, id: usize, now: Instant) {
        let gen = self.clients[id].conn_gen;
        let buf = std::mem::take(&mut self.clients[id].rbuf);
        let mut pos = 0;
        while let Some((h, payload)) = next_frame(&buf[pos..]) {
            pos += h.total_len();
            self.packet(id, h.seq, payload, now);
            if self.clients[id].conn_gen != gen {
                // Closed meanwhile: the rest of the buffer is moot.
                let mut buf = buf;
                buf.clear();
                self.clients[id].rbuf = buf;
                return;
            }
        }
        let mut buf = buf;
        buf.drain(..pos);
        self.clients[id].rbuf = buf;
    }

    fn packet(&mut self, id: usize, seq: u8, payload: &[u8], now: Instant) {
        match self.clients[id].st {
            St::Login => {
                let step = self.clients[id].login.on_packet(self.creds, seq, payload);
                match step {
                    LoginStep::Send(bytes) => self.write(id, &bytes, now),
                    LoginStep::Wait => {}
                    LoginStep::Done { capabilities } => self.on_login(id, capabilities, now),
                    LoginStep::Failed(LoginError::Server { code, message }) => {
                        self.fail(id, ErrKind::Auth, Some(code), &message, now)
                    }
                    LoginStep::Failed(e @ LoginError::Unsupported(_)) => {
                        self.fail(id, ErrKind::Auth, None, &e.to_string(), now)
                    }
                    LoginStep::Failed(e @ LoginError::Protocol(_)) => {
                        self.fail(id, ErrKind::Protocol, None, &e.to_string(), now)
                    }
                }
            }
            St::Query => {
                let c = &mut self.clients[id];
                match c.tracker.feed(payload) {
                    Ok(Progress::NeedMore) => {}
                    Ok(Progress::Complete { end, .. }) => {
                        let err = if end == EndKind::Err || c.tracker.last_kind() == PacketKind::Err
                        {
                            Some(match server_error(payload) {
                                LoginError::Server { code, message } => (code, message),
                                e => (0, e.to_string()),
                            })
                        } else {
                            None
                        };
                        self.on_answer(id, err, now);
                    }
                    Ok(Progress::LocalInfile) => self.fail(
                        id,
                        ErrKind::Protocol,
                        None,
                        "unexpected LOCAL INFILE request",
                        now,
                    ),
                    Err(e) => self.fail(id, ErrKind::Protocol, None, &e.to_string(), now),
                }
            }
            St::Ready => {
                // Unsolicited: typically an ERR just before the server
                // closes the connection (idle timeout, KILL, shutdown).
                match server_error(payload) {
                    LoginError::Server { code, message } => {
                        self.fail(id, ErrKind::Closed, Some(code), &message, now)
                    }
                    _ => self.fail(
                        id,
                        ErrKind::Protocol,
                        None,
                        "unexpected packet while idle",
                        now,
                    ),
                }
            }
            // After COM_QUIT anything is ignored.
            _ => {}
        }
    }
}

/// Writes as much as the socket takes: (bytes written, hard error if any).
fn write_some(s: &mut Stream, bytes: &[u8]) -> (usize, io::Result<()>) {
    let mut pos = 0;
    while pos < bytes.len() {
        match s.write(&bytes[pos..]) {
            Ok(0) => {
                return (
                    pos,
                    Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
                )
            }
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (pos, Err(e)),
        }
    }
    (pos, Ok(()))
}

fn ns_since(t: Instant, start: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mix, QueryKind};
    use crate::fakeserver::{self, FakeConfig};

    fn work(clients: usize) -> Workload {
        Workload {
            clients,
            duration: Duration::from_millis(400),
            warmup: Duration::from_millis(100),
            mix: Mix::parse("point=80,range=10,write=10").unwrap(),
            table_size: 1000,
            drain_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            ..Workload::default()
        }
    }

    fn target(port: u16) -> Target {
        Target::parse(&format!("127.0.0.1:{port}")).unwrap()
    }

    fn creds(pw: &str) -> Credentials {
        Credentials {
            user: "app".into(),
            password: pw.into(),
            database: Some("app".into()),
        }
    }

    #[test]
    fn closed_loop_persistent() {
        let srv = fakeserver::start(FakeConfig::default());
        let w = work(4);
        let r = run(&w, &target(srv.port), &creds("pw"), "t", 1).unwrap();
        assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
        assert_eq!(r.early_errors.total(), 0);
        assert!(r.queries() > 50, "{}", r.queries());
        for k in [QueryKind::Point, QueryKind::Range, QueryKind::Write] {
            assert!(!r.by_kind[k.index()].is_empty(), "{k:?}");
        }
        assert!(r.by_kind[QueryKind::Sleep.index()].is_empty());
        assert_eq!(r.server_version, "10.11.0-FakeDB");
        assert_eq!((r.connected_start, r.connected_end), (4, 4));
        assert_eq!(r.ramp_connect.len(), 4);
        assert_eq!(srv.logins.load(std::sync::atomic::Ordering::Relaxed), 4);
        assert!(srv.queries.load(std::sync::atomic::Ordering::Relaxed) >= r.queries());
        assert!(r.connect.is_empty());
        assert_eq!(r.unfinished, 0);
        assert!(r.bytes_in > 0 && r.bytes_out > 0);
    }

    #[test]
    fn page_mode_with_think_time_and_switch() {
        let srv = fakeserver::start(FakeConfig {
            auth_switch: true,
            ..FakeConfig::default()
        });
        let mut w = work(3);
        w.mode = ConnMode::Page { queries: 3 };
        w.think = Duration::from_millis(2);
        w.deprecate_eof = true;
        let r = run(&w, &target(srv.port), &creds("pw"), "t", 2).unwrap();
        assert_eq!(r.all_errors(), 0, "{:?} {:?}", r.errors, r.early_errors);
        assert!(r.pages.len() >= 5, "{}", r.pages.len());
        assert_eq!(r.pages_failed, 0);
        // A connect per page, but a page begun (queued) just before the
        // window ends may start its connect after it, where connects are
        // no longer counted: up to one per client.
        assert!(
            r.connect.len() + 3 >= r.pages.len(),
            "{} connects, {} pages",
            r.connect.len(),
            r.pages.len()
        );
        // Each page is 3 queries, each preceded by ~2 ms of thinking.
        assert!(r.pages.value_at_percentile(50.0) >= 3000);
        // Pages begun in the window are finished in the drain, so up to 3
        // queries per client may fall after it; pages begun before it may
        // add up to 3 queries per client, their cut pages 2.
        let (q, p) = (r.queries(), r.pages.len());
        assert!(q + 9 >= 3 * p && q <= 3 * p + 15, "{q} queries, {p} pages");
    }

    #[test]
    fn open_loop_follows_the_schedule() {
        let srv = fakeserver::start(FakeConfig::default());
        let mut w = work(5);
        w.rate = Some(500.0);
        w.duration = Duration::from_millis(600);
        let r = run(&w, &target(srv.port), &creds("pw"), "t", 3).unwrap();
        assert_eq!(r.all_errors(), 0, "{:?}", r.errors);
        // 500 q/s for 0.6 s, exactly (the schedule, not the server, decides).
        assert_eq!(r.queries() + r.missed + r.unfinished, 300);
        assert!(r.queries() >= 295, "{}", r.queries());
        assert!((r.qps() - 500.0).abs() < 10.0, "{}", r.qps());
    }

    #[test]
    fn open_loop_pages() {
        // 300 q/s in pages of 3: 100 pages/s, each client starting a page
        // every 40 ms; the queries of a page run back to back.
        let srv = fakeserver::start(FakeConfig::default());
        let mut w = work(4);
        w.rate = Some(300.0);
        w.mode = ConnMode::Page { queries: 3 };
        w.duration = Duration::from_millis(600);
        let r = run(&w, &target(srv.port), &creds("pw"), "t", 10).unwrap();
        assert_eq!(r.all_errors(), 0, "{:?}", r.errors);
        assert_eq!(
            r.pages.len() + r.missed + r.pages_unfinished + r.pages_failed,
            60
        );
        assert!(r.pages.len() >= 55, "{}", r.pages.len());
        assert_eq!(r.connect.len(), r.connect_attempts);
        assert!(r.connect.len() >= 55);
        // Connect + 3 queries on loopback, nowhere near the 40 ms period.
        assert!(r.pages.value_at_percentile(50.0) < 20_000);
        assert!(r.queries() + 12 >= 3 * r.pages.len());
    }

    #[test]
    fn open_loop_counts_from_the_intended_time() {
        // One client, 100 q/s, every query sleeps 30 ms: the client falls
        // further and further behind its 10 ms schedule, and the latency
        // measured from the intended times grows far beyond 30 ms.
        let srv = fakeserver::start(FakeConfig::default());
        let mut w = work(1);
        w.rate = Some(100.0);
        w.mix = Mix::parse("sleep=1").unwrap();
        w.sleep = Duration::from_millis(30);
        w.warmup = Duration::ZERO;
        w.duration = Duration::from_millis(500);
        w.drain_timeout = Duration::from_millis(300);
        let r = run(&w, &target(srv.port), &creds("pw"), "t", 4).unwrap();
        assert!(r.late > 5, "{}", r.late);
        assert!(r.all.max() > 100_000, "{}", r.all.max());
        // The drain sends the backlog of the window until it times out;
        // what is left is accounted for.
        assert!(r.missed > 0);
        assert_eq!(r.queries() + r.missed + r.unfinished, 50);
    }

    #[test]
    fn errors_are_counted_not_fatal() {
        let srv = fakeserver::start(FakeConfig::default());
        let mut w = work(2);
        w.table = "bad".into();
        let r = run(&w, &target(srv.port), &creds("pw"), "t", 5).unwrap();
        assert_eq!(r.queries(), 0);
        assert!(r.errors.kind(ErrKind::Query) > 10);
        assert_eq!(r.errors.by_code[&1146].kind, ErrKind::Query);
        assert_eq!(r.errors.kind(ErrKind::Closed), 0);

        let mut w = work(2);
        w.reconnect_delay = Duration::from_millis(10);
        let r = run(&w, &target(srv.port), &creds("wrong"), "t", 6).unwrap();
        assert_eq!(r.queries(), 0);
        assert!(r.early_errors.by_code[&1045].count >= 2);
        assert!(r.errors.kind(ErrKind::Auth) > 0);

        let srv = fakeserver::start(FakeConfig {
            close_after: Some(5),
            ..FakeConfig::default()
        });
        let mut w = work(2);
        w.reconnect_delay = Duration::from_millis(5);
        let r = run(&w, &target(srv.port), &creds("pw"), "t", 7).unwrap();
        assert!(r.queries() > 0);
        assert!(r.errors.kind(ErrKind::Closed) > 0, "{:?}", r.errors);
        assert!(!r.connect.is_empty());
    }

    #[test]
    fn connect_refused_and_query_timeout() {
        // A port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut w = work(2);
        w.reconnect_delay = Duration::from_millis(10);
        let r = run(&w, &target(port), &creds("pw"), "t", 8).unwrap();
        assert!(r.errors.kind(ErrKind::Connect) > 0);
        assert!(r.errors.samples[&ErrKind::Connect].contains("refused"));

        let srv = fakeserver::start(FakeConfig::default());
        let mut w = work(2);
        w.mix = Mix::parse("sleep=1").unwrap();
        w.sleep = Duration::from_millis(300);
        w.query_timeout = Duration::from_millis(100);
        let r = run(&w, &target(srv.port), &creds("pw"), "t", 9).unwrap();
        assert_eq!(r.queries(), 0);
        assert!(r.errors.kind(ErrKind::Timeout) > 0, "{:?}", r.errors);
    }
}
