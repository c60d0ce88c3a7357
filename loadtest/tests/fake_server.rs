//! `loadtest --fake-server`: a real client library (the `mysql` crate) logs
//! in and runs each kind of command it supports, straight to the fake
//! server and through the real funnel binary in front of it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

/// A child process killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).expect("log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("dup log"))
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc { child, log }
}

/// Waits until 127.0.0.1:`port` accepts connections.
fn wait_port(p: &mut Proc, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("exited ({st}) before listening:\n{}", p.log());
        }
        assert!(
            Instant::now() < deadline,
            "port {port} never opened:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_fake(dir: &Path) -> (Proc, u16) {
    // A port free a moment ago may be taken by another test's process
    // meanwhile (the probe then reaches that one): the fake server has
    // exited on its failed bind by the time we look again; try another.
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
        cmd.arg("--fake-server").arg(format!("127.0.0.1:{port}"));
        let mut p = spawn(cmd, dir, "fake");
        wait_port(&mut p, port);
        std::thread::sleep(Duration::from_millis(100));
        if matches!(p.child.try_wait(), Ok(None)) {
            return (p, port);
        }
    }
    panic!("the fake server kept losing its port to other processes");
}

/// The funnel binary of this workspace, built if need be (cargo builds only
/// this package's binaries for its tests).
fn funnel_bin() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--quiet", "-p", "funnel", "--bin", "funnel"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build of the funnel");
    assert!(st.success(), "cargo build of the funnel failed");
    let bin = Path::new(env!("CARGO_BIN_EXE_loadtest")).with_file_name("funnel");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

fn start_funnel(dir: &Path, backend_port: u16) -> (Proc, u16) {
    let port = free_port();
    let conf = dir.join("funnel.conf");
    std::fs::write(
        &conf,
        format!(
            "[funnel]\nlisten = 127.0.0.1:{port}\n\
             [backend]\naddress = 127.0.0.1:{backend_port}\n\
             [pool]\nconnections = 2\n\
             [user app]\npassword = app_pw\n"
        ),
    )
    .expect("funnel.conf");
    let mut cmd = Command::new(funnel_bin());
    cmd.arg("--config").arg(&conf).env("RUST_LOG", "info");
    let mut p = spawn(cmd, dir, "funnel");
    wait_port(&mut p, port);
    (p, port)
}

fn connect(port: u16, password: &str) -> Conn {
    let opts = OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some(password))
        .db_name(Some("app"));
    Conn::new(opts).unwrap_or_else(|e| panic!("login on port {port}: {e}"))
}

/// Every command kind the fake server answers, as a client sees it.
fn exercise(c: &mut Conn) {
    let v: Option<String> = c
        .query_first("SELECT c FROM sbtest1 WHERE id = 42")
        .expect("point select");
    assert_eq!(v.map(|v| v.len()), Some(119), "one row, sysbench's c");
    let (one, null, db): (i64, Option<String>, Option<String>) = c
        .query_first("SELECT 1 AS one, NULL, DATABASE()")
        .expect("select")
        .expect("one row");
    assert_eq!((one, null, db.as_deref()), (1, None, Some("app")));

    c.query_drop("UPDATE sbtest1 SET k = k + 1 WHERE id = 42")
        .expect("non-SELECT");
    assert!(
        c.query_iter("UPDATE sbtest1 SET k = 0")
            .expect("non-SELECT")
            .columns()
            .as_ref()
            .is_empty(),
        "a non-SELECT gets an OK, no result set"
    );

    c.ping().expect("COM_PING");

    c.select_db("other").expect("COM_INIT_DB");
    let db: Option<String> = c.query_first("SELECT DATABASE()").expect("select");
    assert_eq!(db.as_deref(), Some("other"));
    c.query_drop("USE third").expect("USE");
    let db: Option<String> = c.query_first("SELECT DATABASE()").expect("select");
    assert_eq!(db.as_deref(), Some("third"));

    c.reset().expect("COM_RESET_CONNECTION");
    let v: Option<i64> = c.query_first("SELECT 7").expect("select after reset");
    assert_eq!(v, Some(7));

    let st = c
        .prep("SELECT c, ? FROM sbtest1 WHERE id = ?")
        .expect("COM_STMT_PREPARE");
    assert_eq!((st.num_params(), st.num_columns()), (2, 2));
    for id in 1..4 {
        let row: Option<(String, String)> = c.exec_first(&st, (5, id)).expect("COM_STMT_EXECUTE");
        let (cv, _) = row.expect("one row");
        assert_eq!(cv.len(), 119);
    }
    c.exec_drop("UPDATE sbtest1 SET k = ? WHERE id = ?", (1, 2))
        .expect("prepared non-SELECT");
    c.close(st).expect("COM_STMT_CLOSE");
    let v: Option<i64> = c.query_first("SELECT 8").expect("select after close");
    assert_eq!(v, Some(8));
}

#[test]
fn a_client_library_runs_every_command_kind_on_the_fake_server() {
    let dir = scratch_dir("fake-direct");
    let (fake, port) = start_fake(&dir);
    // Any password is accepted.
    let mut c = connect(port, "whatever");
    exercise(&mut c);
    drop(c);
    assert!(fake.log().contains("fake server"), "{}", fake.log());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_fake_server_exits_0_on_sigterm_and_sigint() {
    let dir = scratch_dir("fake-signals");
    for sig in ["-TERM", "-INT"] {
        let (mut fake, port) = start_fake(&dir);
        // With a client connected: the loop does not wait for it.
        let _c = connect(port, "x");
        let st = Command::new("kill")
            .arg(sig)
            .arg(fake.child.id().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = fake.child.try_wait().expect("try_wait") {
                break st;
            }
            assert!(Instant::now() < deadline, "still running after kill {sig}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "after kill {sig}: {}", fake.log());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_funnel_serves_clients_from_the_fake_server() {
    let dir = scratch_dir("fake-funnel");
    let (_fake, fake_port) = start_fake(&dir);
    let (funnel, port) = start_funnel(&dir, fake_port);
    // Several clients on the pool's two backend connections, interleaved.
    let mut clients: Vec<Conn> = (0..4).map(|_| connect(port, "app_pw")).collect();
    for c in &mut clients {
        exercise(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let v: Option<i64> = c.query_first(format!("SELECT {i}")).expect("select");
        assert_eq!(v, Some(i as i64));
    }
    drop(clients);
    let log = funnel.log();
    assert!(!log.contains("ERROR") && !log.contains("lost"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
