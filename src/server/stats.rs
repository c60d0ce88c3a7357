//! Measurements kept by the event loop: latency histograms per pool, backlog
//! depth per second, and a bounded table of query shapes.
//!
//! Recording is cheap enough for every request: a histogram increment and a
//! few additions, no lock, no allocation (except a pool's first sample, which
//! allocates its histograms, and a query shape seen for the first time).
//! The admin thread never touches these: it gets a [`PoolLatency`] (sparse
//! copies, shared immutable slots) and a [`QueryStat`] list inside a snapshot.
//!
//! Latencies are in µs with 3 significant digits (HdrHistogram, 1 µs .. 1 h,
//! larger values clamped). Each measure keeps:
//! * a histogram since start (u64 counts);
//! * the second in progress (u32 counts), turned into a sparse list of
//!   non-empty buckets once per second by [`Stats::tick`] and kept for
//!   [`WINDOW_SECONDS`]: "the last N seconds" is the merge of the second in
//!   progress and the N complete seconds before it (so it spans N to N+1 s);
//! * a per-second summary (count, p50, p99, max) for [`HISTORY_SECONDS`],
//!   which the live page plots.
//!
//! Memory per pool that has seen traffic: about 0.9 MB of histograms plus
//! the sparse seconds (typically a few KB each, at most 60 per measure).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::{Counter, Histogram};

pub use crate::control::latency::{
    Hist, LatencyStat, PoolLatency, QueryStat, SecondLatency, SecondSummary,
};

/// Highest latency a histogram tracks (values above are clamped): 1 hour.
pub const MAX_MICROS: u64 = 3_600_000_000;
/// Complete seconds kept as sparse histograms for the sliding windows.
pub const WINDOW_SECONDS: usize = 60;
/// Per-second summaries kept for graphs (15 minutes).
pub const HISTORY_SECONDS: usize = 900;
/// Query shapes tracked at once (top by total time; see [`Stats::query_shape`]).
pub const MAX_QUERY_SHAPES: usize = 1000;
/// Longest normalized query text kept; longer shapes end with "...".
pub const MAX_SHAPE_LEN: usize = 1024;
/// Bytes of a query looked at for its shape.
const MAX_SHAPE_SCAN: usize = 64 * 1024;
const SECOND: Duration = Duration::from_secs(1);

fn new_histogram<T: Counter>() -> Histogram<T> {
    // 3 significant digits from 1 µs to 1 h; the bounds are valid constants,
    // so this cannot fail, but fall back rather than panic.
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .or_else(|_| Histogram::new(3))
        .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!()))
}

fn micros(d: Duration) -> u64 {
    (d.as_micros().min(u128::from(MAX_MICROS)) as u64).max(1)
}

/// A latency distribution as its non-empty HdrHistogram buckets: each
/// bucket is (highest value it stands for in µs, count), by ascending value.
/// This is what snapshots carry; quantiles and Prometheus bucket counts are
/// computed from it on the admin side.
/// One latency measure as the loop records it.
#[derive(Default)]
struct Recorder {
    total: Option<Box<Histogram<u64>>>,
    total_sum: u64,
    current: Option<Box<Histogram<u32>>>,
    current_sum: u64,
    recent: VecDeque<Arc<Hist>>,
}

impl Recorder {
    /// One sample: recorded once, in the second in progress; `rotate`
    /// folds each second into the total.
    fn record(&mut self, us: u64) {
        // Allocated on the pool's first sample, then reused for ever.
        let current = self
            .current
            .get_or_insert_with(|| Box::new(new_histogram()));
        current.saturating_record(us);
        self.current_sum = self.current_sum.saturating_add(us);
    }

    /// Close the second in progress (folding it into the total); returns
    /// its summary.
    fn rotate(&mut self, empty: &Arc<Hist>) -> SecondLatency {
        let slot = match self.current.as_deref_mut() {
            Some(h) if !h.is_empty() => {
                let hist = Hist::from_histogram(h, self.current_sum);
                let total = self.total.get_or_insert_with(|| Box::new(new_histogram()));
                for &(value, count) in &hist.buckets {
                    // Bucket values are recorded values' equivalents: the
                    // total gets the same buckets.
                    let _ = total.record_n(value, count);
                }
                self.total_sum = self.total_sum.saturating_add(self.current_sum);
                h.reset();
                Arc::new(hist)
            }
            _ => Arc::clone(empty),
        };
        self.current_sum = 0;
        if self.recent.len() >= WINDOW_SECONDS {
            self.recent.pop_front();
        }
        let summary = SecondLatency::of(&slot);
        self.recent.push_back(slot);
        summary
    }

    fn view(&self) -> LatencyStat {
        let folded = self
            .total
            .as_deref()
            .map(|h| Hist::from_histogram(h, self.total_sum))
            .unwrap_or_default();
        let current = self
            .current
            .as_deref()
            .map(|h| Hist::from_histogram(h, self.current_sum))
            .unwrap_or_default();
        LatencyStat {
            // Everything since start: the folded seconds and this one.
            total: Hist::merge([&folded, &current]),
            current,
            recent: self.recent.iter().cloned().collect(),
        }
    }
}

#[derive(Default)]
struct PoolStats {
    queue_wait: Recorder,
    service: Recorder,
    end_to_end: Recorder,
    /// Depth last reported, and the deepest during the second in progress.
    backlog_now: u32,
    backlog_second_max: u32,
    history: VecDeque<SecondSummary>,
}

impl PoolStats {
    fn rotate(&mut self, empty: &Arc<Hist>) {
        let summary = SecondSummary {
            backlog_max: self.backlog_second_max,
            queue_wait: self.queue_wait.rotate(empty),
            service: self.service.rotate(empty),
            end_to_end: self.end_to_end.rotate(empty),
        };
        // A backlog that stays deep without new arrivals still counts.
        self.backlog_second_max = self.backlog_now;
        if self.history.len() >= HISTORY_SECONDS {
            self.history.pop_front();
        }
        self.history.push_back(summary);
    }

    fn backlog_max_last_minute(&self) -> usize {
        let recent = self
            .history
            .iter()
            .rev()
            .take(WINDOW_SECONDS)
            .map(|s| s.backlog_max)
            .max()
            .unwrap_or(0);
        recent.max(self.backlog_second_max) as usize
    }
}

pub struct Stats {
    pools: Vec<PoolStats>,
    /// Service time per backend server (engine index), grown on demand.
    servers: Vec<Recorder>,
    shapes: ShapeTable,
    /// When the second in progress ends (set by the first tick).
    next_second: Option<Instant>,
    /// Shared by every second without samples.
    empty: Arc<Hist>,
}

impl Stats {
    pub fn new(pools: usize) -> Self {
        Stats {
            pools: (0..pools).map(|_| PoolStats::default()).collect(),
            servers: Vec::new(),
            shapes: ShapeTable::new(),
            next_second: None,
            empty: Arc::new(Hist::default()),
        }
    }

    /// A pool added by a reload.
    pub fn add_pool(&mut self) {
        self.pools.push(PoolStats::default());
    }

    pub fn queue_wait(&mut self, pool: usize, d: Duration, _now: Instant) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.queue_wait.record(micros(d));
        }
    }

    pub fn service(&mut self, pool: usize, d: Duration, _now: Instant) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.service.record(micros(d));
        }
    }

    /// A command's service time on backend server `server`.
    pub fn server_service(&mut self, server: usize, d: Duration) {
        if self.servers.len() <= server {
            self.servers.resize_with(server + 1, Recorder::default);
        }
        self.servers[server].record(micros(d));
    }

    /// Service time on one server (empty before its first command).
    pub fn server_latency(&self, server: usize) -> LatencyStat {
        self.servers
            .get(server)
            .map(Recorder::view)
            .unwrap_or_else(|| Recorder::default().view())
    }

    pub fn end_to_end(&mut self, pool: usize, d: Duration, _now: Instant) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.end_to_end.record(micros(d));
        }
    }

    /// The backlog of `pool` is now `depth` deep. Feeds the per-second
    /// maxima ("backlog max over the last minute" and the graphs): call it
    /// after a request is queued, and once per loop pass per pool so that a
    /// drained backlog is seen too. Cheap: two compares.
    pub fn backlog_depth(&mut self, pool: usize, depth: usize, _now: Instant) {
        if let Some(p) = self.pools.get_mut(pool) {
            let depth = depth.min(u32::MAX as usize) as u32;
            p.backlog_now = depth;
            p.backlog_second_max = p.backlog_second_max.max(depth);
        }
    }

    /// The shape id of a query about to be sent (its text normalized, with
    /// literals replaced), for [`Stats::query_done`]. 0 means "not tracked".
    /// Allocates only when a shape is seen for the first time.
    pub fn query_shape(&mut self, pool: usize, sql: &[u8]) -> u32 {
        self.shapes.lookup(pool, sql)
    }

    /// [`Stats::query_shape`] for a query whose shape's hash the statement
    /// scan found (`Some`, see [`ShapeWriter`]): its text is normalized
    /// again only when the shape is not in the table.
    pub fn query_shape_hashed(&mut self, pool: usize, hash: Option<u64>, sql: &[u8]) -> u32 {
        match hash {
            Some(h) => self.shapes.lookup_hashed(pool, h, sql),
            None => self.shapes.lookup(pool, sql),
        }
    }

    /// The buffer a [`ShapeWriter`] writes a shape into (its contents are
    /// not kept: the table reuses it).
    pub fn shape_buf(&mut self) -> &mut Vec<u8> {
        &mut self.shapes.buf
    }

    /// A query of this shape finished after `d` (service time), failed or not.
    pub fn query_done(&mut self, pool: usize, shape: u32, d: Duration, error: bool) {
        self.shapes.done(pool, shape, micros(d), error);
    }

    /// Called once per loop pass: closes the second in progress when it is
    /// over (the loop wakes at least once a second).
    pub fn tick(&mut self, now: Instant) {
        let Some(next) = self.next_second else {
            self.next_second = Some(now + SECOND);
            return;
        };
        if now < next {
            return;
        }
        let mut next = next;
        let mut rotations = 0;
        while now >= next && rotations <= HISTORY_SECONDS {
            for p in &mut self.pools {
                p.rotate(&self.empty);
            }
            for r in &mut self.servers {
                r.rotate(&self.empty);
            }
            next += SECOND;
            rotations += 1;
        }
        if now >= next {
            next = now + SECOND;
        }
        self.next_second = Some(next);
    }

    pub fn pool_latency(&self, pool: usize) -> PoolLatency {
        let Some(p) = self.pools.get(pool) else {
            return PoolLatency::default();
        };
        PoolLatency {
            queue_wait: p.queue_wait.view(),
            service: p.service.view(),
            end_to_end: p.end_to_end.view(),
            backlog_max_last_minute: p.backlog_max_last_minute(),
            history: p.history.iter().copied().collect(),
        }
    }

    /// The query-shape table, most total time first.
    pub fn query_table(&self) -> Vec<QueryStat> {
        self.shapes.table()
    }
}

// ---------------------------------------------------------------------------
// Query shapes

/// The keys are already hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b) ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A 64-bit hash of a shape's text, eight bytes at a time.
fn text_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mix = |h: u64, w: u64| {
        let h = (h ^ w).wrapping_mul(K);
        h ^ (h >> 29)
    };
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h, u64::from_le_bytes(w));
    }
    let mut w = [0u8; 8];
    let rest = chunks.remainder();
    w[..rest.len()].copy_from_slice(rest);
    h = mix(h, u64::from_le_bytes(w));
    (h ^ (h >> 32)).wrapping_mul(K)
}

/// The table's key of a shape (its text's hash) in a pool.
fn shape_key(hash: u64, pool: usize) -> u64 {
    hash ^ (pool as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The hash of a normalized query text, as [`ShapeWriter::finish`] gives it:
/// 0 for an empty text (no shape; a text whose hash is 0 is not tracked
/// either).
pub fn shape_hash(text: &[u8]) -> u64 {
    if text.is_empty() {
        0
    } else {
        text_hash(text)
    }
}

/// Low bits of a shape id: entry index + 1 (so 0 is never an id).
const SHAPE_INDEX_BITS: u32 = 11;
const SHAPE_INDEX_MASK: u32 = (1 << SHAPE_INDEX_BITS) - 1;
const _: () = assert!(MAX_QUERY_SHAPES < SHAPE_INDEX_MASK as usize);

struct ShapeEntry {
    id: u32,
    pool: usize,
    key: u64,
    text: Vec<u8>,
    count: u64,
    errors: u64,
    total_us: u64,
    max_us: u64,
}

struct ShapeTable {
    entries: Vec<ShapeEntry>,
    index: HashMap<u64, usize, BuildHasherDefault<IdentityHasher>>,
    /// Reused for every normalization.
    buf: Vec<u8>,
    generation: u32,
}

impl ShapeTable {
    fn new() -> Self {
        let mut index = HashMap::default();
        index.reserve(MAX_QUERY_SHAPES);
        ShapeTable {
            entries: Vec::new(),
            index,
            buf: Vec::with_capacity(MAX_SHAPE_LEN + 8),
            generation: 0,
        }
    }

    fn lookup(&mut self, pool: usize, sql: &[u8]) -> u32 {
        normalize_query(sql, &mut self.buf);
        if self.buf.is_empty() {
            return 0;
        }
        let key = shape_key(text_hash(&self.buf), pool);
        if let Some(&i) = self.index.get(&key) {
            let e = &self.entries[i];
            // A hash collision between two shapes: leave the newcomer out.
            return if e.pool == pool && e.text == self.buf {
                e.id
            } else {
                0
            };
        }
        self.generation = self.generation.wrapping_add(1) & (u32::MAX >> SHAPE_INDEX_BITS);
        let i = if self.entries.len() < MAX_QUERY_SHAPES {
            self.entries.push(ShapeEntry {
                id: 0,
                pool,
                key,
                text: Vec::new(),
                count: 0,
                errors: 0,
                total_us: 0,
                max_us: 0,
            });
            self.entries.len() - 1
        } else {
            // Full: the least costly shape makes room.
            let Some(i) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].total_us) else {
                return 0;
            };
            let old = self.entries[i].key;
            self.index.remove(&old);
            i
        };
        let id = (self.generation << SHAPE_INDEX_BITS) | (i as u32 + 1);
        let e = &mut self.entries[i];
        e.id = id;
        e.pool = pool;
        e.key = key;
        e.text.clear();
        e.text.extend_from_slice(&self.buf);
        e.count = 0;
        e.errors = 0;
        e.total_us = 0;
        e.max_us = 0;
        self.index.insert(key, i);
        id
    }

    /// [`ShapeTable::lookup`] of a query whose shape's [`shape_hash`] is
    /// known: the text is built only for a shape not in the table. A hit
    /// trusts the 64-bit hash (two shapes that collide count as one).
    fn lookup_hashed(&mut self, pool: usize, hash: u64, sql: &[u8]) -> u32 {
        if hash == 0 {
            return 0;
        }
        if let Some(&i) = self.index.get(&shape_key(hash, pool)) {
            let e = &self.entries[i];
            return if e.pool == pool { e.id } else { 0 };
        }
        let id = self.lookup(pool, sql);
        debug_assert_eq!(
            shape_hash(&self.buf),
            hash,
            "{:?}",
            String::from_utf8_lossy(sql)
        );
        id
    }

    fn done(&mut self, pool: usize, id: u32, us: u64, error: bool) {
        let i = (id & SHAPE_INDEX_MASK) as usize;
        if i == 0 {
            return;
        }
        // Gone if it was evicted since the query started.
        if let Some(e) = self
            .entries
            .get_mut(i - 1)
            .filter(|e| e.id == id && e.pool == pool)
        {
            e.count += 1;
            e.errors += u64::from(error);
            e.total_us = e.total_us.saturating_add(us);
            e.max_us = e.max_us.max(us);
        }
    }

    fn table(&self) -> Vec<QueryStat> {
        let mut rows: Vec<QueryStat> = self
            .entries
            .iter()
            .map(|e| QueryStat {
                pool: e.pool,
                shape: String::from_utf8_lossy(&e.text).into_owned(),
                count: e.count,
                errors: e.errors,
                total_us: e.total_us,
                max_us: e.max_us,
            })
            .collect();
        rows.sort_by(|a, b| b.total_us.cmp(&a.total_us).then(b.count.cmp(&a.count)));
        rows
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// True if `t` is a numeric literal: 12, 1.5, .5, 1e-3, 0x1F, 0b101.
fn is_number(t: &[u8]) -> bool {
    match t {
        [b'0', b'x' | b'X', rest @ ..] if !rest.is_empty() => {
            rest.iter().all(u8::is_ascii_hexdigit)
        }
        [b'0', b'b' | b'B', rest @ ..] if !rest.is_empty() => {
            rest.iter().all(|&b| b == b'0' || b == b'1')
        }
        _ => {
            let mut digits = false;
            let mut seen_dot = false;
            let mut i = 0;
            while i < t.len() {
                match t[i] {
                    b'0'..=b'9' => digits = true,
                    b'.' if !seen_dot => seen_dot = true,
                    b'e' | b'E' if digits => {
                        let rest = &t[i + 1..];
                        let rest = match rest {
                            [b'+' | b'-', r @ ..] => r,
                            r => r,
                        };
                        return !rest.is_empty() && rest.iter().all(u8::is_ascii_digit);
                    }
                    _ => return false,
                }
                i += 1;
            }
            digits
        }
    }
}

/// Builds the normalized text of a query in `out` (cleared first; never
/// grows past [`MAX_SHAPE_LEN`] + 4 bytes, so a buffer with that capacity is
/// never reallocated).
struct Normalizer<'a> {
    out: &'a mut Vec<u8>,
    space: bool,
    /// Start offsets of open parentheses in `out` (the innermost 32).
    parens: [u16; 32],
    depth: usize,
    full: bool,
}

impl<'a> Normalizer<'a> {
    /// Writes into `out`, cleared first.
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.clear();
        Normalizer {
            out,
            space: false,
            parens: [0; 32],
            depth: 0,
            full: false,
        }
    }

    /// The trailing `;` and blanks dropped, `...` after a cut: the text.
    fn finish(self) -> &'a [u8] {
        let out = self.out;
        while matches!(out.last(), Some(b';' | b' ')) {
            out.pop();
        }
        if self.full {
            out.extend_from_slice(b" ...");
        }
        out
    }

    fn room(&mut self, n: usize) -> bool {
        if self.out.len() + n + 1 > MAX_SHAPE_LEN {
            self.full = true;
            return false;
        }
        true
    }

    fn sep(&mut self, next: u8) {
        let last = self.out.last().copied();
        if self.space && !matches!(last, None | Some(b'(')) && !matches!(next, b',' | b')') {
            self.out.push(b' ');
        }
        self.space = false;
    }

    fn word(&mut self, w: &[u8]) {
        if !self.room(w.len()) {
            return;
        }
        self.sep(w[0]);
        self.out.extend_from_slice(w);
    }

    fn literal(&mut self) {
        if !self.room(2) {
            return;
        }
        // A sign glued to a number is part of the literal.
        if self.out.last() == Some(&b'-') {
            let before = self.out[..self.out.len() - 1]
                .iter()
                .rev()
                .find(|&&b| b != b' ')
                .copied();
            if matches!(
                before,
                None | Some(b'(' | b',' | b'=' | b'<' | b'>' | b'+' | b'-' | b'*' | b'/')
            ) {
                self.out.pop();
                if self.out.last() == Some(&b' ') {
                    self.out.pop();
                }
                self.space = !self.out.is_empty();
            }
        }
        // `(?, ?` → `(?+`: a parenthesized list of literals (IN lists,
        // VALUES rows) is one shape whatever its length.
        if self.out.ends_with(b"(?,") || self.out.ends_with(b"(?+,") {
            self.out.pop();
            if self.out.last() == Some(&b'?') {
                self.out.push(b'+');
            }
            self.space = false;
            return;
        }
        self.sep(b'?');
        self.out.push(b'?');
    }

    fn punct(&mut self, c: u8) {
        if !self.room(1) {
            return;
        }
        self.sep(c);
        match c {
            b'(' => {
                if self.depth < self.parens.len() {
                    self.parens[self.depth] = self.out.len() as u16;
                }
                self.depth += 1;
                self.out.push(c);
            }
            b')' => {
                self.out.push(c);
                if self.depth == 0 {
                    return;
                }
                self.depth -= 1;
                if self.depth >= self.parens.len() {
                    return;
                }
                // `(?+), (?+)` → `(?+)`: rows of a multi-row VALUES, tuples.
                let start = usize::from(self.parens[self.depth]);
                let group_len = self.out.len() - start;
                if start >= group_len + 2 && &self.out[start - 2..start] == b", " {
                    let prev = start - 2 - group_len;
                    if self.out[prev..start - 2] == self.out[start..] {
                        self.out.truncate(start - 2);
                    }
                }
            }
            b',' => {
                self.out.push(c);
                self.space = true;
            }
            _ => self.out.push(c),
        }
    }
}

/// Normalizes SQL into a query shape: string, number, hex and bit literals
/// become `?`, parenthesized lists of them (`IN (1, 2)`) `(?+)`, repeated `(...)` groups after a comma
/// (multi-row VALUES) one group; comments are removed (the contents of
/// `/*! ... */` kept), whitespace folded to one space, none after `(` or
/// before `,` `)`, one after `,`; a trailing `;` dropped. Keywords and
/// identifiers are kept as sent. Looks at most at the first 64 KiB.
pub fn normalize_query(sql: &[u8], out: &mut Vec<u8>) {
    let s = &sql[..sql.len().min(MAX_SHAPE_SCAN)];
    let mut n = Normalizer::new(out);
    let mut in_exec_comment = false;
    let mut i = 0;
    while i < s.len() && !n.full {
        i = step(s, i, &mut n, &mut in_exec_comment);
    }
    n.finish();
}

/// One step of [`normalize_query`] at `i`, a place where it starts a token,
/// a comment or a blank: what it reads there goes to `n`; returns where the
/// next step starts.
fn step(s: &[u8], mut i: usize, n: &mut Normalizer, in_exec_comment: &mut bool) -> usize {
    let c = s[i];
    let next = s.get(i + 1).copied();
    match c {
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
            n.space = true;
            i += 1;
        }
        b'-' if next == Some(b'-') && s.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) => {
            i = s[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(s.len(), |p| i + p);
            n.space = true;
        }
        b'#' => {
            i = s[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(s.len(), |p| i + p);
            n.space = true;
        }
        b'/' if next == Some(b'*') => {
            let body = i + 2;
            let exec = match s.get(body) {
                Some(b'!') => Some(body + 1),
                Some(b'M') if s.get(body + 1) == Some(&b'!') => Some(body + 2),
                _ => None,
            };
            match exec {
                Some(mut j) if !*in_exec_comment => {
                    // Executable comment: its content is SQL.
                    while j < s.len() && s[j].is_ascii_digit() {
                        j += 1;
                    }
                    *in_exec_comment = true;
                    i = j;
                }
                _ => {
                    i = s[body..]
                        .windows(2)
                        .position(|w| w == b"*/")
                        .map_or(s.len(), |p| body + p + 2);
                }
            }
            n.space = true;
        }
        b'*' if *in_exec_comment && next == Some(b'/') => {
            *in_exec_comment = false;
            n.space = true;
            i += 2;
        }
        b'\'' | b'"' => {
            i = skip_quoted(s, i);
            n.literal();
        }
        b'`' => {
            let end = skip_quoted(s, i);
            let end = end.min(i + MAX_SHAPE_LEN);
            n.word(&s[i..end]);
            i = end;
        }
        b'.' if next.is_some_and(|b| b.is_ascii_digit())
            && !n.out.last().is_some_and(|&b| is_word_byte(b) || b == b'`') =>
        {
            i = scan_number(s, i);
            n.literal();
        }
        _ if is_word_byte(c) => {
            let start = i;
            if c.is_ascii_digit() {
                i = scan_number(s, i);
                let tok = &s[start..i];
                if is_number(tok) && n.out.last().is_none_or(|&b| b != b'.') {
                    n.literal();
                    return i;
                }
            }
            while i < s.len() && is_word_byte(s[i]) {
                i += 1;
            }
            let tok = &s[start..i];
            // x'..', b'..', N'..', _utf8mb4'..': one literal.
            let introducer = matches!(tok, [b'x' | b'X' | b'b' | b'B' | b'n' | b'N'])
                || (tok.first() == Some(&b'_') && tok.len() > 1);
            if introducer && s.get(i) == Some(&b'\'') {
                i = skip_quoted(s, i);
                n.literal();
            } else {
                n.word(tok);
            }
        }
        _ => {
            n.punct(c);
            i += 1;
        }
    }
    i
}

/// A token of the statement scan, as [`ShapeWriter::token`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeToken {
    /// A run of word bytes: keyword, name, number.
    Word,
    /// A string in `'` or `"`, read with backslash escapes.
    Str,
    /// A backquoted name.
    QuotedName,
    /// One byte that is none of the above.
    Punct(u8),
    /// Anything else (`@x`, `@@x`, whose span starts at the first `@`).
    Other,
}

/// The text of [`normalize_query`], built from the tokens of a scan that
/// reads the query anyway (the statement scan, see
/// `statement::query_facts`) rather than in a pass of its own.
///
/// Where the scan's tokens are what the normalizer would read at the same
/// place (a word, a string, a backquoted name, most punctuation, blanks and
/// comments between tokens), the writer takes them whole; anywhere else
/// (numbers such as `1.5e-3` or `.5`, `x'..'`, `@x`, the `*/` that ends an
/// executable comment, `--` at the very end, byte 0x0b, an executable
/// comment inside another) it reads the bytes with the normalizer's own
/// [`step`], from where it stands. So the text is the same as
/// [`normalize_query`]'s for any query, as long as the scan's tokens are in
/// order, do not overlap, and leave only blanks and comments between them.
pub struct ShapeWriter<'a> {
    n: Normalizer<'a>,
    /// Where the normalizer stands: a place where [`normalize_query`]
    /// starts a step; everything before it is read.
    pos: usize,
    /// End of the scan's previous token.
    prev_end: usize,
    in_exec_comment: bool,
}

impl<'a> ShapeWriter<'a> {
    /// A writer for a query of `len` bytes, or `None` when the query is
    /// longer than the normalizer looks (its shape is then built by
    /// [`Stats::query_shape_hashed`] from the text).
    pub fn new(out: &'a mut Vec<u8>, len: usize) -> Option<Self> {
        (len <= MAX_SHAPE_SCAN).then(|| ShapeWriter {
            n: Normalizer::new(out),
            pos: 0,
            prev_end: 0,
            in_exec_comment: false,
        })
    }

    /// The scan's next token: `start..end` of `s` (the whole query);
    /// `exec_opens`: executable comments (`/*!`, `/*M!`) the scan entered
    /// since its previous token.
    #[inline]
    pub fn token(&mut self, s: &[u8], kind: ShapeToken, start: usize, end: usize, exec_opens: u32) {
        if self.n.full {
            return;
        }
        self.gap(s, start, exec_opens);
        self.prev_end = end;
        if self.pos >= end || self.n.full {
            // Read already, as part of a longer token of the normalizer's.
            return;
        }
        if self.pos == start {
            match kind {
                ShapeToken::Word => {
                    let w = &s[start..end];
                    if w[0].is_ascii_digit() {
                        // Digits alone, not followed by `.`: a number as
                        // `scan_number` reads it (others are its to read).
                        if s.get(end) != Some(&b'.') && w.iter().all(u8::is_ascii_digit) {
                            if self.n.out.last() == Some(&b'.') {
                                self.n.word(w);
                            } else {
                                self.n.literal();
                            }
                            self.pos = end;
                            return;
                        }
                    } else {
                        // `x'..'` is the normalizer's to read.
                        let introducer = matches!(w, [b'x' | b'X' | b'b' | b'B' | b'n' | b'N'])
                            || (w[0] == b'_' && w.len() > 1);
                        if !(introducer && s.get(end) == Some(&b'\'')) {
                            self.n.word(w);
                            self.pos = end;
                            return;
                        }
                    }
                }
                ShapeToken::Str => {
                    self.n.literal();
                    self.pos = end;
                    return;
                }
                ShapeToken::QuotedName => {
                    self.n.word(&s[start..end.min(start + MAX_SHAPE_LEN)]);
                    self.pos = end;
                    return;
                }
                // `-` may start a comment, `*` end one, `.` a number;
                // 0x0b is a blank.
                ShapeToken::Punct(c) if !matches!(c, b'-' | b'*' | b'.' | 0x0b) => {
                    self.n.punct(c);
                    self.pos = end;
                    return;
                }
                _ => {}
            }
        }
        self.read_to(s, end);
    }

    /// The end of the query (after its last token; `exec_opens` as for
    /// [`ShapeWriter::token`]): the shape's [`shape_hash`].
    pub fn finish(mut self, s: &[u8], exec_opens: u32) -> u64 {
        if !self.n.full {
            self.gap(s, s.len(), exec_opens);
        }
        shape_hash(self.n.finish())
    }

    /// What lies before the token at `start`: to the scan, blanks and
    /// comments. When the normalizer stands at the end of the scan's
    /// previous token, it would read them the same way (one blank), unless
    /// an executable comment opens inside one; otherwise it reads them.
    fn gap(&mut self, s: &[u8], start: usize, exec_opens: u32) {
        if self.pos >= start {
            return;
        }
        if self.pos == self.prev_end
            && (exec_opens == 0 || (exec_opens == 1 && !self.in_exec_comment))
        {
            self.n.space = true;
            self.in_exec_comment |= exec_opens == 1;
            self.pos = start;
        } else {
            self.read_to(s, start);
        }
    }

    fn read_to(&mut self, s: &[u8], to: usize) {
        while self.pos < to && self.pos < s.len() && !self.n.full {
            self.pos = step(s, self.pos, &mut self.n, &mut self.in_exec_comment);
        }
    }
}

/// Index just past the quoted token starting at `i` (quote doubled or
/// backslash-escaped inside); the end of `s` if it is not closed.
fn skip_quoted(s: &[u8], i: usize) -> usize {
    let q = s[i];
    let mut j = i + 1;
    while j < s.len() {
        let b = s[j];
        if b == b'\\' && q != b'`' {
            j += 2;
        } else if b == q {
            if s.get(j + 1) == Some(&q) {
                j += 2;
            } else {
                return j + 1;
            }
        } else {
            j += 1;
        }
    }
    s.len()
}

/// Index just past a number-like token at `i`: digits, letters, dots, and
/// a sign right after an exponent `e`.
fn scan_number(s: &[u8], i: usize) -> usize {
    let mut j = i;
    while j < s.len() {
        let b = s[j];
        let exponent_sign = (b == b'+' || b == b'-')
            && j > i
            && matches!(s[j - 1], b'e' | b'E')
            && s[i].is_ascii_digit()
            && !matches!(s.get(i + 1), Some(b'x' | b'X'));
        if is_word_byte(b) || b == b'.' || exponent_sign {
            j += 1;
        } else {
            break;
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> String {
        let mut out = Vec::with_capacity(MAX_SHAPE_LEN + 8);
        normalize_query(sql.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn normalizes_literals_comments_and_whitespace() {
        let cases = [
            (
                "SELECT * FROM t WHERE id = 42",
                "SELECT * FROM t WHERE id = ?",
            ),
            (
                "select  *\n\tfrom t where id=42;",
                "select * from t where id=?",
            ),
            (
                "SELECT 'a''b', \"c\\\"d\", 1.5e-3, .5, 0x1F, X'0A', b'01', 0b11 FROM t",
                "SELECT ?, ?, ?, ?, ?, ?, ?, ? FROM t",
            ),
            (
                "SELECT sleep(0.1), 'slow', 5 FROM t LIMIT 10, 20",
                "SELECT sleep(?), ?, ? FROM t LIMIT ?, ?",
            ),
            ("SELECT f(1,2,3), (4)", "SELECT f(?+), (?)"),
            (
                "SELECT a, b FROM t WHERE x IN (1, 2, 3) AND y IN ('a','b')",
                "SELECT a, b FROM t WHERE x IN (?+) AND y IN (?+)",
            ),
            (
                "SELECT a FROM t WHERE x IN (7)",
                "SELECT a FROM t WHERE x IN (?)",
            ),
            (
                "INSERT INTO t (a,b) VALUES (1,'x'),(2,'y'), (3, 'z')",
                "INSERT INTO t (a, b) VALUES (?+)",
            ),
            (
                "INSERT INTO t VALUES (1, NOW()), (2, NOW())",
                "INSERT INTO t VALUES (?, NOW())",
            ),
            ("/* app:42 */ SELECT 1 -- trailing\n", "SELECT ?"),
            ("SELECT 1 # mysql comment\n FROM dual", "SELECT ? FROM dual"),
            (
                "SELECT /*+ MAX_EXECUTION_TIME(10) */ a FROM t",
                "SELECT a FROM t",
            ),
            ("/*!40101 SET NAMES utf8mb4 */", "SET NAMES utf8mb4"),
            (
                "SELECT * FROM t1 JOIN `t 2` ON t1.id = `t 2`.id WHERE t1.c2 > -5",
                "SELECT * FROM t1 JOIN `t 2` ON t1.id = `t 2`.id WHERE t1.c2 > ?",
            ),
            ("SELECT a-1, a - 1 FROM t", "SELECT a-?, a - ? FROM t"),
            (
                "SELECT _utf8mb4'x' COLLATE utf8mb4_bin",
                "SELECT ? COLLATE utf8mb4_bin",
            ),
            (
                "SELECT * FROM 2fa_codes WHERE c = 'x'",
                "SELECT * FROM 2fa_codes WHERE c = ?",
            ),
            ("SELECT SLEEP(0.5)", "SELECT SLEEP(?)"),
            ("  ", ""),
            ("SELECT 'unterminated", "SELECT ?"),
            ("SELECT @@version, @a := 3", "SELECT @@version, @a := ?"),
        ];
        for (sql, want) in cases {
            assert_eq!(shape(sql), want, "{sql}");
        }
    }

    #[test]
    fn long_queries_are_cut_without_reallocating() {
        let mut sql = String::from("SELECT ");
        for i in 0..5000 {
            sql.push_str(&format!("col{i}, "));
        }
        sql.push_str("1 FROM t");
        let mut out = Vec::with_capacity(MAX_SHAPE_LEN + 8);
        let cap = out.capacity();
        normalize_query(sql.as_bytes(), &mut out);
        assert_eq!(out.capacity(), cap);
        assert!(out.len() <= MAX_SHAPE_LEN + 4);
        assert!(out.ends_with(b" ..."));
        // Deep nesting and garbage do not panic.
        let deep = "(".repeat(100) + &")".repeat(120) + "'\\";
        normalize_query(deep.as_bytes(), &mut out);
        normalize_query(&[0xff, b'\'', 0x00, b'`'], &mut out);
        let many = "(1),".repeat(20000);
        normalize_query(many.as_bytes(), &mut out);
        assert_eq!(out, b"(?),");
    }

    #[test]
    fn shape_table_counts_and_evicts_the_cheapest() {
        let mut s = Stats::new(2);
        let a = s.query_shape(0, b"SELECT * FROM t WHERE id = 1");
        let b = s.query_shape(0, b"SELECT * FROM t WHERE id = 2");
        let c = s.query_shape(1, b"SELECT * FROM t WHERE id = 3");
        assert_ne!(a, 0);
        assert_eq!(a, b);
        assert_ne!(a, c, "pools are kept apart");
        s.query_done(0, a, Duration::from_micros(100), false);
        s.query_done(0, b, Duration::from_micros(300), true);
        s.query_done(1, c, Duration::from_micros(50), false);
        let t = s.query_table();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].shape, "SELECT * FROM t WHERE id = ?");
        assert_eq!((t[0].pool, t[0].count, t[0].errors), (0, 2, 1));
        assert_eq!((t[0].total_us, t[0].max_us), (400, 300));
        assert_eq!(s.query_shape(0, b"   "), 0);

        // Fill the table; the next new shape replaces the cheapest (pool 1's).
        for i in 0..MAX_QUERY_SHAPES - 2 {
            let id = s.query_shape(0, format!("SELECT c{i} FROM t").as_bytes());
            s.query_done(0, id, Duration::from_micros(1000), false);
        }
        assert_eq!(s.query_table().len(), MAX_QUERY_SHAPES);
        let d = s.query_shape(0, b"DELETE FROM t");
        assert_ne!(d, 0);
        // The evicted id no longer counts; the new one does.
        s.query_done(1, c, Duration::from_micros(5), false);
        s.query_done(0, d, Duration::from_micros(7), false);
        let t = s.query_table();
        assert_eq!(t.len(), MAX_QUERY_SHAPES);
        assert!(t.iter().all(|r| r.pool == 0));
        let del = t.iter().find(|r| r.shape == "DELETE FROM t").unwrap();
        assert_eq!((del.count, del.total_us), (1, 7));
    }

    #[test]
    fn a_shape_known_by_its_hash_is_not_normalized_again() {
        let mut s = Stats::new(2);
        let sql = b"SELECT * FROM t WHERE id = 1";
        let mut text = Vec::new();
        normalize_query(sql, &mut text);
        let hash = shape_hash(&text);
        // New: built from the text, under the same shape as without a hash.
        let a = s.query_shape_hashed(0, Some(hash), sql);
        assert_ne!(a, 0);
        assert_eq!(s.query_shape(0, b"SELECT * FROM t WHERE id = 2"), a);
        // Known: the hash alone finds it (the text is not looked at).
        assert_eq!(s.query_shape_hashed(0, Some(hash), b"not even SQL"), a);
        assert_eq!(
            s.query_shape_hashed(0, None, b"SELECT * FROM t WHERE id = 3"),
            a
        );
        // Another pool's, no shape, or an empty one.
        let b = s.query_shape_hashed(1, Some(hash), sql);
        assert!(b != 0 && b != a);
        assert_eq!(s.query_shape_hashed(0, Some(0), b"  "), 0);
        assert_eq!(shape_hash(b""), 0);
        let t = s.query_table();
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|r| r.shape == "SELECT * FROM t WHERE id = ?"));
    }

    #[test]
    fn windows_rotate_each_second() {
        let t0 = Instant::now();
        let mut s = Stats::new(1);
        s.tick(t0);
        for us in 1..=100u64 {
            s.end_to_end(0, Duration::from_micros(us), t0);
        }
        s.backlog_depth(0, 7, t0);
        s.backlog_depth(0, 2, t0);
        let v = s.pool_latency(0);
        assert_eq!(v.end_to_end.total.count, 100);
        assert_eq!(v.end_to_end.current.count, 100);
        assert_eq!(v.end_to_end.last(10).count, 100);
        assert_eq!(v.end_to_end.total.sum_us, 5050);
        assert_eq!(v.backlog_max_last_minute, 7);

        // Second 1 closes: its samples move to `recent`.
        s.tick(t0 + Duration::from_millis(1000));
        s.end_to_end(0, Duration::from_micros(5000), t0);
        let v = s.pool_latency(0);
        assert_eq!(v.end_to_end.recent.len(), 1);
        assert_eq!(v.end_to_end.recent[0].count, 100);
        assert_eq!(v.end_to_end.current.count, 1);
        assert_eq!(v.end_to_end.last(10).count, 101);
        assert_eq!(v.history.len(), 1);
        assert_eq!(v.history[0].backlog_max, 7);
        assert_eq!(v.history[0].end_to_end.count, 100);
        assert_eq!(v.history[0].end_to_end.p50_us, 50);
        assert_eq!(v.history[0].end_to_end.p99_us, 99);
        assert_eq!(v.history[0].end_to_end.max_us, 100);

        // 11 s later the first second has left the 10-s window but not the
        // 60-s one; the carried backlog depth (2) is the new maximum after a minute.
        s.tick(t0 + Duration::from_millis(12_000));
        let v = s.pool_latency(0);
        assert_eq!(v.end_to_end.last(10).count, 0);
        assert_eq!(v.end_to_end.last(60).count, 101);
        // The total holds every second folded in, with their exact sums.
        assert_eq!(v.end_to_end.total.count, 101);
        assert_eq!(v.end_to_end.total.sum_us, 10_050);
        assert_eq!(v.end_to_end.total.quantile(0.5), 51);
        assert!(v.end_to_end.total.max_us >= 4995);
        assert_eq!(v.history.len(), 12);
        assert_eq!(v.history[1].backlog_max, 2);
        s.tick(t0 + Duration::from_millis(80_000));
        let v = s.pool_latency(0);
        assert_eq!(v.end_to_end.last(60).count, 0);
        assert_eq!(v.end_to_end.recent.len(), WINDOW_SECONDS);
        assert_eq!(v.backlog_max_last_minute, 2);
        s.backlog_depth(0, 0, t0);
        s.tick(t0 + Duration::from_millis(81_000));
        assert_eq!(s.pool_latency(0).backlog_max_last_minute, 2);
        s.tick(t0 + Duration::from_millis(200_000));
        assert_eq!(s.pool_latency(0).backlog_max_last_minute, 0);
        // A long stall rotates a bounded number of times.
        s.tick(t0 + Duration::from_secs(100_000));
        assert_eq!(s.pool_latency(0).history.len(), HISTORY_SECONDS);
        // Unknown pools are ignored.
        s.end_to_end(5, Duration::from_micros(1), t0);
        assert_eq!(s.pool_latency(5).end_to_end.total.count, 0);
    }

    #[test]
    fn sparse_quantiles_match_hdrhistogram() {
        let mut h: Histogram<u64> = new_histogram();
        let mut x: u64 = 12345;
        let mut sum = 0;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = 1 + (x >> 33) % 2_000_000;
            h.record(v).unwrap();
            sum += v;
        }
        let sparse = Hist::from_histogram(&h, sum);
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(sparse.quantile(q), h.value_at_quantile(q), "q={q}");
        }
        assert_eq!(sparse.count, h.len());
        assert_eq!(sparse.max_us, h.max());
        assert_eq!(sparse.count_le(u64::MAX), h.len());
        let half = Hist::merge([&sparse, &sparse]);
        assert_eq!(half.count, 2 * h.len());
        assert_eq!(half.buckets.len(), sparse.buckets.len());
        assert_eq!(half.quantile(0.5), sparse.quantile(0.5));
        assert_eq!(Hist::default().quantile(0.5), 0);
        // Clamping.
        let mut s = Stats::new(1);
        s.service(0, Duration::from_secs(7200), Instant::now());
        s.service(0, Duration::ZERO, Instant::now());
        let v = s.pool_latency(0).service.total;
        assert_eq!(v.min_us, 1);
        assert!(v.max_us >= MAX_MICROS && v.max_us <= MAX_MICROS + MAX_MICROS / 1000);
    }
}
