//! `corral update`: the daemon replaced in place by the binary on disk.
//! Apps keep their pids and their output, a Node cluster pair serves
//! requests throughout (and reloads afterwards with the shared socket the
//! old image bound), a stop in progress finishes under the new image and
//! its client gets its answer, connections and bus subscribers carry over,
//! and a binary that cannot run leaves the old daemon serving.
//!
//! Apps listen on 127.0.0.1 only, on a port picked by `free_port`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::util::*;

/// Numbered lines every few milliseconds.
const SEQ: &str = "#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo \"line $i\"; sleep 0.003; done\n";

/// An unmodified Node http server (cluster mode makes corral its primary).
const NODE_HTTP: &str = "\
require('http')
  .createServer((q, s) => s.end('pid ' + process.pid))
  .listen(+process.env.PORT, '127.0.0.1', () => console.log('listening ' + process.pid));
";

/// Ignores SIGINT: only the kill timeout's SIGKILL ends it.
const STUBBORN: &str =
    "#!/bin/sh\ntrap 'echo got INT' INT\necho started\nwhile :; do sleep 0.1; done\n";

/// The numbers of `line N` in `log`, which must run 1, 2, 3... without a
/// gap; the last one.
fn check_sequence(log: &str) -> u64 {
    let mut last = 0;
    for l in log.lines() {
        let n: u64 = l
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a numbered line: {l:?}"));
        assert_eq!(
            n,
            last + 1,
            "a line is missing or repeated after line {last}"
        );
        last = n;
    }
    last
}

fn pids(h: &TestHome) -> BTreeSet<(String, i32)> {
    h.list()
        .iter()
        .map(|d| (d["name"].as_str().unwrap_or("").to_string(), pid_of(d)))
        .collect()
}

/// What the cluster app's instances logged (one file per instance).
fn web_logs(h: &TestHome) -> String {
    let dir = h.home.join("logs");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("web-out"))
                .map(|e| read(&e.path()))
                .collect()
        })
        .unwrap_or_default()
}

fn update(h: &TestHome) -> Value {
    let out = h.corral(&["update", "--json"]);
    assert_eq!(out.status.code(), Some(0), "corral update: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("update --json prints JSON")
}

#[test]
fn update_keeps_pids_output_and_requests() {
    let h = TestHome::started();
    let daemon = h.daemon_pid();
    let seq = h.script("seq.sh", SEQ);
    let web = h.script("web.js", NODE_HTTP);
    let port = free_port();
    h.start(json!({"name": "seq", "script": seq.display().to_string()}));
    h.start(json!({"name": "sleeper", "script": "sleep", "args": ["600"]}));
    h.start(json!({
        "name": "web", "script": web.display().to_string(), "instances": 2,
        "exec_mode": "cluster", "env": {"PORT": port.to_string()},
    }));
    let workers: BTreeSet<i32> = h.describe_all(json!("web")).iter().map(pid_of).collect();
    assert_eq!(workers.len(), 2, "two workers");
    wait_until(SOON, "both workers listen", || {
        let out = web_logs(&h);
        workers
            .iter()
            .all(|p| out.contains(&format!("listening {p}")))
    });
    wait_until(SOON, "seq logs", || h.out_log("seq").lines().count() > 50);
    let before = pids(&h);
    let mut bus = h.subscribe(None);
    let mut idle = h.connect();
    let load = Load::start(port);
    wait_until(SOON, "requests flow", || load.ok() > 20);

    let r = update(&h);
    assert_eq!(r["updated"], json!(true), "{r}");
    assert_eq!(r["pid"], json!(daemon), "exec in place keeps the pid: {r}");
    // A connection opened before goes on.
    let pong = idle.call(&json!({"cmd": "ping", "id": 3}));
    assert_eq!(pong["result"]["pid"], json!(daemon), "{pong}");
    assert_eq!(r["apps"], json!(4), "{r}");

    // Subscribers are told, and stay subscribed.
    let ev = bus.wait_for("daemon:update", |ev| ev["event"] == json!("daemon:update"));
    assert_eq!(ev["data"]["pid"], json!(daemon), "{ev}");

    assert_eq!(h.daemon_pid(), daemon);
    assert_eq!(pids(&h), before, "every app keeps its pid");
    for d in h.list() {
        assert_eq!(d["pm2_env"]["status"], json!("online"), "{d}");
        assert_eq!(d["pm2_env"]["restart_time"], json!(0), "{d}");
    }
    // Output goes on into the same log, nothing lost.
    let at_update = check_sequence(&h.out_log("seq"));
    wait_until(SOON, "seq logs on under the new image", || {
        check_sequence(&h.out_log("seq")) > at_update + 100
    });
    let served = load.ok();
    wait_until(SOON, "requests go on", || load.ok() > served + 20);

    // The new image is the cluster primary: a reload binds nothing new and
    // no request fails.
    let r = h.ok(json!({"cmd": "reload", "target": "web"}));
    assert_eq!(r.as_array().map(Vec::len), Some(2), "{r}");
    let fresh: BTreeSet<i32> = h.describe_all(json!("web")).iter().map(pid_of).collect();
    assert!(fresh.is_disjoint(&workers), "reloaded: {fresh:?}");
    load.wait_answer_from(&fresh, "a reloaded worker answers");
    load.stop().assert_clean("the update and a reload after it");
    check_sequence(&h.out_log("seq"));

    // Reaping goes on: a stop ends the processes of the old image; the
    // subscriber of before the update sees it.
    let seq_pid = pid_of(&h.describe("seq"));
    h.ok(json!({"cmd": "stop", "target": "seq"}));
    wait_gone(seq_pid, "seq stopped after the update");
    assert_eq!(h.status("seq"), "stopped");
    bus.wait_for("seq's stop", |ev| is_process_event(ev, "seq", "stop"));
}

#[test]
fn a_stop_in_progress_finishes_after_the_update() {
    let h = TestHome::started();
    let stub = h.script("stub.sh", STUBBORN);
    h.start(json!({"name": "stub", "script": stub.display().to_string(), "kill_timeout": 3000}));
    h.wait_log("stub", "started");
    let pid = pid_of(&h.describe("stub"));
    // The stop waits on its kill timeout: its answer comes later.
    let mut stopper = h.connect();
    stopper.send(format!("{}\n", json!({"cmd": "stop", "target": "stub", "id": 7})).as_bytes());
    wait_until(SOON, "the stub is stopping", || {
        h.status("stub") == "stopping"
    });
    let r = update(&h);
    assert_eq!(r["updated"], json!(true), "{r}");
    assert_eq!(
        h.status("stub"),
        "stopping",
        "still stopping under the new image"
    );
    assert!(running(pid), "the kill timeout has not passed yet");
    let answer = stopper.read_response();
    assert_eq!(answer["ok"], json!(true), "{answer}");
    assert_eq!(answer["id"], json!(7), "{answer}");
    assert!(!running(pid), "stopped by SIGKILL at the kill timeout");
    assert_eq!(h.status("stub"), "stopped");
    assert!(
        h.daemon_log().contains("sending SIGKILL"),
        "{}",
        h.daemon_log()
    );
}

#[test]
fn a_rolling_reload_half_done_finishes_under_the_new_image() {
    let h = TestHome::started();
    // Ready (sd_notify) a second after it starts.
    h.script(
        "notify.py",
        "import os, socket, time\n\
         time.sleep(1)\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
         time.sleep(1000)\n",
    );
    h.start(
        json!({"name": "sd", "script": "notify.py", "instances": 2, "wait_ready": true,
                   "listen_timeout": 10000, "kill_timeout": 300}),
    );
    let old: BTreeSet<i32> = h.describe_all(json!("sd")).iter().map(pid_of).collect();
    assert_eq!(old.len(), 2);
    let mut reloader = h.connect();
    reloader.send(format!("{}\n", json!({"cmd": "reload", "target": "sd", "id": 5})).as_bytes());
    wait_until(SOON, "the first replacement is started", || {
        h.daemon_log().contains("reload: replacement pid")
    });
    let r = update(&h);
    assert_eq!(r["updated"], json!(true), "{r}");
    let answer = reloader.read_response();
    assert_eq!(answer["ok"], json!(true), "{answer}");
    assert_eq!(answer["id"], json!(5), "{answer}");
    let fresh: BTreeSet<i32> = h.describe_all(json!("sd")).iter().map(pid_of).collect();
    assert_eq!(fresh.len(), 2);
    assert!(
        fresh.is_disjoint(&old),
        "both replaced: {old:?} -> {fresh:?}"
    );
    for p in &old {
        wait_gone(*p, "an old instance stopped");
    }
    assert_eq!(
        h.daemon_log().matches("reload: replacement pid").count(),
        2,
        "{}",
        h.daemon_log()
    );
}

#[test]
fn a_restart_delay_runs_out_under_the_new_image() {
    let h = TestHome::started();
    // Fails once, then stays up.
    h.script(
        "once.sh",
        "if [ -e marker ]; then exec sleep 1000; fi\ntouch marker\nexit 1\n",
    );
    h.start(
        json!({"name": "once", "script": "once.sh", "restart_delay": 2000, "kill_timeout": 300}),
    );
    h.wait_status("once", "waiting restart");
    let r = update(&h);
    assert_eq!(r["updated"], json!(true), "{r}");
    assert_eq!(
        h.status("once"),
        "waiting restart",
        "still waiting after the update"
    );
    let d = h.wait_status("once", "online");
    assert_eq!(env_of(&d, "restart_time"), json!(1));
    assert!(running(pid_of(&d)));
}

#[test]
fn update_to_a_binary_that_cannot_run_fails_and_the_daemon_goes_on() {
    let h = TestHome::new();
    let missing = h.work.join("no-such-corral");
    let out = run({
        let mut c = h.command(&["ping"]);
        c.env("CORRAL_DAEMON_BIN", &missing);
        c
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.start(json!({"name": "sleeper", "script": "sleep", "args": ["600"]}));
    let pid = pid_of(&h.describe("sleeper"));
    let out = h.corral(&["update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("cannot run") && said.contains("no-such-corral"),
        "{said}"
    );
    // Still the same daemon, serving, the app untouched.
    let ping = h.ok(json!({"cmd": "ping"}));
    assert_eq!(ping["pid"], json!(h.daemon_pid()), "{ping}");
    assert_eq!(pid_of(&h.describe("sleeper")), pid);
    assert_eq!(h.status("sleeper"), "online");
    assert!(
        !h.home.join("handover.json").exists(),
        "the hand-over file is removed"
    );
    h.ok(json!({"cmd": "stop", "target": "sleeper"}));
    wait_gone(pid, "sleeper stopped");
}

/// A description without what moves by itself (usage samples).
fn steady(mut d: Value) -> Value {
    if let Some(o) = d.as_object_mut() {
        o.remove("monit");
    }
    if let Some(o) = d["pm2_env"].as_object_mut() {
        o.remove("axm_monitor");
    }
    d
}

/// The environment process `pid` was started with.
fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn every_kind_of_app_is_the_same_after_an_update() {
    let h = TestHome::started();
    let idle = h.script("idle.sh", "#!/bin/sh\nexec sleep 600\n");
    let cfg = h.work.join("apps.json");
    let apps = json!({"apps": [
        // A command line, run by sh.
        {"name": "line", "script": "sleep 600"},
        // Named after its script; `.sh` with bash.
        {"script": idle.display().to_string(), "interpreter": "bash"},
        // Found on PATH; two instances, a variable counted up, an overlay.
        {"name": "inc", "script": "sleep", "args": ["600"], "instances": 2,
         "exec_mode": "fork", "increment_var": "PORT", "env": {"PORT": "4000"},
         "env_production": {"MODE": "prod"}},
        // Not started; its own files, JSON lines with a date; a cron.
        {"name": "quiet", "script": "sleep", "args": ["600"], "autostart": false,
         "out_file": "q.out", "log_file": true, "log_type": "json", "time": true,
         "cron_restart": "0 3 * * *"},
    ]});
    std::fs::write(&cfg, apps.to_string()).expect("write the config");
    let out = run({
        let mut c = h.command(&["start", &cfg.display().to_string(), "--env", "production"]);
        c.current_dir(&h.work).env("UPDATE_TEST_MARK", "caller");
        c
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for name in ["line", "idle", "inc"] {
        wait_until(SOON, &format!("{name} online"), || {
            h.describe_all(json!(name))
                .iter()
                .all(|d| d["pm2_env"]["status"] == json!("online"))
        });
    }
    assert_eq!(h.status("quiet"), "stopped");
    let before: Vec<Value> = h.list().into_iter().map(steady).collect();
    assert_eq!(before.len(), 5);

    let r = update(&h);
    assert_eq!(r["apps"], json!(5), "{r}");
    let after: Vec<Value> = h.list().into_iter().map(steady).collect();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a, b, "described otherwise after the update");
    }
    assert_eq!(after.len(), before.len());

    // Started again by the new image, each runs as before: the caller's
    // environment, the overlay, the counted variable, the shell.
    h.ok(json!({"cmd": "restart", "target": "all"}));
    for name in ["line", "idle", "inc"] {
        wait_until(SOON, &format!("{name} online again"), || {
            h.describe_all(json!(name)).iter().all(|d| {
                d["pm2_env"]["status"] == json!("online")
                    && d["pm2_env"]["restart_time"] == json!(1)
            })
        });
    }
    let mut ports = Vec::new();
    for d in h.describe_all(json!("inc")) {
        let env = environ(pid_of(&d));
        assert!(
            env.contains(&"UPDATE_TEST_MARK=caller".to_string()),
            "{env:?}"
        );
        assert!(env.contains(&"MODE=prod".to_string()), "{env:?}");
        ports.extend(env.into_iter().filter(|v| v.starts_with("PORT=")));
    }
    ports.sort();
    assert_eq!(ports, ["PORT=4000", "PORT=4001"]);
    // `sh -c 'sleep 600'` (or the sleep a shell replaced itself with).
    let line = std::fs::read_to_string(format!("/proc/{}/cmdline", pid_of(&h.describe("line"))))
        .unwrap_or_default();
    let words: Vec<&str> = line.split('\0').filter(|w| !w.is_empty()).collect();
    assert!(
        words.ends_with(&["-c", "sleep 600"]) || words == ["sleep", "600"],
        "{words:?}"
    );
    let pids: Vec<i32> = h
        .list()
        .iter()
        .filter(|d| d["pid"].as_i64().unwrap_or(0) > 0)
        .map(pid_of)
        .collect();
    h.ok(json!({"cmd": "stop", "target": "all"}));
    for p in pids {
        wait_gone(p, "stopped");
    }
}

/// An option changed under another spelling (`killTimeout` over a given
/// `kill_timeout`) is kept once: the app goes over to the new image (both
/// spellings would be "given twice" when its options are read again).
#[test]
fn an_option_changed_under_another_spelling_goes_over() {
    let h = TestHome::started();
    let a = h.work.join("a.json");
    let b = h.work.join("b.json");
    let app = |timeout: Value| {
        let mut o = json!({"name": "spell", "script": "sleep", "args": ["600"]});
        if let (Some(o), Some(t)) = (o.as_object_mut(), timeout.as_object()) {
            o.extend(t.clone());
        }
        json!({ "apps": [o] })
    };
    std::fs::write(&a, app(json!({"kill_timeout": 1500})).to_string()).expect("write a");
    std::fs::write(&b, app(json!({"killTimeout": 2500})).to_string()).expect("write b");
    let out = h.corral(&["start", &a.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = h.corral(&["startOrRestart", &b.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_until(SOON, "spell online", || {
        h.list().iter().any(|d| d["pm2_env"]["status"] == "online")
    });
    let before = pids(&h);
    let answer = update(&h);
    assert_eq!(answer["apps"], 1, "{answer}");
    assert_eq!(pids(&h), before, "the app and its pid after the update");
    let d = h.list();
    assert_eq!(d[0]["pm2_env"]["kill_timeout"], 2500, "{}", d[0]);
}
