//! `/stats.json`: everything the admin console shows, as one JSON document.
//! A tiny JSON value type and writer (no dependency needed for this).

use std::fmt::Write as _;

use super::report::{self, backlog_max_1m, counter_list, measures, window, WINDOWS};
use crate::control::{Hist, PoolSnapshot, Snapshot};

pub enum Json {
    Null,
    Bool(bool),
    Int(u64),
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
    /// An object whose keys are data (pool names, causes).
    Map(Vec<(String, Json)>),
}

impl From<u64> for Json {
    fn from(v: u64) -> Self {
        Json::Int(v)
    }
}
impl From<usize> for Json {
    fn from(v: usize) -> Self {
        Json::Int(v as u64)
    }
}
impl From<u32> for Json {
    fn from(v: u32) -> Self {
        Json::Int(u64::from(v))
    }
}
impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::Str(v.to_string())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Self {
        Json::Str(v)
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Self {
        v.map_or(Json::Null, Into::into)
    }
}

/// `{"k":v,...}`: Obj and Map differ only in who owns the keys.
fn object<'a>(out: &mut String, fields: impl Iterator<Item = (&'a str, &'a Json)>) {
    out.push('{');
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, k);
        out.push(':');
        v.write(out);
    }
    out.push('}');
}

fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Also escape '<' so the document can never close a <script>.
            c if (c as u32) < 0x20 || c == '<' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Json {
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Json::Float(v) if v.is_finite() => {
                let _ = write!(out, "{v}");
            }
            Json::Float(_) => out.push_str("null"),
            Json::Str(s) => string(out, s),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(fields) => object(out, fields.iter().map(|(k, v)| (*k, v))),
            Json::Map(fields) => object(out, fields.iter().map(|(k, v)| (k.as_str(), v))),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

/// Upper bounds (µs) of the cumulative buckets given for each histogram;
/// the same as the Prometheus buckets (in seconds there).
pub const BUCKETS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

pub fn hist(h: &Hist) -> Json {
    let mut buckets: Vec<Json> = BUCKETS_US
        .iter()
        .map(|&le| Json::Arr(vec![Json::Int(le), Json::Int(h.count_le(le))]))
        .collect();
    buckets.push(Json::Arr(vec![
        Json::Str("+Inf".into()),
        Json::Int(h.count),
    ]));
    Json::Obj(vec![
        ("count", h.count.into()),
        ("sum_us", h.sum_us.into()),
        ("min_us", h.min_us.into()),
        ("p50_us", h.quantile(0.5).into()),
        ("p90_us", h.quantile(0.9).into()),
        ("p99_us", h.quantile(0.99).into()),
        ("p999_us", h.quantile(0.999).into()),
        ("max_us", h.max_us.into()),
        ("mean_us", h.mean_us().into()),
        ("buckets_le_us", Json::Arr(buckets)),
    ])
}

fn pool(s: &Snapshot, p: &PoolSnapshot) -> Json {
    let c = &p.clients;
    let b = &p.backends;
    let latency = measures(&p.latency)
        .iter()
        .map(|(name, l)| {
            let windows = WINDOWS
                .iter()
                .map(|(w, secs)| {
                    let key = match *w {
                        "10s" => "last_10s".to_string(),
                        "60s" => "last_60s".to_string(),
                        _ => "since_start".to_string(),
                    };
                    (key, hist(&window(l, *secs)))
                })
                .collect();
            (name.to_string(), Json::Map(windows))
        })
        .collect();
    let h = &p.latency.history;
    let col = |f: &dyn Fn(&crate::control::SecondSummary) -> u32| {
        Json::Arr(h.iter().map(|x| Json::Int(u64::from(f(x)))).collect())
    };
    let history = Json::Obj(vec![
        ("seconds", h.len().into()),
        ("backlog_max", col(&|x| x.backlog_max)),
        ("requests", col(&|x| x.end_to_end.count)),
        ("end_to_end_p50_us", col(&|x| x.end_to_end.p50_us)),
        ("end_to_end_p99_us", col(&|x| x.end_to_end.p99_us)),
        ("queue_wait_p50_us", col(&|x| x.queue_wait.p50_us)),
        ("queue_wait_p99_us", col(&|x| x.queue_wait.p99_us)),
        ("service_p50_us", col(&|x| x.service.p50_us)),
        ("service_p99_us", col(&|x| x.service.p99_us)),
    ]);
    let fill = if p.backlog_size == 0 {
        0.0
    } else {
        p.backlog_depth as f64 / p.backlog_size as f64
    };
    Json::Obj(vec![
        ("name", p.name.as_str().into()),
        ("backend_user", p.backend_user.as_str().into()),
        ("removed", p.is_removed().into()),
        ("found_rows", p.found_rows.into()),
        (
            "clients",
            Json::Obj(vec![
                ("connected", c.connected.into()),
                ("idle", c.idle.into()),
                ("queued", c.queued.into()),
                ("running", c.running.into()),
                ("pinned", report::pinned_total(p).into()),
                (
                    "pinned_by",
                    Json::Map(
                        c.pinned
                            .iter()
                            .map(|(cause, n)| (cause.to_string(), (*n).into()))
                            .collect(),
                    ),
                ),
            ]),
        ),
        (
            "backends",
            Json::Obj(vec![
                ("configured", p.configured_connections.into()),
                ("max_pinned", p.max_pinned_backends.into()),
                ("idle", b.idle.into()),
                ("busy", b.busy.into()),
                ("pinned", b.pinned.into()),
                ("connecting", b.connecting.into()),
                ("internal", b.internal.into()),
                ("broken", b.broken.into()),
                ("up", p.backend_up.into()),
                ("last_error", p.last_backend_error.as_deref().into()),
            ]),
        ),
        (
            "backlog",
            Json::Obj(vec![
                ("depth", p.backlog_depth.into()),
                ("max_last_minute", backlog_max_1m(p).into()),
                ("max_since_start", p.backlog_max_since_start.into()),
                ("size", p.backlog_size.into()),
                ("fill", Json::Float(fill)),
                (
                    "health_limit",
                    Json::Float(p.backlog_size as f64 * s.health_backlog_ratio),
                ),
                ("oldest_wait_us", (p.oldest_wait.as_micros() as u64).into()),
                (
                    "queue_timeout_ms",
                    (p.queue_timeout.as_millis() as u64).into(),
                ),
            ]),
        ),
        ("buffered_bytes", p.buffered_bytes.into()),
        ("prepared_stmts", p.prepared_stmts.into()),
        ("counters", counters(&p.counters, true)),
        ("latency", Json::Map(latency)),
        ("history", history),
    ])
}

/// One backend server.
fn server(v: &crate::control::ServerSnapshot) -> Json {
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
    Json::Obj(vec![
        ("name", v.name.as_str().into()),
        ("address", v.address.as_str().into()),
        ("role", v.role.into()),
        ("weight", u64::from(v.weight).into()),
        ("in_rotation", (v.out.is_none() && !v.removed).into()),
        ("state", v.state().as_str().into()),
        ("out_reason", v.out.as_deref().into()),
        ("checked", v.checked.into()),
        ("connections", v.connections.into()),
        ("in_use", v.in_use.into()),
        ("running", v.running.into()),
        (
            "max_concurrency",
            v.max_concurrency.map(|n| n as u64).into(),
        ),
        ("waiting_users", v.waiting_users.into()),
        ("turn_waits", v.turn_waits.into()),
        ("lag_ms", ms(v.lag).into()),
        ("read_only", v.read_only.into()),
        ("last_check_ms_ago", ms(v.last_check_ago).into()),
        ("check_time_us", (v.check_time.as_micros() as u64).into()),
        ("went_out", v.went_out.into()),
        ("came_back", v.came_back.into()),
        ("connect_failures", v.connect_failures.into()),
        ("lost", v.lost.into()),
        (
            "service",
            Json::Obj(vec![
                ("count", v.service.total.count.into()),
                ("p50_us", v.service.total.quantile(0.5).into()),
                ("p99_us", v.service.total.quantile(0.99).into()),
                ("last_10s_p99_us", v.service.last(10).quantile(0.99).into()),
            ]),
        ),
        ("last_error", v.last_error.as_deref().into()),
        ("version", v.version.as_deref().into()),
    ])
}

/// A pool's counters (`pool`: those only the funnel as a whole has are
/// null) or the totals.
fn counters(c: &crate::control::Counters, pool: bool) -> Json {
    Json::Map(
        counter_list(c)
            .iter()
            .map(|(n, v)| {
                let v = if pool && report::FUNNEL_WIDE.contains(n) {
                    Json::Null
                } else {
                    Json::Int(*v)
                };
                (n.to_string(), v)
            })
            .collect(),
    )
}

/// The whole document. Clients, backends and query shapes only if the
/// snapshot was taken with detail.
pub fn stats_json(s: &Snapshot, detail: bool) -> String {
    let unix_ms = s
        .taken_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let health = super::health(s);
    let mut doc = vec![
        ("version", s.version.into()),
        ("backend_version", report::backend_version(s).into()),
        ("backend_address", s.backend_address.as_str().into()),
        ("taken_at_unix_ms", unix_ms.into()),
        ("uptime_s", s.uptime.as_secs().into()),
        ("paused", s.paused.into()),
        ("shutting_down", s.shutting_down.into()),
        (
            "health",
            Json::Obj(vec![
                ("ok", health.is_ok().into()),
                (
                    "message",
                    match &health {
                        Ok(m) | Err(m) => m.as_str().into(),
                    },
                ),
            ]),
        ),
        ("clients_connected", s.clients_connected.into()),
        ("clients_handshaking", s.clients_handshaking.into()),
        ("max_client_connections", s.max_client_connections.into()),
        ("health_backlog_ratio", Json::Float(s.health_backlog_ratio)),
        (
            "buffered",
            Json::Obj(vec![
                ("bytes", s.buffered_bytes.into()),
                ("max_buffered_total", s.max_buffered_total.into()),
                ("max_buffered_result", s.max_buffered_result.into()),
            ]),
        ),
        (
            "prepared_stmts",
            Json::Obj(vec![
                ("count", s.prepared_stmts.into()),
                ("max_prepared_stmt_count", s.max_prepared_stmt_count.into()),
            ]),
        ),
        ("counters", counters(&s.counters, false)),
        (
            "rules",
            Json::Arr(
                s.rules
                    .iter()
                    .map(|r| {
                        Json::Obj(vec![
                            ("name", r.name.as_str().into()),
                            ("conditions", r.conditions.as_str().into()),
                            ("action", r.action.as_str().into()),
                            ("hits", r.hits.into()),
                            ("cached", r.cached.into()),
                            ("delayed", r.delayed.into()),
                            ("invalidated", r.invalidated.into()),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "result_cache",
            Json::Obj(vec![
                ("entries", s.cache.entries.into()),
                ("bytes", s.cache.bytes.into()),
                ("cache_size", s.cache.limit.into()),
                ("hits", s.cache.hits.into()),
                ("misses", s.cache.misses.into()),
                ("stores", s.cache.stores.into()),
                ("evictions", s.cache.evictions.into()),
                ("expired", s.cache.expired.into()),
                ("too_big", s.cache.too_big.into()),
                ("coalesced", s.cache.coalesced.into()),
                ("invalidations", s.cache.invalidations.into()),
                ("invalidated", s.cache.invalidated.into()),
            ]),
        ),
        (
            "pools",
            Json::Arr(s.pools.iter().map(|p| pool(s, p)).collect()),
        ),
        ("servers", Json::Arr(s.servers.iter().map(server).collect())),
    ];
    if detail {
        let table = |t: report::Table| {
            Json::Arr(
                t.rows
                    .iter()
                    .map(|row| {
                        Json::Map(
                            t.columns
                                .iter()
                                .zip(row)
                                .map(|((name, _), cell)| {
                                    let v = match cell {
                                        report::Cell::Int(v) => Json::Int(*v),
                                        report::Cell::Str(v) => Json::Str(v.clone()),
                                        report::Cell::Null => Json::Null,
                                    };
                                    (name.clone(), v)
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            )
        };
        doc.push(("clients", table(report::show_clients(s))));
        doc.push(("backends", table(report::show_backends(s))));
        doc.push(("queries", table(report::show_queries(s))));
    }
    Json::Obj(doc).render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let j = Json::Obj(vec![
            ("a", Json::Str("q\"\\\n</script>\u{1}".into())),
            ("b", Json::Float(f64::NAN)),
            (
                "c",
                Json::Arr(vec![Json::Int(1), Json::Null, Json::Bool(true)]),
            ),
        ]);
        assert_eq!(
            j.render(),
            r#"{"a":"q\"\\\n\u003c/script>\u0001","b":null,"c":[1,null,true]}"#
        );
    }
}
