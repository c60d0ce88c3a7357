//! Child-process plumbing shared by the MariaDB and funnel helpers:
//!
//! * [`spawn_guarded`] starts every long-lived child (mariadbd, funnel) from
//!   one dedicated, never-exiting thread with `PR_SET_PDEATHSIG = SIGKILL`.
//! * A registry of live child pids and scratch directories, emptied by a
//!   `libc::atexit` hook when the test binary exits.
//! * [`sweep_stale_dirs`] removes scratch directories left behind by test
//!   processes that were killed outright (SIGKILL, OOM killer, CI timeout).
//!
//! Why this design (the three ways a test binary can end):
//!
//! 1. Normal end, or some tests failed: libtest returns from `main` or calls
//!    `process::exit(101)`; both go through libc `exit()`, which runs the
//!    `atexit` hook: SIGKILL every registered child, reap it, delete every
//!    registered directory. Statics (the shared server in a `OnceLock`) are
//!    never dropped, so `atexit` is the only hook that runs for them. A
//!    panicking test only unwinds its own thread; the process goes on and ends
//!    through path 1 later (owned helpers are cleaned by `Drop` on unwind).
//! 2. The test binary dies without running `exit()` (SIGKILL, SIGINT, abort):
//!    the kernel sends each child its "parent death signal". The catch: the
//!    signal fires when the *thread* that forked the child exits, not the
//!    process, and libtest runs each test on a short-lived thread. So all
//!    children are forked by a dedicated spawner thread that lives until the
//!    process dies. (The alternative, a `sh -c` watchdog polling the parent
//!    pid, would add a poll delay and an extra process per child; pdeathsig is
//!    exact and free.) `mariadbd --user=root` run by root does not change
//!    credentials, so the kernel does not clear the pdeathsig; as a non-root
//!    user we never pass `--user`, for the same reason.
//! 3. After path 2 the scratch directories remain in the temp dir. Each one
//!    holds an `owner.pid` file; the next test binary that starts a server
//!    deletes those whose owner process is gone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

/// Prefix of every scratch directory the harness creates in the temp dir.
pub const SCRATCH_PREFIX: &str = "funnel-test-";
/// File in each scratch directory naming the test process that owns it.
const OWNER_FILE: &str = "owner.pid";

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();

/// Spawns `cmd` from the long-lived spawner thread, with SIGKILL as its
/// parent-death signal and in its own process group (so a terminal's ^C hits
/// only the test binary, whose death then takes the child down), and registers
/// its pid for the exit hook. Call [`forget_pid`] right *before* the final
/// `wait()` that reaps it (until it is reaped the pid cannot be recycled, so
/// the exit hook can never signal a stranger).
pub fn spawn_guarded(mut cmd: Command) -> io::Result<Child> {
    install_exit_hook();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.process_group(0);

    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("test-child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static and is never dropped, so this
                // is unreachable; park anyway so the thread can never exit.
                loop {
                    thread::park();
                }
            })
            .expect("cannot start the child-spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .expect("child-spawner thread is gone");
    let child = reply_rx.recv().expect("child-spawner thread is gone")?;
    registry().pids.push(child.id() as libc::pid_t);
    Ok(child)
}

/// Removes `pid` from the exit-hook registry. Call it just before reaping the
/// child; if the process exits in between, the parent-death signal covers it.
pub fn forget_pid(pid: u32) {
    registry().pids.retain(|&p| p != pid as libc::pid_t);
}

/// Creates a fresh scratch directory `<tmp>/funnel-test-<what>-XXXXXX`, marks
/// it with the owner pid and registers it for removal at exit.
pub fn scratch_dir(what: &str) -> PathBuf {
    install_exit_hook();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{SCRATCH_PREFIX}{what}-"))
        .tempdir_in(scratch_root())
        .expect("cannot create a scratch directory")
        .keep();
    fs::write(dir.join(OWNER_FILE), std::process::id().to_string())
        .expect("cannot write owner.pid");
    registry().dirs.push(dir.clone());
    dir
}

/// Deletes a scratch directory now and drops it from the exit-hook registry
/// (honours FUNNEL_TEST_KEEP, see [`keep_scratch`]).
pub fn remove_scratch_dir(dir: &Path) {
    registry().dirs.retain(|d| d != dir);
    if keep_scratch() {
        eprintln!("[harness] FUNNEL_TEST_KEEP set: keeping {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Set FUNNEL_TEST_KEEP=1 to keep datadirs and logs for post-mortem.
pub fn keep_scratch() -> bool {
    std::env::var_os("FUNNEL_TEST_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The directory scratch dirs live in. Short on purpose: a unix socket path
/// must fit in 108 bytes, so a long $TMPDIR falls back to /tmp.
pub fn scratch_root() -> PathBuf {
    let tmp = std::env::temp_dir();
    if tmp.as_os_str().len() <= 60 {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

/// Removes scratch directories whose owner process no longer exists (left by
/// test binaries that were SIGKILLed). Their servers are already dead: the
/// parent-death signal killed them. Runs once per process automatically when
/// the first server starts; tests may call it directly.
pub fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(scratch_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(owner) = fs::read_to_string(path.join(OWNER_FILE)) else {
            continue; // not ours, or still being created
        };
        let Ok(owner) = owner.trim().parse::<libc::pid_t>() else {
            continue;
        };
        if owner > 0 && !pid_alive(owner) {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// True if `pid` exists and is not a zombie.
pub fn pid_alive(pid: libc::pid_t) -> bool {
    // SAFETY: kill with signal 0 only checks for existence/permission.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // A zombie (dead but not yet reaped, e.g. under a PID 1 that never reaps)
    // still answers kill(0). The state is the field after the ")".
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` elapses.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Resident set size of a process in KiB (VmRSS), if it runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Last `max_bytes` of a file (lossy UTF-8), for error messages.
pub fn file_tail(path: &Path, max_bytes: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max_bytes);
            let mut s = String::from_utf8_lossy(&bytes[start..]).into_owned();
            if start > 0 {
                s.insert_str(0, "[...]\n");
            }
            s
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

#[derive(Default)]
struct Registry {
    pids: Vec<libc::pid_t>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // A test that panicked while holding the lock must not break cleanup.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn install_exit_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a plain extern "C" fn is always sound.
        let rc = unsafe { libc::atexit(exit_hook) };
        assert_eq!(rc, 0, "atexit() failed");
    });
}

extern "C" fn exit_hook() {
    // Never unwind across the FFI boundary.
    let _ = std::panic::catch_unwind(|| {
        // Another thread might hold the lock right now (libtest can exit
        // while a timed-out test still runs); do not deadlock on it.
        let mut guard = None;
        for _ in 0..100 {
            match REGISTRY.try_lock() {
                Ok(g) => {
                    guard = Some(g);
                    break;
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    guard = Some(p.into_inner());
                    break;
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    thread::sleep(Duration::from_millis(10))
                }
            }
        }
        let Some(mut reg) = guard else { return };
        for pid in reg.pids.drain(..) {
            // SAFETY: plain syscalls on a pid we spawned and never reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        let keep = keep_scratch();
        for dir in reg.dirs.drain(..) {
            if keep {
                eprintln!("[harness] FUNNEL_TEST_KEEP set: keeping {}", dir.display());
            } else {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    });
}
