//! One snapshot out of several event loops' (`[funnel] threads = N`): each
//! loop has its own clients, its own share of every pool's backends and
//! limits, its own counters and histograms. The merged snapshot is to mean
//! what one engine's would, so the admin side (console, `/metrics`,
//! `/stats.json`, live page) reads it unchanged.
//!
//! Every struct is built field by field (no `..first.clone()`): a field
//! added later fails to compile here until someone decides how it merges.

use std::collections::HashMap;
use std::sync::Arc;

use super::{
    BackendCounts, CacheStats, ClientCounts, Counters, Hist, LatencyStat, PoolLatency,
    PoolSnapshot, QueryStat, RuleRow, SecondLatency, SecondSummary, ServerSnapshot, Snapshot,
};

/// `QueryStat::pool` of a row whose pool its loop's snapshot did not list:
/// out of range of any pool list, so the admin side shows "?" as it would
/// for one loop's.
const UNKNOWN_POOL: usize = usize::MAX;

/// The snapshots of all loops as one. None only for no parts; a single
/// part is returned as it is.
pub fn merge_snapshots(mut parts: Vec<Box<Snapshot>>) -> Option<Box<Snapshot>> {
    if parts.len() <= 1 {
        return parts.pop();
    }
    let all: Vec<&Snapshot> = parts.iter().map(|p| p.as_ref()).collect();
    let (first, _) = all.split_first()?;
    let (pools, pool_maps) = merge_pools(&all);
    let queries = merge_queries(&all, &pool_maps);
    let mut clients: Vec<_> = all.iter().flat_map(|s| s.clients.iter().cloned()).collect();
    clients.sort_by_key(|c| c.id);
    let mut counters = Counters::default();
    for s in &all {
        counters.add(&s.counters);
    }
    Some(Box::new(Snapshot {
        taken_at: all.iter().map(|s| s.taken_at).max()?,
        uptime: all.iter().map(|s| s.uptime).max()?,
        version: first.version,
        // A loop that has not reached the server yet does not know it.
        backend_version: all.iter().find_map(|s| s.backend_version.clone()),
        backend_address: first.backend_address.clone(),
        paused: all.iter().any(|s| s.paused),
        shutting_down: all.iter().any(|s| s.shutting_down),
        counters,
        clients_connected: sum(all.iter().map(|s| s.clients_connected)),
        clients_handshaking: sum(all.iter().map(|s| s.clients_handshaking)),
        pools,
        servers: merge_servers(&all),
        clients,
        backends: all
            .iter()
            .flat_map(|s| s.backends.iter().cloned())
            .collect(),
        config_text: first.config_text.clone(),
        // Process-wide, not divided among the loops.
        max_client_connections: first.max_client_connections,
        buffered_bytes: sum(all.iter().map(|s| s.buffered_bytes)),
        // A limit per result, not a share.
        max_buffered_result: first.max_buffered_result,
        // Each loop reports its share of this one.
        max_buffered_total: sum(all.iter().map(|s| s.max_buffered_total)),
        prepared_stmts: sum(all.iter().map(|s| s.prepared_stmts)),
        // Counted across loops (each reports the whole limit).
        max_prepared_stmt_count: first.max_prepared_stmt_count,
        health_backlog_ratio: first.health_backlog_ratio,
        health_pools: first.health_pools.clone(),
        queries,
        rules: merge_rules(&all),
        cache: merge_cache(all.iter().map(|s| &s.cache)),
    }))
}

/// Saturating: a "no limit" figure near `usize::MAX` must not overflow.
fn sum(values: impl Iterator<Item = usize>) -> usize {
    values.fold(0, usize::saturating_add)
}

fn sum_u64(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

fn sum_u32(values: impl Iterator<Item = u32>) -> u32 {
    values.fold(0, u32::saturating_add)
}

/// The `k`-th element from the end (0: the last).
fn from_newest<T>(items: &[T], k: usize) -> Option<&T> {
    items.len().checked_sub(k + 1).and_then(|i| items.get(i))
}

/// Items grouped by a key, groups in order of first appearance.
struct Groups<'a, T> {
    index: HashMap<&'a str, usize>,
    groups: Vec<Vec<&'a T>>,
}

impl<'a, T> Groups<'a, T> {
    fn new() -> Self {
        Groups {
            index: HashMap::new(),
            groups: Vec::new(),
        }
    }

    /// Adds `item` to its key's group; returns that group's position.
    fn add(&mut self, key: &'a str, item: &'a T) -> usize {
        let next = self.groups.len();
        let at = *self.index.entry(key).or_insert(next);
        match self.groups.get_mut(at) {
            Some(g) => g.push(item),
            None => self.groups.push(vec![item]),
        }
        at
    }
}

// ---------------------------------------------------------------------------
// Pools

/// The pools matched by name (a pool may be missing from some loops: pools
/// are created on demand), and for each part, the merged position of each
/// of its pools (for `QueryStat::pool`).
fn merge_pools(parts: &[&Snapshot]) -> (Vec<PoolSnapshot>, Vec<Vec<usize>>) {
    let mut groups = Groups::new();
    let maps: Vec<Vec<usize>> = parts
        .iter()
        .map(|s| {
            s.pools
                .iter()
                .map(|p| groups.add(p.name.as_str(), p))
                .collect()
        })
        .collect();
    let pools: Vec<PoolSnapshot> = groups.groups.iter().filter_map(|g| merge_pool(g)).collect();
    // Listed in the order of the loop that lists the most (the first such):
    // a loop leaves out a removed user's pool once its own part has
    // drained, and that pool must not move behind the others.
    let fullest = parts
        .iter()
        .enumerate()
        .max_by_key(|(i, s)| (s.pools.len(), std::cmp::Reverse(*i)))
        .map(|(_, s)| *s);
    let rank = |name: &str| {
        fullest
            .and_then(|s| s.pools.iter().position(|p| p.name == name))
            .unwrap_or(usize::MAX)
    };
    let mut order: Vec<usize> = (0..pools.len()).collect();
    order.sort_by_key(|&g| (rank(&pools[g].name), g));
    let mut new_index = vec![0; pools.len()];
    for (at, &g) in order.iter().enumerate() {
        new_index[g] = at;
    }
    let mut slots: Vec<Option<PoolSnapshot>> = pools.into_iter().map(Some).collect();
    let pools = order.iter().filter_map(|&g| slots[g].take()).collect();
    let maps = maps
        .into_iter()
        .map(|m| {
            m.into_iter()
                .map(|g| new_index.get(g).copied().unwrap_or(g))
                .collect()
        })
        .collect();
    (pools, maps)
}

fn merge_pool(group: &[&PoolSnapshot]) -> Option<PoolSnapshot> {
    let (first, rest) = group.split_first()?;
    if rest.is_empty() {
        return Some((*first).clone());
    }
    let mut counters = Counters::default();
    for p in group {
        counters.add(&p.counters);
    }
    Some(PoolSnapshot {
        name: first.name.clone(),
        paused: group.iter().any(|p| p.paused),
        found_rows: first.found_rows,
        backend_user: first.backend_user.clone(),
        // Each loop runs a share of these; the shares add up to the
        // configured value (0 stays 0).
        configured_connections: sum(group.iter().map(|p| p.configured_connections)),
        max_pinned_backends: sum(group.iter().map(|p| p.max_pinned_backends)),
        backlog_size: sum(group.iter().map(|p| p.backlog_size)),
        queue_timeout: first.queue_timeout,
        clients: merge_client_counts(group.iter().map(|p| &p.clients)),
        backends: merge_backend_counts(group.iter().map(|p| &p.backends)),
        backlog_depth: sum(group.iter().map(|p| p.backlog_depth)),
        // The loops' maxima need not have been at the same moment: their
        // sum is an upper bound of the deepest combined backlog, their max
        // a lower one. The sum is what the combined backlog_size (a sum)
        // is compared with.
        backlog_max_since_start: sum(group.iter().map(|p| p.backlog_max_since_start)),
        backend_up: group.iter().any(|p| p.backend_up),
        last_backend_error: group.iter().find_map(|p| p.last_backend_error.clone()),
        counters,
        latency: merge_pool_latency(&group.iter().map(|p| &p.latency).collect::<Vec<_>>()),
        oldest_wait: group.iter().map(|p| p.oldest_wait).max()?,
        buffered_bytes: sum(group.iter().map(|p| p.buffered_bytes)),
        prepared_stmts: sum(group.iter().map(|p| p.prepared_stmts)),
    })
}

fn merge_client_counts<'a>(parts: impl Iterator<Item = &'a ClientCounts>) -> ClientCounts {
    let mut out = ClientCounts::default();
    for c in parts {
        out.connected += c.connected;
        out.idle += c.idle;
        out.queued += c.queued;
        out.running += c.running;
        for &(cause, n) in &c.pinned {
            match out.pinned.iter_mut().find(|(known, _)| *known == cause) {
                Some((_, total)) => *total += n,
                None => out.pinned.push((cause, n)),
            }
        }
    }
    out
}

fn merge_backend_counts<'a>(parts: impl Iterator<Item = &'a BackendCounts>) -> BackendCounts {
    let mut out = BackendCounts::default();
    for b in parts {
        out.idle += b.idle;
        out.busy += b.busy;
        out.pinned += b.pinned;
        out.connecting += b.connecting;
        out.internal += b.internal;
        out.broken += b.broken;
    }
    out
}

// ---------------------------------------------------------------------------
// Latency

/// The union of the parts' distributions; the complete seconds are aligned
/// from the newest end (each loop closes its seconds on its own tick, all
/// within a second of each other; a loop's pool created later has fewer).
fn merge_latency(parts: &[&LatencyStat]) -> LatencyStat {
    let len = parts.iter().map(|l| l.recent.len()).max().unwrap_or(0);
    let recent = (0..len)
        .rev()
        .map(|k| {
            merge_second(
                parts
                    .iter()
                    .filter_map(|l| from_newest(&l.recent, k))
                    .collect(),
            )
        })
        .collect();
    LatencyStat {
        total: Hist::merge(parts.iter().map(|l| &l.total)),
        current: Hist::merge(parts.iter().map(|l| &l.current)),
        recent,
    }
}

/// One second of several loops. Empty seconds are one shared slot in the
/// engine, and a second only one loop saw is kept as it is: only seconds
/// with samples in two or more loops are copied.
fn merge_second(slots: Vec<&Arc<Hist>>) -> Arc<Hist> {
    let with_samples: Vec<&Arc<Hist>> = slots.iter().copied().filter(|h| h.count > 0).collect();
    match (with_samples.as_slice(), slots.first()) {
        ([only], _) => Arc::clone(only),
        ([], Some(empty)) => Arc::clone(empty),
        ([], None) => Arc::new(Hist::default()),
        (many, _) => Arc::new(Hist::merge(many.iter().copied().map(|h| h.as_ref()))),
    }
}

fn merge_pool_latency(parts: &[&PoolLatency]) -> PoolLatency {
    let measure = |pick: fn(&PoolLatency) -> &LatencyStat| {
        merge_latency(&parts.iter().map(|l| pick(l)).collect::<Vec<_>>())
    };
    let len = parts.iter().map(|l| l.history.len()).max().unwrap_or(0);
    let history = (0..len)
        .rev()
        .map(|k| {
            let seen: Vec<&PoolLatency> = parts
                .iter()
                .copied()
                .filter(|l| from_newest(&l.history, k).is_some())
                .collect();
            merge_history_second(&seen, k)
        })
        .collect();
    PoolLatency {
        queue_wait: measure(|l| &l.queue_wait),
        service: measure(|l| &l.service),
        end_to_end: measure(|l| &l.end_to_end),
        backlog_max_last_minute: sum(parts.iter().map(|l| l.backlog_max_last_minute)),
        history,
    }
}

/// The `k`-th newest second of the pools' histories, from the parts that
/// have it.
fn merge_history_second(parts: &[&PoolLatency], k: usize) -> SecondSummary {
    let summaries: Vec<&SecondSummary> = parts
        .iter()
        .filter_map(|l| from_newest(&l.history, k))
        .collect();
    if let [only] = summaries.as_slice() {
        return **only;
    }
    let measure = |summary: fn(&SecondSummary) -> SecondLatency,
                   stat: fn(&PoolLatency) -> &LatencyStat| {
        // A loop closes a second's summary and its histogram together, so
        // the k-th newest of each are the same second.
        let seconds: Option<Vec<&Arc<Hist>>> = parts
            .iter()
            .map(|l| from_newest(&stat(l).recent, k))
            .collect();
        merge_second_latency(
            summaries.iter().map(|s| summary(s)),
            seconds.map(merge_second).as_deref(),
        )
    };
    SecondSummary {
        backlog_max: sum_u32(summaries.iter().map(|s| s.backlog_max)),
        queue_wait: measure(|s| s.queue_wait, |l| &l.queue_wait),
        service: measure(|s| s.service, |l| &l.service),
        end_to_end: measure(|s| s.end_to_end, |l| &l.end_to_end),
    }
}

/// Counts add and the max is the max. Quantiles do not average: p50 and
/// p99 come from `merged`, the union of the loops' histograms of that
/// second, when every loop still has it (the last
/// [`WINDOW_SECONDS`](crate::server::stats::WINDOW_SECONDS)); for older
/// seconds only the summaries are left, and their max is taken (an upper
/// bound of the true quantile, never below any loop's).
fn merge_second_latency(
    parts: impl Iterator<Item = SecondLatency>,
    merged: Option<&Hist>,
) -> SecondLatency {
    let mut out = SecondLatency::default();
    for p in parts {
        out.count = out.count.saturating_add(p.count);
        out.p50_us = out.p50_us.max(p.p50_us);
        out.p99_us = out.p99_us.max(p.p99_us);
        out.max_us = out.max_us.max(p.max_us);
    }
    if let Some(h) = merged {
        let exact = SecondLatency::of(h);
        out.p50_us = exact.p50_us;
        out.p99_us = exact.p99_us;
    }
    out
}

// ---------------------------------------------------------------------------
// Servers

fn merge_servers(parts: &[&Snapshot]) -> Vec<ServerSnapshot> {
    let mut groups = Groups::new();
    for s in parts {
        for server in &s.servers {
            groups.add(server.name.as_str(), server);
        }
    }
    groups
        .groups
        .iter()
        .filter_map(|g| merge_server(g))
        .collect()
}

/// What a loop's own connections and turns give adds up; what the health
/// checks give is the same in every loop (each gets every report), so the
/// first's is kept, and its counts of rotation changes are not added.
fn merge_server(group: &[&ServerSnapshot]) -> Option<ServerSnapshot> {
    let (first, rest) = group.split_first()?;
    if rest.is_empty() {
        return Some((*first).clone());
    }
    Some(ServerSnapshot {
        name: first.name.clone(),
        address: first.address.clone(),
        role: first.role,
        weight: first.weight,
        removed: first.removed,
        out: first.out.clone(),
        checked: first.checked,
        last_check_ago: first.last_check_ago,
        check_time: first.check_time,
        read_only: first.read_only,
        lag: first.lag,
        last_error: first.last_error.clone(),
        went_out: group.iter().map(|s| s.went_out).max()?,
        came_back: group.iter().map(|s| s.came_back).max()?,
        // Counted by each loop for its own connections.
        connect_failures: sum_u64(group.iter().map(|s| s.connect_failures)),
        lost: sum_u64(group.iter().map(|s| s.lost)),
        service: merge_latency(&group.iter().map(|s| &s.service).collect::<Vec<_>>()),
        connections: sum(group.iter().map(|s| s.connections)),
        in_use: sum(group.iter().map(|s| s.in_use)),
        running: sum(group.iter().map(|s| s.running)),
        // Each loop has a share of the limit; a loop without one means
        // no limit.
        max_concurrency: group
            .iter()
            .map(|s| s.max_concurrency)
            .try_fold(0, |total: usize, n| Some(total.saturating_add(n?))),
        waiting_users: sum(group.iter().map(|s| s.waiting_users)),
        turn_waits: sum_u64(group.iter().map(|s| s.turn_waits)),
        // Learnt from a connection's greeting: a loop without one yet
        // does not know it.
        version: group.iter().find_map(|s| s.version.clone()),
    })
}

// ---------------------------------------------------------------------------
// Query shapes, rules, cache

/// Rows of the same shape in the same pool add up; each part's pool index
/// is translated to the merged pools' (`pool_maps`, from `merge_pools`).
fn merge_queries(parts: &[&Snapshot], pool_maps: &[Vec<usize>]) -> Vec<QueryStat> {
    let mut rows: Vec<QueryStat> = Vec::new();
    let mut index: HashMap<(usize, &str), usize> = HashMap::new();
    for (s, map) in parts.iter().zip(pool_maps) {
        for q in &s.queries {
            let pool = map.get(q.pool).copied().unwrap_or(UNKNOWN_POOL);
            match index.get(&(pool, q.shape.as_str())) {
                Some(&i) => {
                    if let Some(row) = rows.get_mut(i) {
                        row.count = row.count.saturating_add(q.count);
                        row.errors = row.errors.saturating_add(q.errors);
                        row.total_us = row.total_us.saturating_add(q.total_us);
                        row.max_us = row.max_us.max(q.max_us);
                    }
                }
                None => {
                    index.insert((pool, q.shape.as_str()), rows.len());
                    rows.push(QueryStat {
                        pool,
                        shape: q.shape.clone(),
                        count: q.count,
                        errors: q.errors,
                        total_us: q.total_us,
                        max_us: q.max_us,
                    });
                }
            }
        }
    }
    // The engine's order: most total time first, then most executions.
    rows.sort_by(|a, b| b.total_us.cmp(&a.total_us).then(b.count.cmp(&a.count)));
    rows
}

/// Rules matched by name (every loop loads the same ones, in the same
/// order); should a name occur twice, the n-th occurrences are matched.
fn merge_rules(parts: &[&Snapshot]) -> Vec<RuleRow> {
    let mut rows: Vec<RuleRow> = Vec::new();
    let mut index: HashMap<(&str, usize), usize> = HashMap::new();
    for s in parts {
        let mut occurrences: HashMap<&str, usize> = HashMap::new();
        for r in &s.rules {
            let nth = occurrences.entry(r.name.as_str()).or_insert(0);
            let key = (r.name.as_str(), *nth);
            *nth += 1;
            match index.get(&key).and_then(|&i| rows.get_mut(i)) {
                Some(row) => {
                    row.hits = row.hits.saturating_add(r.hits);
                    row.cached = row.cached.saturating_add(r.cached);
                    row.delayed = row.delayed.saturating_add(r.delayed);
                    row.invalidated = row.invalidated.saturating_add(r.invalidated);
                }
                None => {
                    index.insert(key, rows.len());
                    rows.push(r.clone());
                }
            }
        }
    }
    rows
}

/// Each loop has its own cache with a share of `cache_size`: everything adds.
fn merge_cache<'a>(parts: impl Iterator<Item = &'a CacheStats>) -> CacheStats {
    let mut out = CacheStats::default();
    for c in parts {
        out.entries = out.entries.saturating_add(c.entries);
        out.bytes = out.bytes.saturating_add(c.bytes);
        out.limit = out.limit.saturating_add(c.limit);
        out.hits += c.hits;
        out.misses += c.misses;
        out.stores += c.stores;
        out.evictions += c.evictions;
        out.expired += c.expired;
        out.too_big += c.too_big;
        out.coalesced += c.coalesced;
        out.invalidations += c.invalidations;
        out.invalidated += c.invalidated;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{BackendRow, ClientRow};
    use std::time::{Duration, SystemTime};

    /// A distribution of small values (each its own bucket, as
    /// HdrHistogram's are below 2048 µs).
    fn hist(values: &[u64]) -> Hist {
        let mut buckets: Vec<(u64, u64)> = Vec::new();
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        for v in sorted {
            match buckets.last_mut() {
                Some(b) if b.0 == v => b.1 += 1,
                _ => buckets.push((v, 1)),
            }
        }
        Hist {
            count: values.len() as u64,
            sum_us: values.iter().sum(),
            min_us: values.iter().copied().min().unwrap_or(0),
            max_us: values.iter().copied().max().unwrap_or(0),
            buckets,
        }
    }

    fn pool(name: &str) -> PoolSnapshot {
        PoolSnapshot {
            name: name.to_string(),
            paused: false,
            found_rows: false,
            backend_user: name.to_string(),
            configured_connections: 0,
            max_pinned_backends: 0,
            backlog_size: 0,
            queue_timeout: Duration::from_secs(1),
            clients: ClientCounts::default(),
            backends: BackendCounts::default(),
            backlog_depth: 0,
            backlog_max_since_start: 0,
            backend_up: false,
            last_backend_error: None,
            counters: Counters::default(),
            latency: PoolLatency::default(),
            oldest_wait: Duration::ZERO,
            buffered_bytes: 0,
            prepared_stmts: 0,
        }
    }

    fn server(name: &str) -> ServerSnapshot {
        ServerSnapshot {
            name: name.to_string(),
            ..ServerSnapshot::default()
        }
    }

    fn snapshot(pools: Vec<PoolSnapshot>) -> Snapshot {
        Snapshot {
            taken_at: SystemTime::UNIX_EPOCH,
            uptime: Duration::ZERO,
            version: "test",
            backend_version: None,
            backend_address: "127.0.0.1:3306".to_string(),
            paused: false,
            shutting_down: false,
            counters: Counters::default(),
            clients_connected: 0,
            clients_handshaking: 0,
            pools,
            servers: Vec::new(),
            clients: Vec::new(),
            backends: Vec::new(),
            config_text: String::new(),
            max_client_connections: 0,
            buffered_bytes: 0,
            max_buffered_result: 0,
            max_buffered_total: 0,
            prepared_stmts: 0,
            max_prepared_stmt_count: 0,
            health_backlog_ratio: 0.9,
            health_pools: Vec::new(),
            queries: Vec::new(),
            rules: Vec::new(),
            cache: CacheStats::default(),
        }
    }

    fn merge(parts: Vec<Snapshot>) -> Snapshot {
        let merged = merge_snapshots(parts.into_iter().map(Box::new).collect());
        *merged.expect("parts given")
    }

    fn pool_named<'a>(s: &'a Snapshot, name: &str) -> &'a PoolSnapshot {
        s.pools
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pool {name}"))
    }

    fn client(id: u32) -> ClientRow {
        ClientRow {
            id,
            user: "app".to_string(),
            host: "h".to_string(),
            state: "idle",
            schema: None,
            pinned_backend: None,
            pin_cause: None,
            prepared_stmts: 0,
            user_vars: 0,
            busy_for: Duration::ZERO,
            bytes_out: 0,
            event_loop: 1,
        }
    }

    fn query(pool: usize, shape: &str, count: u64, total_us: u64, max_us: u64) -> QueryStat {
        QueryStat {
            pool,
            shape: shape.to_string(),
            count,
            errors: count / 2,
            total_us,
            max_us,
        }
    }

    fn rule(name: &str, hits: u64) -> RuleRow {
        RuleRow {
            name: name.to_string(),
            conditions: format!("user = {name:?}"),
            action: "cache_ttl_ms = 1000".to_string(),
            hits,
            cached: hits / 2,
            delayed: hits / 4,
            invalidated: 1,
        }
    }

    #[test]
    fn no_parts_is_none() {
        assert!(merge_snapshots(Vec::new()).is_none());
    }

    #[test]
    fn a_single_part_is_returned_as_it_is() {
        let mut s = snapshot(vec![pool("app")]);
        s.max_buffered_total = 7;
        s.queries = vec![query(5, "SELECT ?", 1, 1, 1)];
        let part = Box::new(s);
        let at: *const Snapshot = &*part;
        let merged = merge_snapshots(vec![part]).expect("one part");
        assert!(std::ptr::eq(merged.as_ref(), at));
        assert_eq!(merged.max_buffered_total, 7);
        assert_eq!(merged.queries[0].pool, 5);
    }

    #[test]
    fn pools_are_matched_by_name_whatever_their_order() {
        let mut a_app = pool("app");
        a_app.configured_connections = 5;
        a_app.max_pinned_backends = 2;
        a_app.backlog_size = 50;
        a_app.clients.connected = 3;
        a_app.clients.pinned = vec![("transaction", 1), ("lock", 2)];
        a_app.backends.idle = 4;
        a_app.backlog_depth = 1;
        a_app.backlog_max_since_start = 6;
        a_app.counters.requests = 10;
        a_app.oldest_wait = Duration::from_millis(30);
        a_app.buffered_bytes = 100;
        a_app.prepared_stmts = 2;
        a_app.latency.backlog_max_last_minute = 3;
        a_app.queue_timeout = Duration::from_millis(250);
        let mut a_report = pool("report");
        a_report.configured_connections = 2;
        a_report.paused = true;

        let mut b_app = pool("app");
        b_app.configured_connections = 5;
        b_app.max_pinned_backends = 2;
        b_app.backlog_size = 50;
        b_app.clients.connected = 4;
        b_app.clients.pinned = vec![("lock", 1), ("temporary_table", 5)];
        b_app.backends.idle = 1;
        b_app.backends.broken = 2;
        b_app.backlog_depth = 2;
        b_app.backlog_max_since_start = 4;
        b_app.counters.requests = 32;
        b_app.oldest_wait = Duration::from_millis(70);
        b_app.buffered_bytes = 20;
        b_app.prepared_stmts = 3;
        b_app.latency.backlog_max_last_minute = 4;
        b_app.backend_up = true;
        b_app.last_backend_error = Some("refused".to_string());
        b_app.queue_timeout = Duration::from_millis(999);
        let mut b_twin = pool("app/found_rows");
        b_twin.found_rows = true;
        b_twin.clients.connected = 1;
        let mut b_report = pool("report");
        b_report.configured_connections = 2;

        let merged = merge(vec![
            snapshot(vec![a_app, a_report]),
            snapshot(vec![b_report, b_app, b_twin]),
        ]);
        // In the order of the loop that lists the most pools.
        let names: Vec<&str> = merged.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["report", "app", "app/found_rows"]);

        let app = pool_named(&merged, "app");
        assert_eq!(app.configured_connections, 10);
        assert_eq!(app.max_pinned_backends, 4);
        assert_eq!(app.backlog_size, 100);
        assert_eq!(app.clients.connected, 7);
        assert_eq!(
            app.clients.pinned,
            [("transaction", 1), ("lock", 3), ("temporary_table", 5)]
        );
        assert_eq!(app.backends.idle, 5);
        assert_eq!(app.backends.broken, 2);
        assert_eq!(app.backlog_depth, 3);
        assert_eq!(app.backlog_max_since_start, 10);
        assert_eq!(app.counters.requests, 42);
        assert_eq!(app.oldest_wait, Duration::from_millis(70));
        assert_eq!(app.buffered_bytes, 120);
        assert_eq!(app.prepared_stmts, 5);
        assert_eq!(app.latency.backlog_max_last_minute, 7);
        assert!(app.backend_up);
        assert!(!app.paused);
        assert_eq!(app.last_backend_error.as_deref(), Some("refused"));
        assert_eq!(app.queue_timeout, Duration::from_millis(250));

        let report = pool_named(&merged, "report");
        assert_eq!(report.configured_connections, 4);
        assert!(report.paused);
        assert!(!report.backend_up);

        let twin = pool_named(&merged, "app/found_rows");
        assert!(twin.found_rows);
        assert_eq!(twin.clients.connected, 1);
        assert_eq!(twin.configured_connections, 0);
    }

    #[test]
    fn snapshot_wide_figures_add_or_take_the_latest() {
        let mut a = snapshot(Vec::new());
        a.counters.clients_accepted = 3;
        a.clients_connected = 3;
        a.clients_handshaking = 1;
        a.buffered_bytes = 10;
        a.max_buffered_total = 1000;
        a.prepared_stmts = 4;
        a.max_prepared_stmt_count = 8;
        a.max_client_connections = 500;
        a.uptime = Duration::from_secs(9);
        a.taken_at = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        a.clients = vec![client(4), client(1)];
        a.backends = vec![BackendRow {
            pool: "app".to_string(),
            thread_id: 11,
            state: "idle",
            pinned: false,
            client_id: None,
            schema: None,
            busy_for: Duration::ZERO,
            event_loop: 1,
        }];
        a.config_text = "first".to_string();
        let mut b = snapshot(Vec::new());
        b.counters.clients_accepted = 5;
        b.clients_connected = 5;
        b.clients_handshaking = 2;
        b.buffered_bytes = 1;
        b.max_buffered_total = 1000;
        b.prepared_stmts = 1;
        b.max_prepared_stmt_count = 8;
        b.max_client_connections = 500;
        b.uptime = Duration::from_secs(10);
        b.taken_at = SystemTime::UNIX_EPOCH + Duration::from_secs(101);
        b.paused = true;
        b.backend_version = Some("11.4".to_string());
        b.clients = vec![client(2), client(3)];
        b.backends = a.backends.clone();
        b.config_text = "second".to_string();
        let c = snapshot(Vec::new());

        let merged = merge(vec![a, b, c]);
        assert_eq!(merged.counters.clients_accepted, 8);
        assert_eq!(merged.clients_connected, 8);
        assert_eq!(merged.clients_handshaking, 3);
        assert_eq!(merged.buffered_bytes, 11);
        assert_eq!(merged.max_buffered_total, 2000);
        assert_eq!(merged.prepared_stmts, 5);
        assert_eq!(merged.max_prepared_stmt_count, 8);
        assert_eq!(merged.max_client_connections, 500);
        assert_eq!(merged.uptime, Duration::from_secs(10));
        assert_eq!(
            merged.taken_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(101)
        );
        assert!(merged.paused);
        assert!(!merged.shutting_down);
        assert_eq!(merged.backend_version.as_deref(), Some("11.4"));
        assert_eq!(merged.config_text, "first");
        let ids: Vec<u32> = merged.clients.iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(merged.backends.len(), 2);
    }

    #[test]
    fn latency_histograms_are_the_union_of_the_samples() {
        let low: Vec<u64> = (1..=10).collect();
        let high: Vec<u64> = (11..=100).collect();
        let mut a = pool("app");
        a.latency.service.total = hist(&low);
        a.latency.service.current = hist(&[5]);
        a.latency.service.recent = vec![Arc::new(hist(&[1])), Arc::new(hist(&[2, 3]))];
        let mut b = pool("app");
        b.latency.service.total = hist(&high);
        b.latency.service.current = hist(&[500]);
        b.latency.service.recent = vec![Arc::new(hist(&[40]))];

        let merged = merge(vec![snapshot(vec![a]), snapshot(vec![b])]);
        let service = &pool_named(&merged, "app").latency.service;
        let all: Vec<u64> = (1..=100).collect();
        assert_eq!(service.total, hist(&all));
        for q in [0.5, 0.9, 0.99] {
            assert_eq!(service.total.quantile(q), hist(&all).quantile(q));
        }
        assert_eq!(service.total.quantile(0.5), 50);
        assert_eq!(service.current, hist(&[5, 500]));
        // Aligned from the newest second.
        let recent: Vec<Hist> = service.recent.iter().map(|h| (**h).clone()).collect();
        assert_eq!(recent, [hist(&[1]), hist(&[2, 3, 40])]);
    }

    fn second(count: u32, p50_us: u32, p99_us: u32, max_us: u32) -> SecondLatency {
        SecondLatency {
            count,
            p50_us,
            p99_us,
            max_us,
        }
    }

    #[test]
    fn history_quantiles_come_from_the_merged_seconds_else_the_max() {
        // Two seconds of history each; only the newest is still in `recent`.
        let summary = |backlog_max, end_to_end| SecondSummary {
            backlog_max,
            end_to_end,
            ..SecondSummary::default()
        };
        let mut a = pool("app");
        let a_new = hist(&[10, 10, 10]);
        a.latency.end_to_end.recent = vec![Arc::new(a_new.clone())];
        a.latency.history = vec![
            summary(1, second(2, 20, 30, 30)),
            summary(2, SecondLatency::of(&a_new)),
        ];
        let mut b = pool("app");
        let b_new = hist(&[100]);
        b.latency.end_to_end.recent = vec![Arc::new(b_new.clone())];
        b.latency.history = vec![
            summary(3, second(1, 60, 60, 60)),
            summary(4, SecondLatency::of(&b_new)),
        ];
        // A third loop whose pool has only the newest second.
        let mut c = pool("app");
        c.latency.end_to_end.recent = vec![Arc::new(Hist::default())];
        c.latency.history = vec![summary(5, SecondLatency::default())];

        let merged = merge(vec![
            snapshot(vec![a]),
            snapshot(vec![b]),
            snapshot(vec![c]),
        ]);
        let history = &pool_named(&merged, "app").latency.history;
        assert_eq!(history.len(), 2);
        let [older, newest] = [history[0], history[1]];
        assert_eq!(older.backlog_max, 4);
        assert_eq!(newest.backlog_max, 11);
        // Older than the histograms kept: the max of the parts.
        assert_eq!(older.end_to_end, second(3, 60, 60, 60));
        // Samples 10, 10, 10, 100: the median is 10 (not the mean of the
        // parts' medians, nor their max), the 99th percentile 100.
        assert_eq!(newest.end_to_end, second(4, 10, 100, 100));
        assert_eq!(
            newest.end_to_end,
            SecondLatency::of(&hist(&[10, 10, 10, 100]))
        );
    }

    #[test]
    fn servers_add_their_own_figures_and_keep_the_health_reports() {
        let mut a = server("db1");
        a.address = "10.0.0.1:3306".to_string();
        a.out = Some("lagging".to_string());
        a.lag = Some(Duration::from_secs(3));
        a.went_out = 2;
        a.came_back = 1;
        a.connect_failures = 1;
        a.lost = 2;
        a.connections = 3;
        a.in_use = 2;
        a.running = 1;
        a.max_concurrency = Some(4);
        a.waiting_users = 1;
        a.turn_waits = 7;
        a.service.total = hist(&[1, 2]);
        let mut b = server("db1");
        b.address = "10.0.0.9:3306".to_string();
        b.went_out = 2;
        b.came_back = 1;
        b.connect_failures = 4;
        b.lost = 1;
        b.connections = 5;
        b.in_use = 1;
        b.running = 1;
        b.max_concurrency = Some(4);
        b.turn_waits = 3;
        b.service.total = hist(&[3]);
        b.version = Some("8.0.36".to_string());
        let mut sa = snapshot(Vec::new());
        sa.servers = vec![a, server("db2")];
        let mut sb = snapshot(Vec::new());
        sb.servers = vec![server("db3"), b];

        let merged = merge(vec![sa, sb]);
        let names: Vec<&str> = merged.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db1", "db2", "db3"]);
        let db1 = &merged.servers[0];
        assert_eq!(db1.address, "10.0.0.1:3306");
        assert_eq!(db1.out.as_deref(), Some("lagging"));
        assert_eq!(db1.lag, Some(Duration::from_secs(3)));
        assert_eq!((db1.went_out, db1.came_back), (2, 1));
        assert_eq!((db1.connect_failures, db1.lost), (5, 3));
        assert_eq!((db1.connections, db1.in_use, db1.running), (8, 3, 2));
        assert_eq!(db1.max_concurrency, Some(8));
        assert_eq!((db1.waiting_users, db1.turn_waits), (1, 10));
        assert_eq!(db1.service.total, hist(&[1, 2, 3]));
        assert_eq!(db1.version.as_deref(), Some("8.0.36"));
    }

    #[test]
    fn a_loop_without_a_concurrency_limit_means_no_limit() {
        let mut a = snapshot(Vec::new());
        a.servers = vec![server("db1")];
        a.servers[0].max_concurrency = Some(4);
        let mut b = snapshot(Vec::new());
        b.servers = vec![server("db1")];
        let merged = merge(vec![a, b]);
        assert_eq!(merged.servers[0].max_concurrency, None);
    }

    #[test]
    fn query_rows_are_reindexed_into_the_merged_pools() {
        let mut a = snapshot(vec![pool("app"), pool("report")]);
        a.queries = vec![
            query(1, "SELECT ?", 2, 200, 150),
            query(0, "SELECT ?", 1, 10, 10),
        ];
        let mut b = snapshot(vec![pool("batch"), pool("report"), pool("app")]);
        b.queries = vec![
            query(0, "UPDATE t SET a = ?", 1, 500, 500),
            query(1, "SELECT ?", 4, 40, 90),
            query(2, "SELECT ?", 1, 5, 5),
            // A pool its loop did not list (dropped from its snapshot).
            query(9, "SELECT ?", 1, 1, 1),
        ];

        let merged = merge(vec![a, b]);
        let rows: Vec<(&str, &str, u64, u64, u64, u64)> = merged
            .queries
            .iter()
            .map(|q| {
                let pool = merged.pools.get(q.pool).map_or("?", |p| p.name.as_str());
                (
                    pool,
                    q.shape.as_str(),
                    q.count,
                    q.errors,
                    q.total_us,
                    q.max_us,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("batch", "UPDATE t SET a = ?", 1, 0, 500, 500),
                ("report", "SELECT ?", 6, 3, 240, 150),
                ("app", "SELECT ?", 2, 0, 15, 10),
                ("?", "SELECT ?", 1, 0, 1, 1),
            ]
        );
    }

    #[test]
    fn rules_and_caches_add_up() {
        let mut a = snapshot(Vec::new());
        a.rules = vec![rule("hot", 8), rule("block", 4)];
        a.cache = CacheStats {
            entries: 1,
            bytes: 2,
            limit: 3,
            hits: 4,
            misses: 5,
            stores: 6,
            evictions: 7,
            expired: 8,
            too_big: 9,
            coalesced: 10,
            invalidations: 11,
            invalidated: 12,
        };
        let mut b = snapshot(Vec::new());
        b.rules = vec![rule("hot", 16), rule("block", 0)];
        b.rules[0].conditions = "changed".to_string();
        b.cache = a.cache;

        let merged = merge(vec![a, b]);
        let mut hot = rule("hot", 24);
        hot.cached = 4 + 8;
        hot.delayed = 2 + 4;
        hot.invalidated = 2;
        let mut block = rule("block", 4);
        block.invalidated = 2;
        assert_eq!(merged.rules, [hot, block]);
        assert_eq!(
            merged.cache,
            CacheStats {
                entries: 2,
                bytes: 4,
                limit: 6,
                hits: 8,
                misses: 10,
                stores: 12,
                evictions: 14,
                expired: 16,
                too_big: 18,
                coalesced: 20,
                invalidations: 22,
                invalidated: 24,
            }
        );
    }
}
