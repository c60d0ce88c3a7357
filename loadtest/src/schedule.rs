//! Pure timing math: the random number generator, think times, and the
//! open-loop send schedule.

use std::time::Duration;

use crate::config::ThinkDist;

/// wyrand: tiny, fast, good enough for picking ids and think times.
/// Deterministic for a given seed, so runs can be repeated.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xA076_1D64_78BD_642F);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xE703_7ED1_A0B4_28DB);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the tiny bias is
    /// irrelevant here). `n == 0` gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A think time with the given mean.
pub fn think_time(dist: ThinkDist, mean: Duration, rng: &mut Rng) -> Duration {
    if mean.is_zero() {
        return Duration::ZERO;
    }
    let m = mean.as_secs_f64();
    let secs = match dist {
        ThinkDist::Fixed => m,
        ThinkDist::Uniform => m * (0.5 + rng.unit()),
        // Inverse CDF; 1 - unit() is in (0, 1], so ln is finite. Capped at
        // 20x the mean so one draw cannot stall a client for the whole run.
        ThinkDist::Exp => (-(1.0 - rng.unit()).ln() * m).min(20.0 * m),
    };
    Duration::from_secs_f64(secs)
}

/// Open loop: when client `client` (of `clients`) sends its `k`-th query,
/// in nanoseconds after the schedule start, for `rate` queries per second
/// over all clients. Each client sends every `clients / rate` seconds, and
/// the clients are staggered by `1 / rate` so the whole fleet sends at an
/// even pace: the global sequence number of (client, k) is `k * clients +
/// client` and it is due at `seq / rate`.
pub fn slot_offset_ns(client: usize, k: u64, clients: usize, rate: f64) -> u64 {
    let seq = k as f64 * clients as f64 + client as f64;
    let ns = seq * 1e9 / rate;
    if ns >= u64::MAX as f64 {
        u64::MAX
    } else {
        ns as u64
    }
}

/// Open loop: the first slot index of `client` due at or after `offset_ns`
/// from the schedule start (the inverse of [`slot_offset_ns`]).
pub fn first_slot_at_or_after(client: usize, offset_ns: u64, clients: usize, rate: f64) -> u64 {
    let seq = offset_ns as f64 * rate / 1e9;
    let k = ((seq - client as f64) / clients as f64).ceil().max(0.0) as u64;
    // Floating point may land one off; settle it against the forward formula.
    let mut k = k.saturating_sub(1);
    while slot_offset_ns(client, k, clients, rate) < offset_ns {
        k += 1;
    }
    k
}

/// Open loop: the number of slots of `client` with `from_ns <= offset < to_ns`
/// starting at slot `k` (slots before `k` were already used).
pub fn slots_in(client: usize, k: u64, from_ns: u64, to_ns: u64, clients: usize, rate: f64) -> u64 {
    let start = k.max(first_slot_at_or_after(client, from_ns, clients, rate));
    let end = first_slot_at_or_after(client, to_ns, clients, rate);
    end.saturating_sub(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_evenly_staggered() {
        // 4 clients, 1000 q/s: every client sends every 4 ms, client i at
        // i ms into each 4 ms period: the fleet sends one query per ms.
        let ns = |c, k| slot_offset_ns(c, k, 4, 1000.0);
        assert_eq!(ns(0, 0), 0);
        assert_eq!(ns(1, 0), 1_000_000);
        assert_eq!(ns(3, 0), 3_000_000);
        assert_eq!(ns(0, 1), 4_000_000);
        assert_eq!(ns(2, 5), 22_000_000);
        let mut all: Vec<u64> = (0..4)
            .flat_map(|c| (0..10).map(move |k| ns(c, k)))
            .collect();
        all.sort_unstable();
        for (i, t) in all.iter().enumerate() {
            assert_eq!(*t, i as u64 * 1_000_000);
        }
        // More clients than queries per second: each client sends rarely.
        assert_eq!(slot_offset_ns(0, 1, 20_000, 1000.0), 20_000_000_000);
        assert_eq!(slot_offset_ns(19_999, 0, 20_000, 1000.0), 19_999_000_000);
        // Fractional rates.
        assert_eq!(slot_offset_ns(0, 1, 1, 0.5), 2_000_000_000);
    }

    #[test]
    fn slot_inverse() {
        for (clients, rate) in [
            (4usize, 1000.0f64),
            (7, 333.3),
            (1, 0.5),
            (20_000, 50_000.0),
        ] {
            for c in [0, clients / 2, clients - 1] {
                for k in [0u64, 1, 2, 17, 1000] {
                    let t = slot_offset_ns(c, k, clients, rate);
                    assert_eq!(first_slot_at_or_after(c, t, clients, rate), k);
                    assert_eq!(first_slot_at_or_after(c, t + 1, clients, rate), k + 1);
                }
            }
        }
        assert_eq!(first_slot_at_or_after(3, 0, 4, 1000.0), 0);
    }

    #[test]
    fn slots_in_window() {
        // Client 1 of 4 at 1000 q/s sends at 1, 5, 9, 13 ... ms.
        let ms = 1_000_000;
        assert_eq!(slots_in(1, 0, 0, 10 * ms, 4, 1000.0), 3);
        assert_eq!(slots_in(1, 0, 2 * ms, 10 * ms, 4, 1000.0), 2);
        assert_eq!(slots_in(1, 0, 5 * ms, 9 * ms, 4, 1000.0), 1);
        // Slots already used do not count.
        assert_eq!(slots_in(1, 2, 0, 10 * ms, 4, 1000.0), 1);
        assert_eq!(slots_in(1, 9, 0, 10 * ms, 4, 1000.0), 0);
        // Whole fleet over 1 s: exactly the rate.
        let total: u64 = (0..4)
            .map(|c| slots_in(c, 0, 0, 1000 * ms, 4, 1000.0))
            .sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn think_times() {
        let mut rng = Rng::new(7);
        let mean = Duration::from_millis(100);
        assert_eq!(think_time(ThinkDist::Fixed, mean, &mut rng), mean);
        assert_eq!(
            think_time(ThinkDist::Exp, Duration::ZERO, &mut rng),
            Duration::ZERO
        );
        let n = 20_000;
        for dist in [ThinkDist::Uniform, ThinkDist::Exp] {
            let mut sum = 0.0;
            for _ in 0..n {
                let t = think_time(dist, mean, &mut rng);
                if dist == ThinkDist::Uniform {
                    assert!(t >= mean / 2 && t <= mean * 3 / 2, "{t:?}");
                } else {
                    assert!(t <= mean * 20);
                }
                sum += t.as_secs_f64();
            }
            let avg = sum / n as f64;
            assert!((avg - 0.1).abs() < 0.005, "{dist:?} mean {avg}");
        }
    }

    #[test]
    fn rng_ranges() {
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = rng.below(10);
            seen[v as usize] += 1;
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(seen.iter().all(|&n| n > 800 && n < 1200), "{seen:?}");
        assert_eq!(rng.below(0), 0);
        // Same seed, same sequence.
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
    }
}
