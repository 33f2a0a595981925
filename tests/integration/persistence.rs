//! dump / save / resurrect: the dump file (its format, mode, `.bak`,
//! `DUMP_FILE_PATH`), the empty-list rule, the save on SIGTERM, and the
//! import of PM2's `dump.pm2`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::util::*;

/// A shell script that runs until stopped.
const FOREVER: &str = "#!/bin/sh\nwhile true; do sleep 1; done\n";

fn dump_file(h: &TestHome) -> PathBuf {
    h.home.join("dump.json")
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn read_dump(p: &Path) -> Value {
    serde_json::from_str(&read(p)).unwrap_or_else(|e| panic!("{} is JSON: {e}", p.display()))
}

/// The fields of a description that are options or identity, not runtime.
fn options_of(d: &Value) -> Value {
    let mut env = d["pm2_env"].clone();
    let o = env.as_object_mut().unwrap();
    for k in [
        "pm_uptime",
        "created_at",
        "restart_time",
        "unstable_restarts",
        "exit_code",
        "exit_signal",
        "prev_restart_delay",
        "status",
        "node_version",
        "notify_status",
        "cgroup",
    ] {
        o.remove(k);
    }
    json!({"pm_id": d["pm_id"], "name": d["name"], "pm2_env": env})
}

fn by_id(list: &[Value]) -> Vec<Value> {
    let mut l = list.to_vec();
    l.sort_by_key(|d| d["pm_id"].as_u64());
    l
}

fn kill_daemon(h: &TestHome) {
    let out = h.corral(&["kill"]);
    assert_eq!(out.status.code(), Some(0), "kill: {}", text(&out));
}

#[test]
fn dump_kill_resurrect_restores_every_app_with_its_options() {
    let h = TestHome::started();
    h.script("a.sh", FOREVER);
    h.start(json!({
        "name": "api", "script": "a.sh", "args": ["--port", "3000"],
        "env": {"PORT": "3000"}, "kill_timeout": 300, "max_restarts": 3,
        "namespace": "web", "max_memory_restart": "100M",
    }));
    h.start(json!({"name": "pair", "script": "a.sh", "instances": 2, "kill_timeout": 300}));
    h.start(json!({"name": "later", "script": "a.sh", "kill_timeout": 300}));
    h.ok(json!({"cmd": "stop", "target": "later"}));
    // Started from the command line with a secret in the caller's shell.
    let mut c = h.command(&["start", "a.sh", "--name", "cli", "--kill-timeout", "300"]);
    c.env("SHELL_SECRET", "hunter2");
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = by_id(&h.list());
    assert_eq!(before.len(), 5);

    let out = h.corral(&["dump"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("saved 5 apps to"), "{}", text(&out));
    let file = dump_file(&h);
    assert_eq!(mode_of(&file), 0o600);
    let dump = read_dump(&file);
    assert_eq!(dump["version"], json!(1));
    assert_eq!(dump["apps"].as_array().unwrap().len(), 5);
    let raw = read(&file);
    assert!(
        !raw.contains("hunter2"),
        "the caller's environment is not saved: {raw}"
    );
    assert!(!raw.contains("SHELL_SECRET"), "{raw}");

    kill_daemon(&h);
    let out = h.corral(&["resurrect", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let back: Vec<Value> = serde_json::from_slice(&out.stdout).expect("resurrect --json");
    assert_eq!(back.len(), 5, "{back:?}");
    wait_until(SOON, "the running apps are online again", || {
        h.list()
            .iter()
            .filter(|d| d["pm2_env"]["status"] == json!("online"))
            .count()
            == 4
    });
    let after = by_id(&h.list());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(options_of(b), options_of(a), "restored as it was");
    }
    assert_eq!(
        h.status("later"),
        "stopped",
        "a stopped app comes back stopped"
    );
    assert_eq!(env_of(&h.describe("api"), "env"), json!({"PORT": "3000"}));
    // The resurrected app has the daemon's environment, not the old caller's.
    let cli = h.describe("cli");
    let environ = read(Path::new(&format!("/proc/{}/environ", pid_of(&cli))));
    assert!(!environ.contains("hunter2"), "{environ}");

    // Twice: nothing more, nothing restarted.
    let pids: Vec<i32> = after.iter().map(pid_of).collect();
    let out = h.corral(&["resurrect", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let again: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(again.is_empty(), "{again:?}");
    let now = by_id(&h.list());
    assert_eq!(now.len(), 5, "no duplicate");
    assert_eq!(now.iter().map(pid_of).collect::<Vec<_>>(), pids);
}

#[test]
fn resurrect_keeps_free_pm_ids_and_leaves_running_apps_alone() {
    let h = TestHome::started();
    h.script("a.sh", FOREVER);
    for n in ["a", "b", "c"] {
        h.start(json!({"name": n, "script": "a.sh", "kill_timeout": 300}));
    }
    h.ok(json!({"cmd": "delete", "target": "a"}));
    let r = h.ok(json!({"cmd": "dump"}));
    assert_eq!(r["count"], json!(2));
    assert_eq!(r["path"], json!(dump_file(&h).display().to_string()));
    kill_daemon(&h);
    // A new daemon where `b` already runs (as pm_id 0).
    let out = h.corral(&["ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.start(json!({"name": "b", "script": "a.sh", "kill_timeout": 300}));
    let pid_b = pid_of(&h.describe("b"));
    let back = h.ok(json!({"cmd": "resurrect"}));
    let back = back.as_array().unwrap();
    assert_eq!(back.len(), 1, "only c came back: {back:?}");
    assert_eq!(back[0]["name"], json!("c"));
    assert_eq!(back[0]["pm_id"], json!(2), "c keeps its pm_id");
    assert_eq!(pid_of(&h.describe("b")), pid_b, "b was left alone");
    assert_eq!(h.list().len(), 2);
}

#[test]
fn dump_file_path_is_honoured_and_the_previous_dump_kept_as_bak() {
    let h = TestHome::new();
    let file = h.root.join("elsewhere.json");
    let mut c = h.command(&["ping"]);
    c.env("DUMP_FILE_PATH", &file);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.script("a.sh", FOREVER);
    h.start(json!({"name": "one", "script": "a.sh", "kill_timeout": 300}));
    let r = h.ok(json!({"cmd": "dump"}));
    assert_eq!(r["path"], json!(file.display().to_string()));
    assert!(!dump_file(&h).exists());
    let first = read(&file);
    h.start(json!({"name": "two", "script": "a.sh", "kill_timeout": 300}));
    assert_eq!(h.ok(json!({"cmd": "dump"}))["count"], json!(2));
    let bak = h.root.join("elsewhere.json.bak");
    assert_eq!(read(&bak), first, "the previous dump is kept as .bak");
    assert_eq!(mode_of(&file), 0o600);
    assert_eq!(mode_of(&bak), 0o600);
    assert!(!h.root.join("elsewhere.json.tmp").exists());
    // A daemon started with the same DUMP_FILE_PATH reads it back.
    kill_daemon(&h);
    let mut c = h.command(&["resurrect", "--json"]);
    c.env("DUMP_FILE_PATH", &file);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let back: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back.len(), 2, "{back:?}");
}

#[test]
fn an_empty_list_does_not_clobber_a_dump_unless_forced() {
    let h = TestHome::started();
    h.script("a.sh", FOREVER);
    h.start(json!({"name": "one", "script": "a.sh", "kill_timeout": 300}));
    assert_eq!(h.ok(json!({"cmd": "dump"}))["count"], json!(1));
    let saved = read(&dump_file(&h));
    h.ok(json!({"cmd": "delete", "target": "all"}));
    let out = h.corral(&["save"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&dump_file(&h).display().to_string()) && said.contains("1 apps"),
        "names the file and what it would lose: {said}"
    );
    assert_eq!(read(&dump_file(&h)), saved, "left as it was");
    let r = h.request(json!({"cmd": "dump"}));
    assert_eq!(r["ok"], json!(false), "{r}");
    let r = h.ok(json!({"cmd": "dump", "force": true}));
    assert_eq!(r["count"], json!(0));
    assert_eq!(read_dump(&dump_file(&h))["apps"], json!([]));
    // The dump with the app stays in .bak; an empty one never replaces it.
    let bak = h.home.join("dump.json.bak");
    assert_eq!(read(&bak), saved);
    let out = h.corral(&["dump", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(&bak), saved);
    // And with nothing saved at all, resurrect says so.
    std::fs::remove_file(dump_file(&h)).unwrap();
    std::fs::remove_file(&bak).unwrap();
    let out = h.corral(&["resurrect"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no dump at"), "{}", text(&out));
}

#[test]
fn sigterm_saves_the_list_before_stopping_the_apps() {
    let h = TestHome::started();
    h.script("a.sh", FOREVER);
    h.start(json!({"name": "up", "script": "a.sh", "kill_timeout": 300}));
    h.start(json!({"name": "down", "script": "a.sh", "kill_timeout": 300}));
    h.ok(json!({"cmd": "stop", "target": "down"}));
    let pid = h.daemon_pid();
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_gone(pid, "the daemon");
    let dump = read_dump(&dump_file(&h));
    let wanted: Vec<(String, String)> = dump["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["wanted"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        wanted,
        vec![
            ("up".to_string(), "online".to_string()),
            ("down".to_string(), "stopped".to_string())
        ]
    );
    assert!(
        h.daemon_log().contains("SIGTERM: saved 2 apps"),
        "{}",
        h.daemon_log()
    );
    // A daemon with nothing in it, stopped the same way, keeps that dump.
    let saved = read(&dump_file(&h));
    let out = h.corral(&["ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid = h.daemon_pid();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_gone(pid, "the empty daemon");
    assert_eq!(read(&dump_file(&h)), saved);
    // Back at boot: up runs, down does not.
    let out = h.corral(&["resurrect"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.wait_status("up", "online");
    assert_eq!(h.status("down"), "stopped");
}

/// The fixture `tests/fixtures/dump.pm2` (as `pm2 save` writes it) with
/// its paths pointing at `h`'s work directory.
fn pm2_fixture(h: &TestHome) -> PathBuf {
    let text = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dump.pm2"))
        .replace("__WORK__", &h.work.display().to_string())
        .replace("__PATH__", &std::env::var("PATH").unwrap_or_default());
    let path = h.root.join("dump.pm2");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_pm2_dump_imports() {
    let h = TestHome::started();
    h.script("web.sh", "echo \"web $PORT $1 $2\"\nexec sleep 1000\n");
    h.script("worker.sh", FOREVER);
    let fixture = pm2_fixture(&h);
    let out = h.corral(&["resurrect", "--from", fixture.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("whole environment"), "{}", text(&out));
    let web = h.wait_status("web", "online");
    assert_eq!(web["pm_id"], json!(0));
    assert_eq!(env_of(&web, "args"), json!(["--port", "3000"]));
    assert_eq!(env_of(&web, "kill_timeout"), json!(700));
    assert_eq!(env_of(&web, "max_memory_restart"), json!(104857600));
    assert_eq!(env_of(&web, "exec_interpreter"), json!("bash"));
    let env = env_of(&web, "env");
    assert_eq!(env["PORT"], json!("3000"));
    for k in ["PM2_HOME", "PM2_USAGE", "unique_id", "web"] {
        assert!(env.get(k).is_none(), "{k} is PM2's own: {env}");
    }
    assert!(
        env_of(&web, "pm_out_log_path")
            .as_str()
            .unwrap()
            .starts_with(&h.home.display().to_string()),
        "corral's own log paths, not PM2's"
    );
    h.wait_log("web", "web 3000 --port 3000");
    let workers = h.describe_all(json!("worker"));
    assert_eq!(workers.len(), 2);
    assert_eq!(env_of(&workers[0], "namespace"), json!("workers"));
    assert_eq!(env_of(&workers[1], "NODE_APP_INSTANCE"), json!(1));
    assert_eq!(env_of(&workers[0], "exec_interpreter"), json!("none"));
    assert_eq!(
        h.status("nightly"),
        "stopped",
        "saved stopped, comes back stopped"
    );
    assert_eq!(
        env_of(&h.describe("nightly"), "cron_restart"),
        json!("0 3 * * *")
    );
    // Imported once: a second import changes nothing.
    let out = h.corral(&["resurrect", "--from", fixture.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(h.list().len(), 4);
}

#[test]
fn a_pm2_field_corral_cannot_honour_is_refused_by_name() {
    let h = TestHome::started();
    h.script("web.sh", FOREVER);
    h.script("worker.sh", FOREVER);
    let fixture = pm2_fixture(&h);
    let mut apps: Value = serde_json::from_str(&read(&fixture)).unwrap();
    apps[1]["log_type"] = json!("xml");
    std::fs::write(&fixture, apps.to_string()).unwrap();
    let out = h.corral(&["resurrect", "--from", fixture.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("worker") && said.contains("log_type"),
        "{said}"
    );
    assert!(h.list().is_empty(), "nothing started from a file refused");
    let out = h.corral(&[
        "resurrect",
        "--from",
        h.root.join("none.pm2").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot read"), "{}", text(&out));
}

#[test]
fn an_app_that_cannot_come_back_does_not_hold_back_the_others() {
    let h = TestHome::started();
    h.script("a.sh", FOREVER);
    h.script("b.sh", FOREVER);
    h.start(json!({"name": "stays", "script": "a.sh", "kill_timeout": 300}));
    h.start(json!({"name": "gone", "script": "b.sh", "kill_timeout": 300}));
    assert_eq!(h.ok(json!({"cmd": "dump"}))["count"], json!(2));
    kill_daemon(&h);
    std::fs::rename(h.work.join("b.sh"), h.work.join("b.sh.away")).unwrap();
    let out = h.corral(&["resurrect"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("1 of 2 apps came back") && said.contains("gone (pm_id 1)"),
        "{said}"
    );
    h.wait_status("stays", "online");
    assert!(h.describe_all(json!("gone")).is_empty());
    // Once the script is back, resurrect brings the rest.
    std::fs::rename(h.work.join("b.sh.away"), h.work.join("b.sh")).unwrap();
    let back = h.ok(json!({"cmd": "resurrect"}));
    assert_eq!(back.as_array().unwrap().len(), 1, "{back}");
    assert_eq!(back[0]["pm_id"], json!(1));
    h.wait_status("gone", "online");
}

#[test]
fn a_listen_app_gets_its_sockets_again() {
    let h = TestHome::started();
    h.script(
        "a.sh",
        "#!/bin/sh\necho \"fds=$LISTEN_FDS\"\nexec sleep 1000\n",
    );
    let port = free_port();
    h.start(json!({"name": "srv", "script": "a.sh", "kill_timeout": 300,
                   "listen": [format!("127.0.0.1:{port}")]}));
    h.ok(json!({"cmd": "dump"}));
    kill_daemon(&h);
    wait_until(SOON, "the old daemon's socket is closed", || refused(port));
    let out = h.corral(&["resurrect"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.wait_status("srv", "online");
    wait_until(SOON, "srv was given its socket", || {
        h.out_log("srv").matches("fds=1").count() == 2
    });
    assert!(!refused(port), "bound again");
}
