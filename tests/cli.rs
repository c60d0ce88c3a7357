//! Runs the `funnel` binary's command line: flags, exit codes, messages.
//! None of these start the server.

use std::path::Path;
use std::process::{Command, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/funnel.conf.example");

fn funnel(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_funnel"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the funnel binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version() {
    let dir = tempfile::tempdir().unwrap();
    let out = funnel(&["--version"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("funnel {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = funnel(&["-V"], dir.path());
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn help_lists_flags_and_config_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = funnel(&["--help"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    for part in [
        "--config",
        "--check-config",
        "--version",
        "[backend]",
        "max_allowed_packet (default 64M)",
    ] {
        assert!(stdout.contains(part), "{part} missing from:\n{stdout}");
    }
}

#[test]
fn check_config_on_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let out = funnel(&["--check-config", "-c", EXAMPLE], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(stdout.ends_with("config OK\n"), "{stdout}");
    assert!(stdout.contains("[user app]\n"), "{stdout}");
    assert!(!stdout.contains("change-me"), "password shown:\n{stdout}");
}

#[test]
fn check_config_on_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.conf");
    std::fs::write(
        &path,
        "[backend]\naddress = 127.0.0.1:3306\n[user app]\npassword = x\n[pool]\nconnections = lots\n",
    )
    .unwrap();
    let path_str = path.to_str().unwrap();
    for args in [
        vec!["--check-config", "-c", path_str],
        vec!["--config", path_str],
    ] {
        let out = funnel(&args, dir.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.starts_with(&format!("funnel: {path_str}:6: [pool] connections: ")),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn default_config_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = funnel(&["--check-config"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("./funnel.conf does not exist"),
        "{}",
        text(&out.stderr)
    );

    std::fs::copy(EXAMPLE, dir.path().join("funnel.conf")).unwrap();
    let out = funnel(&["--check-config"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("funnel.conf"));
}

#[test]
fn bad_command_lines_exit_2_with_usage() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--bogus"][..], &["-c"], &["stray"]] {
        let out = funnel(args, dir.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr.starts_with("funnel: "), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage: funnel"), "{args:?}: {stderr}");
    }
}

#[test]
fn check_config_reports_a_missing_unix_socket_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let conf = |socket: &Path| {
        format!(
            "[funnel]\nunix_socket = {}\n[backend]\naddress = 127.0.0.1:3306\n[user app]\npassword = x\n",
            socket.display()
        )
    };
    std::fs::write(
        dir.path().join("funnel.conf"),
        conf(&missing.join("funnel.sock")),
    )
    .unwrap();
    for args in [
        &["--check-config", "-c", "funnel.conf"][..],
        &["-c", "funnel.conf"],
    ] {
        let out = funnel(args, dir.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(
            stderr,
            format!(
                "funnel: funnel.conf: [funnel] unix_socket: directory {} does not exist (create it, or change unix_socket; systemd's RuntimeDirectory= creates it only when the service starts)\n",
                missing.display()
            ),
            "{args:?}"
        );
    }
    // The same file once the directory exists.
    std::fs::create_dir(&missing).unwrap();
    let out = funnel(&["--check-config", "-c", "funnel.conf"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_relative_config_path_is_the_callers() {
    // Two directories each with a funnel.conf: the one in the caller's
    // directory is read, whatever the binary's own location.
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let conf = |n: u32| {
        format!("[funnel]\nmax_client_connections = {n}\n[backend]\naddress = 127.0.0.1:3306\n[user app]\npassword = x\n")
    };
    std::fs::write(dir.path().join("funnel.conf"), conf(11)).unwrap();
    std::fs::write(sub.join("funnel.conf"), conf(22)).unwrap();
    for (cwd, path, want) in [
        (dir.path(), "funnel.conf", 11),
        (sub.as_path(), "funnel.conf", 22),
        (sub.as_path(), "../funnel.conf", 11),
        (dir.path(), "sub/funnel.conf", 22),
    ] {
        let out = funnel(&["--check-config", "--config", path], cwd);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{path}: {}", text(&out.stderr));
        assert!(
            stdout.contains(&format!("max_client_connections = {want}\n")),
            "{path} from {}: {stdout}",
            cwd.display()
        );
    }
}
