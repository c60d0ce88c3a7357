//! What to run: the target, the login, and the workload. Pure parsing, no I/O
//! (except resolving a host name in [`Target::parse`]).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Where the clients connect: a TCP address or a unix socket path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// As given on the command line, and resolved once.
    Tcp {
        spec: String,
        addr: SocketAddr,
    },
    Unix(PathBuf),
}

impl Target {
    /// `host:port`, `host` (port 3306), `[v6]:port`, or an absolute path
    /// (anything starting with '/') for a unix socket.
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty target address".into());
        }
        if s.starts_with('/') {
            return Ok(Target::Unix(PathBuf::from(s)));
        }
        let with_port = if s.parse::<SocketAddr>().is_ok() || has_port(s) {
            s.to_owned()
        } else {
            format!("{s}:3306")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{s:?} resolves to no address"))?;
        Ok(Target::Tcp {
            spec: s.to_owned(),
            addr,
        })
    }
}

/// "host:port" or "[v6]:port" (a bare IPv6 address has several colons).
fn has_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.starts_with('['))
        }
        None => false,
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { spec, .. } => f.write_str(spec),
            Target::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub database: Option<String>,
}

/// The kinds of query the scripted mix is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueryKind {
    /// `SELECT c FROM t WHERE id = ?`
    Point,
    /// `SELECT c FROM t WHERE id BETWEEN ? AND ?+9`
    Range,
    /// `SELECT SLEEP(x)`
    Sleep,
    /// `UPDATE t SET k = k + 1 WHERE id = ?`
    Write,
}

impl QueryKind {
    pub const ALL: [QueryKind; 4] = [
        QueryKind::Point,
        QueryKind::Range,
        QueryKind::Sleep,
        QueryKind::Write,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QueryKind::Point => "point",
            QueryKind::Range => "range",
            QueryKind::Sleep => "sleep",
            QueryKind::Write => "write",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Relative weights of the query kinds, e.g. `point=90,range=5,write=5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Indexed by [`QueryKind::index`].
    pub weights: [u32; 4],
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            weights: [90, 5, 0, 5],
        }
    }
}

impl Mix {
    /// Parses `kind=weight` pairs separated by commas. Kinds not named get
    /// weight 0. Weights are relative (they need not add up to 100), but at
    /// least one must be positive.
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut weights = [0u32; 4];
        let mut seen = [false; 4];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("mix entry {part:?} is not kind=weight"))?;
            let kind = QueryKind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| {
                    format!(
                        "unknown query kind {:?} in mix (point, range, sleep, write)",
                        name.trim()
                    )
                })?;
            if seen[kind.index()] {
                return Err(format!("query kind {} given twice in mix", kind.name()));
            }
            seen[kind.index()] = true;
            weights[kind.index()] = w
                .trim()
                .parse()
                .map_err(|_| format!("bad weight {:?} for {} in mix", w.trim(), kind.name()))?;
        }
        if weights.iter().all(|&w| w == 0) {
            return Err("mix has no query kind with a positive weight".into());
        }
        if weights.iter().map(|&w| u64::from(w)).sum::<u64>() > u64::from(u32::MAX) {
            return Err("mix weights are too large".into());
        }
        Ok(Mix { weights })
    }

    pub fn total(&self) -> u32 {
        self.weights.iter().sum()
    }

    pub fn weight(&self, k: QueryKind) -> u32 {
        self.weights[k.index()]
    }

    /// The kind for a uniform draw `r` in `0..self.total()`.
    pub fn pick(&self, r: u32) -> QueryKind {
        let mut r = r;
        for k in QueryKind::ALL {
            let w = self.weights[k.index()];
            if r < w {
                return k;
            }
            r -= w;
        }
        // Only reached if r >= total; give the last kind with a weight.
        QueryKind::ALL
            .into_iter()
            .rev()
            .find(|k| self.weights[k.index()] > 0)
            .unwrap_or(QueryKind::Point)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for k in QueryKind::ALL {
            let w = self.weight(k);
            if w > 0 {
                if !first {
                    f.write_str(",")?;
                }
                write!(f, "{}={}", k.name(), w)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// How a client uses its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnMode {
    /// Connect once, then query until the end.
    Persistent,
    /// Connect, run this many queries, COM_QUIT, reconnect: a PHP page.
    Page { queries: u32 },
}

/// The distribution of think times around their mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThinkDist {
    /// Always the mean.
    Fixed,
    /// Uniform in [mean/2, 3*mean/2].
    Uniform,
    /// Exponential with that mean (a Poisson process per client).
    Exp,
}

impl ThinkDist {
    pub fn parse(s: &str) -> Result<ThinkDist, String> {
        match s {
            "fixed" => Ok(ThinkDist::Fixed),
            "uniform" => Ok(ThinkDist::Uniform),
            "exp" | "exponential" => Ok(ThinkDist::Exp),
            _ => Err(format!(
                "unknown think time distribution {s:?} (fixed, uniform, exp)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ThinkDist::Fixed => "fixed",
            ThinkDist::Uniform => "uniform",
            ThinkDist::Exp => "exp",
        }
    }
}

/// Everything about the load except where it goes.
#[derive(Clone, Debug)]
pub struct Workload {
    pub clients: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub mix: Mix,
    /// Length of `SELECT SLEEP(x)`.
    pub sleep: Duration,
    /// Mean think time between queries (closed loop), and between pages.
    pub think: Duration,
    pub think_dist: ThinkDist,
    pub mode: ConnMode,
    /// Open loop: total queries per second over all clients.
    pub rate: Option<f64>,
    pub table: String,
    /// Ids are drawn uniformly from 1..=table_size.
    pub table_size: u64,
    /// At most this many connects (TCP connect + handshake) in flight.
    pub max_connecting: usize,
    pub connect_timeout: Duration,
    /// 0 = none.
    pub query_timeout: Duration,
    /// How long to wait after the measured window for queries still in flight.
    pub drain_timeout: Duration,
    /// First delay before reconnecting after a failure; doubles up to 5 s.
    pub reconnect_delay: Duration,
    /// Longest time for the initial connects before warmup starts anyway.
    pub ramp_timeout: Duration,
    pub seed: u64,
    pub deprecate_eof: bool,
    /// Collation id sent in the handshake; None = the server's default.
    pub charset: Option<u8>,
    /// Print a line per second on stderr.
    pub progress: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 100,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            mix: Mix::default(),
            sleep: Duration::from_millis(100),
            think: Duration::ZERO,
            think_dist: ThinkDist::Uniform,
            mode: ConnMode::Persistent,
            rate: None,
            table: "sbtest1".into(),
            table_size: 10_000,
            max_connecting: 32,
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            reconnect_delay: Duration::from_millis(100),
            ramp_timeout: Duration::from_secs(120),
            seed: 1,
            deprecate_eof: false,
            charset: None,
            progress: false,
        }
    }
}

impl Workload {
    /// One line describing the workload, for the report.
    pub fn describe(&self) -> String {
        let lp = match self.rate {
            Some(r) => format!("open loop {} q/s", fmt_num(r)),
            None => "closed loop".to_owned(),
        };
        let mode = match self.mode {
            ConnMode::Persistent => "persistent".to_owned(),
            ConnMode::Page { queries } => format!("page ({queries} queries/page)"),
        };
        let mut s = format!(
            "{lp}, {mode}, {} clients, mix {}, {} s (+{} s warmup)",
            self.clients,
            self.mix,
            fmt_num(self.duration.as_secs_f64()),
            fmt_num(self.warmup.as_secs_f64())
        );
        if !self.think.is_zero() && (self.rate.is_none() || self.mode != ConnMode::Persistent) {
            s += &format!(
                ", think {} ms {}",
                fmt_num(self.think.as_secs_f64() * 1e3),
                self.think_dist.name()
            );
        }
        if self.mix.weight(QueryKind::Sleep) > 0 {
            s += &format!(", sleep {} ms", fmt_num(self.sleep.as_secs_f64() * 1e3));
        }
        s
    }
}

/// A number without useless decimals: 10, 2.5, 0.125.
pub fn fmt_num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// Parses seconds ("10", "0.5") into a Duration.
pub fn parse_secs(s: &str, what: &str) -> Result<Duration, String> {
    parse_scaled(s, 1.0, what)
}

/// Parses milliseconds ("250", "0.5") into a Duration.
pub fn parse_ms(s: &str, what: &str) -> Result<Duration, String> {
    parse_scaled(s, 1e-3, what)
}

fn parse_scaled(s: &str, scale: f64, what: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{what}: {s:?} is not a number"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 1e9 {
        return Err(format!("{what}: {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parse() {
        let m = Mix::parse("point=90,range=5,sleep=0,write=5").unwrap();
        assert_eq!(m.weights, [90, 5, 0, 5]);
        assert_eq!(m.total(), 100);
        assert_eq!(m.to_string(), "point=90,range=5,write=5");
        let m = Mix::parse(" sleep = 1 , point=3 ,").unwrap();
        assert_eq!(m.weights, [3, 0, 1, 0]);
        assert!(Mix::parse("").is_err());
        assert!(Mix::parse("point=0").is_err());
        assert!(Mix::parse("point").is_err());
        assert!(Mix::parse("select=5").is_err());
        assert!(Mix::parse("point=-1").is_err());
        assert!(Mix::parse("point=1,point=2").is_err());
        assert!(Mix::parse("point=4294967295,range=1").is_err());
    }

    #[test]
    fn mix_pick_follows_weights() {
        let m = Mix::parse("point=2,range=0,sleep=1,write=3").unwrap();
        let picks: Vec<QueryKind> = (0..m.total()).map(|r| m.pick(r)).collect();
        use QueryKind::*;
        assert_eq!(picks, [Point, Point, Sleep, Write, Write, Write]);
        // Out of range draws stay on a kind with a weight.
        assert_eq!(m.pick(100), Write);
        let only_range = Mix::parse("range=7").unwrap();
        assert!((0..10).all(|r| only_range.pick(r) == Range));
    }

    #[test]
    fn target_parse() {
        assert_eq!(
            Target::parse("/run/mysqld/mysqld.sock").unwrap(),
            Target::Unix("/run/mysqld/mysqld.sock".into())
        );
        match Target::parse("127.0.0.1:3307").unwrap() {
            Target::Tcp { addr, .. } => assert_eq!(addr, "127.0.0.1:3307".parse().unwrap()),
            t => panic!("{t:?}"),
        }
        match Target::parse("127.0.0.1").unwrap() {
            Target::Tcp { addr, .. } => assert_eq!(addr.port(), 3306),
            t => panic!("{t:?}"),
        }
        match Target::parse("[::1]:3399").unwrap() {
            Target::Tcp { addr, .. } => assert_eq!(addr, "[::1]:3399".parse().unwrap()),
            t => panic!("{t:?}"),
        }
        assert!(Target::parse("").is_err());
        assert!(has_port("localhost:1"));
        assert!(!has_port("::1"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_secs("10", "x").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_secs("0.25", "x").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_ms("1.5", "x").unwrap(), Duration::from_micros(1500));
        assert!(parse_secs("-1", "x").is_err());
        assert!(parse_secs("abc", "x").is_err());
        assert!(parse_secs("inf", "x").is_err());
        assert_eq!(fmt_num(10.0), "10");
        assert_eq!(fmt_num(2.5), "2.5");
        assert_eq!(fmt_num(0.0), "0");
    }
}
