//! Running under systemd: the sd_notify readiness protocol as the unit
//! (`debian/funnel.service`, `Type=notify`) uses it, journald-friendly log
//! lines, and the unit file and package metadata agreeing with each other.
//!
//! The notify tests start the debug binary the way systemd does: with
//! `$NOTIFY_SOCKET` naming a unix datagram socket the test binds, and read
//! what arrives there.

mod common;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{FunnelConfig, FunnelProcess, PASS_A, USER_A};
use mysql::prelude::Queryable;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The test's end of `$NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next message, or None if nothing comes within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    fn expect(&self, what: &str, timeout: Duration, f: &FunnelProcess) -> String {
        let msg = self
            .recv(timeout)
            .unwrap_or_else(|| panic!("no {what} within {timeout:?}; log:\n{}", f.log()));
        assert!(
            msg.lines().any(|l| l == what),
            "expected {what}, got {msg:?}; log:\n{}",
            f.log()
        );
        msg
    }
}

/// A TCP forwarder from 127.0.0.1:`port` to mysqld, opened on demand.
/// The port is bound (and so reserved) from the start, and the kernel
/// completes the funnel's connections to it, but nothing answers them until
/// `open`: mysqld "reachable" but silent, which must not count as ready.
/// Counts the bytes mysqld sent through it.
struct GatedProxy {
    port: u16,
    listener: std::cell::Cell<Option<TcpListener>>,
    from_server: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl GatedProxy {
    fn new() -> GatedProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy port");
        GatedProxy {
            port: listener.local_addr().unwrap().port(),
            listener: std::cell::Cell::new(Some(listener)),
            from_server: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn open(&self, server_port: u16) {
        let listener = self.listener.take().expect("opened once");
        let from_server = self.from_server.clone();
        let stop = self.stop.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || pump(c2, s2, None));
                let counter = from_server.clone();
                thread::spawn(move || pump(server, client, Some(counter)));
            }
        });
    }
}

impl Drop for GatedProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, counter: Option<Arc<AtomicUsize>>) {
    common::raw::pump(&mut from, &mut to, |b| {
        if let Some(c) = &counter {
            c.fetch_add(b.len(), Ordering::SeqCst);
        }
    });
    let _ = from.shutdown(Shutdown::Read);
}

fn config(backend_port: u16) -> FunnelConfig {
    FunnelConfig::user_a()
        .backend_port(backend_port)
        .backend("connect_timeout_ms = 1000\nreconnect_backoff_min_ms = 50\nreconnect_backoff_max_ms = 200")
        .pool("connections = 2")
        .rust_log("info")
}

#[test]
fn ready_after_listening_and_mysqld_answered_then_reload_and_stop() {
    let db = common::mariadb();
    let notify = NotifySocket::bind();
    let proxy = GatedProxy::new();
    // The builder returns once the client port accepts.
    let mut f = config(proxy.port)
        .builder()
        .env("NOTIFY_SOCKET", &notify.path)
        .start();
    let port = f.port;

    // Listening, but mysqld silent (connections to it accepted by the
    // kernel, never answered; connect_timeout_ms is 1 s): not ready.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    if let Some(msg) = notify.recv(Duration::from_millis(2500)) {
        panic!(
            "{msg:?} sent while no backend had answered; log:\n{}",
            f.log()
        );
    }

    // mysqld reachable: READY=1, and only after mysqld has answered.
    proxy.open(db.port);
    let msg = notify.expect("READY=1", Duration::from_secs(20), &f);
    assert!(
        proxy.from_server.load(Ordering::SeqCst) > 0,
        "READY=1 before mysqld sent anything"
    );
    assert!(msg.lines().any(|l| l.starts_with("STATUS=")), "{msg:?}");
    // Ready means serving: a client is answered at once.
    let t = Instant::now();
    let mut c = f.conn(USER_A, PASS_A);
    let one: Option<i64> = c.query_first("SELECT 1").expect("SELECT 1");
    assert_eq!(one, Some(1));
    assert!(t.elapsed() < Duration::from_secs(5));
    // Sent once only.
    assert_eq!(notify.recv(Duration::from_millis(300)), None);

    // SIGHUP: RELOADING=1 (with MONOTONIC_USEC), the reload, READY=1.
    f.signal(libc::SIGHUP);
    let msg = notify.expect("RELOADING=1", Duration::from_secs(10), &f);
    let usec = msg
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|v| v > 0), "{msg:?}");
    notify.expect("READY=1", Duration::from_secs(10), &f);
    assert!(f.log().contains("configuration reloaded"), "{}", f.log());
    // The client's connection survived the reload.
    let one: Option<i64> = c.query_first("SELECT 1").expect("SELECT 1 after reload");
    assert_eq!(one, Some(1));
    drop(c);

    // SIGTERM: STOPPING=1, then a clean exit.
    f.signal(libc::SIGTERM);
    notify.expect("STOPPING=1", Duration::from_secs(10), &f);
    let status = f.wait_exit(Duration::from_secs(20)).expect("funnel exits");
    assert_eq!(status.code(), Some(0), "{}", f.log());
}

#[test]
fn reload_before_ready_does_not_announce_readiness() {
    let notify = NotifySocket::bind();
    // A backend port that is reserved and never answers.
    let silent = GatedProxy::new();
    let mut f = config(silent.port)
        .builder()
        .env("NOTIFY_SOCKET", &notify.path)
        .start();
    f.signal(libc::SIGHUP);
    assert!(f.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    if let Some(msg) = notify.recv(Duration::from_millis(1000)) {
        panic!("{msg:?} sent before the funnel was ready");
    }
    f.signal(libc::SIGTERM);
    notify.expect("STOPPING=1", Duration::from_secs(10), &f);
    let status = f.wait_exit(Duration::from_secs(20)).expect("funnel exits");
    assert_eq!(status.code(), Some(0), "{}", f.log());
}

/// Runs the funnel with a listen port that is taken, so that it logs its
/// start and an error and exits 1, with stderr on `log` and `journal_stream`
/// as `$JOURNAL_STREAM`; returns what it wrote.
fn run_failing_start(journal_stream: impl FnOnce(&std::fs::File) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let conf = dir.path().join("funnel.conf");
    std::fs::write(&conf, config(common::free_port()).text(port)).unwrap();
    let log_path = dir.path().join("stderr");
    let log = std::fs::File::create(&log_path).unwrap();
    let stream = journal_stream(&log);
    let status = Command::new(common::funnel_bin())
        .arg("--config")
        .arg(&conf)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env("JOURNAL_STREAM", stream)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .expect("run funnel");
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    text
}

fn dev_ino(file: &std::fs::File) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().unwrap();
    (m.dev(), m.ino())
}

#[test]
fn journal_lines_carry_priority_not_timestamp() {
    let text = run_failing_start(|log| {
        let (dev, ino) = dev_ino(log);
        format!("{dev}:{ino}")
    });
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("<6>INFO "), "{text}");
    assert!(first.contains("starting with"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<3>ERROR ") && l.contains("cannot listen")),
        "{text}"
    );
    assert!(
        !text.contains("[20"),
        "timestamp in journal output:\n{text}"
    );

    // Someone else's stream (stderr redirected by a wrapper): timestamps.
    let text = run_failing_start(|log| {
        let (dev, ino) = dev_ino(log);
        format!("{dev}:{}", ino + 1)
    });
    assert!(text.starts_with("[20"), "{text}");
    assert!(!text.contains("<6>"), "{text}");
}

// ---------------------------------------------------------------------------
// The unit file and the package metadata.

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(MANIFEST_DIR).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `Key=value` lines of the unit's [Service] section (all values of a key).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k.trim() == key {
                out.push(v.trim().to_string());
            }
        }
    }
    out
}

fn unit_value(unit: &str, key: &str) -> String {
    let values = unit_values(unit, key);
    assert_eq!(values.len(), 1, "{key}: {values:?}");
    values[0].clone()
}

#[test]
fn unit_file_and_package_metadata_agree() {
    let unit = read("debian/funnel.service");
    let cargo = read("Cargo.toml");
    let postinst = read("debian/postinst");
    let example = read("funnel.conf.example");

    assert_eq!(unit_value(&unit, "Type"), "notify");
    assert_eq!(unit_value(&unit, "NotifyAccess"), "main");
    assert_eq!(unit_value(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    // ExecStart runs the installed binary on the installed configuration.
    let exec = unit_value(&unit, "ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        argv,
        ["/usr/bin/funnel", "--config", "/etc/funnel/funnel.conf"]
    );
    assert!(
        cargo.contains(r#"["target/release/funnel", "usr/bin/", "755"]"#),
        "the binary is not installed as /usr/bin/funnel"
    );
    assert!(cargo.contains(r#"["funnel.conf.example", "etc/funnel/funnel.conf", "640"]"#));
    assert!(cargo.contains(r#"conf-files = ["/etc/funnel/funnel.conf"]"#));
    assert!(cargo.contains(r#"maintainer-scripts = "debian/""#));
    assert!(cargo.contains(r#"unit-name = "funnel""#));
    // The user the unit runs as is the one postinst creates.
    assert_eq!(unit_value(&unit, "User"), "funnel");
    assert_eq!(unit_value(&unit, "Group"), "funnel");
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(postinst.contains("multiplexer\" funnel\n"), "{postinst}");
    assert!(postinst.contains("#DEBHELPER#"), "{postinst}");
    // The unix socket the example suggests lives in the RuntimeDirectory.
    let runtime = unit_value(&unit, "RuntimeDirectory");
    assert!(
        example.contains(&format!("#unix_socket = /run/{runtime}/funnel.sock")),
        "funnel.conf.example's unix_socket is not under /run/{runtime}"
    );
    // One descriptor per client: the limit is above max_client_connections'
    // default plus pools and slack.
    let spec = funnel::config::option_table()
        .iter()
        .find(|s| s.name == "max_client_connections")
        .expect("max_client_connections");
    let max_clients: u64 = spec.default.render().parse().expect("a number");
    let nofile: u64 = unit_value(&unit, "LimitNOFILE").parse().expect("a number");
    assert!(nofile >= max_clients + 1024, "{nofile} vs {max_clients}");
    // Hardening.
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ] {
        assert_eq!(unit_value(&unit, key), value, "{key}");
    }
    // A bad configuration (exit 2) is not restarted in a loop.
    assert_eq!(unit_value(&unit, "RestartPreventExitStatus"), "2");
    // The man pages the package lists are those `funnel --man` writes.
    for page in ["funnel.8", "funnel.conf.5"] {
        assert!(
            cargo.contains(&format!("\"target/man/{page}.gz\"")),
            "{page} not packaged"
        );
        let out = Command::new(common::funnel_bin())
            .args(["--man", page])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stdout.starts_with(b".TH "), "{page}");
    }
    assert!(read("scripts/package.sh").contains("--man funnel.conf.5"));
}

/// systemd's own parser, where installed: no warning at all (it exits 0
/// even for unknown keys and bad values, so stderr is what counts).
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's binary exists: point it at this build.
    let unit = read("debian/funnel.service").replace(
        "/usr/bin/funnel",
        common::funnel_bin().to_str().expect("utf-8 path"),
    );
    let path = dir.path().join("funnel.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}
