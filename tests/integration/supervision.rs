//! Supervision: crash loops, kill escalation, reaping, fd hygiene, and
//! stopping many apps at once.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

#[test]
fn a_crash_loop_ends_errored_after_max_restarts() {
    let h = TestHome::started();
    h.start(
        json!({"name": "crashy", "script": "sh", "args": ["-c", "exit 1"],
                   "max_restarts": 3}),
    );
    let d = h.wait_status("crashy", "errored");
    assert_eq!(env_of(&d, "restart_time"), json!(3), "{d}");
    assert_eq!(env_of(&d, "exit_code"), json!(1));
    assert_eq!(d["pid"], json!(0));
    // Errored is final: a later app's start shows nothing restarted it.
    h.start(json!({"name": "later", "script": "sleep", "args": ["1000"], "kill_timeout": 300}));
    let d = h.describe("crashy");
    assert_eq!(env_of(&d, "status"), "errored");
    assert_eq!(env_of(&d, "restart_time"), json!(3));
}

#[test]
fn an_app_ignoring_sigint_is_killed_after_kill_timeout() {
    let h = TestHome::started();
    h.script("deaf.sh", "trap '' INT\necho ready\nexec sleep 1000\n");
    let d = h.start(json!({"name": "deaf", "script": "deaf.sh", "kill_timeout": 500}));
    let pid = pid_of(&d[0]);
    h.wait_log("deaf", "ready");
    wait_until(SOON, "deaf has exec'd sleep", || {
        read(Path::new(&format!("/proc/{pid}/comm"))).trim() == "sleep"
    });
    let t0 = Instant::now();
    let r = h.ok(json!({"cmd": "stop", "target": "deaf"}));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "stop returned after {took:?}, before kill_timeout"
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert_eq!(env_of(&r[0], "status"), "stopped");
    assert_eq!(env_of(&r[0], "exit_signal"), "SIGKILL", "{}", r[0]);
    assert!(!running(pid), "pid {pid} survived SIGKILL");
}

/// Children of `ppid` that are zombies.
fn zombies_of(ppid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| matches!(proc_state(*pid), Some(('Z', p)) if p == ppid))
        .collect()
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    let h = TestHome::started();
    let daemon = h.daemon_pid();
    // A grandchild left behind, and a double-forked great-grandchild.
    let code = "sleep 0.2 & echo \"gc=$!\"; (sleep 0.3 & echo \"ggc=$!\"); exit 0";
    h.start(
        json!({"name": "leaver", "script": "sh", "args": ["-c", code],
                   "autorestart": false}),
    );
    h.wait_status("leaver", "stopped");
    let log = h.wait_log("leaver", "ggc=");
    let (gc, ggc) = (logged_pid(&log, "gc"), logged_pid(&log, "ggc"));
    // Gone from /proc altogether: someone reaped them — the daemon, as
    // their subreaper.
    wait_until(SOON, "the orphans are reaped", || {
        proc_state(gc).is_none() && proc_state(ggc).is_none()
    });
    wait_until(SOON, "the daemon has no zombie child", || {
        zombies_of(daemon).is_empty()
    });
    // A crash-looping app that leaves orphans behind: still no zombies.
    h.start(json!({"name": "loop", "script": "sh",
                   "args": ["-c", "sleep 0.05 & exit 1"], "max_restarts": 3}));
    h.wait_status("loop", "errored");
    wait_until(SOON, "no zombie after the crash loop", || {
        zombies_of(daemon).is_empty()
    });
    assert!(running(daemon));
}

/// The fds the shell of app `name` has open (listed with lstat, so the
/// listing opens nothing itself; no script file either, `sh -c`, so the
/// shell holds no fd of its own), the IPC channel fd if any, and the log.
fn fds_of_app(h: &TestHome, name: &str) -> (BTreeSet<u32>, Option<u32>, String) {
    let code = "n=0; while [ $n -lt 1024 ]; do \
                [ -L /proc/$$/fd/$n ] && echo \"fd=$n $(readlink /proc/$$/fd/$n)\"; \
                n=$((n+1)); done; echo \"chan=$NODE_CHANNEL_FD\"; echo listed; exec sleep 1000";
    h.start(json!({"name": name, "script": "sh", "args": ["-c", code],
                   "kill_timeout": 300}));
    let log = h.wait_log(name, "listed");
    let fds = log
        .lines()
        .filter_map(|l| l.strip_prefix("fd="))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let chan = log
        .lines()
        .find_map(|l| l.strip_prefix("chan="))
        .and_then(|c| c.trim().parse().ok());
    (fds, chan, log)
}

#[test]
fn an_app_gets_only_the_standard_fds() {
    // Launched from a clean fd table, so only the daemon's own fds could leak.
    let h = TestHome::started_with_fds(None);
    let (fds, chan, log) = fds_of_app(&h, "fds");
    let mut want: BTreeSet<u32> = [0, 1, 2].into();
    // The IPC channel of the man page's WHAT AN APP GETS, if the daemon provides one.
    want.extend(chan);
    assert_eq!(fds, want, "the app's fds: {log}");
    // stdin is a pipe the daemon writes `send` lines to, as PM2's.
    assert!(log.contains("fd=0 pipe:"), "stdin is not a pipe: {log}");
}

#[test]
fn fds_the_daemon_inherited_do_not_reach_apps() {
    // the man page's WHAT AN APP GETS "No other fd": an fd left open (without close-on-exec) by
    // whoever launched the daemon must not end up in every app.
    let h = TestHome::started_with_fds(Some(50));
    let (fds, chan, log) = fds_of_app(&h, "inherit");
    let mut want: BTreeSet<u32> = [0, 1, 2].into();
    want.extend(chan);
    assert!(
        !fds.contains(&50),
        "fd 50 of the daemon's launcher reaches the app: {log}"
    );
    assert_eq!(fds, want, "the app's fds: {log}");
}

#[test]
fn stopping_many_apps_runs_their_kill_timeouts_in_parallel() {
    let h = TestHome::started();
    let apps: Vec<_> = (0..20)
        .map(|i| {
            h.with_cwd(json!({"name": format!("p{i}"), "script": "sh",
                              "args": ["-c", "trap '' INT; exec sleep 1000"],
                              "kill_timeout": 400}))
        })
        .collect();
    let started = h.ok(json!({"cmd": "start", "apps": apps}));
    let pids: Vec<i32> = started.as_array().unwrap().iter().map(pid_of).collect();
    assert_eq!(pids.len(), 20);
    // Each has ignored SIGINT once it runs sleep.
    wait_until(SOON, "all 20 apps run sleep", || {
        pids.iter()
            .all(|p| read(Path::new(&format!("/proc/{p}/comm"))).trim() == "sleep")
    });
    let t0 = Instant::now();
    let r = h.ok(json!({"cmd": "stop", "target": "all"}));
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "stop all took {took:?}");
    assert!(took >= Duration::from_millis(380), "stop all took {took:?}");
    let r = r.as_array().unwrap();
    assert_eq!(r.len(), 20);
    for d in r {
        assert_eq!(env_of(d, "status"), "stopped", "{d}");
        assert_eq!(env_of(d, "exit_signal"), "SIGKILL", "{d}");
    }
    for p in pids {
        assert!(!running(p), "pid {p} survived");
    }
}

#[test]
fn kill_waits_for_the_rest_of_each_group() {
    let h = TestHome::started();
    // The background sleep ignores SIGINT (an async list in sh): only the
    // group SIGKILL after kill_timeout ends it.
    h.script("tree.sh", "sleep 1000 &\necho \"child=$!\"\nwait\n");
    h.start(json!({"name": "tree", "script": "tree.sh", "kill_timeout": 300}));
    let child = logged_pid(&h.wait_log("tree", "child="), "child");
    let daemon = h.daemon_pid();
    let out = h.corral(&["kill"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !running(child),
        "grandchild {child} survived corral kill (daemon {daemon})"
    );
}

/// Start `escaper`, whose grandchild calls `setsid`: its cgroup and the
/// grandchild's pid; None (deleted, skipped with a message) where the
/// daemon has no writable cgroup v2.
fn start_escaper(h: &TestHome) -> Option<(String, i32)> {
    let d = h.start(
        json!({"name": "escaper", "script": "sh", "kill_timeout": 300,
        "args": ["-c", "setsid sleep 1000 & echo $! > escaped.pid; exec sleep 1000"]}),
    );
    let Some(cg) = d[0]["pm2_env"]["cgroup"].as_str().map(str::to_string) else {
        eprintln!("skipped: no writable cgroup v2 here; the process group is used");
        h.ok(json!({"cmd": "delete", "target": "escaper"}));
        return None;
    };
    assert!(
        std::path::Path::new(&cg).join("cgroup.procs").exists(),
        "{cg}"
    );
    let pid_file = h.work.join("escaped.pid");
    wait_until(SOON, "the escaped pid is written", || {
        read(&pid_file).trim().parse::<i32>().is_ok()
    });
    let escaped: i32 = read(&pid_file).trim().parse().expect("a pid");
    Some((cg, escaped))
}

/// A grandchild that calls `setsid` leaves its app's process group, but not
/// its cgroup: where the daemon has a writable cgroup v2, stop, restart and
/// delete reach it (`cgroup.kill` at the kill timeout), and `describe`
/// names the cgroup; elsewhere this skips with a message.
#[test]
fn a_grandchild_that_calls_setsid_is_stopped_through_the_cgroup() {
    let h = TestHome::started();
    let Some((cg, escaped)) = start_escaper(&h) else {
        return;
    };
    // It really left the group: its session is its own (once setsid ran:
    // sh writes $! as soon as it has forked).
    let sid = || {
        std::fs::read_to_string(format!("/proc/{escaped}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(3)?
                    .parse::<i32>()
                    .ok()
            })
    };
    wait_until(SOON, "setsid gave it a session of its own", || {
        sid() == Some(escaped)
    });
    let restarted = h.ok(json!({"cmd": "restart", "target": "escaper"}));
    assert_eq!(restarted[0]["pm2_env"]["status"], "online");
    wait_gone(escaped, "the grandchild that called setsid");
    // Killed through cgroup.kill: removed, never reused (the kernel would
    // kill a child born into it).
    assert!(
        !std::path::Path::new(&cg).exists(),
        "the killed cgroup is removed"
    );
    let now = restarted[0]["pm2_env"]["cgroup"]
        .as_str()
        .expect("a cgroup");
    assert_ne!(now, cg);
    h.ok(json!({"cmd": "delete", "target": "escaper"}));
}

/// After `update` (the new image keeps each process's cgroup as two
/// numbers, given whole paths by the old one), a stop still reaches a
/// grandchild that left the process group.
#[test]
fn a_stop_after_an_update_still_reaches_the_whole_cgroup() {
    let h = TestHome::started();
    let Some((cg, escaped)) = start_escaper(&h) else {
        return;
    };
    let procs = std::path::Path::new(&cg).join("cgroup.procs");
    assert!(
        read(&procs)
            .lines()
            .any(|l| l.trim() == escaped.to_string()),
        "the grandchild is in the app's cgroup"
    );
    let out = h.corral(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env_of(&h.describe("escaper"), "cgroup").as_str(),
        Some(cg.as_str())
    );
    h.ok(json!({"cmd": "stop", "target": "escaper"}));
    wait_gone(
        escaped,
        "the grandchild that called setsid, after an update",
    );
    h.ok(json!({"cmd": "delete", "target": "escaper"}));
}

/// A crashed process's emptied cgroup is its app's next process's (a
/// restart costs no cgroup made and removed); deleting the app keeps it for
/// the next app given that pm_id (a delete and a start make none); the
/// daemon removes it when it exits.
#[test]
fn a_restarted_app_keeps_its_emptied_cgroup() {
    let h = TestHome::started();
    let d = h.start(json!({"name": "cg", "script": "sleep", "args": ["1000"]}));
    let Some(cg) = d[0]["pm2_env"]["cgroup"].as_str().map(str::to_string) else {
        eprintln!("skipped: no writable cgroup v2 here; the process group is used");
        h.ok(json!({"cmd": "delete", "target": "cg"}));
        return;
    };
    let first = d[0]["pid"].as_i64().expect("a pid") as i32;
    let procs = std::path::Path::new(&cg).join("cgroup.procs");
    assert_eq!(read(&procs).trim(), first.to_string());
    // SAFETY: a plain kill of the app this test started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let mut second = 0;
    wait_until(SOON, "the app restarted", || {
        let d = h.describe("cg");
        second = d["pid"].as_i64().unwrap_or(0) as i32;
        env_of(&d, "status") == "online" && second > 0 && second != first
    });
    let d = h.describe("cg");
    assert_eq!(env_of(&d, "cgroup").as_str(), Some(cg.as_str()));
    assert_eq!(read(&procs).trim(), second.to_string());
    let id = d["pm_id"].clone();
    h.ok(json!({"cmd": "delete", "target": "cg"}));
    assert_eq!(
        read(&procs).trim(),
        "",
        "nothing left in the deleted app's cgroup"
    );
    let d = h.start(json!({"name": "again", "script": "sleep", "args": ["1000"]}));
    assert_eq!(d[0]["pm_id"], id, "the pm_id is given again");
    assert_eq!(env_of(&d[0], "cgroup").as_str(), Some(cg.as_str()));
    assert_eq!(read(&procs).trim(), pid_of(&d[0]).to_string());
    assert_eq!(h.corral(&["kill"]).status.code(), Some(0));
    assert!(
        !std::path::Path::new(&cg).exists(),
        "the daemon's cgroups are removed when it exits"
    );
}

/// The daemon's children named `corral-spawner` (its spawner, with glibc).
fn spawners_of(daemon: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| matches!(proc_state(*pid), Some((s, p)) if p == daemon && s != 'Z'))
        .filter(|pid| read(Path::new(&format!("/proc/{pid}/comm"))).trim() == "corral-spawner")
        .collect()
}

/// Signals that `/proc/<pid>/status` shows under `field` (a hex mask).
fn signal_mask(pid: i32, field: &str) -> u64 {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .expect("a signal mask")
}

/// The spawner forks the apps' processes of a start, yet they are the
/// daemon's own children (it reaps them; they see it as their parent),
/// with no signal blocked and none ignored (SIGPIPE above all, and the two
/// libc's `signal` cannot reset, if the test runner ignores them); `ps`
/// names the spawner, which ends with the daemon.
#[test]
fn apps_are_the_daemons_children_though_the_spawner_forks_them() {
    let h = TestHome::started();
    let (daemon, pid) = start_kid(&h);
    assert_eq!(signal_mask(pid, "SigBlk:"), 0, "signals blocked in the app");
    assert_eq!(signal_mask(pid, "SigIgn:"), 0, "signals ignored in the app");
    let spawners = spawners_of(daemon);
    if !cfg!(target_env = "gnu") {
        assert!(spawners.is_empty(), "a spawner without glibc: {spawners:?}");
        return;
    }
    assert_eq!(spawners.len(), 1, "the daemon's spawners: {spawners:?}");
    let spawner = spawners[0];
    let cmdline = read(Path::new(&format!("/proc/{spawner}/cmdline")));
    assert_eq!(cmdline.trim_end_matches('\0'), "corral-spawner");
    // A restart is cloned by the daemon into its own memory (on x86_64):
    // the new process is the daemon's child just the same, and it undid
    // the daemon's signal mask and dispositions itself.
    h.ok(json!({"cmd": "restart", "target": "kid"}));
    let again = pid_of(&h.wait_status("kid", "online"));
    assert_ne!(again, pid);
    assert_eq!(proc_state(again).map(|s| s.1), Some(daemon));
    assert_eq!(signal_mask(again, "SigBlk:"), 0, "signals blocked");
    assert_eq!(signal_mask(again, "SigIgn:"), 0, "signals ignored");
    assert_eq!(spawners_of(daemon), [spawner], "the same spawner");
    // `update` execs a new image: the old spawner ends, the new image has
    // one of its own, and the app goes on.
    let out = h.corral(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_gone(spawner, "the old image's spawner");
    let spawners = spawners_of(daemon);
    assert_eq!(spawners.len(), 1, "spawners after update: {spawners:?}");
    let spawner = spawners[0];
    assert_eq!(pid_of(&h.describe("kid")), again);
    let out = h.corral(&["kill"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_gone(spawner, "the spawner");
}

/// With glibc, the daemon still has its one spawner, and never said it
/// lost it.
fn spawner_kept(h: &TestHome) {
    if cfg!(target_env = "gnu") {
        assert_eq!(spawners_of(h.daemon_pid()).len(), 1);
        assert!(
            !h.daemon_log().contains("the spawner"),
            "{}",
            h.daemon_log()
        );
    }
}

/// A daemon with one app (`kid`, its pid) and its spawner: (home, daemon,
/// app, spawner); None, skipped, without glibc (no spawner there).
fn app_and_spawner() -> Option<(TestHome, i32, i32, i32)> {
    if !cfg!(target_env = "gnu") {
        eprintln!("skipped: no spawner without glibc");
        return None;
    }
    let h = TestHome::started();
    let (daemon, first) = start_kid(&h);
    let spawner = *spawners_of(daemon).first().expect("a spawner");
    Some((h, daemon, first, spawner))
}

/// Start the app `kid` (a sleep); (the daemon's pid, kid's), kid checked
/// to be the daemon's child.
fn start_kid(h: &TestHome) -> (i32, i32) {
    let daemon = h.daemon_pid();
    let d = h.start(json!({"name": "kid", "script": "sleep", "args": ["1000"]}));
    let pid = pid_of(&d[0]);
    assert_eq!(
        proc_state(pid).map(|s| s.1),
        Some(daemon),
        "the app's parent"
    );
    (daemon, pid)
}

/// A spawner killed behind the daemon's back costs nothing but speed: the
/// daemon says so in its log and makes the apps' processes itself.
#[test]
fn the_daemon_forks_itself_once_its_spawner_is_gone() {
    let Some((h, daemon, first, spawner)) = app_and_spawner() else {
        return;
    };
    // SAFETY: kill(2) on the spawner of the daemon this test started.
    unsafe { libc::kill(spawner, libc::SIGKILL) };
    wait_until(SOON, "the daemon saw its spawner end", || {
        h.daemon_log()
            .contains(&format!("the spawner (pid {spawner}) ended by signal 9"))
    });
    // SAFETY: as above, on the app this test started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    wait_until(SOON, "kid restarted", || {
        let d = h.describe("kid");
        env_of(&d, "status") == "online" && pid_of(&d) != first && pid_of(&d) != 0
    });
    let again = pid_of(&h.describe("kid"));
    assert_eq!(proc_state(again).map(|s| s.1), Some(daemon));
    assert!(spawners_of(daemon).is_empty());
    // A start, which would have gone through it, too.
    let d = h.start(json!({"name": "kid2", "script": "sleep", "args": ["1000"]}));
    assert_eq!(proc_state(pid_of(&d[0])).map(|s| s.1), Some(daemon));
}

/// An environment too large for one request to the spawner (more than a
/// socket buffer) is forked by the daemon itself, whole.
#[test]
fn an_app_with_a_huge_environment_starts_whole() {
    let h = TestHome::started();
    let big = "x".repeat(100_000);
    h.start(json!({"name": "big", "script": "sh",
        "args": ["-c", "printf '%s %s %s\\n' ${#BIG1} ${#BIG2} ${#BIG3}; exec sleep 1000"],
        "env": {"BIG1": big, "BIG2": big, "BIG3": big}}));
    h.wait_log("big", "100000 100000 100000");
    assert_eq!(h.status("big"), "online");
    // Too big is no reason to give the spawner up.
    spawner_kept(&h);
}

/// A spawner that stops answering (stopped here) does not stop the daemon:
/// after its patience (2 s) the daemon ends it and starts the app itself.
#[test]
fn a_stopped_spawner_cannot_stop_the_daemon() {
    let Some((h, daemon, _first, spawner)) = app_and_spawner() else {
        return;
    };
    // SAFETY: kill(2) on the spawner of the daemon this test started.
    unsafe { libc::kill(spawner, libc::SIGSTOP) };
    let t0 = Instant::now();
    // A start goes through the spawner (a restart does not).
    h.start(json!({"name": "kid2", "script": "sleep", "args": ["1000"]}));
    let d = h.wait_status("kid2", "online");
    assert_eq!(proc_state(pid_of(&d)).map(|s| s.1), Some(daemon));
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t0.elapsed()
    );
    wait_gone(spawner, "the stopped spawner");
    assert!(h.daemon_log().contains("the spawner"), "{}", h.daemon_log());
    // The daemon still answers at once.
    assert_eq!(h.list().len(), 2);
}

/// The program and argument of `pid`'s command line `<prog> <n>`.
fn cmdline_of(pid: i32) -> Option<(String, String)> {
    let cmdline = read(Path::new(&format!("/proc/{pid}/cmdline")));
    let (prog, n) = cmdline.trim_end_matches('\0').split_once('\0')?;
    Some((prog.to_string(), n.to_string()))
}

/// The daemon's live children whose command line is `sleep <n>`, by n.
fn sleeps_of(daemon: i32) -> Vec<(String, i32)> {
    let mut v: Vec<(String, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| matches!(proc_state(*pid), Some((s, p)) if p == daemon && s != 'Z'))
        .filter_map(|pid| {
            let (prog, n) = cmdline_of(pid)?;
            prog.ends_with("sleep").then_some((n, pid))
        })
        .collect();
    v.sort();
    v
}

/// Start `n` apps `b0`… in one request, each `sleep 1000<i>` with an
/// environment variable of `env_bytes`, and check that every one is online
/// with its own process (a pid taken for another app's would show the
/// other's argument), one process each.
fn start_many_and_check(h: &TestHome, n: usize, env_bytes: usize) {
    let daemon = h.daemon_pid();
    let filler = "x".repeat(env_bytes);
    let apps: Vec<_> = (0..n)
        .map(|i| {
            json!({"name": format!("b{i}"), "script": "sleep", "args": [format!("1000{i}")],
                   "env": {"FILLER": filler}})
        })
        .collect();
    h.ok(json!({"cmd": "start", "apps": apps}));
    wait_until(SOON * 3, "every app online", || {
        h.list().iter().all(|d| env_of(d, "status") == "online")
    });
    for i in 0..n {
        let pid = pid_of(&h.describe(&format!("b{i}")));
        assert_eq!(
            cmdline_of(pid).map(|c| c.1),
            Some(format!("1000{i}")),
            "b{i}'s pid {pid}"
        );
        assert_eq!(proc_state(pid).map(|s| s.1), Some(daemon), "b{i}'s parent");
    }
    let sleeps = sleeps_of(daemon);
    assert_eq!(sleeps.len(), n, "one process per app: {sleeps:?}");
}

/// A bulk start has many requests in flight to the spawner at once (the
/// daemon reads the answers later, in order): each app gets its own child.
#[test]
fn a_bulk_start_gives_each_app_its_own_child() {
    let h = TestHome::started();
    start_many_and_check(&h, 40, 0);
    spawner_kept(&h);
}

/// A spawner that stops answering with many requests in flight: ended
/// after its patience, the daemon makes every app's process itself, none
/// twice.
#[test]
fn a_spawner_stopped_during_a_bulk_start_loses_no_app_and_doubles_none() {
    let Some((h, _daemon, first, spawner)) = app_and_spawner() else {
        return;
    };
    h.ok(json!({"cmd": "delete", "target": "kid"}));
    wait_gone(first, "kid");
    // SAFETY: kill(2) on the spawner of the daemon this test started.
    unsafe { libc::kill(spawner, libc::SIGSTOP) };
    // Requests of 20 kB: more than its socket's buffer holds in flight.
    let t0 = Instant::now();
    start_many_and_check(&h, 30, 20_000);
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
    wait_gone(spawner, "the stopped spawner");
    assert!(h.daemon_log().contains("the spawner"), "{}", h.daemon_log());
    assert_eq!(h.list().len(), 30, "the daemon still answers");
}

/// A seccomp filter instruction.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Start `h`'s daemon under the seccomp filter `prog` (it inherits it from
/// the CLI that starts it).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn daemon_under_filter(h: &TestHome, prog: Vec<libc::sock_filter>) {
    let mut c = h.command(&["ping"]);
    under_filter(&mut c, prog);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "corral ping: {}", text(&out));
    let daemon = h.daemon_pid();
    assert!(
        read(Path::new(&format!("/proc/{daemon}/status"))).contains("Seccomp:\t2"),
        "the daemon runs under the filter"
    );
}

/// Run `c` under the seccomp filter `prog`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn under_filter(c: &mut std::process::Command, prog: Vec<libc::sock_filter>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec, only prctl(2) on a filter that the
    // closure owns.
    unsafe {
        c.pre_exec(move || {
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut _,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The start of a filter: load the call's number; clone3 answers ENOSYS
/// (as under Docker's default profile); the rest goes on after it.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn clone3_enosys() -> Vec<libc::sock_filter> {
    vec![
        bpf(0x20, 0, 0, 0),
        bpf(0x15, 0, 1, libc::SYS_clone3 as u32),
        bpf(0x06, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
    ]
}

/// seccomp's answers: an errno, or the call allowed.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const RET_ERRNO: u32 = 0x0005_0000;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const RET_ALLOW: u32 = 0x7fff_0000;

/// Restart `kid` and check the new process: the daemon's child, no signal
/// blocked or ignored, in the app's cgroup if it has one. Its pid.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn restart_kid_and_check(h: &TestHome, daemon: i32, before: i32) -> i32 {
    h.ok(json!({"cmd": "restart", "target": "kid"}));
    let d = h.wait_status("kid", "online");
    let pid = pid_of(&d);
    assert_ne!(pid, before);
    assert_eq!(proc_state(pid).map(|s| s.1), Some(daemon), "the parent");
    assert_eq!(signal_mask(pid, "SigBlk:"), 0, "signals blocked");
    assert_eq!(signal_mask(pid, "SigIgn:"), 0, "signals ignored");
    if let Some(cg) = env_of(&d, "cgroup").as_str() {
        let procs = read(&Path::new(cg).join("cgroup.procs"));
        assert_eq!(procs.trim(), pid.to_string(), "in its cgroup");
    }
    pid
}

/// Where clone3 is refused as Docker's default seccomp profile refuses it
/// (ENOSYS), the spawner forks with the older clone, and a restart is
/// cloned into the daemon's memory with the older clone too (the child
/// then joins its cgroup itself): all the daemon's children.
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn the_spawner_works_where_clone3_is_refused() {
    if !cfg!(target_env = "gnu") {
        eprintln!("skipped: no spawner without glibc");
        return;
    }
    let h = TestHome::new();
    // seccomp: clone3 answers ENOSYS, every other call is allowed.
    daemon_under_filter(
        &h,
        [clone3_enosys().as_slice(), &[bpf(0x06, 0, 0, RET_ALLOW)]].concat(),
    );
    let (daemon, first) = start_kid(&h);
    assert_eq!(spawners_of(daemon).len(), 1, "{}", h.daemon_log());
    restart_kid_and_check(&h, daemon, first);
    assert!(
        !h.daemon_log().contains("the spawner"),
        "{}",
        h.daemon_log()
    );
}

/// Where a clone into the daemon's memory is refused too (a filter that
/// refuses `CLONE_VM` without `CLONE_VFORK`), restarts go through the
/// spawner; without the spawner, the daemon forks them itself.
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn restarts_are_forked_where_a_shared_clone_is_refused() {
    if !cfg!(target_env = "gnu") {
        eprintln!("skipped: no spawner without glibc");
        return;
    }
    let h = TestHome::new();
    let (vm, vfork) = (libc::CLONE_VM as u32, libc::CLONE_VFORK as u32);
    daemon_under_filter(
        &h,
        [
            clone3_enosys().as_slice(),
            &[
                // clone with CLONE_VM and without CLONE_VFORK: EPERM.
                bpf(0x15, 0, 4, libc::SYS_clone as u32),
                bpf(0x20, 0, 0, 16),
                bpf(0x54, 0, 0, vm | vfork),
                bpf(0x15, 0, 1, vm),
                bpf(0x06, 0, 0, RET_ERRNO | libc::EPERM as u32),
                bpf(0x06, 0, 0, RET_ALLOW),
            ],
        ]
        .concat(),
    );
    let (daemon, first) = start_kid(&h);
    let spawners = spawners_of(daemon);
    assert_eq!(spawners.len(), 1, "{}", h.daemon_log());
    let second = restart_kid_and_check(&h, daemon, first);
    assert_eq!(spawners_of(daemon), spawners, "{}", h.daemon_log());
    // SAFETY: kill(2) on the spawner of the daemon this test started.
    unsafe { libc::kill(spawners[0], libc::SIGKILL) };
    wait_until(SOON, "the daemon saw its spawner end", || {
        h.daemon_log().contains("the spawner (pid")
    });
    restart_kid_and_check(&h, daemon, second);
}

/// Where the kernel makes no child but one that shares its parent's memory
/// (a filter that refuses clone3, and clone without `CLONE_VM`), neither
/// the spawner nor a fork can start anything: every app process, of a
/// start and of a restart, is cloned into the daemon's memory.
#[test]
#[cfg(target_arch = "x86_64")]
fn apps_start_where_only_a_shared_clone_is_allowed() {
    use std::os::unix::net::UnixDatagram;
    let h = TestHome::new();
    let vm = libc::CLONE_VM as u32;
    let mut c = h.command(&["daemon", "--no-daemon"]);
    under_filter(
        &mut c,
        [
            clone3_enosys().as_slice(),
            &[
                // clone without CLONE_VM (a fork): EPERM.
                bpf(0x15, 0, 3, libc::SYS_clone as u32),
                bpf(0x20, 0, 0, 16),
                bpf(0x45, 1, 0, vm),
                bpf(0x06, 0, 0, RET_ERRNO | libc::EPERM as u32),
                bpf(0x06, 0, 0, RET_ALLOW),
            ],
        ]
        .concat(),
    );
    // Ready when it says so (a CLI that found no daemon would start one).
    let sock_path = h.root.join("n.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    c.env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut daemon = c.spawn().expect("spawn corral daemon --no-daemon");
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("READY=1 within 10 s");
    assert_eq!(&buf[..n], b"READY=1");
    let pid = daemon.id() as i32;
    assert!(spawners_of(pid).is_empty(), "no spawner can be forked");
    let (_, first) = start_kid(&h);
    assert_eq!(signal_mask(first, "SigBlk:"), 0, "signals blocked");
    assert_eq!(signal_mask(first, "SigIgn:"), 0, "signals ignored");
    restart_kid_and_check(&h, pid, first);
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = daemon.wait().expect("the daemon exits");
    assert_eq!(status.code(), Some(0), "{}", h.daemon_log());
}
