//! The funnel's stats port (HTTP: `/metrics`, `/stats.json`, `/health`)
//! as the tests read it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An HTTP response: status code, head (status line and headers), body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `METHOD path` (HTTP/1.1) on 127.0.0.1:`port`, read until the server
/// closes; panics on anything that is no UTF-8 HTTP response.
pub fn request(port: u16, method: &str, path: &str) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the stats port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {head:?}"));
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `GET path`: (status, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    let r = request(port, "GET", path);
    (r.status, r.body)
}

/// `GET path`, which must answer 200: its body.
pub fn get_ok(port: u16, path: &str) -> String {
    let (status, body) = get(port, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// `GET path` (200) as JSON.
pub fn json(port: u16, path: &str) -> serde_json::Value {
    let body = get_ok(port, path);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: invalid JSON: {e}\n{body}"))
}

/// A `/metrics` text, parsed.
pub fn parse_metrics(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("/metrics parses")
}

/// The value of a counter, gauge or untyped sample; panics for others.
pub fn sample_value(s: &prometheus_parse::Sample) -> f64 {
    match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{}: not a single value: {other:?}", s.metric),
    }
}
