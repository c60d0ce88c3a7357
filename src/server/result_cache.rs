//! The result cache of query rules with `cache_ttl_ms`: answers as a
//! client got them from mysqld (its EOF/OK framing, its column metadata),
//! kept for the rule's TTL and served to clients that would get the same
//! bytes (same user and pool, schema, session settings, protocol options
//! and statement text), with their own sequence ids. Bounded memory, least
//! recently used entries evicted first. No I/O: the engine captures what it
//! forwards (`capture`) and writes hits into the client's output.
//!
//! Writes that pass through the funnel make entries stale: each
//! entry and each answer being captured remembers the tables its statement
//! mentions and when its read began; a write to one of them since then (or
//! one whose tables are unknown) makes it stale. See [`WriteLog`] for when.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::protocol::consts::*;
use crate::protocol::mariadb_ext::MARIADB_CLIENT_EXTENDED_METADATA;
use crate::protocol::packet::HEADER_LEN;

/// What a cached answer is the answer to: everything that decides its
/// bytes. Two statements with the same key get the same answer from
/// mysqld (for the statements the cache takes: plain deterministic reads).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The pool (its backend user, and CLIENT_FOUND_ROWS) and the client's user.
    pub pool: usize,
    pub user: Box<str>,
    pub schema: Option<Box<str>>,
    /// `SessionVars::fingerprint`: character sets, collation, sql_mode,
    /// time zone, every tracked variable.
    pub session: u64,
    /// The client's options that change the answer's bytes
    /// ([`shaping_capabilities`]).
    pub capabilities: u64,
    pub sql: Box<[u8]>,
}

/// The capability bits that change the bytes of an answer to a query:
/// EOF or OK terminators, session-state info in OKs, multi-statements and
/// multi-results, MariaDB's extended column metadata.
pub fn shaping_capabilities(capabilities: u32, mariadb_caps: u32, multi_statements: bool) -> u64 {
    let mask = CLIENT_PROTOCOL_41
        | CLIENT_DEPRECATE_EOF
        | CLIENT_SESSION_TRACK
        | CLIENT_MULTI_RESULTS
        | CLIENT_PS_MULTI_RESULTS
        | CLIENT_MULTI_STATEMENTS;
    u64::from(capabilities & mask)
        | u64::from(mariadb_caps & MARIADB_CLIENT_EXTENDED_METADATA) << 32
        | u64::from(multi_statements) << 63
}

/// What an answer leaves the client with: the status of its last OK/EOF,
/// and what `ROW_COUNT()` and `FOUND_ROWS()` say after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerEnd {
    pub status: u16,
    pub row_count: i64,
    pub found_rows: u64,
}

/// A cached answer.
#[derive(Debug)]
pub struct CachedAnswer {
    /// The frames as the first client got them.
    pub frames: Box<[u8]>,
    pub end: AnswerEnd,
    expires: Instant,
    /// The tables its statement mentions ([`table_hash`]), and the write
    /// epoch its read began at (or was last found fresh at).
    tables: Box<[u64]>,
    fresh_at: u64,
    /// Position in the LRU order.
    used: u64,
    /// Bytes it counts against `cache_size`.
    size: usize,
}

/// An answer being captured for the cache while it is forwarded.
struct Fill {
    serial: u64,
    key: CacheKey,
    ttl: Duration,
    tables: Box<[u64]>,
    /// The write epoch when its command was read.
    began: u64,
    frames: Vec<u8>,
    too_big: bool,
}

/// A client whose read waits for the same read of another client
/// (coalescing): its command, as when it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub client: usize,
    pub serial: u64,
    pub read_at: Instant,
}

/// Hit, miss, store and eviction counts (since start; a reload keeps them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    /// Entries dropped to make room (LRU).
    pub evictions: u64,
    /// Entries found past their TTL.
    pub expired: u64,
    /// Answers larger than `cache_max_result_size`, not stored.
    pub too_big: u64,
    /// Reads that waited for the same read of another client instead of
    /// running (each answered from its answer, or run after all when that
    /// answer could not be cached).
    pub coalesced: u64,
    /// Writes through the funnel that made cached reads of their tables
    /// stale (those of unknown tables: all of them).
    pub invalidations: u64,
    /// Entries dropped, and answers not stored, because of such a write.
    pub invalidated: u64,
}

/// A table as the invalidation knows it: a hash of its schema and name
/// (lower-case). Two tables with the same hash are one: more is made
/// stale, never less.
pub fn table_hash(schema: &[u8], name: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    schema.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

/// The writes that passed through the funnel, for staleness.
///
/// A write takes effect on mysqld at some moment between the funnel
/// reading it (its *start*) and the end of its command, or of its
/// transaction (its *end*); a read's answer reflects some moment between
/// its own start and end. So an answer may miss the write unless it began
/// after the write ended. Hence:
/// - at a write's start and end its tables' epochs are bumped: an entry or
///   capture whose read began before either is stale (entries stored
///   before the write are not served from its start on: a client that saw
///   the write's effect directly must not read an older answer here);
/// - while a write is in progress (or its transaction open), an answer
///   reading its tables is not stored (it may have read before the
///   write's commit) nor waited for by a new reader;
/// - a read that began after the write ended is fresh.
///
/// The end's bump alone would keep stale answers from being served; not
/// storing meanwhile also closes the moment between the commit on mysqld
/// and the funnel seeing the write's end, when a client that saw the write
/// elsewhere could still get an answer from before it.
///
/// Epochs are counted per funnel, not per server: a write through one pool
/// makes the same tables stale in all pools (the same server may serve
/// several; more stale, never less).
#[derive(Default)]
struct WriteLog {
    /// Bumped by each write's start and end.
    epoch: u64,
    /// A table's last write start or end (its epoch then).
    written: HashMap<u64, u64>,
    /// The last start or end of a write of unknown tables.
    everything: u64,
    /// Tables being written now, by how many clients; writes of unknown
    /// tables now.
    writing: HashMap<u64, u32>,
    writing_everything: u32,
    /// By client key: the writes it began and whose end is not seen yet.
    pending: HashMap<usize, PendingWrites>,
    /// Those of clients that left (mid-command: the statement may still
    /// run on mysqld), and from when (stamped at the next periodic pass):
    /// they end once no backend that began reading the rest of a left
    /// client's answer by then still does.
    left: Vec<(Option<Instant>, PendingWrites)>,
}

#[derive(Default)]
struct PendingWrites {
    tables: HashSet<u64>,
    everything: bool,
}

/// Tables remembered at most: past that, the record of old writes is
/// forgotten by making everything older stale.
const MAX_WRITTEN_TABLES: usize = 100_000;

impl WriteLog {
    /// Whether a read of `tables` that began at epoch `began` may miss a
    /// write that passed through the funnel.
    fn stale(&self, tables: &[u64], began: u64) -> bool {
        self.writing_everything > 0
            || self.everything >= began
            || tables.iter().any(|t| {
                self.writing.contains_key(t) || self.written.get(t).is_some_and(|&e| e >= began)
            })
    }

    fn begin(&mut self, client: usize, tables: Option<&[u64]>) {
        let epoch = self.epoch;
        self.epoch += 1;
        let p = self.pending.entry(client).or_default();
        match tables {
            None => {
                self.everything = epoch;
                if !p.everything {
                    p.everything = true;
                    self.writing_everything += 1;
                }
            }
            Some(tables) => {
                for &t in tables {
                    self.written.insert(t, epoch);
                    if p.tables.insert(t) {
                        *self.writing.entry(t).or_default() += 1;
                    }
                }
            }
        }
        if self.written.len() > MAX_WRITTEN_TABLES {
            // Everything read before now is stale: the record can go.
            self.written.clear();
            self.everything = epoch;
        }
    }

    fn end(&mut self, p: PendingWrites) {
        let epoch = self.epoch;
        self.epoch += 1;
        if p.everything {
            self.everything = epoch;
            self.writing_everything -= 1;
        }
        for t in p.tables {
            self.written.insert(t, epoch);
            if let Some(n) = self.writing.get_mut(&t) {
                *n -= 1;
                if *n == 0 {
                    self.writing.remove(&t);
                }
            }
        }
    }
}

/// Bytes an entry costs beyond its frames and key text (map and LRU slots).
const ENTRY_OVERHEAD: usize = 160;

pub struct ResultCache {
    entries: HashMap<CacheKey, CachedAnswer>,
    /// `used` → key, oldest first.
    lru: BTreeMap<u64, CacheKey>,
    next_use: u64,
    bytes: usize,
    limit: usize,
    max_result: usize,
    /// By client key.
    fills: HashMap<usize, Fill>,
    /// The client whose fill is capturing the answer to a key (its
    /// client key and serial), and who waits for that answer.
    leaders: HashMap<CacheKey, (usize, u64)>,
    /// Each with when it gives up (its pool's `queue_timeout_ms`).
    waiters: HashMap<CacheKey, Vec<(Waiter, Instant)>>,
    /// Waiters whose leader left, to run their own read at the next
    /// periodic pass (not inside the closing of a client).
    orphans: Vec<Waiter>,
    writes: WriteLog,
    pub counters: CacheCounters,
}

/// An answer complete and clean but not stored (stale, or larger than the
/// whole cache): the clients that waited for it get it all the same.
#[derive(Debug, PartialEq, Eq)]
pub struct Unkept {
    pub frames: Box<[u8]>,
    pub end: AnswerEnd,
}

/// What the clients that waited for an answer get.
#[derive(Debug, PartialEq, Eq)]
pub enum Shared {
    /// The entry now in the cache.
    Stored(CacheKey),
    Unkept(Unkept),
}

impl ResultCache {
    pub fn new(limit: usize, max_result: usize) -> ResultCache {
        ResultCache {
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            next_use: 0,
            bytes: 0,
            limit,
            max_result,
            fills: HashMap::new(),
            leaders: HashMap::new(),
            waiters: HashMap::new(),
            orphans: Vec::new(),
            // Epoch 0 is "never written".
            writes: WriteLog {
                epoch: 1,
                ..WriteLog::default()
            },
            counters: CacheCounters::default(),
        }
    }

    /// New bounds (a reload): the entries go, as the rules that made them
    /// may have; returns the clients that waited for an answer, to be run.
    pub fn reset(&mut self, limit: usize, max_result: usize) -> Vec<Waiter> {
        self.entries.clear();
        self.lru.clear();
        self.fills.clear();
        self.leaders.clear();
        let mut waiting: Vec<Waiter> = self
            .waiters
            .drain()
            .flat_map(|(_, w)| w.into_iter().map(|(w, _)| w))
            .collect();
        waiting.append(&mut self.orphans);
        self.bytes = 0;
        self.limit = limit;
        self.max_result = max_result;
        waiting
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The live answer for `key`, if any (counted as a hit or a miss).
    pub fn lookup(&mut self, key: &CacheKey, now: Instant) -> Option<&CachedAnswer> {
        let Some(entry) = self.entries.get(key) else {
            self.counters.misses += 1;
            return None;
        };
        if entry.expires <= now {
            self.counters.expired += 1;
            self.counters.misses += 1;
            self.remove(key);
            return None;
        }
        if entry.fresh_at < self.writes.epoch {
            // A write since it was last found fresh: of its tables?
            if self.writes.stale(&entry.tables, entry.fresh_at) {
                self.counters.invalidated += 1;
                self.counters.misses += 1;
                self.remove(key);
                return None;
            }
            let epoch = self.writes.epoch;
            if let Some(e) = self.entries.get_mut(key) {
                e.fresh_at = epoch;
            }
        }
        self.counters.hits += 1;
        let used = self.next_use;
        self.next_use += 1;
        let entry = self.entries.get_mut(key)?;
        if let Some(k) = self.lru.remove(&entry.used) {
            self.lru.insert(used, k);
        }
        entry.used = used;
        Some(entry)
    }

    /// The live answer for `key`, if any, without counting a lookup (it
    /// was counted when the client's read was decided).
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<&CachedAnswer> {
        self.entries.get(key).filter(|e| e.expires > now)
    }

    /// The client's next answer is to be captured for `key`; its statement
    /// mentions `tables` ([`table_hash`]).
    pub fn start_fill(
        &mut self,
        client: usize,
        serial: u64,
        key: CacheKey,
        ttl: Duration,
        tables: Box<[u64]>,
    ) {
        self.leaders.insert(key.clone(), (client, serial));
        self.fills.insert(
            client,
            Fill {
                serial,
                key,
                ttl,
                tables,
                began: self.writes.epoch,
                frames: Vec::new(),
                too_big: false,
            },
        );
    }

    /// Whatever the client's previous command was capturing is not its
    /// answer (a new command, the client left); returns who waited for it.
    pub fn forget_fill(&mut self, client: usize) -> Vec<Waiter> {
        if self.fills.is_empty() {
            return Vec::new();
        }
        match self.fills.remove(&client) {
            Some(fill) => self.end_lead(&fill.key, client, fill.serial),
            None => Vec::new(),
        }
    }

    /// The client left: its capture goes, who waited for it is released at
    /// the next [`stranded`](Self::stranded).
    pub fn client_left(&mut self, client: usize) {
        let mut waiting = self.forget_fill(client);
        self.orphans.append(&mut waiting);
        if let Some(p) = self.writes.pending.remove(&client) {
            self.writes.left.push((None, p));
        }
    }

    /// Whether writes are being tracked (some client began one).
    pub fn has_pending_writes(&self) -> bool {
        !self.writes.pending.is_empty() || !self.writes.left.is_empty()
    }

    /// A client's statement that may write `tables` ([`table_hash`]; None:
    /// unknown tables) was read: cached reads of them are stale from now
    /// until [`writes_end`](Self::writes_end) and answers being captured
    /// are not stored.
    pub fn write_begins(&mut self, client: usize, tables: Option<&[u64]>) {
        self.counters.invalidations += 1;
        self.writes.begin(client, tables);
    }

    /// The client's writes are over (its command, and any transaction it
    /// was in, ended): reads that began before are stale.
    pub fn writes_end(&mut self, client: usize) {
        if let Some(p) = self.writes.pending.remove(&client) {
            self.writes.end(p);
        }
    }

    /// Writes of clients that left, not ended yet.
    pub fn has_left_writes(&self) -> bool {
        !self.writes.left.is_empty()
    }

    /// Clients with writes whose end is not seen yet.
    pub fn writing_clients(&self) -> Vec<usize> {
        self.writes.pending.keys().copied().collect()
    }

    /// Periodic: the writes of clients that left end, unless a backend
    /// that was reading the rest of a left client's answer when they were
    /// stamped (`draining_since(stamp)`) still is.
    pub fn left_writes_end(&mut self, now: Instant, draining_since: impl Fn(Instant) -> bool) {
        for (stamp, p) in std::mem::take(&mut self.writes.left) {
            let stamp = stamp.unwrap_or(now);
            if draining_since(stamp) {
                self.writes.left.push((Some(stamp), p));
            } else {
                self.writes.end(p);
            }
        }
    }

    /// The answer to `key` is being captured for another client's same
    /// read: `waiter` is to get it (true), instead of running its own.
    /// Not when a write may have changed its tables since the other read
    /// began: that answer may be older than this client's own write.
    /// `deadline`: when it gives up waiting ([`expired`](Self::expired)).
    pub fn wait_for(&mut self, key: &CacheKey, waiter: Waiter, deadline: Instant) -> bool {
        let Some(&(client, serial)) = self.leaders.get(key) else {
            return false;
        };
        if waiter.client == client
            || !self.fills.get(&client).is_some_and(|f| {
                f.serial == serial && f.key == *key && !self.writes.stale(&f.tables, f.began)
            })
        {
            return false;
        }
        self.counters.coalesced += 1;
        self.waiters
            .entry(key.clone())
            .or_default()
            .push((waiter, deadline));
        true
    }

    /// Waiters past their deadline, no longer waiting.
    pub fn expired(&mut self, now: Instant) -> Vec<Waiter> {
        let mut out = Vec::new();
        for list in self.waiters.values_mut() {
            list.retain(|&(w, deadline)| {
                let keep = deadline > now;
                if !keep {
                    out.push(w);
                }
                keep
            });
        }
        out
    }

    /// The earliest deadline of a waiter.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiters.values().flatten().map(|&(_, d)| d).min()
    }

    /// Whether the client's command waits for another's answer.
    pub fn is_waiting(&self, client: usize, serial: u64) -> bool {
        let it = |w: &Waiter| w.client == client && w.serial == serial;
        self.orphans.iter().any(it) || self.waiters.values().flatten().any(|(w, _)| it(w))
    }

    /// Leaders whose command is over (`busy` says it is not) without their
    /// answer completing here: their fills go, and who waited is returned.
    pub fn stranded(&mut self, busy: impl Fn(usize, u64) -> bool) -> Vec<Waiter> {
        if self.waiters.is_empty() {
            return std::mem::take(&mut self.orphans);
        }
        let gone: Vec<(CacheKey, usize, u64)> = self
            .leaders
            .iter()
            .filter(|(k, (c, s))| self.waiters.contains_key(*k) && !busy(*c, *s))
            .map(|(k, (c, s))| (k.clone(), *c, *s))
            .collect();
        let mut out = std::mem::take(&mut self.orphans);
        for (key, client, serial) in gone {
            if self.fills.get(&client).is_some_and(|f| f.serial == serial) {
                self.fills.remove(&client);
            }
            out.extend(self.end_lead(&key, client, serial));
        }
        out
    }

    /// `client` no longer captures the answer to `key`: who waited for it.
    fn end_lead(&mut self, key: &CacheKey, client: usize, serial: u64) -> Vec<Waiter> {
        if self.leaders.get(key) == Some(&(client, serial)) {
            self.leaders.remove(key);
            return self
                .waiters
                .remove(key)
                .map(|w| w.into_iter().map(|(w, _)| w).collect())
                .unwrap_or_default();
        }
        Vec::new()
    }

    /// Bytes of the answer went to the client.
    pub fn capture(&mut self, client: usize, serial: u64, bytes: &[u8]) {
        if self.fills.is_empty() {
            return;
        }
        let Some(fill) = self.fills.get_mut(&client) else {
            return;
        };
        if fill.serial != serial || fill.too_big {
            return;
        }
        if fill.frames.len() + bytes.len() > self.max_result {
            fill.too_big = true;
            fill.frames = Vec::new();
            return;
        }
        fill.frames.extend_from_slice(bytes);
    }

    /// The client's answer is complete; `clean` (its last status and
    /// `ROW_COUNT()`) when it may be cached: a result, no warnings, no
    /// session change, no transaction. Returns who waited for it, and what
    /// they get (else they must run their own).
    pub fn finish_fill(
        &mut self,
        client: usize,
        serial: u64,
        clean: Option<AnswerEnd>,
        now: Instant,
    ) -> (Vec<Waiter>, Option<Shared>) {
        if self.fills.is_empty() {
            return (Vec::new(), None);
        }
        let Some(fill) = self.fills.remove(&client) else {
            return (Vec::new(), None);
        };
        let waiting = self.end_lead(&fill.key, client, fill.serial);
        if fill.serial != serial {
            return (waiting, None);
        }
        if fill.too_big {
            self.counters.too_big += 1;
            return (waiting, None);
        }
        let Some(end) = clean else {
            return (waiting, None);
        };
        if fill.frames.is_empty() {
            return (waiting, None);
        }
        let size = fill.frames.len()
            + fill.key.sql.len()
            + fill.key.user.len()
            + fill.key.schema.as_ref().map_or(0, |s| s.len())
            + fill.tables.len() * 8
            + ENTRY_OVERHEAD;
        let stale = self.writes.stale(&fill.tables, fill.began);
        if stale || size > self.limit || !self.enabled() {
            if stale {
                self.counters.invalidated += 1;
            } else if self.enabled() {
                self.counters.too_big += 1;
            }
            let unkept = Unkept {
                frames: fill.frames.into_boxed_slice(),
                end,
            };
            return (waiting, Some(Shared::Unkept(unkept)));
        }
        self.remove(&fill.key);
        while self.bytes + size > self.limit {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.size;
                self.counters.evictions += 1;
            }
        }
        let used = self.next_use;
        self.next_use += 1;
        self.lru.insert(used, fill.key.clone());
        self.bytes += size;
        self.counters.stores += 1;
        self.entries.insert(
            fill.key.clone(),
            CachedAnswer {
                frames: fill.frames.into_boxed_slice(),
                end,
                expires: now + fill.ttl,
                tables: fill.tables,
                fresh_at: fill.began,
                used,
                size,
            },
        );
        (waiting, Some(Shared::Stored(fill.key)))
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(e) = self.entries.remove(key) {
            self.lru.remove(&e.used);
            self.bytes -= e.size;
        }
    }
}

/// Copies whole frames from `frames` to `out`, numbering them on from
/// `first_seq` (a cached answer, as the client that asks now must see it).
/// Frames are as mysqld framed them: payloads of 16 MiB - 1 continue in the
/// next frame, which has its own sequence id like any other.
pub fn renumber_frames(frames: &[u8], first_seq: u8, out: &mut Vec<u8>) {
    let mut seq = first_seq;
    let mut at = 0;
    while at + HEADER_LEN <= frames.len() {
        let len = usize::from(frames[at])
            | usize::from(frames[at + 1]) << 8
            | usize::from(frames[at + 2]) << 16;
        let end = (at + HEADER_LEN + len).min(frames.len());
        out.extend_from_slice(&frames[at..at + 3]);
        out.push(seq);
        out.extend_from_slice(&frames[at + HEADER_LEN..end]);
        seq = seq.wrapping_add(1);
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of a one-row result.
    fn end(status: u16) -> AnswerEnd {
        AnswerEnd {
            status,
            row_count: -1,
            found_rows: 1,
        }
    }
    use crate::protocol::deprecate_eof::encode_end_of_rows;
    use crate::protocol::response::{encode_column_def, encode_text_row};

    fn key(sql: &str) -> CacheKey {
        CacheKey {
            pool: 0,
            user: "app".into(),
            schema: Some("shop".into()),
            session: 7,
            capabilities: shaping_capabilities(CLIENT_PROTOCOL_41, 0, false),
            sql: sql.as_bytes().into(),
        }
    }

    fn tables(names: &[&str]) -> Box<[u64]> {
        names
            .iter()
            .map(|n| table_hash(b"shop", n.as_bytes()))
            .collect()
    }

    fn frame(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
        let len = payload.len();
        out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, seq]);
        out.extend_from_slice(payload);
    }

    /// A one-column, one-row result as a client with or without
    /// CLIENT_DEPRECATE_EOF gets it, its first frame numbered `seq`.
    fn result(seq: u8, deprecate_eof: bool) -> Vec<u8> {
        let caps = CLIENT_PROTOCOL_41
            | if deprecate_eof {
                CLIENT_DEPRECATE_EOF
            } else {
                0
            };
        let mut out = Vec::new();
        let mut p = Vec::new();
        frame(&mut out, seq, &[1]);
        encode_column_def(&mut p, "a", 3, 63, 11, 0, 0);
        frame(&mut out, seq + 1, &p);
        let mut next = seq + 2;
        if !deprecate_eof {
            p.clear();
            crate::protocol::response::encode_eof(&mut p, 0, SERVER_STATUS_AUTOCOMMIT);
            frame(&mut out, next, &p);
            next += 1;
        }
        p.clear();
        encode_text_row(&mut p, &[Some(b"42")]);
        frame(&mut out, next, &p);
        p.clear();
        encode_end_of_rows(&mut p, caps, 0, SERVER_STATUS_AUTOCOMMIT);
        frame(&mut out, next + 1, &p);
        out
    }

    #[test]
    fn renumbering_changes_only_sequence_ids() {
        for deprecate_eof in [false, true] {
            let stored = result(1, deprecate_eof);
            let mut out = Vec::new();
            renumber_frames(&stored, 4, &mut out);
            assert_eq!(
                out,
                result(4, deprecate_eof),
                "deprecate_eof {deprecate_eof}"
            );
            out.clear();
            renumber_frames(&stored, 1, &mut out);
            assert_eq!(out, stored);
        }
        // A frame of 16 MiB - 1 and its continuation: two ids; 255 wraps to 0.
        let mut big = Vec::new();
        frame(&mut big, 1, &vec![7u8; 0xff_ffff]);
        frame(&mut big, 2, b"tail");
        let mut out = Vec::new();
        renumber_frames(&big, 255, &mut out);
        assert_eq!(out[3], 255);
        assert_eq!(out[HEADER_LEN + 0xff_ffff + 3], 0);
        assert_eq!(out.len(), big.len());
        assert_eq!(
            &out[HEADER_LEN..HEADER_LEN + 16],
            &big[HEADER_LEN..HEADER_LEN + 16]
        );
    }

    #[test]
    fn the_eof_framing_is_part_of_the_key() {
        let a = shaping_capabilities(CLIENT_PROTOCOL_41, 0, true);
        let b = shaping_capabilities(CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF, 0, true);
        let c = shaping_capabilities(CLIENT_PROTOCOL_41, MARIADB_CLIENT_EXTENDED_METADATA, true);
        let d = shaping_capabilities(CLIENT_PROTOCOL_41, 0, false);
        assert!(a != b && a != c && a != d && b != c);
        // Options that do not shape an answer do not split the cache.
        assert_eq!(
            a,
            shaping_capabilities(CLIENT_PROTOCOL_41 | CLIENT_CONNECT_WITH_DB, 0, true)
        );
    }

    fn store(cache: &mut ResultCache, k: &CacheKey, frames: &[u8], ttl_ms: u64, now: Instant) {
        cache.start_fill(
            1,
            9,
            k.clone(),
            Duration::from_millis(ttl_ms),
            tables(&["t"]),
        );
        cache.capture(1, 9, frames);
        cache.finish_fill(1, 9, Some(end(SERVER_STATUS_AUTOCOMMIT)), now);
    }

    #[test]
    fn hits_until_the_ttl_then_misses() {
        let t0 = Instant::now();
        let mut cache = ResultCache::new(1 << 20, 1 << 16);
        let k = key("SELECT a FROM t");
        assert!(cache.lookup(&k, t0).is_none());
        store(&mut cache, &k, &result(1, false), 100, t0);
        let hit = cache.lookup(&k, t0 + Duration::from_millis(99)).unwrap();
        assert_eq!(&*hit.frames, &result(1, false)[..]);
        assert_eq!(hit.end.row_count, -1);
        assert!(cache.lookup(&k, t0 + Duration::from_millis(100)).is_none());
        assert_eq!(cache.entries(), 0);
        assert_eq!(cache.bytes(), 0);
        let c = cache.counters;
        assert_eq!((c.hits, c.misses, c.expired, c.stores), (1, 2, 1, 1));
        // Another session, schema or option is another key.
        store(&mut cache, &k, &result(1, false), 100, t0);
        for other in [
            CacheKey {
                session: 8,
                ..k.clone()
            },
            CacheKey {
                schema: None,
                ..k.clone()
            },
            CacheKey {
                pool: 1,
                ..k.clone()
            },
            CacheKey {
                capabilities: shaping_capabilities(
                    CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF,
                    0,
                    false,
                ),
                ..k.clone()
            },
        ] {
            assert!(cache.lookup(&other, t0).is_none(), "{other:?}");
        }
    }

    #[test]
    fn identical_reads_in_flight_wait_for_the_first() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let mut cache = ResultCache::new(1 << 20, 1 << 16);
        let k = key("SELECT a FROM t");
        let w = |client: usize| Waiter {
            client,
            serial: client as u64,
            read_at: t0,
        };
        // Nobody runs it yet: no waiting.
        assert!(!cache.wait_for(&k, w(2), far));
        cache.start_fill(1, 1, k.clone(), Duration::from_secs(1), tables(&["t"]));
        assert!(
            !cache.wait_for(&k, w(1), far),
            "the leader waits for nobody"
        );
        assert!(cache.wait_for(&k, w(2), far));
        assert!(cache.wait_for(&k, w(3), far));
        assert!(!cache.wait_for(&key("SELECT b FROM t"), w(4), far));
        assert!(cache.is_waiting(2, 2) && !cache.is_waiting(2, 9));
        cache.capture(1, 1, &result(1, true));
        let (waiting, stored) = cache.finish_fill(1, 1, Some(end(0)), t0);
        assert_eq!(waiting, vec![w(2), w(3)]);
        assert_eq!(stored, Some(Shared::Stored(k.clone())));
        assert!(!cache.is_waiting(2, 2));
        assert_eq!(cache.counters.coalesced, 2);
        // An answer that cannot be cached: the waiters run their own.
        let k2 = key("SELECT b FROM t");
        cache.start_fill(1, 1, k2.clone(), Duration::from_secs(1), tables(&["t"]));
        assert!(cache.wait_for(&k2, w(2), far));
        assert_eq!(cache.finish_fill(1, 1, None, t0), (vec![w(2)], None));
        // The leader's command ends otherwise (an error, it left).
        cache.start_fill(1, 1, k2.clone(), Duration::from_secs(1), tables(&["t"]));
        assert!(cache.wait_for(&k2, w(2), far));
        assert!(cache.stranded(|_, _| true).is_empty());
        assert_eq!(cache.stranded(|_, _| false), vec![w(2)]);
        assert!(!cache.wait_for(&k2, w(3), far), "no leader any more");
        cache.start_fill(1, 1, k2.clone(), Duration::from_secs(1), tables(&["t"]));
        assert!(cache.wait_for(&k2, w(2), far));
        cache.client_left(1);
        assert!(cache.is_waiting(2, 2), "until the next periodic pass");
        assert_eq!(cache.stranded(|_, _| true), vec![w(2)]);
        assert!(!cache.is_waiting(2, 2));
    }

    #[test]
    fn bounded_with_lru_eviction_and_a_size_limit() {
        let t0 = Instant::now();
        let frames = result(1, true);
        let one = frames.len() + "SELECT 0".len() + 3 + 4 + 8 + ENTRY_OVERHEAD;
        let mut cache = ResultCache::new(3 * one, 1 << 16);
        for i in 0..3 {
            store(&mut cache, &key(&format!("SELECT {i}")), &frames, 1000, t0);
        }
        assert_eq!(cache.entries(), 3);
        // SELECT 0 used: SELECT 1 is now the least recently used.
        assert!(cache.lookup(&key("SELECT 0"), t0).is_some());
        store(&mut cache, &key("SELECT 3"), &frames, 1000, t0);
        assert_eq!(cache.entries(), 3);
        assert!(cache.bytes() <= 3 * one);
        assert!(cache.lookup(&key("SELECT 1"), t0).is_none());
        assert!(cache.lookup(&key("SELECT 0"), t0).is_some());
        assert_eq!(cache.counters.evictions, 1);
        // Larger than cache_max_result_size: never stored, in any piece.
        let mut small = ResultCache::new(1 << 20, frames.len() - 1);
        small.start_fill(
            1,
            9,
            key("SELECT x"),
            Duration::from_secs(1),
            tables(&["t"]),
        );
        small.capture(1, 9, &frames[..10]);
        small.capture(1, 9, &frames[10..]);
        small.finish_fill(1, 9, Some(end(0)), t0);
        assert_eq!((small.entries(), small.counters.too_big), (0, 1));
        // Another command's bytes, or an unclean end, store nothing.
        small.start_fill(
            1,
            9,
            key("SELECT y"),
            Duration::from_secs(1),
            tables(&["t"]),
        );
        small.forget_fill(1);
        small.capture(1, 9, b"x");
        small.finish_fill(1, 9, Some(end(0)), t0);
        small.start_fill(
            1,
            9,
            key("SELECT y"),
            Duration::from_secs(1),
            tables(&["t"]),
        );
        small.capture(1, 10, b"x");
        small.finish_fill(1, 9, None, t0);
        assert_eq!(small.entries(), 0);
    }

    #[test]
    fn writes_make_reads_of_their_tables_stale() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let mut cache = ResultCache::new(1 << 20, 1 << 16);
        let (kt, ku) = (key("SELECT a FROM t"), key("SELECT a FROM u"));
        let fill = |cache: &mut ResultCache, client: usize, k: &CacheKey, t: &str| {
            cache.start_fill(client, 9, k.clone(), Duration::from_secs(60), tables(&[t]));
        };
        let done = |cache: &mut ResultCache, client: usize| {
            cache.capture(client, 9, &result(1, false));
            cache.finish_fill(client, 9, Some(end(0)), t0).1
        };
        fill(&mut cache, 1, &kt, "t");
        done(&mut cache, 1);
        fill(&mut cache, 1, &ku, "u");
        done(&mut cache, 1);
        // A read of t in progress when a write of t begins.
        fill(&mut cache, 2, &key("SELECT b FROM t"), "t");
        cache.write_begins(7, Some(&tables(&["t"])));
        assert!(
            cache.lookup(&kt, t0).is_none(),
            "stale from the write's start"
        );
        assert!(cache.lookup(&ku, t0).is_some(), "another table");
        // Reads of t that begin during the write are not stored, nor
        // waited for; their answer goes to who waited before.
        fill(&mut cache, 3, &kt, "t");
        assert!(!cache.wait_for(
            &kt,
            Waiter {
                client: 4,
                serial: 1,
                read_at: t0
            },
            far
        ));
        assert!(matches!(done(&mut cache, 3), Some(Shared::Unkept(_))));
        assert!(matches!(done(&mut cache, 2), Some(Shared::Unkept(_))));
        cache.writes_end(7);
        assert!(cache.lookup(&kt, t0).is_none());
        // A read that begins after the write's end is fresh.
        fill(&mut cache, 3, &kt, "t");
        assert!(matches!(done(&mut cache, 3), Some(Shared::Stored(_))));
        assert!(cache.lookup(&kt, t0).is_some());
        // Begun before a write's end, ended after: stale.
        fill(&mut cache, 3, &kt, "t");
        cache.write_begins(7, Some(&tables(&["t"])));
        cache.writes_end(7);
        assert!(matches!(done(&mut cache, 3), Some(Shared::Unkept(_))));
        // A write of unknown tables: everything; until it ends, nothing is
        // stored; a client that leaves ends its writes once its answer
        // is no longer read.
        fill(&mut cache, 3, &kt, "t");
        done(&mut cache, 3);
        cache.write_begins(8, None);
        assert!(cache.lookup(&ku, t0).is_none() && cache.lookup(&kt, t0).is_none());
        cache.client_left(8);
        fill(&mut cache, 3, &kt, "t");
        assert!(matches!(done(&mut cache, 3), Some(Shared::Unkept(_))));
        cache.left_writes_end(t0, |_| true);
        fill(&mut cache, 3, &kt, "t");
        assert!(matches!(done(&mut cache, 3), Some(Shared::Unkept(_))));
        cache.left_writes_end(t0, |stamp| stamp < t0);
        fill(&mut cache, 3, &kt, "t");
        assert!(matches!(done(&mut cache, 3), Some(Shared::Stored(_))));
        let c = cache.counters;
        assert_eq!((c.invalidations, c.invalidated), (3, 8));
        assert!(!cache.has_pending_writes());
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline() {
        let t0 = Instant::now();
        let mut cache = ResultCache::new(1 << 20, 1 << 16);
        let k = key("SELECT a FROM t");
        let w = |client: usize| Waiter {
            client,
            serial: 1,
            read_at: t0,
        };
        cache.start_fill(1, 1, k.clone(), Duration::from_secs(1), tables(&["t"]));
        let soon = t0 + Duration::from_millis(100);
        assert!(cache.wait_for(&k, w(2), soon));
        assert!(cache.wait_for(&k, w(3), soon + Duration::from_secs(1)));
        assert_eq!(cache.next_deadline(), Some(soon));
        assert!(cache.expired(soon - Duration::from_millis(1)).is_empty());
        assert_eq!(cache.expired(soon), vec![w(2)]);
        assert!(!cache.is_waiting(2, 1) && cache.is_waiting(3, 1));
        cache.capture(1, 1, &result(1, true));
        assert_eq!(cache.finish_fill(1, 1, Some(end(0)), t0).0, vec![w(3)]);
    }
}
