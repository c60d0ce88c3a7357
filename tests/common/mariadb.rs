//! A private MariaDB server per test binary (or per test, for fault tests).
//!
//! Each server gets its own scratch directory `<tmp>/funnel-test-mariadb-XXXXXX`
//! holding `data/` (datadir, with `error.log`), `mysqld.sock`, `mysqld.pid`
//! and `tmp/`; its own TCP port on 127.0.0.1 (picked by binding port 0); and
//! runs `mariadbd --no-defaults` as a child of the test process, so it never
//! touches a system mysqld, /etc/mysql or /var/lib/mysql.
//!
//! A fresh datadir is a copy of a template built once by `mariadb-install-db`
//! under `target/tmp/mariadb-template` (guarded by a flock so concurrent test
//! binaries do not race; rebuilt when the server version or the install
//! options change). Set FUNNEL_TEST_NO_TEMPLATE=1 to run `mariadb-install-db`
//! for every server instead.
//!
//! Accounts (created on first start; all use mysql_native_password):
//! * `root`, empty password, at localhost (socket), 127.0.0.1 and ::1;
//! * `funnel_a` / `pw_a` at localhost and 127.0.0.1, ALL PRIVILEGES ON *.*;
//! * `funnel_b` / `pw_b` at localhost and 127.0.0.1, ALL ON funnel_test.*.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use super::process::{
    file_tail, forget_pid, remove_scratch_dir, scratch_dir, spawn_guarded, sweep_stale_dirs,
    wait_until,
};

/// Database every test may use (create uniquely named tables in it).
pub const TEST_DB: &str = "funnel_test";
/// `funnel_a`: ALL PRIVILEGES ON *.*.
pub const USER_A: &str = "funnel_a";
pub const PASS_A: &str = "pw_a";
/// `funnel_b`: ALL ON funnel_test.* only.
pub const USER_B: &str = "funnel_b";
pub const PASS_B: &str = "pw_b";

/// How long a (re)starting server may take before we give up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown (SIGTERM) may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Options shared by `mariadb-install-db` and `mariadbd`. Part of the template
/// stamp: changing them rebuilds the template.
const COMMON_ARGS: &[&str] = &[
    "--innodb-buffer-pool-size=64M",
    // Small redo log: the datadir is 26 MB instead of 110 MB, copies and
    // crash recovery after a SIGKILL are fast.
    "--innodb-log-file-size=8M",
    // io_uring/libaio are often blocked in containers (seccomp); the test
    // load does not need native AIO.
    "--innodb-use-native-aio=0",
];

/// Options only for `mariadb-install-db`.
const INSTALL_ARGS: &[&str] = &[
    // root gets an empty mysql_native_password (not unix_socket, which the
    // Rust `mysql` crate cannot speak) at localhost, 127.0.0.1, ::1, hostname.
    "--auth-root-authentication-method=normal",
    // No `test` database and no anonymous users.
    "--skip-test-db",
];

/// Options only for `mariadbd` (not part of the template stamp).
const SERVER_ARGS: &[&str] = &[
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--skip-log-bin",
    "--max-connections=5000",
    "--max-allowed-packet=64M",
    // Tests open and drop many half-finished connections from 127.0.0.1; the
    // default (100) would get the host blocked.
    "--max-connect-errors=1000000000",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    // Durable against a mariadbd crash (what fault tests do), not against an
    // OS crash (which would take the test run down anyway). Faster commits.
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--performance-schema=OFF",
    "--loose-feedback=OFF",
];

/// Bump to force a template rebuild when the layout changes.
const TEMPLATE_REV: u32 = 1;

/// A running (or stopped, for fault tests) private MariaDB server.
///
/// The shared per-binary instance comes from [`mariadb()`]; a test that kills
/// or restarts the server should own one via [`MariaDb::new()`] instead, so it
/// does not disturb other tests of the same binary (libtest runs them in
/// parallel). Dropping an owned instance kills the server and deletes its
/// directory; the shared one is cleaned by the exit hook.
pub struct MariaDb {
    /// TCP port on 127.0.0.1 (fixed for the life of the instance, restarts included).
    pub port: u16,
    /// Unix socket path.
    pub socket: PathBuf,
    /// The datadir (`<dir>/data`).
    pub datadir: PathBuf,
    /// Scratch directory holding everything of this server.
    pub dir: PathBuf,
    /// `<datadir>/error.log`.
    pub error_log: PathBuf,
    /// Output of `mariadbd --version`.
    pub version: String,
    bins: &'static Bins,
    child: Mutex<Option<Child>>,
    /// Extra `mariadbd` options of this server (see [`MariaDb::with_args`]).
    extra_args: Vec<OsString>,
}

/// The shared server of this test binary, started on first use.
pub fn mariadb() -> &'static MariaDb {
    static SHARED: OnceLock<Result<MariaDb, String>> = OnceLock::new();
    match SHARED.get_or_init(MariaDb::try_new) {
        Ok(db) => db,
        Err(e) => panic!("{e}"),
    }
}

/// mysql-crate URL of root on the shared server (TCP, no password).
pub fn root_url() -> String {
    mariadb().root_url()
}

/// mysql-crate URL for `user`/`pw` at 127.0.0.1:`port`, database funnel_test.
/// `prefer_socket=false` matters: by default the crate asks a loopback server
/// for `@@socket` and silently reconnects over that unix socket, which would
/// bypass funnel.
pub fn url(user: &str, pw: &str, port: u16) -> String {
    format!(
        "mysql://{}:{}@127.0.0.1:{port}/{TEST_DB}?prefer_socket=false&tcp_connect_timeout_ms=10000",
        pct(user),
        pct(pw)
    )
}

/// Same as [`url`] as `mysql::Opts`, plus 60 s read/write timeouts so a hung
/// server or proxy fails the test instead of hanging it. Adjust with
/// `mysql::OptsBuilder::from_opts(opts(..))`.
pub fn opts(user: &str, pw: &str, port: u16) -> mysql::Opts {
    mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pw))
        .db_name(Some(TEST_DB))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(10)))
        .read_timeout(Some(Duration::from_secs(60)))
        .write_timeout(Some(Duration::from_secs(60)))
        .into()
}

/// A direct (no funnel) TCP connection to the shared server.
pub fn mysql_direct(user: &str, pw: &str) -> mysql::Conn {
    mariadb().conn(user, pw)
}

/// Runs SQL (may be several statements) as root on the shared server.
pub fn admin_sql(sql: &str) {
    mariadb().admin_sql(sql)
}

/// A MySQL account of a test's own on the shared server, named
/// `<prefix>_<unique>` (ALL ON *.*, from 127.0.0.1, mysql_native_password),
/// so that the test can tell its connections apart: (user, password).
pub fn private_account(prefix: &str) -> (String, String) {
    let user = super::unique_name(prefix);
    let pw = format!("pw-{user}");
    admin_sql(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED VIA mysql_native_password \
           USING PASSWORD('{pw}')"
    ));
    admin_sql(&format!(
        "GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1'"
    ));
    (user, pw)
}

/// Path of the `mariadb` command-line client; panics with install hints.
pub fn mariadb_client() -> PathBuf {
    find_program("FUNNEL_MARIADB_CLIENT", &["mariadb", "mysql"])
        .unwrap_or_else(|| panic!("{}", missing("the `mariadb` client")))
}

impl MariaDb {
    /// Starts a new private server (panics on failure).
    #[allow(clippy::new_without_default)]
    pub fn new() -> MariaDb {
        Self::try_new().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a new private server.
    pub fn try_new() -> Result<MariaDb, String> {
        Self::try_new_with(Vec::new())
    }

    /// Starts a new private server with extra `mariadbd` options (e.g.
    /// `--ssl-cert=...`; kept across restarts). Panics on failure.
    pub fn with_args(args: &[String]) -> MariaDb {
        Self::try_new_with(args.iter().map(OsString::from).collect())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_new_with(extra_args: Vec<OsString>) -> Result<MariaDb, String> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale_dirs);

        let bins = bins()?;
        let t0 = Instant::now();
        let dir = scratch_dir("mariadb");
        let datadir = dir.join("data");
        // From here on, an early return drops `db`, which deletes `dir`.
        let mut db = MariaDb {
            port: 0,
            socket: dir.join("mysqld.sock"),
            error_log: datadir.join("error.log"),
            datadir,
            dir,
            version: bins.version.clone(),
            bins,
            child: Mutex::new(None),
            extra_args,
        };
        let prep = prepare_datadir(bins, &db.datadir)?;
        let t_prep = t0.elapsed();
        fs::create_dir_all(db.dir.join("tmp")).map_err(|e| format!("mkdir tmp: {e}"))?;

        // The port was free when we probed it, but another process may take it
        // before mariadbd binds; then mariadbd exits and we retry with another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            db.port = super::free_port();
            match db.spawn_and_wait(false) {
                Ok(child) => {
                    *db.child() = Some(child);
                    break;
                }
                Err(e) => {
                    let log = fs::read_to_string(&db.error_log).unwrap_or_default();
                    if attempt >= 5 || !log.contains("Address already in use") {
                        return Err(e);
                    }
                    let _ = fs::remove_file(&db.error_log);
                }
            }
        }
        let t_up = t0.elapsed();
        if let Err(e) = db.try_admin_sql(&setup_sql()) {
            // Drop kills it and removes the directory.
            return Err(format!("account setup on the test server failed: {e}"));
        }
        eprintln!(
            "[harness] {} ready on 127.0.0.1:{} (socket {}) in {} ms: datadir {} in {} ms, \
             server start {} ms, setup {} ms",
            db.version
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            db.port,
            db.socket.display(),
            t0.elapsed().as_millis(),
            prep,
            t_prep.as_millis(),
            (t_up - t_prep).as_millis(),
            (t0.elapsed() - t_up).as_millis(),
        );
        Ok(db)
    }

    /// mysql-crate URL for `user`/`pw` over TCP, database funnel_test.
    pub fn url(&self, user: &str, pw: &str) -> String {
        url(user, pw, self.port)
    }

    /// mysql-crate URL of root over TCP (no password, no default database).
    pub fn root_url(&self) -> String {
        format!(
            "mysql://root@127.0.0.1:{}/?prefer_socket=false&tcp_connect_timeout_ms=10000",
            self.port
        )
    }

    /// `mysql::Opts` for `user`/`pw` over TCP (see the free function [`opts`]).
    pub fn opts(&self, user: &str, pw: &str) -> mysql::Opts {
        opts(user, pw, self.port)
    }

    /// A direct TCP connection (panics on failure).
    pub fn conn(&self, user: &str, pw: &str) -> mysql::Conn {
        mysql::Conn::new(self.opts(user, pw)).unwrap_or_else(|e| {
            panic!(
                "cannot connect to MariaDB at 127.0.0.1:{} as {user}: {e}",
                self.port
            )
        })
    }

    /// A root connection over the unix socket.
    pub fn admin_conn(&self) -> mysql::Conn {
        self.try_admin_conn()
            .unwrap_or_else(|e| panic!("cannot connect to MariaDB as root: {e}"))
    }

    fn try_admin_conn(&self) -> Result<mysql::Conn, mysql::Error> {
        let opts = mysql::OptsBuilder::new()
            .socket(Some(self.socket.to_string_lossy()))
            .user(Some("root"))
            .read_timeout(Some(Duration::from_secs(120)))
            .write_timeout(Some(Duration::from_secs(120)));
        mysql::Conn::new(opts)
    }

    /// Runs SQL (may be several statements) as root over the unix socket.
    pub fn admin_sql(&self, sql: &str) {
        if let Err(e) = self.try_admin_sql(sql) {
            panic!("admin SQL failed: {e}\nSQL: {sql}");
        }
    }

    fn try_admin_sql(&self, sql: &str) -> Result<(), mysql::Error> {
        self.try_admin_conn()?.query_drop(sql)
    }

    /// Runs a query as root and returns all rows.
    pub fn admin_query<T: mysql::prelude::FromRow>(&self, sql: &str) -> Vec<T> {
        self.admin_conn()
            .query(sql)
            .unwrap_or_else(|e| panic!("admin query failed: {e}\nSQL: {sql}"))
    }

    /// Number of server connections currently logged in as `user` (handy to
    /// check how many backend connections funnel holds).
    pub fn connections_of(&self, user: &str) -> usize {
        let n: Vec<u64> = self.admin_query(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{}'",
            user.replace('\'', "''")
        ));
        n[0] as usize
    }

    /// Thread ids of `user`'s connections, in order (only those whose
    /// statement starts with `info_prefix`, if given).
    pub fn threads_of(&self, user: &str, info_prefix: Option<&str>) -> Vec<u64> {
        let mut sql = format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{}'",
            user.replace('\'', "''")
        );
        if let Some(p) = info_prefix {
            sql.push_str(&format!(" AND INFO LIKE '{p}%'"));
        }
        sql.push_str(" ORDER BY ID");
        self.admin_query(&sql)
    }

    /// Polls until `user` has exactly `n` connections; panics with the count
    /// seen last otherwise.
    pub fn wait_connections(&self, user: &str, n: usize, timeout: Duration) {
        self.wait_connections_until(user, &format!("{n}"), |c| c == n, timeout);
    }

    /// Polls until `user` has at most `n` connections (a funnel closed the
    /// extra ones); panics with the count seen last otherwise.
    pub fn wait_connections_at_most(&self, user: &str, n: usize, timeout: Duration) {
        self.wait_connections_until(user, &format!("at most {n}"), |c| c <= n, timeout);
    }

    fn wait_connections_until(
        &self,
        user: &str,
        expected: &str,
        ok: impl Fn(usize) -> bool,
        timeout: Duration,
    ) {
        let mut last = 0;
        let done = wait_until(timeout, || {
            last = self.connections_of(user);
            ok(last)
        });
        assert!(
            done,
            "{user} has {last} connections on the server, expected {expected} (waited {timeout:?})"
        );
    }

    /// A `mariadb` CLI command connected as root over the socket (add `-e SQL`).
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(mariadb_client());
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .arg("--user=root");
        cmd
    }

    /// Last 8 KiB of the server's error log.
    pub fn error_log_tail(&self) -> String {
        file_tail(&self.error_log, 8192)
    }

    /// Pid of the running server, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(|c| c.id())
    }

    /// True if the server process is alive (it may be SIGSTOPped).
    pub fn is_running(&self) -> bool {
        let mut guard = self.child();
        match guard.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                if let Some(c) = guard.take() {
                    forget_pid(c.id());
                }
                false
            }
            None => false,
        }
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP`/`SIGCONT` to freeze the server) and
    /// returns at once. Panics if the server is not running.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid().expect("MariaDB server is not running");
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }

    /// Waits up to `timeout` for the server to exit (after a signal or
    /// `SHUTDOWN`) and reaps it; None if it is still running.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut guard = self.child();
        let child = guard.as_mut()?;
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            if let Some(c) = guard.take() {
                forget_pid(c.id());
            }
        }
        status
    }

    /// Crash the server: SIGKILL and reap it. No-op if it is not running.
    pub fn kill(&self) {
        self.stop_with(libc::SIGKILL, STOP_TIMEOUT);
    }

    /// Graceful shutdown: SIGTERM, wait (SIGKILL after 60 s). No-op if stopped.
    pub fn stop(&self) {
        self.stop_with(libc::SIGTERM, STOP_TIMEOUT);
    }

    /// Sends `sig` and waits up to `timeout` for the exit, then SIGKILLs.
    pub fn stop_with(&self, sig: i32, timeout: Duration) {
        let mut guard = self.child();
        let Some(mut child) = guard.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe {
            libc::kill(pid, sig);
            // A SIGSTOPped server would never act on SIGTERM.
            libc::kill(pid, libc::SIGCONT);
        }
        let exited = wait_until(timeout, || !matches!(child.try_wait(), Ok(None)));
        if !exited {
            eprintln!("[harness] mariadbd {pid} ignored signal {sig} for {timeout:?}; SIGKILL");
            let _ = child.kill();
        }
        forget_pid(child.id());
        let _ = child.wait();
    }

    /// Starts the server again on the same datadir, port and socket (after
    /// [`kill`](Self::kill)/[`stop`](Self::stop)); waits until it accepts
    /// connections. No-op if it is running. Panics on failure.
    pub fn start(&self) {
        if self.is_running() {
            return;
        }
        let child = self
            .spawn_and_wait(true)
            .unwrap_or_else(|e| panic!("restarting MariaDB failed: {e}"));
        *self.child() = Some(child);
    }

    /// `stop()` then `start()`.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn server_command(&self, restart: bool) -> Command {
        let mut cmd = Command::new(&self.bins.mariadbd);
        cmd.arg("--no-defaults");
        let mut args: Vec<OsString> = vec![
            arg("--datadir=", &self.datadir),
            format!("--port={}", self.port).into(),
            arg("--socket=", &self.socket),
            arg("--pid-file=", &self.dir.join("mysqld.pid")),
            arg("--tmpdir=", &self.dir.join("tmp")),
            arg("--log-error=", &self.error_log),
        ];
        args.extend(COMMON_ARGS.iter().map(OsString::from));
        args.extend(SERVER_ARGS.iter().map(OsString::from));
        args.extend(self.extra_args.iter().cloned());
        if restart {
            // The port may linger for a moment after a kill; keep retrying the
            // bind instead of failing.
            args.push("--port-open-timeout=30".into());
        }
        if is_root() {
            // mariadbd refuses to run as root unless told so. Running as the
            // same user also keeps the parent-death signal (a uid change
            // would clear it).
            args.push("--user=root".into());
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    fn spawn_and_wait(&self, restart: bool) -> Result<Child, String> {
        // A socket left by a SIGKILLed server is removed by mariadbd itself,
        // but we must not mistake it for a live one while waiting.
        if fs::symlink_metadata(&self.socket).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = fs::remove_file(&self.socket);
        }
        let mut child = spawn_guarded(self.server_command(restart))
            .map_err(|e| format!("cannot run {}: {e}", self.bins.mariadbd.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                forget_pid(child.id());
                return Err(format!(
                    "mariadbd (port {}, datadir {}) exited with {status} while starting.\n\
                     --- tail of {} ---\n{}",
                    self.port,
                    self.datadir.display(),
                    self.error_log.display(),
                    self.error_log_tail()
                ));
            }
            if handshake_ok(&self.socket) {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                forget_pid(child.id());
                let _ = child.wait();
                return Err(format!(
                    "mariadbd did not accept connections within {START_TIMEOUT:?}.\n\
                     --- tail of {} ---\n{}",
                    self.error_log.display(),
                    self.error_log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "[harness] test panicked; MariaDB error log ({}):\n{}",
                self.error_log.display(),
                self.error_log_tail()
            );
        }
        remove_scratch_dir(&self.dir);
    }
}

/// True once the server sends its initial handshake (protocol version 10) on
/// the unix socket. The socket is private to this server, so unlike a TCP
/// probe this cannot be fooled by some other process on our port; and
/// mariadbd binds TCP before the socket, so the port is ours as well.
fn handshake_ok(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && buf[4] == 10
}

fn setup_sql() -> String {
    let mut sql = String::from(
        // Drop root@<hostname>: with --skip-name-resolve it only causes a
        // warning at every start.
        "DELETE FROM mysql.global_priv WHERE User = '' \
           OR (User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1'));\n\
         FLUSH PRIVILEGES;\n",
    );
    sql.push_str(&format!("CREATE DATABASE IF NOT EXISTS {TEST_DB};\n"));
    for host in ["localhost", "127.0.0.1"] {
        for (user, pw, grant) in [
            (USER_A, PASS_A, "ALL PRIVILEGES ON *.*".to_string()),
            (USER_B, PASS_B, format!("ALL PRIVILEGES ON {TEST_DB}.*")),
        ] {
            sql.push_str(&format!(
                "CREATE USER IF NOT EXISTS '{user}'@'{host}' \
                   IDENTIFIED VIA mysql_native_password USING PASSWORD('{pw}');\n\
                 GRANT {grant} TO '{user}'@'{host}';\n"
            ));
        }
    }
    sql
}

// ---------------------------------------------------------------------------
// Binaries and datadir preparation.

struct Bins {
    mariadbd: PathBuf,
    install_db: PathBuf,
    version: String,
}

fn bins() -> Result<&'static Bins, String> {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    BINS.get_or_init(|| {
        let mariadbd = find_program("FUNNEL_MARIADBD", &["mariadbd", "mysqld"])
            .ok_or_else(|| missing("`mariadbd` (the MariaDB server)"))?;
        let install_db = find_program(
            "FUNNEL_MARIADB_INSTALL_DB",
            &["mariadb-install-db", "mysql_install_db"],
        )
        .ok_or_else(|| missing("`mariadb-install-db`"))?;
        let out = Command::new(&mariadbd)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {} --version: {e}", mariadbd.display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !version.contains("MariaDB") {
            return Err(format!(
                "{} is not MariaDB ({version:?}); the tests need a MariaDB server. {}",
                mariadbd.display(),
                INSTALL_HINT
            ));
        }
        Ok(Bins {
            mariadbd,
            install_db,
            version,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

const INSTALL_HINT: &str = "Install it with `sudo apt-get install -y mariadb-server mariadb-client` \
     (Debian/Ubuntu), or run `bash scripts/test.sh`, which installs it when run as root. \
     (Paths can be forced with FUNNEL_MARIADBD / FUNNEL_MARIADB_INSTALL_DB / FUNNEL_MARIADB_CLIENT.)";

fn missing(what: &str) -> String {
    format!(
        "{what} not found in $PATH, /usr/sbin, /usr/local/sbin or /usr/local/mysql/bin. \
         The integration tests start a private MariaDB server. {INSTALL_HINT}"
    )
}

fn find_program(env_var: &str, names: &[&str]) -> Option<PathBuf> {
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return executable(&p).then_some(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/sbin",
        "/usr/local/sbin",
        "/usr/bin",
        "/usr/local/mysql/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    names
        .iter()
        .find_map(|name| dirs.iter().map(|d| d.join(name)).find(|p| executable(p)))
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access() on a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fills `datadir` (must not exist) and says how.
fn prepare_datadir(bins: &Bins, datadir: &Path) -> Result<&'static str, String> {
    let no_template = std::env::var_os("FUNNEL_TEST_NO_TEMPLATE").is_some_and(|v| v != "0");
    if no_template {
        install_db(bins, datadir)?;
        return Ok("from mariadb-install-db");
    }
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if fs::create_dir_all(&root).is_err() || !writable(&root) {
        // e.g. another user's target dir: no template, still works.
        install_db(bins, datadir)?;
        return Ok("from mariadb-install-db (target/tmp not writable)");
    }
    let template = root.join("mariadb-template");
    let stamp_file = root.join("mariadb-template.stamp");
    let stamp = format!(
        "rev {TEMPLATE_REV}\n{}\n{:?}\n{:?}\nroot={}\n",
        bins.version,
        COMMON_ARGS,
        INSTALL_ARGS,
        is_root()
    );

    // Readers (copying the template) share the lock; building or rebuilding
    // it takes the lock exclusively, so concurrently running test binaries
    // neither build it twice nor copy a half-built one.
    let lock_path = root.join("mariadb-template.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    let flock = |op: i32| {
        // SAFETY: flock on a file descriptor we own; released when `lock` drops.
        if unsafe { libc::flock(lock.as_raw_fd(), op) } != 0 {
            return Err(format!(
                "flock {}: {}",
                lock_path.display(),
                io::Error::last_os_error()
            ));
        }
        Ok(())
    };
    let fresh = || {
        fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) && template.is_dir()
    };
    let mut how = "copied from template";
    flock(libc::LOCK_SH)?;
    if !fresh() {
        // Not atomic (another process may build in between), hence re-check.
        flock(libc::LOCK_EX)?;
        if !fresh() {
            let _ = fs::remove_file(&stamp_file);
            let _ = fs::remove_dir_all(&template);
            let building = root.join(format!("mariadb-template.new.{}", std::process::id()));
            let _ = fs::remove_dir_all(&building);
            install_db(bins, &building)?;
            fs::rename(&building, &template).map_err(|e| format!("rename template: {e}"))?;
            fs::write(&stamp_file, &stamp).map_err(|e| format!("write template stamp: {e}"))?;
            how = "built template + copied";
        }
    }
    copy_tree(&template, datadir).map_err(|e| {
        format!(
            "copying {} to {}: {e}",
            template.display(),
            datadir.display()
        )
    })?;
    drop(lock);
    Ok(how)
}

fn install_db(bins: &Bins, datadir: &Path) -> Result<(), String> {
    let mut cmd = Command::new(&bins.install_db);
    cmd.arg("--no-defaults").arg(arg("--datadir=", datadir));
    cmd.args(INSTALL_ARGS).args(COMMON_ARGS);
    if is_root() {
        cmd.arg("--user=root");
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bins.install_db.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --datadir={} failed ({}):\n{}\n{}",
            bins.install_db.display(),
            datadir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if ty.is_file() {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

fn arg(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path);
    s
}

/// Percent-encodes a URL userinfo component.
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
