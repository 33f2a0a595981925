//! The Rust client library: `Client` against the real daemon, and
//! `connect_no_daemon`'s daemon that ends with its caller.

use std::collections::BTreeMap;
use std::process::Command;

use corral::Client;
use corral::client::{Error, Paths, StartOptions};
use corral::protocol::{ErrorCode, Status, Target};

use crate::util::*;

fn paths(h: &TestHome) -> Paths {
    Paths {
        home: h.home.clone(),
        socket: h.socket(),
        binary: bin(),
    }
}

#[test]
fn client_start_describe_stop_delete() {
    let h = TestHome::new();
    let mut c = Client::connect_with(&paths(&h), true).expect("launch and connect");
    let ping = c.ping().expect("ping");
    assert_eq!(ping["pid"].as_i64(), Some(h.daemon_pid() as i64));

    let opts = StartOptions {
        name: Some("api".into()),
        args: Some(vec!["1000".into()]),
        cwd: Some(h.work.clone()),
        kill_timeout: Some(300),
        env: Some(BTreeMap::from([("PORT".to_string(), "3000".to_string())])),
        ..StartOptions::script("sleep")
    };
    let started = c.start(&opts).expect("start");
    assert_eq!(started.len(), 1);
    let d = &started[0];
    assert_eq!(d.name, "api");
    assert_eq!(d.pm2_env.status, Status::Online);
    assert_eq!(d.pm2_env.env.get("PORT").map(String::as_str), Some("3000"));
    assert!(running(d.pid));
    let id = d.pm_id;

    let found = c.describe(Target::Name("api".into())).expect("describe");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].pid, d.pid);
    assert!(
        c.describe(Target::Name("nosuch".into()))
            .unwrap()
            .is_empty()
    );

    let stopped = c.stop(Target::Id(id)).expect("stop");
    assert_eq!(stopped[0].pm2_env.status, Status::Stopped);
    assert_eq!(stopped[0].pid, 0);
    assert!(!running(d.pid));

    // Errors carry their code.
    match c.start(&StartOptions {
        cwd: Some(h.work.clone()),
        ..StartOptions::script("./no-such-script.sh")
    }) {
        Err(Error::Daemon { code, .. }) => assert_eq!(code, ErrorCode::ScriptNotFound),
        other => panic!("start of a missing script: {other:?}"),
    }
    let e = c.stop(Target::Name("nosuch".into())).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));

    let deleted = c.delete(Target::Name("api".into())).expect("delete");
    assert_eq!(deleted.len(), 1);
    assert!(c.list().expect("list").is_empty());

    c.start(&StartOptions {
        name: Some("last".into()),
        args: Some(vec!["1000".into()]),
        cwd: Some(h.work.clone()),
        kill_timeout: Some(300),
        ..StartOptions::script("sleep")
    })
    .expect("start last");
    let daemon = h.daemon_pid();
    assert_eq!(c.kill_daemon().expect("kill_daemon"), 1);
    wait_gone(daemon, "the daemon");
}

/// The name `--exact` needs for a test of this module.
fn test_name(f: &str) -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, m)| m);
    format!("{module}::{f}")
}

#[test]
fn connect_no_daemon_ends_with_its_caller() {
    if std::env::var_os("CORRAL_TEST_CALLER").is_some() {
        // The caller: start a tied daemon and an app, report, and leave.
        let mut c = Client::connect_no_daemon().expect("connect_no_daemon");
        let d = c
            .start(&StartOptions {
                name: Some("tied".into()),
                args: Some(vec!["1000".into()]),
                kill_timeout: Some(300),
                ..StartOptions::script("sleep")
            })
            .expect("start tied");
        let ping = c.ping().expect("ping");
        println!("CALLER daemon={} app={}", ping["pid"], d[0].pid);
        std::process::exit(0);
    }
    let h = TestHome::new();
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        &test_name("connect_no_daemon_ends_with_its_caller"),
        "--nocapture",
    ])
    .env("CORRAL_TEST_CALLER", "1")
    .env("CORRAL_HOME", &h.home)
    .env("CORRAL_BIN", bin())
    .env_remove("CORRAL_SOCKET")
    .current_dir(&h.work);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CALLER "))
        .unwrap_or_else(|| panic!("no report from the caller: {}", text(&out)));
    let pid = |key: &str| -> i32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    let (daemon, app) = (pid("daemon="), pid("app="));
    assert!(daemon > 0 && app > 0, "{line}");
    wait_gone(app, "the app of the tied daemon");
    wait_gone(daemon, "the tied daemon");
    wait_until(SOON, "the tied daemon removed its socket", || {
        !h.socket().exists()
    });
}
