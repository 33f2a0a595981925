//! PM2's command line from the outside (issue 14): several targets in one
//! command, `/regex/`, script and config-file targets, `all` with nothing
//! to act on, restart/reload with new options (`--update-env`, `--env`,
//! `--watch` toggles, `stop --watch`), `startOrRestart` and a `start` of a
//! config that runs, `prettylist`, `env`, `id`, `pid`, `send` to stdin,
//! `kill` without a daemon, typo suggestions, colours, short names for
//! command lines, per-instance pid files, `wait_ready` in cluster mode and
//! its `process:msg`, and `monit` under tmux.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

fn read_opt(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `corral <args>` that must exit 0; its stdout.
fn ok(h: &TestHome, args: &[&str]) -> String {
    let out = h.corral(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "corral {args:?}: {}",
        text(&out)
    );
    stdout(&out)
}

/// A sleeper started from the command line under `name`.
fn sleeper(h: &TestHome, name: &str) {
    ok(
        h,
        &["start", "sleep", "--name", name, "-k", "300", "--", "1000"],
    );
}

fn statuses(h: &TestHome) -> Vec<(String, String)> {
    h.list()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or("").to_string(),
                env_of(d, "status").as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn several_targets_regex_script_and_all() {
    let h = TestHome::started();
    for n in ["api-1", "api-2", "web", "db"] {
        sleeper(&h, n);
    }
    // PM2's -k for --kill-timeout.
    assert_eq!(env_of(&h.describe("web"), "kill_timeout"), json!(300));
    // Two targets at once: a pm_id and a name.
    ok(&h, &["stop", "0", "web", "--json"]);
    let st = statuses(&h);
    assert_eq!(
        st,
        vec![
            ("api-1".into(), "stopped".into()),
            ("api-2".into(), "online".into()),
            ("web".into(), "stopped".into()),
            ("db".into(), "online".into()),
        ],
        "{st:?}"
    );
    // A regex, tested against each name as PM2 does.
    let out = ok(&h, &["restart", "/^api-\\d$/", "--json"]);
    let done: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut names: Vec<&str> = done.iter().map(|d| d["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["api-1", "api-2"], "{out}");
    let out = h.corral(&["stop", "/^nothing/"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("no process matches"),
        "{}",
        text(&out)
    );
    let out = h.corral(&["stop", "/(unclosed/"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // A script path: the apps running that script.
    h.script("tick.sh", "exec sleep 1000\n");
    ok(&h, &["start", "tick.sh", "--name", "ticker"]);
    ok(&h, &["stop", "tick.sh"]);
    assert_eq!(h.status("ticker"), "stopped");
    assert_eq!(h.status("db"), "online", "only the script's app stopped");
    // A name that matches nothing is refused, and nothing changes.
    let out = h.corral(&["stop", "db", "ghost"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // `all` with nothing to act on exits 1, as PM2's does.
    ok(&h, &["delete", "all"]);
    let out = h.corral(&["stop", "all"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("no process found"), "{}", text(&out));
}

#[test]
fn config_file_targets_only_and_start_or_restart() {
    let h = TestHome::started();
    h.script(
        "eco.json",
        r#"{apps: [
            {name: "one", script: "sleep", args: "1000", kill_timeout: 300},
            {name: "two", script: "sleep", args: "1000", kill_timeout: 300},
        ]}"#,
    );
    sleeper(&h, "bystander");
    ok(&h, &["start", "eco.json"]);
    // stop <config> --only one: that app only.
    ok(&h, &["stop", "eco.json", "--only", "one"]);
    assert_eq!(h.status("one"), "stopped");
    assert_eq!(h.status("two"), "online");
    // restart <config>: its apps, the stopped one started again.
    let before = pid_of(&h.describe("two"));
    ok(&h, &["restart", "eco.json"]);
    assert_eq!(h.status("one"), "online");
    assert_ne!(pid_of(&h.describe("two")), before, "two restarted");
    assert_eq!(env_of(&h.describe("bystander"), "restart_time"), json!(0));
    // A start of a config whose apps run restarts them (startOrRestart),
    // with the config's new options.
    h.script(
        "eco.json",
        r#"{apps: [
            {name: "one", script: "sleep", args: "1000", kill_timeout: 300, env: {COLOUR: "blue"}},
            {name: "two", script: "sleep", args: "1000", kill_timeout: 300},
            {name: "three", script: "sleep", args: "1000", kill_timeout: 300},
        ]}"#,
    );
    let restarts = env_of(&h.describe("one"), "restart_time").as_u64().unwrap();
    ok(&h, &["start", "eco.json"]);
    let one = h.describe("one");
    assert_eq!(env_of(&one, "restart_time").as_u64(), Some(restarts + 1));
    assert_eq!(env_of(&one, "env")["COLOUR"], json!("blue"), "{one}");
    assert_eq!(h.status("three"), "online", "the new app started");
    ok(&h, &["startOrReload", "eco.json", "--only", "three"]);
    assert_eq!(env_of(&h.describe("three"), "restart_time"), json!(1));
    ok(&h, &["startOrRestart", "eco.json"]);
    ok(&h, &["startOrGracefulReload", "eco.json", "--only", "two"]);
    // `stop -`: the apps of a config on stdin.
    let file = std::fs::File::open(h.work.join("eco.json")).unwrap();
    let out = run_with_stdin(h.command(&["stop", "-", "--only", "two"]), file.into());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(h.status("two"), "stopped");
    assert_eq!(h.status("one"), "online");
    // delete <config>: its apps, not the others.
    ok(&h, &["delete", "eco.json"]);
    let names: Vec<String> = statuses(&h).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["bystander".to_string()]);
}

#[test]
fn restart_with_new_options_and_update_env() {
    let h = TestHome::started();
    // Prints the variables it was given, then waits.
    h.script(
        "env.sh",
        "echo \"FOO=${FOO-unset} BAR=${BAR-unset} MODE=${MODE-unset}\"\nexec sleep 1000\n",
    );
    h.script(
        "eco.json",
        r#"{"apps": [{"name": "envy", "script": "env.sh", "kill_timeout": 300,
                      "env_production": {"MODE": "prod"}}]}"#,
    );
    let mut start = h.command(&["start", "eco.json"]);
    start.env("FOO", "1").env("BAR", "2");
    let out = run(start);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.wait_log("envy", "FOO=1 BAR=2 MODE=unset");
    // Without --update-env the environment stays (PM2's immutable env).
    let mut again = h.command(&["restart", "envy"]);
    again.env_remove("BAR").env("FOO", "9");
    assert_eq!(run(again).status.code(), Some(0));
    wait_until(SOON, "a second line", || {
        h.out_log("envy").lines().count() >= 2
    });
    assert!(
        h.out_log("envy").ends_with("FOO=1 BAR=2 MODE=unset\n"),
        "{}",
        h.out_log("envy")
    );
    // --update-env (-a): the caller's environment now, BAR gone with it.
    let mut upd = h.command(&["restart", "envy", "-a", "--env", "production"]);
    upd.env_remove("BAR").env("FOO", "9");
    let out = run(upd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.wait_log("envy", "FOO=9 BAR=unset MODE=prod");
    assert_eq!(env_of(&h.describe("envy"), "env")["MODE"], json!("prod"));
    // Start flags on restart: what describe shows afterwards.
    ok(
        &h,
        &[
            "restart",
            "envy",
            "--max-memory-restart",
            "100M",
            "--cron-restart",
            "0 0 * * *",
            "--kill-timeout",
            "700",
            "--node-args",
            "--max-old-space-size=64",
        ],
    );
    let d = h.describe("envy");
    assert_eq!(env_of(&d, "max_memory_restart"), json!(104_857_600), "{d}");
    assert_eq!(env_of(&d, "cron_restart"), json!("0 0 * * *"), "{d}");
    assert_eq!(env_of(&d, "kill_timeout"), json!(700), "{d}");
    assert_eq!(
        env_of(&d, "node_args"),
        json!(["--max-old-space-size=64"]),
        "{d}"
    );
    // Options that would make it another app are refused, naming them.
    let out = h.corral(&["restart", "envy", "-i", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("instances"), "{}", text(&out));
    // --env of a set the app does not have.
    let out = h.corral(&["restart", "envy", "--env", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("env_nope"), "{}", text(&out));
}

#[test]
fn watch_toggles_with_restart_and_stops_with_stop() {
    let h = TestHome::started();
    sleeper(&h, "w");
    let watching = |h: &TestHome| env_of(&h.describe("w"), "watch") == json!(true);
    ok(&h, &["restart", "w", "--watch"]);
    assert!(watching(&h), "restart --watch turns watching on");
    ok(&h, &["restart", "w", "--watch"]);
    assert!(!watching(&h), "and off again");
    ok(&h, &["restart", "w", "--watch"]);
    ok(&h, &["stop", "w", "--watch"]);
    assert!(!watching(&h), "stop --watch stops watching");
    ok(&h, &["restart", "w"]);
    assert!(!watching(&h), "a later restart does not watch again");
    assert_eq!(h.status("w"), "online");
}

#[test]
fn prettylist_env_id_and_pid() {
    let h = TestHome::started();
    ok(
        &h,
        &[
            "start",
            "sleep",
            "--name",
            "lister",
            "--kill-timeout",
            "300",
            "-i",
            "2",
            "--",
            "1000",
        ],
    );
    h.script(
        "e.json",
        r#"{"apps": [{"name": "envd", "script": "sleep", "args": "1000", "env": {"K": "v"}}]}"#,
    );
    ok(&h, &["start", "e.json"]);
    let pretty = ok(&h, &["prettylist"]);
    assert!(pretty.contains("\n  {"), "indented: {pretty}");
    let v: Value = serde_json::from_str(&pretty).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(3));
    assert_eq!(ok(&h, &["id", "lister"]).trim(), "[0,1]");
    assert_eq!(ok(&h, &["id", "ghost"]).trim(), "[]");
    let env = ok(&h, &["env", "2"]);
    assert_eq!(env, "K: v\n");
    let out = h.corral(&["env", "9"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let pids: Vec<i32> = ok(&h, &["pid", "lister"])
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let want: Vec<i32> = h.describe_all(json!("lister")).iter().map(pid_of).collect();
    assert_eq!(pids, want);
    assert_eq!(ok(&h, &["pid"]).lines().count(), 3);
    ok(&h, &["stop", "envd"]);
    assert_eq!(ok(&h, &["pid", "envd"]).trim(), "0");
}

#[test]
fn send_writes_a_line_to_stdin() {
    let h = TestHome::started();
    h.script(
        "echo.sh",
        "while read -r line; do echo \"got $line\"; done\necho eof\nexec sleep 1000\n",
    );
    ok(&h, &["start", "echo.sh", "--kill-timeout", "300"]);
    let id = h.describe("echo")["pm_id"].to_string();
    ok(&h, &["send", &id, "hello", "world"]);
    h.wait_log("echo", "got hello world\n");
    // stdin: false keeps /dev/null: the app sees end of file at once.
    h.script(
        "quiet.json",
        r#"{"apps": [{"name": "quiet", "script": "echo.sh", "stdin": false, "kill_timeout": 300}]}"#,
    );
    ok(&h, &["start", "quiet.json"]);
    h.wait_log("quiet", "eof\n");
    let qid = h.describe("quiet")["pm_id"].to_string();
    let out = h.corral(&["send", &qid, "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("no stdin pipe"), "{}", text(&out));
    // An app that does not read fills its pipe: refused, never a hang.
    ok(&h, &["start", "sleep", "--name", "deaf", "--", "1000"]);
    let did = h.describe("deaf")["pm_id"].to_string();
    let long = "x".repeat(4000);
    let started = Instant::now();
    let mut refused = None;
    for _ in 0..40 {
        let out = h.corral(&["send", &did, &long]);
        if out.status.code() != Some(0) {
            refused = Some(out);
            break;
        }
    }
    let out = refused.expect("a full pipe refuses the line");
    assert!(
        stderr(&out).contains("does not read its stdin"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // Too long for one atomic write.
    let out = h.corral(&["send", &did, &"y".repeat(5000)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // msg (the IPC message verb) is its own verb now.
    let out = h.corral(&["msg", "99", "1"]);
    assert_eq!(out.status.code(), Some(1), "no pm_id 99: {}", text(&out));
}

#[test]
fn kill_without_daemon_and_its_count() {
    let h = TestHome::new();
    let out = h.corral(&["kill"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(stdout(&out), "", "no success line");
    assert!(
        stderr(&out).contains("no daemon is running"),
        "{}",
        text(&out)
    );
    let out = h.corral(&["kill", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(v, json!({"stopped": 0, "running": false}));
    // The count includes stopped apps.
    sleeper(&h, "a");
    sleeper(&h, "b");
    ok(&h, &["stop", "a"]);
    let v: Value = serde_json::from_str(&ok(&h, &["kill", "--json"])).expect("JSON");
    assert_eq!(v, json!({"stopped": 2, "running": true}));
}

#[test]
fn typos_get_suggestions_and_colours_follow_the_rules() {
    let h = TestHome::started();
    let out = h.corral(&["restrat", "all"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("did you mean `restart`?"),
        "{}",
        text(&out)
    );
    let out = h.corral(&["start", "sleep", "--wach"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("did you mean --watch?"),
        "{}",
        text(&out)
    );
    let out = h.corral(&["stop", "x", "--zzzzzzzz"]);
    assert!(!stderr(&out).contains("did you mean"), "{}", text(&out));
    // Not a terminal, or --no-color: no escapes.
    sleeper(&h, "plain");
    let list = ok(&h, &["ls", "--no-color"]);
    assert!(!list.contains('\x1b'), "{list}");
    // A command line's default name is its first word's stem.
    ok(&h, &["start", "sleep 1000", "--kill-timeout", "300"]);
    assert_eq!(h.status("sleep"), "online");
    // All-digit names are refused: they read as pm_ids.
    let out = h.corral(&["start", "sleep", "--name", "123"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("all digits"), "{}", text(&out));
}

#[test]
fn pid_files_are_per_instance() {
    let h = TestHome::started();
    ok(
        &h,
        &[
            "start",
            "sleep",
            "--name",
            "echo",
            "-i",
            "2",
            "-p",
            "run/echo.pid",
            "--",
            "1000",
        ],
    );
    let all = h.describe_all(json!("echo"));
    for d in &all {
        let id = d["pm_id"].as_u64().unwrap();
        let path = h.work.join(format!("run/echo-{id}.pid"));
        wait_until(SOON, "the pid file", || path.exists());
        assert_eq!(read(&path).trim(), pid_of(d).to_string());
        assert_eq!(env_of(d, "pm_pid_path"), json!(path.display().to_string()));
    }
    assert!(!h.work.join("run/echo.pid").exists());
}

/// A Node worker that listens but never says ready; and one that says it.
const NEVER_READY: &str = "require('http').createServer((q, s) => s.end('x'))\
  .listen(+process.env.PORT, '127.0.0.1', () => console.log('listening'));\n";
const SAYS_READY: &str = "require('http').createServer((q, s) => s.end('x'))\
  .listen(+process.env.PORT, '127.0.0.1', () => { console.log('listening'); process.send('ready'); });\n";

fn has_node() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn wait_ready_holds_in_cluster_mode() {
    if !has_node() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let h = TestHome::started();
    h.script("never.js", NEVER_READY);
    let port = free_port().to_string();
    let t0 = Instant::now();
    let mut c = h.command(&[
        "start",
        "never.js",
        "-i",
        "1",
        "--wait-ready",
        "--listen-timeout",
        "2500",
        "--kill-timeout",
        "300",
    ]);
    c.env("PORT", &port);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2400),
        "the start waited for ready until listen_timeout: {took:?}"
    );
    assert_eq!(
        env_of(&h.describe("never"), "exec_mode"),
        json!("cluster_mode")
    );
}

#[test]
fn one_ready_gives_one_process_msg_per_worker() {
    if !has_node() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let h = TestHome::started();
    h.script("says.js", SAYS_READY);
    h.script("never.js", NEVER_READY);
    let mut bus = h.subscribe(Some(&["process:msg"]));
    let port = free_port().to_string();
    let mut c = h.command(&["start", "says.js", "-i", "2", "--kill-timeout", "300"]);
    c.env("PORT", &port);
    assert_eq!(run(c).status.code(), Some(0));
    let port2 = free_port().to_string();
    let mut c = h.command(&["start", "never.js", "-i", "1", "--kill-timeout", "300"]);
    c.env("PORT", &port2);
    assert_eq!(run(c).status.code(), Some(0));
    let log = h.home.join("logs/never-out-2.log");
    wait_until(SOON, "never.js listens", || {
        read_opt(&log).contains("listening")
    });
    // Quiet for a while: every event there will be has come.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let _ = bus.next_within(Duration::from_millis(200));
    }
    let mut per_id = std::collections::BTreeMap::new();
    for ev in &bus.seen {
        let name = ev["data"]["process"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *per_id
            .entry((name, ev["data"]["process"]["pm_id"].clone().to_string()))
            .or_insert(0) += 1;
        assert_eq!(ev["data"]["raw"], json!("ready"), "{ev}");
    }
    let counts: Vec<u32> = per_id.values().copied().collect();
    assert_eq!(
        counts,
        vec![1, 1],
        "one ready per says.js worker, none for never.js: {per_id:?}"
    );
}

#[test]
fn monit_refuses_without_a_terminal() {
    let h = TestHome::started();
    let out = h.corral(&["monit"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("needs a terminal"), "{}", text(&out));
}

/// tmux, on a server of its own (its socket in the test's directory).
fn tmux(h: &TestHome, args: &[&str]) -> Output {
    let sock = h.root.join("tmux.sock");
    Command::new("tmux")
        .arg("-S")
        .arg(&sock)
        .args(args)
        .output()
        .expect("run tmux")
}

/// A detached tmux session `name` of `size` (columns, rows) running `cmd`.
fn tmux_session(h: &TestHome, name: &str, size: (u16, u16), cmd: &str) {
    let (x, y) = (size.0.to_string(), size.1.to_string());
    let out = tmux(
        h,
        &["new-session", "-d", "-x", &x, "-y", &y, "-s", name, cmd],
    );
    assert!(out.status.success(), "tmux: {}", text(&out));
}

/// What `screen` shows once `done` holds for it, or at `SOON`'s end: the
/// caller asserts on it, so a miss shows the last screen.
fn screen_until(screen: impl Fn() -> String, mut done: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + SOON;
    loop {
        let last = screen();
        if done(&last) || Instant::now() >= deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn monit_draws_apps_and_logs_and_restores_the_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let h = TestHome::started();
    h.script("talk.sh", "echo 'hello from talk'\nexec sleep 1000\n");
    ok(&h, &["start", "talk.sh", "--kill-timeout", "300"]);
    h.wait_log("talk", "hello from talk");
    let cmd = format!(
        "env CORRAL_HOME={} {} monit; echo monit-exit=$?; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; sleep 1000",
        h.home.display(),
        bin().display()
    );
    tmux_session(&h, "m", (100, 30), &cmd);
    let screen = |h: &TestHome| stdout(&tmux(h, &["capture-pane", "-p", "-t", "m"]));
    let cleanup = |h: &TestHome| {
        let _ = tmux(h, &["kill-server"]);
    };
    let last = screen_until(
        || screen(&h),
        |s| s.contains("talk") && s.contains("online") && s.contains("hello from talk"),
    );
    if !(last.contains("online") && last.contains("hello from talk")) {
        cleanup(&h);
        panic!("monit did not draw the app and its log: {last}");
    }
    let _ = tmux(&h, &["send-keys", "-t", "m", "q"]);
    let last = screen_until(
        || screen(&h),
        |s| s.contains("monit-exit=") && s.contains("icanon"),
    );
    cleanup(&h);
    assert!(last.contains("monit-exit=0"), "q quits with 0: {last}");
    // Canonical mode is back (`icanon`, not `-icanon`).
    assert!(
        last.lines().any(|l| l.trim() == "icanon"),
        "the terminal is restored: {last}"
    );
    assert!(!Path::new("/nonexistent").exists());
}

#[test]
fn monit_restores_the_terminal_on_sigint() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let h = TestHome::started();
    let pidfile = h.root.join("monit.pid");
    let cmd = format!(
        "sh -c 'echo $$ > {}; exec env CORRAL_HOME={} {} monit'; echo monit-exit=$?; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; sleep 1000",
        pidfile.display(),
        h.home.display(),
        bin().display()
    );
    tmux_session(&h, "m", (100, 30), &cmd);
    let screen = |h: &TestHome| stdout(&tmux(h, &["capture-pane", "-p", "-t", "m"]));
    wait_until(SOON, "monit draws", || screen(&h).contains("corral monit"));
    let pid: i32 = read(&pidfile).trim().parse().unwrap();
    // SAFETY: kill(2) on the monit process this test started.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let last = screen_until(
        || screen(&h),
        |s| s.contains("monit-exit=") && s.contains("icanon"),
    );
    let _ = tmux(&h, &["kill-server"]);
    assert!(last.contains("monit-exit=0"), "SIGINT ends it: {last}");
    assert!(
        last.lines().any(|l| l.trim() == "icanon"),
        "the terminal is restored: {last}"
    );
}

#[test]
fn on_a_terminal_progress_lines_and_colours() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let h = TestHome::started();
    // Ignores SIGINT: its stop waits for the kill timeout.
    h.script("stubborn.sh", "trap '' INT\nwhile :; do sleep 1; done\n");
    ok(&h, &["start", "stubborn.sh", "--kill-timeout", "4000"]);
    let b = bin();
    let env = format!("env CORRAL_HOME={}", h.home.display());
    let cmd = format!(
        "{env} {b} stop stubborn > /dev/null; echo stop-done; {env} {b} ls; \
         {env} NO_COLOR=1 {b} ls; echo ls-done; sleep 1000",
        b = b.display()
    );
    tmux_session(&h, "p", (150, 40), &cmd);
    let screen = |h: &TestHome| stdout(&tmux(h, &["capture-pane", "-e", "-p", "-t", "p"]));
    let mut seen_progress = false;
    let last = screen_until(
        || screen(&h),
        |s| {
            seen_progress |= s.contains("corral: stopping stubborn");
            s.contains("ls-done")
        },
    );
    let _ = tmux(&h, &["kill-server"]);
    assert!(
        seen_progress,
        "a progress line while the stop waited: {last}"
    );
    assert!(last.contains("ls-done"), "{last}");
    assert!(
        !last.contains("corral: stopping"),
        "the progress line is erased: {last}"
    );
    // The first table is coloured (the status in red, the name in cyan),
    // the second one (NO_COLOR) is not.
    let after = last.split_once("stop-done").map_or("", |(_, r)| r);
    let rows: Vec<&str> = after.lines().filter(|l| l.contains("stubborn")).collect();
    assert_eq!(rows.len(), 2, "{last:?}");
    assert!(
        rows[0].contains("\x1b[31mstopped"),
        "colours on a terminal: {last:?}"
    );
    assert!(
        rows[0].contains("36mstubborn"),
        "the name coloured: {last:?}"
    );
    assert!(!rows[1].contains('\x1b'), "NO_COLOR: {last:?}");
}
