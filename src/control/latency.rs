//! Latency figures as the admin side sees them: distributions (`Hist`),
//! per-second summaries and the per-pool views built from the engine's
//! histograms (`server::stats`), which records them.

use hdrhistogram::{Counter, Histogram};
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hist {
    pub count: u64,
    /// Exact sum of the recorded values (after clamping), µs.
    pub sum_us: u64,
    /// Smallest and largest recorded value (to 3 significant digits); 0 if empty.
    pub min_us: u64,
    pub max_us: u64,
    pub buckets: Vec<(u64, u64)>,
}

impl Hist {
    pub(crate) fn from_histogram<T: Counter>(h: &Histogram<T>, sum_us: u64) -> Hist {
        let count = h.len();
        if count == 0 {
            return Hist::default();
        }
        Hist {
            count,
            sum_us,
            min_us: h.min_nz(),
            max_us: h.max(),
            buckets: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value().as_u64()))
                .collect(),
        }
    }

    /// The union of several distributions recorded with the same layout.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Hist>) -> Hist {
        let mut out = Hist::default();
        for p in parts {
            if p.count == 0 {
                continue;
            }
            out.min_us = if out.count == 0 {
                p.min_us
            } else {
                out.min_us.min(p.min_us)
            };
            out.max_us = out.max_us.max(p.max_us);
            out.count += p.count;
            out.sum_us = out.sum_us.saturating_add(p.sum_us);
            out.buckets.extend_from_slice(&p.buckets);
        }
        out.buckets.sort_unstable_by_key(|b| b.0);
        out.buckets.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 += later.1;
                true
            } else {
                false
            }
        });
        out
    }

    /// The value at quantile `q` (0..=1), as HdrHistogram computes it: the
    /// highest value of the bucket holding the ceil(q * count)-th sample.
    /// 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if q <= 0.0 {
            return self.min_us;
        }
        let target = ((q.min(1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(value, n) in &self.buckets {
            seen += n;
            if seen >= target {
                return value;
            }
        }
        self.max_us
    }

    /// Samples at or below `us` (a Prometheus bucket's cumulative count).
    pub fn count_le(&self, us: u64) -> u64 {
        self.buckets
            .iter()
            .take_while(|b| b.0 <= us)
            .map(|b| b.1)
            .sum()
    }

    pub fn mean_us(&self) -> u64 {
        self.sum_us.checked_div(self.count).unwrap_or(0)
    }
}

/// One latency measure of one pool as a snapshot sees it.
#[derive(Clone, Debug, Default)]
pub struct LatencyStat {
    /// Everything since start.
    pub total: Hist,
    /// The second in progress.
    pub current: Hist,
    /// The complete seconds before it, oldest first (at most [`WINDOW_SECONDS`](crate::server::stats::WINDOW_SECONDS)).
    pub recent: Vec<Arc<Hist>>,
}

impl LatencyStat {
    /// The last `seconds` seconds: the second in progress plus up to
    /// `seconds` complete seconds before it.
    pub fn last(&self, seconds: usize) -> Hist {
        let skip = self.recent.len().saturating_sub(seconds);
        Hist::merge(
            std::iter::once(&self.current).chain(self.recent[skip..].iter().map(|h| h.as_ref())),
        )
    }
}

/// A second's worth of one measure, for graphs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecondLatency {
    pub count: u32,
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
}

impl SecondLatency {
    pub(crate) fn of(h: &Hist) -> SecondLatency {
        let clamp = |v: u64| v.min(u64::from(u32::MAX)) as u32;
        SecondLatency {
            count: clamp(h.count),
            p50_us: clamp(h.quantile(0.5)),
            p99_us: clamp(h.quantile(0.99)),
            max_us: clamp(h.max_us),
        }
    }
}

/// One complete second of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecondSummary {
    /// Deepest backlog seen during that second.
    pub backlog_max: u32,
    pub queue_wait: SecondLatency,
    pub service: SecondLatency,
    pub end_to_end: SecondLatency,
}

/// What a snapshot carries of one pool's measurements.
#[derive(Clone, Debug, Default)]
pub struct PoolLatency {
    /// Time a request waited in the backlog for a backend.
    pub queue_wait: LatencyStat,
    /// Command sent to the backend → its response complete.
    pub service: LatencyStat,
    /// Command read from the client → last byte of the answer written.
    pub end_to_end: LatencyStat,
    /// Deepest backlog over the last minute (as reported through
    /// [`Stats::backlog_depth`]).
    pub backlog_max_last_minute: usize,
    /// One entry per complete second, oldest first (at most
    /// [`HISTORY_SECONDS`](crate::server::stats::HISTORY_SECONDS)); the last one ended less than a second ago.
    pub history: Vec<SecondSummary>,
}

/// One row of the query-shape table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryStat {
    pub pool: usize,
    /// Normalized text: literals replaced by `?`, lists of them in
    /// parentheses by `?+`,
    /// comments removed, whitespace folded.
    pub shape: String,
    pub count: u64,
    pub errors: u64,
    /// Backend service time, µs.
    pub total_us: u64,
    pub max_us: u64,
}
