//! `Client`: the programmatic API (PM2's `connect`, `start`, `stop`, …) over
//! the control socket. It launches a daemon when none answers, and the
//! command line is built on it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::options::apps_of_config;
use crate::protocol::{
    Action, Command, Description, ErrorCode, Event, Request, Response, StartArgs, Target, WireError,
};

/// How long a launched daemon may take to say it is ready.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to the daemon.
#[derive(Debug)]
pub enum Error {
    /// The daemon refused the request.
    Daemon { code: ErrorCode, message: String },
    /// No daemon could be reached or started.
    NoDaemon(String),
    /// The connection failed.
    Io(io::Error),
    /// The daemon said something this client does not understand, or the
    /// caller gave something that cannot be sent (an unreadable config file).
    Invalid(String),
}

impl Error {
    /// The daemon's error code, if the daemon refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Daemon { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Daemon { message, .. } => f.write_str(message),
            Error::NoDaemon(m) => write!(f, "no daemon: {m}"),
            Error::Io(e) => write!(f, "connection to the daemon failed: {e}"),
            Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        Error::Daemon {
            code: e.code,
            message: e.message,
        }
    }
}

/// Where the daemon lives: its home, its socket, and the binary that runs it.
#[derive(Clone, Debug)]
pub struct Paths {
    pub home: PathBuf,
    pub socket: PathBuf,
    /// The `corral` executable launched as the daemon.
    pub binary: PathBuf,
}

impl Paths {
    /// `$CORRAL_HOME` (else `$HOME/.corral`), `$CORRAL_SOCKET` (else
    /// `<home>/corral.sock`), `$CORRAL_BIN` (else this program if it is
    /// corral, else `corral` on `PATH`).
    pub fn from_env() -> Result<Paths, Error> {
        let home = match std::env::var_os("CORRAL_HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h),
            _ => match std::env::var_os("HOME") {
                Some(h) if !h.is_empty() => PathBuf::from(h).join(".corral"),
                _ => {
                    return Err(Error::NoDaemon(
                        "neither CORRAL_HOME nor HOME is set".to_string(),
                    ));
                }
            },
        };
        let home = absolute(&home);
        let socket = match std::env::var_os("CORRAL_SOCKET") {
            Some(s) if !s.is_empty() => absolute(Path::new(&s)),
            _ => home.join("corral.sock"),
        };
        let binary = match std::env::var_os("CORRAL_BIN") {
            Some(b) if !b.is_empty() => PathBuf::from(b),
            _ => std::env::current_exe()
                .ok()
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("corral"))
                })
                .unwrap_or_else(|| PathBuf::from("corral")),
        };
        Ok(Paths {
            home,
            socket,
            binary,
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Options of one app, typed; `None` leaves the daemon's default. Options
/// without a field here go in `extra` under their PM2 key.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StartOptions {
    pub script: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter_args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_date_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_uptime: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_timeout: Option<u64>,
    /// A name (`"SIGTERM"`) or number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_signal: Option<String>,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_delay: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autorestart: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_exit_codes: Option<Vec<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub treekill: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execute_command: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_map_support: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_source_map_support: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StartOptions {
    /// Options running `script` with every default.
    pub fn script(script: impl Into<String>) -> StartOptions {
        StartOptions {
            script: script.into(),
            ..StartOptions::default()
        }
    }
}

/// The event bus: an iterator of events, ended by `Client::disconnect` or
/// by the daemon's exit.
pub struct Bus {
    reader: BufReader<UnixStream>,
    _stream: UnixStream,
    line: String,
}

impl Bus {
    /// Make reads give up after `limit` (`None`: wait for ever): then
    /// `next` yields an `Error::Io` of kind `WouldBlock` or `TimedOut`.
    /// How `corral wait` bounds its wait without polling.
    pub fn set_timeout(&self, limit: Option<Duration>) -> Result<(), Error> {
        let limit = limit.map(|d| d.max(Duration::from_millis(1)));
        self._stream.set_read_timeout(limit).map_err(Error::Io)
    }

    /// The next event's line as the daemon sent it (without its newline);
    /// `None` when the bus ends.
    pub fn next_line(&mut self) -> Option<Result<&str, Error>> {
        self.line.clear();
        match self.reader.read_line(&mut self.line) {
            Ok(0) => None,
            Ok(_) => Some(Ok(self.line.trim_end())),
            Err(e) => Some(Err(Error::Io(e))),
        }
    }
}

impl Iterator for Bus {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_line()? {
            Ok(line) => Some(Event::parse(line).map_err(Error::Invalid)),
            Err(e) => Some(Err(e)),
        }
    }
}

/// A connection to the daemon.
pub struct Client {
    stream: UnixStream,
    socket: PathBuf,
    /// Dups of the sockets of the buses launched, to end them.
    buses: Vec<UnixStream>,
    reader: BufReader<UnixStream>,
    next_id: u64,
    /// The daemon of `connect_no_daemon`, ours to reap after `kill_daemon`.
    child: Option<Child>,
    /// Held open for as long as this process lives (connect_no_daemon).
    lifeline: Option<ChildStdin>,
    warnings: Vec<String>,
}

impl Client {
    /// Connect to the daemon of `Paths::from_env()`, launching a detached
    /// one if none answers.
    pub fn connect() -> Result<Client, Error> {
        Client::connect_with(&Paths::from_env()?, true)
    }

    /// Connect to a running daemon only; `Error::NoDaemon` if none answers.
    pub fn connect_existing() -> Result<Client, Error> {
        Client::connect_with(&Paths::from_env()?, false)
    }

    /// Connect to the daemon at `paths`, launching one if `launch`.
    pub fn connect_with(paths: &Paths, launch: bool) -> Result<Client, Error> {
        match UnixStream::connect(&paths.socket) {
            Ok(s) => Client::over(s, paths.socket.clone()),
            Err(e) if !launch => Err(Error::NoDaemon(format!(
                "cannot connect to {}: {e}",
                paths.socket.display()
            ))),
            Err(_) => {
                let mut child = daemon_command(paths)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| launch_failed(paths, e))?;
                // It forks the daemon, prints its first word and exits.
                let answer = match child.stdout.take() {
                    Some(out) => read_ready(out),
                    None => Ok(String::new()),
                };
                let _ = child.wait();
                let answer = answer?;
                match UnixStream::connect(&paths.socket) {
                    Ok(s) => Client::over(s, paths.socket.clone()),
                    Err(e) => Err(Error::NoDaemon(if answer.is_empty() || answer == "ready" {
                        format!("cannot connect to {}: {e}", paths.socket.display())
                    } else {
                        answer
                    })),
                }
            }
        }
    }

    /// Start a daemon tied to this process: it stops its apps and exits when
    /// this process exits. Fails if a daemon already runs on the same home.
    pub fn connect_no_daemon() -> Result<Client, Error> {
        let paths = Paths::from_env()?;
        let mut child = daemon_command(&paths)
            .arg("--lifeline")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| launch_failed(&paths, e))?;
        let answer = match child.stdout.take() {
            Some(out) => read_ready(out)?,
            None => String::new(),
        };
        if answer != "ready" {
            let _ = child.wait();
            return Err(Error::NoDaemon(answer));
        }
        let stream = UnixStream::connect(&paths.socket).map_err(|e| {
            Error::NoDaemon(format!("cannot connect to {}: {e}", paths.socket.display()))
        })?;
        let mut c = Client::over(stream, paths.socket.clone())?;
        c.lifeline = child.stdin.take();
        c.child = Some(child);
        Ok(c)
    }

    fn over(stream: UnixStream, socket: PathBuf) -> Result<Client, Error> {
        let reader = BufReader::new(stream.try_clone().map_err(Error::Io)?);
        Ok(Client {
            stream,
            socket,
            buses: Vec::new(),
            reader,
            next_id: 1,
            child: None,
            lifeline: None,
            warnings: Vec::new(),
        })
    }

    /// Close the connection and every bus it launched. A daemon of
    /// `connect_no_daemon` keeps running until this process exits.
    pub fn disconnect(mut self) {
        for b in self.buses.drain(..) {
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
        if let Some(l) = self.lifeline.take() {
            // Leaked on purpose: the fd (close-on-exec) closes when this
            // process exits, which is what tells the daemon to stop.
            std::mem::forget(l);
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Warnings the daemon gave with the last answer (options with no effect).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Send one request and read its answer.
    pub fn request(&mut self, cmd: Command) -> Result<Value, Error> {
        let raw = self.request_raw(cmd)?;
        serde_json::from_str(raw.get())
            .map_err(|e| Error::Invalid(format!("unreadable answer from the daemon: {e}")))
    }

    /// Send one request; the result as the JSON text the daemon sent.
    pub fn request_raw(&mut self, cmd: Command) -> Result<Box<RawValue>, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let line = Request { id: json!(id), cmd }.to_line();
        self.stream.write_all(line.as_bytes()).map_err(Error::Io)?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(Error::Io)?;
        if n == 0 {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            )));
        }
        let resp: Response = serde_json::from_str(&answer)
            .map_err(|e| Error::Invalid(format!("unreadable answer from the daemon: {e}")))?;
        self.warnings = resp.warnings;
        match (resp.ok, resp.result, resp.error) {
            (true, Some(result), _) => Ok(result),
            (false, _, Some(e)) => Err(Error::from(e)),
            _ => Err(Error::Invalid(format!(
                "answer without a result or an error: {}",
                answer.trim_end()
            ))),
        }
    }

    fn descriptions(&mut self, cmd: Command) -> Result<Vec<Description>, Error> {
        let raw = self.request_raw(cmd)?;
        serde_json::from_str(raw.get())
            .map_err(|e| Error::Invalid(format!("unreadable descriptions from the daemon: {e}")))
    }

    /// `ping`: the daemon's version, pid, protocol and uptime.
    pub fn ping(&mut self) -> Result<Value, Error> {
        self.request(Command::Ping)
    }

    /// Start one app. A relative `cwd` (or none) is taken from this
    /// process's working directory, and the app inherits this process's
    /// environment, as with PM2.
    pub fn start(&mut self, opts: &StartOptions) -> Result<Vec<Description>, Error> {
        let app = serde_json::to_value(opts)
            .map_err(|e| Error::Invalid(format!("cannot encode the options: {e}")))?;
        self.start_apps(vec![app], None)
    }

    /// Start `script` with the given options (`script` overrides theirs).
    pub fn start_script(
        &mut self,
        script: &str,
        opts: &StartOptions,
    ) -> Result<Vec<Description>, Error> {
        let mut opts = opts.clone();
        opts.script = script.to_string();
        self.start(&opts)
    }

    /// Start the apps of a JSON config file (`{"apps":[…]}`, an array or one
    /// object); `env_name` selects `env_<name>`, `only` filters by name.
    pub fn start_file(
        &mut self,
        path: &Path,
        env_name: Option<&str>,
        only: &[String],
    ) -> Result<Vec<Description>, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let apps = apps_of_config(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => absolute(p),
            _ => std::env::current_dir()
                .map_err(|e| Error::Invalid(format!("cannot read the current directory: {e}")))?,
        };
        let mut picked = Vec::new();
        for mut app in apps {
            if !only.is_empty() {
                // The name the daemon will give it (explicit, or from the script).
                let name = match crate::options::parse_app(&app) {
                    Ok(p) => p.spec.name,
                    Err(_) => app.get("name").and_then(Value::as_str).unwrap_or("").into(),
                };
                if !only.contains(&name) {
                    continue;
                }
            }
            // Paths in a config file are relative to the file.
            if let Value::Object(obj) = &mut app {
                let cwd = match obj.get("cwd").and_then(Value::as_str) {
                    Some(c) => dir.join(c),
                    None => dir.clone(),
                };
                obj.insert("cwd".into(), json!(cwd.display().to_string()));
            }
            picked.push(app);
        }
        if picked.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no app named {}",
                path.display(),
                only.join(", ")
            )));
        }
        self.start_apps(picked, env_name)
    }

    /// Start apps given as option objects, with this process's cwd and
    /// environment.
    pub fn start_apps(
        &mut self,
        mut apps: Vec<Value>,
        env_name: Option<&str>,
    ) -> Result<Vec<Description>, Error> {
        let here = std::env::current_dir()
            .map_err(|e| Error::Invalid(format!("cannot read the current directory: {e}")))?;
        for app in &mut apps {
            if let Value::Object(obj) = app {
                let cwd = match obj.get("cwd").and_then(Value::as_str) {
                    Some(c) => here.join(c),
                    None => here.clone(),
                };
                obj.insert("cwd".into(), json!(cwd.display().to_string()));
            }
        }
        self.descriptions(Command::Start(StartArgs {
            apps,
            target: None,
            env_name: env_name.map(str::to_string),
            caller_env: Some(std::env::vars().collect()),
        }))
    }

    /// Start known apps again (by name, pm_id, namespace or `all`).
    pub fn start_target(&mut self, target: Target) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Start(StartArgs {
            target: Some(target),
            ..StartArgs::default()
        }))
    }

    pub fn stop(&mut self, target: Target) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Act(Action::Stop, target))
    }

    pub fn restart(&mut self, target: Target) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Act(Action::Restart, target))
    }

    pub fn reload(&mut self, target: Target) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Act(Action::Reload, target))
    }

    /// A rolling reload in which each old process first gets the
    /// `shutdown` message (PM2's gracefulReload).
    pub fn graceful_reload(&mut self, target: Target) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Act(Action::GracefulReload, target))
    }

    pub fn delete(&mut self, target: Target) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Act(Action::Delete, target))
    }

    /// Zero the restart counters.
    pub fn reset(&mut self, target: Target) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Act(Action::Reset, target))
    }

    /// The apps a target names (an empty list if none).
    pub fn describe(&mut self, target: Target) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Act(Action::Describe, target))
    }

    pub fn list(&mut self) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::List)
    }

    /// Send `signal` (a name like `"SIGUSR2"` or a number) to every process
    /// named `name` (or any target).
    pub fn send_signal_to_process_name(
        &mut self,
        signal: &str,
        name: &str,
    ) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::SendSignal {
            signal: json!(signal),
            target: Target::from_word(name),
        })
    }

    /// Send `data` to app `pm_id`'s IPC channel as PM2's
    /// `sendDataToProcessId` does: the packet
    /// `{"id", "type": "process:msg", "topic", "data"}` arrives in the app's
    /// `process.on('message')`. `no_channel` if the app has none.
    pub fn send_data_to_process_id(
        &mut self,
        pm_id: u32,
        topic: Option<&str>,
        data: Value,
    ) -> Result<(), Error> {
        let mut packet = json!({"id": pm_id, "type": "process:msg", "data": data});
        if let Some(t) = topic {
            packet["topic"] = json!(t);
        }
        self.request(Command::SendData { packet }).map(|_| ())
    }

    /// Grow or shrink the instances of app `name`: `json!(4)`, `json!("+2")`
    /// or `json!("-1")`; the instances after scaling.
    pub fn scale(&mut self, name: &str, instances: Value) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Scale {
            name: name.to_string(),
            instances,
        })
    }

    /// Empty the log files of `target` (every app's if `None`); how many.
    pub fn flush(&mut self, target: Option<Target>) -> Result<u64, Error> {
        let v = self.request(Command::Flush(target))?;
        Ok(v["files"].as_u64().unwrap_or(0))
    }

    /// Reopen every log file (after logrotate renamed them); how many.
    pub fn reload_logs(&mut self) -> Result<u64, Error> {
        let v = self.request(Command::ReloadLogs)?;
        Ok(v["files"].as_u64().unwrap_or(0))
    }

    /// Open the event bus on a connection of its own: every event, or the
    /// names in `events` (`"log:*"` is a prefix). `disconnect` ends it.
    pub fn launch_bus(&mut self, events: Option<Vec<String>>) -> Result<Bus, Error> {
        let mut stream = UnixStream::connect(&self.socket).map_err(Error::Io)?;
        let line = Request {
            id: json!(0),
            cmd: Command::Subscribe { events },
        }
        .to_line();
        stream.write_all(line.as_bytes()).map_err(Error::Io)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(Error::Io)?);
        let mut answer = String::new();
        reader.read_line(&mut answer).map_err(Error::Io)?;
        let resp: Response = serde_json::from_str(&answer)
            .map_err(|e| Error::Invalid(format!("unreadable answer from the daemon: {e}")))?;
        if let Some(e) = resp.error {
            return Err(Error::from(e));
        }
        self.buses.push(stream.try_clone().map_err(Error::Io)?);
        Ok(Bus {
            reader,
            _stream: stream,
            line: String::new(),
        })
    }

    /// Stop every app and the daemon; how many apps were stopped.
    pub fn kill_daemon(mut self) -> Result<u64, Error> {
        let v = self.request(Command::KillDaemon)?;
        // The daemon closes the connection as it exits.
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        Ok(v.get("stopped").and_then(Value::as_u64).unwrap_or(0))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(l) = self.lifeline.take() {
            std::mem::forget(l);
        }
    }
}

fn daemon_command(paths: &Paths) -> std::process::Command {
    let mut c = std::process::Command::new(&paths.binary);
    c.arg("daemon")
        .env("CORRAL_HOME", &paths.home)
        .env("CORRAL_SOCKET", &paths.socket);
    c
}

fn launch_failed(paths: &Paths, e: io::Error) -> Error {
    Error::NoDaemon(format!(
        "cannot run {} to start the daemon: {e}",
        paths.binary.display()
    ))
}

/// The launched daemon's first line on stdout: `ready` or `error: ...`.
fn read_ready(out: impl Read + AsFd) -> Result<String, Error> {
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    let mut got = Vec::new();
    let mut out = out;
    let mut buf = [0u8; 512];
    while !got.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::NoDaemon(
                "the daemon did not become ready within 10 s".to_string(),
            ));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::NoDaemon(format!("waiting for the daemon: {e}"))),
        }
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::NoDaemon(format!("waiting for the daemon: {e}"))),
        }
    }
    let line = String::from_utf8_lossy(&got);
    let line = line.lines().next().unwrap_or("").trim();
    Ok(line.strip_prefix("error: ").unwrap_or(line).to_string())
}
