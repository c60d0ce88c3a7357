//! The tables behind the admin console's SHOW commands, built from a
//! snapshot. Integers are counts, bytes or durations in µs (or ms where the
//! column name says so); strings are everything else.

use crate::control::Counters;
use crate::control::{Hist, LatencyStat, PoolSnapshot, Snapshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Unsigned integer (MYSQL_TYPE_LONGLONG).
    Int,
    /// Text (MYSQL_TYPE_VAR_STRING).
    Str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Int(u64),
    Str(String),
    Null,
}

impl Cell {
    pub fn text(&self) -> Option<String> {
        match self {
            Cell::Int(v) => Some(v.to_string()),
            Cell::Str(s) => Some(s.clone()),
            Cell::Null => None,
        }
    }
}

impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        Cell::Int(v)
    }
}

impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Cell::Int(v as u64)
    }
}

impl From<u32> for Cell {
    fn from(v: u32) -> Self {
        Cell::Int(u64::from(v))
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Str(v.to_string())
    }
}

impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Str(v)
    }
}

impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

/// A result set: named, typed columns and rows of cells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<(String, Kind)>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[(&str, Kind)]) -> Self {
        Table {
            columns: columns.iter().map(|(n, k)| (n.to_string(), *k)).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// Index of a column by name.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _)| n == name)
    }
}

use Kind::{Int, Str};

/// The backend's version as mysqld reports it, without MariaDB's "5.5.5-"
/// replication prefix.
pub fn backend_version(s: &Snapshot) -> Option<&str> {
    s.backend_version.as_deref().map(|v| {
        match v.strip_prefix(crate::protocol::handshake::MARIADB_RPL_HACK_PREFIX) {
            Some(rest) if !rest.is_empty() => rest,
            _ => v,
        }
    })
}

fn yes_no(b: bool) -> Cell {
    Cell::from(if b { "yes" } else { "no" })
}

fn us(d: std::time::Duration) -> Cell {
    Cell::Int(d.as_micros().min(u128::from(u64::MAX)) as u64)
}

fn ms(d: std::time::Duration) -> Cell {
    Cell::Int(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// "transaction=2 lock=1" (causes with no client left out).
pub fn pinned_causes(p: &PoolSnapshot) -> String {
    p.clients
        .pinned
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{c}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn pinned_total(p: &PoolSnapshot) -> usize {
    p.clients.pinned.iter().map(|(_, n)| n).sum()
}

pub fn show_servers(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("server", Str),
        ("address", Str),
        ("role", Str),
        ("weight", Int),
        ("state", Str),
        ("connections", Int),
        ("in_use", Int),
        ("running", Int),
        ("max_concurrency", Int),
        ("waiting_users", Int),
        ("turn_waits", Int),
        ("lag_ms", Int),
        ("read_only", Str),
        ("last_check_ms_ago", Int),
        ("check_time_us", Int),
        ("went_out", Int),
        ("came_back", Int),
        ("connect_failures", Int),
        ("lost", Int),
        ("commands", Int),
        ("service_p50_us", Int),
        ("service_p99_us", Int),
        ("last_error", Str),
        ("version", Str),
    ]);
    for v in &s.servers {
        t.push(vec![
            v.name.as_str().into(),
            v.address.as_str().into(),
            v.role.into(),
            Cell::Int(u64::from(v.weight)),
            v.state().into(),
            v.connections.into(),
            v.in_use.into(),
            v.running.into(),
            v.max_concurrency.map_or(Cell::Null, |n| n.into()),
            v.waiting_users.into(),
            Cell::Int(v.turn_waits),
            v.lag.map_or(Cell::Null, ms),
            v.read_only.map_or(Cell::Null, yes_no),
            v.last_check_ago.map_or(Cell::Null, ms),
            if v.checked {
                us(v.check_time)
            } else {
                Cell::Null
            },
            Cell::Int(v.went_out),
            Cell::Int(v.came_back),
            Cell::Int(v.connect_failures),
            Cell::Int(v.lost),
            Cell::Int(v.service.total.count),
            Cell::Int(v.service.total.quantile(0.5)),
            Cell::Int(v.service.total.quantile(0.99)),
            v.last_error.as_deref().into(),
            v.version.as_deref().into(),
        ]);
    }
    t
}

pub fn show_pools(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("pool", Str),
        ("backend_user", Str),
        ("clients", Int),
        ("clients_idle", Int),
        ("clients_queued", Int),
        ("clients_running", Int),
        ("clients_pinned", Int),
        ("pinned_by", Str),
        ("backends", Int),
        ("backends_idle", Int),
        ("backends_busy", Int),
        ("backends_pinned", Int),
        ("backends_connecting", Int),
        ("backends_internal", Int),
        ("backends_broken", Int),
        ("backend_up", Str),
        ("paused", Str),
        ("backlog", Int),
        ("backlog_max_1m", Int),
        ("backlog_max", Int),
        ("backlog_size", Int),
        ("oldest_wait_us", Int),
        ("queue_timeout_ms", Int),
        ("max_pinned_backends", Int),
        ("last_backend_error", Str),
        ("buffered_bytes", Int),
        ("prepared_stmts", Int),
    ]);
    for p in &s.pools {
        let c = &p.clients;
        let b = &p.backends;
        t.push(vec![
            p.name.as_str().into(),
            p.backend_user.as_str().into(),
            c.connected.into(),
            c.idle.into(),
            c.queued.into(),
            c.running.into(),
            pinned_total(p).into(),
            pinned_causes(p).into(),
            p.configured_connections.into(),
            b.idle.into(),
            b.busy.into(),
            b.pinned.into(),
            b.connecting.into(),
            b.internal.into(),
            b.broken.into(),
            yes_no(p.backend_up),
            // By PAUSE pool or by the funnel-wide PAUSE.
            yes_no(s.paused || p.paused),
            p.backlog_depth.into(),
            backlog_max_1m(p).into(),
            p.backlog_max_since_start.into(),
            p.backlog_size.into(),
            us(p.oldest_wait),
            ms(p.queue_timeout),
            p.max_pinned_backends.into(),
            p.last_backend_error.as_deref().into(),
            p.buffered_bytes.into(),
            p.prepared_stmts.into(),
        ]);
    }
    t
}

/// The deepest backlog over the last minute, never below the depth now.
pub fn backlog_max_1m(p: &PoolSnapshot) -> usize {
    p.latency.backlog_max_last_minute.max(p.backlog_depth)
}

/// Every counter, by name, in a fixed order.
pub fn counter_list(c: &Counters) -> [(&'static str, u64); 30] {
    [
        ("requests", c.requests),
        ("backend_errors", c.backend_errors),
        ("backlog_full", c.backlog_full),
        ("queue_timeouts", c.queue_timeouts),
        ("backend_lost", c.backend_lost),
        ("retried", c.retried),
        ("auth_failures", c.auth_failures),
        ("killed", c.killed),
        ("bytes_in", c.bytes_from_clients),
        ("bytes_out", c.bytes_to_clients),
        ("backend_connects", c.backend_connects),
        ("backend_connect_failures", c.backend_connect_failures),
        ("backend_resets", c.backend_resets),
        ("pin_rollbacks", c.pin_rollbacks),
        ("dirty_backends", c.dirty_backends),
        ("diagnostics_cleared", c.diagnostics_cleared),
        ("pipelined", c.pipelined),
        ("rebalanced", c.rebalanced),
        ("schema_unsets", c.schema_unsets),
        ("replays", c.replays),
        ("replay_us", c.replay_micros),
        ("user_vars_replayed", c.user_vars_replayed),
        ("buffered_results", c.buffered_results),
        ("buffered_fallbacks", c.buffered_fallbacks),
        ("stmts_closed", c.stmts_closed),
        ("prepare_retries", c.prepare_retries),
        ("clients_accepted", c.clients_accepted),
        ("clients_refused", c.clients_refused),
        ("auth_held", c.auth_held),
        ("auth_throttled", c.auth_throttled),
    ]
}

/// Counters that exist only for the funnel as a whole (a connection is
/// accepted or refused before it names a user): NULL in pool rows.
pub const FUNNEL_WIDE: [&str; 2] = ["clients_accepted", "clients_refused"];

/// The pseudo pool name of totals rows.
pub const TOTAL: &str = "(total)";

pub fn show_stats(s: &Snapshot) -> Table {
    let mut columns = vec![("pool", Str)];
    columns.extend(counter_list(&s.counters).iter().map(|(n, _)| (*n, Int)));
    let mut t = Table::new(&columns);
    let rows = s
        .pools
        .iter()
        .map(|p| (p.name.as_str(), &p.counters, false))
        .chain(std::iter::once((TOTAL, &s.counters, true)));
    for (name, c, total) in rows {
        let mut row = vec![Cell::from(name)];
        row.extend(counter_list(c).iter().map(|(n, v)| {
            if !total && FUNNEL_WIDE.contains(n) {
                Cell::Null
            } else {
                Cell::Int(*v)
            }
        }));
        t.push(row);
    }
    t
}

pub fn show_clients(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("id", Int),
        ("user", Str),
        ("host", Str),
        ("state", Str),
        ("schema", Str),
        ("pinned_backend", Int),
        ("pin_cause", Str),
        ("busy_us", Int),
        ("bytes_out", Int),
        ("prepared_stmts", Int),
        ("user_vars", Int),
        ("event_loop", Int),
    ]);
    for c in &s.clients {
        t.push(vec![
            c.id.into(),
            c.user.as_str().into(),
            c.host.as_str().into(),
            c.state.into(),
            c.schema.as_deref().into(),
            c.pinned_backend.into(),
            c.pin_cause.into(),
            us(c.busy_for),
            c.bytes_out.into(),
            c.prepared_stmts.into(),
            c.user_vars.into(),
            c.event_loop.into(),
        ]);
    }
    t
}

pub fn show_backends(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("pool", Str),
        ("thread_id", Int),
        ("state", Str),
        ("pinned", Str),
        ("client_id", Int),
        ("schema", Str),
        ("busy_us", Int),
        ("event_loop", Int),
    ]);
    for b in &s.backends {
        t.push(vec![
            b.pool.as_str().into(),
            b.thread_id.into(),
            b.state.into(),
            yes_no(b.pinned),
            b.client_id.into(),
            b.schema.as_deref().into(),
            us(b.busy_for),
            b.event_loop.into(),
        ]);
    }
    t
}

pub fn show_backlog(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("pool", Str),
        ("depth", Int),
        ("max_1m", Int),
        ("max_since_start", Int),
        ("backlog_size", Int),
        ("fill_pct", Int),
        ("oldest_wait_us", Int),
        ("queue_timeout_ms", Int),
        ("clients_queued", Int),
        ("paused", Str),
    ]);
    for p in &s.pools {
        let fill = (p.backlog_depth * 100)
            .checked_div(p.backlog_size)
            .unwrap_or(0);
        t.push(vec![
            p.name.as_str().into(),
            p.backlog_depth.into(),
            backlog_max_1m(p).into(),
            p.backlog_max_since_start.into(),
            p.backlog_size.into(),
            fill.into(),
            us(p.oldest_wait),
            ms(p.queue_timeout),
            p.clients.queued.into(),
            yes_no(s.paused || p.paused),
        ]);
    }
    t
}

/// The windows reported, as (name, seconds; 0 = since start).
pub const WINDOWS: [(&str, usize); 3] = [("10s", 10), ("60s", 60), ("total", 0)];

pub fn window(l: &LatencyStat, seconds: usize) -> Hist {
    if seconds == 0 {
        l.total.clone()
    } else {
        l.last(seconds)
    }
}

/// The names of the three latency measures, in [`measures`] order.
pub const MEASURES: [&str; 3] = ["queue_wait", "service", "end_to_end"];

/// The three measures of a pool, by name.
pub fn measures(p: &crate::control::PoolLatency) -> [(&'static str, &LatencyStat); 3] {
    [
        (MEASURES[0], &p.queue_wait),
        (MEASURES[1], &p.service),
        (MEASURES[2], &p.end_to_end),
    ]
}

/// Every pool's histograms for one measure and window, merged.
fn all_pools(s: &Snapshot, measure: usize, seconds: usize) -> Hist {
    let parts: Vec<Hist> = s
        .pools
        .iter()
        .map(|p| window(measures(&p.latency)[measure].1, seconds))
        .collect();
    Hist::merge(parts.iter())
}

pub fn show_latency(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("pool", Str),
        ("metric", Str),
        ("window", Str),
        ("count", Int),
        ("min_us", Int),
        ("p50_us", Int),
        ("p90_us", Int),
        ("p99_us", Int),
        ("p999_us", Int),
        ("max_us", Int),
        ("mean_us", Int),
    ]);
    let mut add = |pool: &str, metric: &str, win: &str, h: &Hist| {
        t.push(vec![
            pool.into(),
            metric.into(),
            win.into(),
            h.count.into(),
            h.min_us.into(),
            h.quantile(0.5).into(),
            h.quantile(0.9).into(),
            h.quantile(0.99).into(),
            h.quantile(0.999).into(),
            h.max_us.into(),
            h.mean_us().into(),
        ]);
    };
    for p in &s.pools {
        for (metric, l) in measures(&p.latency) {
            for (win, secs) in WINDOWS {
                add(&p.name, metric, win, &window(l, secs));
            }
        }
    }
    if s.pools.len() > 1 {
        for (i, metric) in MEASURES.iter().enumerate() {
            for (win, secs) in WINDOWS {
                add(TOTAL, metric, win, &all_pools(s, i, secs));
            }
        }
    }
    t
}

pub fn show_queries(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("pool", Str),
        ("shape", Str),
        ("count", Int),
        ("errors", Int),
        ("total_us", Int),
        ("avg_us", Int),
        ("max_us", Int),
    ]);
    for q in &s.queries {
        let pool = s.pools.get(q.pool).map_or("?", |p| p.name.as_str());
        t.push(vec![
            pool.into(),
            q.shape.as_str().into(),
            q.count.into(),
            q.errors.into(),
            q.total_us.into(),
            q.total_us.checked_div(q.count).unwrap_or(0).into(),
            q.max_us.into(),
        ]);
    }
    t
}

/// The query rules in order with their hits (answered from the cache,
/// held by `max_concurrency`, cached answers found stale after a write),
/// and a last row (rule `*`) for the result cache: entries and bytes,
/// lookups, hits, coalesced reads, entries dropped or answers not stored
/// after a write; misses, stores, evictions, ..., invalidations by writes.
pub fn show_rules(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("rule", Str),
        ("conditions", Str),
        ("action", Str),
        ("hits", Int),
        ("cached", Int),
        ("delayed", Int),
        ("invalidated", Int),
    ]);
    for r in &s.rules {
        t.push(vec![
            r.name.as_str().into(),
            r.conditions.as_str().into(),
            r.action.as_str().into(),
            r.hits.into(),
            r.cached.into(),
            r.delayed.into(),
            r.invalidated.into(),
        ]);
    }
    let c = &s.cache;
    t.push(vec![
        "*".into(),
        format!(
            "result cache: {} entries, {} of {} bytes",
            c.entries, c.bytes, c.limit
        )
        .into(),
        format!(
            "misses {}, stores {}, evictions {}, expired {}, too big {}, coalesced {}, invalidations {}, invalidated {}",
            c.misses, c.stores, c.evictions, c.expired, c.too_big, c.coalesced, c.invalidations, c.invalidated
        )
        .into(),
        (c.hits + c.misses).into(),
        c.hits.into(),
        c.coalesced.into(),
        c.invalidated.into(),
    ]);
    t
}

/// The effective configuration (passwords masked by the loop) as
/// (section, name, value) rows.
pub fn show_config(s: &Snapshot) -> Table {
    let mut t = Table::new(&[("section", Str), ("name", Str), ("value", Str)]);
    let mut section = String::new();
    for line in s.config_text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            t.push(vec![
                section.as_str().into(),
                k.trim().into(),
                v.trim().into(),
            ]);
        }
    }
    t
}

pub fn show_version(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("version", Str),
        ("backend_version", Str),
        ("backend_address", Str),
        ("uptime_s", Int),
        ("clients", Int),
        ("clients_handshaking", Int),
        ("max_client_connections", Int),
        ("paused", Str),
        ("shutting_down", Str),
    ]);
    t.push(vec![
        format!("funnel {}", s.version).into(),
        backend_version(s).into(),
        s.backend_address.as_str().into(),
        s.uptime.as_secs().into(),
        s.clients_connected.into(),
        s.clients_handshaking.into(),
        s.max_client_connections.into(),
        yes_no(s.paused),
        yes_no(s.shutting_down),
    ]);
    t
}

/// The commands of the admin console and what they do.
pub const COMMANDS: [(&str, &str); 21] = [
    (
        "SHOW STATS",
        "request, error and byte counters per pool and in total",
    ),
    (
        "SHOW POOLS",
        "clients and backends per pool by state, backlog, backend health",
    ),
    (
        "SHOW SERVERS",
        "backend servers: role, rotation state and why, connections, replication lag, checks",
    ),
    (
        "SHOW CLIENTS",
        "every client connection: user, host, state, pinning, time in its command",
    ),
    (
        "SHOW BACKENDS",
        "every backend connection: pool, mysqld thread id, state, client served",
    ),
    (
        "SHOW BACKLOG",
        "backlog depth now, max over the last minute and since start, oldest wait",
    ),
    (
        "SHOW LATENCY",
        "queue wait, service and end-to-end percentiles per pool, last 10 s / 60 s / since start",
    ),
    (
        "SHOW QUERIES",
        "query shapes (literals replaced) by total backend time",
    ),
    (
        "SHOW RULES",
        "query rules in order with their hits since loaded, then the result cache's counters",
    ),
    (
        "SHOW CONFIG",
        "the effective configuration, passwords masked",
    ),
    ("SHOW VERSION", "funnel and backend versions, uptime"),
    (
        "PAUSE",
        "stop handing requests to backends; they wait in the backlog",
    ),
    ("RESUME", "hand queued requests to backends again"),
    (
        "PAUSE pool",
        "as PAUSE, for one user's pool; RESUME pool undoes it (a funnel-wide RESUME does not)",
    ),
    (
        "RESUME pool",
        "hand that pool's queued requests to backends again",
    ),
    (
        "KILL CLIENT id",
        "close a client as KILL CONNECTION id would (id from SHOW CLIENTS)",
    ),
    (
        "RECONNECT pool",
        "close the pool's backend connections (busy ones after their current command) and open new ones",
    ),
    ("RELOAD", "re-read the configuration file"),
    (
        "SET key = value",
        "change one reloadable key (key, section.key or user.NAME.key; DEFAULT unsets it) as a reload would, until the next RELOAD or SIGHUP",
    ),
    ("SHUTDOWN", "graceful shutdown, as on SIGTERM"),
    ("HELP", "this list"),
];

pub fn show_help() -> Table {
    let mut t = Table::new(&[("command", Str), ("description", Str)]);
    for (c, d) in COMMANDS {
        t.push(vec![c.into(), d.into()]);
    }
    t
}

/// "SHOW STATS, SHOW POOLS, ..., HELP".
pub fn command_names() -> String {
    COMMANDS
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}
