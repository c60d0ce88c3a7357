//! Failed logins, per client address and per user: after
//! `auth_failure_threshold` consecutive failures, each further login attempt
//! from that address or for that user is held before it is checked, one
//! attempt at a time, for a delay that doubles with each failure (up to
//! `auth_failure_max_delay_ms`). Guessing passwords in parallel connections
//! does not help: every held attempt reserves the next slot. A successful
//! login ends the hold for its address and its user; failures are
//! forgotten [`FORGET_AFTER`] after the last one.
//!
//! An address that logged in as a user in the last [`TRUST_FOR`] is not
//! held for that user's failures elsewhere (only for its own address's):
//! someone guessing a user's password from other hosts cannot lock that
//! user's applications out.
//!
//! The hold never blocks the event loop: the caller parks the login and
//! sets a timer for the instant [`AuthThrottle::admit`] returns.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures older than this (counted from the last one) are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Bound on the addresses (and on the users) tracked; past it, new ones are
/// not tracked until the janitor forgets old ones. Unknown user names all
/// share one entry, so only addresses can be many.
pub const MAX_ENTRIES: usize = 100_000;
/// How long a successful login keeps its address trusted for its user.
pub const TRUST_FOR: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub threshold: u32,
    pub delay: Duration,
    pub max_delay: Duration,
}

impl Limits {
    /// The hold for an attempt after `failures` consecutive failures.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if self.delay.is_zero() || failures < self.threshold {
            return Duration::ZERO;
        }
        let doublings = (failures - self.threshold).min(20);
        self.delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    /// The next attempt may not be checked before this.
    next_check: Instant,
}

/// The key of a client address: IPv4 as is, IPv6 by its /64 (one host
/// commonly has a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrKey {
    V4(u32),
    V6(u64),
}

impl AddrKey {
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(u32::from(v4)),
                None => AddrKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Default)]
pub struct AuthThrottle {
    by_addr: HashMap<AddrKey, Entry>,
    by_user: HashMap<String, Entry>,
    /// (address, user) pairs with a successful login, and when.
    trusted: HashMap<(AddrKey, String), Instant>,
}

impl AuthThrottle {
    /// Consecutive failures recorded for the address and for the user.
    pub fn failures(&self, addr: Option<AddrKey>, user: &str) -> (u32, u32) {
        (
            addr.and_then(|a| self.by_addr.get(&a))
                .map_or(0, |e| e.failures),
            self.by_user.get(user).map_or(0, |e| e.failures),
        )
    }

    /// When an attempt arriving `now` may be checked: `None` for at once,
    /// or the instant it is held until. The slot is reserved: the next
    /// attempt waits one more delay after it. An attempt that would be
    /// checked after `deadline` reserves nothing (it is refused).
    pub fn admit(
        &mut self,
        addr: Option<AddrKey>,
        user: &str,
        now: Instant,
        deadline: Instant,
        limits: &Limits,
    ) -> Admit {
        let mut at = now;
        let a = addr.and_then(|a| self.by_addr.get(&a)).copied();
        let trusted = addr.is_some_and(|a| self.trusted.contains_key(&(a, user.to_string())));
        let u = if trusted {
            None
        } else {
            self.by_user.get(user).copied()
        };
        for e in [a, u].into_iter().flatten() {
            if !limits.delay_after(e.failures).is_zero() {
                at = at.max(e.next_check);
            }
        }
        if at > deadline {
            return Admit::Refuse;
        }
        if let Some(e) = addr.and_then(|a| self.by_addr.get_mut(&a)) {
            let d = limits.delay_after(e.failures);
            if !d.is_zero() {
                e.next_check = at + d;
            }
        }
        if let Some(e) = self.by_user.get_mut(user).filter(|_| !trusted) {
            let d = limits.delay_after(e.failures);
            if !d.is_zero() {
                e.next_check = at + d;
            }
        }
        if at > now {
            Admit::HoldUntil(at)
        } else {
            Admit::Now
        }
    }

    /// A failed login: one more failure for the address and the user.
    pub fn failed(&mut self, addr: Option<AddrKey>, user: &str, now: Instant, limits: &Limits) {
        let bump = |e: &mut Entry| {
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            e.next_check = e.next_check.max(now + limits.delay_after(e.failures));
        };
        let fresh = Entry {
            failures: 0,
            last_failure: now,
            next_check: now,
        };
        if let Some(a) = addr {
            if let Some(e) = self.by_addr.get_mut(&a) {
                bump(e);
            } else if self.by_addr.len() < MAX_ENTRIES {
                let mut e = fresh;
                bump(&mut e);
                self.by_addr.insert(a, e);
            }
        }
        if let Some(e) = self.by_user.get_mut(user) {
            bump(e);
        } else if self.by_user.len() < MAX_ENTRIES {
            let mut e = fresh;
            bump(&mut e);
            self.by_user.insert(user.to_string(), e);
        }
    }

    /// A successful login ends the hold for its address and its user.
    /// The user's failures end only for a login that was held for them
    /// (not from a trusted address, whose logins would otherwise wipe the
    /// count of someone guessing from elsewhere).
    pub fn succeeded(&mut self, addr: Option<AddrKey>, user: &str, now: Instant) {
        let key = addr.map(|a| (a, user.to_string()));
        let was_trusted = key.as_ref().is_some_and(|k| self.trusted.contains_key(k));
        if !was_trusted && !self.by_user.is_empty() {
            self.by_user.remove(user);
        }
        if let (Some(a), Some(k)) = (addr, key) {
            self.by_addr.remove(&a);
            if was_trusted || self.trusted.len() < MAX_ENTRIES {
                self.trusted.insert(k, now);
            }
        }
    }

    /// Forget failures older than [`FORGET_AFTER`].
    pub fn sweep(&mut self, now: Instant) {
        let keep = |e: &mut Entry| now.saturating_duration_since(e.last_failure) < FORGET_AFTER;
        self.by_addr.retain(|_, e| keep(e));
        self.by_user.retain(|_, e| keep(e));
        self.trusted
            .retain(|_, at| now.saturating_duration_since(*at) < TRUST_FOR);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Now,
    HoldUntil(Instant),
    /// Not checkable before the login's deadline.
    Refuse,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        threshold: 3,
        delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
    };

    #[test]
    fn delay_doubles_past_the_threshold_up_to_the_maximum() {
        let d = |n| LIMITS.delay_after(n).as_millis();
        assert_eq!(
            [d(0), d(2), d(3), d(4), d(5), d(7), d(100)],
            [0, 0, 100, 200, 400, 1000, 1000]
        );
        let off = Limits {
            delay: Duration::ZERO,
            ..LIMITS
        };
        assert!(off.delay_after(50).is_zero());
    }

    #[test]
    fn parallel_attempts_are_spaced_and_success_ends_the_hold() {
        let mut t = AuthThrottle::default();
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let ip = Some(AddrKey::of("10.0.0.1".parse().unwrap()));
        for _ in 0..3 {
            assert_eq!(t.admit(ip, "u", t0, far, &LIMITS), Admit::Now);
            t.failed(ip, "u", t0, &LIMITS);
        }
        // Three attempts at once: held 100 ms apart.
        let ms = Duration::from_millis;
        assert_eq!(
            t.admit(ip, "u", t0, far, &LIMITS),
            Admit::HoldUntil(t0 + ms(100))
        );
        assert_eq!(
            t.admit(ip, "u", t0, far, &LIMITS),
            Admit::HoldUntil(t0 + ms(200))
        );
        // Another user from the same address is held too; a third user
        // from another address is not.
        assert_eq!(
            t.admit(ip, "v", t0, far, &LIMITS),
            Admit::HoldUntil(t0 + ms(300))
        );
        let other = Some(AddrKey::of("10.0.0.2".parse().unwrap()));
        assert_eq!(t.admit(other, "w", t0, far, &LIMITS), Admit::Now);
        // The user is held from any address.
        assert_eq!(
            t.admit(other, "u", t0, far, &LIMITS),
            Admit::HoldUntil(t0 + ms(300))
        );
        // Past the deadline: refused, nothing reserved.
        assert_eq!(t.admit(ip, "u", t0, t0 + ms(350), &LIMITS), Admit::Refuse);
        t.succeeded(ip, "u", t0);
        assert_eq!(t.admit(ip, "u", t0, far, &LIMITS), Admit::Now);
        assert_eq!(t.failures(ip, "u"), (0, 0));
    }

    #[test]
    fn failures_elsewhere_do_not_hold_a_trusted_address() {
        let mut t = AuthThrottle::default();
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let app = Some(AddrKey::of("10.0.0.1".parse().unwrap()));
        let attacker = Some(AddrKey::of("10.9.9.9".parse().unwrap()));
        t.succeeded(app, "u", t0);
        for _ in 0..10 {
            t.failed(attacker, "u", t0, &LIMITS);
        }
        assert_eq!(t.admit(app, "u", t0, far, &LIMITS), Admit::Now);
        t.succeeded(app, "u", t0);
        assert_eq!(
            t.failures(attacker, "u"),
            (10, 10),
            "a trusted login keeps the count"
        );
        // Others are held for the user, and so is the attacker.
        let other = Some(AddrKey::of("10.0.0.2".parse().unwrap()));
        assert!(matches!(
            t.admit(other, "u", t0, far, &LIMITS),
            Admit::HoldUntil(_)
        ));
        assert!(matches!(
            t.admit(attacker, "v", t0, far, &LIMITS),
            Admit::HoldUntil(_)
        ));
        // The trust ends TRUST_FOR after the login.
        let t1 = t0 + TRUST_FOR;
        t.sweep(t1);
        for _ in 0..10 {
            t.failed(attacker, "u", t1, &LIMITS);
        }
        assert!(matches!(
            t.admit(app, "u", t1, far + TRUST_FOR, &LIMITS),
            Admit::HoldUntil(_)
        ));
    }

    #[test]
    fn ipv6_by_prefix_and_failures_are_forgotten() {
        let a = AddrKey::of("2001:db8::1".parse().unwrap());
        let b = AddrKey::of("2001:db8::ffff:1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, AddrKey::of("2001:db9::1".parse().unwrap()));
        let mut t = AuthThrottle::default();
        let t0 = Instant::now();
        t.failed(Some(a), "u", t0, &LIMITS);
        assert_eq!(t.failures(Some(b), "u"), (1, 1));
        t.sweep(t0 + FORGET_AFTER);
        assert_eq!(t.failures(Some(a), "u"), (0, 0));
    }
}
