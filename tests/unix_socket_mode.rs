//! The unix socket's permissions and group (issue 16, "Security"):
//! `unix_socket_mode` (default 0777, as mysqld's, so other OS users can
//! connect and log in with their password) and `unix_socket_group`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::{FunnelConfig, FunnelProcess, PASS_A, USER_A};
use mysql::prelude::Queryable;

fn config(extra: &str) -> FunnelConfig {
    FunnelConfig::user_a()
        .funnel("unix_socket = @DIR@/funnel.sock")
        .funnel(extra)
        .pool("connections = 1")
}

fn query_over_socket(f: &FunnelProcess) -> u8 {
    let path = f.dir.join("funnel.sock");
    let opts = mysql::OptsBuilder::new()
        .socket(Some(path.to_string_lossy()))
        .user(Some(USER_A))
        .pass(Some(PASS_A));
    let mut c = mysql::Conn::new(opts).expect("login over the unix socket");
    c.query_first::<u8, _>("SELECT 3").unwrap().unwrap()
}

#[test]
fn the_socket_is_created_with_the_configured_mode_and_group() {
    // Default: 0777, as mysqld's.
    let f = config("").start();
    let meta = std::fs::metadata(f.dir.join("funnel.sock")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o777);
    assert_eq!(query_over_socket(&f), 3);
    drop(f);

    // 0660 for one group: a group other than the funnel's own, given by
    // name, if this test may chown to it (root), else the own one by number.
    let own_gid = unsafe { libc::getegid() };
    let (group, gid) = if unsafe { libc::geteuid() } == 0 {
        ("daemon".to_string(), 1)
    } else {
        (own_gid.to_string(), own_gid)
    };
    let f = config(&format!(
        "unix_socket_mode = 0660\nunix_socket_group = {group}"
    ))
    .start();
    let meta = std::fs::metadata(f.dir.join("funnel.sock")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    assert_eq!(query_over_socket(&f), 3);
    assert!(f.log().contains("(mode 0660, group "), "{}", f.log());
}

#[test]
fn a_bad_mode_or_group_stops_the_start() {
    // A configuration error (exit 2), or a listener that cannot be set up
    // as configured (exit 1, as when the address is taken).
    for (extra, code, expect) in [
        ("unix_socket_mode = 0999", 2, "unix_socket_mode"),
        ("unix_socket_mode = 01777", 2, "unix_socket_mode"),
        (
            "unix_socket_group = no-such-group-here",
            1,
            "no group named \"no-such-group-here\"",
        ),
    ] {
        let (status, log) = config(extra).builder().run_to_exit(Duration::from_secs(20));
        assert_eq!(status.and_then(|s| s.code()), Some(code), "{extra}: {log}");
        assert!(log.contains(expect), "{extra}: {log}");
    }
}
