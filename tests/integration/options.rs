//! App options (the man page's APP OPTIONS) and what an app gets (WHAT AN APP
//! GETS), seen from the app.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

/// An app that writes `body` then sleeps, so its log is complete once it
/// shows `done`.
fn shell_app(h: &TestHome, name: &str, body: &str, extra: Value) -> Value {
    let script = format!("{name}.sh");
    h.script(&script, &format!("{body}\necho done\nexec sleep 1000\n"));
    let mut app = json!({"name": name, "script": script, "kill_timeout": 300});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            app[k] = v;
        }
    }
    h.start(app).remove(0)
}

#[test]
fn args_string_is_split_like_a_shell() {
    let h = TestHome::started();
    let d = shell_app(
        &h,
        "argv",
        "for a in \"$@\"; do echo \"[$a]\"; done",
        json!({"args": "one 'two three' \"four  five\" six"}),
    );
    assert_eq!(
        env_of(&d, "args"),
        json!(["one", "two three", "four  five", "six"])
    );
    let log = h.wait_log("argv", "done");
    assert_eq!(log, "[one]\n[two three]\n[four  five]\n[six]\ndone\n");
}

#[test]
fn interpreter_follows_the_extension() {
    let h = TestHome::started();
    h.script(
        "b.sh",
        "echo \"bash=${BASH_VERSION:+yes}\"\nexec sleep 1000\n",
    );
    h.script(
        "p.py",
        "import sys, time\nprint('python=%d' % sys.version_info[0], flush=True)\ntime.sleep(1000)\n",
    );
    let b = h.start(json!({"name": "b", "script": "b.sh", "kill_timeout": 300}));
    let p = h.start(json!({"name": "p", "script": "p.py", "kill_timeout": 300}));
    assert_eq!(env_of(&b[0], "exec_interpreter"), "bash");
    assert_eq!(env_of(&p[0], "exec_interpreter"), "python3");
    assert!(h.wait_log("b", "bash=").contains("bash=yes\n"));
    assert!(h.wait_log("p", "python=").contains("python=3\n"));
}

#[test]
fn interpreter_none_runs_the_script_itself() {
    let h = TestHome::started();
    // A .sh file with a shebang that is not bash: run by its own shebang.
    h.script(
        "own.sh",
        "#!/bin/sh\necho \"bash=${BASH_VERSION:-no}\"\nexec sleep 1000\n",
    );
    let d = h.start(json!({"name": "own", "script": "own.sh",
                           "interpreter": "none", "kill_timeout": 300}));
    assert_eq!(env_of(&d[0], "exec_interpreter"), "none");
    let pid = pid_of(&d[0]);
    let log = h.wait_log("own", "bash=");
    // /bin/sh is not bash here, unless the system links it so.
    let sh_is_bash = std::fs::read_link("/bin/sh")
        .map(|t| t.to_string_lossy().contains("bash"))
        .unwrap_or(false);
    if !sh_is_bash {
        assert!(log.contains("bash=no\n"), "log: {log:?}");
    }
    let cmdline = read(Path::new(&format!("/proc/{pid}/cmdline")));
    assert!(!cmdline.starts_with("bash"), "{cmdline:?}");
}

#[test]
fn interpreter_args_come_before_the_script() {
    let h = TestHome::started();
    h.script("traced.sh", "echo traced-line\nexec sleep 1000\n");
    let d = h.start(json!({"name": "traced", "script": "traced.sh",
                           "interpreter_args": "-x", "kill_timeout": 300}));
    assert_eq!(env_of(&d[0], "node_args"), json!(["-x"]));
    h.wait_log("traced", "traced-line");
    wait_until(SOON, "bash -x traces to stderr", || {
        h.err_log("traced").contains("+ echo traced-line")
    });
}

#[test]
fn env_and_identity_reach_the_app() {
    let h = TestHome::started();
    let d = shell_app(
        &h,
        "envy",
        "echo \"FOO=$FOO\"\necho \"pm_id=$pm_id\"\necho \"name=$name\"\n\
         echo \"inst=$NODE_APP_INSTANCE\"\necho \"home=$CORRAL_HOME\"",
        json!({"env": {"FOO": "bar baz"}}),
    );
    let log = h.wait_log("envy", "done");
    let id = d["pm_id"].as_u64().unwrap();
    for want in [
        "FOO=bar baz\n".to_string(),
        format!("pm_id={id}\n"),
        "name=envy\n".to_string(),
        "inst=0\n".to_string(),
        format!("home={}\n", h.home.display()),
    ] {
        assert!(log.contains(&want), "missing {want:?} in {log:?}");
    }
    assert_eq!(env_of(&d, "env"), json!({"FOO": "bar baz"}));
}

#[test]
fn a_cli_start_inherits_the_callers_environment() {
    let h = TestHome::started();
    h.script("inherit.sh", "echo \"IT=$CT_INHERITED\"\nexec sleep 1000\n");
    let mut c = h.command(&["start", "inherit.sh", "--kill-timeout", "300"]);
    c.env("CT_INHERITED", "from-the-caller");
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = h.wait_log("inherit", "IT=");
    assert!(log.contains("IT=from-the-caller\n"), "log: {log:?}");
    // The caller's environment is not shown in descriptions.
    let d = h.describe("inherit");
    assert!(
        env_of(&d, "env").get("CT_INHERITED").is_none(),
        "the caller's environment leaks into the description: {d}"
    );
}

/// A variable that is not UTF-8 cannot travel in a request: the CLI says
/// it leaves it out, and neither it nor the daemon (started with it in its
/// environment, which an app with no caller's environment inherits)
/// fails; the app runs without it and with the rest.
#[test]
fn an_environment_variable_not_utf8_is_left_out_with_a_warning() {
    use std::os::unix::ffi::OsStrExt;
    let h = TestHome::new();
    h.script(
        "bad-env.sh",
        "echo \"BAD=${CT_BAD-unset} GOOD=$CT_GOOD\"\nexec sleep 1000\n",
    );
    let mut c = h.command(&["start", "bad-env.sh", "--kill-timeout", "300"]);
    c.env("CT_BAD", std::ffi::OsStr::from_bytes(b"caf\xe9"));
    c.env("CT_GOOD", "yes");
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: not passed to the apps (not UTF-8): CT_BAD"),
        "{}",
        text(&out)
    );
    let log = h.wait_log("bad-env", "BAD=");
    assert!(log.contains("BAD=unset GOOD=yes\n"), "log: {log:?}");
    // Started by that command, the daemon has CT_BAD in its own
    // environment: an app started without the caller's gets the daemon's.
    h.script(
        "bare.sh",
        "echo \"BARE BAD=${CT_BAD-unset}\"\nexec sleep 1000\n",
    );
    h.ok(json!({"cmd": "start", "app": h.with_cwd(json!({
        "name": "bare", "script": "bare.sh", "kill_timeout": 300}))}));
    let log = h.wait_log("bare", "BARE");
    assert!(log.contains("BARE BAD=unset\n"), "log: {log:?}");
    assert_eq!(h.corral(&["ping"]).status.code(), Some(0));
}

#[test]
fn output_and_error_paths_and_dev_null() {
    let h = TestHome::started();
    let d = shell_app(
        &h,
        "paths",
        "echo to-out\necho to-err >&2",
        json!({"output": "out.txt", "error": "logs/err.txt"}),
    );
    assert_eq!(
        env_of(&d, "pm_out_log_path"),
        json!(h.work.join("out.txt").display().to_string())
    );
    wait_until(SOON, "custom logs are written", || {
        read(&h.work.join("out.txt")).contains("done")
            && read(&h.work.join("logs/err.txt")).contains("to-err")
    });
    assert_eq!(read(&h.work.join("out.txt")), "to-out\ndone\n");
    assert_eq!(read(&h.work.join("logs/err.txt")), "to-err\n");
    assert!(!h.home.join("logs/paths-out.log").exists());

    // stdout to /dev/null: no file, stderr still logged.
    let d = shell_app(
        &h,
        "quiet",
        "echo hidden\necho shown >&2",
        json!({"output": "/dev/null"}),
    );
    assert_eq!(env_of(&d, "pm_out_log_path"), "/dev/null");
    wait_until(SOON, "stderr of quiet is logged", || {
        h.err_log("quiet").contains("shown")
    });
    assert!(!h.home.join("logs/quiet-out.log").exists());
    assert_eq!(h.status("quiet"), "online");
}

/// Whether `line` starts with `YYYY-MM-DD HH:mm:ss.SSS: `; the rest.
fn strip_stamp(line: &str) -> Option<&str> {
    let shape = "dddd-dd-dd dd:dd:dd.ddd: ";
    if line.len() < shape.len() || !line.is_char_boundary(shape.len()) {
        return None;
    }
    let (head, rest) = line.split_at(shape.len());
    head.chars()
        .zip(shape.chars())
        .all(|(c, s)| if s == 'd' { c.is_ascii_digit() } else { c == s })
        .then_some(rest)
}

#[test]
fn log_date_format_stamps_every_line_once() {
    let h = TestHome::started();
    // The second line is written in two halves with a pause in between, so
    // the daemon reads it in two chunks.
    shell_app(
        &h,
        "stamped",
        "echo first\nprintf 'half-'\nsleep 0.3\necho second\necho third",
        json!({"log_date_format": "YYYY-MM-DD HH:mm:ss.SSS"}),
    );
    wait_until(SOON, "the stamped log is complete", || {
        h.out_log("stamped").ends_with("done\n")
    });
    let log = h.out_log("stamped");
    let rest: Vec<&str> = log
        .lines()
        .map(|l| strip_stamp(l).unwrap_or_else(|| panic!("line without a stamp: {l:?}")))
        .collect();
    assert_eq!(rest, ["first", "half-second", "third", "done"], "{log}");
}

#[test]
fn pid_file_is_written_and_removed_on_stop() {
    let h = TestHome::started();
    let sleeper = |name: &str, extra: Value| {
        let mut app = json!({"name": name, "script": "sleep", "args": ["1000"],
                             "kill_timeout": 300});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                app[k] = v;
            }
        }
        h.start(app).remove(0)
    };
    let d = sleeper("pf", json!({"pid_file": "run/pf.pid"}));
    let path = h.work.join("run/pf.pid");
    assert_eq!(env_of(&d, "pm_pid_path"), json!(path.display().to_string()));
    // The default place, for another app.
    let d2 = sleeper("pf2", json!({}));
    let default = h
        .home
        .join(format!("pids/pf2-{}.pid", d2["pm_id"].as_u64().unwrap()));
    assert_eq!(
        env_of(&d2, "pm_pid_path"),
        json!(default.display().to_string())
    );
    // A few rounds: the files must be gone as soon as the stop answers.
    for round in 0..5 {
        let started = h.ok(json!({"cmd": "start", "target": "all"}));
        for (d, file) in started.as_array().unwrap().iter().zip([&path, &default]) {
            assert_eq!(read(file).trim(), pid_of(d).to_string(), "round {round}");
        }
        h.ok(json!({"cmd": "stop", "target": "all"}));
        for file in [&path, &default] {
            assert!(
                !file.exists(),
                "round {round}: {} survives the stop",
                file.display()
            );
        }
    }
}

/// The files of `pids/`, sorted, and the inode of each.
fn pid_dir(h: &TestHome) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<(String, u64)> = std::fs::read_dir(h.home.join("pids"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn removed_pid_files_are_kept_as_spares_and_reused() {
    let h = TestHome::started();
    let start = |name: &str| {
        h.start(json!({"name": name, "script": "sleep", "args": ["1000"], "kill_timeout": 300}))
            .remove(0)
    };
    let d = start("one");
    let file = format!("one-{}.pid", d["pm_id"]);
    let [(name, ino)] = &pid_dir(&h)[..] else {
        panic!("{:?}", pid_dir(&h))
    };
    assert_eq!(name, &file);
    // Stopped: the pid file is gone, its inode kept as a hidden spare.
    h.ok(json!({"cmd": "stop", "target": "one"}));
    assert_eq!(pid_dir(&h), [(".spare-0".to_string(), *ino)]);
    // Another app's first pid file is that spare, written over.
    h.ok(json!({"cmd": "delete", "target": "one"}));
    let d = start("two");
    let file = format!("two-{}.pid", d["pm_id"]);
    assert_eq!(pid_dir(&h), [(file.clone(), *ino)]);
    assert_eq!(
        read(&h.home.join("pids").join(&file)).trim(),
        pid_of(&d).to_string()
    );
    // A daemon that exits leaves no spare behind.
    h.ok(json!({"cmd": "stop", "target": "two"}));
    assert_eq!(pid_dir(&h).len(), 1);
    assert_eq!(h.corral(&["kill"]).status.code(), Some(0));
    assert_eq!(pid_dir(&h), []);
    // One left by a daemon that could not remove it (killed) is taken on
    // by the next.
    std::fs::write(h.home.join("pids/.spare-7"), "99\n").unwrap();
    let (_, spare) = pid_dir(&h).remove(0);
    assert_eq!(h.corral(&["ping"]).status.code(), Some(0));
    let d = start("three");
    let file = format!("three-{}.pid", d["pm_id"]);
    assert_eq!(pid_dir(&h), [(file.clone(), spare)]);
    assert_eq!(
        read(&h.home.join("pids").join(&file)).trim(),
        pid_of(&d).to_string()
    );
}

/// Two apps never share a log file by accident: one whose given file is
/// another's default is refused (in the table or in the same request),
/// naming the file and the app; files given to both are shared on purpose.
#[test]
fn an_accidental_shared_log_file_is_refused() {
    let h = TestHome::started();
    let sleep = |name: &str| json!({"name": name, "script": "sleep", "args": ["1000"]});
    h.start(sleep("x"));
    let x_out = h.home.join("logs/x-out.log").display().to_string();
    let mut y = sleep("y");
    y["output"] = json!(x_out);
    let r = h.request(json!({"cmd": "start", "apps": [y]}));
    assert_eq!(r["ok"], json!(false), "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&x_out) && msg.contains("`x`"), "{r}");
    // Within one request: the second's given file is the first's default.
    let mut q = sleep("q");
    q["error"] = json!(h.home.join("logs/p-out.log").display().to_string());
    let r = h.request(json!({"cmd": "start", "apps": [sleep("p"), q]}));
    assert_eq!(r["ok"], json!(false), "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`p`"),
        "{r}"
    );
    assert_eq!(h.list().len(), 1, "nothing of a refused start is left");
    // Given to both: shared on purpose.
    let mut z1 = sleep("z1");
    z1["output"] = json!("shared.log");
    let mut z2 = sleep("z2");
    z2["output"] = json!("shared.log");
    h.ok(json!({"cmd": "start", "apps": [z1, z2]}));
    assert_eq!(h.list().len(), 3);
}

/// A pid file named as the daemon's spares, in its pids/, is refused.
#[test]
fn a_pid_file_named_as_a_spare_is_refused() {
    let h = TestHome::started();
    let path = h.home.join("pids/.spare-3");
    let r = h.request(
        json!({"cmd": "start", "apps": [{"name": "x", "script": "sleep",
        "args": ["1000"], "pid_file": path.display().to_string()}]}),
    );
    assert_eq!(r["ok"], json!(false), "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("pid_file") && msg.contains(".spare-3"), "{r}");
    // However the directory is spelt.
    let round = h.home.join("pids/../pids/.spare-4");
    let r = h.request(
        json!({"cmd": "start", "apps": [{"name": "x", "script": "sleep",
        "args": ["1000"], "pid_file": round.display().to_string()}]}),
    );
    assert_eq!(r["ok"], json!(false), "{r}");
    assert!(h.list().is_empty());
    // An app named `.spare` is no spare: its pid file ends in .pid.
    let d = h.start(json!({"name": ".spare", "script": "sleep", "args": ["1000"]}));
    assert_eq!(env_of(&d[0], "status"), "online");
}

#[test]
fn exits_after_min_uptime_are_stable_restarts() {
    let h = TestHome::started();
    // Lives 300 ms, longer than min_uptime: never errored, however often.
    h.script("brief.sh", "sleep 0.3\nexit 1\n");
    h.start(
        json!({"name": "brief", "script": "brief.sh", "min_uptime": 100,
                   "max_restarts": 1, "kill_timeout": 300}),
    );
    wait_until(SOON, "brief restarted 3 times", || {
        env_of(&h.describe("brief"), "restart_time")
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    let d = h.describe("brief");
    assert_ne!(env_of(&d, "status"), "errored", "{d}");
    assert_eq!(env_of(&d, "unstable_restarts"), json!(0));
}

#[test]
fn kill_signal_is_the_stop_signal() {
    let h = TestHome::started();
    h.script(
        "term.sh",
        "trap 'echo got-term; exit 0' TERM\ntrap 'echo got-int' INT\necho ready\n\
         while :; do sleep 0.05; done\n",
    );
    h.start(
        json!({"name": "term", "script": "term.sh", "kill_signal": "SIGTERM",
                   "kill_timeout": 3000}),
    );
    h.wait_log("term", "ready");
    let t0 = Instant::now();
    let r = h.ok(json!({"cmd": "stop", "target": "term"}));
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "SIGTERM was not sent"
    );
    assert_eq!(env_of(&r[0], "status"), "stopped");
    assert_eq!(env_of(&r[0], "kill_signal"), "SIGTERM");
    assert_eq!(env_of(&r[0], "exit_code"), json!(0), "{}", r[0]);
    let log = h.out_log("term");
    assert!(log.contains("got-term"), "{log:?}");
    assert!(!log.contains("got-int"), "{log:?}");
}

#[test]
fn restart_delay_shows_waiting_restart() {
    let h = TestHome::started();
    // Fails once, then stays up.
    h.script(
        "once.sh",
        "if [ -e marker ]; then exec sleep 1000; fi\ntouch marker\nexit 1\n",
    );
    h.start(
        json!({"name": "once", "script": "once.sh", "restart_delay": 700,
                   "kill_timeout": 300}),
    );
    h.wait_status("once", "waiting restart");
    let d = h.wait_status("once", "online");
    assert_eq!(env_of(&d, "restart_time"), json!(1));
    assert_eq!(env_of(&d, "restart_delay"), json!(700));
    assert!(running(pid_of(&d)));
}

#[test]
fn autorestart_false_leaves_it_stopped() {
    let h = TestHome::started();
    h.start(
        json!({"name": "oneshot", "script": "sh", "args": ["-c", "exit 5"],
                   "autorestart": false}),
    );
    let d = h.wait_status("oneshot", "stopped");
    assert_eq!(env_of(&d, "exit_code"), json!(5));
    // Another app's output proves time has passed; still no restart.
    shell_app(&h, "witness", "echo tick\nsleep 0.3\necho tock", json!({}));
    h.wait_log("witness", "tock");
    let d = h.describe("oneshot");
    assert_eq!(env_of(&d, "status"), "stopped");
    assert_eq!(env_of(&d, "restart_time"), json!(0));
}

#[test]
fn stop_exit_codes_do_not_restart() {
    let h = TestHome::started();
    h.start(
        json!({"name": "three", "script": "sh", "args": ["-c", "exit 3"],
                   "stop_exit_codes": [3]}),
    );
    h.start(
        json!({"name": "four", "script": "sh", "args": ["-c", "exit 4"],
                   "stop_exit_codes": [3], "max_restarts": 1}),
    );
    let d = h.wait_status("three", "stopped");
    assert_eq!(env_of(&d, "exit_code"), json!(3));
    assert_eq!(env_of(&d, "stop_exit_codes"), json!([3]));
    // An exit code not in the list restarts (here until errored).
    let d4 = h.wait_status("four", "errored");
    assert_eq!(env_of(&d4, "restart_time"), json!(1));
    let d = h.describe("three");
    assert_eq!(env_of(&d, "restart_time"), json!(0));
    assert_eq!(env_of(&d, "status"), "stopped");
}

#[test]
fn force_starts_a_second_app_of_the_same_name() {
    let h = TestHome::started();
    let app = json!({"name": "dup", "script": "sleep", "args": ["1000"], "kill_timeout": 300});
    let first = h.start(app.clone());
    let r = h.request(json!({"cmd": "start", "app": h.with_cwd(app.clone())}));
    assert_eq!(r["ok"], json!(false), "{r}");
    assert_eq!(r["error"]["code"], json!("already_running"), "{r}");
    assert_eq!(h.list().len(), 1);
    let mut forced = app;
    forced["force"] = json!(true);
    let second = h.start(forced);
    assert_ne!(second[0]["pm_id"], first[0]["pm_id"]);
    let all = h.describe_all(json!("dup"));
    assert_eq!(all.len(), 2);
    for d in &all {
        assert_eq!(env_of(d, "status"), "online");
    }
    assert_ne!(pid_of(&all[0]), pid_of(&all[1]));
}

#[test]
fn treekill_stops_the_whole_group() {
    let h = TestHome::started();
    // The background sleep ignores SIGINT (an async list in sh), so only
    // the group SIGKILL after kill_timeout ends it.
    let body = "sleep 1000 &\necho \"child=$!\"\nwait";
    h.script("tree.sh", &format!("{body}\n"));
    h.start(json!({"name": "tree", "script": "tree.sh", "kill_timeout": 300}));
    let child = logged_pid(&h.wait_log("tree", "child="), "child");
    assert!(running(child));
    let r = h.ok(json!({"cmd": "stop", "target": "tree"}));
    assert_eq!(env_of(&r[0], "status"), "stopped");
    assert!(
        !running(child),
        "grandchild {child} survived a treekill stop"
    );
}

#[test]
fn treekill_false_signals_the_main_process_only() {
    let h = TestHome::started();
    h.script("solo.sh", "sleep 1000 &\necho \"child=$!\"\nwait\n");
    h.start(
        json!({"name": "solo", "script": "solo.sh", "treekill": false,
                   "kill_timeout": 300}),
    );
    let child = logged_pid(&h.wait_log("solo", "child="), "child");
    let main = pid_of(&h.describe("solo"));
    let r = h.ok(json!({"cmd": "stop", "target": "solo"}));
    assert_eq!(env_of(&r[0], "status"), "stopped");
    assert!(!running(main), "main process {main} survived");
    let alive = running(child);
    // Clean up the grandchild this test started.
    // SAFETY: kill(2) on the pid of a process this test started.
    unsafe {
        libc::kill(child, libc::SIGKILL);
    }
    assert!(alive, "grandchild {child} was killed without treekill");
    wait_gone(child, "the grandchild");
}

#[test]
fn write_saves_the_options_in_cwd() {
    let h = TestHome::started();
    h.start(
        json!({"name": "wr", "script": "sleep", "args": ["1000"], "write": true,
                   "kill_timeout": 300}),
    );
    let path = h.work.join("wr-corral.json");
    wait_until(SOON, "wr-corral.json exists", || path.exists());
    let v: Value = serde_json::from_str(&read(&path)).expect("the file is JSON");
    assert_eq!(v["name"], json!("wr"));
    assert_eq!(v["kill_timeout"], json!(300));
}

#[test]
fn camel_case_keys_and_duration_strings() {
    let h = TestHome::started();
    let d = h.start(json!({"name": "camel", "script": "sleep", "args": ["1000"],
                           "killTimeout": "300ms", "minUptime": "2m",
                           "maxRestarts": 4, "restartDelay": "1s"}));
    let e = &d[0]["pm2_env"];
    assert_eq!(e["kill_timeout"], json!(300));
    assert_eq!(e["min_uptime"], json!(120_000));
    assert_eq!(e["max_restarts"], json!(4));
    assert_eq!(e["restart_delay"], json!(1000));
    let d = h.start(json!({"name": "hours", "script": "sleep", "args": ["1000"],
                           "kill_timeout": "1s", "min_uptime": "1h"}));
    assert_eq!(env_of(&d[0], "kill_timeout"), json!(1000));
    assert_eq!(env_of(&d[0], "min_uptime"), json!(3_600_000));
}

#[test]
fn bad_options_name_the_key() {
    let h = TestHome::started();
    let cases = [
        // A misspelt key (a custom key only warns: config_files.rs).
        (json!({"script": "sleep", "kill_timout": 1}), "kill_timout"),
        (
            json!({"script": "sleep", "kill_timeout": true}),
            "kill_timeout",
        ),
        (
            json!({"script": "sleep", "autorestart": "maybe"}),
            "autorestart",
        ),
        (json!({"script": "sleep", "env": ["A=1"]}), "env"),
        (
            json!({"script": "sleep", "killTimeout": "soon"}),
            "killTimeout",
        ),
    ];
    for (app, key) in cases {
        let r = h.request(json!({"cmd": "start", "app": h.with_cwd(app.clone())}));
        assert_eq!(r["error"]["code"], json!("invalid_option"), "{app}: {r}");
        let msg = r["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(key),
            "{app}: message {msg:?} does not name {key}"
        );
    }
    assert!(h.list().is_empty(), "a refused start changed the list");
}
