//! Log files: built-in rotation (`max_log_size`, `log_retain`, the
//! daemon's defaults), the seed's numbered `reload-logs --rotate`, the
//! combined file (`log_file`), JSON lines (`log_type`), PM2's `logs`
//! flags, and log paths two apps would share by accident.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::util::*;

/// `numbered.py N`: lines `line <i> xxx…` (i from 0, up to 49 x's) written
/// in uneven chunks that cut lines anywhere, with pauses so the daemon
/// reads partial lines.
const NUMBERED: &str = "import os, sys, time\n\
n = int(sys.argv[1])\n\
text = b''.join(b'line %d %s\\n' % (i, b'x' * (i % 50)) for i in range(n))\n\
pos, k = 0, 0\n\
while pos < len(text):\n\
\x20   size = 1 + (k * 7919) % 3000\n\
\x20   os.write(1, text[pos:pos + size])\n\
\x20   pos, k = pos + size, k + 1\n\
\x20   if k % 16 == 0:\n\
\x20       time.sleep(0.001)\n";

fn expected_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("line {i} {}", "x".repeat(i % 50)))
        .collect()
}

/// `<path>.<k>` … `<path>.1`, then `<path>`: oldest first.
fn generations(path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (1..)
        .map(|k| PathBuf::from(format!("{}.{k}", path.display())))
        .take_while(|p| p.exists())
        .collect();
    v.reverse();
    v.push(path.to_path_buf());
    v
}

/// How many lines every generation of `path` holds now.
fn count_lines(path: &Path) -> usize {
    generations(path)
        .iter()
        .map(|p| read(p).lines().count())
        .sum()
}

/// The lines of every generation of `path`, oldest first; each file must
/// end with a whole line.
fn all_lines(path: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for p in generations(path) {
        let text = read(&p);
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends mid-line: {:?}",
            p.display(),
            &text[text.len().saturating_sub(80)..]
        );
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

fn start_numbered(h: &TestHome, name: &str, n: usize, extra: Value) {
    h.script("numbered.py", NUMBERED);
    let mut app = json!({
        "name": name,
        "script": "numbered.py",
        "interpreter": "python3",
        "args": [n.to_string()],
        "autorestart": false,
    });
    if let (Some(a), Value::Object(more)) = (app.as_object_mut(), extra) {
        a.extend(more);
    }
    h.start(app);
}

#[test]
fn rotation_keeps_every_line_whole_and_in_order() {
    let h = TestHome::started();
    let n = 20_000;
    let max = 64 * 1024;
    start_numbered(
        &h,
        "num",
        n,
        json!({"max_log_size": max, "log_retain": 100}),
    );
    let out = h.log_path("num", "out");
    wait_until(SOON * 3, "every line is in the out files", || {
        count_lines(&out) >= n && read(&out).ends_with('\n')
    });
    let files = generations(&out);
    assert!(files.len() >= 5, "rotated a few times: {files:?}");
    // Past the limit only by the end of a line begun below it (a chunk
    // that ended mid-line); these lines are at most 62 bytes.
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(
            len <= max + 62,
            "{} has {len} bytes, past {max}",
            f.display()
        );
    }
    assert_eq!(all_lines(&out), expected_lines(n));
    assert_eq!(h.describe("num")["pm2_env"]["max_log_size"], json!(max));
}

#[test]
fn log_retain_deletes_only_the_oldest() {
    let h = TestHome::started();
    let n = 20_000;
    start_numbered(
        &h,
        "ret",
        n,
        json!({"max_log_size": "20K", "log_retain": 2}),
    );
    let out = h.log_path("ret", "out");
    let last = format!("line {} ", n - 1);
    wait_until(SOON * 3, "the last line is written", || {
        read(&out).contains(&last)
    });
    let files = generations(&out);
    assert_eq!(files.len(), 3, "two old files and the current: {files:?}");
    assert!(!PathBuf::from(format!("{}.3", out.display())).exists());
    // What is kept is the newest part, without a gap.
    let kept = all_lines(&out);
    let want = expected_lines(n);
    assert!(
        kept.len() > 100 && kept.len() < n,
        "{} lines kept",
        kept.len()
    );
    assert_eq!(kept, want[n - kept.len()..]);
}

/// An app writing `tick <n> <padding>` every 10 ms.
fn fast_ticker(h: &TestHome, name: &str, extra: Value) {
    h.script(
        "fast.py",
        "import sys, time\ni = 0\nwhile True:\n\
         \x20   i += 1\n\
         \x20   print('tick %d %s' % (i, 'p' * 60), flush=True)\n\
         \x20   time.sleep(0.01)\n",
    );
    let mut app = json!({"name": name, "script": "fast.py", "interpreter": "python3",
                         "kill_timeout": 300});
    if let (Some(a), Value::Object(more)) = (app.as_object_mut(), extra) {
        a.extend(more);
    }
    h.start(app);
}

fn tick_of(line: &str) -> Option<u64> {
    line.split_whitespace()
        .skip_while(|w| *w != "tick")
        .nth(1)?
        .parse()
        .ok()
}

/// Lines a `corral logs …` child prints, through a channel.
struct Follower {
    child: std::process::Child,
    rx: mpsc::Receiver<String>,
}

impl Follower {
    fn new(h: &TestHome, args: &[&str]) -> Follower {
        let mut child = h
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run corral logs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, rx }
    }

    /// Lines until one satisfies `done` (included), within `SOON`.
    fn until(&mut self, what: &str, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + SOON * 2;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    let stop = done(&l);
                    got.push(l);
                    if stop {
                        return got;
                    }
                }
                Err(_) => panic!("no line {what} came; got {got:?}"),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn following_goes_on_across_rotations() {
    let h = TestHome::started();
    fast_ticker(&h, "rot", json!({"max_log_size": "1K", "log_retain": 3}));
    let out = h.log_path("rot", "out");
    let mut f = Follower::new(&h, &["logs", "rot", "--raw", "--lines", "0"]);
    let first = f.until("with a tick", |l| tick_of(l).is_some());
    let start = tick_of(first.last().unwrap()).unwrap();
    // Two rotations after the follower started.
    let rotated = PathBuf::from(format!("{}.2", out.display()));
    wait_until(SOON, "the out log rotated twice", || rotated.exists());
    let now_first = read(&out).lines().next().and_then(tick_of);
    let target = now_first.unwrap_or(start) + 5;
    let seen = f.until("past the rotations", |l| {
        tick_of(l).is_some_and(|t| t >= target)
    });
    let ticks: Vec<u64> = first
        .iter()
        .chain(&seen)
        .filter_map(|l| tick_of(l))
        .collect();
    let want: Vec<u64> = (start..start + ticks.len() as u64).collect();
    assert_eq!(ticks, want, "every tick once, in order");
}

#[test]
fn reload_logs_rotate_numbers_the_files() {
    let h = TestHome::started();
    fast_ticker(&h, "num", json!({}));
    let out = h.log_path("num", "out");
    let err = h.log_path("num", "error");
    let logs = h.home.join("logs");
    wait_until(SOON, "a tick in the out log", || {
        read(&out).contains("tick")
    });
    let rotate = |h: &TestHome| {
        let o = h.corral(&["reload-logs", "--rotate", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    assert_eq!(rotate(&h), json!({"files": 2}));
    let one = logs.join("num-out-1.log");
    assert!(logs.join("num-error-1.log").exists());
    assert!(read(&one).contains("tick"), "{}", read(&one));
    wait_until(SOON, "new ticks in a fresh out log", || {
        read(&out).contains("tick")
    });
    // Over the socket too; the next number.
    let r = h.ok(json!({"cmd": "reload_logs", "rotate": true}));
    assert_eq!(r, json!({"files": 2}));
    let two = logs.join("num-out-2.log");
    let last = |p: &Path| read(p).lines().filter_map(tick_of).next_back().unwrap();
    let first = |p: &Path| read(p).lines().filter_map(tick_of).next().unwrap();
    assert!(last(&one) < first(&two), "-1 before -2");
    assert_eq!(first(&two), last(&one) + 1, "nothing lost between");
    // And through the library.
    wait_until(SOON, "a tick after the second rotation", || {
        read(&out).contains("tick")
    });
    let paths = corral::client::Paths {
        home: h.home.clone(),
        socket: h.socket(),
        binary: bin(),
    };
    let mut c = corral::Client::connect_with(&paths, false).unwrap();
    assert_eq!(c.reload_logs_rotate().unwrap(), 2);
    assert!(read(&logs.join("num-out-3.log")).contains("tick"));
    // Plain reload-logs only reopens.
    wait_until(SOON, "a tick after the third rotation", || {
        read(&out).contains("tick")
    });
    let o = h.corral(&["reload-logs"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!logs.join("num-out-4.log").exists());
    assert!(err.exists());
}

#[test]
fn log_file_combines_both_streams_in_order() {
    let h = TestHome::started();
    // Each stream's lines in pieces: a partial line on one stream must not
    // be cut by the other's.
    h.script(
        "both.py",
        "import os, time\n\
         for i in range(300):\n\
         \x20   os.write(1, b'out %d' % i)\n\
         \x20   os.write(2, b'err %d' % i)\n\
         \x20   if i % 7 == 0:\n\
         \x20       time.sleep(0.002)\n\
         \x20   os.write(1, b' o\\n')\n\
         \x20   os.write(2, b' e\\n')\n",
    );
    let d = h.start(
        json!({"name": "both", "script": "both.py", "interpreter": "python3",
                           "autorestart": false, "log_file": true}),
    );
    let combined = h.home.join("logs").join("both.log");
    assert_eq!(
        d[0]["pm2_env"]["pm_log_path"],
        json!(combined.display().to_string())
    );
    wait_until(SOON, "600 lines in the combined file", || {
        read(&combined).lines().count() >= 600
    });
    let text = read(&combined);
    let mut outs = Vec::new();
    let mut errs = Vec::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split(' ').collect();
        match w.as_slice() {
            ["out", n, "o"] => outs.push(n.parse::<u32>().unwrap()),
            ["err", n, "e"] => errs.push(n.parse::<u32>().unwrap()),
            _ => panic!("a line cut or mixed: {l:?}"),
        }
    }
    let want: Vec<u32> = (0..300).collect();
    assert_eq!(outs, want);
    assert_eq!(errs, want);
    // The per-stream files are written as before.
    wait_until(SOON, "the out file is complete", || {
        h.out_log("both").lines().count() == 300
    });
}

#[test]
fn json_lines_parse() {
    let h = TestHome::started();
    h.script(
        "j.sh",
        "echo 'hello \"world\"'\necho oops >&2\nprintf 'no newline'\n",
    );
    h.start(json!({"name": "j", "script": "j.sh", "autorestart": false,
                   "log_type": "json", "log_file": "all.log"}));
    wait_until(SOON, "the partial line is written at exit", || {
        h.out_log("j").lines().count() == 2
    });
    let parse = |text: String| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    };
    let out = parse(h.out_log("j"));
    assert_eq!(out[0]["message"], "hello \"world\"\n");
    assert_eq!(out[0]["type"], "out");
    assert_eq!(out[0]["app_name"], "j");
    assert_eq!(out[0]["process_id"], json!(0));
    assert_eq!(out[1]["message"], "no newline");
    let keys: Vec<&String> = out[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
    let ts = out[0]["timestamp"].as_str().unwrap();
    // ISO 8601 in UTC, as PM2 writes without log_date_format.
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T",
        "{ts}"
    );
    let err = parse(h.err_log("j"));
    assert_eq!(err[0]["message"], "oops\n");
    assert_eq!(err[0]["type"], "err");
    wait_until(SOON, "the combined file has three objects", || {
        read(&h.work.join("all.log")).lines().count() == 3
    });
    let all = parse(read(&h.work.join("all.log")));
    assert!(all.iter().any(|v| v["type"] == "err"));

    // With log_date_format, the timestamp is in that format.
    h.start(json!({"name": "k", "script": "j.sh", "autorestart": false,
                   "log_type": "json", "log_date_format": "[at] YYYY"}));
    wait_until(SOON, "k wrote", || h.out_log("k").lines().count() == 2);
    let k = parse(h.out_log("k"));
    let ts = k[0]["timestamp"].as_str().unwrap();
    assert!(ts.starts_with("at 2") && ts.len() == 7, "{ts}");
}

#[test]
fn a_pm2_config_with_the_log_keys_starts() {
    let h = TestHome::started();
    h.script("app.sh", "echo up\nexec sleep 30\n");
    std::fs::write(
        h.work.join("ecosystem.config.json"),
        json!({"apps": [{
            "name": "eco",
            "script": "app.sh",
            "max_log_size": "10M",
            "log_retain": 3,
            "log_file": "combined.log",
            "log_type": "json",
            "log_date_format": "YYYY-MM-DD HH:mm Z",
            "merge_logs": true,
            "instances": 2,
            "exec_mode": "fork",
            "kill_timeout": 300,
        }]})
        .to_string(),
    )
    .unwrap();
    let o = h.corral(&["start", "ecosystem.config.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = h.describe_all(json!("eco"));
    assert_eq!(all.len(), 2);
    let env = &all[0]["pm2_env"];
    assert_eq!(env["max_log_size"], json!(10 * 1024 * 1024));
    assert_eq!(env["log_retain"], json!(3));
    assert_eq!(env["log_type"], json!("json"));
    let combined = h.work.join("combined.log");
    assert_eq!(env["pm_log_path"], json!(combined.display().to_string()));
    wait_until(SOON, "both instances wrote to the combined file", || {
        read(&combined).lines().count() == 2
    });
}

#[test]
fn start_flags_for_logs() {
    let h = TestHome::started();
    h.script("app.sh", "echo up\nexec sleep 30\n");
    let o = h.corral(&[
        "start",
        "app.sh",
        "--name",
        "f",
        "--log",
        "--log-type",
        "json",
        "--max-log-size",
        "1M",
        "--log-retain",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let env = h.describe("f")["pm2_env"].clone();
    let combined = h.home.join("logs").join("f.log");
    assert_eq!(env["pm_log_path"], json!(combined.display().to_string()));
    assert_eq!(env["log_type"], json!("json"));
    assert_eq!(env["max_log_size"], json!(1024 * 1024));
    assert_eq!(env["log_retain"], json!(2));
    wait_until(SOON, "the combined file", || read(&combined).contains("up"));

    // PM2's `--log PATH`, and `-l PATH`.
    for (name, flag) in [("h", "--log"), ("i", "-l")] {
        let file = format!("{name}-all.log");
        let o = h.corral(&["start", "app.sh", "--name", name, flag, &file]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let want = h.work.join(&file).display().to_string();
        assert_eq!(h.describe(name)["pm2_env"]["pm_log_path"], json!(want));
    }

    let o = h.corral(&["start", "app.sh", "--name", "g", "--disable-logs"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let env = h.describe("g")["pm2_env"].clone();
    assert_eq!(env["pm_out_log_path"], "/dev/null");
    assert_eq!(env["pm_err_log_path"], "/dev/null");
}

#[test]
fn two_names_never_share_a_log_file_by_accident() {
    let h = TestHome::started();
    h.script("app.sh", "exec sleep 30\n");
    h.start(json!({"name": "a b", "script": "app.sh", "kill_timeout": 300}));
    // `a b` and `a-b` make the same file name.
    let r = h.request(json!({"cmd": "start", "app": h.with_cwd(json!({
        "name": "a-b", "script": "app.sh"}))}));
    assert_eq!(r["ok"], json!(false), "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("`a-b`") && msg.contains("`a b`") && msg.contains("a-b-out.log"),
        "{msg}"
    );
    // A combined file named like another app's out file.
    h.start(json!({"name": "x", "script": "app.sh", "kill_timeout": 300}));
    let r = h.request(json!({"cmd": "start", "app": {
        "name": "x-out", "script": "app.sh", "cwd": h.work.display().to_string(),
        "log_file": true}}));
    assert_eq!(r["ok"], json!(false), "{r}");
    // The same path given on purpose by both is shared.
    for name in ["p", "q"] {
        h.start(
            json!({"name": name, "script": "app.sh", "kill_timeout": 300,
                       "output": "shared.log", "error": "shared.log"}),
        );
    }
    assert_eq!(h.list().len(), 4);
}

#[test]
fn daemon_defaults_rotate_apps_and_its_own_log() {
    let h = TestHome::with_daemon_args(&["--max-log-size", "2K", "--log-retain", "2"]);
    fast_ticker(&h, "t", json!({}));
    let out = h.log_path("t", "out");
    wait_until(SOON, "the app's log rotated by the default", || {
        PathBuf::from(format!("{}.2", out.display())).exists()
    });
    assert!(!PathBuf::from(format!("{}.3", out.display())).exists());
    // An app that says 0 never rotates.
    fast_ticker(&h, "u", json!({"max_log_size": 0}));
    // The daemon's own log: an app that exits at once fills it.
    h.script("crash.sh", "exit 3\n");
    h.start(json!({"name": "c", "script": "crash.sh", "min_uptime": 0,
                   "max_restarts": 1000, "restart_delay": 0}));
    let log = h.home.join("corral.log");
    wait_until(SOON * 2, "corral.log rotated", || {
        PathBuf::from(format!("{}.1", log.display())).exists()
    });
    let _ = h.corral(&["stop", "c"]);
    let u = h.log_path("u", "out");
    wait_until(SOON, "u wrote past 2K", || {
        std::fs::metadata(&u).map(|m| m.len()).unwrap_or(0) > 4096
    });
    assert!(!PathBuf::from(format!("{}.1", u.display())).exists());
    assert_eq!(h.describe("u")["pm2_env"].get("max_log_size"), None);
}

#[test]
fn logs_json_and_format_follow_as_pm2() {
    let h = TestHome::started();
    fast_ticker(&h, "jt", json!({}));
    let mut f = Follower::new(&h, &["logs", "jt", "--json"]);
    let got = f.until("a JSON log line", |l| l.contains("tick"));
    let v: Value = serde_json::from_str(got.last().unwrap()).unwrap();
    assert_eq!(v["type"], "out");
    assert_eq!(v["app_name"], "jt");
    assert!(v["message"].as_str().unwrap().starts_with("tick "));
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    drop(f);

    let mut f = Follower::new(&h, &["logs", "jt", "--format"]);
    let got = f.until("a formatted line", |l| l.contains("tick"));
    let l = got.last().unwrap();
    assert!(l.starts_with("timestamp="), "{l}");
    assert!(l.contains(" app=jt id=0 type=out message=tick "), "{l}");
    drop(f);

    let mut f = Follower::new(&h, &["logs", "jt", "--lines", "0", "--timestamp=[T]HH"]);
    let got = f.until("a stamped line", |l| l.contains("tick"));
    let l = got.last().unwrap();
    assert!(
        l.starts_with('T') && l[3..].starts_with(" 0|jt| tick "),
        "{l}"
    );
}
