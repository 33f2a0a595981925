//! The verbs: ping, start (command, script, config files), stop, restart,
//! reload, delete, reset, describe, list, send_signal, kill_daemon, and the
//! four kinds of target.

use std::path::Path;

use serde_json::{Value, json};

use crate::util::*;

/// A long-running app started over the socket.
fn sleeper(h: &TestHome, name: &str) -> Value {
    let started = h.start(json!({
        "name": name, "script": "sleep", "args": ["1000"], "kill_timeout": 300,
    }));
    assert_eq!(started.len(), 1, "one app started: {started:?}");
    started[0].clone()
}

fn names(list: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .map(|d| d["name"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn ping_answers_with_pid_and_protocol() {
    let h = TestHome::new();
    let out = h.corral(&["ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("ping prints JSON");
    assert_eq!(v["protocol"], json!(1));
    assert_eq!(v["pid"].as_i64(), Some(h.daemon_pid() as i64));
    assert!(v["version"].is_string(), "{v}");
    assert!(running(h.daemon_pid()));
    // The short form on the raw socket.
    let r = h.connect().call_line("ping");
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["result"]["pid"], v["pid"]);
    // The id is echoed.
    let r = h.request(json!({"id": "abc", "cmd": "ping"}));
    assert_eq!(r["id"], json!("abc"));
}

#[test]
fn start_a_command_on_path_with_args() {
    let h = TestHome::new();
    let out = h.corral(&["start", "sleep", "--name", "napper", "--", "1000"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = h.describe("napper");
    assert_eq!(env_of(&d, "status"), "online");
    assert_eq!(env_of(&d, "args"), json!(["1000"]));
    assert_eq!(env_of(&d, "restart_time"), json!(0));
    let pid = pid_of(&d);
    assert!(running(pid), "pid {pid} runs");
    let cmdline = read(Path::new(&format!("/proc/{pid}/cmdline")));
    let argv: Vec<&str> = cmdline.split('\0').collect();
    assert!(argv[0].ends_with("sleep"), "{argv:?}");
    assert_eq!(argv[1], "1000", "{argv:?}");
    assert_eq!(proc_state(pid).map(|s| s.1), Some(h.daemon_pid()));
}

#[test]
fn start_a_relative_script_in_its_cwd() {
    let h = TestHome::new();
    h.script("sub/app.sh", "echo \"cwd=$(pwd)\"\nexec sleep 1000\n");
    let out = h.corral(&["start", "app.sh", "--cwd", "sub"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = h.describe("app");
    assert_eq!(env_of(&d, "status"), "online");
    assert_eq!(env_of(&d, "exec_interpreter"), "bash");
    let sub = h.work.join("sub");
    let log = h.wait_log("app", "cwd=");
    assert!(
        log.contains(&format!("cwd={}\n", sub.display())),
        "log: {log:?}"
    );
    assert_eq!(
        Path::new(env_of(&d, "pm_cwd").as_str().unwrap()),
        sub.as_path()
    );
}

#[test]
fn start_config_files_of_every_shape() {
    let h = TestHome::new();
    let app =
        |name: &str| json!({"name": name, "script": "sleep", "args": "1000", "kill_timeout": 300});
    let files = [
        ("apps.json", json!({"apps": [app("a1"), app("a2")]})),
        ("array.json", json!([app("b1"), app("b2")])),
        ("one.json", app("c1")),
    ];
    for (file, content) in &files {
        std::fs::write(h.work.join(file), content.to_string()).unwrap();
        let out = h.corral(&["start", file]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out));
    }
    let list = h.list();
    assert_eq!(names(&list), ["a1", "a2", "b1", "b2", "c1"]);
    for d in &list {
        assert_eq!(env_of(d, "status"), "online", "{d}");
        assert_eq!(env_of(d, "args"), json!(["1000"]));
    }
}

#[test]
fn start_only_some_apps_of_a_config_file() {
    let h = TestHome::new();
    let app = |name: &str| json!({"name": name, "script": "sleep", "args": ["1000"]});
    let eco = json!({"apps": [app("web"), app("worker"), app("cron")]});
    std::fs::write(h.work.join("eco.json"), eco.to_string()).unwrap();
    let out = h.corral(&["start", "eco.json", "--only", "worker,cron"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(names(&h.list()), ["cron", "worker"]);
}

#[test]
fn start_with_env_selects_env_name() {
    let h = TestHome::new();
    h.script("stage.sh", "echo \"STAGE=$STAGE\"\nexec sleep 1000\n");
    let eco = json!({"apps": [{
        "name": "staged", "script": "stage.sh",
        "env": {"STAGE": "dev"},
        "env_production": {"STAGE": "prod"},
    }]});
    std::fs::write(h.work.join("eco.json"), eco.to_string()).unwrap();
    let out = h.corral(&["start", "eco.json", "--env", "production"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = h.wait_log("staged", "STAGE=");
    assert!(log.contains("STAGE=prod\n"), "log: {log:?}");
    let d = h.describe("staged");
    assert_eq!(env_of(&d, "env")["STAGE"], json!("prod"));
}

#[test]
fn stop_ends_the_process_and_keeps_the_app() {
    let h = TestHome::started();
    let d = sleeper(&h, "st");
    let pid = pid_of(&d);
    let out = h.corral(&["stop", "st"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The answer comes once stopped: no waiting needed.
    let d = h.describe("st");
    assert_eq!(env_of(&d, "status"), "stopped");
    assert_eq!(d["pid"], json!(0));
    assert_eq!(env_of(&d, "restart_time"), json!(0));
    assert!(!running(pid), "pid {pid} still runs after stop");
}

#[test]
fn restart_keeps_pm_id_with_a_new_pid() {
    let h = TestHome::started();
    let d = sleeper(&h, "rs");
    let (id, pid) = (d["pm_id"].clone(), pid_of(&d));
    let r = h.ok(json!({"cmd": "restart", "target": "rs"}));
    let d2 = &r[0];
    assert_eq!(d2["pm_id"], id);
    assert_eq!(env_of(d2, "status"), "online");
    assert_eq!(env_of(d2, "restart_time"), json!(1));
    let pid2 = pid_of(d2);
    assert!(pid2 > 0 && pid2 != pid, "new pid {pid2} vs {pid}");
    assert!(!running(pid), "old pid {pid} still runs");
    assert!(running(pid2));
    // Through the CLI as well.
    let out = h.corral(&["restart", "rs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env_of(&h.describe("rs"), "restart_time"), json!(2));
}

#[test]
fn reload_in_fork_mode_restarts() {
    let h = TestHome::started();
    let d = sleeper(&h, "rl");
    let pid = pid_of(&d);
    let r = h.ok(json!({"cmd": "reload", "target": "rl"}));
    assert_eq!(r[0]["pm_id"], d["pm_id"]);
    assert_eq!(env_of(&r[0], "status"), "online");
    assert_eq!(env_of(&r[0], "restart_time"), json!(1));
    assert_ne!(pid_of(&r[0]), pid);
    assert!(!running(pid));
}

#[test]
fn delete_frees_the_name_and_pm_ids_restart_from_0_when_empty() {
    let h = TestHome::started();
    let first = sleeper(&h, "del");
    let pid = pid_of(&first);
    let id = first["pm_id"].as_u64().unwrap();
    let r = h.ok(json!({"cmd": "delete", "target": "del"}));
    assert_eq!(r.as_array().map(Vec::len), Some(1), "{r}");
    assert!(h.list().is_empty());
    assert!(!running(pid));
    assert!(h.describe_all(json!("del")).is_empty());
    let again = sleeper(&h, "del");
    let id2 = again["pm_id"].as_u64().unwrap();
    // As PM2: an empty list numbers from 0 again.
    assert_eq!((id, id2), (0, 0), "pm_ids after the list emptied");
    // While the list is not empty, a deleted pm_id is not given again.
    let other = sleeper(&h, "other");
    assert_eq!(other["pm_id"], json!(1), "{other}");
    h.ok(json!({"cmd": "delete", "target": "other"}));
    let third = sleeper(&h, "third");
    assert_eq!(third["pm_id"], json!(2), "{third}");
    h.ok(json!({"cmd": "delete", "target": "third"}));
    // CLI delete, then the name is free once more.
    let out = h.corral(&["delete", "del"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(h.list().is_empty());
}

#[test]
fn reset_zeroes_the_counters() {
    let h = TestHome::started();
    sleeper(&h, "rz");
    h.ok(json!({"cmd": "restart", "target": "rz"}));
    h.ok(json!({"cmd": "restart", "target": "rz"}));
    assert_eq!(env_of(&h.describe("rz"), "restart_time"), json!(2));
    let r = h.ok(json!({"cmd": "reset", "target": "rz"}));
    assert_eq!(env_of(&r[0], "restart_time"), json!(0));
    let d = h.describe("rz");
    assert_eq!(env_of(&d, "restart_time"), json!(0));
    assert_eq!(env_of(&d, "unstable_restarts"), json!(0));
    assert_eq!(env_of(&d, "status"), "online");
}

#[test]
fn describe_of_an_unknown_target_is_empty_and_list_shows_all() {
    let h = TestHome::started();
    assert_eq!(
        h.ok(json!({"cmd": "describe", "target": "nosuch"})),
        json!([])
    );
    assert_eq!(h.ok(json!({"cmd": "describe", "target": 42})), json!([]));
    assert_eq!(h.ok(json!({"cmd": "list"})), json!([]));
    sleeper(&h, "l1");
    sleeper(&h, "l2");
    let list = h.list();
    assert_eq!(names(&list), ["l1", "l2"]);
    for d in &list {
        assert_eq!(d["name"], env_of(d, "name"));
        assert_eq!(d["pm_id"], env_of(d, "pm_id"));
        assert!(d["monit"]["memory"].is_u64(), "{d}");
    }
    // jlist prints the same list.
    let out = h.corral(&["jlist"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let j: Vec<Value> = serde_json::from_slice(&out.stdout).expect("jlist is JSON");
    assert_eq!(names(&j), ["l1", "l2"]);
}

/// `jlist` is written by the daemon field by field: read as the clients'
/// `Description` and written again by serde, it comes back byte for byte,
/// for apps that use the optional fields, odd strings, and every kind of
/// last exit; the `describe` of the raw socket and `corral describe
/// --json` agree with it.
#[test]
fn jlist_is_the_description_type_byte_for_byte() {
    use corral::protocol::Description;
    let h = TestHome::started();
    h.script("exits.sh", "exit 3\n");
    h.script("killed.sh", "kill -TERM $$\n");
    h.script("forever.sh", "exec sleep 1000\n");
    for dir in ["src", "lib"] {
        std::fs::create_dir_all(h.work.join(dir)).unwrap();
    }
    let odd = "quote \" back\\ tab\t nl\n \u{1} é ✓ </x>";
    for app in [
        json!({"name": "plain", "script": "sleep", "args": ["1000"]}),
        json!({
            "name": "full", "script": "forever.sh", "args": ["1000", odd],
            "env": {"B": "2", "A": odd, "C": "3"},
            "env_production": {"B": "over", "D": "4"},
            "watch": ["src", "lib"], "ignore_watch": ["tmp"], "watch_delay": 50,
            "log_file": true, "log_type": "json", "max_log_size": "10M",
            "exp_backoff_restart_delay": 100, "cron_restart": "0 0 * * *",
            "stop_exit_codes": [0, 3], "kill_signal": "SIGUSR2",
            "log_date_format": "YYYY", "max_memory_restart": "100M",
            "namespace": "ns \"x\"", "merge_logs": true,
        }),
        json!({"name": "exits", "script": "exits.sh", "autorestart": false}),
        json!({"name": "killed", "script": "killed.sh", "autorestart": false}),
        json!({"name": "cwdwatch", "script": "sleep", "args": ["1000"], "watch": true}),
        json!({"name": "off", "script": "sleep", "args": ["1000"], "autostart": false}),
    ] {
        let env_name = app.get("env_production").map(|_| "production");
        h.ok(json!({"cmd": "start", "app": h.with_cwd(app), "env_name": env_name}));
    }
    h.wait_status("exits", "stopped");
    h.wait_status("killed", "stopped");
    let out = h.corral(&["jlist"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = String::from_utf8(out.stdout).expect("jlist is UTF-8");
    let printed = printed.strip_suffix('\n').expect("one line");
    let list: Vec<Description> = serde_json::from_str(printed).expect("jlist is descriptions");
    assert_eq!(list.len(), 6, "{printed}");
    assert_eq!(serde_json::to_string(&list).unwrap(), printed);
    let by_name = |n: &str| list.iter().find(|d| d.name == n).unwrap().clone();
    let full = by_name("full").pm2_env;
    assert_eq!(full.args, ["1000", odd]);
    assert_eq!(full.env["A"], odd);
    assert_eq!(full.env["B"], "over");
    assert_eq!(full.env.keys().collect::<Vec<_>>(), ["A", "B", "C", "D"]);
    assert_eq!(full.kill_signal, "SIGUSR2");
    assert!(
        full.pm_log_path.is_some() && full.log_type.is_some(),
        "{full:?}"
    );
    assert!(full.prev_restart_delay.is_some(), "{full:?}");
    assert_eq!(full.watch, json!(["src", "lib"]));
    assert_eq!(by_name("cwdwatch").pm2_env.watch, json!(true));
    assert_eq!(by_name("plain").pm2_env.watch, json!(false));
    assert_eq!(by_name("plain").pm2_env.prev_restart_delay, None);
    assert_eq!(by_name("exits").pm2_env.exit_code, Some(3));
    assert_eq!(
        by_name("killed").pm2_env.exit_signal.as_deref(),
        Some("SIGTERM")
    );
    // The other ways to the same descriptions.
    let described = h.ok(json!({"cmd": "describe", "target": "all"}));
    assert_eq!(described, serde_json::from_str::<Value>(printed).unwrap());
    let out = h.corral(&["describe", "full", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut d: Vec<Description> = serde_json::from_slice(&out.stdout).expect("describe --json");
    assert_eq!(d.len(), 1, "{d:?}");
    // Sampled again meanwhile.
    d[0].monit = by_name("full").monit;
    assert_eq!(d[0], by_name("full"));
}

/// A list larger than the socket takes at once, asked between two pings
/// on one connection that reads nothing until all three are sent: the
/// answers come whole and in order (the list is sent while it is written,
/// the rest queued behind it).
#[test]
fn a_large_list_comes_whole_and_in_order() {
    let h = TestHome::started();
    let big = "x".repeat(8000);
    let apps: Vec<Value> = (0..60)
        .map(|i| {
            json!({"name": format!("big{i}"), "script": "sleep", "args": ["1000"],
                   "env": {"BIG": big}, "cwd": h.work.display().to_string()})
        })
        .collect();
    let started = h.ok(json!({"cmd": "start", "apps": apps}));
    assert_eq!(started.as_array().map(Vec::len), Some(60), "{started}");
    let mut c = h.connect();
    c.send(
        b"{\"id\":1,\"cmd\":\"ping\"}\n{\"id\":2,\"cmd\":\"list\"}\n{\"id\":3,\"cmd\":\"ping\"}\n",
    );
    let first = c.read_response();
    assert_eq!(
        (first["id"].clone(), first["ok"].clone()),
        (json!(1), json!(true))
    );
    let list = c.read_response();
    assert_eq!(list["id"], json!(2));
    let all = list["result"].as_array().expect("a list");
    assert_eq!(all.len(), 60);
    assert!(all.iter().all(|d| d["pm2_env"]["env"]["BIG"] == json!(big)));
    let last = c.read_response();
    assert_eq!(
        (last["id"].clone(), last["ok"].clone()),
        (json!(3), json!(true))
    );
    // The same through the command line.
    let out = h.corral(&["jlist"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("jlist is JSON");
    assert_eq!(printed.len(), 60);
}

#[test]
fn send_signal_reaches_the_app() {
    let h = TestHome::started();
    h.script(
        "usr1.sh",
        "trap 'echo got-usr1' USR1\necho ready\nwhile :; do sleep 0.05; done\n",
    );
    h.start(json!({"name": "sig", "script": "usr1.sh", "kill_timeout": 300}));
    h.wait_log("sig", "ready");
    let r = h.ok(json!({"cmd": "send_signal", "signal": "SIGUSR1", "target": "sig"}));
    assert_eq!(r[0]["name"], json!("sig"));
    h.wait_log("sig", "got-usr1");
    let d = h.describe("sig");
    assert_eq!(env_of(&d, "status"), "online");
    assert_eq!(env_of(&d, "restart_time"), json!(0));
    // Unknown target.
    let r = h.request(json!({"cmd": "send_signal", "signal": "SIGUSR1", "target": "nosuch"}));
    assert_eq!(r["error"]["code"], json!("not_found"), "{r}");
}

#[test]
fn kill_daemon_stops_apps_and_exits() {
    let h = TestHome::started();
    let a = pid_of(&sleeper(&h, "k1"));
    let b = pid_of(&sleeper(&h, "k2"));
    let daemon = h.daemon_pid();
    let r = h.ok(json!({"cmd": "kill_daemon"}));
    assert_eq!(r, json!({"stopped": 2}));
    wait_gone(daemon, "the daemon");
    assert!(!running(a) && !running(b), "apps survive the daemon");
    wait_until(SOON, "socket and pid file are removed", || {
        !h.socket().exists() && !h.pid_file().exists()
    });
}

#[test]
fn targets_by_name_id_namespace_and_all() {
    let h = TestHome::started();
    for (name, ns) in [("t1", "grp"), ("t2", "grp"), ("t3", "default")] {
        h.start(json!({"name": name, "namespace": ns, "script": "sleep",
                        "args": ["1000"], "kill_timeout": 300}));
    }
    let status = |n: &str| h.status(n);
    // Namespace.
    let r = h.ok(json!({"cmd": "stop", "target": "grp"}));
    assert_eq!(names(r.as_array().unwrap()), ["t1", "t2"]);
    assert_eq!(
        [status("t1"), status("t2"), status("t3")],
        ["stopped", "stopped", "online"]
    );
    // pm_id, as a number and as a string of digits.
    let id1 = h.describe("t1")["pm_id"].clone();
    h.ok(json!({"cmd": "start", "target": id1}));
    assert_eq!(status("t1"), "online");
    let id3 = h.describe("t3")["pm_id"].as_u64().unwrap();
    let out = h.corral(&["stop", &id3.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(status("t3"), "stopped");
    // Name.
    h.ok(json!({"cmd": "stop", "target": "t1"}));
    assert_eq!(status("t1"), "stopped");
    // All.
    let r = h.ok(json!({"cmd": "restart", "target": "all"}));
    assert_eq!(r.as_array().map(Vec::len), Some(3));
    for n in ["t1", "t2", "t3"] {
        assert_eq!(status(n), "online", "{n}");
    }
    let r = h.ok(json!({"cmd": "stop", "target": "all"}));
    assert_eq!(r.as_array().map(Vec::len), Some(3));
    for d in h.list() {
        assert_eq!(env_of(&d, "status"), "stopped", "{d}");
    }
}
