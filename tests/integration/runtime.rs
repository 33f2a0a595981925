//! `corral runtime`: the daemon in the foreground as a container's
//! entrypoint — output on stdout/stderr with `name|`, the exit status rules,
//! SIGTERM (and a second one), the socket served meanwhile, and PID 1 of a
//! fresh pid namespace reaping every orphan.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::util::*;

/// `corral runtime <args>` in the background, output captured.
fn spawn_runtime(h: &TestHome, args: &[&str]) -> Child {
    let mut all = vec!["runtime"];
    all.extend_from_slice(args);
    h.command(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral runtime")
}

/// Wait for the runtime to end within `limit`; its output.
fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            if let Some(mut o) = child.stdout.take() {
                o.read_to_end(&mut stdout).expect("read stdout");
            }
            if let Some(mut e) = child.stderr.take() {
                e.read_to_end(&mut stderr).expect("read stderr");
            }
            return Output {
                status,
                stdout,
                stderr,
            };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corral runtime still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_config(h: &TestHome, apps: serde_json::Value) -> String {
    let path = h.work.join("apps.json");
    std::fs::write(&path, json!({ "apps": apps }).to_string()).expect("write config");
    path.display().to_string()
}

#[test]
fn an_app_that_ends_on_its_own_gives_its_code_and_its_output_is_prefixed() {
    let h = TestHome::new();
    let cfg = write_config(
        &h,
        json!([
            {"name": "three", "script": "sh", "args": ["-c", "echo out of three; echo err of three >&2; sleep 0.2; exit 3"], "autorestart": false},
            {"name": "zero", "script": "sh", "args": ["-c", "echo zero here; exit 0"], "autorestart": false},
        ]),
    );
    let out = finish(spawn_runtime(&h, &[&cfg]), Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("three| out of three\n"), "{stdout}");
    assert!(stdout.contains("zero| zero here\n"), "{stdout}");
    assert!(stderr.contains("three| err of three\n"), "{stderr}");
    // No log files unless asked.
    assert!(!h.home.join("logs/three-out.log").exists());

    // --exit-with first: zero ended first; --raw: no prefix; --logs: files.
    let out = finish(
        spawn_runtime(&h, &[&cfg, "--exit-with", "first", "--raw", "--logs"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\nzero here\n")
            || String::from_utf8_lossy(&out.stdout).starts_with("zero here\n")
    );
    assert!(h.home.join("logs/three-out.log").exists());
    let out = finish(
        spawn_runtime(&h, &[&cfg, "--exit-with", "max"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // A signal: 128 + its number.
    let out = finish(
        spawn_runtime(&h, &["sh", "--no-autorestart", "--", "-c", "kill -TERM $$"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out));
    // Bad words are usage errors.
    let out = h.corral(&["runtime", &cfg, "--exit-with", "most"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--exit-with most"), "{}", text(&out));
}

#[test]
fn sigterm_stops_every_app_within_its_kill_timeout_and_exits_zero() {
    let h = TestHome::new();
    let cfg = write_config(
        &h,
        json!([
            {"name": "stubborn", "script": "sh", "args": ["-c", "trap '' INT TERM; echo up; while :; do sleep 1; done"], "kill_timeout": 700},
            {"name": "polite", "script": "sleep", "args": ["1000"]},
        ]),
    );
    let child = spawn_runtime(&h, &[&cfg]);
    let pid = child.id() as i32;
    // The socket is served meanwhile: corral ls works against it.
    // Served, not just bound: the file appears at bind(2), before listen(2).
    wait_until(SOON, "the runtime serves", || {
        std::os::unix::net::UnixStream::connect(h.socket()).is_ok()
    });
    wait_until(SOON, "both apps online", || {
        h.list()
            .iter()
            .filter(|d| d["pm2_env"]["status"] == "online")
            .count()
            == 2
    });
    let stubborn = pid_of(&h.describe("stubborn"));
    let began = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM the runtime");
    let out = finish(child, Duration::from_secs(15));
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(took >= Duration::from_millis(600), "stopped in {took:?}");
    assert!(took < Duration::from_secs(8), "stopped in {took:?}");
    assert!(!running(stubborn), "the stubborn app was SIGKILLed");
}

#[test]
fn a_second_sigterm_sigkills_at_once() {
    let h = TestHome::new();
    let child = spawn_runtime(
        &h,
        &[
            "sh",
            "--name",
            "stubborn",
            "--kill-timeout",
            "60s",
            "--",
            "-c",
            "trap '' INT TERM; while :; do sleep 1; done",
        ],
    );
    let pid = child.id() as i32;
    // Served, not just bound: the file appears at bind(2), before listen(2).
    wait_until(SOON, "the runtime serves", || {
        std::os::unix::net::UnixStream::connect(h.socket()).is_ok()
    });
    wait_until(SOON, "the app is online", || {
        h.list().iter().any(|d| d["pm2_env"]["status"] == "online")
    });
    let began = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM the runtime");
    wait_until(SOON, "the app is stopping", || {
        h.list()
            .iter()
            .any(|d| d["pm2_env"]["status"] == "stopping")
    });
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM the runtime again");
    let out = finish(child, Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(text(&out).contains("second stop signal"), "{}", text(&out));
}

/// As PID 1 of a fresh pid namespace (root only): 1000 orphans leave no
/// zombie, and an app ending with 3 makes the runtime exit 3.
#[test]
fn as_pid_1_of_a_pid_namespace_every_orphan_is_reaped() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for a pid namespace");
        return;
    }
    if Command::new("unshare").arg("--help").output().is_err() {
        eprintln!("skipped: no unshare(1)");
        return;
    }
    let h = TestHome::new();
    // 1000 orphans (each subshell's child outlives it), then count zombies
    // in the namespace's /proc: exit 3 if there are none.
    let script = h.script(
        "orphans.sh",
        r#"#!/bin/sh
i=0
while [ $i -lt 1000 ]; do (sleep 0.01 &); i=$((i+1)); done
sleep 2
z=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)
echo "pid1=$(cat /proc/1/comm) zombies=$z"
[ "$z" -eq 0 ] && exit 3
exit 1
"#,
    );
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(bin())
        .args(["runtime", script.to_str().unwrap(), "--no-autorestart"])
        .env("CORRAL_HOME", &h.home)
        .current_dir(&h.work)
        .output()
        .expect("run unshare");
    let all = text(&out);
    if all.contains("unshare failed") || all.contains("Operation not permitted") {
        eprintln!("skipped: pid namespaces are not allowed here: {all}");
        return;
    }
    assert!(all.contains("pid1=corral zombies=0"), "{all}");
    assert_eq!(out.status.code(), Some(3), "{all}");
}
