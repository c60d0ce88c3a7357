//! Per-pool tallies of clients (how many connected, idle, queued, running,
//! pinned by cause; their buffered bytes and prepared statements), kept as
//! each client changes, so that snapshots for `/metrics`, `/health`,
//! `funnel stats` and the console read them instead of walking every client
//! on the loop. A client adds one [`Counted`] to the book; every change of
//! what it counts as goes through `Client::retally`, which moves it from its
//! old place to its new one, and its drop takes it out. Exact at any
//! moment, so a snapshot never mixes fresh pool figures with stale client
//! counts.

use std::cell::RefCell;
use std::rc::Rc;

use super::session::PinCause;

/// One pool's clients, as snapshots show them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTally {
    /// Logged in (all below count only these, but `handshaking`).
    pub connected: usize,
    pub idle: usize,
    /// A command in the backlog, or the login's schema being checked.
    pub queued: usize,
    pub running: usize,
    /// Still logging in (greeting, auth switch, relayed login).
    pub handshaking: usize,
    /// By primary cause, in `PinCause::ALL` order.
    pub pinned: [usize; PinCause::ALL.len()],
    pub buffered_bytes: usize,
    pub prepared_stmts: usize,
}

/// Where a client is counted in its pool's tally (its value indexes
/// [`Slots::by_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TallyState {
    Handshaking,
    /// Logged in, in none of the three below (a relayed login's reset).
    Other,
    Idle,
    Queued,
    Running,
}

/// What one client adds to the tally of its pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    pub pool: usize,
    pub state: TallyState,
    pub pin: Option<PinCause>,
    pub buffered: usize,
    pub stmts: usize,
}

/// One pool's tally as the book keeps it: clients by state in one array,
/// so that the common move (a state change) is a decrement and an
/// increment, with no branch on which states.
#[derive(Clone, Copy, Debug, Default)]
struct Slots {
    by_state: [usize; 5],
    pinned: [usize; PinCause::ALL.len()],
    buffered_bytes: usize,
    prepared_stmts: usize,
}

/// Every pool's tally, by pool index: shared by the engine (which reads
/// it) and its clients (which keep their share of it right).
#[derive(Clone, Default)]
pub struct TallyBook(Rc<RefCell<Vec<Slots>>>);

impl TallyBook {
    /// Move a client's share from `old` to `new` (either may be none: a
    /// client arriving or leaving).
    #[inline]
    pub fn apply(&self, old: Option<Counted>, new: Option<Counted>) {
        if old == new {
            return;
        }
        let mut book = self.0.borrow_mut();
        match (old, new) {
            // The common move (a state or pin change in the same pool):
            // only what differs.
            (Some(o), Some(n)) if o.pool == n.pool => slots_at(&mut book, n.pool).shift(&o, &n),
            _ => {
                if let Some(o) = old {
                    slots_at(&mut book, o.pool).count(&o, false);
                }
                if let Some(n) = new {
                    slots_at(&mut book, n.pool).count(&n, true);
                }
            }
        }
    }

    /// Pool `pool`'s tally (all zero for one no client has counted in yet).
    pub fn get(&self, pool: usize) -> ClientTally {
        self.0
            .borrow()
            .get(pool)
            .map_or_else(ClientTally::default, Slots::tally)
    }

    /// Clients still logging in, in every pool.
    pub fn handshaking(&self) -> usize {
        self.0
            .borrow()
            .iter()
            .map(|t| t.by_state[TallyState::Handshaking as usize])
            .sum()
    }

    /// The tallies a walk over `shares` gives, for checks against the book.
    pub fn walk(shares: impl Iterator<Item = Counted>) -> Vec<ClientTally> {
        let mut book = Vec::new();
        for c in shares {
            slots_at(&mut book, c.pool).count(&c, true);
        }
        book.iter().map(Slots::tally).collect()
    }

    /// The book's tallies, up to `pools` pools (those past its end zero).
    pub fn all(&self, pools: usize) -> Vec<ClientTally> {
        (0..pools).map(|p| self.get(p)).collect()
    }
}

fn slots_at(book: &mut Vec<Slots>, pool: usize) -> &mut Slots {
    if book.len() <= pool {
        book.resize(pool + 1, Slots::default());
    }
    &mut book[pool]
}

fn take(n: &mut usize, by: usize) {
    debug_assert!(*n >= by, "a client tally went below zero");
    *n = n.saturating_sub(by);
}

impl Slots {
    fn tally(&self) -> ClientTally {
        let s = &self.by_state;
        let handshaking = s[TallyState::Handshaking as usize];
        ClientTally {
            connected: s.iter().sum::<usize>() - handshaking,
            idle: s[TallyState::Idle as usize],
            queued: s[TallyState::Queued as usize],
            running: s[TallyState::Running as usize],
            handshaking,
            pinned: self.pinned,
            buffered_bytes: self.buffered_bytes,
            prepared_stmts: self.prepared_stmts,
        }
    }

    fn count(&mut self, c: &Counted, add: bool) {
        let step = |n: &mut usize, by: usize| {
            if add {
                *n += by;
            } else {
                take(n, by);
            }
        };
        step(&mut self.by_state[c.state as usize], 1);
        if c.state == TallyState::Handshaking {
            // Nothing else of a client logging in is counted.
            return;
        }
        if let Some(cause) = c.pin {
            // `ALL` is in declaration order: a cause's index is its value.
            step(&mut self.pinned[cause as usize], 1);
        }
        step(&mut self.buffered_bytes, c.buffered);
        step(&mut self.prepared_stmts, c.stmts);
    }

    /// Move a client of this pool from `o` to `n`.
    #[inline]
    fn shift(&mut self, o: &Counted, n: &Counted) {
        let handshaking = TallyState::Handshaking;
        if o.state == handshaking || n.state == handshaking {
            self.count(o, false);
            self.count(n, true);
            return;
        }
        take(&mut self.by_state[o.state as usize], 1);
        self.by_state[n.state as usize] += 1;
        if o.pin != n.pin {
            if let Some(cause) = o.pin {
                take(&mut self.pinned[cause as usize], 1);
            }
            if let Some(cause) = n.pin {
                self.pinned[cause as usize] += 1;
            }
        }
        self.buffered_bytes = (self.buffered_bytes + n.buffered).saturating_sub(o.buffered);
        self.prepared_stmts = (self.prepared_stmts + n.stmts).saturating_sub(o.stmts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(pool: usize, state: TallyState, pin: Option<PinCause>) -> Counted {
        Counted {
            pool,
            state,
            pin,
            buffered: 10,
            stmts: 2,
        }
    }

    #[test]
    fn moves_agree_with_a_walk() {
        let book = TallyBook::default();
        let a = share(0, TallyState::Handshaking, None);
        let b = share(1, TallyState::Idle, Some(PinCause::Lock));
        let c = share(1, TallyState::Running, None);
        book.apply(None, Some(a));
        book.apply(Some(a), Some(b));
        book.apply(None, Some(c));
        book.apply(Some(c), Some(share(1, TallyState::Queued, None)));
        let walked = TallyBook::walk([b, share(1, TallyState::Queued, None)].into_iter());
        assert_eq!(book.all(2), walked);
        assert_eq!(book.get(1).connected, 2);
        assert_eq!(book.get(1).pinned[3], 1, "Lock is the fourth cause");
        assert_eq!(book.get(1).buffered_bytes, 20);
        assert_eq!(book.handshaking(), 0);
        let b2 = share(1, TallyState::Running, Some(PinCause::Transaction));
        book.apply(Some(b), Some(b2));
        let walked = TallyBook::walk([b2, share(1, TallyState::Queued, None)].into_iter());
        assert_eq!(book.all(2), walked);
        book.apply(Some(b2), None);
        assert_eq!(book.get(1).connected, 1);
        assert_eq!(book.get(7), ClientTally::default());
    }
}
