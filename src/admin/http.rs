//! The stats port: a tiny HTTP/1.1 server (one request per connection).
//!
//! * `GET /metrics`: Prometheus text exposition;
//! * `GET /stats.json`: everything, as JSON (`?detail=0` leaves out the
//!   per-connection and per-query-shape lists);
//! * `GET /health`: 200 while every pool that counts (`health_pools`, else
//!   those with clients) has a backend connection up and its backlog is
//!   below `health_backlog_ratio` of `backlog_size`, else 503; the body is
//!   one line saying why, naming pools and servers in trouble that do not
//!   count; `?pool=USER` and `?server=NAME` ask about one of them;
//! * `GET /`: a live page plotting backlog depth and latency percentiles.
//!
//! HEAD is accepted wherever GET is.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use log::debug;

use super::SNAPSHOT_TIMEOUT;
use crate::control::ControlHandle;

/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// A silent connection holds a slot this long at most.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The same for a reserved connection (`super::RESERVED_HTTP_CONNECTIONS`).
pub const RESERVED_READ_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

const PAGE: &str = include_str!("live.html");

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub allow: bool,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        401 => "Unauthorized",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn text(status: u16, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    Response {
        status,
        content_type: TEXT,
        body,
        allow: false,
    }
}

fn write_response(stream: &mut TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if r.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    if r.status == 401 {
        out.push_str("WWW-Authenticate: Bearer realm=\"funnel stats\"\r\n");
    }
    if r.status == 429 {
        out.push_str("Retry-After: 1\r\n");
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())?;
    if !head_only {
        stream.write_all(r.body.as_bytes())?;
    }
    stream.flush()
}

/// Over the connection limit: 429, which a load balancer does not take
/// for "unhealthy" the way it takes 503.
pub fn refuse_busy(mut stream: TcpStream) {
    let _ = write_response(&mut stream, &busy(), false);
}

fn busy() -> Response {
    text(
        429,
        "too many concurrent requests to the stats port (or from this address); try again",
    )
}

/// Reads the request head (up to the blank line), within READ_TIMEOUT in
/// all (a client trickling bytes cannot hold a connection slot for long).
fn read_head(stream: &mut TcpStream, timeout: Duration) -> Result<String, Response> {
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(text(408, "request not received in time"));
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            break;
        }
        if buf.len() > MAX_HEAD {
            return Err(text(431, "request head too large"));
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                // A client that sent only "\n"-terminated lines and closed.
                if buf.is_empty() {
                    return Err(text(400, "empty request"));
                }
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(text(408, "request not received in time"));
            }
            Err(_) => return Err(text(400, "cannot read the request")),
        }
    }
    String::from_utf8(buf).map_err(|_| text(400, "request head is not UTF-8"))
}

/// Serve one request. A `reserved` connection (over the limits) is served
/// `/health` only, and gets less time to send its request.
/// With a `token` (`stats_token`), everything but `/health` and the live
/// page's HTML needs `Authorization: Bearer <token>`; `/health` without it
/// says only OK or unhealthy.
pub fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    control: &ControlHandle,
    reserved: bool,
    token: &str,
) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let timeout = if reserved {
        RESERVED_READ_TIMEOUT
    } else {
        READ_TIMEOUT
    };
    let (response, head_only) = match read_head(&mut stream, timeout) {
        Ok(head) => {
            let line = head.lines().next().unwrap_or("");
            let mut parts = line.split_whitespace();
            let (method, target, version) = (parts.next(), parts.next(), parts.next());
            match (method, target, version) {
                (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => {
                    let head_only = m == "HEAD";
                    let health = matches!(
                        t.split_once('?').map_or(t, |(p, _)| p),
                        "/health" | "/healthz"
                    );
                    let authorized = token.is_empty() || bearer_matches(&head, token);
                    let page = matches!(t, "/" | "/index.html");
                    let r = if reserved && !health {
                        busy()
                    } else if !authorized && !health && !page {
                        text(
                            401,
                            "this stats port needs Authorization: Bearer <stats_token>",
                        )
                    } else if m == "GET" || m == "HEAD" {
                        let r = route(t, control);
                        if authorized || !health {
                            r
                        } else if r.status == 200 {
                            text(200, "OK")
                        } else {
                            text(r.status, "unhealthy")
                        }
                    } else {
                        let mut r = text(405, "only GET and HEAD are supported");
                        r.allow = true;
                        r
                    };
                    (r, head_only)
                }
                _ => (text(400, "malformed request line"), false),
            }
        }
        Err(r) => (r, false),
    };
    debug!("stats: {peer}: {}", response.status);
    let _ = write_response(&mut stream, &response, head_only);
}

/// Whether the request head carries `Authorization: Bearer <token>`
/// (compared in constant time).
fn bearer_matches(head: &str, token: &str) -> bool {
    let given = head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let (scheme, cred) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| cred.trim())
    });
    let Some(given) = given else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &x) in b.iter().enumerate() {
        diff |= usize::from(x ^ a.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// The answer for a GET of `target` (path and query).
pub fn route(target: &str, control: &ControlHandle) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    let detail = match path {
        "/metrics" | "/health" | "/healthz" => false,
        "/stats.json" => !matches!(param("detail"), Some("0" | "false" | "no")),
        "/" | "/index.html" => {
            return Response {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: PAGE.to_string(),
                allow: false,
            }
        }
        _ => {
            return text(
                404,
                "not found; try /metrics, /stats.json, /health or / (live page)",
            )
        }
    };
    let Some(snapshot) = control.snapshot(detail, SNAPSHOT_TIMEOUT) else {
        return text(
            503,
            "the funnel's event loop did not answer (shutting down or overloaded)",
        );
    };
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: super::metrics::render(&snapshot),
            allow: false,
        },
        "/stats.json" => Response {
            status: 200,
            content_type: "application/json",
            body: super::json::stats_json(&snapshot, detail),
            allow: false,
        },
        _ => {
            let of = match (param("pool"), param("server")) {
                (Some(pool), _) => super::HealthOf::Pool(pool),
                (None, Some(server)) => super::HealthOf::Server(server),
                (None, None) => super::HealthOf::Host,
            };
            match super::health_of(&snapshot, of) {
                Ok(msg) => text(200, msg),
                Err(reason) => text(503, reason),
            }
        }
    }
}
