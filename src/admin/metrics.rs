//! `/metrics`: the Prometheus text exposition format (version 0.0.4).
//! Names start with `funnel_`; the pool is a label; durations are seconds;
//! the three latency measures since start are Prometheus histograms.

use std::fmt::Write as _;

use super::json::BUCKETS_US;
use super::report::{backlog_max_1m, measures, WINDOWS};
use crate::control::{Hist, Snapshot};

struct Out(String);

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, pairs: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.0, "{name}{} {}", labels(pairs), num(v));
    }

    /// One family with one sample per pool.
    fn per_pool(
        &mut self,
        s: &Snapshot,
        name: &str,
        kind: &str,
        help: &str,
        f: impl Fn(&crate::control::PoolSnapshot) -> f64,
    ) {
        self.family(name, kind, help);
        for p in &s.pools {
            self.sample(name, &[("pool", &p.name)], f(p));
        }
    }

    /// One family with one sample per server (none for a server `f` has
    /// no value of).
    fn per_server(
        &mut self,
        s: &Snapshot,
        name: &str,
        kind: &str,
        help: &str,
        f: impl Fn(&crate::control::ServerSnapshot) -> Option<f64>,
    ) {
        self.family(name, kind, help);
        for v in &s.servers {
            if let Some(x) = f(v) {
                self.sample(name, &[("server", &v.name)], x);
            }
        }
    }

    /// A histogram of one pool or server: `of` is its label (`pool` or
    /// `server`) and value.
    fn histogram(&mut self, name: &str, of: (&str, &str), h: &Hist) {
        for le in BUCKETS_US {
            let le_s = num(le as f64 / 1e6);
            self.sample(
                &format!("{name}_bucket"),
                &[of, ("le", &le_s)],
                h.count_le(le) as f64,
            );
        }
        self.sample(
            &format!("{name}_bucket"),
            &[of, ("le", "+Inf")],
            h.count as f64,
        );
        self.sample(&format!("{name}_sum"), &[of], h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), &[of], h.count as f64);
    }
}

pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    let b = |v: bool| if v { 1.0 } else { 0.0 };

    o.family(
        "funnel_info",
        "gauge",
        "Always 1; the labels give the funnel's and the backend's versions.",
    );
    o.sample(
        "funnel_info",
        &[
            ("version", s.version),
            (
                "backend_version",
                super::report::backend_version(s).unwrap_or(""),
            ),
            ("backend_address", &s.backend_address),
        ],
        1.0,
    );
    o.family(
        "funnel_uptime_seconds",
        "gauge",
        "Seconds since the funnel started.",
    );
    o.sample("funnel_uptime_seconds", &[], s.uptime.as_secs_f64());
    o.family(
        "funnel_paused",
        "gauge",
        "1 while PAUSE (admin console) holds requests in the backlog.",
    );
    o.sample("funnel_paused", &[], b(s.paused));
    o.family(
        "funnel_shutting_down",
        "gauge",
        "1 while draining for shutdown.",
    );
    o.sample("funnel_shutting_down", &[], b(s.shutting_down));
    o.family("funnel_healthy", "gauge", "1 when /health answers 200.");
    o.sample("funnel_healthy", &[], b(super::health(s).is_ok()));
    o.family(
        "funnel_client_connections",
        "gauge",
        "Client connections open, authenticated or not.",
    );
    o.sample("funnel_client_connections", &[], s.clients_connected as f64);
    o.family(
        "funnel_client_connections_handshaking",
        "gauge",
        "Client connections still logging in.",
    );
    o.sample(
        "funnel_client_connections_handshaking",
        &[],
        s.clients_handshaking as f64,
    );
    o.family(
        "funnel_client_connections_max",
        "gauge",
        "max_client_connections.",
    );
    o.sample(
        "funnel_client_connections_max",
        &[],
        s.max_client_connections as f64,
    );

    o.family(
        "funnel_server_up",
        "gauge",
        "1 while a backend server is in rotation (reachable and, for a checked server, healthy).",
    );
    for v in &s.servers {
        o.sample(
            "funnel_server_up",
            &[("server", &v.name), ("role", v.role)],
            b(v.out.is_none() && !v.removed),
        );
    }
    o.family(
        "funnel_server_connections",
        "gauge",
        "Backend connections to a server, all pools, and those serving a client.",
    );
    for v in &s.servers {
        for (state, n) in [("open", v.connections), ("in_use", v.in_use)] {
            o.sample(
                "funnel_server_connections",
                &[("server", &v.name), ("state", state)],
                n as f64,
            );
        }
    }
    o.per_server(
        s,
        "funnel_server_running",
        "gauge",
        "Commands running on a server now, all pools (its max_concurrency bounds those of shared connections).",
        |v| Some(v.running as f64),
    );
    o.per_server(
        s,
        "funnel_server_max_concurrency",
        "gauge",
        "A server's max_concurrency (servers with one only).",
        |v| v.max_concurrency.map(|n| n as f64),
    );
    o.per_server(
        s,
        "funnel_server_waiting_users",
        "gauge",
        "Users (pools) whose commands wait for a turn on a server at its max_concurrency.",
        |v| Some(v.waiting_users as f64),
    );
    o.per_server(
        s,
        "funnel_server_turn_waits_total",
        "counter",
        "Times a user's command had to wait for a turn on a server at its max_concurrency.",
        |v| Some(v.turn_waits as f64),
    );
    o.family(
        "funnel_server_service_seconds",
        "histogram",
        "Service time on a server (all pools): command sent to it until its answer is complete, since start.",
    );
    for v in &s.servers {
        o.histogram(
            "funnel_server_service_seconds",
            ("server", &v.name),
            &v.service.total,
        );
    }
    o.family(
        "funnel_server_connection_errors_total",
        "counter",
        "Connections to a server that failed to open or log in, and that broke.",
    );
    for v in &s.servers {
        for (kind, n) in [("connect", v.connect_failures), ("lost", v.lost)] {
            o.sample(
                "funnel_server_connection_errors_total",
                &[("server", &v.name), ("kind", kind)],
                n as f64,
            );
        }
    }
    o.per_server(
        s,
        "funnel_server_replication_lag_seconds",
        "gauge",
        "A replica's Seconds_Behind_Master at its last check (absent while unknown).",
        |v| v.lag.map(|lag| lag.as_secs_f64()),
    );
    o.family(
        "funnel_server_rotation_changes_total",
        "counter",
        "Times a server went out of rotation, and came back.",
    );
    for v in &s.servers {
        for (change, n) in [("out", v.went_out), ("back", v.came_back)] {
            o.sample(
                "funnel_server_rotation_changes_total",
                &[("server", &v.name), ("change", change)],
                n as f64,
            );
        }
    }
    o.family(
        "funnel_pool_clients",
        "gauge",
        "Authenticated clients of a pool by state.",
    );
    for p in &s.pools {
        let c = &p.clients;
        for (state, n) in [
            ("idle", c.idle),
            ("queued", c.queued),
            ("running", c.running),
        ] {
            o.sample(
                "funnel_pool_clients",
                &[("pool", &p.name), ("state", state)],
                n as f64,
            );
        }
    }
    o.family(
        "funnel_pool_clients_pinned",
        "gauge",
        "Clients holding a backend of their own, by the first cause.",
    );
    for p in &s.pools {
        for (cause, n) in &p.clients.pinned {
            o.sample(
                "funnel_pool_clients_pinned",
                &[("pool", &p.name), ("cause", cause)],
                *n as f64,
            );
        }
    }
    o.family("funnel_pool_backends", "gauge", "Backend connections of a pool by state (broken: configured but missing, waiting to reconnect).");
    for p in &s.pools {
        let k = &p.backends;
        for (state, n) in [
            ("idle", k.idle),
            ("busy", k.busy),
            ("pinned", k.pinned),
            ("connecting", k.connecting),
            ("internal", k.internal),
            ("broken", k.broken),
        ] {
            o.sample(
                "funnel_pool_backends",
                &[("pool", &p.name), ("state", state)],
                n as f64,
            );
        }
    }
    o.per_pool(
        s,
        "funnel_pool_backends_configured",
        "gauge",
        "Shared backend connections configured.",
        |p| p.configured_connections as f64,
    );
    o.per_pool(
        s,
        "funnel_pool_backend_up",
        "gauge",
        "1 while at least one backend connection is logged in.",
        |p| b(p.backend_up),
    );
    o.per_pool(
        s,
        "funnel_pool_backlog_depth",
        "gauge",
        "Requests waiting for a backend now.",
        |p| p.backlog_depth as f64,
    );
    o.per_pool(
        s,
        "funnel_pool_backlog_max_last_minute",
        "gauge",
        "Deepest backlog over the last minute.",
        |p| backlog_max_1m(p) as f64,
    );
    o.per_pool(
        s,
        "funnel_pool_backlog_max",
        "gauge",
        "Deepest backlog since start.",
        |p| p.backlog_max_since_start as f64,
    );
    o.per_pool(
        s,
        "funnel_pool_backlog_size",
        "gauge",
        "backlog_size: more waiting requests are refused.",
        |p| p.backlog_size as f64,
    );
    o.per_pool(
        s,
        "funnel_pool_oldest_wait_seconds",
        "gauge",
        "Age of the oldest queued request.",
        |p| p.oldest_wait.as_secs_f64(),
    );

    o.family(
        "funnel_buffered_bytes",
        "gauge",
        "Output held for slow readers past output_high_watermark so their backends could be freed (connection first); bounded by max_buffered_total.",
    );
    o.sample("funnel_buffered_bytes", &[], s.buffered_bytes as f64);
    o.family("funnel_buffered_bytes_max", "gauge", "max_buffered_total.");
    o.sample(
        "funnel_buffered_bytes_max",
        &[],
        s.max_buffered_total as f64,
    );
    o.family(
        "funnel_buffered_result_bytes_max",
        "gauge",
        "max_buffered_result (0: memory first, slow readers hold their backend).",
    );
    o.sample(
        "funnel_buffered_result_bytes_max",
        &[],
        s.max_buffered_result as f64,
    );
    o.family(
        "funnel_prepared_stmts",
        "gauge",
        "Prepared statements all clients hold; a prepare past max_prepared_stmt_count gets ERR 1461.",
    );
    o.sample("funnel_prepared_stmts", &[], s.prepared_stmts as f64);
    o.family(
        "funnel_prepared_stmts_max",
        "gauge",
        "max_prepared_stmt_count.",
    );
    o.sample(
        "funnel_prepared_stmts_max",
        &[],
        s.max_prepared_stmt_count as f64,
    );
    o.per_pool(
        s,
        "funnel_pool_prepared_stmts",
        "gauge",
        "Prepared statements the pool's clients hold.",
        |p| p.prepared_stmts as f64,
    );
    o.per_pool(
        s,
        "funnel_pool_buffered_bytes",
        "gauge",
        "Output held for the pool's slow readers past output_high_watermark (connection first).",
        |p| p.buffered_bytes as f64,
    );

    o.per_pool(
        s,
        "funnel_requests_total",
        "counter",
        "Commands received from clients.",
        |p| p.counters.requests as f64,
    );
    o.family(
        "funnel_errors_total",
        "counter",
        "Requests that failed, by kind.",
    );
    for p in &s.pools {
        let c = &p.counters;
        for (kind, n) in [
            ("backlog_full", c.backlog_full),
            ("queue_timeout", c.queue_timeouts),
            ("backend_lost", c.backend_lost),
            ("auth_failure", c.auth_failures),
            ("killed", c.killed),
            ("backend_error", c.backend_errors),
        ] {
            o.sample(
                "funnel_errors_total",
                &[("pool", &p.name), ("kind", kind)],
                n as f64,
            );
        }
    }
    let pool_auth: u64 = s.pools.iter().map(|p| p.counters.auth_failures).sum();
    o.family(
        "funnel_auth_failures_unknown_user_total",
        "counter",
        "Logins refused for a user name no pool has.",
    );
    o.sample(
        "funnel_auth_failures_unknown_user_total",
        &[],
        s.counters.auth_failures.saturating_sub(pool_auth) as f64,
    );
    o.per_pool(
        s,
        "funnel_received_bytes_total",
        "counter",
        "Bytes read from clients.",
        |p| p.counters.bytes_from_clients as f64,
    );
    o.per_pool(
        s,
        "funnel_sent_bytes_total",
        "counter",
        "Bytes written to clients.",
        |p| p.counters.bytes_to_clients as f64,
    );
    o.family(
        "funnel_received_bytes_all_total",
        "counter",
        "Bytes read from all clients, handshakes and logins included (funnel_received_bytes_total counts those of logged-in clients, per pool).",
    );
    o.sample(
        "funnel_received_bytes_all_total",
        &[],
        s.counters.bytes_from_clients as f64,
    );
    o.family(
        "funnel_sent_bytes_all_total",
        "counter",
        "Bytes written to all clients (the sum of funnel_sent_bytes_total over the pools, removed pools included).",
    );
    o.sample(
        "funnel_sent_bytes_all_total",
        &[],
        s.counters.bytes_to_clients as f64,
    );
    o.per_pool(
        s,
        "funnel_backend_connects_total",
        "counter",
        "Backend connections logged in (reconnects included).",
        |p| p.counters.backend_connects as f64,
    );
    o.per_pool(
        s,
        "funnel_backend_connect_failures_total",
        "counter",
        "Backend connection or login attempts that failed.",
        |p| p.counters.backend_connect_failures as f64,
    );
    o.per_pool(
        s,
        "funnel_retried_commands_total",
        "counter",
        "Commands put back in the backlog after their backend connection died before any of their answer reached the client: never sent to mysqld, or a plain read safe to repeat.",
        |p| p.counters.retried as f64,
    );
    o.per_pool(
        s,
        "funnel_backend_resets_total",
        "counter",
        "Backend connections reset before reuse.",
        |p| p.counters.backend_resets as f64,
    );
    o.per_pool(
        s,
        "funnel_pin_rollbacks_total",
        "counter",
        "Pins that ended when their client left with only a transaction open: ended with a ROLLBACK instead of a reset.",
        |p| p.counters.pin_rollbacks as f64,
    );
    o.per_pool(
        s,
        "funnel_dirty_backends_total",
        "counter",
        "Backends made dirty by a statement whose effect on the session could not be proven (pinned, then reset).",
        |p| p.counters.dirty_backends as f64,
    );
    o.per_pool(
        s,
        "funnel_diagnostics_cleared_total",
        "counter",
        "Backend diagnostics areas emptied of another client's warnings before a SHOW WARNINGS.",
        |p| p.counters.diagnostics_cleared as f64,
    );
    o.per_pool(
        s,
        "funnel_pipelined_total",
        "counter",
        "Commands sent behind other commands in flight on a backend connection (pipeline_depth).",
        |p| p.counters.pipelined as f64,
    );
    o.per_pool(
        s,
        "funnel_rebalanced_commands_total",
        "counter",
        "Waiting commands handed to another event loop whose oldest waiting command waited clearly less (threads above 1: one first-come first-served order per pool across loops).",
        |p| p.counters.rebalanced as f64,
    );
    o.per_pool(
        s,
        "funnel_schema_unsets_total",
        "counter",
        "Backend connections brought back to no default schema (COM_CHANGE_USER) for a client without one.",
        |p| p.counters.schema_unsets as f64,
    );
    o.per_pool(
        s,
        "funnel_session_replays_total",
        "counter",
        "Session state replayed on a backend before a request.",
        |p| p.counters.replays as f64,
    );
    o.per_pool(
        s,
        "funnel_session_replay_seconds_total",
        "counter",
        "Time backends spent on the funnel's own steps for clients' sessions: replaying schema, variables, insert id and multi-statements, preparing statements again, reading user variables back.",
        |p| p.counters.replay_micros as f64 / 1e6,
    );
    o.per_pool(
        s,
        "funnel_user_vars_replayed_total",
        "counter",
        "User variables set or unset on backends by session replays (max_replayed_user_vars bounds them per client).",
        |p| p.counters.user_vars_replayed as f64,
    );
    o.per_pool(
        s,
        "funnel_buffered_results_total",
        "counter",
        "Results read completely past a slow reader's output_high_watermark (max_buffered_result), freeing their backend before the client read them.",
        |p| p.counters.buffered_results as f64,
    );
    o.per_pool(
        s,
        "funnel_buffered_fallbacks_total",
        "counter",
        "Results held back at the backend after all: max_buffered_result outgrown or max_buffered_total reached.",
        |p| p.counters.buffered_fallbacks as f64,
    );
    o.per_pool(
        s,
        "funnel_backend_stmts_closed_total",
        "counter",
        "Prepared statements closed on backend connections: no client held them any more, or they were cached copies making room after mysqld's ERR 1461.",
        |p| p.counters.stmts_closed as f64,
    );
    o.per_pool(
        s,
        "funnel_prepare_retries_total",
        "counter",
        "Prepares sent again after mysqld refused them with ERR 1461 and cached statements made room.",
        |p| p.counters.prepare_retries as f64,
    );
    o.family(
        "funnel_clients_accepted_total",
        "counter",
        "Client connections accepted.",
    );
    o.sample(
        "funnel_clients_accepted_total",
        &[],
        s.counters.clients_accepted as f64,
    );
    o.family(
        "funnel_clients_refused_total",
        "counter",
        "Client connections refused (max_client_connections, shutdown).",
    );
    o.sample(
        "funnel_clients_refused_total",
        &[],
        s.counters.clients_refused as f64,
    );
    o.family(
        "funnel_auth_held_total",
        "counter",
        "Login attempts held back after failed logins from their address or for their user (auth_failure_delay_ms).",
    );
    o.sample("funnel_auth_held_total", &[], s.counters.auth_held as f64);
    o.family(
        "funnel_auth_throttled_total",
        "counter",
        "Login attempts refused unchecked with ERR 1129: their hold would have outlasted handshake_timeout_ms.",
    );
    o.sample(
        "funnel_auth_throttled_total",
        &[],
        s.counters.auth_throttled as f64,
    );

    let names = [
        ("queue_wait", "funnel_queue_wait_seconds", "Time requests waited in the backlog for a backend, since start."),
        ("service", "funnel_service_seconds", "Backend service time: command sent to mysqld until its answer is complete, since start."),
        ("end_to_end", "funnel_request_duration_seconds", "End to end: command read from the client until the last byte of the answer is written, since start."),
    ];
    for (i, (_, name, help)) in names.iter().enumerate() {
        o.family(name, "histogram", help);
        for p in &s.pools {
            o.histogram(name, ("pool", &p.name), &measures(&p.latency)[i].1.total);
        }
    }
    o.family(
        "funnel_latency_recent_seconds",
        "gauge",
        "Latency percentiles over a sliding window (metric: queue_wait, service, end_to_end; window: 10s, 60s).",
    );
    for p in &s.pools {
        for (metric, l) in measures(&p.latency) {
            for (win, secs) in WINDOWS.iter().filter(|(_, secs)| *secs > 0) {
                let h = l.last(*secs);
                for (q, qs) in [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999")] {
                    o.sample(
                        "funnel_latency_recent_seconds",
                        &[
                            ("pool", &p.name),
                            ("metric", metric),
                            ("window", win),
                            ("quantile", qs),
                        ],
                        h.quantile(q) as f64 / 1e6,
                    );
                }
            }
        }
    }
    o.family(
        "funnel_latency_recent_count",
        "gauge",
        "Requests measured in the sliding window.",
    );
    for p in &s.pools {
        for (metric, l) in measures(&p.latency) {
            for (win, secs) in WINDOWS.iter().filter(|(_, secs)| *secs > 0) {
                o.sample(
                    "funnel_latency_recent_count",
                    &[("pool", &p.name), ("metric", metric), ("window", win)],
                    l.last(*secs).count as f64,
                );
            }
        }
    }
    rules(&mut o, s);
    process(&mut o, &crate::process::read());
    o.0
}

/// Query rules' hits and the result cache.
fn rules(o: &mut Out, s: &Snapshot) {
    o.family(
        "funnel_rule_hits_total",
        "counter",
        "Statements a query rule was the first match for, since it was loaded (a reload starts again).",
    );
    for r in &s.rules {
        o.sample(
            "funnel_rule_hits_total",
            &[("rule", &r.name)],
            r.hits as f64,
        );
    }
    o.family(
        "funnel_rule_cached_total",
        "counter",
        "Of a rule's hits, those answered from the result cache.",
    );
    for r in &s.rules {
        o.sample(
            "funnel_rule_cached_total",
            &[("rule", &r.name)],
            r.cached as f64,
        );
    }
    o.family(
        "funnel_rule_delayed_total",
        "counter",
        "Of a rule's hits, those that waited for room under its max_concurrency.",
    );
    for r in &s.rules {
        o.sample(
            "funnel_rule_delayed_total",
            &[("rule", &r.name)],
            r.delayed as f64,
        );
    }
    o.family(
        "funnel_rule_invalidated_total",
        "counter",
        "A rule's cached answers found stale after a write through the funnel (cache_invalidation).",
    );
    for r in &s.rules {
        o.sample(
            "funnel_rule_invalidated_total",
            &[("rule", &r.name)],
            r.invalidated as f64,
        );
    }
    let c = &s.cache;
    for (name, help, value) in [
        (
            "funnel_result_cache_hits_total",
            "Queries answered from the result cache.",
            c.hits,
        ),
        (
            "funnel_result_cache_misses_total",
            "Cacheable queries the result cache had no live answer for.",
            c.misses,
        ),
        (
            "funnel_result_cache_stores_total",
            "Answers stored in the result cache.",
            c.stores,
        ),
        (
            "funnel_result_cache_evictions_total",
            "Entries dropped to make room (least recently used first).",
            c.evictions,
        ),
        (
            "funnel_result_cache_expired_total",
            "Entries found past their rule's TTL.",
            c.expired,
        ),
        (
            "funnel_result_cache_too_big_total",
            "Answers larger than cache_max_result_size, not stored.",
            c.too_big,
        ),
        (
            "funnel_result_cache_coalesced_total",
            "Reads that waited for the same read of another client instead of running.",
            c.coalesced,
        ),
        (
            "funnel_result_cache_invalidations_total",
            "Writes through the funnel that made cached reads of their tables stale (of all tables when theirs cannot be told).",
            c.invalidations,
        ),
        (
            "funnel_result_cache_invalidated_total",
            "Entries dropped, and answers not stored, because a write through the funnel made them stale.",
            c.invalidated,
        ),
    ] {
        o.family(name, "counter", help);
        o.sample(name, &[], value as f64);
    }
    for (name, help, value) in [
        (
            "funnel_result_cache_entries",
            "Answers in the result cache.",
            c.entries,
        ),
        (
            "funnel_result_cache_bytes",
            "Memory the result cache counts against cache_size.",
            c.bytes,
        ),
        ("funnel_result_cache_bytes_max", "cache_size.", c.limit),
    ] {
        o.family(name, "gauge", help);
        o.sample(name, &[], value as f64);
    }
}

/// The process figures, named as the Prometheus client libraries name them
/// (no `funnel_` prefix, so dashboards made for them work); a figure that
/// cannot be read is left out.
fn process(o: &mut Out, p: &crate::process::ProcessStats) {
    let figures = [
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors (soft RLIMIT_NOFILE).",
            p.max_fds.map(|v| v as f64),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_memory_bytes.map(|v| v as f64),
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
    ];
    for (name, kind, help, v) in figures {
        if let Some(v) = v {
            o.family(name, kind, help);
            o.sample(name, &[], v);
        }
    }
}
