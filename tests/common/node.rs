//! Node.js client libraries for the tests that drive them.

use std::path::PathBuf;
use std::process::Command;

pub const MYSQL2: &str = "mysql2@3.26.1";
pub const MARIADB_JS: &str = "mariadb@3.5.4";

/// node_modules holding mysql2 and mariadb, installed with npm if missing.
pub fn node_modules() -> PathBuf {
    let cache = std::env::var_os("FUNNEL_NODE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/funnel-node-cache"));
    let dir = cache.join(format!("{MYSQL2}-{MARIADB_JS}").replace('@', "-"));
    let modules = dir.join("node_modules");
    if modules.join("mysql2/package.json").exists() && modules.join("mariadb/package.json").exists()
    {
        return modules;
    }
    std::fs::create_dir_all(&dir).expect("node cache dir");
    std::fs::write(dir.join("package.json"), "{\"private\": true}\n").expect("package.json");
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            MYSQL2,
            MARIADB_JS,
        ])
        .current_dir(&dir)
        .output()
        .expect("npm (Node.js) is needed for this test: apt-get install nodejs npm");
    assert!(
        out.status.success(),
        "npm install {MYSQL2} {MARIADB_JS} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    modules
}
