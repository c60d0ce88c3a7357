//! Latency histograms kept by the loop. Recording is a histogram increment:
//! no lock, no allocation.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency a histogram tracks (values above are clamped): 1 hour.
const MAX_MICROS: u64 = 3_600_000_000;

pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        // 3 significant digits, 1 µs to 1 h: fixed size, allocated once.
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist()));
        LatencyHistogram { hist }
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_MICROS);
        self.hist.saturating_record(us);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn percentile_us(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    pub fn max_us(&self) -> u64 {
        self.hist.max()
    }

    pub fn inner(&self) -> &Histogram<u64> {
        &self.hist
    }
}

fn unreachable_hist() -> Histogram<u64> {
    // new(3) with valid sigfig cannot fail; keep a panic-free fallback chain.
    Histogram::new(2).expect("hdrhistogram with 2 significant digits")
}

#[derive(Default)]
pub struct PoolStats {
    pub queue_wait: LatencyHistogram,
    pub service: LatencyHistogram,
}
