//! Boot and scripts: `corral startup` / `unstartup` (dry runs of every
//! platform, writing under `CORRAL_STARTUP_ROOT`, the non-root message,
//! `systemd-analyze verify`, the SysV script run for real) and `corral wait`.
//! Nothing here enables a unit on the machine: writes go under a temporary
//! root, where the enable commands are printed, not run.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

/// `corral startup|unstartup <args>` for this home, under `root` if given.
fn startup(h: &TestHome, root: Option<&Path>, args: &[&str]) -> Output {
    let mut c = h.command(args);
    match root {
        Some(r) => c.env("CORRAL_STARTUP_ROOT", r),
        None => c.env_remove("CORRAL_STARTUP_ROOT"),
    };
    run(c)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap_or(&p).to_path_buf());
            }
        }
    }
    out
}

#[test]
fn startup_dry_run_prints_every_platforms_unit_and_writes_nothing() {
    let h = TestHome::new();
    let root = h.root.join("r");
    std::fs::create_dir_all(&root).unwrap();
    let bin = bin().display().to_string();
    let home = h.root.join("alice").display().to_string();
    let table: &[(&str, &str, &[&str])] = &[
        (
            "systemd",
            "/etc/systemd/system/corral-alice.service",
            &[
                "Type=notify",
                "User=alice",
                "KillMode=process",
                "ExecStart=BIN daemon --no-daemon",
                "ExecStartPost=-BIN resurrect",
                "Environment=CORRAL_HOME=HOMEDIR/.corral",
            ],
        ),
        (
            "ubuntu",
            "/etc/systemd/system/corral-alice.service",
            &["Type=notify"],
        ),
        (
            "centos",
            "/etc/systemd/system/corral-alice.service",
            &["Type=notify"],
        ),
        (
            "openrc",
            "/etc/init.d/corral-alice",
            &[
                "#!/sbin/openrc-run",
                "corral_user=alice",
                "as_user ping >/dev/null",
            ],
        ),
        (
            "gentoo",
            "/etc/init.d/corral-alice",
            &["#!/sbin/openrc-run"],
        ),
        (
            "sysv",
            "/etc/init.d/corral-alice",
            &[
                "### BEGIN INIT INFO",
                "# chkconfig: 2345 90 10",
                "as_user kill",
            ],
        ),
        (
            "amazon",
            "/etc/init.d/corral-alice",
            &["### BEGIN INIT INFO"],
        ),
        (
            "upstart",
            "/etc/init.d/corral-alice",
            &["### BEGIN INIT INFO"],
        ),
        (
            "rcd",
            "/usr/local/etc/rc.d/corral_alice",
            &[". /etc/rc.subr", "rcvar=corral_alice_enable"],
        ),
        (
            "freebsd",
            "/usr/local/etc/rc.d/corral_alice",
            &[". /etc/rc.subr"],
        ),
        (
            "launchd",
            "/Library/LaunchDaemons/com.corral.alice.plist",
            &["<key>UserName</key>", "<string>com.corral.alice</string>"],
        ),
        (
            "darwin",
            "/Library/LaunchDaemons/com.corral.alice.plist",
            &["<plist version=\"1.0\">"],
        ),
    ];
    for (platform, file, lines) in table {
        let out = startup(
            &h,
            Some(&root),
            &[
                "startup",
                platform,
                "--dry-run",
                "-u",
                "alice",
                "--hp",
                &home,
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{platform}: {}", text(&out));
        let unit = stdout(&out);
        for line in *lines {
            let line = line.replace("BIN", &bin).replace("HOMEDIR", &home);
            assert!(
                unit.lines().any(|l| l.trim() == line),
                "{platform}: no `{line}` in\n{unit}"
            );
        }
        let want = format!("would write {}{file}", root.display());
        assert!(stderr(&out).contains(&want), "{platform}: {}", text(&out));
        // unstartup --dry-run says what it would remove.
        let out = startup(
            &h,
            Some(&root),
            &["unstartup", platform, "--dry-run", "-u", "alice"],
        );
        assert_eq!(out.status.code(), Some(0), "{platform}: {}", text(&out));
        assert!(
            stdout(&out).contains(&format!("would remove: {}{file}", root.display())),
            "{platform}: {}",
            text(&out)
        );
    }
    assert_eq!(files_under(&root), Vec::<PathBuf>::new(), "dry runs wrote");
}

#[test]
fn startup_refuses_bad_platforms_and_options_by_name() {
    let h = TestHome::new();
    let table: &[(&[&str], &str)] = &[
        (
            &["startup", "windows", "--dry-run"],
            "unknown platform `windows`",
        ),
        (&["startup", "smf", "--dry-run"], "`smf` is not supported"),
        (
            &["unstartup", "solaris", "--dry-run"],
            "`solaris` is not supported",
        ),
        (
            &["startup", "systemd", "--dry-run", "--hp", "rel/dir"],
            "--hp rel/dir is not an absolute path",
        ),
        (
            &["startup", "systemd", "--dry-run", "-u", "bad user"],
            "bad user name `bad user`",
        ),
        (
            &["startup", "systemd", "--dry-run", "--service-name", "a/b"],
            "bad service name `a/b`",
        ),
        (&["startup", "systemd", "openrc"], "at most one platform"),
        (&["startup", "--frobnicate"], "frobnicate"),
    ];
    for (args, want) in table {
        let out = startup(&h, None, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", text(&out));
    }
}

#[test]
fn startup_writes_under_a_root_detects_the_init_and_unstartup_removes_it() {
    let h = TestHome::new();
    let root = h.root.join("r");
    std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    let dry = startup(&h, Some(&root), &["startup", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    let out = startup(&h, Some(&root), &["startup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let so = stdout(&out);
    assert!(so.contains("platform: systemd"), "{}", text(&out));
    assert!(
        so.contains("not run (CORRAL_STARTUP_ROOT is set): systemctl daemon-reload"),
        "{}",
        text(&out)
    );
    assert!(so.contains("no daemon runs for"), "{}", text(&out));
    let written = files_under(&root);
    assert_eq!(written.len(), 1, "{written:?}");
    let file = root.join(&written[0]);
    assert!(
        written[0].starts_with("etc/systemd/system")
            && file.to_string_lossy().ends_with(".service"),
        "{written:?}"
    );
    // What was written is what the dry run printed, readable by all.
    assert_eq!(read(&file), stdout(&dry));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert!(read(&file).contains(&format!("Environment=CORRAL_HOME={}", h.home.display())));

    // A script platform: executable.
    let out = startup(
        &h,
        Some(&root),
        &["startup", "openrc", "--service-name", "corral-x"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("this system seems to run systemd, not openrc"),
        "{}",
        text(&out)
    );
    let script = root.join("etc/init.d/corral-x");
    let mode = std::fs::metadata(&script).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    let out = startup(
        &h,
        Some(&root),
        &["unstartup", "openrc", "--service-name", "corral-x"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out)
            .contains("not run (CORRAL_STARTUP_ROOT is set): rc-update del corral-x default")
    );
    assert!(!script.exists());

    let out = startup(&h, Some(&root), &["unstartup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("removed"), "{}", text(&out));
    assert!(stdout(&out).contains("systemctl disable"), "{}", text(&out));
    assert_eq!(files_under(&root), Vec::<PathBuf>::new());
    // Again: nothing there, and that is fine.
    let out = startup(&h, Some(&root), &["unstartup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("nothing to remove"), "{}", text(&out));

    // No sign of any init system: name it.
    let bare = h.root.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let out = startup(&h, Some(&bare), &["startup", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("cannot tell this system's init"),
        "{}",
        text(&out)
    );
}

#[test]
fn startup_with_a_running_daemon_saves_the_list() {
    let h = TestHome::started();
    h.start(json!({"name": "keep", "script": "sleep", "args": ["1000"], "kill_timeout": 300}));
    let root = h.root.join("r");
    let out = startup(&h, Some(&root), &["startup", "systemd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let so = stdout(&out);
    let file = h.home.join("dump.json");
    assert!(
        so.contains(&format!("saved the list (1 apps) to {}", file.display())),
        "{}",
        text(&out)
    );
    let dump: serde_json::Value = serde_json::from_str(&read(&file)).unwrap();
    assert_eq!(dump["apps"][0]["name"], json!("keep"));
    assert!(!so.contains("no daemon runs"), "{}", text(&out));
    assert_eq!(h.status("keep"), "online");
}

/// The uid and name of an unprivileged user to run as (root only).
fn nobody() -> Option<(u32, String)> {
    let passwd = read(Path::new("/etc/passwd"));
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() == 7 && f[2] == "65534").then(|| (65534, f[0].to_string()))
    })
}

#[test]
fn startup_without_root_prints_the_sudo_command() {
    let h = TestHome::new();
    let fake_home = h.root.join("u");
    std::fs::create_dir_all(&fake_home).unwrap();
    std::fs::set_permissions(&h.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |c: &mut Command| -> Option<String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return std::env::var("USER").ok();
        }
        let (uid, name) = nobody()?;
        c.uid(uid).gid(uid);
        Some(name)
    };
    for (corral_home, want_tail) in [
        (None, format!("--hp {}", fake_home.display())),
        (Some(h.root.join("elsewhere")), String::new()),
    ] {
        let mut c = Command::new(bin());
        c.args(["startup", "systemd"])
            .env_remove("CORRAL_STARTUP_ROOT")
            .env("HOME", &fake_home)
            .current_dir(&fake_home);
        match &corral_home {
            Some(ch) => c.env("CORRAL_HOME", ch),
            None => c.env_remove("CORRAL_HOME"),
        };
        let Some(user) = as_user(&mut c) else {
            eprintln!("no user with uid 65534 to run as: skipping the non-root startup test");
            return;
        };
        let out = match c.stdin(Stdio::null()).output() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("cannot run corral as {user} ({e}): skipping the non-root startup test");
                return;
            }
        };
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let so = stdout(&out);
        assert!(so.contains("startup needs root"), "{}", text(&out));
        let mut want = format!(
            "sudo env PATH=\"$PATH\" {} startup systemd -u {user}",
            bin().display()
        );
        if let Some(ch) = &corral_home {
            want = format!(
                "sudo env PATH=\"$PATH\" CORRAL_HOME={} {} startup systemd -u {user}",
                ch.display(),
                bin().display()
            );
        } else {
            want.push(' ');
            want.push_str(&want_tail);
        }
        assert!(
            so.lines().any(|l| l == want),
            "no `{want}` line in\n{}",
            text(&out)
        );
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Ok(which) = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
    else {
        return;
    };
    if !which.status.success() {
        eprintln!("systemd-analyze not found: skipping the verify of the systemd unit");
        return;
    }
    let h = TestHome::new();
    let out = startup(&h, None, &["startup", "systemd", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let unit = h.root.join("corral-test.service");
    std::fs::write(&unit, &out.stdout).unwrap();
    let v = run({
        let mut c = Command::new("systemd-analyze");
        c.arg("verify").arg(&unit);
        c
    });
    eprintln!("systemd-analyze verify said: {}", text(&v));
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    assert!(stderr(&v).trim().is_empty(), "{}", text(&v));
}

#[test]
fn sysv_script_starts_status_and_stops_the_daemon() {
    // SAFETY: geteuid(2) has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let has_su = Command::new("sh")
        .args(["-c", "command -v su"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !root_user || !has_su {
        eprintln!("not root, or no su: skipping the SysV script run");
        return;
    }
    let h = TestHome::new();
    let root = h.root.join("r");
    let out = startup(&h, Some(&root), &["startup", "sysv", "-u", "root"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let script = root.join("etc/init.d/corral-root");
    let sh = |verb: &str| {
        let mut c = Command::new("sh");
        c.arg(&script).arg(verb).env_remove("CORRAL_HOME");
        run(c)
    };
    let out = sh("status");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = sh("start");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid = h.daemon_pid();
    assert!(running(pid));
    let out = sh("status");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("status"), "{}", text(&out));
    h.start(json!({"name": "kept", "script": "sleep", "args": ["1000"], "kill_timeout": 300}));
    let out = sh("stop");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_gone(pid, "the daemon after the script's stop");
    let out = sh("status");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // The stop saved the list; the next start brings it back.
    assert!(read(&h.home.join("dump.json")).contains("\"kept\""));
    let out = sh("start");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.wait_status("kept", "online");
    let pid = h.daemon_pid();
    let out = sh("stop");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_gone(pid, "the daemon after the second stop");
}

// ---- wait ------------------------------------------------------------------

/// `corral wait <args>` in the background.
fn spawn_wait(h: &TestHome, args: &[&str]) -> Child {
    let mut all = vec!["wait"];
    all.extend_from_slice(args);
    h.command(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral wait")
}

/// Wait for a background `corral wait` to end; its output.
fn finish(child: Child, what: &str) -> Output {
    let mut child = child;
    let mut status = None;
    wait_until(SOON, what, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    child.wait_with_output().expect("collect corral wait")
}

/// An app that says ready (IPC) only once the file `go` exists in its cwd.
fn gated_app(h: &TestHome, name: &str) {
    h.script(
        "gated.sh",
        "#!/bin/sh\nwhile [ ! -e go ]; do sleep 0.05; done\n\
         printf '\"ready\"\\n' >&\"$NODE_CHANNEL_FD\"\nexec sleep 1000\n",
    );
    // start answers when the app is online: send it and read later.
    let mut conn = h.connect();
    let app = h.with_cwd(json!({
        "name": name, "script": "gated.sh", "wait_ready": true,
        "listen_timeout": 60000, "kill_timeout": 300,
    }));
    conn.send(format!("{}\n", json!({"cmd": "start", "app": app})).as_bytes());
    wait_until(SOON, &format!("{name} is launching"), || {
        h.describe_all(json!(name))
            .first()
            .is_some_and(|d| env_of(d, "status") == "launching")
    });
    // Keep the connection open until the start answers, in the background.
    std::thread::spawn(move || {
        let _ = conn.read_response();
    });
}

#[test]
fn wait_ready_blocks_until_the_app_is_ready() {
    let h = TestHome::started();
    gated_app(&h, "gated");
    // Launching is not ready: a short wait times out and says what it saw.
    let t = Instant::now();
    let out = h.corral(&["wait", "gated", "ready", "--timeout", "300ms"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("gated not ready after 300ms; saw: gated (0) launching"),
        "{}",
        text(&out)
    );
    assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
    assert!(took < Duration::from_secs(5), "gave up after {took:?}");

    let waiter = spawn_wait(&h, &["gated", "online", "--timeout", "20s"]);
    std::fs::write(h.work.join("go"), "").unwrap();
    let out = finish(waiter, "corral wait gated online ends");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(h.status("gated"), "online");
    // Already there: at once.
    let out = h.corral(&["wait", "0", "ready"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn wait_stopped_and_gone_follow_stop_and_delete() {
    let h = TestHome::started();
    h.start(json!({"name": "s", "script": "sleep", "args": ["1000"], "kill_timeout": 300}));
    let stopped = spawn_wait(&h, &["s", "stopped", "--timeout", "20s"]);
    let gone = spawn_wait(&h, &["s", "gone", "--timeout", "20s"]);
    let out = h.corral(&["stop", "s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = finish(stopped, "corral wait s stopped ends");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut gone = gone;
    assert!(
        gone.try_wait().unwrap().is_none(),
        "wait s gone ended while s was only stopped"
    );
    let out = h.corral(&["delete", "s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = finish(gone, "corral wait s gone ends");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Nothing by that name: gone at once, never online.
    let out = h.corral(&["wait", "nosuch", "gone"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = h.corral(&["wait", "nosuch", "online", "--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("saw: no such app"), "{}", text(&out));
}

#[test]
fn wait_stopped_sees_a_one_shot_job_end_on_its_own() {
    let h = TestHome::started();
    h.script(
        "job.sh",
        "#!/bin/sh\nwhile [ ! -e done ]; do sleep 0.05; done\nexit 0\n",
    );
    let out = h.corral(&["start", "job.sh", "--no-autorestart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = h.corral(&["wait", "job", "stopped", "--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("saw: job (0) online"),
        "{}",
        text(&out)
    );
    let waiter = spawn_wait(&h, &["job", "stopped", "--timeout", "20s"]);
    std::fs::write(h.work.join("done"), "").unwrap();
    let out = finish(waiter, "corral wait job stopped ends");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(h.status("job"), "stopped");
}

#[test]
fn wait_gone_ends_when_the_daemon_exits() {
    let h = TestHome::started();
    h.start(json!({"name": "k", "script": "sleep", "args": ["1000"], "kill_timeout": 300}));
    let gone = spawn_wait(&h, &["k", "gone", "--timeout", "20s"]);
    let online = spawn_wait(&h, &["k", "stopped", "--timeout", "20s"]);
    let out = h.corral(&["kill"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = finish(gone, "corral wait k gone ends at kill");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // stopped may be seen before the daemon exits, or not: either way it ends.
    let out = finish(online, "corral wait k stopped ends at kill");
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{}",
        text(&out)
    );
}

#[test]
fn wait_without_a_daemon_and_with_bad_words() {
    let h = TestHome::new();
    let out = h.corral(&["wait", "x", "gone"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = h.corral(&["wait", "x", "online"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!h.socket().exists(), "wait launched a daemon");
    let table: &[(&[&str], &str)] = &[
        (&["wait", "x", "running"], "unknown state `running`"),
        (&["wait", "x"], "give a target and a state"),
        (&["wait", "x", "online", "--timeout", "soon"], "--timeout"),
    ];
    for (args, want) in table {
        let out = h.corral(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", text(&out));
    }
}

/// Under systemd's `Type=notify` the daemon says `READY=1` once it serves,
/// `WATCHDOG=1` at half of `WATCHDOG_USEC` while its loop runs, and
/// `STOPPING=1` when SIGTERM stops it; its apps never see the variables.
#[test]
fn the_daemon_speaks_sd_notify_to_its_service_manager() {
    use std::os::unix::net::UnixDatagram;
    let h = TestHome::new();
    let sock_path = h.root.join("n.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut c = h.command(&["daemon", "--no-daemon"]);
    c.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut daemon = c.spawn().expect("spawn corral daemon --no-daemon");
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    // Serving once ready: an app starts, and does not inherit the variables.
    h.start(
        h.with_cwd(json!({"name": "env", "script": "sh", "args": ["-c",
        "echo W=${WATCHDOG_USEC:-none} N=${NOTIFY_SOCKET:-none}; sleep 60"]})),
    );
    let log = h.wait_log("env", "W=");
    assert!(log.contains("W=none"), "{log}");
    assert!(!log.contains(sock_path.to_str().unwrap()), "{log}");
    let started = Instant::now();
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    assert!(started.elapsed() < Duration::from_secs(5));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the daemon");
    let mut rest = Vec::new();
    loop {
        let m = next();
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1", "only watchdog pings before STOPPING=1");
        rest.push(m);
    }
    let status = daemon.wait().expect("the daemon exits");
    assert_eq!(status.code(), Some(0));
}
