//! Load and faults: a crash storm, a client that never reads, connections
//! that stall, the fd limit. Each test failed before its fix (issue 10).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

/// Open fds of process `pid`.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Zombie children of `parent`.
fn zombies_of(parent: i32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| proc_state(pid) == Some(('Z', parent)))
        .count()
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    read(std::path::Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One `ping` on a new connection: how long until its answer, or `None`
/// if none came within `limit`.
fn ping_time(h: &TestHome, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut s = UnixStream::connect(h.socket()).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.write_all(b"{\"id\":1,\"cmd\":\"ping\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let v: Value = serde_json::from_str(&line).ok()?;
    (v["ok"] == json!(true)).then(|| t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(Duration::MAX)
}

/// Issue 10 item 4: before, 150 apps that exit at once made the daemon
/// stop answering, leak pipe fds by the thousand, keep hundreds of zombies
/// and ignore SIGTERM.
#[test]
fn a_crash_storm_leaves_the_daemon_responsive_without_leaks() {
    const APPS: usize = 120;
    let h = TestHome::started();
    let daemon = h.daemon_pid();
    let apps: Vec<Value> = (0..APPS)
        .map(|i| {
            h.with_cwd(json!({
                "name": format!("crash{i}"),
                "script": "/bin/sh",
                "args": ["-c", "exit 1"],
                "interpreter": "none",
                "restart_delay": if i % 2 == 0 { 0 } else { 100 },
                "max_restarts": 1_000_000,
            }))
        })
        .collect();
    // Answered although no app ever settles for long.
    let started = h.ok(json!({"cmd": "start", "apps": apps}));
    assert_eq!(started.as_array().map(Vec::len), Some(APPS));

    let mut pings = Vec::new();
    let mut missed = 0;
    let mut fds = Vec::new();
    let mut most_zombies = 0;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        match ping_time(&h, Duration::from_secs(3)) {
            Some(d) => pings.push(d),
            None => missed += 1,
        }
        fds.push(fd_count(daemon));
        most_zombies = most_zombies.max(zombies_of(daemon));
    }
    let restarts: u64 = h
        .list()
        .iter()
        .map(|d| d["pm2_env"]["restart_time"].as_u64().unwrap_or(0))
        .sum();
    let ping_median = median(pings.clone());
    eprintln!(
        "storm of {APPS}: {} pings, median {ping_median:?}, {missed} missed; fds {:?}..{:?}; \
         at most {most_zombies} zombies; {restarts} restarts",
        pings.len(),
        fds.first(),
        fds.last(),
    );
    assert!(
        restarts >= APPS as u64,
        "the apps did crash-loop: {restarts}"
    );
    assert_eq!(missed, 0, "every ping was answered within 3 s");
    // Generous for a loaded debug build; before the fix no ping came back.
    assert!(
        ping_median < Duration::from_millis(300),
        "ping median {ping_median:?}"
    );
    // Flat: logs, pipes of the processes alive now, sockets; no growth.
    let (first, last) = (fds[0], *fds.last().unwrap());
    let most = *fds.iter().max().unwrap();
    assert!(
        most < first + APPS,
        "the daemon's fds grew: {first} at first, {most} at most, {last} at last"
    );
    assert!(
        most_zombies <= APPS / 4,
        "{most_zombies} zombies at once: children are reaped at every SIGCHLD"
    );

    // SIGTERM stops everything within the kill timeout (1.6 s here).
    let t = Instant::now();
    // SAFETY: kill(2) on the daemon this test started.
    unsafe {
        libc::kill(daemon, libc::SIGTERM);
    }
    wait_until(SOON, "the daemon exited after SIGTERM", || !running(daemon));
    let took = t.elapsed();
    eprintln!("SIGTERM: the daemon exited after {took:?}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
}

/// Cpu time (user + system, clock ticks) of `pid`.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = read(std::path::Path::new(&format!("/proc/{pid}/stat")));
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 0, utime 11, stime 12.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Apps registered without running (`autostart: false`), `n` of them.
fn idle_apps(h: &TestHome, prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            h.with_cwd(json!({
                "name": format!("{prefix}{i}"),
                "script": "/bin/sleep",
                "args": ["60"],
                "interpreter": "none",
                "autostart": false,
            }))
        })
        .collect()
}

/// Issue 10 item 5: before, a client writing requests without reading
/// the answers grew the daemon by hundreds of MB and made others wait.
#[test]
fn a_client_that_never_reads_cannot_exhaust_memory_or_starve_others() {
    let h = TestHome::started();
    let daemon = h.daemon_pid();
    h.ok(json!({"cmd": "start", "apps": idle_apps(&h, "quiet", 30)}));
    let before = rss_kib(daemon);

    let hog = UnixStream::connect(h.socket()).unwrap();
    let mut writer = hog.try_clone().unwrap();
    let spammer = std::thread::spawn(move || {
        let lines = "{\"cmd\":\"list\"}\n".repeat(64);
        // Blocks once the daemon stops reading; ends when the socket is
        // shut down below.
        while writer.write_all(lines.as_bytes()).is_ok() {}
    });
    let mut pings = Vec::new();
    let mut most = before;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        pings.push(ping_time(&h, Duration::from_secs(5)).expect("a ping answered"));
        most = most.max(rss_kib(daemon));
    }
    hog.shutdown(std::net::Shutdown::Both).unwrap();
    spammer.join().unwrap();
    let ping_median = median(pings);
    eprintln!("daemon RSS {before} KiB before, {most} KiB at most; ping median {ping_median:?}");
    assert!(
        most < before + 32 * 1024,
        "the daemon grew from {before} KiB to {most} KiB"
    );
    assert!(
        ping_median < Duration::from_millis(300),
        "ping median {ping_median:?}"
    );
    // The daemon is still whole.
    assert_eq!(h.list().len(), 30);
}

/// A client that pipelines many requests and reads the answers later
/// gets every answer, in order, though the daemon paused between them.
#[test]
fn pipelined_requests_past_the_unread_limit_are_all_answered() {
    let h = TestHome::started();
    h.ok(json!({"cmd": "start", "apps": idle_apps(&h, "p", 30)}));
    let mut c = h.connect();
    const N: usize = 400;
    let lines: String = (0..N)
        .map(|i| format!("{{\"id\":{i},\"cmd\":\"list\"}}\n"))
        .collect();
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(lines.as_bytes()).unwrap());
    for i in 0..N {
        let r = c.read_response();
        assert_eq!(r["id"], json!(i), "answer {i} in order");
        assert_eq!(r["result"].as_array().map(Vec::len), Some(30));
    }
    writer.join().unwrap();
}

/// Issue 10 item 6: before, 256 connections that sent half a line (or
/// nothing) locked every other client out for good.
#[test]
fn stalled_connections_time_out_and_a_reserve_serves_new_clients() {
    let h = TestHome::started();
    let mut stalled: Vec<UnixStream> = (0..256)
        .map(|_| {
            let mut s = UnixStream::connect(h.socket()).unwrap();
            s.write_all(b"{\"id\":1,\"cmd\":\"pi").unwrap();
            s
        })
        .collect();
    // The reserve answers a new client at once.
    let t = Instant::now();
    assert!(ping_time(&h, Duration::from_secs(3)).is_some(), "ping");
    assert_eq!(h.list().len(), 0);
    let out = h.corral(&["ls"]);
    assert_eq!(out.status.code(), Some(0), "corral ls: {}", text(&out));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // A reserve connection does not take a bus subscription.
    let mut c = h.connect();
    let r = c.call(&json!({"cmd": "subscribe"}));
    assert_eq!(r["ok"], json!(false), "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{r}"
    );
    drop(c);

    // The half-written lines are given up on, saying why.
    let first = &mut stalled[0];
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(first.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("not completed within"), "{line}");
    wait_until(SOON, "every stalled connection is closed", || {
        stalled.iter_mut().all(|s| {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 4096];
            loop {
                match std::io::Read::read(s, &mut b) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
    });
}

/// "Too many connections" only when it is so: clients that hung up
/// free their place at once.
#[test]
fn too_many_connections_is_said_only_when_it_is_so() {
    let h = TestHome::started();
    // Idle connections (no partial line: no timeout) fill every place.
    let mut idle: Vec<UnixStream> = Vec::new();
    for _ in 0..(256 + 16) {
        let s = UnixStream::connect(h.socket()).unwrap();
        idle.push(s);
    }
    // Each was accepted: a ping on the last one is answered.
    let mut last = idle.pop().unwrap();
    last.write_all(b"{\"id\":1,\"cmd\":\"ping\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(last.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
    idle.push(last);
    // One more is refused, saying so.
    let s = UnixStream::connect(h.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("too many connections"), "{line}");
    // The CLI says so too.
    let out = h.corral(&["ping"]);
    assert_eq!(out.status.code(), Some(1), "corral ping: {}", text(&out));
    assert!(
        text(&out).contains("too many connections"),
        "{}",
        text(&out)
    );
    // Ten clients leave; the next one is served, not refused.
    idle.truncate(idle.len() - 10);
    assert!(
        ping_time(&h, Duration::from_secs(5)).is_some(),
        "ping after some left"
    );
}

/// Start the daemon of `h` under `ulimit` settings (a shell's `ulimit`
/// arguments, such as `-n 64`).
fn daemon_with_ulimit(h: &TestHome, ulimit: &str) {
    let script = format!("ulimit {ulimit} && exec \"$0\" daemon");
    let mut sh = std::process::Command::new("sh");
    sh.args(["-c", &script])
        .arg(bin())
        .env("CORRAL_HOME", &h.home)
        .env_remove("CORRAL_SOCKET")
        .env_remove("CORRAL_BIN")
        .current_dir(&h.work);
    let out = run(sh);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ready",
        "corral daemon under ulimit {ulimit}: {}",
        text(&out)
    );
}

/// `Max open files` of `pid`: (soft, hard).
fn fd_limits(pid: i32) -> (String, String) {
    let limits = read(std::path::Path::new(&format!("/proc/{pid}/limits")));
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_string(), f[4].to_string())
}

/// Issue 10 item 7: the daemon takes every fd it may, its apps keep the
/// limit it was given.
#[test]
fn the_daemon_raises_its_fd_limit_and_its_apps_keep_the_old_one() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_max <= 200 {
        eprintln!("hard fd limit {}: nothing to raise 200 to", lim.rlim_max);
        return;
    }
    let h = TestHome::new();
    daemon_with_ulimit(&h, "-Sn 200");
    let daemon = h.daemon_pid();
    let (soft, hard) = fd_limits(daemon);
    assert_eq!(
        soft, hard,
        "the daemon's soft limit is raised to the hard one"
    );
    let d = h.start(json!({"name": "s", "script": "/bin/sleep", "args": ["60"],
                           "interpreter": "none"}));
    let pid = pid_of(&d[0]);
    assert_eq!(
        fd_limits(pid).0,
        "200",
        "the app keeps the limit the daemon had"
    );
}

/// Issue 10 item 7: before, an app cost ~5 fds even stopped, so a low
/// limit refused apps; at the limit, connections were never answered and
/// the CLI waited for ever.
#[test]
fn at_the_fd_limit_the_daemon_backs_off_and_answers_later() {
    let h = TestHome::new();
    daemon_with_ulimit(&h, "-n 64");
    let daemon = h.daemon_pid();
    let base = fd_count(daemon);
    // Registered, never started: no log file held open.
    h.ok(json!({"cmd": "start", "apps": idle_apps(&h, "idle", 40)}));
    assert!(
        fd_count(daemon) <= base + 2,
        "{} fds after 40 idle apps",
        fd_count(daemon)
    );
    // Running, then stopped: its fds are given back.
    h.start(
        json!({"name": "run", "script": "/bin/sleep", "args": ["60"],
                   "interpreter": "none"}),
    );
    assert!(
        fd_count(daemon) > base,
        "a running app holds its logs and pipes"
    );
    h.ok(json!({"cmd": "stop", "target": "run"}));
    wait_until(SOON, "the stopped app's fds are closed", || {
        fd_count(daemon) <= base + 2
    });

    // A timeout that is not a number is named.
    let mut cli = h.command(&["ping"]);
    cli.env("CORRAL_TIMEOUT", "soon");
    let out = run(cli);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("CORRAL_TIMEOUT"), "{}", text(&out));

    // Fill the daemon's fd table with clients, until one is not taken.
    let mut accepted = Vec::new();
    let mut waiting = None;
    for _ in 0..64 {
        let mut s = UnixStream::connect(h.socket()).unwrap();
        s.write_all(b"{\"id\":1,\"cmd\":\"ping\"}\n").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut line = String::new();
        match BufReader::new(s.try_clone().unwrap()).read_line(&mut line) {
            Ok(n) if n > 0 => accepted.push(s),
            _ => {
                waiting = Some(s);
                break;
            }
        }
    }
    let waiting = waiting.expect("the daemon ran out of fds for clients");
    assert!(accepted.len() > 20, "only {} clients", accepted.len());

    // Not spinning meanwhile; the CLI gives up with a clear message.
    let ticks = cpu_ticks(daemon);
    let t = Instant::now();
    let mut cli = h.command(&["ping"]);
    cli.env("CORRAL_TIMEOUT", "1");
    let out = run(cli);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(3), "corral ping: {}", text(&out));
    assert!(
        text(&out).contains("did not answer within 1 s"),
        "{}",
        text(&out)
    );
    assert!(took < Duration::from_secs(10), "the CLI waited {took:?}");
    let used = cpu_ticks(daemon) - ticks;
    assert!(
        used < 50,
        "the daemon used {used} ticks in {took:?} at the fd limit"
    );

    // Clients leave: the one waiting is answered without anyone calling.
    accepted.truncate(accepted.len() - 10);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(waiting).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line:?}");
    assert!(
        h.daemon_log().contains("accept failed"),
        "{}",
        h.daemon_log()
    );
}
