//! The configuration file: an INI file in the style of my.cnf / pgbouncer.ini.
//!
//! Every option is listed once in [`option_table`] (name, section, kind,
//! default, reloadable, help). That table drives the parser (which keys exist
//! where, how their values are checked, what the default is) and the
//! documentation (`funnel --help`, [`options_help`], and a test that keeps
//! `funnel.conf.example` in step with it), the way pgbouncer's
//! `bouncer_params[]` does.
//!
//! Everything here is validated in one pass before the caller binds a socket,
//! and nothing coming from the file may panic: every problem becomes a
//! [`ConfigError`] naming the file, the line and the key.
//!
//! Syntax:
//! * `[funnel]`, `[backend]`, `[pool]`, `[admin]`, `[stats]` and one
//!   `[user NAME]` (or `[user "NAME"]`) per funnel user;
//! * `key = value`; the value may be wrapped in double quotes, inside which
//!   only `\"` and `\\` are escapes;
//! * full-line comments start with `#` or `;`; outside quotes a `#` that
//!   starts the value or follows whitespace starts a trailing comment;
//! * sizes take K/M/G suffixes (1024-based); durations are whole milliseconds
//!   in keys ending with `_ms`.
//!
//! Unknown sections or keys, a key given twice, and a section given twice are
//! errors: silently ignoring a typo in a proxy's limits is how outages start.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

// ---------------------------------------------------------------------------
// Defaults. The option table refers to these, so the documentation and the
// parser cannot disagree about them.
// ---------------------------------------------------------------------------

/// Path tried by the `funnel` binary when no `-c/--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "funnel.conf";

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3307";
/// As mysqld creates its socket: clients authenticate with a password.
pub const DEFAULT_UNIX_SOCKET_MODE: &str = "0777";
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 20_000;
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_MAX_ALLOWED_PACKET: usize = 64 << 20;
pub const DEFAULT_MAX_CLIENT_PENDING_INPUT: usize = 1 << 20;
pub const DEFAULT_CLIENT_WRITE_TIMEOUT_MS: u64 = 60_000;
/// Consecutive failed logins (per client address, per user) answered without delay.
pub const DEFAULT_AUTH_FAILURE_THRESHOLD: usize = 3;
pub const DEFAULT_AUTH_FAILURE_DELAY_MS: usize = 500;
/// Below the default handshake_timeout_ms, so that a held login still gets its answer.
pub const DEFAULT_AUTH_FAILURE_MAX_DELAY_MS: u64 = 4_000;
pub const DEFAULT_OUTPUT_HIGH_WATERMARK: usize = 1 << 20;
pub const DEFAULT_OUTPUT_LOW_WATERMARK: usize = 256 << 10;
/// 0: memory first (slow readers hold their backend; see `max_buffered_result`).
pub const DEFAULT_MAX_BUFFERED_RESULT: usize = 0;
pub const DEFAULT_MAX_BUFFERED_TOTAL: usize = 256 << 20;
pub const DEFAULT_SERVER_VERSION: &str = "";
pub const DEFAULT_LOG_LEVEL: LevelFilter = LevelFilter::Info;
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_ALLOW_LOCAL_INFILE: bool = false;
/// mysqld's own default for its global `max_prepared_stmt_count`.
pub const DEFAULT_MAX_PREPARED_STMT_COUNT: usize = 16_382;
/// As on mysqld, where one connection may hold every statement the global
/// count allows.
pub const DEFAULT_MAX_PREPARED_STMTS_PER_CLIENT: usize = 16_382;
pub const DEFAULT_MAX_REPLAYED_USER_VARS: usize = 256;
pub const DEFAULT_UNLISTED_USERS: &str = "refuse";
pub const DEFAULT_AUTH_PLUGIN: &str = "mysql_native_password";
pub const DEFAULT_MAX_UNLISTED_CONNECTIONS: usize = 64;

pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_HEALTH_CHECK_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_RECONNECT_BACKOFF_MIN_MS: u64 = 100;
pub const DEFAULT_RECONNECT_BACKOFF_MAX_MS: u64 = 5_000;

pub const DEFAULT_POOL_CONNECTIONS: usize = 8;
pub const DEFAULT_BACKLOG_SIZE: usize = 10_000;
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_PINNED_BACKENDS: usize = 32;

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:6033";
pub const DEFAULT_ADMIN_USER: &str = "admin";

pub const DEFAULT_STATS_LISTEN: &str = "127.0.0.1:9033";
pub const DEFAULT_HEALTH_BACKLOG_RATIO: f64 = 0.9;

/// Upper bound for every `_ms` option. `Instant + Duration` panics on
/// overflow, so absurd values are refused here rather than in the event loop.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;

/// MySQL's own limit for max_allowed_packet (1G); the floor is its minimum.
const MAX_PACKET_LIMIT: usize = 1 << 30;
const MIN_PACKET_LIMIT: usize = 1 << 10;

/// Ceiling of the buffered-result sizes: far above any sane setting, low
/// enough that sums of them cannot overflow.
const MAX_BUFFERED_LIMIT: usize = 64 << 30;

/// `sockaddr_un.sun_path` is 108 bytes on Linux including the NUL; a longer
/// path would only fail later, at bind or connect time.
const MAX_UNIX_PATH: usize = 107;

/// How secrets are shown by [`Config::describe`] and `Debug`.
const MASK: &str = "********";

// ---------------------------------------------------------------------------
// The configuration the rest of the funnel uses.
// ---------------------------------------------------------------------------

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file path, or `"<string>"`, for messages.
    pub source: String,
    pub listen: Vec<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    /// Permission bits of the unix socket file (mysqld's: 0777).
    pub unix_socket_mode: u32,
    /// Group (name or number) the unix socket file is given; None: the
    /// process's own.
    pub unix_socket_group: Option<String>,
    pub max_client_connections: usize,
    pub handshake_timeout: Duration,
    pub max_allowed_packet: usize,
    /// Bytes of pipelined, not yet processed input one client may hold
    /// beyond the command being processed.
    pub max_client_pending_input: usize,
    pub client_write_timeout: Duration,
    /// Failed logins (per address, per user) before logins are held back.
    pub auth_failure_threshold: usize,
    /// The first hold once `auth_failure_threshold` is reached (doubled per
    /// further failure); zero: never held.
    pub auth_failure_delay: Duration,
    pub auth_failure_max_delay: Duration,
    pub output_high_watermark: usize,
    pub output_low_watermark: usize,
    /// Connection first: output of one response a slow client may have
    /// pending while the funnel still reads its backend past
    /// `output_high_watermark`; 0 = off (memory first).
    pub max_buffered_result: usize,
    /// Bound on the output held that way for all clients together.
    pub max_buffered_total: usize,
    /// Empty: announce the backend's own version.
    pub server_version: String,
    pub log_level: LevelFilter,
    pub shutdown_timeout: Duration,
    pub allow_local_infile: bool,
    /// Prepared statements all clients together may hold (ERR 1461 past it).
    pub max_prepared_stmt_count: usize,
    /// Prepared statements one client may hold (ERR 1461 past it).
    pub max_prepared_stmts_per_client: usize,
    /// User variables a client may have replayed on another backend; a
    /// client with more is kept on its backend instead.
    pub max_replayed_user_vars: usize,
    /// Logins of users no `[user]` section lists: refused by the funnel, or
    /// relayed to mysqld, each on a backend connection of its own.
    pub relay_unlisted: bool,
    /// Relayed logins (backend connections of unlisted users) at once.
    pub max_unlisted_connections: usize,
    pub backend: BackendConfig,
    /// At least one; names are unique.
    pub users: Vec<UserConfig>,
    pub admin: Option<AdminConfig>,
    pub stats: Option<StatsConfig>,
}

/// Where mysqld is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Tcp(addr) => write!(f, "{addr}"),
            BackendAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub address: BackendAddr,
    pub connect_timeout: Duration,
    pub health_check_interval: Duration,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
}

/// How the funnel verifies a client's password.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The plaintext password.
    Plain(String),
    /// SHA1(SHA1(password)), from `password_hash = *HEX` as stored in
    /// mysql.user; enough to verify mysql_native_password, not to log in.
    Stage2([u8; 20]),
    /// The plaintext password, verified with MariaDB's `client_ed25519`
    /// (`auth_plugin = client_ed25519`): clients are asked to switch to it.
    Ed25519(String),
    /// The account's ed25519 public key (`ed25519_public_key`, as mysqld
    /// stores it): verifies client_ed25519, cannot log in to mysqld.
    Ed25519Key([u8; 32]),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Config is logged with {:?} in places; secrets must not be.
        match self {
            Credential::Plain(_) => write!(f, "Plain({MASK})"),
            Credential::Stage2(_) => write!(f, "Stage2({MASK})"),
            Credential::Ed25519(_) => write!(f, "Ed25519({MASK})"),
            Credential::Ed25519Key(_) => write!(f, "Ed25519Key({MASK})"),
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct UserConfig {
    /// The MySQL user name clients log in with.
    pub name: String,
    pub credential: Credential,
    /// The user the funnel logs in to mysqld as.
    pub backend_user: String,
    pub backend_password: String,
    pub connections: usize,
    pub backlog_size: usize,
    pub queue_timeout: Duration,
    pub max_pinned_backends: usize,
    /// Clients logged in as this user at once; 0 = no limit.
    pub max_client_connections: usize,
    /// Networks its clients may connect from; empty = anywhere.
    pub allowed_networks: Vec<Network>,
}

/// An IP network (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&p| p <= max)?
            }
            Some(_) => return None,
        };
        // Host bits set (10.1.2.3/8) is almost always a typo: refuse it.
        (Network::masked(addr, prefix) == addr).then_some(Network { addr, prefix })
    }

    fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    fn bits(&self, addr: IpAddr) -> IpAddr {
        Network::masked(addr, self.prefix)
    }

    /// Whether `addr` is in the network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.addr.is_ipv4() && self.bits(addr) == self.addr
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn parse_networks(text: &str) -> Result<Vec<Network>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            Network::parse(t).ok_or_else(|| {
                format!("{t:?} is not an IP network (ADDRESS/PREFIX, no host bits set, e.g. 10.0.0.0/8 or ::1/128)")
            })
        })
        .collect()
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("credential", &self.credential)
            .field("backend_user", &self.backend_user)
            .field("backend_password", &MASK)
            .field("connections", &self.connections)
            .field("backlog_size", &self.backlog_size)
            .field("queue_timeout", &self.queue_timeout)
            .field("max_pinned_backends", &self.max_pinned_backends)
            .field("max_client_connections", &self.max_client_connections)
            .field("allowed_networks", &self.allowed_networks)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub user: String,
    pub password: String,
    /// A read-only console account (SHOW commands only); empty: none.
    pub stats_user: String,
    pub stats_password: String,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("user", &self.user)
            .field("password", &MASK)
            .field("stats_user", &self.stats_user)
            .field("stats_password", &MASK)
            .finish()
    }
}

#[derive(Clone, PartialEq)]
pub struct StatsConfig {
    pub listen: SocketAddr,
    pub health_backlog_ratio: f64,
    /// Bearer token required for everything but `/health`; empty: none.
    pub stats_token: String,
}

impl fmt::Debug for StatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsConfig")
            .field("listen", &self.listen)
            .field("health_backlog_ratio", &self.health_backlog_ratio)
            .field("stats_token", &MASK)
            .finish()
    }
}

/// A configuration problem, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file path, or `"<string>"`.
    pub source: String,
    /// 1-based line, when the problem is on one line.
    pub line: Option<usize>,
    /// The key qualified by its section, e.g. `[pool] connections` or
    /// `[user alice] password`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// The option table.
// ---------------------------------------------------------------------------

/// The sections of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    Funnel,
    Backend,
    Pool,
    /// `[user NAME]`, one per funnel user.
    User,
    Admin,
    Stats,
}

const SECTIONS: [Section; 6] = [
    Section::Funnel,
    Section::Backend,
    Section::Pool,
    Section::User,
    Section::Admin,
    Section::Stats,
];

impl Section {
    /// The word in the header: `funnel`, `user`, ...
    pub fn name(self) -> &'static str {
        match self {
            Section::Funnel => "funnel",
            Section::Backend => "backend",
            Section::Pool => "pool",
            Section::User => "user",
            Section::Admin => "admin",
            Section::Stats => "stats",
        }
    }

    fn from_name(word: &str) -> Option<Section> {
        SECTIONS.iter().copied().find(|s| s.name() == word)
    }
}

impl fmt::Display for Section {
    /// The header as documented: `[funnel]`, `[user NAME]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::User => write!(f, "[user NAME]"),
            other => write!(f, "[{}]", other.name()),
        }
    }
}

/// What values an option accepts; bounds are inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionKind {
    /// A whole number.
    Count {
        min: usize,
        max: usize,
    },
    /// Bytes, with optional K/M/G suffix.
    Size {
        min: usize,
        max: usize,
    },
    /// Whole milliseconds, from 1 to [`MAX_DURATION_MS`].
    Millis,
    Bool,
    /// A number in (0, 1].
    Ratio,
    LogLevel,
    /// Free text without control characters (it ends up in the protocol).
    Text,
    /// Like `Text`, masked in [`Config::describe`].
    Secret,
    /// `*` and 40 hex digits, as in mysql.user.authentication_string.
    PasswordHash,
    /// Comma-separated `IP:port` list; may be empty.
    ListenList,
    /// One `IP:port`.
    ListenAddr,
    /// An absolute path, or empty for none.
    UnixPath,
    /// `host:port` (resolved at load time) or an absolute unix socket path.
    BackendAddr,
}

impl OptionKind {
    /// What the value must look like, for error messages and --help.
    pub fn expects(&self) -> String {
        match *self {
            OptionKind::Count { min, max } if max == usize::MAX => {
                format!("a whole number >= {min}")
            }
            OptionKind::Count { min, max } => format!("a whole number from {min} to {max}"),
            OptionKind::Size { min, max } => format!(
                "a size in bytes (K/M/G suffixes allowed) from {} to {}",
                format_size(min),
                format_size(max)
            ),
            OptionKind::Millis => {
                format!("a whole number of milliseconds from 1 to {MAX_DURATION_MS}")
            }
            OptionKind::Bool => "true or false".to_string(),
            OptionKind::Ratio => "a number greater than 0 and at most 1".to_string(),
            OptionKind::LogLevel => "one of off, error, warn, info, debug, trace".to_string(),
            OptionKind::Text | OptionKind::Secret => "text".to_string(),
            OptionKind::PasswordHash => "'*' followed by 40 hex digits".to_string(),
            OptionKind::ListenList => {
                "a comma-separated list of IP:port addresses (may be empty)".to_string()
            }
            OptionKind::ListenAddr => "an IP:port address".to_string(),
            OptionKind::UnixPath => "an absolute path, or empty for none".to_string(),
            OptionKind::BackendAddr => "host:port or an absolute path to a unix socket".to_string(),
        }
    }
}

/// An option's default, in the option's own terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionDefault {
    /// The option must be given.
    Required,
    /// No value unless given.
    Unset,
    /// Computed from something else; the text says from what.
    Derived(&'static str),
    /// Parsed with the option's kind, like a value from the file.
    Text(&'static str),
    Count(usize),
    Size(usize),
    Millis(u64),
    Bool(bool),
    Ratio(f64),
    Level(LevelFilter),
}

impl OptionDefault {
    /// The default as it would be written in the file (or a description).
    pub fn render(&self) -> String {
        match *self {
            OptionDefault::Required => "none (required)".to_string(),
            OptionDefault::Unset => "unset".to_string(),
            OptionDefault::Derived(text) => text.to_string(),
            OptionDefault::Text("") => "\"\"".to_string(),
            OptionDefault::Text(text) => text.to_string(),
            OptionDefault::Count(n) => n.to_string(),
            OptionDefault::Size(n) => format_size(n),
            OptionDefault::Millis(n) => n.to_string(),
            OptionDefault::Bool(b) => b.to_string(),
            OptionDefault::Ratio(r) => r.to_string(),
            OptionDefault::Level(level) => level_name(level).to_string(),
        }
    }
}

/// A section of `Config::effective`: header and (key, value) pairs.
type EffectiveSection = (String, Vec<(&'static str, String)>);

/// One configuration option.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptionSpec {
    pub name: &'static str,
    pub section: Section,
    pub kind: OptionKind,
    pub default: OptionDefault,
    /// Whether a reload (SIGHUP) may change it; otherwise a restart is needed.
    pub reloadable: bool,
    pub help: &'static str,
}

const fn opt(
    section: Section,
    name: &'static str,
    kind: OptionKind,
    default: OptionDefault,
    reloadable: bool,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        section,
        kind,
        default,
        reloadable,
        help,
    }
}

const ANY_COUNT_FROM_0: OptionKind = OptionKind::Count {
    min: 0,
    max: usize::MAX,
};
const ANY_COUNT_FROM_1: OptionKind = OptionKind::Count {
    min: 1,
    max: usize::MAX,
};
const BUFFER_SIZE: OptionKind = OptionKind::Size {
    min: 0,
    max: MAX_PACKET_LIMIT,
};
const BUFFERED_RESULT_SIZE: OptionKind = OptionKind::Size {
    min: 0,
    max: MAX_BUFFERED_LIMIT,
};

use OptionDefault as D;
use OptionKind as K;
use Section as S;

#[rustfmt::skip]
static OPTIONS: [OptionSpec; 58] = [
    // [funnel]
    opt(S::Funnel, "listen", K::ListenList, D::Text(DEFAULT_LISTEN), false,
        "TCP addresses (IP:port, comma separated) to accept clients on; may be empty if unix_socket is set"),
    opt(S::Funnel, "unix_socket", K::UnixPath, D::Unset, false,
        "Unix socket path to accept clients on, in addition to listen"),
    opt(S::Funnel, "unix_socket_mode", K::Text, D::Text(DEFAULT_UNIX_SOCKET_MODE), false,
        "Permissions of the unix socket file, in octal (connecting needs write permission); 0777 as mysqld's, or e.g. 0770 with unix_socket_group to let one group in"),
    opt(S::Funnel, "unix_socket_group", K::Text, D::Text(""), false,
        "Group (name or number) to give the unix socket file; empty = the funnel's own group"),
    opt(S::Funnel, "max_client_connections", ANY_COUNT_FROM_1, D::Count(DEFAULT_MAX_CLIENT_CONNECTIONS), true,
        "Client connections accepted at once; further ones are refused with ERR 1040"),
    opt(S::Funnel, "handshake_timeout_ms", K::Millis, D::Millis(DEFAULT_HANDSHAKE_TIMEOUT_MS), true,
        "Clients that have not completed the login within this time are disconnected"),
    opt(S::Funnel, "max_allowed_packet", K::Size { min: MIN_PACKET_LIMIT, max: MAX_PACKET_LIMIT }, D::Size(DEFAULT_MAX_ALLOWED_PACKET), true,
        "Largest client command; a bigger one is answered with ERR 1153"),
    opt(S::Funnel, "max_client_pending_input", BUFFER_SIZE, D::Size(DEFAULT_MAX_CLIENT_PENDING_INPUT), true,
        "Pipelined, not yet processed input one client may hold beyond the command being processed"),
    opt(S::Funnel, "client_write_timeout_ms", K::Millis, D::Millis(DEFAULT_CLIENT_WRITE_TIMEOUT_MS), true,
        "A client that accepts no output for this long is disconnected"),
    opt(S::Funnel, "auth_failure_threshold", ANY_COUNT_FROM_1, D::Count(DEFAULT_AUTH_FAILURE_THRESHOLD), true,
        "Consecutive failed logins from one client address (IPv6: its /64), or for one user, checked without delay; past it, each login attempt from that address or for that user is held before it is checked"),
    opt(S::Funnel, "auth_failure_delay_ms", K::Count { min: 0, max: 3_600_000 }, D::Count(DEFAULT_AUTH_FAILURE_DELAY_MS), true,
        "How long a login attempt is held once auth_failure_threshold is reached, doubled with each further failure; attempts are checked one at a time per address and per user; 0 = never held"),
    opt(S::Funnel, "auth_failure_max_delay_ms", K::Millis, D::Millis(DEFAULT_AUTH_FAILURE_MAX_DELAY_MS), true,
        "Longest hold of a login attempt; an attempt that could not be checked within handshake_timeout_ms is refused with ERR 1129 instead"),
    opt(S::Funnel, "output_high_watermark", K::Size { min: 1, max: MAX_PACKET_LIMIT }, D::Size(DEFAULT_OUTPUT_HIGH_WATERMARK), true,
        "Pending output to one client above which the funnel stops reading that client's backend"),
    opt(S::Funnel, "output_low_watermark", BUFFER_SIZE, D::Size(DEFAULT_OUTPUT_LOW_WATERMARK), true,
        "Pending output below which reading the backend resumes; must be below output_high_watermark"),
    opt(S::Funnel, "max_buffered_result", BUFFERED_RESULT_SIZE, D::Size(DEFAULT_MAX_BUFFERED_RESULT), true,
        "Connection first: a result is read on past output_high_watermark while a slow client's pending output stays within this, so its backend is freed at once; 0 = memory first"),
    opt(S::Funnel, "max_buffered_total", BUFFERED_RESULT_SIZE, D::Size(DEFAULT_MAX_BUFFERED_TOTAL), true,
        "Output held past output_high_watermark (max_buffered_result) for all clients together; at this bound further results get backpressure"),
    opt(S::Funnel, "server_version", K::Text, D::Text(DEFAULT_SERVER_VERSION), true,
        "Version string announced to clients; empty announces the backend's own"),
    opt(S::Funnel, "log_level", K::LogLevel, D::Level(DEFAULT_LOG_LEVEL), true,
        "error, warn, info, debug or trace; RUST_LOG, if set, overrides it"),
    opt(S::Funnel, "shutdown_timeout_ms", K::Millis, D::Millis(DEFAULT_SHUTDOWN_TIMEOUT_MS), true,
        "On SIGTERM/SIGINT, how long running commands may finish before connections are closed"),
    opt(S::Funnel, "allow_local_infile", K::Bool, D::Bool(DEFAULT_ALLOW_LOCAL_INFILE), true,
        "Allow LOAD DATA LOCAL INFILE (the backend then reads files from the client)"),
    opt(S::Funnel, "max_prepared_stmt_count", ANY_COUNT_FROM_0, D::Count(DEFAULT_MAX_PREPARED_STMT_COUNT), true,
        "Prepared statements all clients together may hold (never more than the backend server's own max_prepared_stmt_count); a prepare past it gets ERR 1461, as from mysqld"),
    opt(S::Funnel, "max_prepared_stmts_per_client", ANY_COUNT_FROM_0, D::Count(DEFAULT_MAX_PREPARED_STMTS_PER_CLIENT), true,
        "Prepared statements one client may hold; a prepare past it gets ERR 1461"),
    opt(S::Funnel, "max_replayed_user_vars", ANY_COUNT_FROM_0, D::Count(DEFAULT_MAX_REPLAYED_USER_VARS), true,
        "User variables a client may have replayed when it moves to another backend; a client with more stays on its backend (pinned)"),
    opt(S::Funnel, "unlisted_users", K::Text, D::Text(DEFAULT_UNLISTED_USERS), true,
        "Logins of users no [user] section lists: refuse (ERR 1045 from the funnel) or relay (mysqld authenticates them, any auth plugin, each client on a backend connection of its own, never shared; needs a host:port backend address)"),
    opt(S::Funnel, "max_unlisted_connections", ANY_COUNT_FROM_1, D::Count(DEFAULT_MAX_UNLISTED_CONNECTIONS), true,
        "Relayed logins (unlisted_users = relay) at once, each holding one backend connection; one more gets ERR 1040"),
    // [backend]
    opt(S::Backend, "address", K::BackendAddr, D::Required, false,
        "mysqld to connect to: host:port (resolved at start-up) or a unix socket path starting with '/'"),
    opt(S::Backend, "connect_timeout_ms", K::Millis, D::Millis(DEFAULT_CONNECT_TIMEOUT_MS), true,
        "Time allowed to connect and log in to mysqld"),
    opt(S::Backend, "health_check_interval_ms", K::Millis, D::Millis(DEFAULT_HEALTH_CHECK_INTERVAL_MS), true,
        "Idle backend connections are pinged this often"),
    opt(S::Backend, "reconnect_backoff_min_ms", K::Millis, D::Millis(DEFAULT_RECONNECT_BACKOFF_MIN_MS), true,
        "First delay before reconnecting after a failed backend connection"),
    opt(S::Backend, "reconnect_backoff_max_ms", K::Millis, D::Millis(DEFAULT_RECONNECT_BACKOFF_MAX_MS), true,
        "The reconnect delay doubles up to this"),
    // [pool]
    opt(S::Pool, "connections", ANY_COUNT_FROM_1, D::Count(DEFAULT_POOL_CONNECTIONS), true,
        "Backend connections shared by each user's clients"),
    opt(S::Pool, "backlog_size", ANY_COUNT_FROM_1, D::Count(DEFAULT_BACKLOG_SIZE), true,
        "Commands that may wait for a backend connection per user; more are refused with an error"),
    opt(S::Pool, "queue_timeout_ms", K::Millis, D::Millis(DEFAULT_QUEUE_TIMEOUT_MS), true,
        "A command that waits longer than this for a backend connection fails with an error"),
    opt(S::Pool, "max_pinned_backends", ANY_COUNT_FROM_0, D::Count(DEFAULT_MAX_PINNED_BACKENDS), true,
        "Extra backend connections a pool may open for clients pinned by transactions, locks, etc."),
    // [user NAME]
    opt(S::User, "password", K::Secret, D::Unset, true,
        "Plaintext password: verifies clients and logs in to mysqld (give this or password_hash)"),
    opt(S::User, "password_file", K::Text, D::Unset, true,
        "Instead of password: a file whose first line is the password (not readable by others)"),
    opt(S::User, "password_env", K::Text, D::Unset, true,
        "Instead of password: the environment variable holding it"),
    opt(S::User, "password_hash", K::PasswordHash, D::Unset, true,
        "*HEX hash as in mysql.user / PASSWORD() to verify clients; then backend_password is required"),
    opt(S::User, "auth_plugin", K::Text, D::Text(DEFAULT_AUTH_PLUGIN), true,
        "How the funnel verifies this user's clients: mysql_native_password, or client_ed25519 (MariaDB's ed25519; needs password, not password_hash)"),
    opt(S::User, "ed25519_public_key", K::Text, D::Unset, true,
        "Instead of password, with auth_plugin = client_ed25519: the account's key as mysql.global_priv shows it (base64); then backend_password is required"),
    opt(S::User, "backend_user", K::Text, D::Derived("the user's NAME"), true,
        "User the funnel logs in to mysqld as (new backend connections)"),
    opt(S::User, "backend_password", K::Secret, D::Derived("password"), true,
        "Password the funnel logs in to mysqld with (new backend connections)"),
    opt(S::User, "backend_password_file", K::Text, D::Unset, true,
        "Instead of backend_password: a file whose first line is it (not readable by others)"),
    opt(S::User, "backend_password_env", K::Text, D::Unset, true,
        "Instead of backend_password: the environment variable holding it"),
    opt(S::User, "connections", ANY_COUNT_FROM_1, D::Derived("[pool] connections"), true,
        "Overrides [pool] connections for this user"),
    opt(S::User, "backlog_size", ANY_COUNT_FROM_1, D::Derived("[pool] backlog_size"), true,
        "Overrides [pool] backlog_size for this user"),
    opt(S::User, "queue_timeout_ms", K::Millis, D::Derived("[pool] queue_timeout_ms"), true,
        "Overrides [pool] queue_timeout_ms for this user"),
    opt(S::User, "max_pinned_backends", ANY_COUNT_FROM_0, D::Derived("[pool] max_pinned_backends"), true,
        "Overrides [pool] max_pinned_backends for this user"),
    opt(S::User, "max_client_connections", ANY_COUNT_FROM_0, D::Count(0), true,
        "Clients logged in as this user at once (mysqld's max_user_connections); one more gets ERR 1203; 0 = no limit"),
    opt(S::User, "allowed_networks", K::Text, D::Text(""), true,
        "Networks (comma separated, e.g. 10.0.0.0/8, 127.0.0.1/32, ::1/128) this user's clients may connect from, others get ERR 1130; unix socket clients count as 127.0.0.1; empty = anywhere"),
    // [admin]
    opt(S::Admin, "listen", K::ListenAddr, D::Text(DEFAULT_ADMIN_LISTEN), false,
        "Address of the admin console (MySQL protocol)"),
    opt(S::Admin, "user", K::Text, D::Text(DEFAULT_ADMIN_USER), true,
        "User name for the admin console"),
    opt(S::Admin, "password", K::Secret, D::Required, true,
        "Password for the admin console"),
    opt(S::Admin, "stats_user", K::Text, D::Text(""), true,
        "A read-only console account: it may run SHOW commands only (PAUSE, RESUME, RELOAD, SHUTDOWN get ERR 1227); empty = none"),
    opt(S::Admin, "stats_password", K::Secret, D::Text(""), true,
        "Password of stats_user; required with it"),
    // [stats]
    opt(S::Stats, "listen", K::ListenAddr, D::Text(DEFAULT_STATS_LISTEN), false,
        "Address of the HTTP statistics and health endpoint"),
    opt(S::Stats, "health_backlog_ratio", K::Ratio, D::Ratio(DEFAULT_HEALTH_BACKLOG_RATIO), true,
        "The health check fails while a pool's backlog is fuller than this fraction of backlog_size"),
    opt(S::Stats, "stats_token", K::Secret, D::Text(""), false,
        "Bearer token (Authorization: Bearer TOKEN) required for /metrics, /stats.json and the live page; /health stays open but says only OK or unhealthy without it; empty = no token"),
];

/// Every option, in documentation order.
pub fn option_table() -> &'static [OptionSpec] {
    &OPTIONS
}

fn find_spec(section: Section, name: &str) -> Option<&'static OptionSpec> {
    OPTIONS
        .iter()
        .find(|spec| spec.section == section && spec.name == name)
}

/// The option table as text for `funnel --help`.
pub fn options_help() -> String {
    let mut out = String::new();
    for section in SECTIONS {
        out.push_str(&format!("  {section}\n"));
        for spec in OPTIONS.iter().filter(|s| s.section == section) {
            let default = match spec.default {
                OptionDefault::Required => "required".to_string(),
                other => format!("default {}", other.render()),
            };
            let reload = if spec.reloadable {
                ""
            } else {
                "; restart to change"
            };
            out.push_str(&format!(
                "    {} ({default}{reload})\n        {}\n",
                spec.name, spec.help
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Values.
// ---------------------------------------------------------------------------

/// A checked value of some option.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Count(usize),
    Millis(u64),
    Bool(bool),
    Ratio(f64),
    Level(LevelFilter),
    Text(String),
    Hash([u8; 20]),
    Addrs(Vec<SocketAddr>),
    Addr(SocketAddr),
    Path(Option<PathBuf>),
    Backend(BackendAddr),
}

// Extractors for `Lookup::get`; `None` means the table and the builder
// disagree about an option's kind, reported as an internal error.
impl Value {
    fn count(self) -> Option<usize> {
        match self {
            Value::Count(n) => Some(n),
            _ => None,
        }
    }
    fn millis(self) -> Option<Duration> {
        match self {
            Value::Millis(ms) => Some(Duration::from_millis(ms)),
            _ => None,
        }
    }
    fn boolean(self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    fn ratio(self) -> Option<f64> {
        match self {
            Value::Ratio(r) => Some(r),
            _ => None,
        }
    }
    fn level(self) -> Option<LevelFilter> {
        match self {
            Value::Level(l) => Some(l),
            _ => None,
        }
    }
    fn text(self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    fn hash(self) -> Option<[u8; 20]> {
        match self {
            Value::Hash(h) => Some(h),
            _ => None,
        }
    }
    fn addrs(self) -> Option<Vec<SocketAddr>> {
        match self {
            Value::Addrs(a) => Some(a),
            _ => None,
        }
    }
    fn addr(self) -> Option<SocketAddr> {
        match self {
            Value::Addr(a) => Some(a),
            _ => None,
        }
    }
    fn path(self) -> Option<Option<PathBuf>> {
        match self {
            Value::Path(p) => Some(p),
            _ => None,
        }
    }
    fn backend(self) -> Option<BackendAddr> {
        match self {
            Value::Backend(b) => Some(b),
            _ => None,
        }
    }
}

/// Checks `raw` (already unquoted) against `kind`. The error is the message
/// only; the caller adds file, line and key.
fn parse_value(kind: OptionKind, raw: &str) -> Result<Value, String> {
    let expected = || format!("expected {}, got {:?}", kind.expects(), raw);
    match kind {
        OptionKind::Count { min, max } => match parse_whole(raw) {
            Some(n) if n >= min as u64 && n <= max as u64 => Ok(Value::Count(n as usize)),
            _ => Err(expected()),
        },
        OptionKind::Size { min, max } => match parse_size(raw) {
            Some(n) if n >= min && n <= max => Ok(Value::Count(n)),
            _ => Err(expected()),
        },
        OptionKind::Millis => match parse_whole(raw) {
            Some(ms) if (1..=MAX_DURATION_MS).contains(&ms) => Ok(Value::Millis(ms)),
            _ => Err(expected()),
        },
        OptionKind::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
            _ => Err(expected()),
        },
        OptionKind::Ratio => match raw.parse::<f64>() {
            // The comparisons also refuse NaN.
            Ok(r) if r > 0.0 && r <= 1.0 => Ok(Value::Ratio(r)),
            _ => Err(expected()),
        },
        OptionKind::LogLevel => match raw.to_ascii_lowercase().as_str() {
            "off" => Ok(Value::Level(LevelFilter::Off)),
            "error" => Ok(Value::Level(LevelFilter::Error)),
            "warn" | "warning" => Ok(Value::Level(LevelFilter::Warn)),
            "info" => Ok(Value::Level(LevelFilter::Info)),
            "debug" => Ok(Value::Level(LevelFilter::Debug)),
            "trace" => Ok(Value::Level(LevelFilter::Trace)),
            _ => Err(expected()),
        },
        OptionKind::Text => {
            // These strings go into NUL-terminated protocol fields and logs.
            if raw.chars().any(char::is_control) {
                Err(format!("control characters are not allowed, got {raw:?}"))
            } else {
                Ok(Value::Text(raw.to_string()))
            }
        }
        OptionKind::Secret => {
            if raw.contains('\0') {
                Err("NUL characters are not allowed".to_string())
            } else {
                Ok(Value::Text(raw.to_string()))
            }
        }
        OptionKind::PasswordHash => parse_password_hash(raw).map(Value::Hash).ok_or_else(|| {
            // Never echo what may be a password typed into the wrong key.
            format!(
                "expected {} (as in mysql.user or SELECT PASSWORD('...')), got {} characters",
                kind.expects(),
                raw.chars().count()
            )
        }),
        OptionKind::ListenList => parse_listen_list(raw).map(Value::Addrs),
        OptionKind::ListenAddr => raw
            .parse::<SocketAddr>()
            .map(Value::Addr)
            .map_err(|_| format!("{}; host names are not accepted here", expected())),
        OptionKind::UnixPath => {
            if raw.is_empty() {
                Ok(Value::Path(None))
            } else {
                check_unix_path(raw).map(|p| Value::Path(Some(p)))
            }
        }
        OptionKind::BackendAddr => parse_backend_addr(raw).map(Value::Backend),
    }
}

/// Digits only: no sign, no spaces, no exponent.
fn parse_whole(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// `123`, `64K`, `64M`, `1G` (case-insensitive suffix, 1024-based).
fn parse_size(raw: &str) -> Option<usize> {
    let (digits, shift) = match raw.as_bytes().last()? {
        b'k' | b'K' => (&raw[..raw.len() - 1], 10),
        b'm' | b'M' => (&raw[..raw.len() - 1], 20),
        b'g' | b'G' => (&raw[..raw.len() - 1], 30),
        _ => (raw, 0),
    };
    let n = usize::try_from(parse_whole(digits)?).ok()?;
    n.checked_mul(1usize << shift)
}

/// The largest exact K/M/G form, so `describe()` prints what people write.
fn format_size(n: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (unit, suffix) in UNITS {
        if n != 0 && n % unit == 0 {
            return format!("{}{}", n / unit, suffix);
        }
    }
    n.to_string()
}

fn level_name(level: LevelFilter) -> &'static str {
    match level {
        LevelFilter::Off => "off",
        LevelFilter::Error => "error",
        LevelFilter::Warn => "warn",
        LevelFilter::Info => "info",
        LevelFilter::Debug => "debug",
        LevelFilter::Trace => "trace",
    }
}

/// `*` + 40 hex digits -> the 20 bytes of SHA1(SHA1(password)).
fn parse_password_hash(raw: &str) -> Option<[u8; 20]> {
    let hex = raw.strip_prefix('*')?.as_bytes();
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn parse_listen_list(raw: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out: Vec<SocketAddr> = Vec::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    for part in raw.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("empty address in the list {raw:?}"));
        }
        let addr: SocketAddr = part.parse().map_err(|_| {
            format!(
                "{part:?} is not an IP:port address (write IPv6 as [::1]:3307; host names are not accepted here)"
            )
        })?;
        if out.contains(&addr) {
            return Err(format!("{addr} is listed twice"));
        }
        out.push(addr);
    }
    Ok(out)
}

fn check_unix_path(raw: &str) -> Result<PathBuf, String> {
    // Relative paths would depend on the daemon's working directory.
    if !raw.starts_with('/') {
        return Err(format!("expected an absolute path, got {raw:?}"));
    }
    if raw.contains('\0') {
        return Err("NUL characters are not allowed in a path".to_string());
    }
    if raw.len() > MAX_UNIX_PATH {
        return Err(format!(
            "unix socket paths are limited to {MAX_UNIX_PATH} bytes, this one has {}",
            raw.len()
        ));
    }
    Ok(PathBuf::from(raw))
}

fn parse_backend_addr(raw: &str) -> Result<BackendAddr, String> {
    if raw.starts_with('/') {
        return check_unix_path(raw).map(BackendAddr::Unix);
    }
    if raw.is_empty() || !raw.contains(':') {
        return Err(format!(
            "expected {}, got {raw:?}",
            OptionKind::BackendAddr.expects()
        ));
    }
    let addrs: Vec<SocketAddr> = raw
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {raw:?}: {e}"))?
        .collect();
    // Prefer IPv4: "localhost" often resolves to ::1 first while mysqld
    // (MariaDB's default bind-address) listens on 127.0.0.1 only.
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{raw:?} resolves to no address"))?;
    if addr.port() == 0 {
        return Err(format!("port 0 is not a valid backend port, got {raw:?}"));
    }
    Ok(BackendAddr::Tcp(addr))
}

/// The value an option has when the file does not give it.
fn default_value(spec: &OptionSpec) -> Result<Option<Value>, String> {
    Ok(Some(match spec.default {
        OptionDefault::Required | OptionDefault::Unset | OptionDefault::Derived(_) => {
            return Ok(None)
        }
        OptionDefault::Text(text) => parse_value(spec.kind, text)?,
        OptionDefault::Count(n) | OptionDefault::Size(n) => Value::Count(n),
        OptionDefault::Millis(ms) => Value::Millis(ms),
        OptionDefault::Bool(b) => Value::Bool(b),
        OptionDefault::Ratio(r) => Value::Ratio(r),
        OptionDefault::Level(level) => Value::Level(level),
    }))
}

// ---------------------------------------------------------------------------
// Syntax: lines -> sections of checked values.
// ---------------------------------------------------------------------------

struct Entry {
    spec: &'static OptionSpec,
    value: Value,
    line: usize,
}

struct RawSection {
    section: Section,
    /// The NAME of `[user NAME]`.
    name: Option<String>,
    line: usize,
    entries: Vec<Entry>,
}

fn header_text(section: Section, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("[{} {}]", section.name(), header_name(name)),
        None => format!("[{}]", section.name()),
    }
}

/// A user name as written in a header: bare when that reads back the same.
fn header_name(name: &str) -> String {
    let bare = !name.is_empty()
        && !name.starts_with('"')
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ']' | '#' | ';' | '\\'));
    if bare {
        name.to_string()
    } else {
        quote(name)
    }
}

/// A double-quoted value that reads back as `s`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Reads a quoted string whose opening quote is already consumed; returns
/// the content and what follows the closing quote.
fn read_quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => out.push(e),
                Some((_, e)) => {
                    return Err(format!(
                        "unknown escape \\{e} in quoted value (only \\\" and \\\\ are escapes)"
                    ))
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("missing closing double quote".to_string())
}

/// Text after `#` that starts the value or follows whitespace is a comment;
/// a `#` inside a word (`pa#ss`) is not.
fn strip_trailing_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &s[..i];
        }
    }
    s
}

fn is_comment_or_empty(s: &str) -> bool {
    let s = s.trim_start();
    s.is_empty() || s.starts_with('#')
}

/// The value part of `key = value`, unquoted and without trailing comment.
fn unquote_value(rest: &str) -> Result<String, String> {
    let v = rest.trim_start();
    if let Some(inner) = v.strip_prefix('"') {
        let (content, tail) = read_quoted(inner)?;
        if !is_comment_or_empty(tail) {
            return Err(format!(
                "unexpected text after the closing quote: {:?}",
                tail.trim()
            ));
        }
        Ok(content)
    } else {
        Ok(strip_trailing_comment(v).trim_end().to_string())
    }
}

/// `[word]`, `[user NAME]` or `[user "NAME"]`, with an optional comment.
fn parse_header(line: &str) -> Result<(Section, Option<String>), String> {
    let inner = line.get(1..).unwrap_or("").trim_start();
    let word_end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(inner.len());
    let word = &inner[..word_end];
    let after = inner[word_end..].trim_start();
    let (name, tail) = if let Some(quoted) = after.strip_prefix('"') {
        let (name, rest) = read_quoted(quoted)?;
        match rest.trim_start().strip_prefix(']') {
            Some(tail) => (Some(name), tail),
            None => return Err("expected ']' after the quoted name".to_string()),
        }
    } else {
        match after.find(']') {
            Some(close) => {
                let name = after[..close].trim();
                let name = (!name.is_empty()).then(|| name.to_string());
                (name, &after[close + 1..])
            }
            None => return Err(format!("missing ']' in section header {line:?}")),
        }
    };
    if !is_comment_or_empty(tail) {
        return Err(format!("unexpected text after ']': {:?}", tail.trim()));
    }
    let section = Section::from_name(word).ok_or_else(|| {
        let names: Vec<&str> = SECTIONS.iter().map(|s| s.name()).collect();
        let mut msg = format!("unknown section [{word}]");
        if let Some(close) = suggest(word, names.iter().copied()) {
            msg.push_str(&format!(" (did you mean [{close}]?)"));
        } else {
            msg.push_str(
                "; sections are [funnel], [backend], [pool], [user NAME], [admin] and [stats]",
            );
        }
        msg
    })?;
    match (section, name) {
        (Section::User, None) => {
            Err("[user] needs the MySQL user name clients log in with: [user NAME]".to_string())
        }
        (Section::User, Some(name)) if name.is_empty() => {
            Err("the user name must not be empty".to_string())
        }
        (Section::User, Some(name)) if name.chars().any(char::is_control) => {
            Err("control characters are not allowed in a user name".to_string())
        }
        (Section::User, Some(name)) => Ok((Section::User, Some(name))),
        (other, Some(name)) => Err(format!(
            "[{}] takes no name (got {name:?}); only [user NAME] does",
            other.name()
        )),
        (other, None) => Ok((other, None)),
    }
}

/// Why `key` is not allowed in `section`, with a hint where possible.
fn unknown_key_message(section: Section, key: &str) -> String {
    let here = OPTIONS
        .iter()
        .filter(|s| s.section == section)
        .map(|s| s.name);
    if let Some(close) = suggest(key, here) {
        return format!("unknown key {key:?} (did you mean {close:?}?)");
    }
    let elsewhere: Vec<String> = SECTIONS
        .iter()
        .filter(|s| **s != section && find_spec(**s, key).is_some())
        .map(|s| s.to_string())
        .collect();
    if elsewhere.is_empty() {
        format!("unknown key {key:?} in {section}")
    } else {
        format!(
            "{key:?} is not a {section} key; it belongs in {}",
            elsewhere.join(" or ")
        )
    }
}

/// The candidate closest to `word` if it is plausibly a typo of it.
fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    // my.cnf habits: `max-allowed-packet`, `Listen`.
    let norm = word.to_ascii_lowercase().replace('-', "_");
    let limit = (norm.chars().count() / 4).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(&norm, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn lex(text: &str, source: &str) -> Result<Vec<RawSection>, ConfigError> {
    let err = |line: usize, key: Option<String>, message: String| ConfigError {
        source: source.to_string(),
        line: Some(line),
        key,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<RawSection> = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let lineno = index + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            let (section, name) = parse_header(line).map_err(|m| err(lineno, None, m))?;
            if let Some(prev) = sections
                .iter()
                .find(|s| s.section == section && s.name == name)
            {
                let message = match &name {
                    Some(name) => format!(
                        "user {name:?} is defined twice (first at line {})",
                        prev.line
                    ),
                    None => format!(
                        "section [{}] appears twice (first at line {}); merge them",
                        section.name(),
                        prev.line
                    ),
                };
                return Err(err(lineno, None, message));
            }
            sections.push(RawSection {
                section,
                name,
                line: lineno,
                entries: Vec::new(),
            });
            continue;
        }
        let Some(current) = sections.last_mut() else {
            return Err(err(
                lineno,
                None,
                "setting before the first [section] header (settings of the funnel itself go under [funnel])"
                    .to_string(),
            ));
        };
        let Some((key, rest)) = line.split_once('=') else {
            return Err(err(
                lineno,
                None,
                format!("expected `key = value`, a [section] header or a comment, got {line:?}"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(err(lineno, None, "missing key before '='".to_string()));
        }
        let header = header_text(current.section, current.name.as_deref());
        let qualified = Some(format!("{header} {key}"));
        let Some(spec) = find_spec(current.section, key) else {
            return Err(err(
                lineno,
                qualified,
                unknown_key_message(current.section, key),
            ));
        };
        if let Some(prev) = current.entries.iter().find(|e| e.spec.name == key) {
            return Err(err(
                lineno,
                qualified,
                format!("given twice in {header} (first at line {})", prev.line),
            ));
        }
        let value = unquote_value(rest)
            .and_then(|raw| parse_value(spec.kind, &raw))
            .map_err(|m| err(lineno, qualified, m))?;
        current.entries.push(Entry {
            spec,
            value,
            line: lineno,
        });
    }
    Ok(sections)
}

// ---------------------------------------------------------------------------
// Semantics: sections -> Config.
// ---------------------------------------------------------------------------

/// Typed access to one section's values, falling back to the table's
/// defaults, with errors located at the key (or at the section header).
struct Lookup<'a> {
    source: &'a str,
    section: Section,
    header: String,
    line: Option<usize>,
    entries: &'a [Entry],
}

impl<'a> Lookup<'a> {
    fn new(source: &'a str, raw: &'a RawSection) -> Lookup<'a> {
        Lookup {
            source,
            section: raw.section,
            header: header_text(raw.section, raw.name.as_deref()),
            line: Some(raw.line),
            entries: &raw.entries,
        }
    }

    /// A section absent from the file: all defaults.
    fn absent(source: &'a str, section: Section) -> Lookup<'a> {
        Lookup {
            source,
            section,
            header: header_text(section, None),
            line: None,
            entries: &[],
        }
    }

    fn entry(&self, name: &str) -> Option<&'a Entry> {
        self.entries.iter().find(|e| e.spec.name == name)
    }

    fn line_of(&self, name: &str) -> Option<usize> {
        self.entry(name).map(|e| e.line).or(self.line)
    }

    fn err(&self, name: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            source: self.source.to_string(),
            line: self.line_of(name),
            key: Some(format!("{} {}", self.header, name)),
            message: message.into(),
        }
    }

    /// The given value or the default; `None` if neither exists.
    fn get<T>(
        &self,
        name: &str,
        extract: fn(Value) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let internal = |what: &str| self.err(name, format!("internal error: {what}"));
        let spec = find_spec(self.section, name)
            .ok_or_else(|| internal("option missing from the option table"))?;
        let value = match self.entry(name) {
            Some(entry) => Some(entry.value.clone()),
            None => default_value(spec).map_err(|m| internal(&format!("bad default: {m}")))?,
        };
        match value {
            None => Ok(None),
            Some(value) => extract(value)
                .map(Some)
                .ok_or_else(|| internal("option has an unexpected kind")),
        }
    }

    fn required<T>(&self, name: &str, extract: fn(Value) -> Option<T>) -> Result<T, ConfigError> {
        self.get(name, extract)?.ok_or_else(|| {
            let help = find_spec(self.section, name).map_or("", |s| s.help);
            self.err(name, format!("is required ({help})"))
        })
    }
}

/// A secret given as `KEY`, `KEY_file` (the file's first line; the file
/// must not be readable by others) or `KEY_env` (an environment variable):
/// at most one of them. Read at start-up and on each reload.
fn secret_ref(user: &Lookup, key: &str) -> Result<Option<String>, ConfigError> {
    let file_key = format!("{key}_file");
    let env_key = format!("{key}_env");
    let given = [key, &file_key, &env_key]
        .into_iter()
        .filter(|k| user.entry(k).is_some())
        .count();
    if given > 1 {
        return Err(user.err(
            key,
            format!("give only one of {key}, {file_key} and {env_key}"),
        ));
    }
    if let Some(path) = user.get(&file_key, Value::text)? {
        return read_secret_file(&path)
            .map(Some)
            .map_err(|m| user.err(&file_key, m));
    }
    if let Some(name) = user.get(&env_key, Value::text)? {
        return match std::env::var(&name) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Err(user.err(
                &env_key,
                format!("environment variable {name:?} is not set"),
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(user.err(
                &env_key,
                format!("environment variable {name:?} is not valid UTF-8"),
            )),
        };
    }
    user.get(key, Value::text)
}

/// The first line of a password file (its line end stripped), refused when
/// others may read the file.
fn read_secret_file(path: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let mode = meta.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(format!(
            "{path:?} is readable by others (mode {:04o}); chmod o-rwx it",
            mode & 0o7777
        ));
    }
    if !meta.is_file() {
        return Err(format!("{path:?} is not a regular file"));
    }
    let text = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let text = String::from_utf8(text).map_err(|_| format!("{path:?} is not valid UTF-8"))?;
    let line = text.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(format!("{path:?}: its first line (the password) is empty"));
    }
    Ok(line.to_string())
}

fn build(sections: &[RawSection], source: &str) -> Result<Config, ConfigError> {
    let single = |section: Section| {
        sections
            .iter()
            .find(|s| s.section == section)
            .map(|raw| Lookup::new(source, raw))
    };
    if sections.is_empty() {
        return Err(ConfigError {
            source: source.to_string(),
            line: None,
            key: None,
            message:
                "no settings: at least [backend] address and one [user NAME] section are required"
                    .to_string(),
        });
    }

    let funnel = single(Section::Funnel).unwrap_or_else(|| Lookup::absent(source, Section::Funnel));
    let listen = funnel.required("listen", Value::addrs)?;
    let unix_socket = funnel.get("unix_socket", Value::path)?.flatten();
    let unix_socket_mode = {
        let text = funnel.required("unix_socket_mode", Value::text)?;
        match u32::from_str_radix(text.trim(), 8) {
            Ok(m) if m <= 0o777 && !text.trim().is_empty() => m,
            _ => {
                return Err(funnel.err(
                    "unix_socket_mode",
                    format!("expected octal permission bits from 0 to 0777, got {text:?}"),
                ))
            }
        }
    };
    let unix_socket_group =
        Some(funnel.required("unix_socket_group", Value::text)?).filter(|g| !g.trim().is_empty());
    let max_client_connections = funnel.required("max_client_connections", Value::count)?;
    let handshake_timeout = funnel.required("handshake_timeout_ms", Value::millis)?;
    let max_allowed_packet = funnel.required("max_allowed_packet", Value::count)?;
    let max_client_pending_input = funnel.required("max_client_pending_input", Value::count)?;
    let client_write_timeout = funnel.required("client_write_timeout_ms", Value::millis)?;
    let auth_failure_threshold = funnel.required("auth_failure_threshold", Value::count)?;
    let auth_failure_delay =
        Duration::from_millis(funnel.required("auth_failure_delay_ms", Value::count)? as u64);
    let auth_failure_max_delay = funnel.required("auth_failure_max_delay_ms", Value::millis)?;
    let output_high_watermark = funnel.required("output_high_watermark", Value::count)?;
    let output_low_watermark = funnel.required("output_low_watermark", Value::count)?;
    let max_buffered_result = funnel.required("max_buffered_result", Value::count)?;
    let max_buffered_total = funnel.required("max_buffered_total", Value::count)?;
    let server_version = funnel.required("server_version", Value::text)?;
    let log_level = funnel.required("log_level", Value::level)?;
    let shutdown_timeout = funnel.required("shutdown_timeout_ms", Value::millis)?;
    let allow_local_infile = funnel.required("allow_local_infile", Value::boolean)?;
    let max_prepared_stmt_count = funnel.required("max_prepared_stmt_count", Value::count)?;
    let max_prepared_stmts_per_client =
        funnel.required("max_prepared_stmts_per_client", Value::count)?;
    let max_replayed_user_vars = funnel.required("max_replayed_user_vars", Value::count)?;
    let relay_unlisted = match funnel.required("unlisted_users", Value::text)?.as_str() {
        "refuse" => false,
        "relay" => true,
        _ => return Err(funnel.err("unlisted_users", "must be refuse or relay")),
    };
    let max_unlisted_connections = funnel.required("max_unlisted_connections", Value::count)?;

    if listen.is_empty() && unix_socket.is_none() {
        return Err(funnel.err(
            "listen",
            "is empty and unix_socket is not set: clients would have no way to connect",
        ));
    }
    if output_low_watermark >= output_high_watermark {
        let key = if funnel.entry("output_low_watermark").is_some() {
            "output_low_watermark"
        } else {
            "output_high_watermark"
        };
        return Err(funnel.err(
            key,
            format!(
                "output_low_watermark ({}) must be below output_high_watermark ({})",
                format_size(output_low_watermark),
                format_size(output_high_watermark)
            ),
        ));
    }
    if max_buffered_result > 0 && max_buffered_result <= output_high_watermark {
        return Err(funnel.err(
            "max_buffered_result",
            format!(
                "must be 0 (off: memory first) or above output_high_watermark ({}): \
                 output up to the high watermark is never held back anyway, got {}",
                format_size(output_high_watermark),
                format_size(max_buffered_result)
            ),
        ));
    }
    if max_buffered_result > 0 && max_buffered_total < max_buffered_result {
        let key = if funnel.entry("max_buffered_total").is_some() {
            "max_buffered_total"
        } else {
            "max_buffered_result"
        };
        return Err(funnel.err(
            key,
            format!(
                "max_buffered_total ({}) must be at least max_buffered_result ({}), \
                 or no result could ever be buffered whole",
                format_size(max_buffered_total),
                format_size(max_buffered_result)
            ),
        ));
    }
    // Clients parse the leading number to pick features and quirks.
    if !server_version.is_empty() && !server_version.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(funnel.err(
            "server_version",
            format!(
                "must start with a version number such as \"8.0.36-funnel\" (clients parse it), got {server_version:?}"
            ),
        ));
    }

    let backend =
        single(Section::Backend).unwrap_or_else(|| Lookup::absent(source, Section::Backend));
    let backend_config = BackendConfig {
        address: backend.required("address", Value::backend)?,
        connect_timeout: backend.required("connect_timeout_ms", Value::millis)?,
        health_check_interval: backend.required("health_check_interval_ms", Value::millis)?,
        reconnect_backoff_min: backend.required("reconnect_backoff_min_ms", Value::millis)?,
        reconnect_backoff_max: backend.required("reconnect_backoff_max_ms", Value::millis)?,
    };
    if backend_config.reconnect_backoff_min > backend_config.reconnect_backoff_max {
        return Err(backend.err(
            "reconnect_backoff_min_ms",
            "must not be above reconnect_backoff_max_ms",
        ));
    }

    let pool = single(Section::Pool).unwrap_or_else(|| Lookup::absent(source, Section::Pool));
    let pool_connections = pool.required("connections", Value::count)?;
    let pool_backlog_size = pool.required("backlog_size", Value::count)?;
    let pool_queue_timeout = pool.required("queue_timeout_ms", Value::millis)?;
    let pool_max_pinned = pool.required("max_pinned_backends", Value::count)?;

    let mut users = Vec::new();
    for raw in sections.iter().filter(|s| s.section == Section::User) {
        let user = Lookup::new(source, raw);
        // parse_header guarantees a non-empty name for [user].
        let name = raw.name.clone().unwrap_or_default();
        let password = secret_ref(&user, "password")?;
        let password_hash = user.get("password_hash", Value::hash)?;
        let credential = match (&password, password_hash) {
            (None, None) if user.entry("ed25519_public_key").is_some() => {
                // Checked against auth_plugin below.
                Credential::Stage2([0; 20])
            }
            (Some(_), Some(_)) => {
                return Err(user.err(
                    "password_hash",
                    "give either password or password_hash, not both",
                ))
            }
            (Some(password), None) => Credential::Plain(password.clone()),
            (None, Some(hash)) => Credential::Stage2(hash),
            (None, None) => {
                return Err(user.err(
                    "password",
                    "one of password, password_file, password_env or password_hash is required",
                ))
            }
        };
        let ed25519_key = user.get("ed25519_public_key", Value::text)?;
        let credential = match user.get("auth_plugin", Value::text)?.as_deref() {
            None | Some("mysql_native_password") if ed25519_key.is_some() => {
                return Err(user.err(
                    "ed25519_public_key",
                    "needs auth_plugin = client_ed25519",
                ))
            }
            None | Some("mysql_native_password") => credential,
            Some("client_ed25519") => match (credential, ed25519_key) {
                (Credential::Plain(pw), None) => Credential::Ed25519(pw),
                (Credential::Plain(_), Some(_)) => {
                    return Err(user.err(
                        "ed25519_public_key",
                        "give either password or ed25519_public_key, not both",
                    ))
                }
                (_, None) => {
                    return Err(user.err(
                        "password_hash",
                        "cannot verify client_ed25519 (auth_plugin): give password or ed25519_public_key",
                    ))
                }
                (_, Some(key)) => match crate::protocol::auth::ed25519_key_from_text(&key) {
                    Some(key) => Credential::Ed25519Key(key),
                    None => {
                        return Err(user.err(
                            "ed25519_public_key",
                            "expected 32 bytes in base64 (43 characters, as mysql.global_priv shows it)",
                        ))
                    }
                },
            },
            Some(_) => {
                return Err(user.err(
                    "auth_plugin",
                    "must be mysql_native_password or client_ed25519",
                ))
            }
        };
        let backend_password = match (secret_ref(&user, "backend_password")?, password) {
            (Some(backend_password), _) => backend_password,
            (None, Some(password)) => password,
            (None, None) => {
                return Err(user.err(
                    "backend_password",
                    "is required with password_hash: a hash cannot log in to mysqld",
                ))
            }
        };
        let backend_user = user
            .get("backend_user", Value::text)?
            .unwrap_or_else(|| name.clone());
        if backend_user.is_empty() {
            return Err(user.err("backend_user", "must not be empty"));
        }
        users.push(UserConfig {
            name,
            credential,
            backend_user,
            backend_password,
            connections: user
                .get("connections", Value::count)?
                .unwrap_or(pool_connections),
            backlog_size: user
                .get("backlog_size", Value::count)?
                .unwrap_or(pool_backlog_size),
            queue_timeout: user
                .get("queue_timeout_ms", Value::millis)?
                .unwrap_or(pool_queue_timeout),
            max_pinned_backends: user
                .get("max_pinned_backends", Value::count)?
                .unwrap_or(pool_max_pinned),
            max_client_connections: user.required("max_client_connections", Value::count)?,
            allowed_networks: parse_networks(&user.required("allowed_networks", Value::text)?)
                .map_err(|m| user.err("allowed_networks", m))?,
        });
    }
    if users.is_empty() {
        return Err(ConfigError {
            source: source.to_string(),
            line: None,
            key: None,
            message:
                "at least one [user NAME] section is required (the MySQL users clients log in as)"
                    .to_string(),
        });
    }

    let admin_lookup = single(Section::Admin);
    let admin = match &admin_lookup {
        None => None,
        Some(admin) => {
            let config = AdminConfig {
                listen: admin.required("listen", Value::addr)?,
                user: admin.required("user", Value::text)?,
                password: admin.required("password", Value::text)?,
                stats_user: admin.required("stats_user", Value::text)?,
                stats_password: admin.required("stats_password", Value::text)?,
            };
            if !config.stats_user.is_empty() && config.stats_password.is_empty() {
                return Err(admin.err("stats_password", "must not be empty when stats_user is set"));
            }
            if config.stats_user == config.user {
                return Err(admin.err("stats_user", "must differ from user"));
            }
            if config.user.is_empty() {
                return Err(admin.err("user", "must not be empty"));
            }
            // The admin console can pause pools and kill clients.
            if config.password.is_empty() {
                return Err(admin.err("password", "must not be empty"));
            }
            Some(config)
        }
    };
    let stats_lookup = single(Section::Stats);
    let stats = match &stats_lookup {
        None => None,
        Some(stats) => Some(StatsConfig {
            listen: stats.required("listen", Value::addr)?,
            health_backlog_ratio: stats.required("health_backlog_ratio", Value::ratio)?,
            stats_token: stats.required("stats_token", Value::text)?,
        }),
    };

    // Catch address clashes here rather than as EADDRINUSE after binding
    // half of the sockets.
    let mut bound: Vec<(SocketAddr, &Lookup)> = listen.iter().map(|a| (*a, &funnel)).collect();
    if let (Some(config), Some(lookup)) = (&admin, &admin_lookup) {
        bound.push((config.listen, lookup));
    }
    if let (Some(config), Some(lookup)) = (&stats, &stats_lookup) {
        bound.push((config.listen, lookup));
    }
    for (i, (addr, lookup)) in bound.iter().enumerate() {
        if let Some((other, other_lookup)) = bound[..i].iter().find(|(b, _)| addrs_clash(*b, *addr))
        {
            return Err(lookup.err(
                "listen",
                format!(
                    "{addr} is already used by {} listen ({other})",
                    other_lookup.header
                ),
            ));
        }
    }
    match &backend_config.address {
        BackendAddr::Tcp(target) => {
            if let Some((own, _)) = bound.iter().find(|(b, _)| is_own_address(*b, *target)) {
                return Err(backend.err(
                    "address",
                    format!("{target} is the funnel's own listen address {own}, not a mysqld"),
                ));
            }
        }
        BackendAddr::Unix(path) => {
            if unix_socket.as_deref() == Some(path.as_path()) {
                return Err(backend.err("address", "is the funnel's own unix_socket, not a mysqld"));
            }
            if relay_unlisted {
                // Over a unix socket, mysqld's unix_socket plugin would take
                // the funnel's own OS user for the relayed client's.
                return Err(funnel.err(
                    "unlisted_users",
                    "= relay needs a host:port [backend] address: over a unix socket, accounts identified via unix_socket would log in as the funnel's own OS user",
                ));
            }
        }
    }

    Ok(Config {
        source: source.to_string(),
        listen,
        unix_socket,
        unix_socket_mode,
        unix_socket_group,
        max_client_connections,
        handshake_timeout,
        max_allowed_packet,
        max_client_pending_input,
        client_write_timeout,
        auth_failure_threshold,
        auth_failure_delay,
        auth_failure_max_delay,
        output_high_watermark,
        output_low_watermark,
        max_buffered_result,
        max_buffered_total,
        server_version,
        log_level,
        shutdown_timeout,
        allow_local_infile,
        max_prepared_stmt_count,
        max_prepared_stmts_per_client,
        max_replayed_user_vars,
        relay_unlisted,
        max_unlisted_connections,
        backend: backend_config,
        users,
        admin,
        stats,
    })
}

/// Would binding both fail? (Port 0 asks the kernel for a free port.)
fn addrs_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Would connecting to `target` reach the listener bound at `own`?
fn is_own_address(own: SocketAddr, target: SocketAddr) -> bool {
    own.port() == target.port()
        && (own.ip() == target.ip() || (own.ip().is_unspecified() && is_local(target.ip())))
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

// ---------------------------------------------------------------------------
// The public entry points.
// ---------------------------------------------------------------------------

impl Config {
    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            source: source.clone(),
            line: None,
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let before = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            ConfigError {
                source: source.clone(),
                line: Some(before.iter().filter(|b| **b == b'\n').count() + 1),
                key: None,
                message: "the file is not valid UTF-8".to_string(),
            }
        })?;
        Config::parse(&text, &source)
    }

    /// Parses and validates configuration text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        let sections = lex(text, source)?;
        build(&sections, source)
    }

    /// The effective configuration as INI text: defaults filled in, [pool]
    /// values resolved into each [user], secrets masked. Used by
    /// `--check-config` and the admin console's SHOW CONFIG.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "# Effective configuration from {}: defaults filled in,\n\
             # [pool] values resolved into each [user], passwords masked.\n",
            self.source
        );
        for (header, entries) in self.effective(true) {
            out.push('\n');
            out.push_str(&header);
            out.push('\n');
            for (key, value) in entries {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        out
    }

    /// The qualified keys (`[funnel] listen`) whose change from `self` to
    /// `new` a reload cannot apply; the caller warns that a restart is
    /// needed. Users added or removed are not listed: that is the reload's
    /// business.
    pub fn restart_required_changes(&self, new: &Config) -> Vec<String> {
        let old_sections = self.effective(false);
        let new_sections = new.effective(false);
        let find = |sections: &[(String, Vec<(&'static str, String)>)], header: &str| {
            sections
                .iter()
                .position(|(h, _)| h == header)
                .map(|i| sections[i].1.clone())
        };
        let mut headers: Vec<String> = old_sections.iter().map(|(h, _)| h.clone()).collect();
        for (header, _) in &new_sections {
            if !headers.contains(header) {
                headers.push(header.clone());
            }
        }
        let mut changes = Vec::new();
        for header in headers {
            let old = find(&old_sections, &header);
            let new = find(&new_sections, &header);
            let section = if header.starts_with("[user ") {
                if old.is_none() || new.is_none() {
                    continue;
                }
                Section::User
            } else {
                let word = header.trim_matches(|c| c == '[' || c == ']');
                match Section::from_name(word) {
                    Some(section) => section,
                    None => continue,
                }
            };
            for spec in OPTIONS
                .iter()
                .filter(|s| s.section == section && !s.reloadable)
            {
                let value = |entries: &Option<Vec<(&'static str, String)>>| {
                    entries.as_ref().and_then(|e| {
                        e.iter()
                            .find(|(k, _)| *k == spec.name)
                            .map(|(_, v)| v.clone())
                    })
                };
                if value(&old) != value(&new) {
                    changes.push(format!("{header} {}", spec.name));
                }
            }
        }
        changes
    }

    /// Every key whose effective value differs from `self` to `new`, as
    /// `[section] key: old -> new` (secrets as `[user u] password changed`),
    /// with `(needs a restart)` after those a reload cannot apply, and
    /// `[admin]`/`[stats]` sections added or removed. Users added or removed
    /// are not listed: that is the reload's business.
    pub fn changes(&self, new: &Config) -> Vec<String> {
        let sections = |c: &Config| {
            let plain = c.effective(false);
            let masked = c.effective(true);
            plain.into_iter().zip(masked).collect::<Vec<_>>()
        };
        let old_sections = sections(self);
        let new_sections = sections(new);
        let find = |list: &[(EffectiveSection, EffectiveSection)], header: &str| {
            list.iter().position(|((h, _), _)| h == header)
        };
        let mut changes = Vec::new();
        for ((header, old_plain), (_, old_masked)) in &old_sections {
            let Some(i) = find(&new_sections, header) else {
                if !header.starts_with("[user ") {
                    changes.push(format!("{header} section removed"));
                }
                continue;
            };
            let ((_, new_plain), (_, new_masked)) = &new_sections[i];
            let section = if header.starts_with("[user ") {
                Some(Section::User)
            } else {
                Section::from_name(header.trim_matches(|c| c == '[' || c == ']'))
            };
            // Keys that come and go with the kind of credential.
            for (key, _) in old_plain {
                if !new_plain.iter().any(|(n, _)| n == key) {
                    changes.push(format!("{header} {key} unset"));
                }
            }
            for (key, _) in new_plain {
                if !old_plain.iter().any(|(n, _)| n == key) {
                    changes.push(format!("{header} {key} set"));
                }
            }
            for (j, (key, old_value)) in old_plain.iter().enumerate() {
                let Some(k) = new_plain.iter().position(|(n, _)| n == key) else {
                    continue;
                };
                if new_plain[k].1 == *old_value {
                    continue;
                }
                let (shown_old, shown_new) = (&old_masked[j].1, &new_masked[k].1);
                let mut line = if shown_old == old_value && shown_new == &new_plain[k].1 {
                    format!("{header} {key}: {shown_old} -> {shown_new}")
                } else {
                    format!("{header} {key} changed")
                };
                let reloadable = OPTIONS
                    .iter()
                    .find(|spec| Some(spec.section) == section && spec.name == *key)
                    .is_none_or(|spec| spec.reloadable);
                if !reloadable {
                    line.push_str(" (needs a restart)");
                }
                changes.push(line);
            }
        }
        for ((header, _), _) in &new_sections {
            if find(&old_sections, header).is_none() && !header.starts_with("[user ") {
                changes.push(format!("{header} section added"));
            }
        }
        changes
    }

    /// Every section and key with its effective value as it would be
    /// written in the file, in documentation order.
    fn effective(&self, mask: bool) -> Vec<(String, Vec<(&'static str, String)>)> {
        let ms = |d: Duration| d.as_millis().to_string();
        let secret = |s: &str| if mask { quote(MASK) } else { quote(s) };
        let listen = if self.listen.is_empty() {
            quote("")
        } else {
            let list: Vec<String> = self.listen.iter().map(|a| a.to_string()).collect();
            list.join(", ")
        };
        let unix_socket = self
            .unix_socket
            .as_ref()
            .map_or_else(|| quote(""), |p| quote(&p.display().to_string()));
        let mut out = vec![
            (
                "[funnel]".to_string(),
                vec![
                    ("listen", listen),
                    ("unix_socket", unix_socket),
                    ("unix_socket_mode", format!("{:04o}", self.unix_socket_mode)),
                    (
                        "unix_socket_group",
                        quote(self.unix_socket_group.as_deref().unwrap_or("")),
                    ),
                    (
                        "max_client_connections",
                        self.max_client_connections.to_string(),
                    ),
                    ("handshake_timeout_ms", ms(self.handshake_timeout)),
                    ("max_allowed_packet", format_size(self.max_allowed_packet)),
                    (
                        "max_client_pending_input",
                        format_size(self.max_client_pending_input),
                    ),
                    ("client_write_timeout_ms", ms(self.client_write_timeout)),
                    (
                        "auth_failure_threshold",
                        self.auth_failure_threshold.to_string(),
                    ),
                    ("auth_failure_delay_ms", ms(self.auth_failure_delay)),
                    ("auth_failure_max_delay_ms", ms(self.auth_failure_max_delay)),
                    (
                        "output_high_watermark",
                        format_size(self.output_high_watermark),
                    ),
                    (
                        "output_low_watermark",
                        format_size(self.output_low_watermark),
                    ),
                    ("max_buffered_result", format_size(self.max_buffered_result)),
                    ("max_buffered_total", format_size(self.max_buffered_total)),
                    ("server_version", quote(&self.server_version)),
                    ("log_level", level_name(self.log_level).to_string()),
                    ("shutdown_timeout_ms", ms(self.shutdown_timeout)),
                    ("allow_local_infile", self.allow_local_infile.to_string()),
                    (
                        "max_prepared_stmt_count",
                        self.max_prepared_stmt_count.to_string(),
                    ),
                    (
                        "max_prepared_stmts_per_client",
                        self.max_prepared_stmts_per_client.to_string(),
                    ),
                    (
                        "max_replayed_user_vars",
                        self.max_replayed_user_vars.to_string(),
                    ),
                    (
                        "unlisted_users",
                        if self.relay_unlisted {
                            "relay"
                        } else {
                            "refuse"
                        }
                        .to_string(),
                    ),
                    (
                        "max_unlisted_connections",
                        self.max_unlisted_connections.to_string(),
                    ),
                ],
            ),
            (
                "[backend]".to_string(),
                vec![
                    ("address", quote(&self.backend.address.to_string())),
                    ("connect_timeout_ms", ms(self.backend.connect_timeout)),
                    (
                        "health_check_interval_ms",
                        ms(self.backend.health_check_interval),
                    ),
                    (
                        "reconnect_backoff_min_ms",
                        ms(self.backend.reconnect_backoff_min),
                    ),
                    (
                        "reconnect_backoff_max_ms",
                        ms(self.backend.reconnect_backoff_max),
                    ),
                ],
            ),
        ];
        for user in &self.users {
            let mut entries = match &user.credential {
                Credential::Plain(password) => vec![("password", secret(password))],
                Credential::Ed25519(password) => vec![
                    ("password", secret(password)),
                    ("auth_plugin", "client_ed25519".to_string()),
                ],
                Credential::Ed25519Key(key) => vec![
                    (
                        "ed25519_public_key",
                        secret(&crate::protocol::auth::ed25519_key_text(key)),
                    ),
                    ("auth_plugin", "client_ed25519".to_string()),
                ],
                Credential::Stage2(hash) => {
                    let hex: String = hash.iter().map(|b| format!("{b:02X}")).collect();
                    vec![("password_hash", secret(&format!("*{hex}")))]
                }
            };
            entries.extend([
                ("backend_user", quote(&user.backend_user)),
                ("backend_password", secret(&user.backend_password)),
                ("connections", user.connections.to_string()),
                ("backlog_size", user.backlog_size.to_string()),
                ("queue_timeout_ms", ms(user.queue_timeout)),
                ("max_pinned_backends", user.max_pinned_backends.to_string()),
                (
                    "max_client_connections",
                    user.max_client_connections.to_string(),
                ),
                (
                    "allowed_networks",
                    quote(
                        &user
                            .allowed_networks
                            .iter()
                            .map(Network::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                ),
            ]);
            out.push((header_text(Section::User, Some(&user.name)), entries));
        }
        if let Some(admin) = &self.admin {
            out.push((
                "[admin]".to_string(),
                vec![
                    ("listen", admin.listen.to_string()),
                    ("user", quote(&admin.user)),
                    ("password", secret(&admin.password)),
                    ("stats_user", quote(&admin.stats_user)),
                    (
                        "stats_password",
                        if admin.stats_password.is_empty() {
                            quote("")
                        } else {
                            secret(&admin.stats_password)
                        },
                    ),
                ],
            ));
        }
        if let Some(stats) = &self.stats {
            out.push((
                "[stats]".to_string(),
                vec![
                    ("listen", stats.listen.to_string()),
                    (
                        "health_backlog_ratio",
                        stats.health_backlog_ratio.to_string(),
                    ),
                    (
                        "stats_token",
                        if stats.stats_token.is_empty() {
                            quote("")
                        } else {
                            secret(&stats.stats_token)
                        },
                    ),
                ],
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../funnel.conf.example");

    /// The smallest valid file; tests append to it.
    const BASE: &str = "[backend]\naddress = 127.0.0.1:3306\n\n[user app]\npassword = secret\n";

    fn parse(text: &str) -> Config {
        match Config::parse(text, "t.conf") {
            Ok(config) => config,
            Err(e) => panic!("unexpected error: {e}\n--- text ---\n{text}"),
        }
    }

    fn fail(text: &str) -> ConfigError {
        match Config::parse(text, "t.conf") {
            Ok(config) => panic!("accepted: {config:?}\n--- text ---\n{text}"),
            Err(e) => e,
        }
    }

    fn with_funnel(lines: &str) -> String {
        format!("[funnel]\n{lines}\n{BASE}")
    }

    #[test]
    fn example_parses_with_defaults() {
        let config = Config::parse(EXAMPLE, "funnel.conf.example").unwrap();
        assert_eq!(config.listen, vec!["127.0.0.1:3307".parse().unwrap()]);
        assert_eq!(config.unix_socket, None);
        assert_eq!(
            config.max_client_connections,
            DEFAULT_MAX_CLIENT_CONNECTIONS
        );
        assert_eq!(config.max_allowed_packet, 64 << 20);
        assert_eq!(config.output_low_watermark, 256 << 10);
        assert_eq!(config.log_level, LevelFilter::Info);
        assert_eq!(
            config.backend.address,
            BackendAddr::Tcp("127.0.0.1:3306".parse().unwrap())
        );
        assert_eq!(config.users.len(), 1);
        let user = &config.users[0];
        assert_eq!(user.name, "app");
        assert_eq!(user.credential, Credential::Plain("change-me".into()));
        assert_eq!(user.backend_user, "app");
        assert_eq!(user.backend_password, "change-me");
        assert_eq!(user.connections, DEFAULT_POOL_CONNECTIONS);
        assert_eq!(
            user.queue_timeout,
            Duration::from_millis(DEFAULT_QUEUE_TIMEOUT_MS)
        );
        assert!(config.admin.is_none());
        assert!(config.stats.is_none());
    }

    /// Every option is documented in the example under its own section, with
    /// the table's default and reload flag, and a commented-out key shows
    /// exactly the default. Keeps the example and the table in step.
    #[test]
    fn example_documents_every_option() {
        let mut section: Option<Section> = None;
        let mut comments: Vec<&str> = Vec::new();
        let mut documented: Vec<(Section, &str)> = Vec::new();
        for (i, line) in EXAMPLE.lines().enumerate() {
            let lineno = i + 1;
            let bare = line.strip_prefix('#').unwrap_or(line);
            if bare.starts_with('[') {
                let (s, _) = parse_header(bare).unwrap();
                section = Some(s);
                comments.clear();
                continue;
            }
            let is_key = bare.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
            if !is_key {
                if line.starts_with('#') {
                    comments.push(line);
                } else {
                    comments.clear();
                }
                continue;
            }
            let (key, value) = bare.split_once(" = ").unwrap();
            let s = section.unwrap_or_else(|| panic!("line {lineno}: key outside a section"));
            let spec = find_spec(s, key)
                .unwrap_or_else(|| panic!("line {lineno}: {key} is not a {s} option"));
            if documented.contains(&(s, key)) {
                // A second, alternative example line (e.g. address).
                continue;
            }
            let block = comments.join("\n");
            let default = format!("Default: {}.", spec.default.render());
            assert!(
                block.contains(&default),
                "line {lineno}: {s} {key}: missing {default:?} in\n{block}"
            );
            let reload = if spec.reloadable {
                "Reload: yes."
            } else {
                "Reload: no."
            };
            assert!(
                block.contains(reload),
                "line {lineno}: {s} {key}: missing {reload:?}"
            );
            if line.starts_with('#') && default_value(spec).unwrap().is_some() {
                let shown = unquote_value(value).unwrap();
                assert_eq!(
                    parse_value(spec.kind, &shown).unwrap(),
                    default_value(spec).unwrap().unwrap(),
                    "line {lineno}: {key} shows {value}, not the default"
                );
            }
            documented.push((s, key));
            comments.clear();
        }
        for spec in option_table() {
            assert!(
                documented.contains(&(spec.section, spec.name)),
                "{} {} is not documented in funnel.conf.example",
                spec.section,
                spec.name
            );
        }
    }

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let n = Network::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.255.1.2")) && n.contains(ip("10.0.0.0")));
        assert!(!n.contains(ip("11.0.0.1")) && !n.contains(ip("::ffff:11.0.0.1")));
        assert!(
            n.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(!n.contains(ip("::a00:1")), "IPv4-compatible is IPv6");
        let host = Network::parse("127.0.0.1").unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let any = Network::parse("0.0.0.0/0").unwrap();
        assert!(any.contains(ip("1.2.3.4")) && !any.contains(ip("::1")));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Network::parse("::1/128").unwrap().contains(ip("::1")));
        assert!(Network::parse("::/0").unwrap().contains(ip("fe80::1")));
        assert!(Network::parse("192.168.1.128/25")
            .unwrap()
            .contains(ip("192.168.1.200")));
        assert!(!Network::parse("192.168.1.128/25")
            .unwrap()
            .contains(ip("192.168.1.127")));
        for bad in [
            "10.1.2.3/8",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0/8",
            "host",
            "",
            "1.2.3.4/8/1",
            "::1/64",
        ] {
            assert_eq!(Network::parse(bad), None, "{bad}");
        }
        let base = "[backend]\naddress = 127.0.0.1:3306\n[user a]\npassword = p\n";
        let c = Config::parse(&format!("{base}allowed_networks = 10.0.0.0/8, 127.0.0.1/32 ,::1/128\nmax_client_connections = 3\n"), "t").unwrap();
        let u = &c.users[0];
        assert_eq!(u.max_client_connections, 3);
        assert_eq!(
            u.allowed_networks
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
        );
        let c = Config::parse(base, "t").unwrap();
        assert_eq!(
            (
                c.users[0].max_client_connections,
                c.users[0].allowed_networks.len()
            ),
            (0, 0)
        );
        let e = Config::parse(
            &format!("{base}allowed_networks = 10.0.0.0/8, 10.1.0.0/8\n"),
            "t",
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("[user a] allowed_networks"));
        assert!(
            e.message.contains("\"10.1.0.0/8\" is not an IP network"),
            "{e}"
        );
    }

    #[test]
    fn passwords_by_reference() {
        use std::os::unix::fs::PermissionsExt;
        let base = "[backend]\naddress = 127.0.0.1:3306\n";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\nsecond line\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let path = file.display();
        let c = Config::parse(&format!("{base}[user a]\npassword_file = {path}\n"), "t").unwrap();
        assert_eq!(c.users[0].credential, Credential::Plain("from-file".into()));
        assert_eq!(c.users[0].backend_password, "from-file");
        let crlf = dir.path().join("crlf");
        std::fs::write(&crlf, "windows\r\n").unwrap();
        std::fs::set_permissions(&crlf, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::parse(
            &format!(
                "{base}[user a]\npassword = p\nbackend_password_file = {}\n",
                crlf.display()
            ),
            "t",
        )
        .unwrap();
        assert_eq!(c.users[0].credential, Credential::Plain("p".into()));
        assert_eq!(c.users[0].backend_password, "windows");

        std::env::set_var("FUNNEL_CFG_TEST_PW", "from-env");
        std::env::set_var("FUNNEL_CFG_TEST_BACKEND_PW", "backend-env");
        let c = Config::parse(
            &format!("{base}[user a]\npassword_env = FUNNEL_CFG_TEST_PW\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.users[0].credential, Credential::Plain("from-env".into()));
        assert_eq!(c.users[0].backend_password, "from-env");
        let c = Config::parse(
            &format!("{base}[user a]\npassword_hash = *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\nbackend_password_env = FUNNEL_CFG_TEST_BACKEND_PW\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.users[0].backend_password, "backend-env");

        let readable = dir.path().join("readable");
        std::fs::write(&readable, "x\n").unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        for (body, key, needle) in [
            (
                format!("password = x\npassword_file = {path}"),
                "[user a] password",
                "give only one of password, password_file and password_env",
            ),
            (
                format!("password_env = FUNNEL_CFG_TEST_PW\npassword_file = {path}"),
                "[user a] password",
                "only one",
            ),
            (
                "password = x\nbackend_password = y\nbackend_password_env = FUNNEL_CFG_TEST_PW"
                    .into(),
                "[user a] backend_password",
                "only one",
            ),
            (
                format!("password_file = {}", readable.display()),
                "[user a] password_file",
                "is readable by others (mode 0644)",
            ),
            (
                format!("password_file = {}", empty.display()),
                "[user a] password_file",
                "is empty",
            ),
            (
                format!("password_file = {}/missing", dir.path().display()),
                "[user a] password_file",
                "cannot read",
            ),
            (
                "password_env = FUNNEL_CFG_TEST_UNSET_VAR".into(),
                "[user a] password_env",
                "\"FUNNEL_CFG_TEST_UNSET_VAR\" is not set",
            ),
        ] {
            let e = Config::parse(&format!("{base}[user a]\n{body}\n"), "t").unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{body}: {e}");
            assert!(e.message.contains(needle), "{body}: {e}");
            assert!(!e.to_string().contains("from-file"), "{e}");
        }
    }

    #[test]
    fn ed25519_users() {
        let base = "[backend]\naddress = 127.0.0.1:3306\n";
        let key = "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY";
        let c = Config::parse(
            &format!("{base}[user e]\npassword = secret\nauth_plugin = client_ed25519\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.users[0].credential, Credential::Ed25519("secret".into()));
        assert_eq!(c.users[0].backend_password, "secret");
        let c = Config::parse(
            &format!(
                "{base}[user e]\ned25519_public_key = {key}\nauth_plugin = client_ed25519\nbackend_password = x\n"
            ),
            "t",
        )
        .unwrap();
        let expected = crate::protocol::auth::ed25519_public_key(b"secret");
        assert_eq!(c.users[0].credential, Credential::Ed25519Key(expected));
        assert_eq!(crate::protocol::auth::ed25519_key_text(&expected), key);
        assert_eq!(
            crate::protocol::auth::ed25519_key_from_text(&format!("{key}=")),
            Some(expected)
        );
        for (text, bad_key) in [
            (format!("[user e]\ned25519_public_key = {key}\nbackend_password = x\n"), "ed25519_public_key"),
            (format!("[user e]\ned25519_public_key = {key}\nauth_plugin = client_ed25519\n"), "backend_password"),
            ("[user e]\ned25519_public_key = abc\nauth_plugin = client_ed25519\nbackend_password = x\n".into(), "ed25519_public_key"),
            ("[user e]\npassword_hash = *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\nauth_plugin = client_ed25519\nbackend_password = x\n".into(), "password_hash"),
            ("[user e]\npassword = x\nauth_plugin = sha256_password\n".into(), "auth_plugin"),
        ] {
            let err = Config::parse(&format!("{base}{text}"), "t").unwrap_err().to_string();
            assert!(err.contains(bad_key), "{text}: {err}");
        }
    }

    #[test]
    fn defaults_are_valid_and_match_constants() {
        for spec in option_table() {
            if let OptionDefault::Text(_)
            | OptionDefault::Count(_)
            | OptionDefault::Size(_)
            | OptionDefault::Millis(_)
            | OptionDefault::Bool(_)
            | OptionDefault::Ratio(_)
            | OptionDefault::Level(_) = spec.default
            {
                let value = default_value(spec).unwrap().unwrap();
                let reparsed = parse_value(spec.kind, spec.default.render().trim_matches('"'))
                    .unwrap_or_else(|e| panic!("{} {}: default: {e}", spec.section, spec.name));
                assert_eq!(value, reparsed, "{} {}", spec.section, spec.name);
            }
        }
        // Each (section, name) appears once.
        for (i, a) in option_table().iter().enumerate() {
            for b in &option_table()[..i] {
                assert!(
                    !(a.section == b.section && a.name == b.name),
                    "{} twice",
                    a.name
                );
            }
        }
        // Overrides in [user] mirror [pool].
        for spec in option_table().iter().filter(|s| s.section == Section::Pool) {
            let user = find_spec(Section::User, spec.name).unwrap();
            assert_eq!(user.kind, spec.kind);
            assert_eq!(user.reloadable, spec.reloadable);
        }
        let config = parse(BASE);
        assert_eq!(config.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
        assert_eq!(
            config.handshake_timeout,
            Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS)
        );
        assert_eq!(
            config.max_client_pending_input,
            DEFAULT_MAX_CLIENT_PENDING_INPUT
        );
        assert_eq!(
            config.client_write_timeout,
            Duration::from_millis(DEFAULT_CLIENT_WRITE_TIMEOUT_MS)
        );
        assert_eq!(config.output_high_watermark, DEFAULT_OUTPUT_HIGH_WATERMARK);
        assert_eq!(config.server_version, DEFAULT_SERVER_VERSION);
        assert_eq!(
            config.shutdown_timeout,
            Duration::from_millis(DEFAULT_SHUTDOWN_TIMEOUT_MS)
        );
        assert_eq!(config.allow_local_infile, DEFAULT_ALLOW_LOCAL_INFILE);
        assert_eq!(
            config.backend.connect_timeout,
            Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS)
        );
        assert_eq!(
            config.backend.health_check_interval,
            Duration::from_millis(DEFAULT_HEALTH_CHECK_INTERVAL_MS)
        );
        assert_eq!(
            config.backend.reconnect_backoff_min,
            Duration::from_millis(DEFAULT_RECONNECT_BACKOFF_MIN_MS)
        );
        assert_eq!(
            config.backend.reconnect_backoff_max,
            Duration::from_millis(DEFAULT_RECONNECT_BACKOFF_MAX_MS)
        );
        let user = &config.users[0];
        assert_eq!(user.backlog_size, DEFAULT_BACKLOG_SIZE);
        assert_eq!(user.max_pinned_backends, DEFAULT_MAX_PINNED_BACKENDS);
    }

    #[test]
    fn error_names_file_line_and_key() {
        let e = fail(&format!("{BASE}\n[pool]\nconnections = abc\n"));
        assert_eq!(
            e.to_string(),
            "t.conf:8: [pool] connections: expected a whole number >= 1, got \"abc\""
        );
        assert_eq!(e.line, Some(8));
        assert_eq!(e.key.as_deref(), Some("[pool] connections"));
    }

    #[test]
    fn each_bad_value_is_located() {
        // (snippet appended after BASE under its own header, key, message part)
        let cases: &[(&str, &str, &str)] = &[
            ("[pool]\nconnections = 0", "[pool] connections", ">= 1"),
            ("[pool]\nbacklog_size = -1", "[pool] backlog_size", ">= 1"),
            ("[pool]\nqueue_timeout_ms = 0", "[pool] queue_timeout_ms", "milliseconds"),
            ("[pool]\nqueue_timeout_ms = 5s", "[pool] queue_timeout_ms", "milliseconds"),
            ("[pool]\nmax_pinned_backends = x", "[pool] max_pinned_backends", ">= 0"),
            ("[funnel]\nmax_client_connections = 0", "[funnel] max_client_connections", ">= 1"),
            ("[funnel]\nmax_client_connections = 1e3", "[funnel] max_client_connections", "1e3"),
            ("[funnel]\nhandshake_timeout_ms = 99999999999", "[funnel] handshake_timeout_ms", "milliseconds"),
            ("[funnel]\nmax_allowed_packet = 2G", "[funnel] max_allowed_packet", "1K to 1G"),
            ("[funnel]\nmax_allowed_packet = 100", "[funnel] max_allowed_packet", "1K to 1G"),
            ("[funnel]\nmax_allowed_packet = 64MB", "[funnel] max_allowed_packet", "K/M/G"),
            ("[funnel]\nmax_client_pending_input = 99999999999999999999K", "[funnel] max_client_pending_input", "size"),
            ("[funnel]\nclient_write_timeout_ms =", "[funnel] client_write_timeout_ms", "milliseconds"),
            ("[funnel]\noutput_low_watermark = 2M", "[funnel] output_low_watermark", "must be below"),
            ("[funnel]\noutput_high_watermark = 128K", "[funnel] output_high_watermark", "must be below"),
            ("[funnel]\nmax_buffered_result = 512K", "[funnel] max_buffered_result", "above output_high_watermark (1M)"),
            ("[funnel]\nmax_buffered_result = 1M", "[funnel] max_buffered_result", "must be 0 (off: memory first)"),
            ("[funnel]\nmax_buffered_result = 1G", "[funnel] max_buffered_result", "max_buffered_total (256M) must be at least max_buffered_result (1G)"),
            ("[funnel]\nmax_buffered_result = 64M\nmax_buffered_total = 32M", "[funnel] max_buffered_total", "must be at least max_buffered_result (64M)"),
            ("[funnel]\nmax_buffered_result = 65G", "[funnel] max_buffered_result", "from 0 to 64G"),
            ("[funnel]\nmax_buffered_total = -1", "[funnel] max_buffered_total", "a size in bytes"),
            ("[funnel]\nmax_buffered_total = 1T", "[funnel] max_buffered_total", "K/M/G"),
            ("[funnel]\nlog_level = loud", "[funnel] log_level", "one of off"),
            ("[funnel]\nallow_local_infile = maybe", "[funnel] allow_local_infile", "true or false"),
            ("[funnel]\nserver_version = MySQL", "[funnel] server_version", "version number"),
            ("[funnel]\nlisten = localhost:3307", "[funnel] listen", "not an IP:port"),
            ("[funnel]\nlisten = 127.0.0.1:3307,", "[funnel] listen", "empty address"),
            ("[funnel]\nlisten = 127.0.0.1:1, 127.0.0.1:1", "[funnel] listen", "twice"),
            ("[funnel]\nlisten = 0.0.0.0:3307, 127.0.0.1:3307", "[funnel] listen", "already used"),
            ("[funnel]\nlisten = \"\"", "[funnel] listen", "unix_socket is not set"),
            ("[funnel]\nunix_socket = funnel.sock", "[funnel] unix_socket", "absolute"),
            ("[user bob]\npassword = a\nqueue_timeout_ms = 0", "[user bob] queue_timeout_ms", "milliseconds"),
            ("[user bob]\npassword_hash = *12", "[user bob] password_hash", "40 hex"),
            ("[user bob]\npassword_hash = *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E1G", "[user bob] password_hash", "40 hex"),
            ("[user bob]\npassword_hash = 2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19", "[user bob] password_hash", "'*'"),
            ("[user bob]\npassword_hash = *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19", "[user bob] backend_password", "required with password_hash"),
            ("[user bob]\npassword = a\npassword_hash = *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19", "[user bob] password_hash", "not both"),
            ("[user bob]\nbackend_user = x", "[user bob] password", "one of password, password_file, password_env or password_hash"),
            ("[user bob]\npassword = a\nbackend_user = \"\"", "[user bob] backend_user", "empty"),
            ("[user bob]\npassword = a\nconnections = 0", "[user bob] connections", ">= 1"),
            ("[admin]\nuser = root", "[admin] password", "required"),
            ("[admin]\npassword = \"\"", "[admin] password", "empty"),
            ("[admin]\npassword = x\nstats_user = w", "[admin] stats_password", "must not be empty"),
            ("[admin]\npassword = x\nstats_user = admin\nstats_password = y", "[admin] stats_user", "must differ"),
            ("[admin]\npassword = x\nlisten = 127.0.0.1:3307", "[admin] listen", "already used by [funnel] listen"),
            ("[stats]\nhealth_backlog_ratio = 1.5", "[stats] health_backlog_ratio", "at most 1"),
            ("[stats]\nhealth_backlog_ratio = NaN", "[stats] health_backlog_ratio", "at most 1"),
            ("[stats]\nlisten = 127.0.0.1:3307", "[stats] listen", "already used"),
        ];
        let base_lines = BASE.lines().count();
        for (snippet, key, part) in cases {
            let e = fail(&format!("{BASE}{snippet}\n"));
            let msg = e.to_string();
            assert_eq!(e.key.as_deref(), Some(*key), "{snippet}: {msg}");
            assert!(msg.contains(part), "{snippet}: {msg}");
            // The error points into the snippet: at its key or its header.
            let line = e
                .line
                .unwrap_or_else(|| panic!("{snippet}: no line in {msg}"));
            assert!(line > base_lines, "{snippet}: {msg}");
            assert!(msg.starts_with(&format!("t.conf:{line}: {key}: ")), "{msg}");
        }
    }

    #[test]
    fn buffered_result_modes() {
        // Off by default: memory first.
        let config = parse(BASE);
        assert_eq!(config.max_buffered_result, DEFAULT_MAX_BUFFERED_RESULT);
        assert_eq!(config.max_buffered_result, 0);
        assert_eq!(config.max_buffered_total, DEFAULT_MAX_BUFFERED_TOTAL);
        // The total alone may be set (it then bounds nothing until the
        // mode is switched on by a reload).
        let config = parse(&with_funnel("max_buffered_total = 1K"));
        assert_eq!(config.max_buffered_total, 1024);
        // Connection first, with a total equal to the per-result limit.
        let config = parse(&with_funnel(
            "max_buffered_result = 64M\nmax_buffered_total = 64M",
        ));
        assert_eq!(config.max_buffered_result, 64 << 20);
        assert_eq!(config.max_buffered_total, 64 << 20);
        let described = config.describe();
        assert!(
            described.contains("max_buffered_result = 64M\nmax_buffered_total = 64M\n"),
            "{described}"
        );
        // Just above the high watermark is the smallest useful limit.
        let config = parse(&with_funnel(
            "output_high_watermark = 64K\noutput_low_watermark = 16K\nmax_buffered_result = 65K",
        ));
        assert_eq!(config.max_buffered_result, 65 << 10);
    }

    #[test]
    fn backoff_bounds() {
        let e = fail("[backend]\naddress = 127.0.0.1:3306\nreconnect_backoff_min_ms = 9000\n[user a]\npassword = x\n");
        assert_eq!(
            e.to_string(),
            "t.conf:3: [backend] reconnect_backoff_min_ms: must not be above reconnect_backoff_max_ms"
        );
    }

    #[test]
    fn missing_required_things() {
        let e = fail("[user app]\npassword = x\n");
        assert_eq!(e.key.as_deref(), Some("[backend] address"));
        assert!(
            e.to_string()
                .starts_with("t.conf: [backend] address: is required"),
            "{e}"
        );
        let e = fail("[backend]\naddress = 127.0.0.1:3306\n");
        assert_eq!(e.line, None);
        assert!(e.message.contains("[user NAME]"), "{e}");
    }

    #[test]
    fn empty_and_comment_only_files() {
        for text in ["", "\n\n", "# nothing\n; here\n   \n"] {
            let e = fail(text);
            assert_eq!(e.line, None);
            assert!(e.message.contains("no settings"), "{e}");
        }
    }

    #[test]
    fn comments_quotes_and_suffixes() {
        let text = "\u{feff}; leading ; comment\r\n\
            [funnel]   # trailing comment on a header\r\n\
            max_allowed_packet = 16m  # trailing comment\n\
              max_client_pending_input=512K\n\
            output_high_watermark = 1G\n\
            output_low_watermark = 1024\n\
            server_version = \"8.0.36-funnel #1\"   # quoted keeps the hash\n\
            allow_local_infile = ON\n\
            log_level = DEBUG\n\
            [backend]\naddress = 127.0.0.1:3306\n\
            [user app]\n\
            password = pa#ss word  # the comment\n\
            backend_password = \"q\\\"uo\\\\te\"\n\
            backend_user = # only a comment: empty value\n";
        let e = fail(text);
        assert_eq!(e.key.as_deref(), Some("[user app] backend_user"));
        assert_eq!(e.line, Some(15));

        let config = parse(&text.replace("backend_user = # only", "#backend_user = # only"));
        assert_eq!(config.max_allowed_packet, 16 << 20);
        assert_eq!(config.max_client_pending_input, 512 << 10);
        assert_eq!(config.output_high_watermark, 1 << 30);
        assert_eq!(config.output_low_watermark, 1024);
        assert_eq!(config.server_version, "8.0.36-funnel #1");
        assert!(config.allow_local_infile);
        assert_eq!(config.log_level, LevelFilter::Debug);
        let user = &config.users[0];
        assert_eq!(user.credential, Credential::Plain("pa#ss word".into()));
        assert_eq!(user.backend_password, "q\"uo\\te");
    }

    #[test]
    fn syntax_errors() {
        let cases: &[(&str, usize, &str)] = &[
            ("listen = 1.2.3.4:5\n", 1, "before the first [section]"),
            ("[funnel\n", 1, "missing ']'"),
            ("[funnel] x\n", 1, "unexpected text"),
            ("[funnel]\njust words\n", 2, "expected `key = value`"),
            ("[funnel]\n = 3\n", 2, "missing key"),
            (
                "[funnel]\nserver_version = \"8.0\n",
                2,
                "missing closing double quote",
            ),
            (
                "[funnel]\nserver_version = \"8.0\" x\n",
                2,
                "after the closing quote",
            ),
            (
                "[funnel]\nserver_version = \"8.0\\n\"\n",
                2,
                "unknown escape",
            ),
            ("[user]\n", 1, "[user NAME]"),
            ("[user \"\"]\n", 1, "must not be empty"),
            ("[pool x]\n", 1, "takes no name"),
            ("[mysqld]\n", 1, "unknown section [mysqld]"),
            ("[backends]\n", 1, "did you mean [backend]"),
        ];
        for (text, line, part) in cases {
            let e = fail(text);
            assert_eq!(e.line, Some(*line), "{text:?}: {e}");
            assert!(e.to_string().contains(part), "{text:?}: {e}");
        }
    }

    #[test]
    fn unknown_keys() {
        let e = fail(&with_funnel("max_allowed_packets = 1M"));
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("[funnel] max_allowed_packets"));
        assert!(
            e.message.contains("did you mean \"max_allowed_packet\""),
            "{e}"
        );

        let e = fail(&with_funnel("max-allowed-packet = 1M"));
        assert!(
            e.message.contains("did you mean \"max_allowed_packet\""),
            "{e}"
        );

        let e = fail(&with_funnel("connections = 4"));
        assert!(
            e.message.contains("belongs in [pool] or [user NAME]"),
            "{e}"
        );

        let e = fail(&with_funnel("frobnicate = 1"));
        assert_eq!(e.message, "unknown key \"frobnicate\" in [funnel]");
    }

    #[test]
    fn duplicates() {
        let e = fail(&with_funnel("log_level = info\nlog_level = debug"));
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("[funnel] log_level"));
        assert!(
            e.message.contains("twice") && e.message.contains("line 2"),
            "{e}"
        );

        let e = fail(&format!("{BASE}[backend]\n"));
        assert_eq!(e.line, Some(6));
        assert!(
            e.message
                .contains("[backend] appears twice (first at line 1)"),
            "{e}"
        );

        let e = fail(&format!("{BASE}[user \"app\"]\npassword = y\n"));
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("user \"app\" is defined twice"), "{e}");
    }

    #[test]
    fn tcp_and_unix_backends() {
        let config = parse("[backend]\naddress = /run/mysqld/mysqld.sock\n[user a]\npassword=x\n");
        assert_eq!(
            config.backend.address,
            BackendAddr::Unix("/run/mysqld/mysqld.sock".into())
        );
        assert_eq!(
            config.backend.address.to_string(),
            "/run/mysqld/mysqld.sock"
        );

        let config = parse("[backend]\naddress = [::1]:3306\n[user a]\npassword=x\n");
        assert_eq!(config.backend.address.to_string(), "[::1]:3306");

        // Names are resolved when the file is loaded.
        let config = parse("[backend]\naddress = localhost:3306\n[user a]\npassword=x\n");
        match config.backend.address {
            BackendAddr::Tcp(addr) => {
                assert!(addr.ip().is_loopback());
                assert_eq!(addr.port(), 3306);
            }
            other => panic!("{other:?}"),
        }

        for (value, part) in [
            ("localhost", "host:port"),
            ("", "host:port"),
            ("127.0.0.1:0", "port 0"),
            ("no-such-host.invalid:3306", "cannot resolve"),
            ("/run/mysqld/mysqld.sock/../../../../../../../../../../../../../../../../../../../../../../../../../../../../x", "limited to 107"),
            ("127.0.0.1:3307", "own listen address"),
        ] {
            let e = fail(&format!("[backend]\naddress = {value}\n[user a]\npassword=x\n"));
            assert_eq!(e.line, Some(2), "{value}: {e}");
            assert_eq!(e.key.as_deref(), Some("[backend] address"));
            assert!(e.message.contains(part), "{value}: {e}");
        }
        let e = fail("[funnel]\nlisten = 0.0.0.0:3306\n[backend]\naddress = 127.0.0.1:3306\n[user a]\npassword=x\n");
        assert!(e.message.contains("own listen address"), "{e}");
        // Same port on another host is a normal set-up.
        parse("[funnel]\nlisten = 0.0.0.0:3306\n[backend]\naddress = 192.0.2.10:3306\n[user a]\npassword=x\n");
        let e = fail("[funnel]\nunix_socket = /tmp/x.sock\n[backend]\naddress = /tmp/x.sock\n[user a]\npassword=x\n");
        assert!(e.message.contains("own unix_socket"), "{e}");
    }

    #[test]
    fn listen_forms() {
        let config = parse(&with_funnel(
            "listen = 0.0.0.0:3307, [::1]:3308 ,127.0.0.1:3309",
        ));
        assert_eq!(config.listen.len(), 3);
        assert_eq!(config.listen[1], "[::1]:3308".parse().unwrap());

        let config = parse(&with_funnel(
            "listen =\nunix_socket = /run/funnel/funnel.sock",
        ));
        assert!(config.listen.is_empty());
        assert_eq!(
            config.unix_socket,
            Some(PathBuf::from("/run/funnel/funnel.sock"))
        );

        // Port 0 (any free port) may repeat: tests use it.
        let config = parse(&with_funnel(
            "listen = 127.0.0.1:0\n[admin]\nlisten = 127.0.0.1:0\npassword = p",
        ));
        assert_eq!(config.admin.unwrap().listen.port(), 0);
    }

    #[test]
    fn password_hash_is_stage2() {
        use sha1::{Digest, Sha1};
        let config = parse(&format!(
            "{BASE}[user \"report writer\"]\n\
             password_hash = *2470c0c06dee42fd1618bb99005adca2ec9d1e19\n\
             backend_password = reports\n\
             backend_user = reporting\n"
        ));
        let user = &config.users[1];
        assert_eq!(user.name, "report writer");
        let expected: [u8; 20] = Sha1::digest(Sha1::digest(b"password")).into();
        assert_eq!(user.credential, Credential::Stage2(expected));
        assert_eq!(user.backend_user, "reporting");
        assert_eq!(user.backend_password, "reports");
    }

    #[test]
    fn users_override_pool() {
        let config = parse(&format!(
            "[pool]\nconnections = 4\nbacklog_size = 100\nqueue_timeout_ms = 250\nmax_pinned_backends = 0\n\
             {BASE}connections = 2\n[user other]\npassword = p\nmax_pinned_backends = 5\n"
        ));
        let app = &config.users[0];
        assert_eq!(
            (app.connections, app.backlog_size, app.max_pinned_backends),
            (2, 100, 0)
        );
        assert_eq!(app.queue_timeout, Duration::from_millis(250));
        let other = &config.users[1];
        assert_eq!((other.connections, other.max_pinned_backends), (4, 5));
    }

    #[test]
    fn describe_masks_secrets_and_reads_back() {
        let text = format!(
            "[funnel]\nlisten = 127.0.0.1:4000, [::1]:4001\nserver_version = \"8.0.36 \\\"x\\\"\"\n\
             max_allowed_packet = 1500\n\
             {BASE}backend_password = hunter2\n[user \"we ird]\"]\npassword = \"s p\"\n\
             [user h]\npassword_hash = *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\nbackend_password = bp\n\
             [admin]\npassword = adminpw\n[stats]\nhealth_backlog_ratio = 0.5\n"
        );
        let config = parse(&text);
        let described = config.describe();
        for secret in ["secret", "hunter2", "adminpw", "2470C0C0", "\"s p\"", "bp"] {
            assert!(!described.contains(secret), "{secret} leaked:\n{described}");
        }
        assert!(
            described.contains("max_allowed_packet = 1500\n"),
            "{described}"
        );
        assert!(
            described.contains("max_client_pending_input = 1M\n"),
            "{described}"
        );
        assert!(described.contains("[user \"we ird]\"]\n"), "{described}");
        let debug = format!("{config:?}");
        for secret in ["secret", "hunter2", "adminpw", "bp\""] {
            assert!(!debug.contains(secret), "{secret} leaked:\n{debug}");
        }

        // Without secrets to mask, describe() is a faithful config file.
        let plain = parse(&text.replace(
            "[user h]\npassword_hash = *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\nbackend_password = bp\n",
            "",
        ));
        let reread = parse(&plain.describe());
        assert_eq!(reread.describe(), plain.describe());
        assert_eq!(reread.listen, plain.listen);
        assert_eq!(reread.server_version, "8.0.36 \"x\"");
        assert_eq!(reread.users[1].name, "we ird]");
        assert_eq!(reread.stats, plain.stats);
    }

    #[test]
    fn restart_required_changes_lists_only_non_reloadable() {
        let old = parse(BASE);
        let same = parse(&format!(
            "{BASE}backlog_size = 5\n[funnel]\nlog_level = debug\n"
        ));
        assert!(old.restart_required_changes(&same).is_empty());
        let new = parse(&format!(
            "{BASE}connections = 3\n[user added]\npassword = p\n[funnel]\nlisten = 127.0.0.1:4000\n[admin]\npassword = x\n"
        ));
        assert_eq!(
            old.restart_required_changes(&new),
            vec!["[funnel] listen", "[admin] listen"]
        );
    }

    #[test]
    fn changes_list_every_key_old_to_new() {
        let old = parse(BASE);
        assert!(old.changes(&parse(BASE)).is_empty());
        // Users added (or removed) are the reload's business, not listed here.
        assert!(old
            .changes(&parse(&format!("{BASE}[user other]\npassword = q\n")))
            .is_empty());
        let new = parse(
            "[funnel]\nmax_client_connections = 77\nlisten = 127.0.0.1:4000\n\
             [backend]\naddress = 127.0.0.1:3306\n\
             [user app]\npassword = other\nqueue_timeout_ms = 50\n\
             [admin]\npassword = x\n",
        );
        let default_max = old.max_client_connections;
        let default_timeout = old.users[0].queue_timeout.as_millis();
        assert_eq!(
            old.changes(&new),
            vec![
                "[funnel] listen: 127.0.0.1:3307 -> 127.0.0.1:4000 (needs a restart)".to_string(),
                format!("[funnel] max_client_connections: {default_max} -> 77"),
                "[user app] password changed".to_string(),
                // It defaults to the password.
                "[user app] backend_password changed".to_string(),
                format!("[user app] queue_timeout_ms: {default_timeout} -> 50"),
                "[admin] section added".to_string(),
            ]
        );
        assert_eq!(new.changes(&old).last().unwrap(), "[admin] section removed");
        let hashed = parse(
            "[backend]\naddress = 127.0.0.1:3306\n\n[user app]\n\
             password_hash = *94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29\nbackend_password = secret\n",
        );
        assert_eq!(
            old.changes(&hashed),
            vec!["[user app] password unset", "[user app] password_hash set"]
        );
    }

    #[test]
    fn from_file_errors() {
        let e = Config::from_file(Path::new("/nonexistent/funnel.conf")).unwrap_err();
        assert_eq!(e.source, "/nonexistent/funnel.conf");
        assert!(
            e.to_string()
                .starts_with("/nonexistent/funnel.conf: cannot read"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("funnel-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.conf");
        std::fs::write(&path, b"[funnel]\n# \xff\n").unwrap();
        let e = Config::from_file(&path).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("UTF-8"));
        std::fs::write(&path, BASE).unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.source, path.display().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn options_help_lists_every_key() {
        let help = options_help();
        for spec in option_table() {
            assert!(
                help.contains(&format!("    {} (", spec.name)),
                "{}",
                spec.name
            );
        }
        assert!(help.contains("  [user NAME]\n"));
        assert!(help.contains("    max_allowed_packet (default 64M)\n"));
        assert!(help.contains("    listen (default 127.0.0.1:3307; restart to change)\n"));
        assert!(help.contains("    address (required; restart to change)\n"));
    }

    #[test]
    fn sizes_format_and_parse() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("2k"), Some(2048));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("1.5M"), None);
        assert_eq!(parse_size(" 1M"), None);
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(3 << 20), "3M");
        assert_eq!(format_size(1 << 30), "1G");
    }
}
