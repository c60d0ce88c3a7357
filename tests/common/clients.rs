//! Client programs the tests run: Python and PHP scripts (`tests/clients/`
//! or inline), and what to do when an interpreter or driver is missing.
//!
//! A test whose client is not installed is skipped loudly ([`skip`]),
//! or fails when FUNNEL_E2E_REQUIRE_CLIENTS is set ([`require_clients`]);
//! `bash scripts/test.sh` installs them.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A client script under `tests/clients/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// FUNNEL_E2E_REQUIRE_CLIENTS is set: a missing client fails its test.
pub fn require_clients() -> bool {
    std::env::var("FUNNEL_E2E_REQUIRE_CLIENTS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reports a skipped test loudly (or fails it under FUNNEL_E2E_REQUIRE_CLIENTS).
pub fn skip(test: &str, reason: &str) {
    if require_clients() {
        panic!("{test}: {reason} (FUNNEL_E2E_REQUIRE_CLIENTS is set)");
    }
    println!("SKIPPED {test}: {reason}");
    eprintln!("SKIPPED {test}: {reason}");
}

/// True if `program --version` runs.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True if python3 can import `module`.
pub fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `python3 -c <code> <args...>` to its end.
pub fn python(code: &str, args: &[&str]) -> Output {
    Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python3 runs")
}

/// [`python`], which must exit 0 (else panics with its output): its stdout.
pub fn python_ok(code: &str, args: &[&str]) -> String {
    let out = python(code, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 exited with {}:\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The `mariadb` command-line client logging in to 127.0.0.1:`port` over
/// TCP (add `-e SQL` and the like).
pub fn mariadb_cli(port: u16, user: &str, pw: &str) -> Command {
    let mut cmd = Command::new(super::mariadb_client());
    cmd.arg("--no-defaults")
        .arg("--protocol=TCP")
        .arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--user={user}"))
        .arg(format!("--password={pw}"));
    cmd
}
