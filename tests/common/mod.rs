//! Shared harness for funnel's integration tests. Include it from a test
//! binary with `mod common;`.
//!
//! * [`mariadb()`]: the binary's shared private MariaDB server, started on
//!   first use (one per test binary). [`MariaDb::new()`]: an owned server for
//!   tests that kill/restart/freeze it ([`MariaDb::kill`], [`MariaDb::stop`],
//!   [`MariaDb::start`], [`MariaDb::signal`]).
//! * [`url`], [`opts`], [`mysql_direct`], [`admin_sql`], [`root_url`]: clients;
//!   [`private_account`]: an account of a test's own.
//! * [`FunnelProcess`]: runs the real `funnel` binary with a given config;
//!   [`FunnelConfig`] builds one.
//! * [`free_port`], [`unique_name`], [`serial`], [`wait_until`], [`rss_kib`].
//!
//! One module per concern, for what more than one test file needs:
//! [`admin`] (the admin console), [`stats`] (the stats port), [`clients`]
//! (Python, PHP and the `mariadb` CLI as clients), [`raw`] (the MySQL
//! protocol by hand), [`sql`] (answers of the `mysql` crate), [`rng`].
//! A helper one test file needs stays in that file.
//!
//! Nothing runs before a test asks for it. Servers and funnel processes are
//! killed and their scratch directories deleted when the test binary exits,
//! whether tests passed, failed or panicked; if the test binary itself is
//! killed, the kernel kills them (see `process.rs` for how and why).
//!
//! Environment knobs: FUNNEL_TEST_KEEP=1 keeps scratch dirs (datadirs, logs);
//! FUNNEL_TEST_NO_TEMPLATE=1 runs mariadb-install-db per server;
//! FUNNEL_MARIADBD / FUNNEL_MARIADB_INSTALL_DB / FUNNEL_MARIADB_CLIENT force
//! binary paths; RUST_LOG sets funnel's log filter (default "debug").
// Each test binary uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod clients;
mod config;
mod funnel;
mod mariadb;
mod node;
mod process;
pub mod raw;
pub mod recorder;
pub mod replication;
pub mod rng;
pub mod sql;
pub mod stats;
mod tls;

pub use admin::admin_console;
pub use config::FunnelConfig;
pub use funnel::{funnel_bin, FunnelBuilder, FunnelProcess, DIR_PLACEHOLDER};
pub use mariadb::{
    admin_sql, mariadb, mariadb_client, mysql_direct, opts, private_account, root_url, url,
    MariaDb, PASS_A, PASS_B, TEST_DB, USER_A, USER_B,
};
pub use node::{node_modules, MARIADB_JS, MYSQL2};
pub use process::{pid_alive, rss_kib, sweep_stale_dirs, wait_until, SCRATCH_PREFIX};
pub use tls::{TestCa, TestCert};

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it by
/// binding port 0, so parallel tests and binaries get different ports; the
/// MariaDB helper additionally retries if it loses a race for it).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    // The kernel may hand out the same ephemeral port again right after the
    // probe socket closes; never give the same port twice in one process.
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("cannot bind 127.0.0.1:0")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// A table name unique within this test run, for tests sharing funnel_test.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The tests of this binary that take it run one at a time (for those
/// that watch something server-wide).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises the soft open-files limit of this process (inherited by the
/// funnel it spawns afterwards) to at least `want`, or as high as the hard
/// limit allows; returns the limit now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux but not everywhere
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want as libc::rlim_t {
            r.rlim_cur = r.rlim_max.min(want as libc::rlim_t);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
        r.rlim_cur as u64
    }
}
