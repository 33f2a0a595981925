//! A root daemon against the users it serves: no file written through a
//! link an app's user planted, no request obeyed from a user not allowed,
//! a home, socket and directories nobody else can tamper with, names that
//! cannot smuggle a path or a terminal escape, and log files that keep
//! whole lines on a full disk. Tests that need root (and the unprivileged
//! user 65534 to act as the app's user) say so and pass when they cannot run.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::util::*;

/// The unprivileged user the apps run as.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The name of user 65534, when the tests run as root and it exists.
fn nobody_or_skip(test: &str) -> Option<String> {
    if !is_root() {
        eprintln!("{test}: needs root; skipped");
        return None;
    }
    let passwd = read(Path::new("/etc/passwd"));
    let name = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() == 7 && f.get(2) == Some(&"65534")).then(|| f[0].to_string())
    });
    if name.is_none() {
        eprintln!("{test}: no user with uid 65534; skipped");
    }
    name
}

/// A directory owned by user 65534 under the work directory.
fn users_dir(h: &TestHome, name: &str) -> PathBuf {
    let dir = h.work.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    dir
}

/// A link at `at` to `to`, owned by user 65534 as if it had made it.
fn plant(at: &Path, to: &Path) {
    std::os::unix::fs::symlink(to, at).unwrap();
    std::os::unix::fs::lchown(at, Some(NOBODY), Some(NOBODY)).unwrap();
}

#[test]
fn a_root_daemon_writes_no_file_through_a_link_the_apps_user_planted() {
    let Some(user) = nobody_or_skip("planted links") else {
        return;
    };
    let h = TestHome::started();
    // Root's files: one to append to or overwrite, one directory to
    // create files in.
    let victim = h.root.join("victim");
    std::fs::write(&victim, "secret\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = h.root.join("private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The repro: out.log -> victim, and a directory link.
    let dir = users_dir(&h, "u");
    plant(&dir.join("out.log"), &victim);
    plant(&dir.join("sub"), &private);
    let r = h.request(json!({"cmd": "start", "app": {
        "name": "x", "script": "/bin/echo", "args": ["PWNED"], "uid": user,
        "cwd": dir, "output": "out.log", "pid_file": "app.pid"}}));
    assert_eq!(r["ok"], json!(false), "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("out.log") && msg.contains("denied"), "{r}");
    let r = h.request(json!({"cmd": "start", "app": {
        "name": "y", "script": "/bin/echo", "args": ["PWNED"], "uid": user,
        "cwd": dir, "error": "sub/err.log"}}));
    assert_eq!(r["ok"], json!(false), "{r}");
    // A unix socket of `listen` too.
    let r = h.request(json!({"cmd": "start", "app": {
        "name": "s", "script": "/bin/sleep", "args": ["1000"], "uid": user,
        "cwd": dir, "listen": format!("unix:{}/sub/s.sock", dir.display())}}));
    assert_eq!(r["ok"], json!(false), "{r}");

    // The pid file and the `write` file, at links and at their
    // temporary names: replaced, never written through.
    for name in [
        "app.pid",
        "app.pid.tmp",
        "z-corral.json",
        "z-corral.json.tmp",
    ] {
        plant(&dir.join(name), &victim);
    }
    h.start(
        json!({"name": "z", "script": "/bin/sleep", "args": ["1000"], "uid": user,
                   "cwd": dir, "pid_file": "app.pid", "write": true}),
    );
    let pid_file = dir.join("app.pid");
    wait_until(SOON, "the pid file is written", || {
        !pid_file.is_symlink() && !read(&pid_file).is_empty()
    });
    let z = h.describe("z");
    assert_eq!(read(&pid_file).trim(), pid_of(&z).to_string());
    let json_file = dir.join("z-corral.json");
    wait_until(SOON, "the write file is written", || {
        !json_file.is_symlink() && read(&json_file).contains("\"name\"")
    });
    for f in [&pid_file, &json_file] {
        assert_eq!(
            std::fs::metadata(f).unwrap().uid(),
            NOBODY,
            "{}",
            f.display()
        );
    }
    assert_eq!(read(&victim), "secret\n");
    assert_eq!(std::fs::read_dir(&private).unwrap().count(), 0);

    // Where the user may write, the file is the user's, as if the app
    // had opened it.
    let own = users_dir(&h, "v");
    h.start(
        json!({"name": "w", "script": "/bin/echo", "args": ["hello"], "uid": user,
                   "cwd": own, "output": "out.log", "autorestart": false}),
    );
    let out = own.join("out.log");
    wait_until(SOON, "the app's log has its line", || {
        read(&out) == "hello\n"
    });
    assert_eq!(std::fs::metadata(&out).unwrap().uid(), NOBODY);
    h.ok(json!({"cmd": "delete", "target": "all"}));
    wait_until(SOON, "the pid file is removed", || !pid_file.exists());
}

/// `corral <args>` for home `h`, run as user 65534.
fn as_nobody(h: &TestHome, args: &[&str]) -> std::process::Output {
    let mut c = h.command(args);
    c.uid(NOBODY).gid(NOBODY).current_dir("/");
    run(c)
}

#[test]
fn a_root_daemon_obeys_only_root_and_the_users_it_allows() {
    if nobody_or_skip("allowed users").is_none() {
        return;
    }
    for (args, allowed) in [
        (vec![], false),
        (vec!["--allow-uid", "65534"], true),
        (vec!["--allow-gid", "65534"], true),
        (vec!["--allow-uid", "12345", "--allow-gid", "54321"], false),
    ] {
        let h = TestHome::with_daemon_args(&args);
        // As if the socket had been loosened (a chmod, a bind mount).
        for p in [&h.root, &h.home] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(h.socket(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = as_nobody(&h, &["ping"]);
        match allowed {
            true => assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out)),
            false => {
                assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("uid 65534") && err.contains("--allow-uid"),
                    "{err}"
                );
            }
        }
        // Root always may, and ping lists who else may.
        let ping = h.ok(json!({"cmd": "ping"}));
        let list = |k: &str| {
            let flag = format!("--{k}");
            let want: Vec<u32> = args
                .windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].parse().unwrap())
                .collect();
            assert_eq!(ping[k.replace('-', "_")], json!(want), "{ping}");
        };
        list("allow-uid");
        list("allow-gid");
    }
    // Names are looked up once, at start.
    let h = TestHome::with_daemon_args(&["--allow-uid", "nobody"]);
    assert_eq!(h.ok(json!({"cmd": "ping"}))["allow_uid"], json!([NOBODY]));
    let h = TestHome::new();
    let out = h.corral(&["daemon", "--allow-uid", "no-such-user-here"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no-such-user-here"), "{}", text(&out));
}

#[test]
fn the_home_and_its_directories_are_the_daemons_alone() {
    // An existing home open to all is tightened; logs/ and pids/ are
    // not world-writable whatever the umask.
    let h = TestHome::new();
    std::fs::create_dir_all(&h.home).unwrap();
    std::fs::set_permissions(&h.home, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = h.command(&["daemon"]);
    // SAFETY: umask(2) is async-signal-safe and cannot fail.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&h.home), 0o700);
    for d in ["logs", "pids"] {
        let m = mode(&h.home.join(d));
        assert_eq!(m & 0o022, 0, "{d} has mode {m:o}");
    }
    assert_eq!(mode(&h.socket()), 0o600);
    let out = h.corral(&["kill"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A home that belongs to someone else is refused.
    if nobody_or_skip("a home of another user").is_none() {
        return;
    }
    let h = TestHome::new();
    std::fs::create_dir_all(&h.home).unwrap();
    std::os::unix::fs::chown(&h.home, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = h.corral(&["daemon"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&h.home.display().to_string()) && said.contains("65534"),
        "{said}"
    );
}

#[test]
fn only_a_stale_socket_is_replaced() {
    let h = TestHome::new();
    std::fs::create_dir_all(&h.home).unwrap();
    std::fs::set_permissions(&h.home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = h.socket();
    let shown = sock.display().to_string();
    // A regular file.
    std::fs::write(&sock, "mine").unwrap();
    let out = h.corral(&["daemon"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains(&shown) && text(&out).contains("not a socket"));
    assert_eq!(read(&sock), "mine");
    std::fs::remove_file(&sock).unwrap();
    // A socket someone listens on.
    let live = UnixListener::bind(&sock).unwrap();
    let out = h.corral(&["daemon"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains(&shown) && text(&out).contains("in use"));
    // The same socket, now stale.
    drop(live);
    let out = h.corral(&["daemon"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    h.ok(json!({"cmd": "ping"}));
}

#[test]
fn names_cannot_carry_paths_or_control_characters() {
    let h = TestHome::new();
    for (name, says) in [
        ("a/b", "`/`"),
        ("a\nb", "control"),
        ("\u{1b}[2J", "control"),
        ("42", "digits"),
    ] {
        let out = h.corral(&["start", "/bin/true", "--name", name]);
        assert_eq!(out.status.code(), Some(1), "{name:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("name") && err.contains(says),
            "{name:?}: {err}"
        );
    }
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_drops_whole_lines_counts_them_and_resumes() {
    if !is_root() {
        eprintln!("full disk: needs root to mount a tmpfs; skipped");
        return;
    }
    let h = TestHome::started();
    let dir = h.work.join("full");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("full disk: cannot mount a tmpfs here; skipped");
        return;
    }
    let _fs = Tmpfs(dir.clone());
    // 3000 lines of 100 bytes into 64 KiB, then one more line once told.
    let go = h.work.join("go");
    let code = format!(
        "i=0; while [ $i -lt 3000 ]; do printf 'line %05d %088d\\n' $i 0; i=$((i+1)); done; \
         echo wrote >&2; while [ ! -e {} ]; do sleep 0.05; done; echo after; exec sleep 1000",
        go.display()
    );
    h.start(json!({"name": "f", "script": "sh", "args": ["-c", code],
                   "output": dir.join("f.log")}));
    let log = dir.join("f.log");
    wait_until(SOON * 3, "the app wrote every line", || {
        h.err_log("f").contains("wrote")
    });
    let text = read(&log);
    assert!(!text.is_empty(), "some lines fit");
    assert!(text.ends_with('\n'), "the last line is whole");
    for l in text.lines() {
        assert!(l.len() == 99 && l.starts_with("line "), "a cut line: {l:?}");
    }
    // Space comes back: the next lines are written.
    h.ok(json!({"cmd": "flush", "target": "f"}));
    std::fs::write(&go, "").unwrap();
    wait_until(SOON, "writing resumes", || read(&log).contains("after\n"));
    let dropped = h.describe("f")["pm2_env"]["log_lines_dropped"]
        .as_u64()
        .unwrap();
    let kept = text.lines().count() as u64;
    assert!(kept < 3000, "the disk was not full: {kept} lines kept");
    assert_eq!(dropped, 3000 - kept, "{kept} lines kept");
    h.ok(json!({"cmd": "delete", "target": "all"}));
}
