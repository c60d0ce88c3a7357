//! One first-come first-served order per pool across event loops
//! (`[funnel] threads` above 1).
//!
//! Each loop has its own share of a pool's backend connections and its own
//! backlog of its own clients' commands. Alone, that is first-come
//! first-served within each loop only: a loop whose connections are slower
//! for a while (mysqld's threads get less CPU, long queries hold them)
//! lets its clients wait longer than the other loops' (queue-wait p99/p50
//! at 10,000 clients: 1.25 with one loop, 1.7 to 2.8 with two), and a
//! loop whose connections all run long queries keeps its clients' short
//! ones waiting while another loop's connections are idle.
//!
//! So the loops keep one order between them:
//! - each loop publishes, per pool, when its oldest waiting command was
//!   queued, or that none waits and how many connections it has
//!   (`PoolHeads`: one cache line per loop, written when the head of its
//!   backlog changes);
//! - every `BALANCE_INTERVAL` while its backlog is not empty, a loop
//!   compares its oldest command's wait with the other loops'. When another
//!   loop's oldest waits clearly less (by `BALANCE_GAP_MIN`, and by an
//!   eighth of its own oldest's wait), it hands that loop its commands
//!   queued before that loop's oldest (when none waits there: as many as
//!   that loop has connections), oldest first;
//! - their clients move as between their commands (socket, TLS session and
//!   image, with the command unread again in their input) with the time
//!   their command was queued; the other loop puts each in its backlog
//!   where that time says, and it stays there (a command moves once).
//!
//! The backend connection count per loop, and so per pool, never changes:
//! clients move to the connections that serve sooner, and stay. A move
//! costs the client's image and a message, only when loops drift apart.
//!
//! Not moved: a command a query rule matched or a user's limit applies to
//! (`InFlight::ruled`: the rule's concurrency slot, rate and cache fill
//! belong to the loop that decided; one no rule matched is decided alike
//! anywhere, and the other loop reads it afresh), nor one of a client that
//! cannot move between commands now (`Engine::client_image`: pinned,
//! holding statements on a backend, ...).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::ClientState;
use super::pool::Request;

/// How often a loop with waiting commands compares its oldest with the
/// other loops'.
pub(crate) const BALANCE_INTERVAL: Duration = Duration::from_millis(2);

/// Commands move only when their wait here exceeds the other loop's
/// oldest's by this much (and an eighth of their wait). At 2 ms, 64
/// busy clients saw thousands of moves in 10 s for waits of a few ms
/// (a move costs more than such a wait); at 5 ms, a few hundred.
const BALANCE_GAP_MIN: Duration = Duration::from_millis(5);

/// Commands moved at one comparison, at most.
const BALANCE_BATCH: usize = 64;

/// A loop's head word: no command waits (the low bits: its connections).
const EMPTY: u64 = 1 << 63;
/// A loop's head word: it does not serve the pool.
const NOT_SERVED: u64 = u64::MAX;

/// When each loop's oldest waiting command of one pool was queued.
#[derive(Debug)]
pub(crate) struct PoolHeads {
    epoch: Instant,
    slots: Box<[Slot]>,
}

/// One loop's head, alone in its cache line: each loop writes only its
/// own, at every change of its backlog's head.
#[derive(Debug)]
#[repr(align(64))]
struct Slot(AtomicU64);

/// What a loop says of its backlog of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Its oldest command was queued then.
    Since(Instant),
    /// None waits; it has `room` connections for the next ones.
    Empty { room: usize },
    /// It does not serve the pool (no connections of it here).
    NotServed,
}

impl PoolHeads {
    pub(crate) fn new(epoch: Instant, loops: usize) -> Self {
        PoolHeads {
            epoch,
            slots: (0..loops)
                .map(|_| Slot(AtomicU64::new(NOT_SERVED)))
                .collect(),
        }
    }

    fn head(&self, index: usize) -> Head {
        let Some(slot) = self.slots.get(index) else {
            return Head::NotServed;
        };
        match slot.0.load(Ordering::Relaxed) {
            NOT_SERVED => Head::NotServed,
            v if v & EMPTY != 0 => Head::Empty {
                room: (v & !EMPTY) as usize,
            },
            v => Head::Since(self.epoch + Duration::from_nanos(v)),
        }
    }

    fn encode(&self, head: Head) -> u64 {
        match head {
            // Past the epoch (it comes first), and short of the flag
            // bit for some centuries.
            Head::Since(t) => {
                let nanos = t.saturating_duration_since(self.epoch).as_nanos();
                nanos.min(u128::from(EMPTY - 1)) as u64
            }
            Head::Empty { room } => EMPTY | (room as u64).min(u32::MAX.into()),
            Head::NotServed => NOT_SERVED,
        }
    }
}

/// A pool's place in its `PoolHeads` (`Pool::head`).
#[derive(Debug)]
pub struct HeadSlot {
    heads: Arc<PoolHeads>,
    index: usize,
}

impl HeadSlot {
    pub fn publish(&self, head: Head) {
        if let Some(s) = self.heads.slots.get(self.index) {
            s.0.store(self.heads.encode(head), Ordering::Relaxed);
        }
    }
}

/// Where a loop's waiting commands would run sooner: the other loop and
/// how many of them at most, with those queued before `before` only.
#[derive(Debug, PartialEq, Eq)]
struct Handover {
    to: usize,
    before: Option<Instant>,
    most: usize,
}

/// Loop `me`'s oldest command waits since `mine`: the loop whose oldest
/// waits least, if it waits clearly less (or none waits there).
fn handover(heads: &PoolHeads, me: usize, mine: Instant, now: Instant) -> Option<Handover> {
    let my_wait = now.saturating_duration_since(mine);
    let gap = BALANCE_GAP_MIN.max(my_wait / 8);
    if my_wait <= gap {
        return None;
    }
    let mut best: Option<(Duration, Handover)> = None;
    for i in (0..heads.slots.len()).filter(|&i| i != me) {
        let (wait, h) = match heads.head(i) {
            Head::NotServed | Head::Empty { room: 0 } => continue,
            Head::Empty { room } => (
                Duration::ZERO,
                Handover {
                    to: i,
                    before: None,
                    most: room,
                },
            ),
            Head::Since(t) => (
                now.saturating_duration_since(t),
                Handover {
                    to: i,
                    before: Some(t),
                    most: BALANCE_BATCH,
                },
            ),
        };
        if wait + gap < my_wait && best.as_ref().is_none_or(|(w, _)| wait < *w) {
            best = Some((wait, h));
        }
    }
    best.map(|(_, h)| Handover {
        most: h.most.min(BALANCE_BATCH),
        ..h
    })
}

impl super::Engine {
    /// Give pool `pool` its place among the loops' heads (with one loop:
    /// none, and nothing of this file runs).
    pub(super) fn attach_pool_head(&mut self, pool: usize) {
        if self.share.count <= 1 || self.shutting_down.is_some() {
            return;
        }
        let p = &mut self.pools[pool];
        if p.relay || p.is_removed() || p.head.is_some() {
            return;
        }
        let heads = self
            .shared
            .pool_heads(&p.user.name, p.found_rows, self.share.count);
        p.head = Some(HeadSlot {
            heads,
            index: self.share.index,
        });
        p.publish_head();
    }

    /// At a shutdown: no other loop hands this one clients any more (its
    /// own are handed over or closed where they are), nor does it.
    pub(super) fn leave_balance(&mut self) {
        for p in &mut self.pools {
            if let Some(slot) = p.head.take() {
                slot.publish(Head::NotServed);
            }
        }
    }

    /// Each pass: pools whose commands wait compare them with the other
    /// loops' every `BALANCE_INTERVAL`, and hand the overdue ones over.
    pub(super) fn balance_backlogs(&mut self) {
        if self.share.count <= 1 || self.paused {
            return;
        }
        for pool in 0..self.pools.len() {
            let p = &mut self.pools[pool];
            let Some(head) = p.oldest_enqueued() else {
                p.balance_at = None;
                continue;
            };
            let Some(slot) = &p.head else {
                continue;
            };
            let due = p.balance_at.get_or_insert(self.now + BALANCE_INTERVAL);
            if *due > self.now || p.paused {
                continue;
            }
            *due = self.now + BALANCE_INTERVAL;
            if let Some(h) = handover(&slot.heads, slot.index, head, self.now) {
                self.hand_over(pool, h);
            }
        }
    }

    /// When another loop queued the command of client `key` now being
    /// handled here: it was moved with it (`adopt_client`), keeps its place
    /// by that time, and was counted there.
    pub(super) fn queued_elsewhere(&self, key: usize) -> Option<Instant> {
        self.queued_elsewhere
            .filter(|&(k, _)| k == key)
            .map(|(_, at)| at)
    }

    /// When the next comparison is due, if any (`poll_timeout`).
    pub(super) fn next_balance(&self) -> Option<Instant> {
        if self.share.count <= 1 {
            return None;
        }
        self.pools.iter().filter_map(|p| p.balance_at).min()
    }

    fn hand_over(&mut self, pool: usize, h: Handover) {
        let mut scanned = 0;
        let overdue: Vec<Request> = self.pools[pool]
            .waiting()
            .take_while(|r| h.before.is_none_or(|t| r.enqueued < t))
            .inspect(|_| scanned += 1)
            .filter(|r| !r.moved)
            .take(h.most)
            .copied()
            .collect();
        let mut gone = Vec::with_capacity(overdue.len());
        for req in overdue {
            if self.move_queued(req, h.to) {
                gone.push(req.client);
            }
        }
        if !gone.is_empty() {
            self.pools[pool].remove_oldest_of(&gone, scanned);
            let moved = gone.len() as u64;
            self.bump(pool, |c| c.rebalanced += moved);
            let depth = self.pools[pool].backlog_len();
            self.stats.backlog_depth(pool, depth, self.now);
        }
    }

    /// Move the client whose command waits in the backlog (`req`) to loop
    /// `to`, its command unread again, with the time it was queued. False
    /// when it cannot move now: it stays in its place.
    fn move_queued(&mut self, req: Request, to: usize) -> bool {
        let key = req.client.key;
        let Some(c) = self.clients.get_mut(key) else {
            return false;
        };
        // Not a command a rule or a user limit decided on, nor one put back
        // after its backend died (it may have run once), nor one waiting
        // for the user's privileges or naming the process list (this
        // loop's answers to come).
        if c.serial != req.client.serial
            || !matches!(c.state, ClientState::Queued)
            || c.facts.names_processlist
            || c.in_flight
                .is_none_or(|f| f.ruled || f.retries > 0 || f.awaiting_privileges)
        {
            return false;
        }
        // As between its commands: its command is unread in its input.
        let in_flight = c.in_flight.take();
        c.set_state(ClientState::Idle);
        if !self.move_to_loop(key, to, Some(req.enqueued)) {
            let c = &mut self.clients[key];
            c.in_flight = in_flight;
            c.set_state(ClientState::Queued);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(loops: usize) -> (PoolHeads, Instant) {
        let epoch = Instant::now();
        (PoolHeads::new(epoch, loops), epoch)
    }

    fn set(h: &PoolHeads, i: usize, head: Head) {
        h.slots[i].0.store(h.encode(head), Ordering::Relaxed);
    }

    #[test]
    fn heads_read_back_as_published() {
        let (h, t0) = heads(3);
        assert_eq!(h.head(0), Head::NotServed);
        let t = t0 + Duration::from_millis(1234);
        set(&h, 1, Head::Since(t));
        set(&h, 2, Head::Empty { room: 7 });
        assert_eq!(h.head(1), Head::Since(t));
        assert_eq!(h.head(2), Head::Empty { room: 7 });
        assert_eq!(h.head(5), Head::NotServed);
    }

    #[test]
    fn overdue_commands_go_to_the_loop_whose_oldest_waits_least() {
        let (h, t0) = heads(3);
        let now = t0 + Duration::from_secs(10);
        let mine = now - Duration::from_millis(400);
        set(&h, 1, Head::Since(now - Duration::from_millis(300)));
        set(&h, 2, Head::Since(now - Duration::from_millis(100)));
        let to = handover(&h, 0, mine, now).expect("a handover");
        assert_eq!(to.to, 2);
        assert_eq!(to.before, Some(now - Duration::from_millis(100)));
        assert_eq!(to.most, BALANCE_BATCH);
        // A loop with nothing waiting takes as many as it has connections.
        set(&h, 1, Head::Empty { room: 4 });
        let to = handover(&h, 0, mine, now).expect("a handover");
        assert_eq!((to.to, to.before, to.most), (1, None, 4));
    }

    #[test]
    fn waits_alike_or_young_move_nothing() {
        let (h, t0) = heads(2);
        let now = t0 + Duration::from_secs(10);
        // Within an eighth of the wait.
        set(&h, 1, Head::Since(now - Duration::from_millis(360)));
        assert_eq!(handover(&h, 0, now - Duration::from_millis(400), now), None);
        // A wait shorter than the gap never moves.
        set(&h, 1, Head::Empty { room: 4 });
        assert_eq!(handover(&h, 0, now - Duration::from_millis(1), now), None);
        // Nor to a loop that does not serve the pool, or has no connection.
        set(&h, 1, Head::NotServed);
        assert_eq!(handover(&h, 0, now - Duration::from_secs(1), now), None);
        set(&h, 1, Head::Empty { room: 0 });
        assert_eq!(handover(&h, 0, now - Duration::from_secs(1), now), None);
    }
}
