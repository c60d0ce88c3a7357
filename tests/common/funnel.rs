//! Running the real `funnel` binary in end-to-end tests.
//!
//! ```ignore
//! let port = common::free_port();
//! let db = common::mariadb();
//! let cfg = format!("listen = \"127.0.0.1:{port}\"\nbackend_port = {}\n", db.port);
//! let f = common::FunnelProcess::start(&cfg, port);
//! let mut c = f.conn(common::USER_A, common::PASS_A);
//! ```
//!
//! The config text may contain `@DIR@`, replaced by the process's private
//! scratch directory (for sockets, pid files, ...). funnel's stdout+stderr go
//! to `<dir>/funnel.log`, printed when the owning test panics or when funnel
//! died on its own. Drop SIGKILLs the process and deletes the directory.

use std::ffi::OsString;
use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::process::{
    file_tail, forget_pid, remove_scratch_dir, scratch_dir, spawn_guarded, wait_until,
};

/// The funnel binary cargo built for this test run.
pub fn funnel_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_funnel"))
}

/// Placeholder in config text for the process's scratch directory.
pub const DIR_PLACEHOLDER: &str = "@DIR@";

/// A running `funnel --config <file>` child process.
pub struct FunnelProcess {
    /// Port on 127.0.0.1 that was awaited (0 if none).
    pub port: u16,
    /// Private scratch directory (also the process's working directory).
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// Exit status if the process was reaped.
    status: Option<ExitStatus>,
}

/// Options for starting funnel; see [`FunnelProcess::builder`].
pub struct FunnelBuilder {
    config: String,
    port: Option<u16>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    rust_log: String,
    ready_timeout: Duration,
    nofile: Option<(u64, u64)>,
}

impl FunnelBuilder {
    /// Wait until 127.0.0.1:`port` accepts TCP connections.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// Extra command-line argument (after `--config <file>`).
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
    /// Extra environment variable.
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }
    /// RUST_LOG for the process (default: $RUST_LOG, else "debug").
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.to_string();
        self
    }
    /// Start the process with this RLIMIT_NOFILE (soft, hard).
    pub fn nofile_limit(mut self, soft: u64, hard: u64) -> Self {
        self.nofile = Some((soft, hard));
        self
    }
    /// How long to wait for the port (default 30 s).
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.ready_timeout = d;
        self
    }

    fn spawn(self) -> (FunnelProcess, Option<u16>, Duration) {
        let dir = scratch_dir("funnel");
        let config_path = dir.join("funnel.conf");
        let log_path = dir.join("funnel.log");
        let mut proc = FunnelProcess {
            port: self.port.unwrap_or(0),
            dir: dir.clone(),
            config_path: config_path.clone(),
            log_path: log_path.clone(),
            child: None,
            status: None,
        };
        proc.write_config(&self.config);
        let log = fs::File::create(&log_path).expect("cannot create funnel.log");
        let mut cmd = Command::new(funnel_bin());
        cmd.arg("--config")
            .arg(&config_path)
            .args(&self.args)
            .current_dir(&dir)
            .env("RUST_LOG", &self.rust_log)
            .env("RUST_BACKTRACE", "1")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        if let Some((soft, hard)) = self.nofile {
            use std::os::unix::process::CommandExt;
            let r = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and only reads `r`.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = spawn_guarded(cmd)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", funnel_bin().display()));
        proc.child = Some(child);
        (proc, self.port, self.ready_timeout)
    }

    /// Starts funnel and waits for its port; Err (with the log) if it exits
    /// first or the port does not open in time (then it is killed).
    pub fn try_start(self) -> Result<FunnelProcess, String> {
        let (mut proc, port, timeout) = self.spawn();
        let Some(port) = port else {
            return Ok(proc);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = proc.try_status() {
                return Err(format!(
                    "funnel exited with {status} before listening on port {port}.\n{}",
                    proc.log_report()
                ));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Someone else might own the port: make sure funnel is alive.
                if let Some(status) = proc.try_status() {
                    return Err(format!(
                        "funnel exited with {status}, port {port} belongs to someone else.\n{}",
                        proc.log_report()
                    ));
                }
                return Ok(proc);
            }
            if Instant::now() >= deadline {
                proc.kill();
                return Err(format!(
                    "funnel did not listen on 127.0.0.1:{port} within {timeout:?}.\n{}",
                    proc.log_report()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Like [`try_start`](Self::try_start) but panics on failure.
    pub fn start(self) -> FunnelProcess {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs funnel and waits for it to exit on its own (e.g. a config error):
    /// returns its exit status (None = still running after `timeout`, then
    /// killed) and its log.
    pub fn run_to_exit(self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let (mut proc, _, _) = self.spawn();
        let status = proc.wait_exit(timeout);
        if status.is_none() {
            proc.kill();
        }
        (status, proc.log())
    }
}

impl FunnelProcess {
    /// Starts funnel with `config` and waits until 127.0.0.1:`port` accepts.
    pub fn start(config: &str, port: u16) -> FunnelProcess {
        Self::builder(config).port(port).start()
    }

    /// For more options (args, env, RUST_LOG, not waiting for a port).
    pub fn builder(config: &str) -> FunnelBuilder {
        FunnelBuilder {
            config: with_test_lines(config),
            port: None,
            args: Vec::new(),
            envs: Vec::new(),
            rust_log: std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
            ready_timeout: Duration::from_secs(30),
            nofile: None,
        }
    }

    /// mysql-crate URL for connecting through funnel (database funnel_test).
    pub fn url(&self, user: &str, pw: &str) -> String {
        super::url(user, pw, self.port)
    }

    /// `mysql::Opts` for connecting through funnel.
    pub fn opts(&self, user: &str, pw: &str) -> mysql::Opts {
        super::opts(user, pw, self.port)
    }

    /// A client connection through funnel (panics with funnel's log on error).
    pub fn conn(&self, user: &str, pw: &str) -> mysql::Conn {
        self.try_conn(user, pw).unwrap_or_else(|e| {
            panic!(
                "cannot connect through funnel (port {}) as {user}: {e}\n{}",
                self.port,
                self.log_report()
            )
        })
    }

    /// [`conn`](Self::conn) after a first command through the funnel:
    /// `USE funnel_test`.
    pub fn conn_after_use(&self, user: &str, pw: &str) -> mysql::Conn {
        use mysql::prelude::Queryable;
        let mut c = self.conn(user, pw);
        c.query_drop(format!("USE {}", super::TEST_DB))
            .expect("USE");
        c
    }

    pub fn try_conn(&self, user: &str, pw: &str) -> Result<mysql::Conn, mysql::Error> {
        mysql::Conn::new(self.opts(user, pw))
    }

    /// Rewrites the config file (`@DIR@` substituted), e.g. before SIGHUP.
    pub fn write_config(&self, config: &str) {
        let text = config.replace(DIR_PLACEHOLDER, &self.dir.to_string_lossy());
        // Write-and-rename so a reload never sees a half-written file.
        let tmp = self.config_path.with_extension("conf.tmp");
        fs::write(&tmp, text).expect("cannot write funnel config");
        fs::rename(&tmp, &self.config_path).expect("cannot rename funnel config");
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The last `max_bytes` (or a little less) of the log.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        let log = self.log();
        let mut start = log.len().saturating_sub(max_bytes);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        log[start..].to_string()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends a signal (SIGHUP, SIGTERM, SIGSTOP, ...). Panics if not running.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid().expect("funnel is not running");
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }

    /// Exit status if the process has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    forget_pid(child.id());
                    self.child = None;
                    self.status = Some(st);
                }
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none() && self.child.is_some()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_status().is_some());
        self.status
    }

    /// Graceful stop: SIGTERM and wait up to `timeout`; panics (with the log)
    /// if funnel does not exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if self.is_running() {
            self.signal(libc::SIGTERM);
        }
        match self.wait_exit(timeout) {
            Some(st) => st,
            None => {
                self.kill();
                panic!(
                    "funnel did not exit within {timeout:?} after SIGTERM.\n{}",
                    self.log_report()
                )
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            forget_pid(child.id());
            self.status = child.wait().ok();
        }
    }

    fn log_report(&self) -> String {
        format!(
            "--- funnel log ({}) ---\n{}\n--- end of funnel log ---",
            self.log_path.display(),
            file_tail(&self.log_path, 64 * 1024)
        )
    }
}

impl Drop for FunnelProcess {
    fn drop(&mut self) {
        // Did it die on its own (crash, panic) while the test was running?
        let died = self.try_status().filter(|st| !st.success());
        self.kill();
        if std::thread::panicking() {
            eprintln!("[harness] test panicked.\n{}", self.log_report());
        } else if let Some(st) = died {
            eprintln!(
                "[harness] funnel had exited with {st}.\n{}",
                self.log_report()
            );
        }
        remove_scratch_dir(&self.dir);
    }
}

/// `FUNNEL_TEST_BACKEND` and `FUNNEL_TEST_FUNNEL`: lines added to the
/// `[backend]` and `[funnel]` sections of every funnel the harness starts
/// (e.g. `pipeline_depth = 4`, `threads = 2`), to run the whole suite with
/// a feature on (see README, "Tests"); a key the test's own section sets is
/// left to the test.
fn with_test_lines(config: &str) -> String {
    let config = with_section_lines(config, "backend", "FUNNEL_TEST_BACKEND");
    with_section_lines(&config, "funnel", "FUNNEL_TEST_FUNNEL")
}

fn with_section_lines(config: &str, section_name: &str, var: &str) -> String {
    let Ok(lines) = std::env::var(var) else {
        return config.to_string();
    };
    let head = format!("[{section_name}]\n");
    let header = match config.find(&head) {
        Some(at) if at == 0 || config.as_bytes()[at - 1] == b'\n' => Some(at),
        _ => None,
    };
    let section = header.map_or("", |at| {
        let body = &config[at + head.len()..];
        &body[..body.find("\n[").unwrap_or(body.len())]
    });
    let own_key = |line: &str| {
        let key = line.split('=').next().unwrap_or("").trim();
        section
            .lines()
            .any(|l| l.split('=').next().unwrap_or("").trim() == key)
    };
    let lines: Vec<&str> = lines
        .split("\\n")
        .flat_map(|l| l.split('\n'))
        .filter(|l| !l.trim().is_empty() && !own_key(l))
        .collect();
    let lines = lines.join("\n");
    match header {
        Some(at) => {
            let after = at + head.len();
            format!("{}{lines}\n{}", &config[..after], &config[after..])
        }
        // `[funnel]` comes first in a file: a section added at the end
        // would follow a user's keys.
        None if section_name == "funnel" => format!("[funnel]\n{lines}\n{config}"),
        None => format!("{config}\n[{section_name}]\n{lines}\n"),
    }
}
