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

mod lexer;
mod options;
mod rules;
mod set;
mod share;
mod validate;
mod value;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use lexer::{header_text, lex, quote, RawSection};
use options::OPTIONS;
use validate::build;
use value::{format_size, level_name};

pub use options::*;
pub use rules::{Pattern, QueryRules, RuleAction, RuleConfig};
pub use set::{SetError, Setting};
pub use share::LoopShare;

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
    /// Event loops (`threads`; 0: one per CPU). Restart only.
    pub threads: usize,
    pub handshake_timeout: Duration,
    pub max_allowed_packet: usize,
    /// Bytes of pipelined, not yet processed input one client may hold
    /// beyond the command being processed.
    pub max_client_pending_input: usize,
    pub client_write_timeout: Duration,
    /// The periodic summary log line (`stats_log_interval_ms`; zero: off).
    pub stats_log_interval: Duration,
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
    /// Where a newer funnel with this configuration takes over the
    /// listeners and clients (`[funnel] handoff_socket`); None: off.
    pub handoff_socket: Option<HandoffSocket>,
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
    /// The certificate and key clients may ask TLS with (`tls_cert`,
    /// `tls_key`); None: no TLS offered.
    pub tls: Option<crate::tls::ServerTls>,
    /// TCP clients without TLS are refused (ERR 1045, as MariaDB does).
    pub require_tls: bool,
    pub backend: BackendConfig,
    /// The mysqld servers: the `[server NAME]` sections, or one from
    /// `[backend] address` (named [`IMPLICIT_SERVER`], of no role, never
    /// health-checked: the simple one-local-mysqld setup). At least one;
    /// names are unique.
    pub servers: Vec<ServerConfig>,
    /// At least one; names are unique.
    pub users: Vec<UserConfig>,
    pub admin: Option<AdminConfig>,
    pub stats: Option<StatsConfig>,
    /// `[rule NAME]` sections and the result cache's bounds.
    pub rules: QueryRules,
    /// The settings as the file gave them, with the admin console's SETs
    /// since it was read: what [`Config::set`] changes one key of.
    given: Given,
}

/// The checked settings of each section as given, before defaults and
/// `[pool]` values are resolved; secrets among them, so `Debug` shows
/// only how many sections there are.
#[derive(Clone, PartialEq)]
struct Given(Vec<RawSection>);

impl fmt::Debug for Given {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Given({} sections)", self.0.len())
    }
}

/// The unix socket of the handoff between an old and a new funnel
/// (`[funnel] handoff_socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffSocket {
    /// A socket file.
    Path(PathBuf),
    /// Linux's abstract namespace (no file; written `@name`), without the `@`.
    Abstract(String),
}

impl fmt::Display for HandoffSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoffSocket::Path(path) => write!(f, "{}", path.display()),
            HandoffSocket::Abstract(name) => write!(f, "@{name}"),
        }
    }
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
    /// `[backend] address`, or the first `[server]`'s.
    pub address: BackendAddr,
    /// The account the servers' health checkers log in with, when given
    /// (see [`Config::health_account`]).
    pub health_user: Option<String>,
    pub health_password: Option<String>,
    pub connect_timeout: Duration,
    /// `pipeline_depth`: commands one backend may have in flight (1: off).
    pub pipeline_depth: usize,
    pub health_check_interval: Duration,
    /// How often each `[server NAME]` is checked.
    pub server_check_interval: Duration,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// `[backend] max_concurrency`: each server's unless its section says
    /// otherwise (0: no limit); the effective limit is the server's.
    pub max_concurrency: usize,
    /// TLS to mysqld (`tls`, `tls_ca`, `tls_server_name`).
    pub tls: crate::tls::BackendTls,
}

/// The name of the server `[backend] address` gives.
pub const IMPLICIT_SERVER: &str = "backend";

/// What a server is for (`[server NAME] role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerRole {
    /// `[backend] address`: takes everything, checked for nothing.
    Any,
    /// Takes writes: out of rotation while read_only.
    Primary,
    /// Takes reads: out of rotation while its replication is stopped or
    /// lags beyond its limit.
    Replica,
}

impl ServerRole {
    pub fn name(self) -> &'static str {
        match self {
            ServerRole::Any => "any",
            ServerRole::Primary => "primary",
            ServerRole::Replica => "replica",
        }
    }
}

/// One `[server NAME]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub name: String,
    pub address: BackendAddr,
    pub role: ServerRole,
    /// 1 to 1000; relative to the other servers of its role.
    pub weight: u32,
    /// A replica lagging more is out of rotation; None: no limit.
    pub max_replication_lag: Option<Duration>,
    /// Commands running at once on it, all pools together; None: no limit.
    pub max_concurrency: Option<usize>,
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
    /// The plaintext password, verified with MySQL 8's
    /// `caching_sha2_password` (`auth_plugin = caching_sha2_password`):
    /// clients are asked to switch to it unless they answered with it.
    CachingSha2(String),
    /// SHA256(SHA256(password)) (`caching_sha2_hash`): verifies
    /// caching_sha2_password's fast path, cannot log in to mysqld.
    CachingSha2Hash([u8; 32]),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Config is logged with {:?} in places; secrets must not be.
        match self {
            Credential::Plain(_) => write!(f, "Plain({MASK})"),
            Credential::Stage2(_) => write!(f, "Stage2({MASK})"),
            Credential::Ed25519(_) => write!(f, "Ed25519({MASK})"),
            Credential::Ed25519Key(_) => write!(f, "Ed25519Key({MASK})"),
            Credential::CachingSha2(_) => write!(f, "CachingSha2({MASK})"),
            Credential::CachingSha2Hash(_) => write!(f, "CachingSha2Hash({MASK})"),
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
    /// Its clients' statements running on mysqld at once, at most
    /// (`max_concurrency`; the rules' limit, for every statement).
    pub max_concurrency: Option<usize>,
    /// Its clients' statements started per second, at most, and how many
    /// may start at once after a quiet time: (rate_limit, rate_burst).
    pub rate: Option<(usize, usize)>,
    /// Clients logged in as this user at once; 0 = no limit.
    pub max_client_connections: usize,
    /// Networks its clients may connect from; empty = anywhere.
    pub allowed_networks: Vec<Network>,
    /// Its clients must have connected with TLS (ERR 1045 otherwise).
    pub require_tls: bool,
    /// The servers (names of `Config::servers`) its pool uses, in the
    /// order given; never empty.
    pub servers: Vec<String>,
    /// Reads outside a transaction go to replicas, the rest to primaries.
    pub read_write_split: bool,
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
            .field("max_concurrency", &self.max_concurrency)
            .field("rate", &self.rate)
            .field("max_client_connections", &self.max_client_connections)
            .field("allowed_networks", &self.allowed_networks)
            .field("require_tls", &self.require_tls)
            .field("servers", &self.servers)
            .field("read_write_split", &self.read_write_split)
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
    /// Users whose pools `/health` counts; empty: those with clients.
    pub health_pools: Vec<String>,
    /// Bearer token required for everything but `/health`; empty: none.
    pub stats_token: String,
}

impl fmt::Debug for StatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsConfig")
            .field("listen", &self.listen)
            .field("health_backlog_ratio", &self.health_backlog_ratio)
            .field("health_pools", &self.health_pools)
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

/// A TLS server name as the file would give it.
fn server_name_text(name: &rustls::pki_types::ServerName<'_>) -> String {
    match name {
        rustls::pki_types::ServerName::DnsName(n) => n.as_ref().to_string(),
        rustls::pki_types::ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

/// The section of a `[user NAME]` or `[server NAME]` header.
fn named_section(header: &str) -> Option<Section> {
    let word = header.strip_prefix('[')?.split(' ').next()?;
    Section::from_name(word).filter(|s| s.takes_name() && header.contains(' '))
}

/// A section of `Config::effective`: header and (key, value) pairs.
type EffectiveSection = (String, Vec<(&'static str, String)>);

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
            let section = if let Some(named) = named_section(&header) {
                if old.is_none() || new.is_none() {
                    continue;
                }
                named
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
                if named_section(header) != Some(Section::User) {
                    changes.push(format!("{header} section removed"));
                }
                continue;
            };
            let ((_, new_plain), (_, new_masked)) = &new_sections[i];
            let section = if let Some(named) = named_section(header) {
                Some(named)
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
            if find(&old_sections, header).is_none() && named_section(header) != Some(Section::User)
            {
                changes.push(format!("{header} section added"));
            }
        }
        changes
    }

    /// `handoff_socket` as the file would say it: empty when it is the
    /// default derived from the addresses (which is logged at start-up).
    fn handoff_socket_text(&self) -> String {
        let derived = validate::handoff_socket("", self.unix_socket.as_deref(), &self.listen);
        match &self.handoff_socket {
            h if derived.as_ref() == Ok(h) => String::new(),
            None => "off".to_string(),
            Some(h) => h.to_string(),
        }
    }

    /// The account health checkers log in with: `[backend] health_user`
    /// and `health_password`, else the first user's backend account.
    pub fn health_account(&self) -> (String, String) {
        let first = self.users.first();
        let user = self
            .backend
            .health_user
            .clone()
            .or_else(|| first.map(|u| u.backend_user.clone()))
            .unwrap_or_default();
        let password = match (&self.backend.health_user, &self.backend.health_password) {
            (_, Some(p)) => p.clone(),
            (Some(_), None) => String::new(),
            (None, None) => first
                .map(|u| u.backend_password.clone())
                .unwrap_or_default(),
        };
        (user, password)
    }

    /// The one server `[backend] address` gives, if that is how the file
    /// names it.
    pub fn implicit_server(&self) -> Option<&ServerConfig> {
        self.servers.first().filter(|s| s.role == ServerRole::Any)
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
                    ("threads", self.threads.to_string()),
                    ("handshake_timeout_ms", ms(self.handshake_timeout)),
                    ("max_allowed_packet", format_size(self.max_allowed_packet)),
                    (
                        "max_client_pending_input",
                        format_size(self.max_client_pending_input),
                    ),
                    ("client_write_timeout_ms", ms(self.client_write_timeout)),
                    ("stats_log_interval_ms", ms(self.stats_log_interval)),
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
                    ("handoff_socket", quote(&self.handoff_socket_text())),
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
                    (
                        "tls_cert",
                        quote(self.tls.as_ref().map_or("", |t| t.cert_path.as_str())),
                    ),
                    (
                        "tls_key",
                        quote(self.tls.as_ref().map_or("", |t| t.key_path.as_str())),
                    ),
                    ("require_tls", self.require_tls.to_string()),
                ],
            ),
            (
                "[backend]".to_string(),
                [
                    self.implicit_server()
                        .map(|s| ("address", quote(&s.address.to_string()))),
                    self.backend
                        .health_user
                        .as_ref()
                        .map(|u| ("health_user", quote(u))),
                    self.backend
                        .health_password
                        .as_ref()
                        .map(|p| ("health_password", secret(p))),
                ]
                .into_iter()
                .flatten()
                .chain([
                    ("connect_timeout_ms", ms(self.backend.connect_timeout)),
                    ("pipeline_depth", self.backend.pipeline_depth.to_string()),
                    (
                        "health_check_interval_ms",
                        ms(self.backend.health_check_interval),
                    ),
                    (
                        "server_check_interval_ms",
                        ms(self.backend.server_check_interval),
                    ),
                    (
                        "reconnect_backoff_min_ms",
                        ms(self.backend.reconnect_backoff_min),
                    ),
                    (
                        "reconnect_backoff_max_ms",
                        ms(self.backend.reconnect_backoff_max),
                    ),
                    ("max_concurrency", self.backend.max_concurrency.to_string()),
                    ("tls", self.backend.tls.mode.name().to_string()),
                    ("tls_ca", quote(&self.backend.tls.ca_path)),
                    (
                        "tls_server_name",
                        quote(&server_name_text(&self.backend.tls.server_name)),
                    ),
                ])
                .collect(),
            ),
        ];
        if self.implicit_server().is_none() {
            for server in &self.servers {
                out.push((
                    header_text(Section::Server, Some(&server.name)),
                    vec![
                        ("address", quote(&server.address.to_string())),
                        ("role", server.role.name().to_string()),
                        ("weight", server.weight.to_string()),
                        (
                            "max_replication_lag_ms",
                            server
                                .max_replication_lag
                                .map_or_else(|| "0".to_string(), ms),
                        ),
                        (
                            "max_concurrency",
                            server.max_concurrency.unwrap_or(0).to_string(),
                        ),
                    ],
                ));
            }
        }
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
                Credential::CachingSha2(password) => vec![
                    ("password", secret(password)),
                    ("auth_plugin", "caching_sha2_password".to_string()),
                ],
                Credential::CachingSha2Hash(hash) => {
                    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                    vec![
                        ("caching_sha2_hash", secret(&hex)),
                        ("auth_plugin", "caching_sha2_password".to_string()),
                    ]
                }
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
                    "max_concurrency",
                    user.max_concurrency.unwrap_or(0).to_string(),
                ),
                (
                    "rate_limit",
                    user.rate.map_or(0, |(limit, _)| limit).to_string(),
                ),
            ]);
            if let Some((_, burst)) = user.rate {
                entries.push(("rate_burst", burst.to_string()));
            }
            entries.extend([
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
                ("require_tls", user.require_tls.to_string()),
                ("servers", quote(&user.servers.join(", "))),
                ("read_write_split", user.read_write_split.to_string()),
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
                    ("health_pools", quote(&stats.health_pools.join(", "))),
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
        // The result cache's bounds ([funnel]) and the query rules.
        out[0].1.extend([
            ("cache_size", format_size(self.rules.cache_size)),
            (
                "cache_max_result_size",
                format_size(self.rules.cache_max_result_size),
            ),
            (
                "cache_invalidation",
                self.rules.invalidate_on_write.to_string(),
            ),
        ]);
        out.extend(self.rules.rules.iter().map(RuleConfig::effective));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const EXAMPLE: &str = include_str!("../../funnel.conf.example");

    /// The smallest valid file; tests append to it.
    pub(super) const BASE: &str =
        "[backend]\naddress = 127.0.0.1:3306\n\n[user app]\npassword = secret\n";

    pub(super) fn parse(text: &str) -> Config {
        match Config::parse(text, "t.conf") {
            Ok(config) => config,
            Err(e) => panic!("unexpected error: {e}\n--- text ---\n{text}"),
        }
    }

    pub(super) fn fail(text: &str) -> ConfigError {
        match Config::parse(text, "t.conf") {
            Ok(config) => panic!("accepted: {config:?}\n--- text ---\n{text}"),
            Err(e) => e,
        }
    }

    pub(super) fn with_funnel(lines: &str) -> String {
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

    const SERVERS: &str = "[server db1]\naddress = 127.0.0.1:3306\n\
         [server r1]\naddress = 127.0.0.1:3316\nrole = replica\nweight = 50\nmax_replication_lag_ms = 2000\n\
         [server r2]\naddress = /run/r2.sock\nrole = replica\n";

    #[test]
    fn server_sections_name_the_servers_and_users_pick_them() {
        let text = format!(
            "{SERVERS}[user app]\npassword = secret\nread_write_split = true\n\
             [user reader]\npassword = r\nservers = r2, r1\n"
        );
        let config = parse(&text);
        let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db1", "r1", "r2"]);
        assert!(config.implicit_server().is_none());
        assert_eq!(config.backend.address, config.servers[0].address);
        let r1 = &config.servers[1];
        assert_eq!(
            (r1.role, r1.weight, r1.max_replication_lag),
            (ServerRole::Replica, 50, Some(Duration::from_millis(2000)))
        );
        assert_eq!(config.servers[0].role, ServerRole::Primary);
        assert_eq!(config.users[0].servers, ["db1", "r1", "r2"]);
        assert!(config.users[0].read_write_split);
        assert_eq!(config.users[1].servers, ["r2", "r1"]);
        assert_eq!(
            config.health_account(),
            ("app".to_string(), "secret".to_string())
        );
        // The effective configuration reads back the same.
        let reread = parse(&config.describe().replace("\"********\"", "secret"));
        assert_eq!(reread.servers, config.servers);
        assert_eq!(reread.users[1].servers, config.users[1].servers);

        // [backend] address is one server of no role, not checked.
        let plain = parse(BASE);
        assert_eq!(plain.servers.len(), 1);
        assert_eq!(
            plain.implicit_server().map(|s| s.role),
            Some(ServerRole::Any)
        );
        assert_eq!(plain.users[0].servers, [IMPLICIT_SERVER]);
        assert!(
            !plain.describe().contains("[server"),
            "{}",
            plain.describe()
        );
    }

    #[test]
    fn server_mistakes_are_named() {
        for (text, key, words) in [
            (format!("{SERVERS}[user a]\npassword = p\n"), "[user a] servers", "mixes primary and replica"),
            (format!("{SERVERS}[user a]\npassword = p\nservers = r1, nope\n"), "[user a] servers", "names no [server nope]"),
            (format!("{SERVERS}[user a]\npassword = p\nservers = r1, r1\n"), "[user a] servers", "twice"),
            (format!("{SERVERS}[user a]\npassword = p\nservers = r1\nread_write_split = true\n"), "[user a] read_write_split", "role = primary"),
            (format!("{SERVERS}[backend]\naddress = 127.0.0.1:3306\n[user a]\npassword = p\nservers = r1\n"), "[backend] address", "exclude each other"),
            ("[server x]\naddress = 127.0.0.1:3306\nrole = leader\n[user a]\npassword = p\n".to_string(), "[server x] role", "primary or replica"),
            ("[server x]\naddress = 127.0.0.1:3306\nmax_replication_lag_ms = 5\n[user a]\npassword = p\n".to_string(), "[server x] max_replication_lag_ms", "for replicas"),
            ("[server x]\nrole = replica\n[user a]\npassword = p\n".to_string(), "[server x] address", "required"),
            ("[user a]\npassword = p\n".to_string(), "[backend] address", "required"),
        ] {
            let e = Config::parse(&text, "t").unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.message.contains(words), "{e}");
        }
        let e = Config::parse("[server]\naddress = 127.0.0.1:3306\n", "t").unwrap_err();
        assert!(e.message.contains("[server NAME]"), "{e}");
        let e = Config::parse(&format!("{SERVERS}[server r1]\n"), "t").unwrap_err();
        assert!(e.message.contains("server \"r1\" is defined twice"), "{e}");
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
}
