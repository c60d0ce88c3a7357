//! Several event loops (`[funnel] threads`): what they share, and what
//! they send each other.
//!
//! Each loop is an `EventLoop` with its own engine, on its own thread: it
//! owns its clients and its share of every pool's backend connections
//! (`config::LoopShare`), and decides alone. The first loop also owns the
//! signals, the handoff socket and the health checkers, and binds the
//! listeners; every loop accepts on copies of them, and keeps what it
//! accepts unless another loop has clearly fewer clients (`LoopLoad`):
//! then it hands the socket there. What holds across loops
//! is small and lock-free: connection ids and the client count
//! (`max_client_connections`), in atomics. A client whose pool this loop
//! does not serve (a pool with fewer connections than loops) is moved, in
//! its login, to a loop that does, with its socket and TLS session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crossbeam_channel::Sender;

use super::balance::PoolHeads;
use super::io::{Peer, Stream};
use super::tls_io::TlsConn;

/// How long a loop's idle clients wait, at a shutdown, for the first
/// loop's word on a newer funnel to hand them to.
pub(crate) const SUCCESSOR_WORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the loops share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The next client connection id (unique across loops).
    next_connection_id: AtomicU32,
    /// Client connections in all loops (`max_client_connections`).
    pub(crate) clients: AtomicUsize,
    /// Turns the choice of loop for clients that are moved.
    placement: AtomicUsize,
    /// Each loop's inbox, once every loop is up.
    peers: OnceLock<Vec<LoopPeer>>,
    /// What the first server's greeting said (version, character set,
    /// MariaDB capabilities), as the first loop to hear it saw it: every
    /// loop greets clients alike, whether or not it has a backend yet.
    greeting: std::sync::Mutex<Option<(String, u8, u32)>>,
    /// Clients handed over to a newer funnel, all loops'.
    handed_off: std::sync::atomic::AtomicU64,
    /// A backend of some loop has logged in (systemd's READY=1).
    answered: std::sync::atomic::AtomicBool,
    /// Prepared statements of all loops' clients (`max_prepared_stmt_count`).
    pub(crate) prepared_stmts: super::stmt::StmtTotal,
    /// Failed logins per client address and per user, all loops' (a
    /// login is rare next to a query: one lock each).
    auth_throttle: std::sync::Mutex<super::auth_throttle::AuthThrottle>,
    /// Each pool's loops' oldest waiting commands, by user and
    /// `found_rows` (`balance.rs`): looked up when a loop creates a pool.
    pool_heads: std::sync::Mutex<HashMap<(String, bool), Arc<PoolHeads>>>,
    /// What those heads' times count from.
    epoch: Instant,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            next_connection_id: AtomicU32::new(1),
            clients: AtomicUsize::new(0),
            placement: AtomicUsize::new(0),
            peers: OnceLock::new(),
            auth_throttle: Default::default(),
            prepared_stmts: Default::default(),
            answered: Default::default(),
            handed_off: Default::default(),
            greeting: Default::default(),
            pool_heads: Default::default(),
            epoch: Instant::now(),
        }
    }
}

/// A loop's inbox and the waker of its poll.
#[derive(Debug)]
pub(crate) struct LoopPeer {
    pub(crate) tx: Sender<LoopMsg>,
    pub(crate) waker: Arc<mio::Waker>,
    pub(crate) load: LoopLoad,
}

/// How many clients a loop has, for the accepting loops' choice: each
/// loop writes its own count (once per pass), and the sockets handed to
/// it that it has not taken yet are counted apart. In its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct LoopLoad {
    clients: AtomicUsize,
    incoming: AtomicUsize,
}

impl LoopLoad {
    fn now(&self) -> usize {
        self.clients.load(Ordering::Relaxed) + self.incoming.load(Ordering::Relaxed)
    }
}

/// A loop that accepts a client keeps it unless it holds this many more
/// than the loop with fewest (and an eighth more): most accepted sockets
/// then need no handover, and the loops' shares stay even.
const ACCEPT_SLACK: usize = 2;

/// What one loop hands another.
pub enum LoopMsg {
    /// A socket another loop accepted, for this one (with fewer clients)
    /// to greet (`Shared::accept_elsewhere`).
    Accepted(Stream),
    /// A client in its login whose pool this loop serves.
    Client(Box<MovedClient>),
    /// A question from loop `from` for its client `key` (`serial`).
    Ask {
        from: usize,
        key: usize,
        serial: u64,
        ask: LoopAsk,
    },
    /// The answer to an `Ask`, for this loop's client `key`.
    Answer {
        key: usize,
        serial: u64,
        answer: LoopAnswer,
    },
    /// From the first loop, at a shutdown: the newer funnel to hand
    /// clients to (`handoff.rs`).
    Successor(super::handoff::Successor),
    /// To the first loop: a client for the newer funnel, with its image.
    HandOff { stream: Stream, image: Vec<u8> },
    /// A client to adopt as its image says (`handoff.rs`): one a
    /// predecessor handed over to the first loop, or one moved between its
    /// commands (a `COM_CHANGE_USER` to a user served here, or a command
    /// of it taken from the other loop's backlog, queued at `queued_at`:
    /// `balance.rs`), TLS and all.
    Adopt {
        stream: Stream,
        tls: Option<Box<TlsConn>>,
        image: Vec<u8>,
        queued_at: Option<Instant>,
    },
    /// To the first loop: a loop has ended.
    Ended,
    /// From the first loop: copies of the client listeners, for this loop
    /// to accept on too (`event_loop.rs`, "Accepting").
    Listen(Vec<super::event_loop::Listener>),
    /// From the first loop: a newer funnel has the listeners; stop
    /// accepting (close the copies).
    StopAccepting,
}

impl std::fmt::Debug for LoopMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoopMsg::Accepted(_) => f.write_str("Accepted"),
            LoopMsg::Client(_) => f.write_str("Client"),
            LoopMsg::Ask { from, key, ask, .. } => write!(f, "Ask({from}, {key}, {ask:?})"),
            LoopMsg::Answer { key, answer, .. } => write!(f, "Answer({key}, {answer:?})"),
            LoopMsg::Successor(s) => write!(f, "Successor({s:?})"),
            LoopMsg::HandOff { .. } => f.write_str("HandOff"),
            LoopMsg::Adopt { .. } => f.write_str("Adopt"),
            LoopMsg::Ended => f.write_str("Ended"),
            LoopMsg::Listen(l) => write!(f, "Listen({})", l.len()),
            LoopMsg::StopAccepting => f.write_str("StopAccepting"),
        }
    }
}

/// A client moved between loops in its login: its socket (with its TLS
/// session, if any) and what its login has said so far.
pub struct MovedClient {
    pub(crate) stream: Stream,
    pub(crate) tls: Option<Box<TlsConn>>,
    pub(crate) peer: Peer,
    pub(crate) login: MovedLogin,
}

/// The engine's part of a client moved in its login: the greeting it got
/// (connection id, scramble), and its handshake response with whatever it
/// sent after it, to be handled by the new loop as if read there.
#[derive(Debug)]
pub struct MovedLogin {
    pub(crate) id: u32,
    pub(crate) scramble: [u8; 20],
    pub(crate) host: String,
    pub(crate) tls: bool,
    pub(crate) accepted_at: Instant,
    pub(crate) input: Vec<u8>,
    /// Output not yet written to it (none, normally: it answered the
    /// greeting).
    pub(crate) output: Vec<u8>,
}

impl Shared {
    /// The next connection id; 0 is never given (the sequence wraps to 1).
    pub(crate) fn take_connection_id(&self) -> u32 {
        loop {
            let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// The id the next client would get.
    pub(crate) fn next_connection_id(&self) -> u32 {
        self.next_connection_id.load(Ordering::Relaxed).max(1)
    }

    /// Go on from `next` (a predecessor's sequence) unless past it already.
    pub(crate) fn continue_connection_ids(&self, next: u32) {
        self.next_connection_id.fetch_max(next, Ordering::Relaxed);
    }

    /// Count a new client, unless `max` are connected already.
    pub(crate) fn admit_client(&self, max: usize) -> bool {
        if self.clients.fetch_add(1, Ordering::AcqRel) >= max {
            self.clients.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Count a client that came in without the limit (one a predecessor
    /// handed over).
    pub(crate) fn count_client(&self) {
        self.clients.fetch_add(1, Ordering::AcqRel);
    }

    /// A client left this process.
    pub(crate) fn client_gone(&self) {
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }

    /// The first server's greeting, heard by a loop (the first wins).
    pub(crate) fn publish_greeting(&self, version: &str, charset: u8, mariadb_caps: u32) {
        let mut g = self.greeting.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert_with(|| (version.to_string(), charset, mariadb_caps));
    }

    pub(crate) fn greeting(&self) -> Option<(String, u8, u32)> {
        self.greeting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn count_handed_off(&self) {
        self.handed_off.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handed_off(&self) -> u64 {
        self.handed_off.load(Ordering::Relaxed)
    }

    /// A loop's backend logged in.
    pub(crate) fn mysqld_answered(&self) {
        self.answered.store(true, Ordering::Relaxed);
    }

    pub(crate) fn mysqld_answered_anywhere(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// The loops' heads of a pool (by its user and `found_rows`), shared
    /// by the `loops` loops.
    pub(crate) fn pool_heads(&self, user: &str, found_rows: bool, loops: usize) -> Arc<PoolHeads> {
        let mut heads = self.pool_heads.lock().unwrap_or_else(|e| e.into_inner());
        heads
            .entry((user.to_string(), found_rows))
            .or_insert_with(|| Arc::new(PoolHeads::new(self.epoch, loops)))
            .clone()
    }

    /// Set once every loop is up.
    pub(crate) fn set_peers(&self, peers: Vec<LoopPeer>) {
        let _ = self.peers.set(peers);
    }

    /// One of `loops`, in turn.
    pub(crate) fn pick(&self, loops: &[usize]) -> Option<usize> {
        if loops.is_empty() {
            return None;
        }
        let n = self.placement.fetch_add(1, Ordering::Relaxed);
        Some(loops[n % loops.len()])
    }

    /// Loop `index` has `clients` clients now.
    pub(crate) fn publish_clients(&self, index: usize, clients: usize) {
        if let Some(peer) = self.peers.get().and_then(|p| p.get(index)) {
            if peer.load.clients.load(Ordering::Relaxed) != clients {
                peer.load.clients.store(clients, Ordering::Relaxed);
            }
        }
    }

    /// Loop `me`, with `mine` clients, accepted one: the loop to hand it
    /// to, when another has clearly fewer (`ACCEPT_SLACK`). That loop
    /// counts it as incoming until it takes it (`took_accepted`).
    pub(crate) fn accept_elsewhere(&self, me: usize, mine: usize) -> Option<usize> {
        let peers = self.peers.get()?;
        let (to, least) = peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .map(|(i, p)| (i, p.load.now()))
            .min_by_key(|(_, n)| *n)?;
        if mine < least + ACCEPT_SLACK + least / 8 {
            return None;
        }
        peers[to].load.incoming.fetch_add(1, Ordering::Relaxed);
        Some(to)
    }

    /// Loop `index` took (or will never take) a socket handed to it.
    pub(crate) fn took_accepted(&self, index: usize) {
        if let Some(peer) = self.peers.get().and_then(|p| p.get(index)) {
            let _ = peer
                .load
                .incoming
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Hand `msg` to loop `index` and wake it. Gives the message back when
    /// that loop is gone (or not up yet).
    pub(crate) fn send(&self, index: usize, msg: LoopMsg) -> Result<(), LoopMsg> {
        let Some(peer) = self.peers.get().and_then(|p| p.get(index)) else {
            return Err(msg);
        };
        peer.tx.send(msg).map_err(|e| e.0)?;
        let _ = peer.waker.wake();
        Ok(())
    }
}

impl super::Engine {
    /// The failed-login counts of all loops.
    pub(super) fn auth_throttle(
        &self,
    ) -> std::sync::MutexGuard<'_, super::auth_throttle::AuthThrottle> {
        // A panic elsewhere while it was held leaves counts, not danger.
        self.shared
            .auth_throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Before greeting a client (or taking one greeted by another loop):
    /// what another loop's backends heard of the first server, if this
    /// loop's have not answered yet.
    pub(super) fn learn_shared_greeting(&mut self) {
        if self.servers[0].mariadb_caps.is_some() || self.share.count <= 1 {
            return;
        }
        if let Some((version, charset, caps)) = self.shared.greeting() {
            let s = &mut self.servers[0];
            s.version.get_or_insert(version);
            s.charset.get_or_insert(charset);
            s.mariadb_caps = Some(caps);
        }
    }

    /// The loop a client logging in as `user` is to move to: None when
    /// this loop serves the user's pool (or the user is not configured
    /// here: it is refused or relayed where it is).
    pub(super) fn login_elsewhere(&self, user: &str) -> Option<usize> {
        if self.share.count <= 1 {
            return None;
        }
        let loops = self.pool_loops_of(user)?;
        if loops.contains(&self.share.index) {
            return None;
        }
        self.shared.pick(&loops)
    }

    /// The loop a client handed over by a predecessor (its `image`) is to
    /// be adopted by: one that serves its user's pool, in turn.
    pub(crate) fn adoption_loop(&self, image: &[u8]) -> usize {
        let loops = super::handoff::ClientImage::decode(image)
            .ok()
            .and_then(|i| self.pool_loops_of(&i.user))
            .unwrap_or_default();
        self.shared.pick(&loops).unwrap_or(self.share.index)
    }

    /// The loops that serve a configured user's pool (None: not one).
    fn pool_loops_of(&self, user: &str) -> Option<Vec<usize>> {
        let u = self.full_config.users.iter().find(|u| u.name == user)?;
        Some(self.share.pool_loops(&u.name, u.connections))
    }

    /// Move client `key`, whose handshake response `payload` (sequence id
    /// `seq`) was just read, to loop `to`: it leaves this engine without
    /// its socket being closed, and the new loop handles the response as
    /// if it had read it. It stays counted (`Shared::clients`).
    pub(super) fn move_login(&mut self, key: usize, payload: &[u8], seq: u8, to: usize) {
        let mut c = self.clients.remove(key);
        self.client_ids.remove(&c.id);
        let mut input = Vec::with_capacity(payload.len() + 4 + c.rbuf.len());
        crate::protocol::packet::write_packet(&mut input, seq, payload);
        input.extend_from_slice(c.rbuf.as_slice());
        log::debug!("{} moved to loop {to}, which serves its pool", c.label());
        self.actions.push(super::action::Action::MoveClient {
            conn: c.conn,
            to,
            login: Box::new(MovedLogin {
                id: c.id,
                scramble: c.scramble,
                host: std::mem::take(&mut c.host),
                tls: c.tls,
                accepted_at: c.accepted_at,
                input,
                output: c.wbuf.as_slice().to_vec(),
            }),
        });
        c.rbuf.clear();
        self.bufs.release(&mut c.rbuf);
        self.bufs.release(&mut c.wbuf);
    }

    /// Client `key`, between commands, is in a pool this loop no longer
    /// serves (a reload changed which loops serve it): moved to one that
    /// does, with what it sent. True when it went.
    pub(super) fn loop_lost_pool(&mut self, key: usize) -> bool {
        if self.share.count <= 1 {
            return false;
        }
        let Some(c) = self.clients.get(key) else {
            return false;
        };
        let p = &self.pools[c.pool];
        // A COM_CHANGE_USER picks its loop by the user it changes to.
        let change_user =
            c.rbuf.as_slice().get(4) == Some(&crate::protocol::consts::COM_CHANGE_USER);
        if p.relay || p.user.connections > 0 || c.rbuf.is_empty() || change_user {
            return false;
        }
        let Some(to) = self.login_elsewhere(&c.user) else {
            return false;
        };
        self.move_between_commands(key, to)
    }

    /// Move client `key`, whose current command (still unread in its input)
    /// is a `COM_CHANGE_USER` to a user served by loop `to`, there: it is
    /// adopted with its image, as a newer funnel would adopt it, and reads
    /// the command there. False when it cannot move now (pinned, ...): it
    /// stays.
    pub(super) fn move_between_commands(&mut self, key: usize, to: usize) -> bool {
        let Some(c) = self.clients.get_mut(key) else {
            return false;
        };
        let current = c.in_flight.take();
        self.drop_warnings_pin(key);
        if self.move_to_loop(key, to, None) {
            return true;
        }
        if let Some(c) = self.clients.get_mut(key) {
            c.in_flight = current;
        }
        false
    }

    /// Move client `key`, between its commands (what it sent since, unread,
    /// in its input), to loop `to`, which adopts it from its image; with
    /// `queued_at` when its command waited in this loop's backlog since
    /// then (`balance.rs`). False when it cannot move now: it stays.
    pub(super) fn move_to_loop(
        &mut self,
        key: usize,
        to: usize,
        queued_at: Option<Instant>,
    ) -> bool {
        let image = self.client_image(key).map(|i| i.encode());
        let Some(image) = image.filter(|i| i.len() <= super::handoff::MAX_IMAGE_BYTES) else {
            return false;
        };
        let mut c = self.clients.remove(key);
        self.client_ids.remove(&c.id);
        // Counted again where it is adopted.
        self.shared.client_gone();
        log::debug!("{} moved to loop {to}", c.label());
        self.actions.push(super::action::Action::MoveIdleClient {
            conn: c.conn,
            to,
            image,
            queued_at,
        });
        c.rbuf.clear();
        self.bufs.release(&mut c.rbuf);
        self.bufs.release(&mut c.wbuf);
        true
    }

    /// Take over a client another loop moved here in its login (its socket
    /// is `conn`): as accepted there, greeted, with its handshake response
    /// handled now. Its key and serial.
    pub(crate) fn adopt_login(
        &mut self,
        conn: super::action::ConnId,
        peer: Peer,
        login: MovedLogin,
    ) -> (usize, u64) {
        self.learn_shared_greeting();
        let serial = self.next_serial();
        let mut c = self.new_client(serial, login.id, conn, peer);
        c.host = login.host;
        c.scramble = login.scramble;
        c.tls = login.tls;
        c.accepted_at = login.accepted_at;
        c.retally();
        let key = self.clients.insert(c);
        self.client_ids.insert(login.id, key);
        let c = &mut self.clients[key];
        if !login.output.is_empty() {
            self.bufs.ensure(&mut c.wbuf);
            c.wbuf.extend_from_slice(&login.output);
            self.flush_client(key);
        }
        let c = &mut self.clients[key];
        self.bufs.ensure(&mut c.rbuf);
        c.rbuf.extend_from_slice(&login.input);
        let at = login.accepted_at + self.config.handshake_timeout;
        self.add_timer(
            at.max(self.now),
            super::timer::TimerKind::ClientHandshake { key, serial },
        );
        // What it sent meanwhile is in its socket (or already here).
        self.actions
            .push(super::action::Action::ReadClient { key, serial });
        self.process_client_input(key);
        (key, serial)
    }
}

/// A question one loop's engine asks the others about their clients, for
/// one of its own (a `KILL` of an id it does not have, the process list).
#[derive(Clone, Debug)]
pub enum LoopAsk {
    /// `KILL [QUERY] id` by a client of `user` (`kill_any`: it has SUPER
    /// or CONNECTION ADMIN).
    Kill {
        id: u32,
        query_only: bool,
        user: String,
        kill_any: bool,
    },
    /// The process-list rows a client of `user` sees (`process`: all).
    Processlist { user: String, process: bool },
}

/// What a loop did with a `LoopAsk::Kill`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillOutcome {
    NotHere,
    Done,
    /// Another user's connection, and no privilege to kill it.
    Denied,
    /// `KILL QUERY` of a relayed login's statement.
    Relayed,
}

/// A loop's answer.
#[derive(Debug)]
pub enum LoopAnswer {
    Kill(KillOutcome),
    Rows(Vec<super::processlist::PeerRow>),
}

/// What the asking client does once every other loop has answered.
#[derive(Debug)]
pub(crate) enum AfterLoops {
    /// Answer its `KILL` (sequence id `seq`); `rest`: the statements after
    /// it in the same query, run after an OK.
    Kill {
        id: u64,
        seq: u8,
        more: bool,
        rest: Vec<u8>,
    },
    ShowProcesslist {
        seq: u8,
        full: bool,
        sql: Vec<u8>,
    },
    /// Its query, with `information_schema.PROCESSLIST` replaced.
    RewriteProcesslist {
        seq: u8,
        sql: Vec<u8>,
        refs: Vec<super::statement::ProcesslistRef>,
    },
}

/// A client waiting for the other loops' answers: it reads no command
/// meanwhile.
#[derive(Debug)]
pub(crate) struct LoopWait {
    waiting: usize,
    then: AfterLoops,
    kill: Option<KillOutcome>,
    rows: Vec<super::processlist::PeerRow>,
}

impl super::Engine {
    /// Ask every other loop `ask` for client `key`, which waits for their
    /// answers (`loop_answer`) and then does `then`.
    pub(super) fn ask_loops(&mut self, key: usize, ask: LoopAsk, then: AfterLoops) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let serial = c.serial;
        c.loop_wait = Some(Box::new(LoopWait {
            waiting: self.share.count - 1,
            then,
            kill: None,
            rows: Vec::new(),
        }));
        for to in (0..self.share.count).filter(|&i| i != self.share.index) {
            self.actions.push(super::action::Action::ToLoop {
                to,
                msg: Box::new(LoopMsg::Ask {
                    from: self.share.index,
                    key,
                    serial,
                    ask: ask.clone(),
                }),
            });
        }
    }

    /// The question for the other loops' process-list rows client `key`
    /// sees.
    pub(super) fn processlist_ask(&self, key: usize) -> LoopAsk {
        LoopAsk::Processlist {
            user: self
                .clients
                .get(key)
                .map_or_else(String::new, |c| c.user.clone()),
            process: self.privileges_of(key).process,
        }
    }

    /// Another loop's question for one of its clients: answered at once.
    pub(crate) fn answer_loop(&mut self, from: usize, key: usize, serial: u64, ask: LoopAsk) {
        let answer = match ask {
            LoopAsk::Kill {
                id,
                query_only,
                user,
                kill_any,
            } => LoopAnswer::Kill(self.kill_here(id, query_only, &user, kill_any)),
            LoopAsk::Processlist { user, process } => {
                LoopAnswer::Rows(self.processlist_for_loop(&user, process))
            }
        };
        self.actions.push(super::action::Action::ToLoop {
            to: from,
            msg: Box::new(LoopMsg::Answer {
                key,
                serial,
                answer,
            }),
        });
    }

    /// An answer from another loop for client `key`; once all have come,
    /// the client goes on.
    pub(crate) fn loop_answer(&mut self, key: usize, serial: u64, answer: LoopAnswer) {
        if !self.client_is(key, serial) {
            return;
        }
        let c = &mut self.clients[key];
        let Some(wait) = c.loop_wait.as_mut() else {
            return;
        };
        match answer {
            LoopAnswer::Kill(KillOutcome::NotHere) => {}
            LoopAnswer::Kill(outcome) => wait.kill = Some(outcome),
            LoopAnswer::Rows(rows) => wait.rows.extend(rows),
        }
        wait.waiting = wait.waiting.saturating_sub(1);
        if wait.waiting > 0 {
            return;
        }
        let Some(wait) = c.loop_wait.take() else {
            return;
        };
        let LoopWait {
            then, kill, rows, ..
        } = *wait;
        match then {
            AfterLoops::Kill {
                id,
                seq,
                more,
                rest,
            } => {
                if self.answer_kill(key, id, kill.unwrap_or(KillOutcome::NotHere), seq, more)
                    && more
                {
                    self.clients[key].multi_rest = Some(Box::new(super::client::MultiRest {
                        sql: rest,
                        seq: seq.wrapping_add(1),
                        ready: true,
                    }));
                }
            }
            AfterLoops::ShowProcesslist { seq, full, sql } => {
                self.answer_processlist(key, seq, full, &sql, &rows);
            }
            AfterLoops::RewriteProcesslist { seq, sql, refs } => {
                let sql = self.rewrite_processlist(key, &sql, &refs, &rows);
                self.push_query_part(key, &sql, seq);
                if let Some(f) = &mut self.clients[key].in_flight {
                    f.rewritten = true;
                }
                self.handle_command(key);
            }
        }
        self.deferred
            .push(super::Deferred::ClientInput(key, serial));
    }
}
