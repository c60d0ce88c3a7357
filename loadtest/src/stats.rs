//! What a run measured, how runs are merged, and how results are shown
//! (text summary, comparison table, JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::config::{fmt_num, ConnMode, QueryKind, Workload};

/// Latencies are recorded in microseconds, up to one hour, 3 significant
/// figures.
pub const HIST_MAX_US: u64 = 3_600_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

pub fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The percentiles every report shows.
pub const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

/// How a client's work failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrKind {
    /// TCP connect failed, or the connection was lost before login ended.
    Connect,
    /// The server refused the login (ERR packet or unsupported method).
    Auth,
    /// The server answered a query with an ERR packet.
    Query,
    /// The client gave up waiting (connect+login or query timeout).
    Timeout,
    /// An established connection was closed or reset by the server.
    Closed,
    /// The server sent something undecodable.
    Protocol,
}

impl ErrKind {
    pub const ALL: [ErrKind; 6] = [
        ErrKind::Connect,
        ErrKind::Auth,
        ErrKind::Query,
        ErrKind::Timeout,
        ErrKind::Closed,
        ErrKind::Protocol,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrKind::Connect => "connect",
            ErrKind::Auth => "auth",
            ErrKind::Query => "query",
            ErrKind::Timeout => "timeout",
            ErrKind::Closed => "closed",
            ErrKind::Protocol => "protocol",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeCount {
    pub count: u64,
    /// First message seen with this code.
    pub message: String,
    /// Kind of the first error seen with this code.
    pub kind: ErrKind,
}

/// Error counts by kind and by MySQL error code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    pub by_kind: BTreeMap<ErrKind, u64>,
    pub by_code: BTreeMap<u16, CodeCount>,
    /// First message of each kind for errors without a code (e.g.
    /// "Connection refused").
    pub samples: BTreeMap<ErrKind, String>,
}

impl Errors {
    pub fn add(&mut self, kind: ErrKind, code: Option<u16>, message: &str) {
        *self.by_kind.entry(kind).or_default() += 1;
        match code {
            Some(code) => {
                self.by_code
                    .entry(code)
                    .or_insert_with(|| CodeCount {
                        count: 0,
                        message: message.to_owned(),
                        kind,
                    })
                    .count += 1;
            }
            None => {
                self.samples
                    .entry(kind)
                    .or_insert_with(|| message.to_owned());
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    pub fn kind(&self, k: ErrKind) -> u64 {
        self.by_kind.get(&k).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, o: &Errors) {
        for (k, n) in &o.by_kind {
            *self.by_kind.entry(*k).or_default() += n;
        }
        for (code, c) in &o.by_code {
            self.by_code
                .entry(*code)
                .and_modify(|e| e.count += c.count)
                .or_insert_with(|| c.clone());
        }
        for (k, m) in &o.samples {
            self.samples.entry(*k).or_insert_with(|| m.clone());
        }
    }

    /// "connect=3 query=1; 1040 Too many connections x3; connect: Connection refused"
    pub fn describe(&self) -> String {
        if self.total() == 0 {
            return "none".into();
        }
        let mut s = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{}={n}", k.name()))
            .collect::<Vec<_>>()
            .join(" ");
        for (code, c) in &self.by_code {
            let _ = write!(
                s,
                "\n    {code} ({}) x{}: {}",
                c.kind.name(),
                c.count,
                truncate(&c.message, 160)
            );
        }
        for (k, m) in &self.samples {
            let _ = write!(s, "\n    {}: {}", k.name(), truncate(m, 160));
        }
        s
    }

    pub fn to_json(&self) -> Value {
        json!({
            "total": self.total(),
            "by_kind": ErrKind::ALL.iter().map(|k| (k.name().to_owned(), json!(self.kind(*k))))
                .collect::<serde_json::Map<_, _>>(),
            "by_code": self.by_code.iter().map(|(code, c)| json!({
                "code": code, "count": c.count, "kind": c.kind.name(), "message": c.message,
            })).collect::<Vec<_>>(),
            "samples": self.samples.iter().map(|(k, m)| (k.name().to_owned(), json!(m)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let t: String = s.chars().take(n).collect();
        t + "..."
    }
}

/// Everything one run (or several merged rounds against the same target)
/// measured. Counts and histograms cover the measured window only: queries
/// whose intended send time fell in it, connects and pages that began in it.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub label: String,
    pub target: String,
    pub server_version: String,
    /// Total measured time (summed over rounds).
    pub window: Duration,
    pub rounds: usize,
    /// Throughput of each round.
    pub round_qps: Vec<f64>,
    /// Successful answers received during the window (whenever sent):
    /// the throughput.
    pub answers: u64,
    /// Latency of the successful queries whose intended send time was in
    /// the window (all kinds).
    pub all: Histogram<u64>,
    /// Indexed by [`QueryKind::index`].
    pub by_kind: Vec<Histogram<u64>>,
    /// Connect start to login OK.
    pub connect: Histogram<u64>,
    pub connect_attempts: u64,
    /// Page mode: first wish to connect (or first query's intended time in
    /// open loop) to the last query's answer, for pages whose queries all
    /// succeeded.
    pub pages: Histogram<u64>,
    pub pages_failed: u64,
    /// Pages begun in the window and still going when the drain timed out.
    pub pages_unfinished: u64,
    pub errors: Errors,
    /// Errors during ramp-up and warmup (not in `errors`).
    pub early_errors: Errors,
    /// Queries of the window still unanswered when the drain timeout expired.
    pub unfinished: u64,
    /// Open loop: slots of the window never sent (client disconnected or
    /// too far behind).
    pub missed: u64,
    /// Open loop: queries sent more than 1 ms after their intended time.
    pub late: u64,
    pub max_lag: Duration,
    /// The generator's CPU time during the window.
    pub cpu_user: Duration,
    pub cpu_sys: Duration,
    /// Time to get the initial connects done (last round).
    pub ramp: Duration,
    /// Latency of the initial connects that succeeded at first try.
    pub ramp_connect: Histogram<u64>,
    /// Clients logged in when the window started / ended (min over rounds).
    pub connected_start: usize,
    pub connected_end: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl RunResult {
    pub fn new(label: &str, target: &str) -> Self {
        RunResult {
            label: label.to_owned(),
            target: target.to_owned(),
            server_version: String::new(),
            window: Duration::ZERO,
            rounds: 0,
            round_qps: Vec::new(),
            answers: 0,
            all: new_hist(),
            by_kind: QueryKind::ALL.iter().map(|_| new_hist()).collect(),
            connect: new_hist(),
            connect_attempts: 0,
            pages: new_hist(),
            pages_failed: 0,
            pages_unfinished: 0,
            errors: Errors::default(),
            early_errors: Errors::default(),
            unfinished: 0,
            missed: 0,
            late: 0,
            max_lag: Duration::ZERO,
            cpu_user: Duration::ZERO,
            cpu_sys: Duration::ZERO,
            ramp: Duration::ZERO,
            ramp_connect: new_hist(),
            connected_start: 0,
            connected_end: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    pub fn record_query(&mut self, kind: QueryKind, latency: Duration) {
        let v = us(latency);
        self.all.saturating_record(v);
        self.by_kind[kind.index()].saturating_record(v);
    }

    pub fn queries(&self) -> u64 {
        self.all.len()
    }

    fn per_sec(&self, n: u64) -> f64 {
        let w = self.window.as_secs_f64();
        if w > 0.0 {
            n as f64 / w
        } else {
            0.0
        }
    }

    /// Throughput: successful answers received during the window.
    pub fn qps(&self) -> f64 {
        self.per_sec(self.answers)
    }

    pub fn pages_per_sec(&self) -> f64 {
        self.per_sec(self.pages.len())
    }

    pub fn connects_per_sec(&self) -> f64 {
        self.per_sec(self.connect.len())
    }

    /// Generator CPU time over the window, as a fraction of one core.
    pub fn cpu_fraction(&self) -> f64 {
        let w = self.window.as_secs_f64();
        if w > 0.0 {
            (self.cpu_user + self.cpu_sys).as_secs_f64() / w
        } else {
            0.0
        }
    }

    /// Every error, including those before the window.
    pub fn all_errors(&self) -> u64 {
        self.errors.total() + self.early_errors.total()
    }

    /// Adds another round against the same target.
    pub fn merge(&mut self, o: &RunResult) {
        if self.server_version.is_empty() {
            self.server_version = o.server_version.clone();
        }
        let first = self.rounds == 0;
        self.window += o.window;
        self.rounds += o.rounds;
        self.round_qps.extend_from_slice(&o.round_qps);
        self.answers += o.answers;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.all.add(&o.all);
        for (a, b) in self.by_kind.iter_mut().zip(&o.by_kind) {
            let _ = a.add(b);
        }
        let _ = self.connect.add(&o.connect);
        self.connect_attempts += o.connect_attempts;
        let _ = self.pages.add(&o.pages);
        self.pages_failed += o.pages_failed;
        self.pages_unfinished += o.pages_unfinished;
        self.errors.merge(&o.errors);
        self.early_errors.merge(&o.early_errors);
        self.unfinished += o.unfinished;
        self.missed += o.missed;
        self.late += o.late;
        self.max_lag = self.max_lag.max(o.max_lag);
        self.cpu_user += o.cpu_user;
        self.cpu_sys += o.cpu_sys;
        self.ramp = o.ramp;
        let _ = self.ramp_connect.add(&o.ramp_connect);
        self.connected_start = if first {
            o.connected_start
        } else {
            self.connected_start.min(o.connected_start)
        };
        self.connected_end = if first {
            o.connected_end
        } else {
            self.connected_end.min(o.connected_end)
        };
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }

    pub fn to_json(&self, w: &Workload) -> Value {
        let kinds: serde_json::Map<String, Value> = QueryKind::ALL
            .iter()
            .filter(|k| w.mix.weight(**k) > 0)
            .map(|k| (k.name().to_owned(), hist_json(&self.by_kind[k.index()])))
            .collect();
        let mut v = json!({
            "label": self.label,
            "target": self.target,
            "server_version": self.server_version,
            "rounds": self.rounds,
            "window_s": self.window.as_secs_f64(),
            "answers_in_window": self.answers,
            "qps": self.qps(),
            "queries_intended_in_window": self.queries(),
            "round_qps": self.round_qps,
            "latency_ms": hist_json(&self.all),
            "latency_ms_by_kind": kinds,
            "connects": {
                "attempts": self.connect_attempts,
                "ok": self.connect.len(),
                "per_s": self.connects_per_sec(),
                "latency_ms": hist_json(&self.connect),
            },
            "errors": self.errors.to_json(),
            "errors_before_window": self.early_errors.to_json(),
            "unfinished": self.unfinished,
            "generator_cpu": {
                "user_s": self.cpu_user.as_secs_f64(),
                "sys_s": self.cpu_sys.as_secs_f64(),
                "fraction_of_core": self.cpu_fraction(),
            },
            "ramp_s": self.ramp.as_secs_f64(),
            "ramp_connect_latency_ms": hist_json(&self.ramp_connect),
            "connected_at_start": self.connected_start,
            "connected_at_end": self.connected_end,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        });
        if let ConnMode::Page { .. } = w.mode {
            v["pages"] = json!({
                "ok": self.pages.len(),
                "failed": self.pages_failed,
                "unfinished": self.pages_unfinished,
                "per_s": self.pages_per_sec(),
                "latency_ms": hist_json(&self.pages),
            });
        }
        if w.rate.is_some() {
            v["open_loop"] = json!({
                "missed": self.missed,
                "late": self.late,
                "max_lag_ms": self.max_lag.as_secs_f64() * 1e3,
            });
        }
        v
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn hist_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    let mut v = json!({
        "count": h.len(),
        "mean": h.mean() / 1000.0,
        "min": ms(h.min()),
        "max": ms(h.max()),
    });
    for (name, p) in PERCENTILES {
        v[name] = json!(ms(h.value_at_percentile(p)));
    }
    v["p99.99"] = json!(ms(h.value_at_percentile(99.99)));
    v
}

/// Milliseconds with about 3 significant digits.
pub fn fmt_ms(us: u64) -> String {
    let m = ms(us);
    if m < 1.0 {
        format!("{m:.3}")
    } else if m < 10.0 {
        format!("{m:.2}")
    } else if m < 100.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.0}")
    }
}

/// The five latency columns (p50 p90 p99 p99.9 max) of a histogram.
fn lat_cells(h: &Histogram<u64>) -> Vec<String> {
    if h.is_empty() {
        return vec!["-".into(); PERCENTILES.len() + 1];
    }
    let mut v: Vec<String> = PERCENTILES
        .iter()
        .map(|(_, p)| fmt_ms(h.value_at_percentile(*p)))
        .collect();
    v.push(fmt_ms(h.max()));
    v
}

fn lat_row(out: &mut String, name: &str, h: &Histogram<u64>) {
    let _ = write!(out, "  {name:<10}{:>10}", h.len());
    for c in lat_cells(h) {
        let _ = write!(out, "{c:>9}");
    }
    out.push('\n');
}

fn cpu_line(r: &RunResult) -> String {
    let f = r.cpu_fraction();
    let mut s = format!(
        "{:.2} s user + {:.2} s sys over {:.1} s = {:.0}% of one core",
        r.cpu_user.as_secs_f64(),
        r.cpu_sys.as_secs_f64(),
        r.window.as_secs_f64(),
        f * 100.0
    );
    if f > 0.8 {
        s += "  (!) the generator itself may be the bottleneck";
    }
    s
}

/// The compact text report of one target.
pub fn summary(r: &RunResult, w: &Workload) -> String {
    let mut s = String::new();
    let ver = if r.server_version.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.server_version)
    };
    let _ = writeln!(s, "== {} {}{}", r.label, r.target, ver);
    let _ = writeln!(s, "workload     {}", w.describe());
    let rounds = if r.rounds > 1 {
        format!(
            " over {} rounds [{}]",
            r.rounds,
            r.round_qps
                .iter()
                .map(|q| format!("{q:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    } else {
        String::new()
    };
    let offered = match w.rate {
        Some(rate) => format!("offered {} q/s; ", fmt_num(rate)),
        None => String::new(),
    };
    let _ = writeln!(
        s,
        "throughput   {:.1} q/s ({offered}{} answers in {:.1} s){rounds}",
        r.qps(),
        r.answers,
        r.window.as_secs_f64()
    );
    if let ConnMode::Page { .. } = w.mode {
        let _ = writeln!(
            s,
            "pages        {:.1} pages/s ({} ok, {} failed, {} unfinished at end)",
            r.pages_per_sec(),
            r.pages.len(),
            r.pages_failed,
            r.pages_unfinished
        );
    }
    let connects = if r.connect_attempts == 0 {
        "none in window".to_owned()
    } else {
        format!(
            "{} ok of {} attempts in window ({:.1}/s)",
            r.connect.len(),
            r.connect_attempts,
            r.connects_per_sec()
        )
    };
    let _ = writeln!(
        s,
        "connects     {connects}; logged in: {} at start, {} at end",
        r.connected_start, r.connected_end,
    );
    let rc = &r.ramp_connect;
    let open_pages = w.rate.is_some() && matches!(w.mode, ConnMode::Page { .. });
    if open_pages {
        // Pages connect on their schedule: there is no ramp-up.
    } else if rc.is_empty() {
        let _ = writeln!(
            s,
            "ramp-up      {:.2} s: no initial connect succeeded",
            r.ramp.as_secs_f64()
        );
    } else {
        let _ = writeln!(
            s,
            "ramp-up      {:.2} s: {} first connects ok, p50 {} p99 {} max {} ms",
            r.ramp.as_secs_f64(),
            rc.len(),
            fmt_ms(rc.value_at_percentile(50.0)),
            fmt_ms(rc.value_at_percentile(99.0)),
            fmt_ms(rc.max())
        );
    }
    if w.rate.is_some() {
        let what = match w.mode {
            ConnMode::Page { .. } => "pages",
            ConnMode::Persistent => "queries",
        };
        let _ = writeln!(
            s,
            "schedule     {what}: {} started >1 ms late (max {:.1} ms behind), {} never started; {} queries unanswered at end",
            r.late,
            r.max_lag.as_secs_f64() * 1e3,
            r.missed,
            r.unfinished
        );
    } else if r.unfinished > 0 {
        let _ = writeln!(s, "unfinished   {} queries unanswered at end", r.unfinished);
    }
    let _ = writeln!(
        s,
        "latency ms       count      p50      p90      p99    p99.9      max"
    );
    lat_row(&mut s, "all", &r.all);
    let kinds: Vec<QueryKind> = QueryKind::ALL
        .into_iter()
        .filter(|k| w.mix.weight(*k) > 0)
        .collect();
    if kinds.len() > 1 {
        for k in &kinds {
            lat_row(&mut s, k.name(), &r.by_kind[k.index()]);
        }
    }
    if let ConnMode::Page { .. } = w.mode {
        lat_row(&mut s, "page", &r.pages);
    }
    if !r.connect.is_empty() {
        lat_row(&mut s, "connect", &r.connect);
    }
    let _ = writeln!(s, "errors       {}", r.errors.describe());
    if r.early_errors.total() > 0 {
        let _ = writeln!(
            s,
            "before window (ramp/warmup): {}",
            r.early_errors.describe()
        );
    }
    let _ = writeln!(s, "generator    {}", cpu_line(r));
    s
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 {
        format!("{:.3}", b / a)
    } else {
        "-".into()
    }
}

/// Side-by-side table of two targets with the ratios B/A.
pub fn comparison(a: &RunResult, b: &RunResult, w: &Workload) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "== compare: {}", w.describe());
    let _ = writeln!(
        s,
        "   {} rounds each, alternating A B / B A",
        a.rounds.max(b.rounds)
    );
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |name: &str, av: String, bv: String, r: String| {
        rows.push([name.to_owned(), av, bv, r]);
    };
    row(
        "",
        format!("A: {}", a.label),
        format!("B: {}", b.label),
        "B/A".into(),
    );
    row("target", a.target.clone(), b.target.clone(), String::new());
    row(
        "throughput q/s",
        format!("{:.1}", a.qps()),
        format!("{:.1}", b.qps()),
        ratio(a.qps(), b.qps()),
    );
    if a.rounds > 1 {
        let spread = |r: &RunResult| {
            let min = r.round_qps.iter().copied().fold(f64::INFINITY, f64::min);
            let max = r.round_qps.iter().copied().fold(0.0, f64::max);
            format!("{min:.0}..{max:.0}")
        };
        row("  rounds min..max", spread(a), spread(b), String::new());
    }
    if let ConnMode::Page { .. } = w.mode {
        row(
            "pages/s",
            format!("{:.1}", a.pages_per_sec()),
            format!("{:.1}", b.pages_per_sec()),
            ratio(a.pages_per_sec(), b.pages_per_sec()),
        );
    }
    let connects = !a.connect.is_empty() || !b.connect.is_empty();
    if connects {
        row(
            "connects/s",
            format!("{:.1}", a.connects_per_sec()),
            format!("{:.1}", b.connects_per_sec()),
            ratio(a.connects_per_sec(), b.connects_per_sec()),
        );
    }
    let mut lat = |name: &str, ha: &Histogram<u64>, hb: &Histogram<u64>| {
        let mut pts: Vec<(String, Option<f64>)> = PERCENTILES
            .iter()
            .map(|(n, p)| (n.to_string(), Some(*p)))
            .collect();
        pts.push(("max".into(), None));
        for (pn, p) in pts {
            let v = |h: &Histogram<u64>| match p {
                _ if h.is_empty() => 0,
                Some(p) => h.value_at_percentile(p),
                None => h.max(),
            };
            let (va, vb) = (v(ha), v(hb));
            let show = |h: &Histogram<u64>, x| {
                if h.is_empty() {
                    "-".to_owned()
                } else {
                    fmt_ms(x)
                }
            };
            row(
                &format!("{name} {pn} ms"),
                show(ha, va),
                show(hb, vb),
                if ha.is_empty() || hb.is_empty() {
                    "-".into()
                } else {
                    ratio(va as f64, vb as f64)
                },
            );
        }
    };
    lat("latency", &a.all, &b.all);
    let kinds: Vec<QueryKind> = QueryKind::ALL
        .into_iter()
        .filter(|k| w.mix.weight(*k) > 0)
        .collect();
    if let ConnMode::Page { .. } = w.mode {
        lat("page", &a.pages, &b.pages);
    }
    if connects {
        lat("connect", &a.connect, &b.connect);
    }
    if kinds.len() > 1 {
        for k in &kinds {
            let (ha, hb) = (&a.by_kind[k.index()], &b.by_kind[k.index()]);
            for (pn, p) in [("p50", 50.0), ("p99", 99.0)] {
                let (va, vb) = (ha.value_at_percentile(p), hb.value_at_percentile(p));
                row(
                    &format!("{} {pn} ms", k.name()),
                    if ha.is_empty() {
                        "-".into()
                    } else {
                        fmt_ms(va)
                    },
                    if hb.is_empty() {
                        "-".into()
                    } else {
                        fmt_ms(vb)
                    },
                    ratio(va as f64, vb as f64),
                );
            }
        }
    }
    row(
        "errors",
        a.errors.total().to_string(),
        b.errors.total().to_string(),
        String::new(),
    );
    for k in ErrKind::ALL {
        let (ea, eb) = (a.errors.kind(k), b.errors.kind(k));
        if ea + eb > 0 {
            row(
                &format!("  {}", k.name()),
                ea.to_string(),
                eb.to_string(),
                String::new(),
            );
        }
    }
    if a.early_errors.total() + b.early_errors.total() > 0 {
        row(
            "errors before window",
            a.early_errors.total().to_string(),
            b.early_errors.total().to_string(),
            String::new(),
        );
    }
    if w.rate.is_some() {
        row(
            "late / never sent",
            format!("{} / {}", a.late, a.missed),
            format!("{} / {}", b.late, b.missed),
            String::new(),
        );
    }
    if a.unfinished + b.unfinished > 0 {
        row(
            "unanswered at end",
            a.unfinished.to_string(),
            b.unfinished.to_string(),
            String::new(),
        );
    }
    row(
        "generator cpu %core",
        format!("{:.0}", a.cpu_fraction() * 100.0),
        format!("{:.0}", b.cpu_fraction() * 100.0),
        String::new(),
    );
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let _ = writeln!(
            s,
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    for r in [a, b] {
        if r.errors.total() > 0 {
            let _ = writeln!(s, "errors {}: {}", r.label, r.errors.describe());
        }
        if r.early_errors.total() > 0 {
            let _ = writeln!(
                s,
                "errors before window {}: {}",
                r.label,
                r.early_errors.describe()
            );
        }
    }
    for r in [a, b] {
        if r.cpu_fraction() > 0.8 {
            let _ = writeln!(
                s,
                "(!) generator used {:.0}% of a core during {}: it may be the bottleneck",
                r.cpu_fraction() * 100.0,
                r.label
            );
        }
    }
    s
}

/// The ratios B/A of the headline numbers, for JSON.
pub fn ratios_json(a: &RunResult, b: &RunResult) -> Value {
    let r = |x: f64, y: f64| if x > 0.0 { json!(y / x) } else { Value::Null };
    let mut v = json!({
        "qps": r(a.qps(), b.qps()),
        "pages_per_s": r(a.pages_per_sec(), b.pages_per_sec()),
    });
    for (name, p) in PERCENTILES {
        v[format!("latency_{name}")] = r(
            a.all.value_at_percentile(p) as f64,
            b.all.value_at_percentile(p) as f64,
        );
    }
    v["latency_max"] = r(a.all.max() as f64, b.all.max() as f64);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_count_and_merge() {
        let mut e = Errors::default();
        assert_eq!(e.describe(), "none");
        e.add(ErrKind::Auth, Some(1040), "Too many connections");
        e.add(ErrKind::Auth, Some(1040), "other text");
        e.add(ErrKind::Connect, None, "Connection refused");
        e.add(ErrKind::Connect, None, "second message");
        assert_eq!(e.total(), 4);
        assert_eq!(e.kind(ErrKind::Auth), 2);
        assert_eq!(e.by_code[&1040].message, "Too many connections");
        assert_eq!(e.samples[&ErrKind::Connect], "Connection refused");
        let mut f = Errors::default();
        f.add(ErrKind::Query, Some(1213), "Deadlock");
        f.add(ErrKind::Auth, Some(1040), "x");
        e.merge(&f);
        assert_eq!(e.total(), 6);
        assert_eq!(e.by_code[&1040].count, 3);
        assert_eq!(e.by_code[&1213].kind, ErrKind::Query);
        let d = e.describe();
        assert!(d.starts_with("connect=2 auth=3 query=1"), "{d}");
        assert!(d.contains("1040 (auth) x3: Too many connections"), "{d}");
        assert_eq!(e.to_json()["by_kind"]["auth"], 3);
    }

    #[test]
    fn result_merge_and_rates() {
        let mut a = RunResult::new("A", "x");
        a.window = Duration::from_secs(2);
        a.rounds = 1;
        a.round_qps = vec![1.5];
        a.record_query(QueryKind::Point, Duration::from_micros(100));
        a.record_query(QueryKind::Point, Duration::from_micros(300));
        a.record_query(QueryKind::Write, Duration::from_millis(2));
        a.answers = 3;
        a.connected_start = 10;
        let mut b = a.clone();
        b.connected_start = 7;
        b.cpu_user = Duration::from_secs(1);
        let mut m = RunResult::new("A", "x");
        m.merge(&a);
        assert_eq!(m.connected_start, 10);
        m.merge(&b);
        assert_eq!(m.queries(), 6);
        assert_eq!(m.window, Duration::from_secs(4));
        assert_eq!(m.rounds, 2);
        assert_eq!(m.round_qps, vec![1.5, 1.5]);
        assert!((m.qps() - 1.5).abs() < 1e-9);
        assert_eq!(m.by_kind[QueryKind::Point.index()].len(), 4);
        assert_eq!(m.connected_start, 7);
        assert!((m.cpu_fraction() - 0.25).abs() < 1e-9);
        let r = ratios_json(&a, &m);
        assert!((r["qps"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn ms_format() {
        assert_eq!(fmt_ms(123), "0.123");
        assert_eq!(fmt_ms(1234), "1.23");
        assert_eq!(fmt_ms(12345), "12.3");
        assert_eq!(fmt_ms(123_456), "123");
        assert_eq!(truncate("abcdef", 3), "abc...");
    }
}
