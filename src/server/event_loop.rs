//! The I/O layer: one mio event loop that owns every socket (listeners,
//! clients, backends, signals, the admin waker) and nothing else. It reads
//! into and writes from the engine's buffers, feeds the engine events, and
//! carries out the actions the engine queued (`action.rs`).
//!
//! Loop order, once per pass with one cached `now`: poll (timeout = the
//! engine's next deadline), dispatch events by token (reads are handed to
//! the engine at once, writes are queued by it), carry out the actions
//! until none is left, then the engine's periodic work (timers, backlog
//! expiry, janitor, pool top-up) and its actions, then paused accepts.
//!
//! The handoff socket, through which a newer funnel takes the listeners
//! and the clients over, is served here too (`handoff_io.rs`).

use std::io as stdio;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::action::{Action, ConnId};
use super::handoff_io::{self, HandoffState, ListenerInfo};
use super::io::{Buf, BufPool, ReadOutcome, Stream};
use super::log_limit::LogEvent;
use super::loops::{LoopMsg, LoopPeer, MovedClient, Shared};
use super::notify;
use super::tls_io::TlsConn;
use super::transfer::{Connections, Transport};
use super::Engine;
use crate::config::{BackendAddr, Config, LoopShare};
use crate::control::ControlHandle;

/// Token space: the low two bits say what a token is for.
const KIND_BITS: usize = 2;
pub(super) const KIND_CONN: usize = 0;
/// The handoff socket (key 0) and its connections (`handoff_io.rs`).
pub(super) const KIND_HANDOFF: usize = 1;
const KIND_LISTENER: usize = 2;
const KIND_SPECIAL: usize = 3;
const SIGNAL_TOKEN: Token = Token(KIND_SPECIAL);
const WAKER_TOKEN: Token = Token((1 << KIND_BITS) | KIND_SPECIAL);

pub(super) fn token(kind: usize, key: usize) -> Token {
    Token((key << KIND_BITS) | kind)
}

fn token_parts(t: Token) -> (usize, usize) {
    (t.0 & ((1 << KIND_BITS) - 1), t.0 >> KIND_BITS)
}

/// Bytes read from one socket per readiness event before the loop moves on.
pub(crate) const READ_CAP_PER_EVENT: usize = 256 * 1024;
/// Largest TLS buffer kept for reuse (records of a 64 KiB chunk, or a
/// read's worth of them).
const TLS_BUF_KEEP: usize = 320 * 1024;
/// How long to stop accepting after the process ran out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Rounds of "carry out the actions, run the engine's deferred work" per
/// pass: each round may queue more, and a pathological chain must not
/// starve the poll.
const SETTLE_ROUNDS: usize = 64;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl Listener {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// Another descriptor of the same listening socket, for another loop.
    fn try_clone(&self) -> stdio::Result<Listener> {
        use std::os::fd::AsFd;
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(TcpListener::from_std(
                l.as_fd().try_clone_to_owned()?.into(),
            )),
            Listener::Unix(l, path) => Listener::Unix(
                UnixListener::from_std(l.as_fd().try_clone_to_owned()?.into()),
                path.clone(),
            ),
        })
    }

    /// Watch it in `poll` as listener `index`. Every loop watches the same
    /// sockets: `EPOLLEXCLUSIVE` wakes one waiting loop per connection,
    /// not all (Linux 4.5; without it, all, and the others find nothing to
    /// accept). Edge-triggered, as mio registers: a loop accepts until
    /// none is left. Not through mio, which has no such flag.
    fn register(&self, poll: &Poll, index: usize) -> stdio::Result<()> {
        use std::os::fd::AsRawFd;
        let ctl = |flags: libc::c_int| {
            let mut event = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET | flags) as u32,
                u64: token(KIND_LISTENER, index).0 as u64,
            };
            // SAFETY: a valid epoll descriptor and socket, and an event
            // that lives through the call.
            let r = unsafe {
                libc::epoll_ctl(
                    poll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    self.raw_fd(),
                    &mut event,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(stdio::Error::last_os_error())
            }
        };
        match ctl(libc::EPOLLEXCLUSIVE) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => ctl(0),
            r => r,
        }
    }

    /// Stop watching it in `poll` (registered by `register`, so mio, which
    /// checks its own registrations in debug builds, is not asked).
    pub(super) fn unregister(&self, poll: &Poll) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in `register`; a null event is allowed for DEL.
        unsafe {
            libc::epoll_ctl(
                poll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }
}

pub(super) use super::transfer::Owner;

pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) owner: Owner,
    /// TLS on it, once started (`tls_io.rs`): reads and writes go through.
    pub(super) tls: Option<Box<TlsConn>>,
}

pub struct EventLoop {
    pub(super) poll: Poll,
    pub(super) listeners: Vec<Listener>,
    pub(super) conns: Slab<Conn>,
    pub engine: Engine,
    /// Set by `run` (not before: a loop built without it takes over no
    /// signal handlers).
    signals: Option<signal_hook_mio::v1_0::Signals>,
    events: Events,
    /// The engine's actions being carried out (the two vectors swap, so
    /// neither allocates per pass).
    actions: Vec<Action>,
    accept_paused_until: Option<Instant>,
    /// systemd's `$NOTIFY_SOCKET` (None when not started by systemd).
    notifier: Option<notify::Notifier>,
    /// See `Buf::read_from`: set per event from its read-closed flag.
    stop_on_short_read: bool,
    /// Taking over from an older funnel, handing over to a newer one.
    pub(super) handoff: HandoffState,
    /// Buffers lent to TLS connections while records are in transit.
    tls_bufs: BufPool,
    /// The engine's channel and this loop's waker, made once (the admin
    /// side and the health checkers hold copies).
    control: Option<ControlHandle>,
    /// The backend servers' health checker threads (`[server NAME]`);
    /// dropping them stops them.
    checkers: Option<crate::health::Checkers>,
    /// What the loops share, and this loop's inbox (`loops.rs`).
    pub(super) shared: std::sync::Arc<Shared>,
    inbox: Option<crossbeam_channel::Receiver<LoopMsg>>,
    /// The waker of this loop's poll (one per poll: the admin side and the
    /// other loops wake it).
    waker: Option<std::sync::Arc<mio::Waker>>,
    /// The first loop's view of the others: their control handles (to pass
    /// on signals) and threads; and the handle to all loops (checkers).
    workers: Vec<(ControlHandle, std::thread::JoinHandle<()>)>,
    /// What the first loop last told the others of a successor.
    successor_told: Option<super::handoff::Successor>,
    all_loops: Option<ControlHandle>,
}

/// Run the funnel until it is told to stop. `admin`, when given, is started
/// with a handle to the engine once the loop exists, before the client
/// listeners are bound (the caller wires the admin side in: the server does
/// not depend on it).
pub fn run(config: Config, admin: Option<AdminStarter>) -> Result<(), String> {
    let count = config.loop_count();
    let shared = std::sync::Arc::new(Shared::default());
    let mut el = EventLoop::in_loop(
        config.clone(),
        LoopShare { index: 0, count },
        shared.clone(),
    )?;
    el.notifier = notify::Notifier::from_env();
    el.install_signal_handlers()?;
    // A funnel already running with this configuration gives us its
    // listeners (`handoff_io.rs`); any other on our ports is refused.
    el.greet_predecessor()?;
    el.check_ports()?;
    el.start_workers(&config, count)?;
    if let Some(start_admin) = admin {
        let handle = el.all_loops_handle()?;
        start_admin(handle)?;
    }
    el.bind_listeners()?;
    el.share_listeners()?;
    el.complete_takeover();
    el.start();
    el.restart_checkers()?;
    // The first loop goes on until the others are done too: it passes
    // their clients on to a newer funnel.
    while !(el.turn()? && el.workers_ended()) {
        el.restart_checkers()?;
    }
    el.finish_handoff();
    el.join_workers();
    if count > 1 {
        el.engine.log_handoff_total(el.shared.handed_off());
    }
    Ok(())
}

/// Starts the admin and stats side with its handle to the engine.
pub type AdminStarter = Box<dyn FnOnce(ControlHandle) -> Result<(), String>>;

impl EventLoop {
    /// Loop `share.index` of `share.count` (`loops.rs`).
    fn in_loop(
        config: Config,
        share: LoopShare,
        shared: std::sync::Arc<Shared>,
    ) -> Result<EventLoop, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        Ok(EventLoop {
            poll,
            listeners: Vec::new(),
            conns: Slab::with_capacity(1024),
            engine: Engine::in_loop(config, Instant::now(), share, shared.clone()),
            signals: None,
            events: Events::with_capacity(1024),
            actions: Vec::new(),
            accept_paused_until: None,
            notifier: None,
            stop_on_short_read: false,
            handoff: HandoffState::default(),
            tls_bufs: BufPool::new(TLS_BUF_KEEP, 64),
            control: None,
            checkers: None,
            shared,
            inbox: None,
            waker: None,
            workers: Vec::new(),
            all_loops: None,
            successor_told: None,
        })
    }

    /// The waker of this loop's poll, made once.
    fn waker(&mut self) -> Result<std::sync::Arc<mio::Waker>, String> {
        if let Some(w) = &self.waker {
            return Ok(w.clone());
        }
        let waker = mio::Waker::new(self.poll.registry(), WAKER_TOKEN)
            .map_err(|e| format!("cannot create the loop's waker: {e}"))?;
        let waker = std::sync::Arc::new(waker);
        self.waker = Some(waker.clone());
        Ok(waker)
    }

    /// This loop's inbox, for the other loops.
    fn loop_peer(&mut self) -> Result<LoopPeer, String> {
        let waker = self.waker()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        self.inbox = Some(rx);
        Ok(LoopPeer {
            tx,
            waker,
            load: Default::default(),
        })
    }

    /// Start loops 1.. (`threads`), each on its own thread, and wait until
    /// each is up (its engine made, its inbox and control channel open).
    fn start_workers(&mut self, config: &Config, count: usize) -> Result<(), String> {
        let mut peers = vec![self.loop_peer()?];
        let mut handles = vec![self.control_handle()?];
        if count > 1 {
            info!("{count} event loops (threads = {})", config.threads);
        }
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for index in 1..count {
            let config = config.clone();
            let shared = self.shared.clone();
            let up = up_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("funnel-loop-{index}"))
                .spawn(move || {
                    let share = LoopShare { index, count };
                    let made = EventLoop::in_loop(config, share, shared).and_then(|mut el| {
                        let peer = el.loop_peer()?;
                        let handle = el.control_handle()?;
                        Ok((el, peer, handle))
                    });
                    let mut el = match made {
                        Ok((el, peer, handle)) => {
                            let _ = up.send(Ok((index, peer, handle)));
                            el
                        }
                        Err(e) => {
                            let _ = up.send(Err(e));
                            return;
                        }
                    };
                    drop(up);
                    el.start();
                    loop {
                        match el.turn() {
                            Ok(false) => {}
                            Ok(true) => break,
                            Err(e) => {
                                log::error!("event loop {index}: {e}");
                                break;
                            }
                        }
                    }
                    // Its clients are gone (handed over or closed).
                    let _ = el.shared.send(0, LoopMsg::Ended);
                })
                .map_err(|e| format!("cannot start event loop {index}: {e}"))?;
            threads.push(thread);
        }
        drop(up_tx);
        let mut up: Vec<(usize, LoopPeer, ControlHandle)> = Vec::new();
        for _ in 1..count {
            match up_rx.recv() {
                Ok(Ok(loop_up)) => up.push(loop_up),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("an event loop failed to start".into()),
            }
        }
        up.sort_by_key(|(index, _, _)| *index);
        for ((_, peer, handle), thread) in up.into_iter().zip(threads) {
            peers.push(peer);
            handles.push(handle.clone());
            self.workers.push((handle, thread));
        }
        self.shared.set_peers(peers);
        self.all_loops = Some(ControlHandle::join(&handles));
        Ok(())
    }

    /// The handle to every loop (the admin side's).
    fn all_loops_handle(&mut self) -> Result<ControlHandle, String> {
        match &self.all_loops {
            Some(h) => Ok(h.clone()),
            None => self.control_handle(),
        }
    }

    /// Whether every other loop has ended and all they sent this one
    /// (clients for the newer funnel) has been taken: once they are all
    /// finished nothing more comes, so an empty inbox is the last word.
    fn workers_ended(&self) -> bool {
        self.workers.iter().all(|(_, t)| t.is_finished())
            && self.inbox.as_ref().is_none_or(|inbox| inbox.is_empty())
    }

    /// At a shutdown, the first loop tells the others what it learnt of
    /// a newer funnel to hand clients to (they wait for its word).
    fn tell_successor(&mut self) {
        if self.workers.is_empty() || !self.engine.is_shutting_down() {
            return;
        }
        let now = self.engine.successor();
        if self.successor_told == Some(now) {
            return;
        }
        self.successor_told = Some(now);
        for index in 1..self.engine.share.count {
            let _ = self.shared.send(index, LoopMsg::Successor(now));
        }
    }

    /// After the first loop is done (shut down): wait for the others.
    fn join_workers(&mut self) {
        for (_, thread) in self.workers.drain(..) {
            let _ = thread.join();
        }
    }

    /// Pass a signal's request on to the other loops.
    fn tell_workers(&self, make: impl Fn() -> crate::control::Control) {
        for (handle, _) in &self.workers {
            handle.send(make());
        }
    }

    /// Sockets and clients the other loops handed to this one.
    fn drain_inbox(&mut self) {
        let Some(inbox) = self.inbox.clone() else {
            return;
        };
        for msg in inbox.try_iter() {
            match msg {
                LoopMsg::Accepted(stream) => {
                    self.new_client(stream);
                    let index = self.engine.share.index;
                    self.shared
                        .publish_clients(index, self.engine.clients_len());
                    self.shared.took_accepted(index);
                }
                LoopMsg::Listen(listeners) => self.listen_too(listeners),
                LoopMsg::StopAccepting => self.close_listeners(),
                LoopMsg::Client(moved) => self.adopt_moved(*moved),
                LoopMsg::Ask {
                    from,
                    key,
                    serial,
                    ask,
                } => self.engine.answer_loop(from, key, serial, ask),
                LoopMsg::Answer {
                    key,
                    serial,
                    answer,
                } => self.engine.loop_answer(key, serial, answer),
                LoopMsg::Successor(successor) => self.engine.set_successor(successor),
                LoopMsg::HandOff { stream, image } => self.hand_off_stream(stream, image),
                LoopMsg::Adopt {
                    stream,
                    tls,
                    image,
                    queued_at,
                } => self.adopt_stream(stream, tls, &image, 0, queued_at),
                // The first loop's turn notices (`workers_ended`).
                LoopMsg::Ended => {}
            }
        }
    }

    /// A client another loop moved here in its login.
    fn adopt_moved(&mut self, moved: MovedClient) {
        let MovedClient {
            stream,
            tls,
            peer,
            login,
        } = moved;
        let id = match self.register_client_conn(stream, tls) {
            Ok(id) => id,
            Err(e) => {
                debug!("cannot register a moved client's socket: {e}");
                self.shared.client_gone();
                return;
            }
        };
        let (key, serial) = self.engine.adopt_login(ConnId(id), peer, login);
        if let Some(c) = self.conns.get_mut(id) {
            c.owner = Owner::Client { key, serial };
        }
    }

    /// Register a client's socket (with its TLS session, if any) in this
    /// loop; its key in `conns`, owned by nobody until the engine says.
    pub(super) fn register_client_conn(
        &mut self,
        mut stream: Stream,
        tls: Option<Box<TlsConn>>,
    ) -> stdio::Result<usize> {
        let entry = self.conns.vacant_entry();
        let id = entry.key();
        self.poll.registry().register(
            &mut stream,
            token(KIND_CONN, id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Conn {
            stream,
            owner: Owner::Nobody,
            tls,
        });
        Ok(id)
    }

    /// Send a client in its login to loop `to` (`Action::MoveClient`).
    fn move_client(&mut self, conn: ConnId, to: usize, login: super::loops::MovedLogin) {
        let Some(mut c) = self.conns.try_remove(conn.0) else {
            self.shared.client_gone();
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let peer = c.stream.peer();
        let moved = MovedClient {
            stream: c.stream,
            tls: c.tls,
            peer,
            login,
        };
        if self
            .shared
            .send(to, LoopMsg::Client(Box::new(moved)))
            .is_err()
        {
            // That loop is gone (shutting down): the socket closes.
            self.shared.client_gone();
        }
    }

    /// The admin side's handle: a channel to the engine and a waker for
    /// this loop.
    pub(crate) fn control_handle(&mut self) -> Result<ControlHandle, String> {
        if let Some(handle) = &self.control {
            return Ok(handle.clone());
        }
        let waker = self.waker()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        self.engine.control = Some(rx);
        let handle = ControlHandle::new(tx, waker);
        self.control = Some(handle.clone());
        Ok(handle)
    }

    /// Start the servers' health checkers anew when the engine's targets
    /// changed (at start, after a reload). Their reports reach the engine
    /// as control requests.
    fn restart_checkers(&mut self) -> Result<(), String> {
        let Some(targets) = self.engine.take_health_targets() else {
            return Ok(());
        };
        // Dropping the old ones stops them without waiting.
        self.checkers = None;
        if targets.is_empty() {
            return Ok(());
        }
        if self.engine.share.index != 0 {
            // The first loop's checkers report to every loop.
            return Ok(());
        }
        let handle = self.all_loops_handle()?;
        self.checkers = Some(crate::health::spawn_checkers(targets, move |report| {
            handle.broadcast(|| crate::control::Control::Health(Box::new(report.clone())));
        }));
        Ok(())
    }

    fn clock(&self) -> Instant {
        Instant::now()
    }

    /// Before the first pass: the engine opens the pools' connections.
    pub(crate) fn start(&mut self) {
        self.engine.start(self.clock());
        self.settle();
    }

    /// Bind the client listeners. Done last at start-up (after the admin
    /// and stats ports), so that a client port that accepts means the whole
    /// funnel is up.
    pub(crate) fn bind_listeners(&mut self) -> Result<(), String> {
        let config = &self.engine.config;
        let poll = &self.poll;
        let mut listeners = Vec::new();
        // The unix socket first, set up completely (mode, group) before any
        // TCP port accepts: a client that saw a TCP port open finds it ready.
        let mut unix = None;
        if let Some(path) = &config.unix_socket {
            let inherited = self
                .handoff
                .take_inherited(&ListenerInfo::Unix(path.clone()))
                // Its file gone, nobody reaches it: bind a new one.
                .filter(|_| path.exists());
            let l = if let Some(fd) = inherited {
                // The previous funnel's socket, at the same path: clients
                // connecting meanwhile wait in its queue.
                handoff_io::unix_listener(fd)
                    .map_err(|e| format!("cannot use the unix socket {}: {e}", path.display()))?
            } else {
                // A socket file left by a previous run would make bind fail.
                if path.exists() {
                    let _ = std::fs::remove_file(path);
                }
                // Created owner-only, then given its group and mode: never
                // more open than configured, not even for a moment.
                // SAFETY: umask only swaps the process's file mode mask.
                let old_mask = unsafe { libc::umask(0o177) };
                let bound = UnixListener::bind(path);
                unsafe { libc::umask(old_mask) };
                bound.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?
            };
            self.handoff.unix_file_id = handoff_io::file_id(path);
            if let Some(group) = &config.unix_socket_group {
                let gid = group_id(group)?;
                std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
                    format!(
                        "cannot give {} to group {group} (unix_socket_group): {e}",
                        path.display()
                    )
                })?;
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                path,
                std::fs::Permissions::from_mode(config.unix_socket_mode),
            )
            .map_err(|e| {
                format!(
                    "cannot set the mode of {} to {:04o} (unix_socket_mode): {e}",
                    path.display(),
                    config.unix_socket_mode
                )
            })?;
            info!(
                "listening on {} (mode {:04o}{})",
                path.display(),
                config.unix_socket_mode,
                config
                    .unix_socket_group
                    .as_ref()
                    .map_or(String::new(), |g| format!(", group {g}"))
            );
            unix = Some(Listener::Unix(l, path.clone()));
        }
        for addr in &config.listen {
            let l = match self.handoff.take_inherited(&ListenerInfo::Tcp(*addr)) {
                Some(fd) => handoff_io::tcp_listener(fd)
                    .map_err(|e| format!("cannot use the listener on {addr}: {e}"))?,
                None => bind_tcp(*addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?,
            };
            let local = l.local_addr().unwrap_or(*addr);
            info!("listening on {local}");
            listeners.push(Listener::Tcp(l));
        }
        listeners.extend(unix);
        for (i, l) in listeners.iter().enumerate() {
            l.register(poll, i)
                .map_err(|e| format!("cannot register listener: {e}"))?;
        }
        self.listeners = listeners;
        Ok(())
    }

    /// Give every other loop copies of the listeners: each loop accepts
    /// for itself (see `accepted`).
    fn share_listeners(&mut self) -> Result<(), String> {
        for to in 1..self.engine.share.count {
            let copies = self
                .listeners
                .iter()
                .map(Listener::try_clone)
                .collect::<stdio::Result<Vec<_>>>()
                .map_err(|e| format!("cannot share the listeners with loop {to}: {e}"))?;
            let _ = self.shared.send(to, LoopMsg::Listen(copies));
        }
        Ok(())
    }

    /// The first loop's copies of the listeners, to accept on here too.
    fn listen_too(&mut self, listeners: Vec<Listener>) {
        if self.engine.is_shutting_down() {
            return;
        }
        for l in listeners {
            let index = self.listeners.len();
            match l.register(&self.poll, index) {
                Ok(()) => self.listeners.push(l),
                Err(e) => log::error!(
                    "event loop {}: cannot register listener: {e}",
                    self.engine.share.index + 1
                ),
            }
        }
    }

    fn install_signal_handlers(&mut self) -> Result<(), String> {
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        self.poll
            .registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)
            .map_err(|e| format!("cannot register signals: {e}"))?;
        self.signals = Some(signals);
        Ok(())
    }

    /// One pass of the loop: poll (until the engine's next deadline),
    /// dispatch, then the periodic work. True once a shutdown has completed.
    fn turn(&mut self) -> Result<bool, String> {
        let mut timeout = self.engine.poll_timeout();
        if self.handoff.heir_retry_until.is_some() {
            timeout = timeout.min(super::handoff_io::HEIR_RETRY_EVERY);
        }
        if let Some(at) = self.accept_paused_until {
            timeout = timeout.min(at.saturating_duration_since(self.engine.now()));
        }
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, Some(timeout));
        let result = match polled {
            Err(e) if e.kind() == stdio::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(format!("poll failed: {e}")),
            Ok(()) => {
                self.engine.set_now(self.clock());
                self.dispatch_events(&events);
                if self.engine.is_shutting_down() && !self.handoff.heir_tried {
                    // Before the engine closes anyone: is there a newer
                    // funnel to hand the clients to?
                    self.start_heir();
                }
                self.settle();
                let done = self.engine.after_events();
                self.settle();
                self.after_engine();
                self.tell_successor();
                if self.engine.share.count > 1 {
                    self.shared
                        .publish_clients(self.engine.share.index, self.engine.clients_len());
                }
                Ok(done)
            }
        };
        self.events = events;
        result
    }

    fn dispatch_events(&mut self, events: &Events) {
        for event in events.iter() {
            let (kind, key) = token_parts(event.token());
            // A short read may skip the read that would say WouldBlock,
            // unless this event says the peer closed: data and FIN that
            // arrive together raise one edge, and the FIN must be seen.
            self.stop_on_short_read = !(event.is_read_closed() || event.is_error());
            match kind {
                KIND_CONN => self.conn_event(key, event.is_readable(), event.is_writable()),
                KIND_LISTENER => self.accept(key),
                KIND_HANDOFF => self.handoff_event(key),
                _ if event.token() == WAKER_TOKEN => {
                    // Requests first: a shutdown before the first loop's
                    // word on a successor, which it sent after.
                    self.engine.handle_control();
                    self.drain_inbox();
                }
                _ => self.handle_signals(),
            }
        }
        // Work outside an event (deferred reads, resumes) has no hint.
        self.stop_on_short_read = false;
    }

    fn conn_event(&mut self, id: usize, readable: bool, writable: bool) {
        let stop = self.stop_on_short_read;
        let (engine, mut sockets) = self.sockets();
        engine.conn_event(ConnId(id), readable, writable, stop, &mut sockets);
    }

    /// Carry out the engine's actions and run its deferred work until
    /// neither is left (bounded).
    fn settle(&mut self) {
        for _ in 0..SETTLE_ROUNDS {
            self.engine.run_deferred();
            self.engine.take_actions(&mut self.actions);
            if self.actions.is_empty() {
                return;
            }
            let mut actions = std::mem::take(&mut self.actions);
            for a in actions.drain(..) {
                self.perform(a);
            }
            // Keep the (emptied) allocation for the next round.
            self.actions = actions;
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::FlushClient { key, serial } => {
                if self.engine.client_is(key, serial) {
                    self.write_client(key);
                }
            }
            Action::FlushBackend { key, serial } => {
                if self.engine.backend_is(key, serial) {
                    self.write_backend(key);
                }
            }
            Action::ReadClient { key, serial } => {
                if self.engine.client_is(key, serial) {
                    self.read_client(key);
                }
            }
            Action::ReadBackend { key, serial } => {
                if self.engine.backend_is(key, serial) {
                    self.read_backend(key);
                }
            }
            Action::Connect { key, serial, addr } => self.connect(key, serial, &addr),
            Action::CloseClient {
                conn,
                last_words,
                reset,
            } => {
                let Some(mut c) = self.conns.try_remove(conn.0) else {
                    return;
                };
                if let Some(tls) = c.tls.as_mut() {
                    tls.close(&mut c.stream, &last_words, &mut self.tls_bufs);
                } else if !last_words.is_empty() {
                    // One attempt: a client that does not read its error
                    // is not waited for.
                    let _ = c.stream.write(&last_words);
                }
                if reset {
                    if let Stream::Tcp(s) = &c.stream {
                        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                    }
                }
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
            Action::CloseBackend { conn } => {
                if let Some(mut c) = self.conns.try_remove(conn.0) {
                    let _ = self.poll.registry().deregister(&mut c.stream);
                }
            }
            Action::HandOffClient { conn, image } => self.hand_off(conn, image),
            Action::MoveClient { conn, to, login } => self.move_client(conn, to, *login),
            Action::MoveIdleClient {
                conn,
                to,
                image,
                queued_at,
            } => {
                let Some(mut c) = self.conns.try_remove(conn.0) else {
                    return;
                };
                let _ = self.poll.registry().deregister(&mut c.stream);
                let msg = LoopMsg::Adopt {
                    stream: c.stream,
                    tls: c.tls,
                    image,
                    queued_at,
                };
                // That loop gone (shutting down): the socket closes.
                let _ = self.shared.send(to, msg);
            }
            Action::ToLoop { to, msg } => {
                // That loop is gone (shutting down): nothing of it to kill
                // or list.
                if let Err(LoopMsg::Ask {
                    key, serial, ask, ..
                }) = self.shared.send(to, *msg)
                {
                    let answer = match ask {
                        super::loops::LoopAsk::Kill { .. } => {
                            super::loops::LoopAnswer::Kill(super::loops::KillOutcome::NotHere)
                        }
                        super::loops::LoopAsk::Processlist { .. } => {
                            super::loops::LoopAnswer::Rows(Vec::new())
                        }
                    };
                    self.engine.loop_answer(key, serial, answer);
                }
            }
            Action::StartClientTls {
                key,
                serial,
                received,
                config,
            } => {
                if !self.engine.client_is(key, serial) {
                    return;
                }
                let Some(conn) = self.engine.client_conn(key) else {
                    return;
                };
                let Some(c) = self.conns.get_mut(conn.0) else {
                    return;
                };
                let started =
                    TlsConn::server(config, &received, &mut self.tls_bufs).and_then(|mut tls| {
                        tls.flush(&mut c.stream, &mut self.tls_bufs)?;
                        Ok(tls)
                    });
                match started {
                    Ok(tls) => {
                        c.tls = Some(Box::new(tls));
                        // The client may have sent more of its handshake
                        // than `received`, and its readiness was used up.
                        self.read_client(key);
                    }
                    Err(e) => self.engine.client_read_done(key, Err(e)),
                }
            }
            Action::StartBackendTls {
                key,
                serial,
                config,
                server_name,
            } => self.start_backend_tls(key, serial, config, server_name),
            Action::Notify(state) => {
                if let Some(n) = self.notifier.as_mut() {
                    n.send(&state);
                }
            }
        }
    }

    fn sockets(&mut self) -> (&mut Engine, Sockets<'_>) {
        let sockets = Sockets {
            conns: &mut self.conns,
            tls_bufs: &mut self.tls_bufs,
        };
        (&mut self.engine, sockets)
    }

    fn write_client(&mut self, key: usize) {
        let (engine, mut sockets) = self.sockets();
        engine.write_client_out(key, &mut sockets);
    }

    fn read_client(&mut self, key: usize) {
        let stop = self.stop_on_short_read;
        let (engine, mut sockets) = self.sockets();
        engine.read_client_in(key, stop, &mut sockets);
    }

    fn write_backend(&mut self, key: usize) {
        let (engine, mut sockets) = self.sockets();
        engine.write_backend_out(key, &mut sockets);
    }

    fn read_backend(&mut self, key: usize) {
        let stop = self.stop_on_short_read;
        let (engine, mut sockets) = self.sockets();
        engine.read_backend_in(key, stop, &mut sockets);
    }

    /// The backend's SSL request is in its output: write it as it is,
    /// then speak TLS (rustls's ClientHello goes out at once).
    fn start_backend_tls(
        &mut self,
        key: usize,
        serial: u64,
        config: std::sync::Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) {
        if !self.engine.backend_is(key, serial) {
            return;
        }
        let Some((conn, wbuf)) = self.engine.backend_output(key) else {
            return;
        };
        let Some(c) = self.conns.get_mut(conn.0) else {
            return;
        };
        let sent = match wbuf.write_to(&mut c.stream) {
            Ok(true) => TlsConn::client(config, server_name, &mut self.tls_bufs),
            Ok(false) => Err(stdio::Error::other(
                "the SSL request did not fit in the socket",
            )),
            Err(e) => Err(e),
        };
        let started = sent.and_then(|mut tls| {
            tls.flush(&mut c.stream, &mut self.tls_bufs)?;
            Ok(tls)
        });
        match started {
            Ok(tls) => c.tls = Some(Box::new(tls)),
            Err(e) => self.engine.backend_read_done(key, Err(e)),
        }
    }

    fn connect(&mut self, key: usize, serial: u64, addr: &BackendAddr) {
        if !self.engine.backend_is(key, serial) {
            return;
        }
        let stream = match addr {
            BackendAddr::Tcp(addr) => mio::net::TcpStream::connect(*addr).map(|s| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            BackendAddr::Unix(path) => mio::net::UnixStream::connect(path).map(Stream::Unix),
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                self.engine.backend_open_failed(key, e);
                return;
            }
        };
        let entry = self.conns.vacant_entry();
        let id = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token(KIND_CONN, id),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.engine.backend_open_failed(key, e);
            return;
        }
        entry.insert(Conn {
            stream,
            owner: Owner::Backend { key, serial },
            tls: None,
        });
        self.engine.backend_opened(key, serial, ConnId(id));
    }

    fn accept(&mut self, index: usize) {
        if self.accept_paused_until.is_some() || self.engine.is_shutting_down() {
            return;
        }
        loop {
            let accepted = match self.listeners.get_mut(index) {
                Some(Listener::Tcp(l)) => l.accept().map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    let sock = socket2::SockRef::from(&s);
                    let _ = sock.set_keepalive(true);
                    Stream::Tcp(s)
                }),
                Some(Listener::Unix(l, _)) => l.accept().map(|(s, _)| Stream::Unix(s)),
                None => return,
            };
            match accepted {
                Ok(stream) => self.accepted(stream),
                Err(e) if e.kind() == stdio::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == stdio::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the pending connection stays in
                    // the kernel queue; try again shortly.
                    log_limited!(
                        self.engine,
                        LogEvent::AcceptPaused,
                        "accept failed ({e}); pausing accepts for {} ms",
                        ACCEPT_PAUSE.as_millis()
                    );
                    self.accept_paused_until = Some(self.engine.now() + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    /// A socket accepted: greeted here, unless another loop has clearly
    /// fewer clients (`threads`): then it goes there.
    fn accepted(&mut self, stream: Stream) {
        let me = self.engine.share.index;
        if self.engine.share.count > 1 {
            if let Some(to) = self.shared.accept_elsewhere(me, self.engine.clients_len()) {
                match self.shared.send(to, LoopMsg::Accepted(stream)) {
                    Ok(()) => return,
                    // That loop is gone: this one greets it.
                    Err(LoopMsg::Accepted(stream)) => {
                        self.shared.took_accepted(to);
                        return self.new_client(stream);
                    }
                    Err(_) => return,
                }
            }
        }
        self.new_client(stream);
    }

    fn new_client(&mut self, stream: Stream) {
        let peer = stream.peer();
        let id = match self.register_client_conn(stream, None) {
            Ok(id) => id,
            Err(e) => {
                debug!("cannot register client socket: {e}");
                return;
            }
        };
        if let Some((key, serial)) = self.engine.accept_client(ConnId(id), peer) {
            self.conns[id].owner = Owner::Client { key, serial };
        }
    }

    /// After the engine's periodic work: stop listening once it shuts
    /// down, retry paused accepts when their pause is over.
    fn after_engine(&mut self) {
        if self.engine.is_shutting_down() && !self.listeners.is_empty() {
            self.close_listeners();
        }
        if let Some(until) = self.accept_paused_until {
            if self.engine.now() >= until {
                self.accept_paused_until = None;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
                self.settle();
            }
        }
    }

    fn close_listeners(&mut self) {
        for l in &self.listeners {
            l.unregister(&self.poll);
            if let Listener::Unix(_, path) = l {
                // Only while the file is ours (the first loop's): a newer
                // funnel may have put its own socket there.
                handoff_io::remove_if_ours(path, self.handoff.unix_file_id);
            }
        }
        // Close them too: a deregistered listener still completes
        // handshakes in the kernel, and those clients would hang.
        self.listeners.clear();
    }

    fn handle_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let pending: Vec<i32> = signals.pending().collect();
        for sig in pending {
            match sig {
                signal_hook::consts::SIGHUP => {
                    // Only once READY=1 went out: a reload during start-up
                    // must not announce readiness early.
                    let notify = self.engine.ready_announced() && self.notifier.is_some();
                    if notify {
                        self.perform(Action::Notify(notify::reloading_message()));
                    }
                    let _ = self.engine.reload("SIGHUP");
                    self.tell_workers(|| crate::control::Control::Reload {
                        reply: crossbeam_channel::bounded(1).0,
                    });
                    if notify {
                        self.perform(Action::Notify("READY=1\nSTATUS=serving".into()));
                    }
                }
                _ => {
                    self.engine.begin_shutdown();
                    self.tell_workers(|| crate::control::Control::Shutdown {
                        reply: crossbeam_channel::bounded(1).0,
                    });
                }
            }
        }
    }
}

/// The loop's sockets, as the engine's transfers reach them
/// (`transfer.rs`).
struct Sockets<'a> {
    conns: &'a mut Slab<Conn>,
    tls_bufs: &'a mut BufPool,
}

/// One socket, with the buffers its TLS may borrow.
struct Socket<'a> {
    conn: &'a mut Conn,
    tls_bufs: &'a mut BufPool,
}

impl Connections for Sockets<'_> {
    type Transport<'b>
        = Socket<'b>
    where
        Self: 'b;
    fn transport(&mut self, conn: ConnId) -> Option<Socket<'_>> {
        Some(Socket {
            conn: self.conns.get_mut(conn.0)?,
            tls_bufs: self.tls_bufs,
        })
    }
    fn owner(&self, conn: ConnId) -> Option<Owner> {
        self.conns.get(conn.0).map(|c| c.owner)
    }
}

impl Transport for Socket<'_> {
    fn send(&mut self, wbuf: &mut Buf) -> stdio::Result<bool> {
        match self.conn.tls.as_mut() {
            // Records may be waiting even when the buffer is empty.
            Some(tls) => tls.write_from(&mut self.conn.stream, wbuf, self.tls_bufs),
            None => wbuf.write_to(&mut self.conn.stream),
        }
    }
    fn receive(
        &mut self,
        rbuf: &mut Buf,
        cap: usize,
        stop_on_short: bool,
    ) -> stdio::Result<ReadOutcome> {
        match self.conn.tls.as_mut() {
            Some(tls) => tls.read_into(
                &mut self.conn.stream,
                rbuf,
                cap,
                stop_on_short,
                self.tls_bufs,
            ),
            None => rbuf.read_from(&mut self.conn.stream, cap, stop_on_short),
        }
    }
    fn handshake_news(&mut self) -> bool {
        self.conn
            .tls
            .as_mut()
            .is_some_and(|tls| tls.handshake_news())
    }
    fn connect_done(&self) -> stdio::Result<bool> {
        let stream = &self.conn.stream;
        match stream.take_error() {
            Ok(None) => Ok(stream.is_connected()),
            Ok(Some(e)) | Err(e) => Err(e),
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> stdio::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    // No SO_REUSEPORT: a funnel taking over from this one gets this very
    // socket (handoff_io.rs), so nothing else ever binds beside it, not
    // even a second funnel started at the same instant.
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn; ask for plenty so a burst
    // of web servers connecting at once is queued rather than refused.
    socket.listen(8192)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// The id of a group given by name or number (`unix_socket_group`).
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group)
        .map_err(|_| format!("unix_socket_group {group:?}: not a group name"))?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives it.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!("unix_socket_group: no group named {group:?}"));
    }
    Ok(grp.gr_gid)
}
