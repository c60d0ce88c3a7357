//! The simulation's I/O layer: the engine's connections are in-memory
//! pipes ([`super::pipe`]), and this drives the engine over them as
//! `EventLoop` (event_loop.rs) drives it over sockets, one turn at a time.
//!
//! It honours the same contract:
//!
//! - Readiness is reported as epoll reports it edge-triggered, and the
//!   engine is made to read only then or when it asks (`ReadClient`,
//!   `ReadBackend`): a readable edge when the peer wrote or shut down since
//!   the last report, a writable edge when room appeared after a write
//!   found the pipe full, when a connect completed or failed, and when a
//!   connection is registered. So an engine that forgets to ask for a read
//!   after pausing one (a lost wake-up) hangs here as it would on epoll.
//! - A turn is `EventLoop::turn`'s pass: the clock, the accepts and events,
//!   the actions carried out until none is left (`settle`), the engine's
//!   periodic work (`after_events`) and its actions, then the listener
//!   closed once the engine shuts down.
//! - Actions are carried out as `EventLoop::perform` does. A `Connect`
//!   asks the fake mysqld, which may accept it, refuse it at once, or leave
//!   it pending (see `FakeMysqld::connect`).
//!
//! The clock is the simulation's: a fixed start, moved forward a little
//! by every turn ([`TURN_TIME`]) and by the input, so that a case runs the
//! same way every time.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use slab::Slab;

use super::super::action::{Action, ConnId};
use super::super::io::{Buf, Peer, ReadOutcome};
use super::super::transfer::{Connections, Owner, Transport};
use super::super::Engine;
use super::fake_mysqld::FakeMysqld;
use super::pipe::{pipe, PipeEnd};
use crate::config::Config;

/// How far the clock moves in one turn: of the order of what a turn over
/// sockets took in the simulation (debug build), so that short backoffs
/// run out while a test waits a few hundred turns.
pub const TURN_TIME: Duration = Duration::from_micros(100);

/// As `EventLoop`'s: rounds of "carry out the actions, run the engine's
/// deferred work" per pass.
const SETTLE_ROUNDS: usize = 64;

/// Notifications for systemd kept (the latest).
const MAX_NOTIFICATIONS: usize = 16;

struct Conn {
    end: PipeEnd,
    owner: Owner,
}

pub struct MemIo {
    pub engine: Engine,
    /// The funnel's ends of its connections, by `ConnId`.
    conns: Slab<Conn>,
    /// The engine's actions being carried out.
    actions: Vec<Action>,
    start: Instant,
    /// Added to `start`: the simulation's clock.
    pub clock_offset: Duration,
    /// The client listener is open (until the engine shuts down).
    listening: bool,
    /// Clients' connections waiting to be accepted (the listen queue).
    accept_queue: VecDeque<PipeEnd>,
    /// See `Buf::read_from` and `EventLoop::dispatch_events`.
    stop_on_short_read: bool,
    /// What the engine asked to tell systemd (the latest).
    pub notifications: VecDeque<String>,
    /// A shutdown has completed (`Engine::after_events` said so).
    pub finished: bool,
}

impl MemIo {
    pub fn new(config: Config) -> MemIo {
        let start = Instant::now();
        MemIo {
            engine: Engine::new(config, start),
            conns: Slab::with_capacity(16),
            actions: Vec::new(),
            start,
            clock_offset: Duration::ZERO,
            listening: true,
            accept_queue: VecDeque::new(),
            stop_on_short_read: false,
            notifications: VecDeque::new(),
            finished: false,
        }
    }

    pub fn clock(&self) -> Instant {
        self.start + self.clock_offset
    }

    /// Before the first turn: the engine opens the pools' connections.
    pub fn start(&mut self, mysqld: &mut FakeMysqld) {
        self.engine.start(self.clock());
        self.settle(mysqld);
    }

    /// A client connects to the funnel: its end, or None when the funnel
    /// no longer listens (connection refused).
    pub fn connect_client(&mut self) -> Option<PipeEnd> {
        if !self.listening {
            return None;
        }
        let (client, funnel) = pipe();
        self.accept_queue.push_back(funnel);
        Some(client)
    }

    /// Connections the funnel holds.
    #[cfg(test)]
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// One pass of the loop, as `EventLoop::turn`. True once a shutdown
    /// has completed.
    pub fn turn(&mut self, mysqld: &mut FakeMysqld) -> bool {
        self.clock_offset += TURN_TIME;
        self.engine.set_now(self.clock());
        self.dispatch_events();
        self.settle(mysqld);
        let done = self.engine.after_events();
        self.finished |= done;
        self.settle(mysqld);
        if self.engine.is_shutting_down() && self.listening {
            // The listener closes: connections not yet accepted are reset.
            self.listening = false;
            self.accept_queue.clear();
        }
        done
    }

    /// The listener's readiness: accept every queued connection.
    fn accept(&mut self) {
        if self.engine.is_shutting_down() {
            return;
        }
        while let Some(end) = self.accept_queue.pop_front() {
            end.registered();
            let id = self.conns.insert(Conn {
                end,
                owner: Owner::Nobody,
            });
            if let Some((key, serial)) = self.engine.accept_client(ConnId(id), Peer::Unix) {
                self.conns[id].owner = Owner::Client { key, serial };
            }
        }
    }

    /// Report the edges raised since the last turn, oldest first, and the
    /// listener's: the connections it accepts report theirs next turn, as
    /// sockets registered during a pass report theirs at the next poll.
    fn dispatch_events(&mut self) {
        let mut ready: Vec<(u64, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.end.pending_edges().any())
            .map(|(id, c)| (c.end.pending_edges().since(), id))
            .collect();
        ready.sort_unstable();
        // Taken all at once, as one epoll_wait returns them.
        let events: Vec<(usize, bool, bool, bool)> = ready
            .into_iter()
            .map(|(_, id)| {
                let end = &self.conns[id].end;
                let e = end.take_edges();
                (id, e.readable, e.writable, end.read_closed())
            })
            .collect();
        self.accept();
        for (id, readable, writable, read_closed) in events {
            self.stop_on_short_read = !read_closed;
            self.conn_event(id, readable, writable);
        }
        self.stop_on_short_read = false;
    }

    /// As `EventLoop::conn_event`.
    fn conn_event(&mut self, id: usize, readable: bool, writable: bool) {
        let stop = self.stop_on_short_read;
        let pipes = &mut Pipes(&mut self.conns);
        self.engine
            .conn_event(ConnId(id), readable, writable, stop, pipes);
    }

    /// Carry out the engine's actions and run its deferred work until
    /// neither is left (bounded), as `EventLoop::settle`.
    fn settle(&mut self, mysqld: &mut FakeMysqld) {
        for _ in 0..SETTLE_ROUNDS {
            self.engine.run_deferred();
            self.engine.take_actions(&mut self.actions);
            if self.actions.is_empty() {
                return;
            }
            let mut actions = std::mem::take(&mut self.actions);
            for a in actions.drain(..) {
                self.perform(a, mysqld);
            }
            self.actions = actions;
        }
    }

    /// As `EventLoop::perform`.
    fn perform(&mut self, action: Action, mysqld: &mut FakeMysqld) {
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
            // Every pool's address is the fake mysqld's.
            Action::Connect { key, serial, .. } => self.connect(key, serial, mysqld),
            Action::CloseClient {
                conn,
                last_words,
                // Abortive closes (SO_LINGER 0) are for TCP; the
                // simulation's clients are on the unix socket.
                reset: _,
            } => {
                let Some(mut c) = self.conns.try_remove(conn.0) else {
                    return;
                };
                if !last_words.is_empty() {
                    // One attempt, as on a socket.
                    let _ = c.end.write(&last_words);
                }
                // Dropped: closed.
            }
            Action::CloseBackend { conn } => {
                self.conns.try_remove(conn.0);
            }
            // The simulation has no successor funnel: the engine hands
            // clients off only to one that took over, so this never comes;
            // if it did, the client would simply be gone from here.
            Action::HandOffClient { conn, .. } => {
                self.conns.try_remove(conn.0);
            }
            // One loop only: no client is moved to another, no other loop
            // is asked anything.
            Action::MoveClient { conn, .. } => {
                self.conns.try_remove(conn.0);
            }
            Action::ToLoop { .. } => {}
            Action::MoveIdleClient { conn, .. } => {
                self.conns.try_remove(conn.0);
            }
            // The simulation's configurations have no TLS, so the engine
            // never asks for it; if it did, TLS is refused here: the
            // read fails, as a failed handshake does.
            Action::StartClientTls { key, serial, .. } => {
                if self.engine.client_is(key, serial) {
                    let e = std::io::Error::other("no TLS in the simulation");
                    self.engine.client_read_done(key, Err(e));
                }
            }
            Action::StartBackendTls { key, serial, .. } => {
                if self.engine.backend_is(key, serial) {
                    let e = std::io::Error::other("no TLS in the simulation");
                    self.engine.backend_read_done(key, Err(e));
                }
            }
            Action::Notify(state) => {
                if self.notifications.len() >= MAX_NOTIFICATIONS {
                    self.notifications.pop_front();
                }
                self.notifications.push_back(state);
            }
        }
    }

    fn write_client(&mut self, key: usize) {
        self.engine
            .write_client_out(key, &mut Pipes(&mut self.conns));
    }

    fn read_client(&mut self, key: usize) {
        let stop = self.stop_on_short_read;
        self.engine
            .read_client_in(key, stop, &mut Pipes(&mut self.conns));
    }

    fn write_backend(&mut self, key: usize) {
        self.engine
            .write_backend_out(key, &mut Pipes(&mut self.conns));
    }

    fn read_backend(&mut self, key: usize) {
        let stop = self.stop_on_short_read;
        self.engine
            .read_backend_in(key, stop, &mut Pipes(&mut self.conns));
    }

    fn connect(&mut self, key: usize, serial: u64, mysqld: &mut FakeMysqld) {
        if !self.engine.backend_is(key, serial) {
            return;
        }
        let end = match mysqld.connect() {
            Ok(end) => end,
            Err(e) => {
                self.engine.backend_open_failed(key, e);
                return;
            }
        };
        end.registered();
        let id = self.conns.insert(Conn {
            end,
            owner: Owner::Backend { key, serial },
        });
        self.engine.backend_opened(key, serial, ConnId(id));
    }
}

/// The simulation's pipe ends, as the engine's transfers reach them
/// (`transfer.rs`).
struct Pipes<'a>(&'a mut Slab<Conn>);

impl Connections for Pipes<'_> {
    type Transport<'b>
        = &'b mut PipeEnd
    where
        Self: 'b;
    fn transport(&mut self, conn: ConnId) -> Option<&mut PipeEnd> {
        self.0.get_mut(conn.0).map(|c| &mut c.end)
    }
    fn owner(&self, conn: ConnId) -> Option<Owner> {
        self.0.get(conn.0).map(|c| c.owner)
    }
}

impl Transport for &mut PipeEnd {
    fn send(&mut self, wbuf: &mut Buf) -> std::io::Result<bool> {
        wbuf.write_to(*self)
    }
    fn receive(
        &mut self,
        rbuf: &mut Buf,
        cap: usize,
        stop_on_short: bool,
    ) -> std::io::Result<ReadOutcome> {
        rbuf.read_from(*self, cap, stop_on_short)
    }
    fn connect_done(&self) -> std::io::Result<bool> {
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(self.is_connected()),
        }
    }
}
