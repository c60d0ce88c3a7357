//! Semantics: sections -> Config, with the errors located at file, line and key.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::lexer::{header_text, Entry, RawSection};
use super::options::{find_spec, Section};
use super::value::{default_value, format_size, Value};
use super::{
    parse_networks, AdminConfig, BackendAddr, BackendConfig, Config, ConfigError, Credential,
    Given, HandoffSocket, ServerConfig, ServerRole, StatsConfig, UserConfig, IMPLICIT_SERVER,
};

/// Typed access to one section's values, falling back to the table's
/// defaults, with errors located at the key (or at the section header).
struct Lookup<'a> {
    source: &'a str,
    section: Section,
    /// The NAME of `[user NAME]` and `[server NAME]`.
    name: Option<&'a str>,
    header: String,
    line: Option<usize>,
    entries: &'a [Entry],
}

impl<'a> Lookup<'a> {
    fn new(source: &'a str, raw: &'a RawSection) -> Lookup<'a> {
        Lookup {
            source,
            section: raw.section,
            name: raw.name.as_deref(),
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
            name: None,
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

pub(super) fn build(sections: &[RawSection], source: &str) -> Result<Config, ConfigError> {
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
    let threads = funnel.required("threads", Value::count)?;
    let handshake_timeout = funnel.required("handshake_timeout_ms", Value::millis)?;
    let max_allowed_packet = funnel.required("max_allowed_packet", Value::count)?;
    let max_client_pending_input = funnel.required("max_client_pending_input", Value::count)?;
    let client_write_timeout = funnel.required("client_write_timeout_ms", Value::millis)?;
    let stats_log_interval =
        Duration::from_millis(funnel.required("stats_log_interval_ms", Value::count)? as u64);
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
    let handoff_text = funnel.required("handoff_socket", Value::text)?;
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
    let tls_cert = funnel.required("tls_cert", Value::text)?;
    let tls_key = funnel.required("tls_key", Value::text)?;
    let require_tls = funnel.required("require_tls", Value::boolean)?;
    let tls = match (tls_cert.trim(), tls_key.trim()) {
        ("", "") => None,
        ("", _) => return Err(funnel.err("tls_cert", "is required with tls_key")),
        (_, "") => return Err(funnel.err("tls_key", "is required with tls_cert")),
        (cert, key) => Some(crate::tls::load_server(cert, key).map_err(|m| {
            let which = if m.contains(&format!("{key:?}")) && !m.contains(&format!("{cert:?}")) {
                "tls_key"
            } else {
                "tls_cert"
            };
            funnel.err(which, m)
        })?),
    };
    if require_tls && tls.is_none() {
        return Err(funnel.err(
            "require_tls",
            "needs tls_cert and tls_key: clients could not connect at all",
        ));
    }

    if listen.is_empty() && unix_socket.is_none() {
        return Err(funnel.err(
            "listen",
            "is empty and unix_socket is not set: clients would have no way to connect",
        ));
    }
    let handoff_socket = handoff_socket(&handoff_text, unix_socket.as_deref(), &listen)
        .map_err(|m| funnel.err("handoff_socket", m))?;
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
    let server_lookups: Vec<Lookup> = sections
        .iter()
        .filter(|s| s.section == Section::Server)
        .map(|raw| Lookup::new(source, raw))
        .collect();
    let max_concurrency_default = backend.required("max_concurrency", Value::count)?;
    let mut servers = Vec::new();
    for server in &server_lookups {
        // parse_header guarantees a non-empty name for [server].
        let name = server.name.unwrap_or_default().to_string();
        let role = match server.required("role", Value::text)?.trim() {
            "primary" => ServerRole::Primary,
            "replica" => ServerRole::Replica,
            other => {
                return Err(server.err("role", format!("must be primary or replica, got {other:?}")))
            }
        };
        let lag_ms = server.required("max_replication_lag_ms", Value::count)?;
        if lag_ms > 0 && role == ServerRole::Primary {
            return Err(server.err(
                "max_replication_lag_ms",
                "is for replicas (role = replica): a primary does not replicate",
            ));
        }
        servers.push(ServerConfig {
            name,
            address: server.required("address", Value::backend)?,
            role,
            weight: server.required("weight", Value::count)? as u32,
            max_replication_lag: (lag_ms > 0).then(|| Duration::from_millis(lag_ms as u64)),
            max_concurrency: Some(
                server
                    .get("max_concurrency", Value::count)?
                    .unwrap_or(max_concurrency_default),
            )
            .filter(|&n| n > 0),
        });
    }
    let address = match (backend.get("address", Value::backend)?, servers.first()) {
        (Some(_), Some(_)) => {
            return Err(backend.err(
                "address",
                "and [server NAME] sections exclude each other: with several servers, name each in a [server NAME] section",
            ))
        }
        (Some(address), None) => {
            servers.push(ServerConfig {
                name: IMPLICIT_SERVER.to_string(),
                address: address.clone(),
                role: ServerRole::Any,
                weight: 100,
                max_replication_lag: None,
                max_concurrency: Some(max_concurrency_default).filter(|&n| n > 0),
            });
            address
        }
        (None, Some(first)) => first.address.clone(),
        (None, None) => {
            return Err(backend.err(
                "address",
                "is required (mysqld to connect to: host:port or a unix socket path), unless [server NAME] sections name the servers",
            ))
        }
    };
    let tls_mode = {
        let text = backend.required("tls", Value::text)?;
        crate::tls::BackendTlsMode::parse(text.trim()).ok_or_else(|| {
            backend.err(
                "tls",
                format!(
                    "must be {}, got {text:?}",
                    crate::tls::BackendTlsMode::NAMES
                ),
            )
        })?
    };
    let server_name = match backend.get("tls_server_name", Value::text)? {
        Some(name) => name,
        None => match backend.get("address", Value::backend_host)? {
            Some(host) if !host.is_empty() => host,
            _ => match &address {
                BackendAddr::Tcp(a) => a.ip().to_string(),
                BackendAddr::Unix(_) => "localhost".to_string(),
            },
        },
    };
    if tls_mode.required() && matches!(address, BackendAddr::Unix(_)) {
        return Err(backend.err(
            "tls",
            format!(
                "= {} needs a host:port address: TLS is not used over a unix socket (use off or prefer there)",
                tls_mode.name()
            ),
        ));
    }
    let tls_ca = backend.required("tls_ca", Value::text)?;
    let backend_tls = crate::tls::load_backend(tls_mode, tls_ca.trim(), server_name.trim())
        .map_err(|m| {
            let key = if m.contains("neither a DNS name") {
                "tls_server_name"
            } else if !m.starts_with("tls = ") && !tls_ca.trim().is_empty() {
                "tls_ca"
            } else {
                "tls"
            };
            backend.err(key, m)
        })?;
    let backend_config = BackendConfig {
        address,
        health_user: backend.get("health_user", Value::text)?,
        health_password: backend.get("health_password", Value::text)?,
        tls: backend_tls,
        connect_timeout: backend.required("connect_timeout_ms", Value::millis)?,
        pipeline_depth: backend.required("pipeline_depth", Value::count)?,
        health_check_interval: backend.required("health_check_interval_ms", Value::millis)?,
        server_check_interval: backend.required("server_check_interval_ms", Value::millis)?,
        reconnect_backoff_min: backend.required("reconnect_backoff_min_ms", Value::millis)?,
        reconnect_backoff_max: backend.required("reconnect_backoff_max_ms", Value::millis)?,
        max_concurrency: max_concurrency_default,
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
    let pool_max_concurrency = pool.required("max_concurrency", Value::count)?;
    let pool_rate_limit = pool.required("rate_limit", Value::count)?;
    let pool_rate_burst = pool.get("rate_burst", Value::count)?;
    if pool_rate_burst.is_some() && pool_rate_limit == 0 {
        return Err(pool.err("rate_burst", "needs rate_limit (the rate it bursts above)"));
    }

    let mut users = Vec::new();
    for raw in sections.iter().filter(|s| s.section == Section::User) {
        let user = Lookup::new(source, raw);
        // parse_header guarantees a non-empty name for [user].
        let name = raw.name.clone().unwrap_or_default();
        let password = secret_ref(&user, "password")?;
        let password_hash = user.get("password_hash", Value::hash)?;
        let credential = match (&password, password_hash) {
            (None, None)
                if user.entry("ed25519_public_key").is_some()
                    || user.entry("caching_sha2_hash").is_some() =>
            {
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
        let sha2_hash = user.get("caching_sha2_hash", Value::text)?;
        if sha2_hash.is_some()
            && user.get("auth_plugin", Value::text)?.as_deref() != Some("caching_sha2_password")
        {
            return Err(user.err(
                "caching_sha2_hash",
                "needs auth_plugin = caching_sha2_password",
            ));
        }
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
            Some("caching_sha2_password") => match (credential, ed25519_key, sha2_hash) {
                (_, Some(_), _) => {
                    return Err(user.err(
                        "ed25519_public_key",
                        "needs auth_plugin = client_ed25519",
                    ))
                }
                (Credential::Plain(pw), None, None) => Credential::CachingSha2(pw),
                (Credential::Plain(_), None, Some(_)) => {
                    return Err(user.err(
                        "caching_sha2_hash",
                        "give either password or caching_sha2_hash, not both",
                    ))
                }
                (_, None, Some(hex)) => match parse_hex32(&hex) {
                    Some(h) => Credential::CachingSha2Hash(h),
                    None => {
                        return Err(user.err(
                            "caching_sha2_hash",
                            "expected 64 hex digits: SHA2(UNHEX(SHA2(password, 256)), 256)",
                        ))
                    }
                },
                (_, None, None) => {
                    return Err(user.err(
                        "password_hash",
                        "cannot verify caching_sha2_password (auth_plugin) with a mysql_native_password hash: give password or caching_sha2_hash",
                    ))
                }
            },
            Some(_) => {
                return Err(user.err(
                    "auth_plugin",
                    "must be mysql_native_password, caching_sha2_password or client_ed25519",
                ))
            }
        };
        let backend_password = match (secret_ref(&user, "backend_password")?, password) {
            (Some(backend_password), _) => backend_password,
            (None, Some(password)) => password,
            (None, None) => {
                return Err(user.err(
                    "backend_password",
                    "is required with password_hash, caching_sha2_hash or ed25519_public_key: a hash or a key cannot log in to mysqld",
                ))
            }
        };
        let backend_user = user
            .get("backend_user", Value::text)?
            .unwrap_or_else(|| name.clone());
        if backend_user.is_empty() {
            return Err(user.err("backend_user", "must not be empty"));
        }
        let max_concurrency = user
            .get("max_concurrency", Value::count)?
            .unwrap_or(pool_max_concurrency);
        let rate = match (
            user.get("rate_limit", Value::count)?,
            user.get("rate_burst", Value::count)?,
        ) {
            (Some(0), _) => None,
            // The user's own rate: its own burst, else one second's worth.
            (Some(limit), burst) => Some((limit, burst.unwrap_or(limit))),
            (None, burst) if pool_rate_limit > 0 => Some((
                pool_rate_limit,
                burst.or(pool_rate_burst).unwrap_or(pool_rate_limit),
            )),
            (None, Some(_)) => {
                return Err(user.err(
                    "rate_burst",
                    "needs rate_limit (here or in [pool]: the rate it bursts above)",
                ))
            }
            (None, None) => None,
        };
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
            max_concurrency: (max_concurrency > 0).then_some(max_concurrency),
            rate,
            max_client_connections: user.required("max_client_connections", Value::count)?,
            allowed_networks: parse_networks(&user.required("allowed_networks", Value::text)?)
                .map_err(|m| user.err("allowed_networks", m))?,
            require_tls: user.required("require_tls", Value::boolean)?,
            servers: user_servers(&user, &servers)?,
            read_write_split: user.required("read_write_split", Value::boolean)?,
        });
        if let Some(u) = users.last() {
            check_server_roles(&user, u, &servers)?;
        }
        if users.last().is_some_and(|u| u.require_tls) && tls.is_none() {
            return Err(user.err(
                "require_tls",
                "needs [funnel] tls_cert and tls_key: this user's clients could not log in at all",
            ));
        }
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
            health_pools: stats
                .required("health_pools", Value::text)?
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
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
    for (i, server) in servers.iter().enumerate() {
        let lookup = server_lookups.get(i).unwrap_or(&backend);
        match &server.address {
            BackendAddr::Tcp(target) => {
                if let Some((own, _)) = bound.iter().find(|(b, _)| is_own_address(*b, *target)) {
                    return Err(lookup.err(
                        "address",
                        format!("{target} is the funnel's own listen address {own}, not a mysqld"),
                    ));
                }
            }
            BackendAddr::Unix(path) => {
                if unix_socket.as_deref() == Some(path.as_path()) {
                    return Err(
                        lookup.err("address", "is the funnel's own unix_socket, not a mysqld")
                    );
                }
            }
        }
    }
    match &backend_config.address {
        BackendAddr::Tcp(_) => {}
        BackendAddr::Unix(_) => {
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

    let mut rules = super::rules::build(
        sections,
        source,
        funnel.required("cache_size", Value::count)?,
        funnel.required("cache_max_result_size", Value::count)?,
    )?;
    rules.invalidate_on_write = funnel.required("cache_invalidation", Value::boolean)?;
    rules.user_limits = users.iter().filter_map(super::rules::user_limit).collect();

    Ok(Config {
        source: source.to_string(),
        servers,
        listen,
        unix_socket,
        unix_socket_mode,
        unix_socket_group,
        max_client_connections,
        threads,
        handshake_timeout,
        max_allowed_packet,
        max_client_pending_input,
        client_write_timeout,
        stats_log_interval,
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
        handoff_socket,
        allow_local_infile,
        max_prepared_stmt_count,
        max_prepared_stmts_per_client,
        max_replayed_user_vars,
        relay_unlisted,
        max_unlisted_connections,
        tls,
        require_tls,
        backend: backend_config,
        users,
        admin,
        stats,
        rules,
        given: Given(sections.to_vec()),
    })
}

/// `[funnel] handoff_socket`: `off`, an absolute path, `@name` (abstract),
/// or empty for the default, an abstract socket named after the unix
/// socket or else the first listen address, so that two funnels started
/// with the same configuration meet there.
pub(super) fn handoff_socket(
    text: &str,
    unix_socket: Option<&std::path::Path>,
    listen: &[SocketAddr],
) -> Result<Option<HandoffSocket>, String> {
    // sun_path has 108 bytes; an abstract name takes one for its leading NUL.
    const MAX_ABSTRACT: usize = 107;
    let text = text.trim();
    if text == "off" {
        return Ok(None);
    }
    if let Some(name) = text.strip_prefix('@') {
        if name.is_empty() || name.contains('\0') || name.len() > MAX_ABSTRACT {
            return Err(format!(
                "@name must name an abstract socket of 1 to {MAX_ABSTRACT} bytes without NUL, got {text:?}"
            ));
        }
        return Ok(Some(HandoffSocket::Abstract(name.to_string())));
    }
    if text.starts_with('/') {
        return super::value::check_unix_path(text).map(|p| Some(HandoffSocket::Path(p)));
    }
    if !text.is_empty() {
        return Err(format!(
            "expected an absolute path, @name (an abstract socket), off, or empty for the default; got {text:?}"
        ));
    }
    let of = match (unix_socket, listen.first()) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(addr)) => addr.to_string(),
        (None, None) => return Ok(None),
    };
    let mut name = format!("funnel:{of}");
    if name.len() > MAX_ABSTRACT {
        // A stable hash (the same in every build), not the std hasher's.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in of.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        name = format!("funnel:{h:016x}");
    }
    Ok(Some(HandoffSocket::Abstract(name)))
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

/// 64 hex digits -> 32 bytes (`caching_sha2_hash`).
fn parse_hex32(raw: &str) -> Option<[u8; 32]> {
    let hex = raw.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// `[user NAME] servers`: names of `[server NAME]` sections, each once;
/// empty: every server.
fn user_servers(user: &Lookup, servers: &[ServerConfig]) -> Result<Vec<String>, ConfigError> {
    let text = user.required("servers", Value::text)?;
    let mut names: Vec<String> = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !servers.iter().any(|s| s.name == name) {
            let known: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
            return Err(user.err(
                "servers",
                format!(
                    "names no [server {name}] section (the servers are: {})",
                    known.join(", ")
                ),
            ));
        }
        if names.iter().any(|n| n == name) {
            return Err(user.err("servers", format!("names {name} twice")));
        }
        names.push(name.to_string());
    }
    if names.is_empty() {
        names = servers.iter().map(|s| s.name.clone()).collect();
    }
    Ok(names)
}

/// A pool without read/write split sends every statement to any of its
/// servers: they must all be of one role (a write must not reach a replica
/// by chance). With the split, it needs a primary for the writes.
fn check_server_roles(
    lookup: &Lookup,
    user: &UserConfig,
    servers: &[ServerConfig],
) -> Result<(), ConfigError> {
    let role_of = |name: &String| {
        servers
            .iter()
            .find(|s| &s.name == name)
            .map_or(ServerRole::Any, |s| s.role)
    };
    let has = |role| user.servers.iter().any(|n| role_of(n) == role);
    if user.read_write_split {
        if !has(ServerRole::Primary) {
            return Err(lookup.err(
                "read_write_split",
                "needs a server with role = primary among the user's servers, for the writes",
            ));
        }
    } else if has(ServerRole::Primary) && has(ServerRole::Replica) {
        return Err(lookup.err(
            "servers",
            "mixes primary and replica servers: set read_write_split = on, or list the servers of one role with servers = ...",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::options::{DEFAULT_MAX_BUFFERED_RESULT, DEFAULT_MAX_BUFFERED_TOTAL};
    use crate::config::tests::{fail, parse, with_funnel, BASE};

    #[test]
    fn handoff_socket_values() {
        let h = |lines: &str| parse(&with_funnel(lines)).handoff_socket;
        let abs = |name: &str| Some(HandoffSocket::Abstract(name.to_string()));
        // The default: after the unix socket, else the first address.
        assert_eq!(h(""), abs("funnel:127.0.0.1:3307"));
        assert_eq!(
            h("listen = \"\"\nunix_socket = /run/f/f.sock"),
            abs("funnel:/run/f/f.sock")
        );
        assert_eq!(
            h("listen = 10.0.0.1:5, 10.0.0.2:6"),
            abs("funnel:10.0.0.1:5")
        );
        assert_eq!(h("handoff_socket = off"), None);
        assert_eq!(h("handoff_socket = @mine"), abs("mine"));
        assert_eq!(
            h("handoff_socket = /run/f/handoff.sock"),
            Some(HandoffSocket::Path("/run/f/handoff.sock".into()))
        );
        // Too long for an abstract name: a stable hash instead.
        let long = format!("/{}", "d".repeat(100));
        let Some(HandoffSocket::Abstract(name)) =
            h(&format!("listen = \"\"\nunix_socket = {long}"))
        else {
            panic!("not abstract");
        };
        assert_eq!(name.len(), "funnel:".len() + 16);
        for bad in ["relative.sock", "@", "on"] {
            let e = fail(&with_funnel(&format!("handoff_socket = {bad}")));
            assert_eq!(
                e.key.as_deref(),
                Some("[funnel] handoff_socket"),
                "{bad}: {e}"
            );
        }
        // describe() says "" for the default, so a file that does not set
        // it reads back the same, and a change of address is not one of it.
        let c = parse(&with_funnel(""));
        assert!(
            c.describe().contains("handoff_socket = \"\"\n"),
            "{}",
            c.describe()
        );
        let moved = parse(&with_funnel("listen = 127.0.0.1:4000"));
        assert!(!c
            .changes(&moved)
            .iter()
            .any(|l| l.contains("handoff_socket")));
        let set = parse(&with_funnel("handoff_socket = @x"));
        assert!(
            set.describe().contains("handoff_socket = \"@x\"\n"),
            "{}",
            set.describe()
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
    fn caching_sha2_users() {
        let base = "[backend]\naddress = 127.0.0.1:3306\n";
        let c = Config::parse(
            &format!("{base}[user s]\npassword = secret\nauth_plugin = caching_sha2_password\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            c.users[0].credential,
            Credential::CachingSha2("secret".into())
        );
        let hash = crate::protocol::caching_sha2::stage2(b"secret");
        let hex: String = hash.iter().map(|b| format!("{b:02X}")).collect();
        let c = Config::parse(
            &format!(
                "{base}[user s]\ncaching_sha2_hash = {hex}\nauth_plugin = caching_sha2_password\nbackend_password = x\n"
            ),
            "t",
        )
        .unwrap();
        assert_eq!(c.users[0].credential, Credential::CachingSha2Hash(hash));
        for (text, bad_key) in [
            (format!("[user s]\ncaching_sha2_hash = {hex}\nbackend_password = x\n"), "caching_sha2_hash"),
            (format!("[user s]\ncaching_sha2_hash = {hex}\nauth_plugin = caching_sha2_password\n"), "backend_password"),
            (format!("[user s]\ncaching_sha2_hash = {}\nauth_plugin = caching_sha2_password\nbackend_password = x\n", &hex[1..]), "caching_sha2_hash"),
            (format!("[user s]\npassword = x\ncaching_sha2_hash = {hex}\nauth_plugin = caching_sha2_password\n"), "caching_sha2_hash"),
            ("[user s]\npassword_hash = *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\nauth_plugin = caching_sha2_password\nbackend_password = x\n".into(), "password_hash"),
        ] {
            let err = Config::parse(&format!("{base}{text}"), "t").unwrap_err().to_string();
            assert!(err.contains(bad_key), "{text}: {err}");
        }
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
    fn users_limits_default_to_the_pools() {
        let config = parse(&format!(
            "[pool]\nmax_concurrency = 3\nrate_limit = 50\n\
             {BASE}\n[user own]\npassword = p\nmax_concurrency = 0\nrate_limit = 10\n\
             [user burst]\npassword = p\nrate_burst = 80\n[user none]\npassword = p\nrate_limit = 0\n"
        ));
        let limits: Vec<_> = config
            .users
            .iter()
            .map(|u| (u.max_concurrency, u.rate))
            .collect();
        assert_eq!(
            limits,
            [
                (Some(3), Some((50, 50))),
                // Its own rate: a second's worth of burst, not the pool's.
                (None, Some((10, 10))),
                (Some(3), Some((50, 80))),
                (Some(3), None),
            ]
        );
        // A user limit is a rule of that user's, besides the [rule]s.
        assert_eq!(config.rules.user_limits.len(), 4);
        assert_eq!(config.rules.user_limits[0].user.as_deref(), Some("app"));
        let no_limits = parse(&format!("{BASE}\n"));
        assert!(no_limits.rules.user_limits.is_empty());
        assert!(no_limits.users[0].max_concurrency.is_none() && no_limits.users[0].rate.is_none());
    }

    #[test]
    fn backend_tls_settings() {
        use crate::tls::BackendTlsMode;
        let backend = |lines: &str| {
            parse(&format!(
                "[backend]\naddress = 127.0.0.1:3306\n{lines}\n[user app]\npassword = p\n"
            ))
            .backend
            .tls
        };
        let off = backend("");
        assert_eq!(off.mode, BackendTlsMode::Off);
        assert!(off.config.is_none());
        let prefer = backend("tls = prefer");
        assert_eq!(prefer.mode, BackendTlsMode::Prefer);
        assert!(prefer.config.is_some());
        // The certificate's name: the host of address as written, else given.
        assert_eq!(
            format!("{:?}", prefer.server_name),
            format!(
                "{:?}",
                rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap()
            )
        );
        let named =
            parse("[backend]\naddress = localhost:3306\ntls = require\n[user app]\npassword = p\n");
        assert_eq!(
            named.backend.tls.server_name,
            rustls::pki_types::ServerName::try_from("localhost").unwrap()
        );
        let given = backend("tls = require\ntls_server_name = db1.example.com");
        assert_eq!(
            given.server_name,
            rustls::pki_types::ServerName::try_from("db1.example.com").unwrap()
        );
        // describe() reads back the same settings.
        let config =
            parse("[backend]\naddress = 127.0.0.1:3306\ntls = require\n[user app]\npassword = p\n");
        let reread = parse(&config.describe());
        assert_eq!(reread.backend.tls, config.backend.tls);
        assert!(config.describe().contains("tls = require\n"));
        // Refusals, at the key.
        let e =
            fail("[backend]\naddress = /run/mysqld.sock\ntls = require\n[user a]\npassword = p\n");
        assert_eq!(e.key.as_deref(), Some("[backend] tls"), "{e}");
        assert!(e.message.contains("needs a host:port address"), "{e}");
        // prefer over a unix socket is allowed (and means no TLS there).
        parse("[backend]\naddress = /run/mysqld.sock\ntls = prefer\n[user a]\npassword = p\n");
        let e =
            fail("[backend]\naddress = 127.0.0.1:3306\ntls = verify_ca\n[user a]\npassword = p\n");
        assert_eq!(e.key.as_deref(), Some("[backend] tls"), "{e}");
        let e = fail(
            "[backend]\naddress = 127.0.0.1:3306\ntls = require\ntls_server_name = \"not a name\"\n[user a]\npassword = p\n",
        );
        assert_eq!(e.key.as_deref(), Some("[backend] tls_server_name"), "{e}");
        let e = fail(&with_funnel("require_tls = true"));
        assert_eq!(e.key.as_deref(), Some("[funnel] require_tls"), "{e}");
        let e = fail(&format!("{BASE}require_tls = true\n"));
        assert_eq!(e.key.as_deref(), Some("[user app] require_tls"), "{e}");
    }
}
