//! Running under systemd: the sd_notify readiness protocol as the unit
//! (`debian/funnel.service`, `Type=notify`) uses it, journald-friendly log
//! lines, the unit file and package script agreeing with each other, and
//! the Debian package installed, run as its unit runs it, and purged.
//!
//! The notify tests start the debug binary the way systemd does: with
//! `$NOTIFY_SOCKET` naming a unix datagram socket the test binds, and read
//! what arrives there. The package test needs root (CI runs as root; with
//! `$CI` set, not being able to run fails it).

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

    /// An abstract socket (`@name` in `$NOTIFY_SOCKET`): reachable from a
    /// process of another user, as systemd's /run/systemd/notify is.
    fn bind_abstract(name: &str) -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).expect("name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the notify socket");
        NotifySocket {
            socket,
            path: PathBuf::from(format!("@{name}")),
            _dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn expect(&self, what: &str, timeout: Duration, f: &FunnelProcess) -> String {
        self.expect_with_log(what, timeout, || f.log())
    }

    fn expect_with_log(&self, what: &str, timeout: Duration, log: impl Fn() -> String) -> String {
        let msg = self
            .recv(timeout)
            .unwrap_or_else(|| panic!("no {what} within {timeout:?}; log:\n{}", log()));
        assert!(
            msg.lines().any(|l| l == what),
            "expected {what}, got {msg:?}; log:\n{}",
            log()
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
    let package = read("scripts/package.sh");
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
    // (installed_package_serves_as_the_unit_runs_it checks what dpkg
    // installs; this, that the script still says so where it cannot run.)
    for line in [
        r#"install -m 755 "$binary" "$root/usr/bin/funnel""#,
        r#"install -m 640 funnel.conf.example "$root/etc/funnel/funnel.conf""#,
        r#"echo /etc/funnel/funnel.conf >"$root/DEBIAN/conffiles""#,
        r#"install -m 644 debian/funnel.service "$root/usr/lib/systemd/system/funnel.service""#,
        "for script in postinst prerm postrm; do",
    ] {
        assert!(package.contains(line), "scripts/package.sh lacks {line}");
    }
    // The user the unit runs as is the one postinst creates.
    assert_eq!(unit_value(&unit, "User"), "funnel");
    assert_eq!(unit_value(&unit, "Group"), "funnel");
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(postinst.contains("multiplexer\" funnel\n"), "{postinst}");
    assert!(
        postinst.contains("deb-systemd-helper enable funnel.service"),
        "{postinst}"
    );
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
    assert!(package.contains("for page in funnel.8 funnel.conf.5; do"));
    for page in ["funnel.8", "funnel.conf.5"] {
        let out = Command::new(common::funnel_bin())
            .args(["--man", page])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stdout.starts_with(b".TH "), "{page}");
    }
    assert!(package.contains(r#""$binary" --man "$page""#));
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

// ---------------------------------------------------------------------------
// The package: built by scripts/package.sh, installed with dpkg, the service
// started as the installed unit starts it (systemd is not PID 1 in CI's
// containers), removed and purged.

const INSTALLED_UNIT: &str = "/usr/lib/systemd/system/funnel.service";
const INSTALLED_CONF: &str = "/etc/funnel/funnel.conf";
const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/funnel.service";
const MASK_LINK: &str = "/etc/systemd/system/funnel.service";
const DSH_STATE: &str = "/var/lib/systemd/deb-systemd-helper-enabled/funnel.service.dsh-also";
/// Written before this test installs the package, removed after the
/// purge: a run that died half-way is cleaned up by the next one, and a
/// funnel package installed for real is never touched.
const INSTALLED_MARKER: &str = "/var/tmp/funnel-package-test.installed";

fn output(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `cmd`, panics unless it succeeds; returns its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// dpkg, waiting for its lock while another dpkg or apt holds it.
fn dpkg(args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = output(
            Command::new("dpkg")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return;
        }
        if stderr.contains("lock") && Instant::now() < deadline {
            thread::sleep(Duration::from_secs(1));
            continue;
        }
        panic!(
            "dpkg {args:?}: {}\n{}{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// dpkg's status of the funnel package ("install ok installed",
/// "deinstall ok config-files"); None when none is installed.
fn package_status() -> Option<String> {
    let out = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", "funnel"]));
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !status.ends_with("not-installed")).then_some(status)
}

/// The fields of `getent passwd|group NAME`.
fn getent(db: &str, name: &str) -> Vec<String> {
    run_ok(Command::new("getent").args([db, name]))
        .trim()
        .split(':')
        .map(str::to_string)
        .collect()
}

/// Whether the package test can run here: as root, with the tools it
/// drives. Says so when it cannot, and fails then in CI (scripts/test.sh
/// installs the tools; CI runs as root), so that CI never skips it.
fn package_test_can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut missing: Vec<&str> = [
        "dpkg-deb",
        "setpriv",
        "prlimit",
        "systemd-analyze",
        "adduser",
        "deb-systemd-helper",
    ]
    .into_iter()
    .filter(|tool| {
        !["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).exists())
    })
    .collect();
    if !root {
        missing.insert(0, "root (installing a package)");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "the package test did NOT run: it needs {}",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{why}; CI is set, so this is a failure");
    }
    eprintln!("{why}");
    false
}

/// One package test on the machine at a time (several worktrees' runs).
fn machine_lock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create("/run/lock/funnel-package-test.lock")
        .or_else(|_| std::fs::File::create("/tmp/funnel-package-test.lock"))
        .expect("lock file");
    // SAFETY: flock on a descriptor this function owns.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    file
}

/// Purges a package a previous run of this test left installed, and kills
/// the service it had started if that still runs (the test was killed);
/// refuses to touch a package it did not install.
fn purge_leftover_package() {
    let marker = std::fs::read_to_string(INSTALLED_MARKER).unwrap_or_default();
    if let Some(pid) = marker.lines().nth(1).and_then(|l| l.parse::<i32>().ok()) {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.to_string_lossy().starts_with("/usr/bin/funnel") {
            // SAFETY: kill(2) of the service a previous run started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Some(status) = package_status() {
        assert!(
            Path::new(INSTALLED_MARKER).exists(),
            "a funnel package ({status}) is installed, not by this test \
             (no {INSTALLED_MARKER}): not touching it"
        );
        dpkg(&["--purge", "funnel"]);
    }
    let _ = std::fs::remove_file(INSTALLED_MARKER);
}

/// Cleans up after a failed run: the service process, the runtime
/// directory, the package.
struct InstalledPackage {
    service: Option<std::process::Child>,
    runtime_dir: Option<PathBuf>,
}

impl Drop for InstalledPackage {
    fn drop(&mut self) {
        if let Some(mut child) = self.service.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.runtime_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if thread::panicking() && package_status().is_some() {
            let _ = Command::new("dpkg").args(["--purge", "funnel"]).output();
            let _ = std::fs::remove_file(INSTALLED_MARKER);
        }
    }
}

/// The soft and hard open-files limits of process `pid`.
fn nofile_limits(pid: u32) -> Vec<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace()
        .skip(3)
        .take(2)
        .map(str::to_string)
        .collect()
}

fn mode_uid_gid(path: &str) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn exists_or_link(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// What dpkg installed: files, the conffile's mode and group, the system
/// user, the unit enabled, man pages as `funnel --man` writes them.
fn check_installed_files(funnel_gid: u32) {
    let listed = run_ok(Command::new("dpkg").args(["-L", "funnel"]));
    for path in [
        "/usr/bin/funnel",
        INSTALLED_UNIT,
        INSTALLED_CONF,
        "/usr/share/man/man8/funnel.8.gz",
        "/usr/share/man/man5/funnel.conf.5.gz",
        "/usr/share/doc/funnel/copyright",
        "/usr/share/doc/funnel/changelog.gz",
        "/usr/share/doc/funnel/funnel.conf.example",
    ] {
        assert!(
            listed.lines().any(|l| l == path),
            "{path} not in:\n{listed}"
        );
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    // Every file as packaged (md5sums), the conffile included.
    let verify = run_ok(Command::new("dpkg").args(["--verify", "funnel"]));
    assert_eq!(verify, "", "dpkg --verify funnel");
    let conffiles = run_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "funnel"]));
    assert!(
        conffiles.contains(&format!(" {INSTALLED_CONF} ")),
        "{conffiles:?}"
    );
    assert_eq!(mode_uid_gid(INSTALLED_CONF), (0o640, 0, funnel_gid));
    assert_eq!(mode_uid_gid("/usr/bin/funnel"), (0o755, 0, 0));
    // Enabled (WantedBy=multi-user.target), not started by the package.
    assert_eq!(
        std::fs::canonicalize(WANTS_LINK).expect("the unit is enabled"),
        std::fs::canonicalize(INSTALLED_UNIT).unwrap()
    );
    for (page, gz) in [
        ("funnel.8", "/usr/share/man/man8/funnel.8.gz"),
        ("funnel.conf.5", "/usr/share/man/man5/funnel.conf.5.gz"),
    ] {
        let installed = run_ok(Command::new("zcat").arg(gz));
        let generated = run_ok(Command::new("/usr/bin/funnel").args(["--man", page]));
        assert!(installed.starts_with(".TH "), "{gz}");
        assert_eq!(installed, generated, "{gz}");
    }
}

/// Builds the package from this test run's binary, installs it, checks
/// what dpkg installed, runs the service as the installed unit runs it
/// (user, limits, umask, runtime directory, environment, `$NOTIFY_SOCKET`)
/// against the test's MariaDB through reload and stop, reinstalls over the
/// edited configuration, removes and purges.
#[test]
fn installed_package_serves_as_the_unit_runs_it() {
    if !package_test_can_run() {
        return;
    }
    let _lock = machine_lock();
    purge_leftover_package();
    let db = common::mariadb();

    let out_dir = tempfile::tempdir().unwrap();
    let bin = common::funnel_bin();
    run_ok(
        Command::new("bash")
            .arg(Path::new(MANIFEST_DIR).join("scripts/package.sh"))
            .arg("--binary")
            .arg(&bin)
            .arg("--out")
            .arg(out_dir.path())
            .arg("--fast"),
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = debs[0].to_str().expect("utf-8 path").to_string();

    std::fs::write(INSTALLED_MARKER, &deb).unwrap();
    let mut installed = InstalledPackage {
        service: None,
        runtime_dir: None,
    };
    dpkg(&["-i", &deb]);
    assert_eq!(package_status().as_deref(), Some("install ok installed"));

    // The system user the unit runs as.
    let passwd = getent("passwd", "funnel");
    let (uid, gid): (u32, u32) = (passwd[2].parse().unwrap(), passwd[3].parse().unwrap());
    assert!(uid < 1000, "not a system user: {passwd:?}");
    assert_eq!(getent("group", "funnel")[2], passwd[3], "group funnel");
    assert_eq!(passwd[5], "/nonexistent");
    assert!(passwd[6].ends_with("/nologin"), "{passwd:?}");
    check_installed_files(gid);

    // The installed unit, as systemd reads it.
    let out = output(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(INSTALLED_UNIT),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
    let unit = std::fs::read_to_string(INSTALLED_UNIT).unwrap();
    assert_eq!(unit_value(&unit, "Type"), "notify");
    let user = unit_value(&unit, "User");
    let group = unit_value(&unit, "Group");
    assert_eq!((user.as_str(), group.as_str()), ("funnel", "funnel"));
    // LimitNOFILE, or the hard limit this test has where raising it is not
    // allowed (a container without CAP_SYS_RESOURCE: systemd could not
    // either).
    let unit_nofile: u64 = unit_value(&unit, "LimitNOFILE").parse().unwrap();
    let hard_nofile = nofile_limits(std::process::id())[1]
        .parse()
        .unwrap_or(u64::MAX);
    let can_raise = Command::new("prlimit")
        .arg(format!("--nofile={unit_nofile}:{unit_nofile}"))
        .arg("true")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let nofile = if can_raise {
        unit_nofile
    } else {
        eprintln!(
            "cannot raise the hard limit: LimitNOFILE {unit_nofile} lowered to {hard_nofile}"
        );
        unit_nofile.min(hard_nofile)
    }
    .to_string();
    let umask = unit_value(&unit, "UMask");
    let exec_start = unit_value(&unit, "ExecStart");
    assert!(!exec_start.contains(['"', '\'', '$', '%']), "{exec_start}");
    let argv: Vec<&str> = exec_start.split_whitespace().collect();
    assert_eq!(argv[..2], ["/usr/bin/funnel", "--config"]);
    assert_eq!(argv[2], INSTALLED_CONF);

    // The administrator's configuration: the test's MariaDB, and the unix
    // socket in the unit's RuntimeDirectory. The handoff socket is the
    // test's own, so that nothing else ever meets this funnel there.
    let port = common::free_port();
    let runtime_dir = PathBuf::from("/run").join(unit_value(&unit, "RuntimeDirectory"));
    let unix_socket = runtime_dir.join("funnel.sock");
    let conf = config(db.port)
        .funnel(&format!(
            "unix_socket = {}\nhandoff_socket = @funnel-package-test:{port}",
            unix_socket.display()
        ))
        .text(port);
    std::fs::write(INSTALLED_CONF, &conf).unwrap();

    // What systemd does before ExecStart: the runtime directory, owned by
    // User/Group with RuntimeDirectoryMode.
    let _ = std::fs::remove_dir_all(&runtime_dir);
    installed.runtime_dir = Some(runtime_dir.clone());
    let dir_mode = u32::from_str_radix(&unit_value(&unit, "RuntimeDirectoryMode"), 8).unwrap();
    std::fs::create_dir(&runtime_dir).unwrap();
    std::os::unix::fs::chown(&runtime_dir, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(
        &runtime_dir,
        std::os::unix::fs::PermissionsExt::from_mode(dir_mode),
    )
    .unwrap();

    // ExecStart, run as systemd runs it: the limit, the user with its
    // groups, no capabilities, no new privileges, the umask, systemd's
    // environment and nothing else. Each wrapper execs the next, so the
    // child is the funnel itself (NotifyAccess=main).
    let notify = NotifySocket::bind_abstract(&format!("funnel-package-test-{port}"));
    let log_path = out_dir.path().join("service.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(unit_value(&unit, "NoNewPrivileges"), "yes");
    assert_eq!(unit_value(&unit, "CapabilityBoundingSet"), "");
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}:{nofile}"))
        .args([
            "setpriv",
            "--reuid",
            &user,
            "--regid",
            &group,
            "--init-groups",
        ])
        .args(["--no-new-privs", "--bounding-set=-all", "--inh-caps=-all"])
        .args(["sh", "-c"])
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .args(&argv)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin")
        .env("LANG", "C.UTF-8")
        .env("USER", &user)
        .env("LOGNAME", &user)
        .env("HOME", &passwd[5])
        .env("SHELL", &passwd[6])
        .env("INVOCATION_ID", format!("{:032x}", std::process::id()))
        .env("RUNTIME_DIRECTORY", &runtime_dir)
        .env("NOTIFY_SOCKET", &notify.path)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    let child = cmd.spawn().expect("start the service");
    let pid = child.id();
    installed.service = Some(child);
    std::fs::write(INSTALLED_MARKER, format!("{deb}\n{pid}\n")).unwrap();

    // READY=1, unless the service exits first.
    let ready_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(msg) = notify.recv(Duration::from_millis(200)) {
            assert!(
                msg.lines().any(|l| l == "READY=1"),
                "{msg:?}; log:\n{}",
                log()
            );
            break;
        }
        let child = installed.service.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the service exited ({status}) before READY=1; log:\n{}",
                log()
            );
        }
        assert!(
            Instant::now() < ready_deadline,
            "no READY=1 within 30 s; log:\n{}",
            log()
        );
    }
    // The main process is the installed funnel, as the unit's user, with
    // the unit's limit.
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        Path::new("/usr/bin/funnel")
    );
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| -> Vec<String> {
        let line = proc_status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(ids("Uid:"), vec![uid.to_string(); 4], "{proc_status}");
    assert_eq!(ids("Gid:"), vec![gid.to_string(); 4], "{proc_status}");
    assert_eq!(ids("CapBnd:"), ["0000000000000000"], "{proc_status}");
    assert_eq!(ids("NoNewPrivs:"), ["1"], "{proc_status}");
    assert_eq!(nofile_limits(pid), [nofile.as_str(); 2]);

    // Served over TCP and over the unix socket (connectable by everyone:
    // UMask 0000).
    let mut tcp = mysql::Conn::new(common::opts(USER_A, PASS_A, port))
        .unwrap_or_else(|e| panic!("connect over TCP: {e}\n{}", log()));
    let who: Option<String> = tcp.query_first("SELECT CURRENT_USER()").unwrap();
    assert!(who.is_some_and(|w| w.starts_with(USER_A)));
    let socket_mode = mode_uid_gid(unix_socket.to_str().unwrap());
    assert_eq!((socket_mode.0 & 0o777, socket_mode.1), (0o777, uid));
    let mut local = mysql::Conn::new(
        mysql::OptsBuilder::new()
            .socket(Some(unix_socket.to_str().unwrap()))
            .user(Some(USER_A))
            .pass(Some(PASS_A))
            .db_name(Some(common::TEST_DB)),
    )
    .unwrap_or_else(|e| panic!("connect over {}: {e}\n{}", unix_socket.display(), log()));
    let one: Option<i64> = local.query_first("SELECT 1").unwrap();
    assert_eq!(one, Some(1));
    drop(local);

    // ExecReload, as the unit says: RELOADING=1, then READY=1.
    let exec_reload = unit_value(&unit, "ExecReload").replace("$MAINPID", &pid.to_string());
    let reload: Vec<&str> = exec_reload.split_whitespace().collect();
    run_ok(Command::new(reload[0]).args(&reload[1..]));
    notify.expect_with_log("RELOADING=1", Duration::from_secs(10), log);
    notify.expect_with_log("READY=1", Duration::from_secs(10), log);
    assert!(log().contains("configuration reloaded"), "{}", log());
    let one: Option<i64> = tcp.query_first("SELECT 1").expect("SELECT 1 after reload");
    assert_eq!(one, Some(1));
    drop(tcp);

    // systemctl stop: SIGTERM to the main process (KillMode=mixed), an exit
    // within TimeoutStopSec.
    assert_eq!(unit_value(&unit, "KillMode"), "mixed");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    notify.expect_with_log("STOPPING=1", Duration::from_secs(10), log);
    let stop_timeout: u64 = unit_value(&unit, "TimeoutStopSec").parse().unwrap();
    let mut child = installed.service.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(stop_timeout);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit; log:\n{}", log());
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", log());
    std::fs::remove_dir_all(&runtime_dir).unwrap();
    installed.runtime_dir = None;

    // Reinstalling (an upgrade's path) keeps the administrator's
    // configuration, its mode and group.
    dpkg(&["-i", &deb]);
    assert_eq!(std::fs::read_to_string(INSTALLED_CONF).unwrap(), conf);
    assert_eq!(mode_uid_gid(INSTALLED_CONF), (0o640, 0, gid));

    // Removal: the files go, the configuration stays, the unit is masked
    // (its enablement remembered for a reinstallation).
    dpkg(&["-r", "funnel"]);
    assert_eq!(
        package_status().as_deref(),
        Some("deinstall ok config-files")
    );
    assert!(!Path::new("/usr/bin/funnel").exists());
    assert!(!Path::new(INSTALLED_UNIT).exists());
    assert_eq!(std::fs::read_to_string(INSTALLED_CONF).unwrap(), conf);
    assert_eq!(
        std::fs::read_link(MASK_LINK).expect("masked"),
        Path::new("/dev/null")
    );

    // Purge: nothing left but the system user (Debian keeps those: files
    // it owns may remain).
    dpkg(&["--purge", "funnel"]);
    assert_eq!(package_status(), None);
    for path in ["/etc/funnel", WANTS_LINK, MASK_LINK, DSH_STATE] {
        assert!(!exists_or_link(path), "{path} left after purge");
    }
    assert_eq!(getent("passwd", "funnel")[2], uid.to_string());
    std::fs::remove_file(INSTALLED_MARKER).unwrap();
}
