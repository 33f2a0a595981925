//! The journal: a daemon that dies without warning is followed by one that
//! brings every app back — none lost, none duplicated, a recycled pid never
//! touched — while a clean stop, an earlier boot or a torn journal start
//! nothing behind the user's back.

use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::util::*;

/// Processes this test started outside any daemon, or whose daemon it
/// killed: SIGKILLed by pid when the test ends, pass or fail.
struct Leftovers(Vec<i32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in &self.0 {
            if running(*pid) {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
    }
}

/// Pids whose environment holds `MARK=<mark>` (how many copies run).
fn marked(mark: &str) -> Vec<i32> {
    let needle = format!("MARK={mark}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) && running(pid) {
            out.push(pid);
        }
    }
    out
}

fn sigkill_daemon(h: &TestHome) {
    let pid = h.daemon_pid();
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL the daemon");
    wait_gone(pid, "the daemon");
}

fn names_and_ids(list: &[Value]) -> Vec<(String, u64, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or("").to_string(),
                d["pm_id"].as_u64().unwrap_or(0),
                d["pm2_env"]["namespace"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_sigkilled_daemon_is_followed_by_one_that_brings_every_app_back_once() {
    let h = TestHome::started();
    let mark = format!("rec{}", std::process::id());
    let env = |n: &str| json!({"MARK": format!("{mark}-{n}")});
    h.start(json!({"name": "quiet", "script": "sleep", "args": ["1000"], "env": env("quiet")}));
    h.start(
        json!({"name": "chatty", "script": "sh", "env": env("chatty"), "namespace": "ns1",
        "args": ["-c", "while :; do echo tick; done"]}),
    );
    h.start(
        json!({"name": "pair", "script": "sleep", "args": ["1000"], "env": env("pair"),
        "instances": 2, "exec_mode": "cluster"}),
    );
    h.start(json!({"name": "resting", "script": "sleep", "args": ["1000"], "env": env("resting")}));
    h.ok(json!({"cmd": "stop", "target": "resting"}));
    // Counters come back too.
    h.ok(json!({"cmd": "restart", "target": "quiet"}));
    h.wait_status("quiet", "online");
    let before = h.list();
    assert_eq!(before.len(), 5);
    let old_pids: Vec<i32> = before.iter().map(pid_of).filter(|p| *p > 0).collect();
    let _leftovers = Leftovers(old_pids.clone());

    sigkill_daemon(&h);
    // The next command brings a daemon up; the same five, same pm_ids.
    let out = h.corral(&["jlist"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after: Vec<Value> = serde_json::from_slice(&out.stdout).expect("jlist is JSON");
    assert_eq!(names_and_ids(&after), names_and_ids(&before));
    wait_until(
        SOON,
        "every app but the stopped one is online again",
        || {
            h.list()
                .iter()
                .filter(|d| d["pm2_env"]["status"] == "online")
                .count()
                == 4
        },
    );
    assert_eq!(h.status("resting"), "stopped");
    assert_eq!(h.describe("quiet")["pm2_env"]["restart_time"], json!(1));
    assert_eq!(h.describe("chatty")["pm2_env"]["namespace"], json!("ns1"));
    // The old processes are gone, and exactly one copy of each runs.
    for pid in &old_pids {
        wait_gone(*pid, "an old daemon's process");
    }
    for (n, want) in [("quiet", 1), ("chatty", 1), ("pair", 2), ("resting", 0)] {
        assert_eq!(marked(&format!("{mark}-{n}")).len(), want, "copies of {n}");
    }
    let log = h.daemon_log();
    assert!(log.contains("died; bringing back 5 apps"), "{log}");
    assert!(log.contains("start (recovered)"), "{log}");
}

#[test]
fn a_recycled_pid_is_never_signalled() {
    let h = TestHome::started();
    h.start(json!({"name": "app", "script": "sleep", "args": ["1000"]}));
    let app_pid = pid_of(&h.describe("app"));
    let _leftovers = Leftovers(vec![app_pid]);
    sigkill_daemon(&h);
    // The app's process dies meanwhile; an unrelated process stands where
    // the journal says it was: same pid in the journal, another start time.
    kill(Pid::from_raw(app_pid), Signal::SIGKILL).expect("kill the app");
    let mut stranger: Child = Command::new("sleep")
        .arg("1000")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn a stranger");
    let stranger_pid = stranger.id() as i32;
    let _more = Leftovers(vec![stranger_pid]);
    let path = h.home.join("journal.json");
    let mut j: Value = serde_json::from_str(&read(&path)).expect("a journal");
    j["apps"][0]["processes"] = json!([{"pid": stranger_pid, "starttime": 1}]);
    std::fs::write(&path, j.to_string()).expect("rewrite the journal");

    let out = h.corral(&["ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.wait_status("app", "online");
    assert!(running(stranger_pid), "the stranger was signalled");
    assert!(!h.daemon_log().contains("still runs"), "{}", h.daemon_log());
    let _ = stranger.kill();
    let _ = stranger.wait();
}

#[test]
fn a_clean_stop_or_an_earlier_boot_starts_nothing() {
    let h = TestHome::started();
    h.start(json!({"name": "app", "script": "sleep", "args": ["1000"]}));
    let out = h.corral(&["kill"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let j: Value = serde_json::from_str(&read(&h.home.join("journal.json"))).expect("a journal");
    assert_eq!(j["clean"], json!(true));
    assert_eq!(h.corral(&["ping"]).status.code(), Some(0));
    assert_eq!(h.list().len(), 0, "a clean stop is not recovered");
    assert!(h.daemon_log().contains("stopped cleanly"));

    // A daemon of an earlier boot that died: nothing starts either.
    h.start(json!({"name": "app2", "script": "sleep", "args": ["1000"]}));
    let pid = pid_of(&h.describe("app2"));
    let _leftovers = Leftovers(vec![pid]);
    sigkill_daemon(&h);
    let path = h.home.join("journal.json");
    let mut j: Value = serde_json::from_str(&read(&path)).expect("a journal");
    j["boot_id"] = json!("00000000-0000-0000-0000-000000000000");
    std::fs::write(&path, j.to_string()).expect("rewrite the journal");
    assert_eq!(h.corral(&["ping"]).status.code(), Some(0));
    assert_eq!(h.list().len(), 0, "an earlier boot is not recovered");
    assert!(
        h.daemon_log().contains("earlier boot"),
        "{}",
        h.daemon_log()
    );
    assert!(running(pid), "nothing of an earlier boot is touched");
}

#[test]
fn a_torn_journal_is_set_aside_with_a_message() {
    let h = TestHome::started();
    h.start(json!({"name": "app", "script": "sleep", "args": ["1000"]}));
    let pid = pid_of(&h.describe("app"));
    let _leftovers = Leftovers(vec![pid]);
    sigkill_daemon(&h);
    let path = h.home.join("journal.json");
    let whole = read(&path);
    std::fs::write(&path, &whole[..whole.len() / 2]).expect("tear the journal");
    let out = h.corral(&["ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(h.list().len(), 0);
    let log = h.daemon_log();
    assert!(log.contains("starting afresh"), "{log}");
    assert!(h.home.join("journal.json.corrupt").exists());
    // And the daemon is usable: a new app, a new journal.
    h.start(json!({"name": "fresh", "script": "sleep", "args": ["1000"]}));
    wait_until(SOON, "a new journal names the new app", || {
        read(&path).contains("fresh")
    });
}
