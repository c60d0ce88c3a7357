//! Values: one option's text checked against its kind.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use super::options::{OptionDefault, OptionKind, OptionSpec, MAX_DURATION_MS};
use super::BackendAddr;
/// `sockaddr_un.sun_path` is 108 bytes on Linux including the NUL; a longer
/// path would only fail later, at bind or connect time.
const MAX_UNIX_PATH: usize = 107;

/// A checked value of some option.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
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
    /// The address, and its host as written (the name a TLS certificate
    /// is checked against; empty for a unix socket).
    Backend(BackendAddr, String),
}

// Extractors for `Lookup::get`; `None` means the table and the builder
// disagree about an option's kind, reported as an internal error.
impl Value {
    pub(super) fn count(self) -> Option<usize> {
        match self {
            Value::Count(n) => Some(n),
            _ => None,
        }
    }
    pub(super) fn millis(self) -> Option<Duration> {
        match self {
            Value::Millis(ms) => Some(Duration::from_millis(ms)),
            _ => None,
        }
    }
    pub(super) fn boolean(self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub(super) fn ratio(self) -> Option<f64> {
        match self {
            Value::Ratio(r) => Some(r),
            _ => None,
        }
    }
    pub(super) fn level(self) -> Option<LevelFilter> {
        match self {
            Value::Level(l) => Some(l),
            _ => None,
        }
    }
    pub(super) fn text(self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    pub(super) fn hash(self) -> Option<[u8; 20]> {
        match self {
            Value::Hash(h) => Some(h),
            _ => None,
        }
    }
    pub(super) fn addrs(self) -> Option<Vec<SocketAddr>> {
        match self {
            Value::Addrs(a) => Some(a),
            _ => None,
        }
    }
    pub(super) fn addr(self) -> Option<SocketAddr> {
        match self {
            Value::Addr(a) => Some(a),
            _ => None,
        }
    }
    pub(super) fn path(self) -> Option<Option<PathBuf>> {
        match self {
            Value::Path(p) => Some(p),
            _ => None,
        }
    }
    pub(super) fn backend(self) -> Option<BackendAddr> {
        match self {
            Value::Backend(b, _) => Some(b),
            _ => None,
        }
    }
    pub(super) fn backend_host(self) -> Option<String> {
        match self {
            Value::Backend(_, host) => Some(host),
            _ => None,
        }
    }
}

/// Checks `raw` (already unquoted) against `kind`. The error is the message
/// only; the caller adds file, line and key.
pub(super) fn parse_value(kind: OptionKind, raw: &str) -> Result<Value, String> {
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
        OptionKind::BackendAddr => {
            let host = match raw.rsplit_once(':') {
                Some((host, _)) if !raw.starts_with('/') => {
                    host.trim_start_matches('[').trim_end_matches(']')
                }
                _ => "",
            };
            parse_backend_addr(raw).map(|a| Value::Backend(a, host.to_string()))
        }
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
pub(super) fn parse_size(raw: &str) -> Option<usize> {
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
pub(super) fn format_size(n: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (unit, suffix) in UNITS {
        if n != 0 && n % unit == 0 {
            return format!("{}{}", n / unit, suffix);
        }
    }
    n.to_string()
}

pub(super) fn level_name(level: LevelFilter) -> &'static str {
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

pub(super) fn check_unix_path(raw: &str) -> Result<PathBuf, String> {
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
pub(super) fn default_value(spec: &OptionSpec) -> Result<Option<Value>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{fail, parse, with_funnel};

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
