//! The live page's script (src/admin/live.html) run under node against a
//! stub DOM: its Servers and Query rules tables show what /stats.json says
//! (tests/clients/live_page_check.js). The page's HTTP side is tested in
//! tests/admin.rs; a screenshot of it in a real browser:
//! scripts/screenshot-live-page.sh.

mod common;

use std::process::Command;

#[test]
fn the_live_page_shows_servers_and_rules() {
    let test = "the_live_page_shows_servers_and_rules";
    if !common::clients::have("node") {
        common::clients::skip(
            test,
            "node is not installed (bash scripts/test.sh installs it)",
        );
        return;
    }
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin/live.html");
    let out = Command::new("node")
        .arg(common::clients::script("live_page_check.js"))
        .arg(page)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK live page tables"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
