//! Helpers shared by every integration test: a fresh `CORRAL_HOME` per test
//! (`TestHome`, cleaned up on drop), running the real `corral` binary, raw
//! requests over the control socket, and `wait_until` — the only way a test
//! waits for something.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Pause between two polls of a condition.
const POLL_PAUSE: Duration = Duration::from_millis(15);
/// The longest any single CLI invocation may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a finished command's output pipes may stay open.
const PIPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a raw request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The usual patience for a condition that should hold quickly.
pub const SOON: Duration = Duration::from_secs(10);

/// Fds above this are assumed closed when cleaning a child's fd table.
const MAX_INHERITED_FD: i32 = 1024;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The `corral` executable under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corral"))
}

/// Poll `cond` every few milliseconds until it holds; panic naming `what`
/// if it does not within `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting until {what}");
        }
        std::thread::sleep(POLL_PAUSE);
    }
}

/// A fresh temporary directory holding a corral home (`home`) and a work
/// directory for scripts and app cwds (`work`). Dropping it stops the
/// daemon (`corral kill`, then SIGKILL of the daemon pid as a last resort)
/// and removes the directory.
pub struct TestHome {
    pub root: PathBuf,
    pub home: PathBuf,
    pub work: PathBuf,
}

impl TestHome {
    /// A new home with no daemon yet.
    pub fn new() -> TestHome {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Short on purpose: the socket path must fit in 107 bytes.
        let root = std::env::temp_dir().join(format!("crl{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let home = root.join("h");
        let work = root.join("w");
        std::fs::create_dir_all(&work).expect("create the work directory");
        TestHome { root, home, work }
    }

    /// A new home with a daemon running (started by `corral ping`).
    pub fn started() -> TestHome {
        let h = TestHome::new();
        let out = h.corral(&["ping"]);
        assert_eq!(out.status.code(), Some(0), "corral ping: {}", text(&out));
        h
    }

    /// A new home whose daemon was started first by `corral daemon <args>`
    /// (in the background; it must print `ready`), e.g.
    /// `&["--sample-interval", "200"]`.
    pub fn with_daemon_args(args: &[&str]) -> TestHome {
        let h = TestHome::new();
        let mut all = vec!["daemon"];
        all.extend_from_slice(args);
        let out = h.corral(&all);
        assert_eq!(out.status.code(), Some(0), "corral daemon: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ready",
            "corral daemon: {}",
            text(&out)
        );
        h
    }

    /// The daemon's own log, `$CORRAL_HOME/corral.log`.
    pub fn daemon_log(&self) -> String {
        read(&self.home.join("corral.log"))
    }

    /// A new home whose daemon is launched with no fd open but 0, 1 and 2
    /// (whatever the test runner left open is closed first), plus `extra`,
    /// if given: an fd number left open without close-on-exec.
    pub fn started_with_fds(extra: Option<i32>) -> TestHome {
        let h = TestHome::new();
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        let null_fd = null.as_raw_fd();
        let mut c = h.command(&["ping"]);
        // SAFETY: between fork and exec the closure only calls dup2(2) and
        // close(2), which are async-signal-safe.
        unsafe {
            c.pre_exec(move || {
                if let Some(fd) = extra {
                    // dup2 leaves the new fd without close-on-exec.
                    libc::dup2(null_fd, fd);
                }
                for fd in 3..MAX_INHERITED_FD {
                    if Some(fd) != extra {
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        let out = run(c);
        drop(null);
        assert_eq!(out.status.code(), Some(0), "corral ping: {}", text(&out));
        h
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("corral.sock")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.home.join("corral.pid")
    }

    /// The daemon's pid, from its pid file.
    pub fn daemon_pid(&self) -> i32 {
        read(&self.pid_file())
            .trim()
            .parse()
            .expect("the daemon pid file holds a pid")
    }

    /// `corral <args>` for this home, run from the work directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("CORRAL_HOME", &self.home)
            .env_remove("CORRAL_SOCKET")
            .env_remove("CORRAL_BIN")
            .env_remove("DUMP_FILE_PATH")
            .current_dir(&self.work);
        c
    }

    /// Run `corral <args>` to completion.
    pub fn corral(&self, args: &[&str]) -> Output {
        run(self.command(args))
    }

    /// Write an executable file `name` in the work directory.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.work.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the script's directory");
        }
        std::fs::write(&path, body).expect("write the script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make the script executable");
        path
    }

    /// A new connection to the daemon's socket.
    pub fn connect(&self) -> Conn {
        Conn::open(&self.socket())
    }

    /// One request on a new connection; the whole response.
    pub fn request(&self, req: Value) -> Value {
        self.connect().call(&req)
    }

    /// One request that must succeed; its `result`.
    pub fn ok(&self, req: Value) -> Value {
        let resp = self.request(req.clone());
        assert_eq!(resp["ok"], json!(true), "request {req} failed: {resp}");
        resp["result"].clone()
    }

    /// Start one app (options object) over the socket, its cwd defaulting
    /// to the work directory; the descriptions started.
    pub fn start(&self, app: Value) -> Vec<Value> {
        let result = self.ok(json!({"cmd": "start", "app": self.with_cwd(app)}));
        result.as_array().expect("start answers an array").clone()
    }

    /// The app options with `cwd` set to the work directory if absent.
    pub fn with_cwd(&self, mut app: Value) -> Value {
        if app.get("cwd").is_none() {
            app["cwd"] = json!(self.work.display().to_string());
        }
        app
    }

    /// Every description matching `target` (empty if none).
    pub fn describe_all(&self, target: Value) -> Vec<Value> {
        let result = self.ok(json!({"cmd": "describe", "target": target}));
        result
            .as_array()
            .expect("describe answers an array")
            .clone()
    }

    /// The one description of the app named `name`.
    pub fn describe(&self, name: &str) -> Value {
        let all = self.describe_all(json!(name));
        assert_eq!(all.len(), 1, "expected one app named {name}, got {all:?}");
        all[0].clone()
    }

    /// `pm2_env.status` of the app named `name`.
    pub fn status(&self, name: &str) -> String {
        self.describe(name)["pm2_env"]["status"]
            .as_str()
            .expect("a status string")
            .to_string()
    }

    /// Wait until the app named `name` has status `status`; its description.
    pub fn wait_status(&self, name: &str, status: &str) -> Value {
        wait_until(SOON, &format!("{name} is {status}"), || {
            self.status(name) == status
        });
        self.describe(name)
    }

    /// Every description, by `list`.
    pub fn list(&self) -> Vec<Value> {
        let result = self.ok(json!({"cmd": "list"}));
        result.as_array().expect("list answers an array").clone()
    }

    /// The contents of the default stdout log of `name`.
    pub fn out_log(&self, name: &str) -> String {
        read(&self.home.join("logs").join(format!("{name}-out.log")))
    }

    pub fn err_log(&self, name: &str) -> String {
        read(&self.home.join("logs").join(format!("{name}-error.log")))
    }

    /// Wait until the stdout log of `name` contains `needle`.
    pub fn wait_log(&self, name: &str, needle: &str) -> String {
        wait_until(
            SOON,
            &format!("the log of {name} contains {needle:?}"),
            || self.out_log(name).contains(needle),
        );
        self.out_log(name)
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        if self.socket().exists() || self.pid_file().exists() {
            let mut c = self.command(&["kill"]);
            c.stdout(Stdio::null()).stderr(Stdio::null());
            if let Ok(mut child) = c.spawn() {
                let deadline = Instant::now() + COMMAND_TIMEOUT;
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() >= deadline => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(POLL_PAUSE),
                    }
                }
            }
            // Last resort: the daemon is still there (its pid file is only
            // removed when it exits).
            if let Ok(pid) = read(&self.pid_file()).trim().parse::<i32>()
                && pid > 0
                && read(Path::new(&format!("/proc/{pid}/cmdline"))).contains("corral")
            {
                // SAFETY: kill(2) on the pid of the daemon this test started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A connection to the daemon, for several requests in a row.
pub struct Conn {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Conn {
    pub fn open(socket: &Path) -> Conn {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .expect("set a read timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        Conn { stream, reader }
    }

    /// Send raw bytes (a line should end with a newline).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the daemon");
    }

    /// Read one response line as JSON.
    pub fn read_response(&mut self) -> Value {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("read an answer from the daemon");
        assert!(n > 0, "the daemon closed the connection without answering");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer {line:?} is not JSON: {e}"))
    }

    /// Send a JSON request as one line and read its answer.
    pub fn call(&mut self, req: &Value) -> Value {
        let mut line = req.to_string();
        line.push('\n');
        self.send(line.as_bytes());
        self.read_response()
    }

    /// Send one raw line (newline added) and read its answer.
    pub fn call_line(&mut self, line: &str) -> Value {
        self.send(format!("{line}\n").as_bytes());
        self.read_response()
    }
}

/// Run a command to completion (killing it and failing after a timeout),
/// collecting its output.
pub fn run(cmd: Command) -> Output {
    run_with_stdin(cmd, Stdio::null())
}

/// `run`, with `stdin` (a file, say) as the command's standard input.
pub fn run_with_stdin(mut cmd: Command, stdin: Stdio) -> Output {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for corral") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(POLL_PAUSE);
    };
    // A process it left behind may hold its output pipes open.
    wait_until(
        PIPE_TIMEOUT,
        &format!("the output pipes of {cmd:?} close after it exited"),
        || out_reader.is_finished() && err_reader.is_finished(),
    );
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// stdout and stderr of a finished command, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A file's contents, or "" if it cannot be read.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `/proc/<pid>/stat` split after the command: (state, ppid).
pub fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn running(pid: i32) -> bool {
    matches!(proc_state(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Wait until `pid` is no longer a live process.
pub fn wait_gone(pid: i32, what: &str) {
    wait_until(SOON, &format!("{what} (pid {pid}) has ended"), || {
        !running(pid)
    });
}

/// The pid in a description.
pub fn pid_of(desc: &Value) -> i32 {
    desc["pid"].as_i64().expect("a pid") as i32
}

/// `pm2_env.<key>` of a description.
pub fn env_of(desc: &Value, key: &str) -> Value {
    desc["pm2_env"][key].clone()
}

/// The pid that `NAME=<pid>` on a line of `log` gives.
pub fn logged_pid(log: &str, name: &str) -> i32 {
    let prefix = format!("{name}=");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}<pid> line in {log:?}"))
}

/// A bus subscriber on a connection of its own: a thread reads its event
/// lines into a channel, so that waiting for an event has a deadline.
/// Every event read is kept in `seen`, in order.
pub struct Subscriber {
    stream: UnixStream,
    rx: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub seen: Vec<Value>,
}

impl TestHome {
    /// Subscribe to the bus (every event, or the names in `events`); the
    /// daemon has answered `{"subscribed":true}` when this returns.
    pub fn subscribe(&self, events: Option<&[&str]>) -> Subscriber {
        let mut req = json!({"cmd": "subscribe"});
        if let Some(e) = events {
            req["events"] = json!(e);
        }
        let stream = UnixStream::connect(self.socket()).expect("connect to subscribe");
        stream
            .set_read_timeout(None)
            .expect("clear the read timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        let mut w = stream.try_clone().expect("clone the stream");
        w.write_all(format!("{req}\n").as_bytes())
            .expect("send subscribe");
        let mut answer = String::new();
        reader
            .read_line(&mut answer)
            .expect("read the subscribe answer");
        let v: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("subscribe answer {answer:?} is not JSON: {e}"));
        assert_eq!(v["ok"], json!(true), "subscribe refused: {v}");
        assert_eq!(v["result"], json!({"subscribed": true}), "{v}");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Subscriber {
            stream,
            rx,
            reader: Some(thread),
            seen: Vec::new(),
        }
    }

    /// `send_data` of `packet`; the whole response.
    pub fn send_data(&self, packet: Value) -> Value {
        self.request(json!({"cmd": "send_data", "packet": packet}))
    }

    /// The path of the default log file of `name` (`out` or `error`).
    pub fn log_path(&self, name: &str, stream: &str) -> PathBuf {
        self.home.join("logs").join(format!("{name}-{stream}.log"))
    }
}

/// What the next bus read brought.
pub enum Next {
    Event(Value),
    /// Nothing came within the limit.
    Quiet,
    /// The daemon closed the connection.
    Closed,
}

impl Subscriber {
    /// The next event, waiting at most `limit`.
    pub fn next_within(&mut self, limit: Duration) -> Next {
        match self.rx.recv_timeout(limit) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("event line {line:?} is not JSON: {e}"));
                self.seen.push(v.clone());
                Next::Event(v)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Next::Quiet,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    /// Read events until one satisfies `pred`; that one. Panics, listing
    /// what was seen, if none comes within `SOON` or the bus ends.
    pub fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left) {
                Next::Event(v) if pred(&v) => return v,
                Next::Event(_) => {}
                Next::Quiet => panic!(
                    "timed out after {SOON:?} waiting for the event {what}; seen: {:#?}",
                    self.seen
                ),
                Next::Closed => panic!(
                    "the bus ended before the event {what}; seen: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Wait until the daemon closes the bus (it exits), within `SOON`.
    pub fn wait_closed(&mut self) {
        let deadline = Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left) {
                Next::Event(_) => {}
                Next::Closed => return,
                Next::Quiet => panic!("the bus did not end within {SOON:?}"),
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

/// `event` of a bus event, and for a `process:event` its kind:
/// `("process:event", "online")`, `("log:out", "")`.
pub fn event_kind(ev: &Value) -> (String, String) {
    let name = ev["event"].as_str().unwrap_or("").to_string();
    let kind = match name.as_str() {
        "process:event" => ev["data"]["event"].as_str().unwrap_or("").to_string(),
        _ => String::new(),
    };
    (name, kind)
}

/// Whether `ev` is the `process:event` `kind` of the app named `name`.
pub fn is_process_event(ev: &Value, name: &str, kind: &str) -> bool {
    ev["event"] == "process:event"
        && ev["data"]["event"] == kind
        && ev["data"]["process"]["name"] == name
}

// ---------------------------------------------------------------------
// Loopback HTTP: ports, single requests, and a steady request loop.
// Everything here talks to 127.0.0.1 only.

/// How long one request of a loop may take before it counts as failed.
pub const REQUEST_PATIENCE: Duration = Duration::from_secs(2);
/// The most requests one `Load` makes before it stops by itself.
const LOAD_MAX_REQUESTS: usize = 50_000;
/// The longest a `Load` runs before it stops by itself.
const LOAD_MAX_TIME: Duration = Duration::from_secs(40);

/// A TCP port of 127.0.0.1 that was free a moment ago (the kernel picked
/// it for a listener that is closed again at once), so that tests running
/// in parallel do not share ports.
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("the listener's address").port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// One `GET <path> HTTP/1.0` to 127.0.0.1:`port`, at most `patience` per
/// step; the body of a 200 answer, or what went wrong.
pub fn http_get(port: u16, path: &str, patience: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&loopback(port), patience)
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(patience))
        .and_then(|()| s.set_write_timeout(Some(patience)))
        .map_err(|e| format!("timeouts: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete answer: {text:?}"))?;
    let status = head.lines().next().unwrap_or("");
    if !(status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200")) {
        return Err(format!("status {status:?}"));
    }
    Ok(body.to_string())
}

/// Whether a connection to 127.0.0.1:`port` is refused right now.
pub fn refused(port: u16) -> bool {
    matches!(
        TcpStream::connect_timeout(&loopback(port), REQUEST_PATIENCE),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// The pid of a `pid N` body.
pub fn body_pid(body: &str) -> Option<i32> {
    body.trim().strip_prefix("pid ")?.trim().parse().ok()
}

/// Sequential requests to `/` until `want` distinct pids answered (at most
/// `max_requests` and `limit`); the pids seen, and every failure.
pub fn pids_answering(
    port: u16,
    want: usize,
    max_requests: usize,
    limit: Duration,
) -> (BTreeSet<i32>, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut pids = BTreeSet::new();
    let mut failures = Vec::new();
    for _ in 0..max_requests {
        if pids.len() >= want || Instant::now() >= deadline {
            break;
        }
        match http_get(port, "/", REQUEST_PATIENCE) {
            Ok(b) => match body_pid(&b) {
                Some(p) => {
                    pids.insert(p);
                }
                None => failures.push(format!("unexpected body {b:?}")),
            },
            Err(e) => failures.push(e),
        }
    }
    (pids, failures)
}

/// What a `Load` saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    /// Every failed request, in order (an error, or an unexpected body).
    pub failed: Vec<String>,
    /// The pids that answered.
    pub pids: BTreeSet<i32>,
    /// The loop ended by its own bounds, not by `stop`.
    pub ran_out: bool,
}

impl LoadReport {
    /// Fail unless every request succeeded, some did, and the loop was
    /// stopped rather than running out; `during` names what happened
    /// meanwhile. The message shows the first few failures only.
    pub fn assert_clean(&self, during: &str) {
        assert!(self.ok > 0, "no request succeeded during {during}");
        assert!(
            self.failed.is_empty(),
            "{} of {} requests failed during {during}; the first: {:?}",
            self.failed.len(),
            self.failed.len() + self.ok,
            &self.failed[..self.failed.len().min(5)]
        );
        assert!(!self.ran_out, "the request loop ran out during {during}");
    }
}

/// A thread making sequential requests to `/` on 127.0.0.1:`port`, each
/// with a short timeout, counting what succeeded and what failed, until
/// `stop` (or its own bounds: `LOAD_MAX_REQUESTS`, `LOAD_MAX_TIME`).
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<BTreeSet<i32>>>,
    thread: Option<std::thread::JoinHandle<LoadReport>>,
}

impl Load {
    pub fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let (stop2, ok2, seen2) = (stop.clone(), ok.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LOAD_MAX_TIME;
            let mut report = LoadReport::default();
            for _ in 0..LOAD_MAX_REQUESTS {
                if stop2.load(Ordering::SeqCst) {
                    return report;
                }
                if Instant::now() >= deadline {
                    break;
                }
                match http_get(port, "/", REQUEST_PATIENCE) {
                    Ok(b) => match body_pid(&b) {
                        Some(p) => {
                            report.ok += 1;
                            report.pids.insert(p);
                            seen2.lock().expect("the pids seen").insert(p);
                            ok2.fetch_add(1, Ordering::SeqCst);
                        }
                        None => report.failed.push(format!("unexpected body {b:?}")),
                    },
                    Err(e) => report.failed.push(e),
                }
            }
            report.ran_out = true;
            report
        });
        Load {
            stop,
            ok,
            seen,
            thread: Some(thread),
        }
    }

    /// How many requests succeeded so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// The pids that answered so far.
    pub fn seen(&self) -> BTreeSet<i32> {
        self.seen.lock().expect("the pids seen").clone()
    }

    /// Wait until one of `pids` has answered a request of the loop.
    pub fn wait_answer_from(&self, pids: &BTreeSet<i32>, what: &str) {
        wait_until(SOON, what, || self.seen().iter().any(|p| pids.contains(p)));
    }

    /// Wait until `n` more requests than now have succeeded.
    pub fn wait_more(&self, n: usize, what: &str) {
        let target = self.ok() + n;
        wait_until(SOON, what, || self.ok() >= target);
    }

    /// Stop the loop; what it saw.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().expect("stopped once");
        t.join().expect("the request loop panicked")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
