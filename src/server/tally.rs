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

/// Where a client is counted in its pool's tally.
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

/// Every pool's tally, by pool index: shared by the engine (which reads
/// it) and its clients (which keep their share of it right).
#[derive(Clone, Default)]
pub struct TallyBook(Rc<RefCell<Vec<ClientTally>>>);

impl TallyBook {
    /// Move a client's share from `old` to `new` (either may be none: a
    /// client arriving or leaving).
    pub fn apply(&self, old: Option<Counted>, new: Option<Counted>) {
        if old == new {
            return;
        }
        let mut book = self.0.borrow_mut();
        match (old, new) {
            // The common move (a state or pin change in the same pool):
            // only what differs.
            (Some(o), Some(n)) if o.pool == n.pool => tally_at(&mut book, n.pool).shift(&o, &n),
            _ => {
                if let Some(o) = old {
                    tally_at(&mut book, o.pool).count(&o, false);
                }
                if let Some(n) = new {
                    tally_at(&mut book, n.pool).count(&n, true);
                }
            }
        }
    }

    /// Pool `pool`'s tally (all zero for one no client has counted in yet).
    pub fn get(&self, pool: usize) -> ClientTally {
        self.0.borrow().get(pool).cloned().unwrap_or_default()
    }

    /// Clients still logging in, in every pool.
    pub fn handshaking(&self) -> usize {
        self.0.borrow().iter().map(|t| t.handshaking).sum()
    }

    /// The tallies a walk over `shares` gives, for checks against the book.
    pub fn walk(shares: impl Iterator<Item = Counted>) -> Vec<ClientTally> {
        let mut book = Vec::new();
        for c in shares {
            tally_at(&mut book, c.pool).count(&c, true);
        }
        book
    }

    /// The book's tallies, up to `pools` pools (those past its end zero).
    pub fn all(&self, pools: usize) -> Vec<ClientTally> {
        (0..pools).map(|p| self.get(p)).collect()
    }
}

fn tally_at(book: &mut Vec<ClientTally>, pool: usize) -> &mut ClientTally {
    if book.len() <= pool {
        book.resize(pool + 1, ClientTally::default());
    }
    &mut book[pool]
}

impl ClientTally {
    fn count(&mut self, c: &Counted, add: bool) {
        let step = |n: &mut usize, by: usize| {
            if add {
                *n += by;
            } else {
                debug_assert!(*n >= by, "a client tally went below zero");
                *n = n.saturating_sub(by);
            }
        };
        if c.state == TallyState::Handshaking {
            step(&mut self.handshaking, 1);
            return;
        }
        step(&mut self.connected, 1);
        match c.state {
            TallyState::Idle => step(&mut self.idle, 1),
            TallyState::Queued => step(&mut self.queued, 1),
            TallyState::Running => step(&mut self.running, 1),
            TallyState::Handshaking | TallyState::Other => {}
        }
        if let Some(cause) = c.pin {
            // `ALL` is in declaration order: a cause's index is its value.
            step(&mut self.pinned[cause as usize], 1);
        }
        step(&mut self.buffered_bytes, c.buffered);
        step(&mut self.prepared_stmts, c.stmts);
    }

    /// Move a client of this pool from `o` to `n`.
    fn shift(&mut self, o: &Counted, n: &Counted) {
        let handshaking = TallyState::Handshaking;
        if (o.state == handshaking) != (n.state == handshaking) {
            self.count(o, false);
            self.count(n, true);
            return;
        }
        if o.state == handshaking {
            // Nothing else of a client logging in is counted.
            return;
        }
        if o.state != n.state {
            if let Some(s) = self.slot(o.state) {
                *s = s.saturating_sub(1);
            }
            if let Some(s) = self.slot(n.state) {
                *s += 1;
            }
        }
        if o.pin != n.pin {
            if let Some(cause) = o.pin {
                let s = &mut self.pinned[cause as usize];
                *s = s.saturating_sub(1);
            }
            if let Some(cause) = n.pin {
                self.pinned[cause as usize] += 1;
            }
        }
        self.buffered_bytes = (self.buffered_bytes + n.buffered).saturating_sub(o.buffered);
        self.prepared_stmts = (self.prepared_stmts + n.stmts).saturating_sub(o.stmts);
    }

    fn slot(&mut self, state: TallyState) -> Option<&mut usize> {
        match state {
            TallyState::Idle => Some(&mut self.idle),
            TallyState::Queued => Some(&mut self.queued),
            TallyState::Running => Some(&mut self.running),
            TallyState::Handshaking | TallyState::Other => None,
        }
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
