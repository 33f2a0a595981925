//! Bad input on the socket and the command line, a second daemon, and a
//! client that leaves in the middle of a request.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

/// What must not change across bad requests: names, ids, statuses, pids.
fn snapshot(h: &TestHome) -> Vec<Value> {
    h.list()
        .iter()
        .map(|d| json!([d["name"], d["pm_id"], d["pid"], d["pm2_env"]["status"]]))
        .collect()
}

#[test]
fn bad_requests_get_the_right_error_and_change_nothing() {
    let h = TestHome::started();
    h.start(json!({"name": "keep", "script": "sleep", "args": ["1000"], "kill_timeout": 300}));
    let before = snapshot(&h);
    let mut c = h.connect();
    let work = h.work.display().to_string();
    let cases: Vec<(String, &str)> = vec![
        (r#"{"id":1,"cmd":"#.into(), "bad_request"),
        (r#"{"id":2,"cmd":"frobnicate"}"#.into(), "unknown_command"),
        ("frobnicate all".into(), "unknown_command"),
        (
            json!({"id": 4, "cmd": "start",
                   "app": {"script": "sleep", "cwd": work, "max_restart": 1}})
            .to_string(),
            "invalid_option",
        ),
        (
            json!({"id": 5, "cmd": "start",
                   "app": {"script": "sleep", "cwd": work, "max_restarts": "many"}})
            .to_string(),
            "invalid_option",
        ),
        (
            json!({"id": 6, "cmd": "start",
                   "app": {"script": "./missing.sh", "cwd": work}})
            .to_string(),
            "script_not_found",
        ),
        (
            json!({"id": 7, "cmd": "stop", "target": "nosuch"}).to_string(),
            "not_found",
        ),
    ];
    for (line, code) in &cases {
        let r = c.call_line(line);
        assert_eq!(r["ok"], json!(false), "{line}: {r}");
        assert_eq!(r["error"]["code"], json!(code), "{line}: {r}");
        assert!(r["error"]["message"].is_string(), "{r}");
        // Still usable.
        let p = c.call(&json!({"id": "p", "cmd": "ping"}));
        assert_eq!(p["ok"], json!(true), "after {line}: {p}");
        assert_eq!(p["id"], json!("p"));
    }
    // The id of a refused request is echoed.
    let r = c.call_line(r#"{"id":2,"cmd":"frobnicate"}"#);
    assert_eq!(r["id"], json!(2));

    // A 2 MiB line: refused, and the connection goes on.
    let mut big = String::from(r#"{"id":9,"cmd":"ping","pad":""#);
    big.push_str(&"x".repeat(2 << 20));
    big.push_str("\"}\n");
    c.send(big.as_bytes());
    let r = c.read_response();
    assert_eq!(r["error"]["code"], json!("bad_request"), "{r}");
    let p = c.call(&json!({"id": 10, "cmd": "ping"}));
    assert_eq!(p["ok"], json!(true), "after the long line: {p}");
    assert_eq!(p["id"], json!(10), "answer out of step: {p}");

    assert_eq!(snapshot(&h), before, "a bad request changed the list");
}

#[test]
fn a_client_leaving_mid_stop_does_not_hold_the_daemon() {
    let h = TestHome::started();
    h.script("slow.sh", "trap '' INT\necho ready\nexec sleep 1000\n");
    let d = h.start(json!({"name": "slow", "script": "slow.sh", "kill_timeout": 1500}));
    let pid = pid_of(&d[0]);
    h.wait_log("slow", "ready");
    {
        let mut gone = h.connect();
        gone.send(b"{\"id\":1,\"cmd\":\"stop\",\"target\":\"slow\"}\n");
        // Dropped here, before the answer.
    }
    wait_until(SOON, "slow is stopping", || h.status("slow") == "stopping");
    // Other clients are served meanwhile, at once.
    let t0 = Instant::now();
    let p = h.request(json!({"cmd": "ping"}));
    assert_eq!(p["ok"], json!(true));
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "ping waited for the stop"
    );
    assert_eq!(h.status("slow"), "stopping", "the stop finished too early");
    let d = h.wait_status("slow", "stopped");
    assert_eq!(env_of(&d, "exit_signal"), "SIGKILL");
    assert!(!running(pid));
    // And after it.
    h.start(json!({"name": "next", "script": "sleep", "args": ["1000"], "kill_timeout": 300}));
    assert_eq!(h.status("next"), "online");
}

#[test]
fn a_second_daemon_refuses_to_start() {
    let h = TestHome::started();
    let first = h.daemon_pid();
    let out = h.corral(&["daemon", "--no-daemon"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already"), "stderr: {err:?}");
    // The first one is untouched.
    assert_eq!(h.daemon_pid(), first);
    assert_eq!(h.corral(&["ping"]).status.code(), Some(0));
}

#[test]
fn cli_exit_statuses() {
    let h = TestHome::new();
    // No daemon: kill says so (exit status 3), without starting one.
    let out = h.corral(&["kill"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no success line: {}", text(&out));
    assert!(!h.socket().exists(), "kill started a daemon");

    let out = h.corral(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = h.corral(&["stop", "--bogus-flag", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = h.corral(&["stop"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = h.corral(&["stop", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = h.corral(&["start", "./missing-script.sh"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = h.corral(&["start", "sleep", "--kill-timeout", "soon"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // A home that cannot be created: no daemon can be reached or started.
    let mut c = h.command(&["ls"]);
    c.env("CORRAL_HOME", "/proc/nope")
        .env("CORRAL_SOCKET", "/proc/nope/corral.sock");
    let out = run(c);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}
