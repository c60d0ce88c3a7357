//! The option table: every option once, with its section, kind, default,
//! whether a reload may change it and its help, and the defaults it refers to.

use std::fmt;

use log::LevelFilter;

use super::value::{format_size, level_name};

// ---------------------------------------------------------------------------
// Defaults. The option table refers to these, so the documentation and the
// parser cannot disagree about them.
// ---------------------------------------------------------------------------

/// Path tried by the `funnel` binary when no `-c/--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "funnel.conf";

pub const DEFAULT_SERVER_CHECK_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3307";
/// As mysqld creates its socket: clients authenticate with a password.
pub const DEFAULT_UNIX_SOCKET_MODE: &str = "0777";
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 20_000;
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_MAX_ALLOWED_PACKET: usize = 64 << 20;
pub const DEFAULT_MAX_CLIENT_PENDING_INPUT: usize = 1 << 20;
pub const DEFAULT_CLIENT_WRITE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_STATS_LOG_INTERVAL_MS: usize = 60_000;
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
/// Empty: an abstract socket named after the funnel's first client address.
pub const DEFAULT_HANDOFF_SOCKET: &str = "";
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

pub const DEFAULT_CACHE_SIZE: usize = 64 << 20;
pub const DEFAULT_CACHE_MAX_RESULT_SIZE: usize = 1 << 20;

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
    /// `[server NAME]`, one per backend server when there are several.
    Server,
    /// `[rule NAME]`, query rules in file order (`rules.rs`).
    Rule,
}

pub(super) const SECTIONS: [Section; 8] = [
    Section::Funnel,
    Section::Backend,
    Section::Server,
    Section::Pool,
    Section::User,
    Section::Admin,
    Section::Stats,
    Section::Rule,
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
            Section::Server => "server",
            Section::Rule => "rule",
        }
    }

    /// Its header names one of several: `[user NAME]`, `[server NAME]`.
    pub fn takes_name(self) -> bool {
        matches!(self, Section::User | Section::Server)
    }

    pub(super) fn from_name(word: &str) -> Option<Section> {
        SECTIONS.iter().copied().find(|s| s.name() == word)
    }
}

impl fmt::Display for Section {
    /// The header as documented: `[funnel]`, `[user NAME]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::User => write!(f, "[user NAME]"),
            Section::Server => write!(f, "[server NAME]"),
            Section::Rule => write!(f, "[rule NAME]"),
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
    /// Like `Text`, masked in [`Config::describe`](super::Config::describe).
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
const SERVER_WEIGHT: OptionKind = OptionKind::Count { min: 1, max: 1000 };
const PIPELINE_DEPTH: OptionKind = OptionKind::Count { min: 1, max: 64 };
const THREADS: OptionKind = OptionKind::Count { min: 0, max: 256 };
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
pub(super) static OPTIONS: [OptionSpec; 102] = [
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
    opt(S::Funnel, "threads", THREADS, D::Count(1), false,
        "Event loops, each on its own thread with its own clients and its share of every pool's connections (the total stays as configured); 0 = one per CPU (at most 64)"),
    opt(S::Funnel, "handshake_timeout_ms", K::Millis, D::Millis(DEFAULT_HANDSHAKE_TIMEOUT_MS), true,
        "Clients that have not completed the login within this time are disconnected"),
    opt(S::Funnel, "max_allowed_packet", K::Size { min: MIN_PACKET_LIMIT, max: MAX_PACKET_LIMIT }, D::Size(DEFAULT_MAX_ALLOWED_PACKET), true,
        "Largest client command; a bigger one is answered with ERR 1153"),
    opt(S::Funnel, "max_client_pending_input", BUFFER_SIZE, D::Size(DEFAULT_MAX_CLIENT_PENDING_INPUT), true,
        "Pipelined, not yet processed input one client may hold beyond the command being processed"),
    opt(S::Funnel, "client_write_timeout_ms", K::Millis, D::Millis(DEFAULT_CLIENT_WRITE_TIMEOUT_MS), true,
        "A client that accepts no output for this long is disconnected"),
    opt(S::Funnel, "stats_log_interval_ms", K::Count { min: 0, max: 86_400_000 }, D::Count(DEFAULT_STATS_LOG_INTERVAL_MS), true,
        "Every this long, one log line sums up the interval: clients (and how many queued, running, pinned), backlog, queries per second, end-to-end p50/p99; 0 = never"),
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
    opt(S::Funnel, "handoff_socket", K::Text, D::Text(DEFAULT_HANDOFF_SOCKET), false,
        "Unix socket over which a funnel started with the same configuration takes over the listeners, and this one hands its clients over on SIGTERM: an absolute path, @name for an abstract socket, empty for @funnel:<unix_socket or first listen address>, or off"),
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
    opt(S::Funnel, "tls_cert", K::Text, D::Text(""), true,
        "PEM file of the certificate (and its chain) the funnel presents to clients that ask for TLS; with tls_key, clients are offered TLS (CLIENT_SSL); a reload reads both files again for new connections; empty = no TLS"),
    opt(S::Funnel, "tls_key", K::Text, D::Text(""), true,
        "PEM file of tls_cert's private key (PKCS#8, PKCS#1 or SEC1)"),
    opt(S::Funnel, "require_tls", K::Bool, D::Bool(false), true,
        "Clients connecting over TCP without TLS are refused with ERR 1045, as MariaDB refuses them under require_secure_transport (unix socket clients are let in); needs tls_cert"),
    // [backend]
    opt(S::Backend, "address", K::BackendAddr, D::Unset, false,
        "mysqld to connect to: host:port (resolved at start-up) or a unix socket path starting with '/'; required unless [server NAME] sections name the servers"),
    opt(S::Backend, "connect_timeout_ms", K::Millis, D::Millis(DEFAULT_CONNECT_TIMEOUT_MS), true,
        "Time allowed to connect and log in to mysqld"),
    opt(S::Backend, "pipeline_depth", PIPELINE_DEPTH, D::Count(1), true,
        "Commands one backend connection may have in flight at once: above 1, a provably stateless read (see the README's Pipelining) may be sent behind other such reads when no connection is idle; 1 = one command at a time"),
    opt(S::Backend, "health_check_interval_ms", K::Millis, D::Millis(DEFAULT_HEALTH_CHECK_INTERVAL_MS), true,
        "Idle backend connections are pinged this often"),
    opt(S::Backend, "reconnect_backoff_min_ms", K::Millis, D::Millis(DEFAULT_RECONNECT_BACKOFF_MIN_MS), true,
        "First delay before reconnecting after a failed backend connection"),
    opt(S::Backend, "reconnect_backoff_max_ms", K::Millis, D::Millis(DEFAULT_RECONNECT_BACKOFF_MAX_MS), true,
        "The reconnect delay doubles up to this"),
    opt(S::Backend, "tls", K::Text, D::Text("off"), true,
        "TLS to mysqld, as the MySQL clients' --ssl-mode: off; prefer (when mysqld offers it); require (refuse a mysqld that does not; its certificate unchecked); verify_ca (signed by tls_ca); verify_identity (also for tls_server_name); new backend connections follow a reload"),
    opt(S::Backend, "tls_ca", K::Text, D::Text(""), true,
        "PEM file of the CA certificate(s) mysqld's certificate must be signed by (tls = verify_ca, verify_identity)"),
    opt(S::Backend, "tls_server_name", K::Text, D::Derived("the host of address, as written"), true,
        "The DNS name or IP address mysqld's certificate must be for (tls = verify_identity)"),
    opt(S::Backend, "server_check_interval_ms", K::Millis, D::Millis(DEFAULT_SERVER_CHECK_INTERVAL_MS), true,
        "Each [server NAME]'s health checker runs this often (a server that fails one check is out of rotation at once, and back after two good ones)"),
    opt(S::Backend, "health_user", K::Text, D::Derived("the first [user]'s backend_user"), true,
        "The account the health checker of each [server NAME] logs in with (needs SLAVE MONITOR, or REPLICATION CLIENT, for replicas' lag)"),
    opt(S::Backend, "health_password", K::Secret, D::Derived("the first [user]'s backend_password"), true,
        "health_user's password"),
    opt(S::Backend, "max_concurrency", ANY_COUNT_FROM_0, D::Count(0), true,
        "Commands running at once on each server, all users' together (the [server NAME] key overrides it); when reached, the users with commands waiting take turns, one command each, so one user's flood cannot starve another; a client's command inside its transaction (pinned) always runs; 0 = no limit"),
    // [server NAME]
    opt(S::Server, "address", K::BackendAddr, D::Required, true,
        "This server's mysqld: host:port (resolved when the file is read) or a unix socket path"),
    opt(S::Server, "role", K::Text, D::Text("primary"), true,
        "primary (takes writes: out of rotation while read_only) or replica (out of rotation while its replication is stopped or lags beyond max_replication_lag_ms)"),
    opt(S::Server, "weight", SERVER_WEIGHT, D::Count(100), true,
        "Its share of the commands among the servers of its role that have idle connections: the least loaded by in-flight commands per weight is chosen"),
    opt(S::Server, "max_replication_lag_ms", ANY_COUNT_FROM_0, D::Count(0), true,
        "A replica lagging more (Seconds_Behind_Master) is out of rotation until its lag is at most half of it; 0 = no limit"),
    opt(S::Server, "max_concurrency", ANY_COUNT_FROM_0, D::Derived("[backend] max_concurrency"), true,
        "Overrides [backend] max_concurrency for this server (0 = no limit)"),
    // [pool]
    opt(S::Pool, "connections", ANY_COUNT_FROM_1, D::Count(DEFAULT_POOL_CONNECTIONS), true,
        "Backend connections shared by each user's clients"),
    opt(S::Pool, "backlog_size", ANY_COUNT_FROM_1, D::Count(DEFAULT_BACKLOG_SIZE), true,
        "Commands that may wait for a backend connection per user; more are refused with an error"),
    opt(S::Pool, "queue_timeout_ms", K::Millis, D::Millis(DEFAULT_QUEUE_TIMEOUT_MS), true,
        "A command that waits longer than this for a backend connection fails with an error"),
    opt(S::Pool, "max_pinned_backends", ANY_COUNT_FROM_0, D::Count(DEFAULT_MAX_PINNED_BACKENDS), true,
        "Extra backend connections a pool may open for clients pinned by transactions, locks, etc."),
    opt(S::Pool, "max_concurrency", ANY_COUNT_FROM_0, D::Count(0), true,
        "Statements of each user's clients running on mysqld at once, at most; more wait (queued) for one to finish, up to queue_timeout_ms; 0 = no limit"),
    opt(S::Pool, "rate_limit", ANY_COUNT_FROM_0, D::Count(0), true,
        "Statements of each user's clients started per second, at most; more wait (queued) for their turn, up to queue_timeout_ms; 0 = no limit"),
    opt(S::Pool, "rate_burst", ANY_COUNT_FROM_1, D::Derived("rate_limit"), true,
        "Statements of a user's clients that may start at once after a quiet time (the token bucket's size)"),
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
        "How the funnel verifies this user's clients: mysql_native_password, caching_sha2_password (MySQL 8's; needs password) or client_ed25519 (MariaDB's ed25519; needs password or ed25519_public_key)"),
    opt(S::User, "caching_sha2_hash", K::Secret, D::Unset, true,
        "Instead of password, with auth_plugin = caching_sha2_password: SHA2(UNHEX(SHA2(password, 256)), 256) as 64 hex digits; then backend_password is required"),
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
    opt(S::User, "max_concurrency", ANY_COUNT_FROM_0, D::Derived("[pool] max_concurrency"), true,
        "Overrides [pool] max_concurrency for this user (0 = no limit)"),
    opt(S::User, "rate_limit", ANY_COUNT_FROM_0, D::Derived("[pool] rate_limit"), true,
        "Overrides [pool] rate_limit for this user (0 = no limit)"),
    opt(S::User, "rate_burst", ANY_COUNT_FROM_1, D::Derived("[pool] rate_burst, or this user's rate_limit"), true,
        "Overrides [pool] rate_burst for this user"),
    opt(S::User, "max_client_connections", ANY_COUNT_FROM_0, D::Count(0), true,
        "Clients logged in as this user at once (mysqld's max_user_connections); one more gets ERR 1203; 0 = no limit"),
    opt(S::User, "allowed_networks", K::Text, D::Text(""), true,
        "Networks (comma separated, e.g. 10.0.0.0/8, 127.0.0.1/32, ::1/128) this user's clients may connect from, others get ERR 1130; unix socket clients count as 127.0.0.1; empty = anywhere"),
    opt(S::User, "servers", K::Text, D::Text(""), true,
        "Comma-separated [server NAME]s this user's pool uses, each with `connections` connections; empty = every server"),
    opt(S::User, "read_write_split", K::Bool, D::Bool(false), true,
        "Reads outside a transaction go to the pool's replicas, everything else to its primaries (see README, Replicas); off: every statement to any server of the pool, which must then be all of one role"),
    opt(S::User, "require_tls", K::Bool, D::Bool(false), true,
        "This user's clients must connect with TLS (as an account with REQUIRE SSL); others get ERR 1045, as from mysqld; needs [funnel] tls_cert"),
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
    opt(S::Stats, "health_pools", K::Text, D::Text(""), true,
        "Comma-separated users whose pools /health counts (a pool of another user that is down is named, but keeps the host in rotation); empty = the pools that have clients, or every pool while none has"),
    opt(S::Stats, "stats_token", K::Secret, D::Text(""), false,
        "Bearer token (Authorization: Bearer TOKEN) required for /metrics, /stats.json and the live page; /health stays open but says only OK or unhealthy without it; empty = no token"),
    // [funnel], the result cache of [rule] cache_ttl_ms
    opt(S::Funnel, "cache_size", BUFFERED_RESULT_SIZE, D::Size(DEFAULT_CACHE_SIZE), true,
        "Memory for cached results (rules with cache_ttl_ms); the least recently used entries make room; 0 = no result cache"),
    opt(S::Funnel, "cache_max_result_size", BUFFERED_RESULT_SIZE, D::Size(DEFAULT_CACHE_MAX_RESULT_SIZE), true,
        "A result larger than this (bytes as the client gets them) is not cached"),
    opt(S::Funnel, "cache_invalidation", K::Bool, D::Bool(true), true,
        "A write through the funnel (INSERT, UPDATE, DELETE, ..., CALL, DDL) makes cached reads of its tables stale (of every table when its tables cannot be told); false = only the TTL bounds staleness"),
    // [rule NAME]
    opt(S::Rule, "user", K::Text, D::Unset, true,
        "Matches statements of clients logged in as this user; unset = any user"),
    opt(S::Rule, "schema", K::Text, D::Unset, true,
        "Matches statements run with this default schema; unset = any"),
    opt(S::Rule, "digest", K::Text, D::Unset, true,
        "Matches statements of this shape, as SHOW QUERIES shows it (literals as ?), and executes of prepared statements whose text has it; unset = any"),
    opt(S::Rule, "pattern", K::Text, D::Unset, true,
        "Matches statements whose text this regular expression (Rust regex syntax) finds a match in; (?i) for any case; unset = any"),
    opt(S::Rule, "cache_ttl_ms", K::Millis, D::Unset, true,
        "Action: answer matching reads from the result cache for this long after mysqld's answer"),
    opt(S::Rule, "block", K::Text, D::Unset, true,
        "Action: refuse matching statements with ERR 1290 (HY000) and this message"),
    opt(S::Rule, "max_concurrency", ANY_COUNT_FROM_1, D::Unset, true,
        "Matching statements running on mysqld at once, at most; more wait (queued) for one to finish, up to the pool's queue_timeout_ms"),
    opt(S::Rule, "rate_limit", ANY_COUNT_FROM_1, D::Unset, true,
        "Matching statements started per second, at most; more wait (queued) for their turn, up to the pool's queue_timeout_ms"),
    opt(S::Rule, "rate_burst", ANY_COUNT_FROM_1, D::Derived("rate_limit"), true,
        "Matching statements that may start at once after a quiet time (the token bucket's size)"),
    opt(S::Rule, "timeout_ms", K::Millis, D::Unset, true,
        "A matching statement still running this long after it was sent to mysqld is killed there (KILL QUERY; the client gets mysqld's answer, ERR 1317)"),
    opt(S::Rule, "route", K::Text, D::Unset, true,
        "primary or replica: the servers matching statements go to, for users with read_write_split; replica is honoured only for plain reads outside a transaction (anything else goes to the primary); no effect in a pool of one role"),
];

/// Every option, in documentation order.
pub fn option_table() -> &'static [OptionSpec] {
    &OPTIONS
}

pub(super) fn find_spec(section: Section, name: &str) -> Option<&'static OptionSpec> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lexer::{parse_header, unquote_value};
    use crate::config::tests::{parse, BASE, EXAMPLE};
    use crate::config::value::{default_value, parse_value};
    use std::time::Duration;

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
        assert!(help.contains("    address (default unset; restart to change)\n"));
        assert!(help.contains("  [server NAME]\n"));
    }
}
