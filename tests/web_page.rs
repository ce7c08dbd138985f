//! The web page end to end in headless Chromium: tests/web/e2e.mjs (node's
//! test runner, playwright-core driving Debian's chromium) against the real
//! `server` binary. Two browser users and a line client chatting across
//! rooms, older history on scroll, a server restart mid-chat with no
//! duplicate and no gap, a phone-sized page, and markup shown as text.
//!
//! What it needs (chromium, node_modules) is made ready by tests/web/setup.sh,
//! which .ci/run runs; this test runs it too when something is missing.

use std::path::Path;
use std::process::Command;

#[test]
fn the_web_page_works_end_to_end_in_a_real_browser() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let ready = web.join("node_modules/playwright-core").is_dir()
        && Command::new("chromium").arg("--version").output().is_ok();
    if !ready {
        let status = Command::new("bash")
            .arg(web.join("setup.sh"))
            .status()
            .expect("bash runs tests/web/setup.sh");
        assert!(
            status.success(),
            "tests/web/setup.sh could not install chromium and playwright-core (run it as root, with the network)"
        );
    }
    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec", "e2e.mjs"])
        .current_dir(&web)
        .env("SERVER_BIN", env!("CARGO_BIN_EXE_server"))
        .output()
        .expect("node runs (Node.js 20 or later)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(report.contains("pass 5"), "{report}");
}
