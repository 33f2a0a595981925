//! Resource watch: /proc sampling of the process group (monit), memory
//! limits, exponential backoff, cron restarts, file watching, and the
//! daemon's own CPU use.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

/// The sample interval of the daemons started here (ms).
const FAST_SAMPLES: &[&str] = &["--sample-interval", "200"];

/// `monit.memory` of app `name`.
fn memory(h: &TestHome, name: &str) -> u64 {
    h.describe(name)["monit"]["memory"]
        .as_u64()
        .expect("monit.memory is a number")
}

/// `monit.cpu` of app `name`.
fn cpu(h: &TestHome, name: &str) -> f64 {
    h.describe(name)["monit"]["cpu"]
        .as_f64()
        .expect("monit.cpu is a number")
}

/// `pm2_env.restart_time` of a description.
fn restart_time(d: &Value) -> u64 {
    env_of(d, "restart_time")
        .as_u64()
        .expect("restart_time is a number")
}

fn restarts(h: &TestHome, name: &str) -> u64 {
    restart_time(&h.describe(name))
}

/// Wait until app `name` is online with `restart_time` == `n`; its
/// description.
fn wait_restarts(h: &TestHome, name: &str, n: u64) -> Value {
    let mut last = Value::Null;
    wait_until(
        SOON,
        &format!("{name} is online with restart_time {n}"),
        || {
            last = h.describe(name);
            restart_time(&last) == n && env_of(&last, "status") == "online"
        },
    );
    last
}

/// Poll `cond` over the whole of `window`; panic naming `what` the first
/// time it does not hold.
fn holds_for(window: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + window;
    loop {
        assert!(cond(), "{what} stopped holding within {window:?}");
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fields of `/proc/<pid>/stat` after the command (field 3 onwards).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The live processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|f| {
                f.len() > 2 && f[0] != "Z" && f[2].parse::<i32>().ok() == Some(pgid)
            })
        })
        .collect()
}

fn page_size() -> u64 {
    // SAFETY: sysconf(3) has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf(3) has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as u64 }
}

/// Resident bytes of `pid` from `/proc/<pid>/statm` (0 if gone).
fn statm_rss(pid: i32) -> u64 {
    read(Path::new(&format!("/proc/{pid}/statm")))
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * page_size()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let f = stat_fields(pid).expect("the process is alive");
    // Fields 14 and 15 of stat; `f` starts at field 3.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// `voluntary_ctxt_switches` of `pid`.
fn voluntary_switches(pid: i32) -> u64 {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a voluntary_ctxt_switches line")
}

/// How many times the daemon logged a watch restart of app `name`.
fn watch_restarts_logged(h: &TestHome, name: &str) -> usize {
    let who = format!("app {name} (");
    h.daemon_log()
        .lines()
        .filter(|l| l.contains(&who) && l.contains("restart") && l.contains("files changed"))
        .count()
}

/// A directory under the work directory, created.
fn dir(h: &TestHome, rel: &str) -> PathBuf {
    let d = h.work.join(rel);
    std::fs::create_dir_all(&d).expect("create a directory");
    d
}

/// Write `path` (creating its directory); a change for a watcher.
fn write(path: &Path, body: &str) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("create the file's directory");
    }
    std::fs::write(path, body).expect("write a file");
}

/// Start `sleep 1000` as `name` watching `cwd` with `watch_delay`, plus
/// the options in `extra`; its pid.
fn watched(h: &TestHome, name: &str, cwd: &Path, delay: u64, extra: Value) -> i32 {
    let mut app = json!({"name": name, "script": "sleep", "args": ["1000"],
                         "cwd": cwd.display().to_string(), "watch": true,
                         "watch_delay": delay, "kill_timeout": 500});
    for (k, v) in extra.as_object().expect("extra options are an object") {
        app[k] = v.clone();
    }
    pid_of(&h.start(app)[0])
}

// ---- memory and CPU --------------------------------------------------------

#[test]
fn max_memory_restart_restarts_a_growing_app_and_is_not_unstable() {
    let h = TestHome::with_daemon_args(FAST_SAMPLES);
    // 10 MiB of written memory every 50 ms, up to 200 MiB.
    let code = "import time\nb = []\nwhile True:\n    if len(b) < 20:\n        \
                b.append(b'x' * (10 << 20))\n    time.sleep(0.05)\n";
    // A restart counted as unstable would make it errored at once
    // (max_restarts 0, every run shorter than min_uptime).
    let d = h.start(
        json!({"name": "hog", "script": "python3", "args": ["-c", code],
                           "max_memory_restart": "40M", "max_restarts": 0,
                           "min_uptime": 60000, "kill_timeout": 2000}),
    );
    let mut pids = vec![pid_of(&d[0])];
    let mut last = Value::Null;
    wait_until(SOON, "hog was restarted twice for its memory", || {
        last = h.describe("hog");
        assert_ne!(env_of(&last, "status"), "errored", "{last}");
        assert_eq!(env_of(&last, "unstable_restarts"), json!(0), "{last}");
        let pid = pid_of(&last);
        if env_of(&last, "status") == "online" && pids.last() != Some(&pid) {
            pids.push(pid);
        }
        restart_time(&last) >= 2 && env_of(&last, "status") == "online"
    });
    assert!(pids.len() >= 3, "each restart gives a new pid: {pids:?}");
    let log = h.daemon_log();
    assert!(
        log.contains("over the limit of 41943040 (max_memory_restart)"),
        "corral.log names the memory restart (40M = 41943040 bytes): {log}"
    );
    h.ok(json!({"cmd": "stop", "target": "hog"}));
}

#[test]
fn cpu_of_a_busy_loop_and_of_an_idle_app() {
    let h = TestHome::with_daemon_args(FAST_SAMPLES);
    h.start(
        json!({"name": "busy", "script": "sh", "args": ["-c", "while :; do :; done"],
                   "kill_timeout": 500}),
    );
    h.start(json!({"name": "idle", "script": "sleep", "args": ["1000"]}));
    let mut seen = 0.0;
    wait_until(SOON, "busy reads more than 50% CPU", || {
        seen = cpu(&h, "busy");
        seen > 50.0
    });
    assert!(seen <= 150.0, "one busy thread reads {seen}% of one core");
    // Each describe reads the app anew: over its life at first, then since
    // the reading before (at least 0.5 s before).
    holds_for(Duration::from_secs(1), "idle reads under 5% CPU", || {
        let c = cpu(&h, "idle");
        c < 5.0
    });
    assert!(memory(&h, "idle") > 0, "{}", h.describe("idle"));
    h.ok(json!({"cmd": "stop", "target": "busy"}));
}

#[test]
fn memory_is_summed_over_the_process_group() {
    let h = TestHome::with_daemon_args(FAST_SAMPLES);
    let g = h.start(json!({"name": "group", "script": "sh",
                           "args": ["-c", "sleep 1000 & sleep 1000 & wait"]}));
    let l = h.start(json!({"name": "lone", "script": "sleep", "args": ["1000"]}));
    let (gpid, lpid) = (pid_of(&g[0]), pid_of(&l[0]));
    wait_until(SOON, "the group holds sh and its two sleeps", || {
        let members = group_members(gpid);
        let sleeps = members
            .iter()
            .filter(|p| read(Path::new(&format!("/proc/{p}/comm"))).trim() == "sleep")
            .count();
        members.len() == 3 && sleeps == 2
    });
    // A sample taken once every member had exec'd matches what /proc says:
    // from 3/4 of the statm sum (the sampler reads the rss of
    // /proc/<pid>/stat, as PM2's pidusage does, which newer kernels
    // approximate low by a few dozen pages per process; the main process
    // alone, or one member missed, reads well under 3/4), up to +10%.
    let near = |m: u64, sum: u64| m * 4 >= sum * 3 && m * 10 <= sum * 11;
    let mut last = (0, 0);
    wait_until(
        SOON,
        "group's monit.memory is about the summed RSS of sh and its two sleeps",
        || {
            let m = memory(&h, "group");
            let sum: u64 = group_members(gpid).into_iter().map(statm_rss).sum();
            last = (m, sum);
            near(m, sum)
        },
    );
    wait_until(SOON, "lone's monit.memory is about its RSS", || {
        near(memory(&h, "lone"), statm_rss(lpid))
    });
    let (group, lone) = (memory(&h, "group"), memory(&h, "lone"));
    assert!(
        group > lone,
        "the group of three reads {group} bytes, a lone sleep {lone} (last: {last:?})"
    );
}

// ---- backoff -----------------------------------------------------------------

#[test]
fn exp_backoff_grows_by_half_and_shows_waiting_restart() {
    let h = TestHome::started();
    h.start(
        json!({"name": "failing", "script": "sh", "args": ["-c", "exit 1"],
                   "exp_backoff_restart_delay": 100, "max_restarts": 50}),
    );
    let t0 = Instant::now();
    let expected: [u64; 8] = [100, 150, 225, 337, 505, 757, 1135, 1702];
    let mut seen: Vec<u64> = Vec::new();
    let mut waiting = false;
    let mut reached = Duration::ZERO;
    wait_until(SOON, "prev_restart_delay reaches 337", || {
        let d = h.describe("failing");
        let status = env_of(&d, "status");
        assert_ne!(status, "errored", "{d}");
        waiting |= status == "waiting restart";
        let v = env_of(&d, "prev_restart_delay")
            .as_u64()
            .unwrap_or_else(|| panic!("prev_restart_delay is a number: {d}"));
        if v == 0 {
            assert!(seen.is_empty(), "prev_restart_delay went back to 0: {d}");
            return false;
        }
        let k = expected
            .iter()
            .position(|&e| e == v)
            .unwrap_or_else(|| panic!("prev_restart_delay {v} is not in {expected:?}: {d}"));
        // The k-th delay (from 0) follows the (k+1)-th exit: k restarts
        // done while it waits, k+1 once it is over.
        let rt = restart_time(&d);
        assert!(rt == k as u64 || rt == k as u64 + 1, "delay {v} with {d}");
        if seen.last() != Some(&v) {
            if let Some(&before) = seen.last() {
                let j = expected.iter().position(|&e| e == before).unwrap();
                assert!(k > j, "prev_restart_delay went from {before} to {v}");
            }
            seen.push(v);
        }
        if v >= 337 {
            reached = t0.elapsed();
            true
        } else {
            false
        }
    });
    assert!(seen.len() >= 3, "saw too few of the delays: {seen:?}");
    assert!(
        waiting,
        "never saw status `waiting restart` (delays {seen:?})"
    );
    // The fourth delay comes after the first three were waited out.
    assert!(
        reached >= Duration::from_millis(100 + 150 + 225),
        "delay 337 came after only {reached:?}"
    );
    h.ok(json!({"cmd": "stop", "target": "failing"}));
}

// ---- cron --------------------------------------------------------------------

#[test]
fn cron_restart_restarts_every_two_seconds_and_starts_a_stopped_job() {
    let h = TestHome::started();
    let d = h.start(
        json!({"name": "cronned", "script": "sleep", "args": ["1000"],
                           "cron_restart": "*/2 * * * * *", "kill_timeout": 500}),
    );
    h.start(
        json!({"name": "job", "script": "sh", "args": ["-c", "echo run; exit 0"],
                   "autorestart": false, "cron_restart": "* * * * * *"}),
    );
    let mut pids = vec![pid_of(&d[0])];
    let mut at: Vec<Instant> = Vec::new();
    let mut job_stopped = false;
    wait_until(
        Duration::from_secs(7),
        "cronned was restarted twice",
        || {
            job_stopped |= h.status("job") == "stopped";
            let d = h.describe("cronned");
            let rt = restart_time(&d);
            if rt > at.len() as u64 {
                assert_eq!(rt, at.len() as u64 + 1, "restarts came too close: {d}");
                at.push(Instant::now());
                // The replacement is spawned as the old process is reaped
                // (launching until the loop reads that it exec'd).
                let status = env_of(&d, "status");
                assert!(status == "online" || status == "launching", "{d}");
                let pid = pid_of(&d);
                assert!(
                    !pids.contains(&pid),
                    "restart {rt} kept pid {pid}: {pids:?}"
                );
                pids.push(pid);
            }
            rt >= 2
        },
    );
    let gap = at[1] - at[0];
    assert!(
        gap >= Duration::from_millis(1000) && gap <= Duration::from_millis(3500),
        "two cron restarts {gap:?} apart for */2 seconds"
    );
    // The stopped job (autorestart false) runs again at each firing.
    wait_until(SOON, "job has run three times", || {
        job_stopped |= h.status("job") == "stopped";
        h.out_log("job").lines().filter(|l| *l == "run").count() >= 3
    });
    assert!(job_stopped, "job was never seen stopped between runs");
}

#[test]
fn a_bad_cron_expression_is_refused_naming_it() {
    let h = TestHome::started();
    h.start(json!({"name": "keep", "script": "sleep", "args": ["1000"]}));
    let names = |h: &TestHome| -> Vec<(Value, Value)> {
        h.list()
            .iter()
            .map(|d| (d["name"].clone(), d["pm_id"].clone()))
            .collect()
    };
    let before = names(&h);
    for expr in ["*/0 * * * *", "61 * * * *", "* * * *"] {
        let r = h.request(json!({"cmd": "start", "app": h.with_cwd(json!(
            {"name": "bad", "script": "sleep", "args": ["1000"], "cron_restart": expr}))}));
        assert_eq!(r["ok"], json!(false), "{expr}: {r}");
        assert_eq!(r["error"]["code"], json!("invalid_option"), "{expr}: {r}");
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expr), "the message names {expr:?}: {msg}");
        assert_eq!(names(&h), before, "a refused start changed the list");
    }
}

// ---- watch -------------------------------------------------------------------

#[test]
fn a_burst_of_changes_restarts_once() {
    let h = TestHome::started();
    let (a, p) = (dir(&h, "a"), dir(&h, "p"));
    write(&a.join("f.txt"), "0");
    write(&p.join("f.txt"), "0");
    let pid = watched(&h, "w", &a, 200, json!({}));
    // Its delay is longer than w's: once it restarted for a later change,
    // any restart the burst still owed w has come.
    watched(&h, "probe", &p, 600, json!({}));
    for i in 0..10 {
        write(&a.join("f.txt"), &format!("{i}"));
    }
    let d = wait_restarts(&h, "w", 1);
    assert_ne!(pid_of(&d), pid, "the restart gives a new pid");
    write(&p.join("f.txt"), "1");
    wait_restarts(&h, "probe", 1);
    let d = h.describe("w");
    assert_eq!(restart_time(&d), 1, "one burst, one restart: {d}");
    assert_eq!(watch_restarts_logged(&h, "w"), 1, "{}", h.daemon_log());
    // A second burst is a second restart.
    write(&a.join("g.txt"), "new");
    wait_restarts(&h, "w", 2);
}

#[test]
fn ignored_files_do_not_restart() {
    let h = TestHome::started();
    let a = dir(&h, "a");
    for f in ["node_modules/dep.js", "x.tmp", "gen/deep/y.txt", "main.txt"] {
        write(&a.join(f), "0");
    }
    // Default ignore_watch (node_modules, .git), and a list of globs.
    watched(&h, "dflt", &a, 100, json!({}));
    watched(
        &h,
        "glob",
        &a,
        100,
        json!({"ignore_watch": ["node_modules", "*.tmp", "gen/**"]}),
    );
    // Ignores nothing and waits longer: when it has restarted, the others
    // had their chance to.
    watched(&h, "probe", &a, 500, json!({"ignore_watch": []}));

    write(&a.join("node_modules/dep.js"), "1");
    write(&a.join("node_modules/new.js"), "1");
    wait_restarts(&h, "probe", 1);
    for name in ["dflt", "glob"] {
        assert_eq!(restarts(&h, name), 0, "{name} restarted for node_modules");
        assert_eq!(watch_restarts_logged(&h, name), 0, "{}", h.daemon_log());
    }

    write(&a.join("x.tmp"), "1");
    write(&a.join("gen/deep/y.txt"), "1");
    write(&a.join("gen/deep/z.txt"), "1");
    wait_restarts(&h, "probe", 2);
    // dflt does not ignore these; glob does.
    wait_restarts(&h, "dflt", 1);
    assert_eq!(
        restarts(&h, "glob"),
        0,
        "glob restarted for an ignored file"
    );
    assert_eq!(watch_restarts_logged(&h, "glob"), 0, "{}", h.daemon_log());

    // glob was watching all along.
    write(&a.join("main.txt"), "1");
    wait_restarts(&h, "glob", 1);
}

#[test]
fn the_apps_own_log_in_the_watched_tree_does_not_restart_it() {
    let h = TestHome::started();
    let a = dir(&h, "a");
    let code = "while :; do echo tick; sleep 0.05; done";
    h.start(
        json!({"name": "chatty", "script": "sh", "args": ["-c", code],
                   "cwd": a.display().to_string(), "output": "./out.log",
                   "error": "./err.log", "watch": true, "watch_delay": 200,
                   "kill_timeout": 500}),
    );
    let log = a.join("out.log");
    let ticks = || read(&log).lines().filter(|l| *l == "tick").count();
    wait_until(SOON, "chatty logs into its cwd", || ticks() >= 2);
    let start = ticks();
    holds_for(
        Duration::from_millis(1500),
        "chatty has not restarted",
        || restarts(&h, "chatty") == 0,
    );
    let logged = ticks() - start;
    assert!(
        logged >= 10,
        "only {logged} lines were logged in the window"
    );
    // It was watching: another file restarts it.
    write(&a.join("other.txt"), "1");
    wait_restarts(&h, "chatty", 1);
}

#[test]
fn a_directory_created_after_start_is_watched() {
    let h = TestHome::started();
    let (a, p) = (dir(&h, "a"), dir(&h, "p"));
    write(&p.join("f.txt"), "0");
    watched(&h, "w", &a, 100, json!({}));
    watched(&h, "probe", &p, 500, json!({}));
    // Its creation is a change; the directory two levels down was made
    // before its parent could be watched.
    std::fs::create_dir_all(a.join("sub/deeper")).expect("mkdir -p");
    wait_restarts(&h, "w", 1);
    // The creation's burst is over once probe restarted for a later change.
    write(&p.join("f.txt"), "1");
    wait_restarts(&h, "probe", 1);
    assert_eq!(restarts(&h, "w"), 1);
    write(&a.join("sub/f.txt"), "1");
    wait_restarts(&h, "w", 2);
    write(&a.join("sub/deeper/f.txt"), "1");
    wait_restarts(&h, "w", 3);
}

#[test]
fn stop_turns_watching_off_and_start_on() {
    let h = TestHome::started();
    let a = dir(&h, "a");
    write(&a.join("f.txt"), "0");
    watched(&h, "w", &a, 100, json!({}));
    // Shares the directory (and so its inotify watches) and waits longer.
    watched(&h, "probe", &a, 500, json!({}));
    let r = h.ok(json!({"cmd": "stop", "target": "w"}));
    assert_eq!(env_of(&r[0], "status"), "stopped");
    write(&a.join("f.txt"), "1");
    wait_restarts(&h, "probe", 1);
    let d = h.describe("w");
    assert_eq!(env_of(&d, "status"), "stopped", "a change started it: {d}");
    assert_eq!(watch_restarts_logged(&h, "w"), 0, "{}", h.daemon_log());
    // start turns it on again.
    h.ok(json!({"cmd": "start", "target": "w"}));
    let before = restarts(&h, "w");
    write(&a.join("f.txt"), "2");
    wait_restarts(&h, "w", before + 1);
}

#[test]
fn watching_a_missing_path_is_refused_naming_it() {
    let h = TestHome::started();
    dir(&h, "src");
    let r = h.request(json!({"cmd": "start", "app": h.with_cwd(json!(
        {"name": "w", "script": "sleep", "args": ["1000"], "watch": ["src", "nowhere"]}))}));
    // `src` exists, `nowhere` does not.
    assert_eq!(r["ok"], json!(false), "{r}");
    assert_eq!(r["error"]["code"], json!("invalid_option"), "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("nowhere"), "the message names the path: {msg}");
    assert!(h.list().is_empty(), "{:?}", h.list());
}

// ---- the daemon's own cost -----------------------------------------------------

#[test]
fn the_daemon_does_not_wake_with_fifty_idle_apps() {
    // Sampling often: were every online app sampled on the interval, the
    // daemon would wake ~15 times in the window.
    let h = TestHome::with_daemon_args(FAST_SAMPLES);
    // Asked over one connection kept open through the window, so that no
    // connection closes in it; no log pipes either.
    let mut conn = h.connect();
    for i in 0..50 {
        let app = json!({"name": format!("idle{i}"), "script": "sleep", "args": ["1000"],
                         "output": "/dev/null", "error": "/dev/null"});
        let r = conn.call(&json!({"cmd": "start", "app": h.with_cwd(app)}));
        assert_eq!(r["ok"], json!(true), "{r}");
    }
    wait_until(SOON, "all 50 apps are online", || {
        let r = conn.call(&json!({"cmd": "list"}));
        let l = r["result"].as_array().cloned().unwrap_or_default();
        l.len() == 50 && l.iter().all(|d| env_of(d, "status") == "online")
    });
    let daemon = h.daemon_pid();
    let hz = clock_ticks_per_sec() as f64;
    // The window is the measurement, not a synchronization.
    let (t0, c0, s0) = (
        Instant::now(),
        cpu_ticks(daemon),
        voluntary_switches(daemon),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (took, used) = (t0.elapsed(), cpu_ticks(daemon) - c0);
    let woke = voluntary_switches(daemon) - s0;
    let secs = used as f64 / hz;
    eprintln!("daemon with 50 idle apps: {woke} wakes, {secs:.3} s of CPU over {took:?}");
    // Allowed: the wake that follows the last answer (the socket turns
    // writable again).
    assert!(woke <= 2, "the daemon woke {woke} times in {took:?}");
    assert!(secs < 0.1, "the daemon used {secs:.3} s of CPU in {took:?}");
    // A list reads the apps then and there.
    let r = conn.call(&json!({"cmd": "list"}));
    let l = r["result"].as_array().cloned().unwrap_or_default();
    assert!(
        l.iter().all(|d| d["monit"]["memory"].as_u64() > Some(0)),
        "every app's memory was read by the list: {r}"
    );
    drop(conn);
}

#[test]
fn the_daemon_does_not_wake_with_no_app_online() {
    // Sampling often: were it left running, the daemon would wake ~10
    // times in the window.
    let h = TestHome::with_daemon_args(FAST_SAMPLES);
    let daemon = h.daemon_pid();
    let threads = std::fs::read_dir(format!("/proc/{daemon}/task"))
        .expect("list the daemon's threads")
        .count();
    assert_eq!(threads, 1, "the daemon is one thread, whose switches count");
    // No request was ever made. Nothing happens in between: the window is
    // the measurement.
    let before = voluntary_switches(daemon);
    std::thread::sleep(Duration::from_secs(2));
    let after = voluntary_switches(daemon);
    eprintln!("idle daemon, no app: voluntary context switches {before} -> {after} in 2 s");
    assert_eq!(after, before, "the daemon with no app woke up");

    // An app that ran and stopped leaves no sampling behind. Asked over
    // one connection kept open through the window, so that no connection
    // closes in it; no log pipe either.
    let mut conn = h.connect();
    let app = json!({"name": "brief", "script": "sh", "args": ["-c", "exit 0"],
                     "autorestart": false, "output": "/dev/null", "error": "/dev/null"});
    let r = conn.call(&json!({"cmd": "start", "app": h.with_cwd(app)}));
    assert_eq!(r["ok"], json!(true), "{r}");
    wait_until(SOON, "brief is stopped", || {
        let r = conn.call(&json!({"cmd": "describe", "target": "brief"}));
        r["result"][0]["pm2_env"]["status"] == "stopped"
    });
    let before = voluntary_switches(daemon);
    std::thread::sleep(Duration::from_secs(2));
    let after = voluntary_switches(daemon);
    eprintln!("idle daemon, app stopped: voluntary context switches {before} -> {after} in 2 s");
    // Allowed: the wake that follows the last answer (the socket turns
    // writable again) and the sample timer armed while brief was online.
    assert!(
        after <= before + 2,
        "the daemon woke {} times in 2 s with no app online",
        after - before
    );
    drop(conn);
}
