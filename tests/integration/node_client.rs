//! The Node package (`clients/node/`): its own suite (`node --test`) run
//! against the binary under test, so that `cargo test` runs it too. Each of
//! its tests makes its own temporary home and kills its daemon. Skipped,
//! with a message, when `node` is not on PATH.

use std::path::Path;
use std::process::Command;

use crate::util::*;

/// The major version of the `node` on PATH, if there is one.
fn node_major() -> Option<u32> {
    let out = Command::new("node").arg("--version").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[test]
fn node_package_suite() {
    let Some(major) = node_major() else {
        eprintln!("skipped node_package_suite: `node` is not on PATH");
        return;
    };
    if major < 18 {
        eprintln!("skipped node_package_suite: node {major} is older than 18");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("node");
    cmd.args(["--test", "clients/node/test/"])
        .current_dir(root)
        .env("CORRAL_BIN", bin())
        .env_remove("CORRAL_HOME")
        .env_remove("CORRAL_SOCKET");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "node --test clients/node/test/ failed:\n{}",
        text(&out)
    );
    // A suite that ran nothing passes too: make sure it ran.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("# pass ") && !stdout.contains("# pass 0\n"),
        "node --test ran no test:\n{}",
        text(&out)
    );
}
