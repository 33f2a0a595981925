//! The Rust client library: `Client` against the real daemon,
//! `connect_no_daemon`'s daemon that ends with its caller, the bus read with
//! a timeout, without blocking and from a poll loop, and the seed's example
//! program (`examples/seed.rs`) run as written.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use corral::Client;
use corral::client::{Bus, Error, Paths, StartOptions};
use corral::protocol::{ErrorCode, Event, Status, Target};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::Value;

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

/// Options of a `sleep` that stops quickly.
fn sleeper(h: &TestHome, name: &str) -> StartOptions {
    StartOptions {
        name: Some(name.into()),
        args: Some(vec!["1000".into()]),
        cwd: Some(h.work.clone()),
        kill_timeout: Some(300),
        ..StartOptions::script("sleep")
    }
}

/// Whether `ev` is the `process:event` `kind` of the app `name`.
fn is_event(ev: &Event, name: &str, kind: &str) -> bool {
    matches!(ev, Event::Process { kind: k, process, .. } if k == kind && process.name == name)
}

#[test]
fn targets_need_no_ceremony() {
    let h = TestHome::new();
    let mut c = Client::connect_with(&paths(&h), true).expect("launch and connect");
    let d = c.start(&sleeper(&h, "api")).expect("start");
    let id = d[0].pm_id;
    assert_eq!(c.describe("api").expect("by name")[0].pm_id, id);
    assert_eq!(c.describe(id).expect("by pm_id")[0].name, "api");
    assert_eq!(
        c.describe(id.to_string()).expect("by digits")[0].name,
        "api"
    );
    assert_eq!(c.stop("all").expect("stop all").len(), 1);
    assert_eq!(
        c.describe("api").unwrap()[0].pm2_env.status,
        Status::Stopped
    );
    assert_eq!(c.start_target("api").expect("start again").len(), 1);
    assert_eq!(c.delete(Target::All).expect("delete all").len(), 1);
}

#[test]
fn the_bus_reads_with_a_timeout_and_without_blocking() {
    let h = TestHome::new();
    let mut c = Client::connect_with(&paths(&h), true).expect("launch and connect");
    let mut bus = c
        .launch_bus(Some(vec!["process:event".into()]))
        .expect("launch the bus");
    // Nothing happens: the timeout runs out, the non-blocking read returns.
    let t = Instant::now();
    assert!(
        bus.next_timeout(Duration::from_millis(100))
            .unwrap()
            .is_none()
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(bus.try_next().unwrap().is_none());

    c.start(&sleeper(&h, "api")).expect("start");
    let deadline = Instant::now() + SOON;
    let mut seen = Vec::new();
    while !seen.iter().any(|e| is_event(e, "api", "online")) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no online event for api within {SOON:?}: {seen:?}"
        );
        if let Some(ev) = bus.next_timeout(left).expect("read the bus") {
            seen.push(ev);
        }
    }
    assert!(seen.iter().any(|e| is_event(e, "api", "start")), "{seen:?}");

    // The app is stopped: its events come without waiting once there.
    c.stop("api").expect("stop");
    wait_until(SOON, "a stop event is there to read", || {
        let ev = bus.try_next().expect("read the bus");
        ev.is_some_and(|e| is_event(&e, "api", "stop"))
    });

    // disconnect ends the bus: the bounded reads say so.
    c.disconnect();
    let ended = |bus: &mut Bus| loop {
        match bus.next_timeout(SOON) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the bus did not end within {SOON:?}"),
            Err(e) => return e,
        }
    };
    assert!(matches!(ended(&mut bus), Error::Closed));
    assert!(matches!(bus.try_next(), Err(Error::Closed)));
}

#[test]
fn the_bus_fd_goes_in_a_poll_loop() {
    let h = TestHome::new();
    let mut c = Client::connect_with(&paths(&h), true).expect("launch and connect");
    let mut bus = c
        .launch_bus(Some(vec!["process:event".into()]))
        .expect("launch the bus");
    let readable = |bus: &Bus, ms: u16| -> bool {
        let mut fds = [PollFd::new(bus.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).expect("poll") > 0
    };
    assert!(!readable(&bus, 100), "the bus is readable before any event");

    c.start(&sleeper(&h, "api")).expect("start");
    // The loop of an embedding program: wait on the fd, then take every
    // whole event without blocking.
    let deadline = Instant::now() + SOON;
    let mut seen = Vec::new();
    while !seen.iter().any(|e| is_event(e, "api", "online")) {
        assert!(
            Instant::now() < deadline,
            "no online event for api: {seen:?}"
        );
        if !readable(&bus, 100) {
            continue;
        }
        while let Some(ev) = bus.try_next().expect("read the bus") {
            seen.push(ev);
        }
    }
    // Everything was taken: nothing more is readable.
    assert!(!readable(&bus, 100), "events left after {seen:?}");
    c.disconnect();
    assert!(readable(&bus, 10_000), "the end of the bus polls readable");
    assert!(matches!(bus.try_next(), Err(Error::Closed)));
}

#[test]
fn a_missing_binary_names_corral_bin() {
    let h = TestHome::new();
    let paths = Paths {
        binary: PathBuf::from("corral-not-installed-here"),
        ..paths(&h)
    };
    match Client::connect_with(&paths, true) {
        Err(Error::NoDaemon(m)) => {
            assert!(m.contains("corral-not-installed-here"), "{m}");
            assert!(m.contains("CORRAL_BIN"), "{m}");
        }
        Err(e) => panic!("not NoDaemon: {e}"),
        Ok(_) => panic!("connected without a daemon binary"),
    }
}

/// `examples/seed.rs`, built by cargo (as `cargo test` does), as a path.
fn seed_example() -> PathBuf {
    let out = run({
        let mut c = Command::new(env!("CARGO"));
        c.args([
            "build",
            "--quiet",
            "--example",
            "seed",
            "--message-format=json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        c
    });
    assert_eq!(out.status.code(), Some(0), "cargo build: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["target"]["name"] == "seed")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("no executable for the seed example: {}", text(&out)))
}

#[test]
fn the_seed_example_starts_a_cluster_of_four() {
    let h = TestHome::new();
    h.script("api.js", "setInterval(() => {}, 60000);\n");
    let mut cmd = Command::new(seed_example());
    cmd.env("CORRAL_HOME", &h.home)
        .env("CORRAL_BIN", bin())
        .env_remove("CORRAL_SOCKET")
        .current_dir(&h.work);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "started 4 instances of api"
    );
    let all = h.list();
    assert_eq!(all.len(), 4, "{all:?}");
    for d in &all {
        assert_eq!(d["name"], "api", "{d}");
        assert_eq!(env_of(d, "exec_mode"), "cluster_mode", "{d}");
        assert_eq!(env_of(d, "max_memory_restart"), 100 * 1024 * 1024, "{d}");
        assert_eq!(env_of(d, "status"), "online", "{d}");
        assert!(running(pid_of(d)), "{d}");
    }
    // Run again, the daemon refuses the same app: exit 1 with the reason.
    let mut again = Command::new(seed_example());
    again
        .env("CORRAL_HOME", &h.home)
        .env("CORRAL_BIN", bin())
        .env_remove("CORRAL_SOCKET")
        .current_dir(&h.work);
    let out = run(again);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("api"), "{}", text(&out));
}

#[test]
fn client_dump_resurrect_and_startup() {
    let h = TestHome::new();
    let mut c = Client::connect_with(&paths(&h), true).expect("launch and connect");
    let opts = StartOptions {
        name: Some("saved".into()),
        args: Some(vec!["1000".into()]),
        cwd: Some(h.work.clone()),
        kill_timeout: Some(300),
        ..StartOptions::script("sleep")
    };
    let id = c.start(&opts).expect("start")[0].pm_id;
    let d = c.dump(false).expect("dump");
    assert_eq!(d.count, 1);
    assert_eq!(d.path, h.home.join("dump.json"));
    c.delete("all").expect("delete");
    match c.dump(false) {
        Err(Error::Daemon { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("keeps its 1 apps"), "{message}");
        }
        other => panic!("an empty list must not replace the dump: {other:?}"),
    }
    let back = c.resurrect().expect("resurrect");
    assert_eq!(back.len(), 1);
    // The emptied list numbers from 0 again (as PM2's): the saved pm_id is
    // free, and kept.
    assert_eq!((back[0].name.as_str(), back[0].pm_id), ("saved", id));
    assert_eq!(back[0].pm2_env.status, Status::Online);
    assert!(c.resurrect().expect("again").is_empty());
    assert_eq!(c.list().unwrap().len(), 1);
    // The same file read by the client.
    let again = c
        .resurrect_from(&h.home.join("dump.json"))
        .expect("resurrect_from");
    assert!(again.is_empty(), "already there: {again:?}");

    let unit = c.startup(Some("systemd"), true).expect("startup --dry-run");
    assert!(unit.contains("ExecStartPost=-"), "{unit}");
    assert!(unit.contains(&h.home.display().to_string()), "{unit}");
    match c.startup(Some("nosuch"), true) {
        Err(Error::Invalid(m)) => assert!(m.contains("nosuch"), "{m}"),
        other => panic!("an unknown platform is refused: {other:?}"),
    }
    c.kill_daemon().expect("kill");
}
