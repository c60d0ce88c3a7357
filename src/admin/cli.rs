//! `funnel stats`: a compact, refreshing, top-like summary read from the
//! admin console (SHOW VERSION, SHOW STATS, SHOW POOLS, SHOW LATENCY).
//!
//! ```text
//! funnel stats [--admin HOST:PORT] [--user NAME] [--password PW] [--interval SECS] [--count N]
//! ```

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use getopts::Options;

use super::client::{Client, Rows};
use crate::config::{DEFAULT_ADMIN_LISTEN, DEFAULT_ADMIN_USER};

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "a",
        "admin",
        &format!("admin console address (default {DEFAULT_ADMIN_LISTEN})"),
        "HOST:PORT",
    );
    o.optopt(
        "u",
        "user",
        &format!("admin user (default {DEFAULT_ADMIN_USER})"),
        "NAME",
    );
    o.optopt(
        "p",
        "password",
        "admin password (default: $FUNNEL_ADMIN_PASSWORD)",
        "PASSWORD",
    );
    o.optopt(
        "i",
        "interval",
        "seconds between refreshes (default 1)",
        "SECS",
    );
    o.optopt(
        "n",
        "count",
        "refresh this many times, then exit (default: until interrupted)",
        "N",
    );
    o.optflag("", "no-clear", "do not clear the screen between refreshes");
    o.optflag("h", "help", "print this help");
    o
}

fn usage(o: &Options) -> String {
    o.usage(
        "Usage: funnel stats [--admin HOST:PORT] [--user NAME] [--password PW] [--interval SECS] [--count N]\n\n\
         A refreshing summary of a running funnel, read from its admin console.",
    )
}

/// Runs `funnel stats` with the arguments after "stats"; returns the exit code.
pub fn main(args: &[String]) -> u8 {
    let o = options();
    let m = match o.parse(args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("funnel stats: {e}\n\n{}", usage(&o));
            return EXIT_USAGE;
        }
    };
    if m.opt_present("help") {
        println!("{}", usage(&o));
        return 0;
    }
    if let Some(extra) = m.free.first() {
        eprintln!(
            "funnel stats: unexpected argument {extra:?}\n\n{}",
            usage(&o)
        );
        return EXIT_USAGE;
    }
    let addr = m
        .opt_str("admin")
        .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_string());
    let user = m
        .opt_str("user")
        .unwrap_or_else(|| DEFAULT_ADMIN_USER.to_string());
    let password = m
        .opt_str("password")
        .or_else(|| std::env::var("FUNNEL_ADMIN_PASSWORD").ok())
        .unwrap_or_default();
    let interval = match m.opt_str("interval").map(|s| s.parse::<f64>()) {
        None => Duration::from_secs(1),
        Some(Ok(v)) if v.is_finite() && (0.05..=3600.0).contains(&v) => Duration::from_secs_f64(v),
        Some(_) => {
            eprintln!("funnel stats: --interval takes seconds between 0.05 and 3600");
            return EXIT_USAGE;
        }
    };
    let count = match m.opt_str("count").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => {
            eprintln!("funnel stats: --count takes a positive number");
            return EXIT_USAGE;
        }
    };
    let clear = !m.opt_present("no-clear") && std::io::stdout().is_terminal();
    let timeout = Duration::from_secs(5).max(interval);

    let mut client: Option<Client> = None;
    let mut prev: Option<(Instant, Counts)> = None;
    let mut done = 0u64;
    let mut last_ok;
    loop {
        let started = Instant::now();
        let frame = (|| {
            if client.is_none() {
                client = Some(Client::connect(&addr, &user, &password, timeout)?);
            }
            let c = client.as_mut().ok_or("not connected")?;
            let version = c.query("SHOW VERSION")?;
            let stats = c.query("SHOW STATS")?;
            let pools = c.query("SHOW POOLS")?;
            let latency = c.query("SHOW LATENCY")?;
            let servers = c.query("SHOW SERVERS")?;
            Ok::<_, String>((version, stats, pools, latency, servers))
        })();
        let mut out = String::new();
        if clear {
            out.push_str("\x1b[H\x1b[2J");
        }
        match frame {
            Ok((version, stats, pools, latency, servers)) => {
                let now = Instant::now();
                let counters = counters(&stats);
                let rates = prev.as_ref().map(|(t, old)| {
                    let dt = now.duration_since(*t).as_secs_f64().max(1e-3);
                    rates(old, &counters, dt)
                });
                out.push_str(&render(
                    &version,
                    &pools,
                    &latency,
                    &counters,
                    rates.as_ref(),
                ));
                out.push_str(&render_servers(&servers));
                prev = Some((now, counters));
                last_ok = true;
            }
            Err(e) => {
                // Reconnect on the next round.
                client = None;
                prev = None;
                last_ok = false;
                out.push_str(&format!("funnel stats: {addr}: {e}\n"));
                if e.contains("ERROR 1045") {
                    let _ = std::io::stdout().write_all(out.as_bytes());
                    return EXIT_RUNTIME;
                }
            }
        }
        let mut stdout = std::io::stdout();
        if stdout
            .write_all(out.as_bytes())
            .and_then(|_| stdout.flush())
            .is_err()
        {
            return 0; // stdout closed (e.g. piped into head)
        }
        done += 1;
        if count.is_some_and(|n| done >= n) {
            return if last_ok { 0 } else { EXIT_RUNTIME };
        }
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        if !clear {
            println!();
        }
    }
}

/// Per pool (and "(total)"): (requests, errors).
type Counts = HashMap<String, (u64, u64)>;

fn counters(stats: &Rows) -> Counts {
    let mut m = HashMap::new();
    for row in &stats.rows {
        let errors = [
            "backend_errors",
            "backlog_full",
            "queue_timeouts",
            "backend_lost",
            "auth_failures",
            "killed",
        ]
        .iter()
        .map(|c| stats.num(row, c))
        .sum();
        m.insert(
            stats.get(row, "pool").to_string(),
            (stats.num(row, "requests"), errors),
        );
    }
    m
}

fn rates(
    old: &HashMap<String, (u64, u64)>,
    new: &HashMap<String, (u64, u64)>,
    dt: f64,
) -> HashMap<String, (f64, f64)> {
    new.iter()
        .map(|(k, (r, e))| {
            let (r0, e0) = old.get(k).copied().unwrap_or((*r, *e));
            (
                k.clone(),
                (
                    r.saturating_sub(r0) as f64 / dt,
                    e.saturating_sub(e0) as f64 / dt,
                ),
            )
        })
        .collect()
}

fn dur(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 10_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

fn uptime(s: u64) -> String {
    let (d, h, m) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {}s", s % 60)
    }
}

fn render(
    version: &Rows,
    pools: &Rows,
    latency: &Rows,
    counters: &HashMap<String, (u64, u64)>,
    rates: Option<&HashMap<String, (f64, f64)>>,
) -> String {
    let mut out = String::new();
    if let Some(v) = version.rows.first() {
        let backend = match version.get(v, "backend_version") {
            "" => String::new(),
            b => format!(" ({b})"),
        };
        out.push_str(&format!(
            "{} · backend {}{} · up {} · clients {}",
            version.get(v, "version"),
            version.get(v, "backend_address"),
            backend,
            uptime(version.num(v, "uptime_s")),
            version.num(v, "clients"),
        ));
        let hs = version.num(v, "clients_handshaking");
        if hs > 0 {
            out.push_str(&format!(" ({hs} logging in)"));
        }
        if version.get(v, "paused") == "yes" {
            out.push_str(" · PAUSED");
        }
        if version.get(v, "shutting_down") == "yes" {
            out.push_str(" · SHUTTING DOWN");
        }
        out.push('\n');
    }
    // (pool, metric) -> (p50, p99) over the last 10 s.
    let mut lat: HashMap<(String, String), (u64, u64)> = HashMap::new();
    for row in &latency.rows {
        if latency.get(row, "window") == "10s" {
            lat.insert(
                (
                    latency.get(row, "pool").to_string(),
                    latency.get(row, "metric").to_string(),
                ),
                (latency.num(row, "p50_us"), latency.num(row, "p99_us")),
            );
        }
    }
    out.push_str(&format!(
        "{:<16} {:>7} {:>6} {:>6} {:>5} {:>4}  {:<17} {:>4}  {:>7} {:>6} {:>6}  {:>8} {:>6}  {:>8} {:>8}  {:>8}\n",
        "POOL", "CLIENTS", "IDLE", "QUEUED", "RUN", "PIN", "BACKENDS i/b/p/c/x", "UP", "BACKLOG", "MAX1M", "SIZE",
        "REQ/S", "ERR/S", "E2E p50", "E2E p99", "QUEUE99"
    ));
    let rate = |pool: &str| -> (String, String) {
        match rates.and_then(|r| r.get(pool)) {
            Some((r, e)) => (format!("{r:.0}"), format!("{e:.0}")),
            None => ("-".into(), "-".into()),
        }
    };
    let mut sum = [0u64; 8];
    for row in &pools.rows {
        let name = pools.get(row, "pool");
        let n = |c: &str| pools.num(row, c);
        let backends = format!(
            "{}/{}/{}/{}/{}",
            n("backends_idle"),
            n("backends_busy"),
            n("backends_pinned"),
            n("backends_connecting"),
            n("backends_broken")
        );
        let (rps, eps) = rate(name);
        let e2e = lat
            .get(&(name.to_string(), "end_to_end".into()))
            .copied()
            .unwrap_or((0, 0));
        let q = lat
            .get(&(name.to_string(), "queue_wait".into()))
            .copied()
            .unwrap_or((0, 0));
        let vals = [
            n("clients"),
            n("clients_idle"),
            n("clients_queued"),
            n("clients_running"),
            n("clients_pinned"),
            n("backlog"),
            n("backlog_max_1m"),
            n("backlog_size"),
        ];
        for (s, v) in sum.iter_mut().zip(vals) {
            *s += v;
        }
        let shown: String = name.chars().take(16).collect();
        out.push_str(&format!(
            "{:<16} {:>7} {:>6} {:>6} {:>5} {:>4}  {:<17} {:>4}  {:>7} {:>6} {:>6}  {:>8} {:>6}  {:>8} {:>8}  {:>8}\n",
            shown, vals[0], vals[1], vals[2], vals[3], vals[4], backends, pools.get(row, "backend_up"),
            vals[5], vals[6], vals[7], rps, eps, dur(e2e.0), dur(e2e.1), dur(q.1)
        ));
    }
    if pools.rows.len() > 1 {
        let (rps, eps) = rate(super::report::TOTAL);
        let e2e = lat
            .get(&(super::report::TOTAL.to_string(), "end_to_end".into()))
            .copied()
            .unwrap_or((0, 0));
        let q = lat
            .get(&(super::report::TOTAL.to_string(), "queue_wait".into()))
            .copied()
            .unwrap_or((0, 0));
        out.push_str(&format!(
            "{:<16} {:>7} {:>6} {:>6} {:>5} {:>4}  {:<17} {:>4}  {:>7} {:>6} {:>6}  {:>8} {:>6}  {:>8} {:>8}  {:>8}\n",
            super::report::TOTAL, sum[0], sum[1], sum[2], sum[3], sum[4], "", "", sum[5], "", sum[7], rps, eps,
            dur(e2e.0), dur(e2e.1), dur(q.1)
        ));
    }
    if let Some((req, err)) = counters.get(super::report::TOTAL) {
        out.push_str(&format!(
            "requests {req} · errors {err} · latency over the last 10 s\n"
        ));
    }
    for row in &pools.rows {
        let e = pools.get(row, "last_backend_error");
        if pools.get(row, "backend_up") != "yes" && !e.is_empty() {
            out.push_str(&format!("{}: backend down: {e}\n", pools.get(row, "pool")));
        }
    }
    out
}

/// The backend servers, when the configuration names them (`[server
/// NAME]`; the one server of `[backend] address` is the pools' already).
fn render_servers(servers: &Rows) -> String {
    if !servers
        .rows
        .iter()
        .any(|row| servers.get(row, "role") != "any")
    {
        return String::new();
    }
    let mut out = format!(
        "{:<16} {:<8} {:<28} {:>6} {:>6} {:>8}  {:>8} {:>8}  {:>8}\n",
        "SERVER", "ROLE", "STATE", "CONNS", "IN USE", "LAG", "SVC p50", "SVC p99", "OUT/BACK"
    );
    for row in &servers.rows {
        let state: String = servers.get(row, "state").chars().take(28).collect();
        let lag = match servers.get(row, "lag_ms") {
            "" => "-".to_string(),
            _ => dur(servers.num(row, "lag_ms") * 1000),
        };
        out.push_str(&format!(
            "{:<16} {:<8} {:<28} {:>6} {:>6} {:>8}  {:>8} {:>8}  {:>8}\n",
            servers
                .get(row, "server")
                .chars()
                .take(16)
                .collect::<String>(),
            servers.get(row, "role"),
            state,
            servers.num(row, "connections"),
            servers.num(row, "in_use"),
            lag,
            dur(servers.num(row, "service_p50_us")),
            dur(servers.num(row, "service_p99_us")),
            format!(
                "{}/{}",
                servers.num(row, "went_out"),
                servers.num(row, "came_back")
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(columns: &[&str], rows: &[&[&str]]) -> Rows {
        Rows {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| (!v.is_empty()).then(|| v.to_string()))
                        .collect()
                })
                .collect(),
        }
    }

    const COLUMNS: [&str; 10] = [
        "server",
        "role",
        "state",
        "connections",
        "in_use",
        "lag_ms",
        "service_p50_us",
        "service_p99_us",
        "went_out",
        "came_back",
    ];

    #[test]
    fn servers_are_shown_only_when_named() {
        let plain = rows(
            &COLUMNS,
            &[&["backend", "any", "up", "8", "1", "", "250", "900", "0", "0"]],
        );
        assert_eq!(render_servers(&plain), "");
        let named = rows(
            &COLUMNS,
            &[
                &[
                    "db1", "primary", "up", "8", "2", "", "250", "1200", "0", "0",
                ],
                &[
                    "db2",
                    "replica",
                    "out: replication stopped",
                    "0",
                    "0",
                    "1500",
                    "",
                    "",
                    "1",
                    "0",
                ],
            ],
        );
        let out = render_servers(&named);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("SERVER") && lines[0].contains("OUT/BACK"));
        assert!(
            lines[1].starts_with("db1") && lines[1].contains("primary"),
            "{out}"
        );
        assert!(
            lines[2].contains("out: replication stopped") && lines[2].contains("1/0"),
            "{out}"
        );
        assert!(lines[2].contains(&dur(1_500_000)), "lag in {out}");
    }
}
