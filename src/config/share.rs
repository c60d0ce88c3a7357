//! A loop's share of the configuration (`[funnel] threads`).
//!
//! Each event loop runs its own engine on its own share of the limits
//! that bound a pool or a server, so that the loops together hold exactly
//! what is configured and none of them needs a lock to decide:
//!
//! - a pool's `connections` (on each of its servers) are split across the
//!   loops, the total exactly as configured, two at least per loop: a pool
//!   with fewer than two per loop is served by fewer loops ("its loops"),
//!   one if it has fewer than four, and its clients are moved to one of
//!   them at login;
//! - its `backlog_size`, `max_pinned_backends` and per-user
//!   `max_client_connections` are split across its loops;
//! - a server's `max_concurrency`, a rule's `max_concurrency` and
//!   `rate_limit`, `cache_size`, `max_buffered_total` and
//!   `max_unlisted_connections` are split across all loops (`max_client_connections` and `max_prepared_stmt_count`
//!   are counted across loops instead: a single client may reach them).
//!
//! A limit is split as evenly as it divides, and a loop's share of a limit
//! that is set is never 0 (a share of 0 would mean "none" or "unlimited"
//! to the engine): a limit smaller than the number of loops that share it
//! allows one on each (documented in the README).
//!
//! Which loops serve a pool, and which of them get the remainders, turns
//! with a hash of the user's name, so that small pools spread over the
//! loops; every loop computes the same answer from the same file.

use super::{Config, RuleConfig};

/// One loop out of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopShare {
    pub index: usize,
    pub count: usize,
}

impl LoopShare {
    /// The only loop (`threads = 1`).
    pub const ALONE: LoopShare = LoopShare { index: 0, count: 1 };

    /// This loop's place among the loops, counted from the first loop of
    /// the user's rotation.
    fn position(&self, user: &str) -> usize {
        (self.index + self.count - rotation(user, self.count)) % self.count
    }

    /// How many loops serve a pool of `connections` connections (per
    /// server): each gets two at least, so that one pinned client
    /// (`max_pinned_backends = 0` pins out of `connections`) or one long
    /// statement never holds a loop's whole share.
    pub fn pool_loop_count(&self, connections: usize) -> usize {
        (connections / MIN_CONNECTIONS_PER_LOOP).clamp(1, self.count)
    }

    /// The loops that serve a pool of `connections` connections.
    pub fn pool_loops(&self, user: &str, connections: usize) -> Vec<usize> {
        let first = rotation(user, self.count);
        let n = self.pool_loop_count(connections);
        (0..n).map(|pos| (first + pos) % self.count).collect()
    }
}

/// The fewest connections of a pool a loop serving it gets (unless the
/// pool has fewer).
const MIN_CONNECTIONS_PER_LOOP: usize = 2;

/// Where a user's rotation starts: FNV-1a of its name.
fn rotation(user: &str, count: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % count.max(1) as u64) as usize
}

/// Part `pos` of `total` split into `parts` parts as evenly as it divides
/// (the first `total % parts` parts get one more).
fn exact_share(total: usize, pos: usize, parts: usize) -> usize {
    total / parts + usize::from(pos < total % parts)
}

/// As `exact_share`, but a limit that is set (not 0) gives every part at
/// least 1.
fn limit_share(total: usize, pos: usize, parts: usize) -> usize {
    if total == 0 {
        0
    } else {
        exact_share(total, pos, parts).max(1)
    }
}

/// A rule's limits split across `parts` loops (this one is `pos`).
fn rule_share(rule: &mut RuleConfig, pos: usize, parts: usize) {
    if let Some(m) = rule.max_concurrency.as_mut() {
        *m = limit_share(*m, pos, parts);
    }
    if let Some((rate, burst)) = rule.rate.as_mut() {
        *rate = limit_share(*rate, pos, parts);
        *burst = limit_share(*burst, pos, parts);
    }
}

impl Config {
    /// The number of event loops to run (`threads`; 0: one per CPU).
    pub fn loop_count(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(64),
            n => n,
        }
    }

    /// The configuration one loop runs with (see the module comment). The
    /// whole of it for a single loop.
    pub fn for_loop(&self, share: LoopShare) -> Config {
        let mut c = self.clone();
        if share.count <= 1 {
            return c;
        }
        let (i, n) = (share.index, share.count);
        for u in &mut c.users {
            let loops = share.pool_loop_count(u.connections);
            let pos = share.position(&u.name);
            if pos < loops {
                u.connections = exact_share(u.connections, pos, loops);
                u.backlog_size = limit_share(u.backlog_size, pos, loops);
                u.max_pinned_backends = limit_share(u.max_pinned_backends, pos, loops);
                u.max_client_connections = limit_share(u.max_client_connections, pos, loops);
            } else {
                // Not one of its loops: its clients are moved away at login
                // (or at their next command after a reload) and never run a
                // command here; none of its limits is this loop's.
                u.connections = 0;
                u.backlog_size = 0;
                u.max_pinned_backends = 0;
            }
        }
        c.backend.max_concurrency = limit_share(c.backend.max_concurrency, i, n);
        for s in &mut c.servers {
            if let Some(m) = s.max_concurrency.as_mut() {
                *m = limit_share(*m, i, n);
            }
        }
        let users = &self.users;
        for r in c
            .rules
            .rules
            .iter_mut()
            .chain(c.rules.user_limits.iter_mut())
        {
            // A rule of one user's statements: split across that user's
            // loops (the others never run them).
            match r
                .user
                .as_deref()
                .and_then(|name| users.iter().find(|u| u.name == name))
            {
                Some(u) => {
                    let loops = share.pool_loop_count(u.connections);
                    let pos = share.position(&u.name);
                    if pos < loops {
                        rule_share(r, pos, loops);
                    }
                }
                None => rule_share(r, i, n),
            }
        }
        c.rules.cache_size = exact_share(c.rules.cache_size, i, n);
        c.max_buffered_total = limit_share(c.max_buffered_total, i, n);
        // Relayed logins stay in the loop that accepted them.
        c.max_unlisted_connections = limit_share(c.max_unlisted_connections, i, n);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_configured_limits() {
        for total in 0..20 {
            for parts in 1..6 {
                let sum: usize = (0..parts).map(|p| exact_share(total, p, parts)).sum();
                assert_eq!(sum, total);
                let sum: usize = (0..parts).map(|p| limit_share(total, p, parts)).sum();
                assert_eq!(sum, if total == 0 { 0 } else { total.max(parts) });
            }
        }
    }

    #[test]
    fn a_small_pool_is_served_by_as_many_loops_as_it_has_connections() {
        for count in 1..6 {
            for connections in 1..8 {
                for user in ["app", "web", "reports", "x"] {
                    let loops = LoopShare { index: 0, count }.pool_loops(user, connections);
                    assert_eq!(loops.len(), (connections / 2).clamp(1, count));
                    let serving: Vec<usize> = (0..count)
                        .filter(|&index| {
                            let s = LoopShare { index, count };
                            s.position(user) < s.pool_loop_count(connections)
                        })
                        .collect();
                    let mut sorted = loops.clone();
                    sorted.sort_unstable();
                    assert_eq!(serving, sorted, "{user} {connections} of {count}");
                    let total: usize = (0..count)
                        .map(|index| {
                            let s = LoopShare { index, count };
                            if s.position(user) < s.pool_loop_count(connections) {
                                let share = exact_share(connections, s.position(user), loops.len());
                                assert!(share >= 2.min(connections));
                                share
                            } else {
                                0
                            }
                        })
                        .sum();
                    assert_eq!(total, connections);
                }
            }
        }
    }
}
