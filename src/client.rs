//! [`Client`]: the programmatic API (PM2's `connect`, `start`, `stop`, …)
//! over the control socket. It launches a daemon when none answers, and the
//! command line is built on it. [`Bus`] is the event stream of
//! [`Client::launch_bus`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, recv};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::config_file;
use crate::options::apps_of_config;
use crate::protocol::{
    Action, Changes, Command, Description, ErrorCode, Event, Request, Response, StartArgs, Target,
    WireError,
};

/// How long a launched daemon may take to say it is ready.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to accept a connection and read a
/// request, unless `CORRAL_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `$CORRAL_TIMEOUT`: seconds (a decimal number; 0 = wait for ever), else
/// [`DEFAULT_TIMEOUT`].
fn timeout_from_env() -> Result<Option<Duration>, Error> {
    let Some(v) = std::env::var_os("CORRAL_TIMEOUT") else {
        return Ok(Some(DEFAULT_TIMEOUT));
    };
    let text = v.to_string_lossy();
    match text.trim().parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        _ => Err(Error::Invalid(format!(
            "CORRAL_TIMEOUT: expected a number of seconds (0 for no limit), got {text:?}"
        ))),
    }
}

/// Connect to the socket at `path`, waiting at most `timeout` for the
/// daemon to take the connection (a daemon out of file descriptors leaves
/// it in the backlog; a full backlog blocks `connect` for ever).
fn connect_socket(path: &Path, timeout: Option<Duration>) -> io::Result<UnixStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, UnixAddr, connect, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if let Some(t) = timeout {
        // Unix sockets wait for room in the listener's backlog this long.
        // `as _`: the C types' names are deprecated on musl.
        let tv = nix::sys::time::TimeVal::new(t.as_secs() as _, t.subsec_micros() as _);
        setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    }
    let addr = UnixAddr::new(path)?;
    connect(fd.as_raw_fd(), &addr)?;
    Ok(UnixStream::from(fd))
}

/// The error for a daemon that did not answer in time.
fn no_answer(socket: &Path, timeout: Duration) -> Error {
    Error::NoDaemon(format!(
        "the daemon at {} did not answer within {} s (it may be overloaded or out of \
         file descriptors; its log says more; CORRAL_TIMEOUT sets the limit)",
        socket.display(),
        timeout.as_secs_f64()
    ))
}

/// Whether an I/O error is a socket timeout running out.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What went wrong talking to the daemon.
#[derive(Debug)]
pub enum Error {
    /// The daemon refused the request.
    Daemon {
        /// Why, as a code a program can match.
        code: ErrorCode,
        /// Why, in words (names the option, app or file at fault).
        message: String,
    },
    /// No daemon could be reached or started.
    NoDaemon(String),
    /// The connection failed.
    Io(io::Error),
    /// The daemon closed the connection: it exited, or (for a [`Bus`])
    /// [`Client::disconnect`] ended the bus.
    Closed,
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
            Error::Closed => f.write_str("the daemon closed the connection"),
            Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// The client's error for a refusal the daemon sent.
fn refused(e: WireError) -> Error {
    Error::Daemon {
        code: e.code,
        message: e.message,
    }
}

/// Where the daemon lives: its home, its socket, and the binary that runs it.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The daemon's home: its log, pid file and the apps' logs.
    pub home: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The `corral` executable launched as the daemon.
    pub binary: PathBuf,
}

impl Paths {
    /// `$CORRAL_HOME` (else `$HOME/.corral`), `$CORRAL_SOCKET` (else
    /// `<home>/corral.sock`), `$CORRAL_BIN` (else this program if its file
    /// name starts with `corral`, else `corral`, looked up on `PATH` when
    /// it is run).
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

/// How the instances of an app run (`exec_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    /// Each instance is a process of its own (PM2's `fork_mode`).
    Fork,
    /// Node instances share their listening sockets through the daemon, as
    /// Node's `cluster` module does under PM2 (`cluster_mode`).
    Cluster,
}

/// Options of one app, typed; `None` leaves the daemon's default (see the
/// options table of `corral(1)`). Options without a field here go in
/// `extra` under their PM2 key.
///
/// ```
/// use corral::client::{ExecMode, StartOptions};
///
/// let opts = StartOptions {
///     name: Some("api".into()),
///     exec_mode: Some(ExecMode::Cluster),
///     instances: Some(4),
///     max_memory_restart: Some(100 * 1024 * 1024),
///     ..StartOptions::script("api.js")
/// };
/// assert_eq!(opts.instances, Some(4));
/// ```
#[derive(Clone, Debug, Default, Serialize)]
pub struct StartOptions {
    /// The program: a path (relative to `cwd`) or a command on `PATH`.
    pub script: String,
    /// The name to address the app by (default: the script's stem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Arguments of the script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The interpreter (default: from the script's extension; `"none"`
    /// runs the script itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// Arguments of the interpreter, placed before the script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter_args: Option<Vec<String>>,
    /// The working directory; a relative one is taken from this process's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Variables laid over the environment the app inherits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// How many processes to run: a count; 0 means one per CPU (PM2's
    /// `"max"`), -n one per CPU less n.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    /// Fork (the default) or cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_mode: Option<ExecMode>,
    /// Bytes: restart an instance whose resident memory stays above this
    /// (PM2's `'100M'` is `100 * 1024 * 1024`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_restart: Option<u64>,
    /// The stdout log file (`/dev/null` for none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// The stderr log file (may be the same as `output`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PathBuf>,
    /// Prefix each log line with a timestamp in this moment.js format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_date_format: Option<String>,
    /// Where the app's pid is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// Milliseconds: an exit sooner than this after a start is unstable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_uptime: Option<u64>,
    /// Unstable restarts in a row before the app is `errored`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// Milliseconds from the stop signal to SIGKILL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_timeout: Option<u64>,
    /// The stop signal: a name (`"SIGTERM"`) or number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_signal: Option<String>,
    /// Milliseconds to wait before a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_delay: Option<u64>,
    /// Whether an exit restarts the app (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autorestart: Option<bool>,
    /// Whether the app starts now (default true) or is only registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// Exit codes that do not restart the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_exit_codes: Option<Vec<i32>>,
    /// Start even if the same script already runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// A group name usable as a target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Whether signals go to the app's whole process group (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub treekill: Option<bool>,
    /// The user to run as (a daemon running as root only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The group to run as (a daemon running as root only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// Run in fork mode even with `instances`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execute_command: Option<bool>,
    /// Write the resolved options to `<name>-corral.json` in `cwd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write: Option<bool>,
    /// Node apps: add `--enable-source-maps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_map_support: Option<bool>,
    /// Node apps: never add `--enable-source-maps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_source_map_support: Option<bool>,
    /// Any other option, under its PM2 key (`"watch"`, `"cron_restart"`,
    /// …). A key that is also a field above is sent with `extra`'s value.
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

/// The event bus, from [`Client::launch_bus`]: a connection of its own on
/// which the daemon streams events.
///
/// Read it as a blocking iterator, with a timeout ([`Bus::next_timeout`]),
/// or without blocking ([`Bus::try_next`]) from a poll loop of your own: its
/// fd ([`AsFd`], [`AsRawFd`]) is readable when an event may be there. It
/// ends when [`Client::disconnect`] is called or the daemon exits: the
/// iterator then gives `None`, the bounded reads [`Error::Closed`].
///
/// ```no_run
/// use std::os::fd::AsFd;
/// use std::time::Duration;
/// use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
///
/// let mut client = corral::Client::connect()?;
/// let mut bus = client.launch_bus(Some(vec!["process:event".into()]))?;
/// // Nothing within 100 ms is not an error.
/// if let Some(event) = bus.next_timeout(Duration::from_millis(100))? {
///     println!("{event:?}");
/// }
/// // In a poll loop: when the fd is readable, take every whole event.
/// let mut fds = [PollFd::new(bus.as_fd(), PollFlags::POLLIN)];
/// poll(&mut fds, PollTimeout::NONE).map_err(std::io::Error::from)?;
/// while let Some(event) = bus.try_next()? {
///     println!("{event:?}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Bus {
    stream: UnixStream,
    /// What was read; `buf[start..]` is not given out yet: whole lines,
    /// then part of one.
    buf: Vec<u8>,
    start: usize,
    /// The line given out last.
    line: String,
    ended: bool,
}

/// How many bytes one read of the bus asks for.
const BUS_READ: usize = 64 * 1024;

/// How a read of the bus may wait.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Until(Instant),
}

impl Bus {
    fn new(stream: UnixStream) -> Bus {
        Bus {
            stream,
            buf: Vec::new(),
            start: 0,
            line: String::new(),
            ended: false,
        }
    }

    /// The next event's line as the daemon sent it (without its newline),
    /// waiting for it; `None` when the bus ends.
    pub fn next_line(&mut self) -> Option<Result<&str, Error>> {
        match self.read_line(Wait::Forever) {
            Ok(Some(())) => Some(Ok(self.line.as_str())),
            Ok(None) => None,
            Err(Error::Closed) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The next event, waiting at most `timeout` for it: `Ok(None)` if none
    /// came, [`Error::Closed`] once the bus ended.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        let deadline = Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until);
        self.next_event(deadline)
    }

    /// The next event if one is already there, without blocking: `Ok(None)`
    /// if none is, [`Error::Closed`] once the bus ended. Call it until it
    /// gives `Ok(None)` each time the fd polls readable: one read may bring
    /// several events.
    pub fn try_next(&mut self) -> Result<Option<Event>, Error> {
        self.next_event(Wait::Until(Instant::now()))
    }

    fn next_event(&mut self, wait: Wait) -> Result<Option<Event>, Error> {
        match self.read_line(wait)? {
            Some(()) => Event::parse(&self.line).map(Some).map_err(Error::Invalid),
            None => Ok(None),
        }
    }

    /// Put the next whole line in `self.line`; `Ok(None)` if none came
    /// before `wait` ran out.
    fn read_line(&mut self, wait: Wait) -> Result<Option<()>, Error> {
        loop {
            let rest = self.buf.get(self.start..).unwrap_or_default();
            if let Some(n) = rest.iter().position(|&b| b == b'\n') {
                self.line = String::from_utf8_lossy(rest.get(..n).unwrap_or_default()).into_owned();
                self.start += n + 1;
                return Ok(Some(()));
            }
            if self.ended {
                return Err(Error::Closed);
            }
            if !self.wait_readable(wait)? {
                return Ok(None);
            }
            // What was given out goes before reading more, once per read
            // rather than once per line.
            self.buf.drain(..self.start);
            self.start = 0;
            let len = self.buf.len();
            self.buf.resize(len + BUS_READ, 0);
            // Never blocks: the socket polled readable, and MSG_DONTWAIT
            // makes sure of it without changing the socket's flags (which
            // the client's copy of it shares).
            let got = recv(
                self.stream.as_raw_fd(),
                self.buf.get_mut(len..).unwrap_or_default(),
                MsgFlags::MSG_DONTWAIT,
            );
            self.buf.truncate(len + got.unwrap_or(0));
            match got {
                Ok(0) => self.ended = true,
                Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
    }

    /// Whether the socket became readable before `wait` ran out.
    fn wait_readable(&self, wait: Wait) -> Result<bool, Error> {
        loop {
            let timeout = match wait {
                Wait::Forever => PollTimeout::NONE,
                Wait::Until(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    // Rounded up, so a wait never ends early and spins.
                    let ms = left.as_nanos().div_ceil(1_000_000);
                    PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
                }
            };
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => match wait {
                    Wait::Until(t) if Instant::now() >= t => return Ok(false),
                    _ => {}
                },
                Ok(_) => return Ok(true),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
    }
}

impl AsFd for Bus {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl AsRawFd for Bus {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl Iterator for Bus {
    type Item = Result<Event, Error>;

    /// The next event, waiting for it; `None` when the bus ends.
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_line()? {
            Ok(line) => Some(Event::parse(line).map_err(Error::Invalid)),
            Err(e) => Some(Err(e)),
        }
    }
}

/// A connection to the daemon: PM2's programmatic API.
///
/// Each call sends one request and waits for its answer; apps come back as
/// [`Description`]s in PM2's shape. A target is anything that converts
/// into a [`Target`]: a name (`"api"`), a `pm_id` (`3`) or `"all"`.
///
/// ```no_run
/// use corral::Client;
/// use corral::client::StartOptions;
///
/// let mut client = Client::connect()?;
/// client.start(&StartOptions::script("worker.py"))?;
/// client.restart("worker")?;
/// client.stop(0)?;
/// client.delete("all")?;
/// client.disconnect();
/// # Ok::<(), corral::Error>(())
/// ```
pub struct Client {
    stream: UnixStream,
    /// Where its daemon lives (the socket for buses, the binary for
    /// `startup`).
    paths: Paths,
    /// Dups of the sockets of the buses launched, to end them.
    buses: Vec<UnixStream>,
    reader: BufReader<UnixStream>,
    next_id: u64,
    /// The daemon of `connect_no_daemon`, ours to reap after `kill_daemon`.
    child: Option<Child>,
    /// Held open for as long as this process lives (connect_no_daemon).
    lifeline: Option<ChildStdin>,
    warnings: Vec<String>,
    /// How long the daemon may take to read a request
    /// ([`Client::set_timeout`]).
    timeout: Option<Duration>,
}

impl Client {
    /// Connect to the daemon of [`Paths::from_env`], launching a detached
    /// one if none answers (PM2's `connect`).
    ///
    /// The daemon is the `corral` binary run as `corral daemon`, found in
    /// this order:
    /// 1. `$CORRAL_BIN`, if set;
    /// 2. this program itself, if its file name starts with `corral`;
    /// 3. `corral` looked up on `PATH`.
    ///
    /// When none of them runs, the error is [`Error::NoDaemon`], naming the
    /// binary and `CORRAL_BIN`. The daemon's home is `$CORRAL_HOME` (else
    /// `~/.corral`) and its socket `$CORRAL_SOCKET` (else
    /// `<home>/corral.sock`); [`Client::connect_with`] takes them explicitly.
    /// The daemon outlives this program: [`Client::kill_daemon`] stops it.
    pub fn connect() -> Result<Client, Error> {
        Client::connect_with(&Paths::from_env()?, true)
    }

    /// Connect to a running daemon only; [`Error::NoDaemon`] if none
    /// answers.
    pub fn connect_existing() -> Result<Client, Error> {
        Client::connect_with(&Paths::from_env()?, false)
    }

    /// Connect to the daemon at `paths`, launching one if `launch`.
    pub fn connect_with(paths: &Paths, launch: bool) -> Result<Client, Error> {
        let timeout = timeout_from_env()?;
        match connect_socket(&paths.socket, timeout) {
            Err(e) if timed_out(&e) => {
                Err(no_answer(&paths.socket, timeout.unwrap_or(DEFAULT_TIMEOUT)))
            }
            Ok(s) => Client::over(s, paths),
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
                    Ok(s) => Client::over(s, paths),
                    Err(e) => Err(Error::NoDaemon(if answer.is_empty() || answer == "ready" {
                        format!("cannot connect to {}: {e}", paths.socket.display())
                    } else {
                        answer
                    })),
                }
            }
        }
    }

    /// Start a daemon tied to this process (PM2's `connect(true)`): it
    /// stops its apps and exits when this process exits. The binary is
    /// found as [`Client::connect`] finds it. Fails if a daemon already runs
    /// on the same home.
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
        let mut c = Client::over(stream, &paths)?;
        c.lifeline = child.stdin.take();
        c.child = Some(child);
        Ok(c)
    }

    fn over(stream: UnixStream, paths: &Paths) -> Result<Client, Error> {
        // Large enough that a megabyte of `list` takes few reads.
        let reader = BufReader::with_capacity(64 * 1024, stream.try_clone().map_err(Error::Io)?);
        let timeout = timeout_from_env()?;
        Ok(Client {
            timeout,
            stream,
            paths: paths.clone(),
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

    /// How long the daemon may take to take up a request: each request is
    /// preceded on the wire by a `ping`, whose answer must come within
    /// `timeout` (else [`Error::NoDaemon`]); the request's own answer may
    /// then take as long as it needs (a stop waits for `kill_timeout`).
    /// `None`: wait for ever. Defaults to `$CORRAL_TIMEOUT` seconds, else
    /// [`DEFAULT_TIMEOUT`].
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Warnings the daemon gave with the last answer (options with no effect).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Send one request and read its answer.
    fn request(&mut self, cmd: Command) -> Result<Value, Error> {
        let raw = self.request_raw(cmd)?;
        serde_json::from_str(raw.get())
            .map_err(|e| Error::Invalid(format!("unreadable answer from the daemon: {e}")))
    }

    /// Send one request; the result as the JSON text the daemon sent.
    fn request_raw(&mut self, cmd: Command) -> Result<Box<RawValue>, Error> {
        let answer = self.request_line(cmd)?.0;
        self.parse_answer(&answer)
    }

    /// Send one request; its answer's line, and the request's id.
    fn request_line(&mut self, cmd: Command) -> Result<(String, Value), Error> {
        let id = self.send(cmd)?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(Error::Io)?;
        if n == 0 {
            return Err(Error::Closed);
        }
        Ok((answer, id))
    }

    /// Send one request (and with a timeout, see the daemon take it up);
    /// the request's id. Its answer is the next line to read.
    fn send(&mut self, cmd: Command) -> Result<Value, Error> {
        let id = json!(self.next_id);
        self.next_id += 1;
        let mut line = Request {
            id: id.clone(),
            cmd,
        }
        .to_line();
        if let Some(t) = self.timeout {
            // A ping first, answered at once by a daemon that serves this
            // connection: the proof it is alive, whatever the request then
            // waits for.
            let ping = Request {
                id: json!(format!("alive-{id}")),
                cmd: Command::Ping,
            };
            line.insert_str(0, &ping.to_line());
            let _ = self.stream.set_write_timeout(Some(t));
            let _ = self.stream.set_read_timeout(Some(t));
        }
        let socket = self.paths.socket.clone();
        let limit = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let io_err = |e: io::Error| match timed_out(&e) {
            true => no_answer(&socket, limit),
            false => Error::Io(e),
        };
        if let Err(e) = self.stream.write_all(line.as_bytes()) {
            // A daemon that refused the connection (too many connections)
            // closed it: its reason waits to be read.
            let mut why = String::new();
            if self.reader.read_line(&mut why).is_ok_and(|n| n > 0)
                && let Ok(Response {
                    ok: false,
                    error: Some(err),
                    ..
                }) = serde_json::from_str::<Response>(&why)
            {
                return Err(refused(err));
            }
            return Err(io_err(e));
        }
        if self.timeout.is_some() {
            let mut answer = String::new();
            let n = self.reader.read_line(&mut answer).map_err(io_err)?;
            if n == 0 {
                return Err(Error::Closed);
            }
            // A refusal of the connection itself (too many connections)
            // comes in its place.
            if let Ok(Response {
                ok: false,
                error: Some(e),
                ..
            }) = serde_json::from_str::<Response>(&answer)
            {
                return Err(refused(e));
            }
            let _ = self.stream.set_read_timeout(None);
        }
        Ok(id)
    }

    /// The result of an answer's line, or its error.
    fn parse_answer(&mut self, answer: &str) -> Result<Box<RawValue>, Error> {
        let resp: Response = serde_json::from_str(answer)
            .map_err(|e| Error::Invalid(format!("unreadable answer from the daemon: {e}")))?;
        self.warnings = resp.warnings;
        match (resp.ok, resp.result, resp.error) {
            (true, Some(result), _) => Ok(result),
            (false, _, Some(e)) => Err(refused(e)),
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

    /// Start the apps of a config file (see [`read_config`]); `env_name`
    /// selects `env_<name>`, `only` filters by name. Paths in the file are
    /// relative to the file's directory.
    pub fn start_file(
        &mut self,
        path: &Path,
        env_name: Option<&str>,
        only: &[String],
    ) -> Result<Vec<Description>, Error> {
        let apps = read_config(path)?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => absolute(p),
            _ => std::env::current_dir()
                .map_err(|e| Error::Invalid(format!("cannot read the current directory: {e}")))?,
        };
        self.start_config(apps, &dir, &path.display().to_string(), env_name, only)
    }

    /// Start apps read from a config (by [`read_config`] or
    /// [`read_config_text`]): relative paths are taken from `dir`, `env_name`
    /// selects `env_<name>`, `only` keeps the apps of these names; `label`
    /// names the config in errors.
    pub fn start_config(
        &mut self,
        apps: Vec<Value>,
        dir: &Path,
        label: &str,
        env_name: Option<&str>,
        only: &[String],
    ) -> Result<Vec<Description>, Error> {
        let picked = pick_apps(apps, dir, label, only)?;
        self.start_apps(picked, env_name)
    }

    /// Start apps given as option objects, with this process's cwd and
    /// environment.
    pub fn start_apps(
        &mut self,
        apps: Vec<Value>,
        env_name: Option<&str>,
    ) -> Result<Vec<Description>, Error> {
        self.start_request(apps, env_name)
    }

    fn start_request(
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
            caller_env: Some(crate::sys::utf8_env().0),
        }))
    }

    /// Stop, restart or reload the target's apps with new options first
    /// (`corral restart api --watch --update-env`); `verb` is `"stop"`,
    /// `"restart"`, `"reload"` or `"graceful_reload"`. The options are what
    /// `describe` shows afterwards.
    pub fn update(
        &mut self,
        verb: &str,
        target: impl Into<Target>,
        update: &Update,
    ) -> Result<Vec<Description>, Error> {
        let action = match verb {
            "stop" => Action::Stop,
            "restart" => Action::Restart,
            "reload" => Action::Reload,
            "graceful_reload" => Action::GracefulReload,
            other => {
                return Err(Error::Invalid(format!(
                    "`{other}` cannot change options (stop, restart, reload)"
                )));
            }
        };
        let changes = Changes {
            options: update.options.clone(),
            env_name: update.env_name.clone(),
            caller_env: update.update_env.then(|| crate::sys::utf8_env().0),
            toggle_watch: update.toggle_watch,
            from_config: update.from_config,
        };
        let target = target.into();
        if changes == Changes::default() {
            return self.act(action, target);
        }
        self.descriptions(Command::Update {
            action,
            target,
            changes,
        })
    }

    /// Start known apps again (by name, pm_id, namespace or `"all"`).
    pub fn start_target(&mut self, target: impl Into<Target>) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Start(StartArgs {
            target: Some(target.into()),
            ..StartArgs::default()
        }))
    }

    /// Stop the target's apps; they stay in the list, `stopped`.
    pub fn stop(&mut self, target: impl Into<Target>) -> Result<Vec<Description>, Error> {
        self.act(Action::Stop, target.into())
    }

    /// Stop and start the target's apps again.
    pub fn restart(&mut self, target: impl Into<Target>) -> Result<Vec<Description>, Error> {
        self.act(Action::Restart, target.into())
    }

    /// A rolling reload: each instance is replaced by a new one, and the old
    /// one stopped once the new one is online.
    pub fn reload(&mut self, target: impl Into<Target>) -> Result<Vec<Description>, Error> {
        self.act(Action::Reload, target.into())
    }

    /// A rolling reload in which each old process first gets the
    /// `shutdown` message (PM2's gracefulReload).
    pub fn graceful_reload(
        &mut self,
        target: impl Into<Target>,
    ) -> Result<Vec<Description>, Error> {
        self.act(Action::GracefulReload, target.into())
    }

    /// Stop the target's apps and forget them.
    pub fn delete(&mut self, target: impl Into<Target>) -> Result<Vec<Description>, Error> {
        self.act(Action::Delete, target.into())
    }

    /// Zero the restart counters.
    pub fn reset(&mut self, target: impl Into<Target>) -> Result<Vec<Description>, Error> {
        self.act(Action::Reset, target.into())
    }

    /// The apps a target names (an empty list if none).
    pub fn describe(&mut self, target: impl Into<Target>) -> Result<Vec<Description>, Error> {
        self.act(Action::Describe, target.into())
    }

    fn act(&mut self, action: Action, target: Target) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Act(action, target))
    }

    /// Every app, by `pm_id`.
    pub fn list(&mut self) -> Result<Vec<Description>, Error> {
        // Parsed once: the answer's line is not parsed first to find it.
        let text = self.list_json()?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("unreadable descriptions from the daemon: {e}")))
    }

    /// [`Client::list`] as the JSON text the daemon sent, to pass on
    /// unchanged.
    pub fn list_json(&mut self) -> Result<String, Error> {
        let mut out = Vec::new();
        self.write_list_json(&mut out)?;
        out.pop();
        String::from_utf8(out)
            .map_err(|e| Error::Invalid(format!("unreadable answer from the daemon: {e}")))
    }

    /// [`Client::list_json`] and a newline, written to `out` as it comes
    /// (`corral jlist`): a megabyte with 1000 apps goes through a buffer
    /// of 64 KiB, neither parsed nor held whole. An error once the list has
    /// begun leaves it cut short in `out`.
    pub fn write_list_json(&mut self, out: &mut dyn Write) -> Result<(), Error> {
        let id = self.send(Command::List)?;
        let Some(line) = pass_result(&mut self.reader, &crate::protocol::ok_head(&id), out)? else {
            self.warnings = Vec::new();
            return Ok(());
        };
        let line = String::from_utf8(line)
            .map_err(|e| Error::Invalid(format!("unreadable answer from the daemon: {e}")))?;
        let raw = self.parse_answer(&line)?;
        writeln!(out, "{}", raw.get()).map_err(Error::Io)
    }

    /// Send `signal` (a name like `"SIGUSR2"` or a number) to every process
    /// of the target (PM2 takes a name; any target works).
    pub fn send_signal_to_process_name(
        &mut self,
        signal: &str,
        target: impl Into<Target>,
    ) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::SendSignal {
            signal: json!(signal),
            target: target.into(),
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
        if let (Some(t), Some(o)) = (topic, packet.as_object_mut()) {
            o.insert("topic".into(), json!(t));
        }
        self.request(Command::SendData { packet }).map(|_| ())
    }

    /// Write `line` and a newline to app `pm_id`'s stdin, as PM2's
    /// `sendLineToStdin`. Refused when the app has no stdin pipe (`stdin:
    /// false`), is not running, or has not read what it was sent before.
    pub fn send_line_to_stdin(&mut self, pm_id: u32, line: &str) -> Result<(), Error> {
        self.request(Command::SendLine {
            pm_id,
            line: line.to_string(),
        })
        .map(|_| ())
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
        Ok(v.get("files").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Reopen every log file (after logrotate renamed them); how many.
    pub fn reload_logs(&mut self) -> Result<u64, Error> {
        let v = self.request(Command::ReloadLogs { rotate: false })?;
        Ok(v.get("files").and_then(Value::as_u64).unwrap_or(0))
    }

    /// The seed's `reloadLogs`: rename every app log file to the next free
    /// `<name>-<out|err>-<N>.log` and open a fresh one; how many files.
    pub fn reload_logs_rotate(&mut self) -> Result<u64, Error> {
        let v = self.request(Command::ReloadLogs { rotate: true })?;
        Ok(v.get("files").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Open the event bus on a connection of its own: every event, or the
    /// names in `events` (`"log:*"` is a prefix). [`Client::disconnect`]
    /// ends it.
    pub fn launch_bus(&mut self, events: Option<Vec<String>>) -> Result<Bus, Error> {
        let mut stream = UnixStream::connect(&self.paths.socket).map_err(Error::Io)?;
        let line = Request {
            id: json!(0),
            cmd: Command::Subscribe { events },
        }
        .to_line();
        stream.write_all(line.as_bytes()).map_err(Error::Io)?;
        let copy = stream.try_clone().map_err(Error::Io)?;
        let mut bus = Bus::new(stream);
        // The answer comes first; events may follow it in the same read,
        // and stay in the bus's buffer.
        if bus.read_line(Wait::Forever)?.is_none() {
            return Err(Error::Closed);
        }
        let resp: Response = serde_json::from_str(&bus.line)
            .map_err(|e| Error::Invalid(format!("unreadable answer from the daemon: {e}")))?;
        if let Some(e) = resp.error {
            return Err(refused(e));
        }
        self.buses.push(copy);
        Ok(bus)
    }

    /// Save every app — its options (the `env` keys given, never the
    /// inherited environment), name, pm_id, namespace and wanted state — to
    /// the daemon's dump file (`$DUMP_FILE_PATH` of the daemon, else
    /// `<home>/dump.json`), as PM2's `dump(force)`. An empty list replaces
    /// a dump that holds apps only with `force`; without it that is
    /// refused, naming the file and how many apps it keeps.
    pub fn dump(&mut self, force: bool) -> Result<Dumped, Error> {
        let v = self.request(Command::Dump { force })?;
        Ok(Dumped {
            path: PathBuf::from(v.get("path").and_then(Value::as_str).unwrap_or("")),
            count: v.get("count").and_then(Value::as_u64).unwrap_or(0),
        })
    }

    /// Bring back the apps of the daemon's dump file that are not in its
    /// list (what runs is left alone, so twice changes nothing); an app
    /// saved stopped comes back stopped. The apps it brought back.
    pub fn resurrect(&mut self) -> Result<Vec<Description>, Error> {
        self.descriptions(Command::Resurrect { apps: None })
    }

    /// [`Client::resurrect`] from a file read by this process: a dump of
    /// corral's, or PM2's own `dump.pm2` (its option fields mapped to
    /// corral's, a field corral cannot honour refused by name, PM2's
    /// runtime fields skipped). What the import has to say comes with the
    /// daemon's warnings in [`Client::warnings`].
    pub fn resurrect_from(&mut self, path: &Path) -> Result<Vec<Description>, Error> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("cannot read {label}: {e}")))?;
        let read = crate::dump::read(&text, &label).map_err(Error::Invalid)?;
        let apps = read
            .apps
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Invalid(format!("{label}: {e}")))?;
        let result = self.descriptions(Command::Resurrect { apps: Some(apps) });
        let mut warnings = read.warnings;
        warnings.append(&mut self.warnings);
        self.warnings = warnings;
        result
    }

    /// PM2's `startup(platform)`: write and enable the boot unit that
    /// starts this daemon's user's daemon at boot and resurrects its saved
    /// list, then save the list — what `corral startup [platform]
    /// [--dry-run]` does, run as such with this client's binary, home and
    /// socket, so the two cannot differ. `platform` as the command line
    /// takes it (`systemd`, `openrc`, `sysv`, `rcd`, `launchd` or PM2's
    /// names), `None` to detect it. With `dry_run` it writes and runs
    /// nothing and answers the unit's text; else what it printed. Without
    /// root, [`Error::Invalid`] carries the `sudo` command to run.
    pub fn startup(&mut self, platform: Option<&str>, dry_run: bool) -> Result<String, Error> {
        self.run_verb("startup", platform, dry_run)
    }

    /// PM2's `uninstallStartup`: disable and remove the boot unit, as
    /// `corral unstartup [platform] [--dry-run]` does (see
    /// [`Client::startup`]). The daemon and its apps are left as they are.
    pub fn unstartup(&mut self, platform: Option<&str>, dry_run: bool) -> Result<String, Error> {
        self.run_verb("unstartup", platform, dry_run)
    }

    /// Run `<binary> <verb> [platform] [--dry-run]` for this daemon; its
    /// standard output, or an error with everything it said.
    fn run_verb(&self, verb: &str, platform: Option<&str>, dry_run: bool) -> Result<String, Error> {
        let mut c = std::process::Command::new(&self.paths.binary);
        c.arg(verb);
        if let Some(p) = platform {
            if p.starts_with('-') {
                return Err(Error::Invalid(format!("{verb}: `{p}` is not a platform")));
            }
            c.arg(p);
        }
        if dry_run {
            c.arg("--dry-run");
        }
        let out = c
            .env("CORRAL_HOME", &self.paths.home)
            .env("CORRAL_SOCKET", &self.paths.socket)
            .env("CORRAL_BIN", &self.paths.binary)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                Error::Invalid(format!(
                    "cannot run {} {verb}: {e}",
                    self.paths.binary.display()
                ))
            })?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(said);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(Error::Invalid(
            format!("{}\n{}", said.trim(), err.trim())
                .trim()
                .to_string(),
        ))
    }

    /// Replace the daemon by the binary now on disk without stopping any
    /// app (`corral update`): the same pid, the apps and their output carry
    /// over. The answer comes from the new image: `{"updated": true, "pid",
    /// "version", "apps", "took_ms"}`; an error if the binary could not be
    /// run (the old daemon goes on).
    pub fn update_daemon(&mut self) -> Result<Value, Error> {
        self.request(Command::UpdateDaemon)
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

/// The apps of a config kept by `only`, with their paths made relative to
/// `dir`.
fn pick_apps(
    apps: Vec<Value>,
    dir: &Path,
    label: &str,
    only: &[String],
) -> Result<Vec<Value>, Error> {
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
                None => dir.to_path_buf(),
            };
            obj.insert("cwd".into(), json!(cwd.display().to_string()));
        }
        picked.push(app);
    }
    if picked.is_empty() {
        return Err(Error::Invalid(format!(
            "{label}: no app named {}",
            only.join(", ")
        )));
    }
    Ok(picked)
}

/// The names of the apps of a config (explicit, or derived from the
/// script as the daemon derives them), kept by `only`.
pub fn config_app_names(apps: &[Value], only: &[String]) -> Vec<String> {
    apps.iter()
        .filter_map(|app| match crate::options::parse_app(app) {
            Ok(p) => Some(p.spec.name),
            Err(_) => app.get("name").and_then(Value::as_str).map(str::to_string),
        })
        .filter(|n| only.is_empty() || only.contains(n))
        .collect()
}

/// New options for [`Client::update`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    /// App options laid over each app's (`{"watch": true}`,
    /// `{"max_memory_restart": "100M"}`...).
    pub options: Map<String, Value>,
    /// Use the `env_<name>` set of variables from now on.
    pub env_name: Option<String>,
    /// Replace the environment the apps inherited by this process's
    /// (PM2's `--update-env`); keys gone from it are gone from the apps.
    pub update_env: bool,
    /// Watching on if it was off, off if it was on (`restart --watch`).
    pub toggle_watch: bool,
    /// `options` are a config file's app: options that cannot change
    /// (`instances`, `exec_mode`...) are ignored rather than refused.
    pub from_config: bool,
}

/// What [`Client::dump`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dumped {
    /// The dump file.
    pub path: PathBuf,
    /// How many apps it holds.
    pub count: u64,
}

/// Whether `path` names a config file rather than a script, by its name as
/// PM2 decides: it ends in `.json`, `.json5`, `.yml`, `.yaml`, `.config.js`,
/// `.config.cjs` or `.config.mjs`, or it is an `ecosystem*.js` (`.cjs`,
/// `.mjs`).
pub fn is_config_file(path: &str) -> bool {
    config_file::kind_of(path).is_some()
}

/// The apps of a config file, unvalidated: JSON as PM2 reads it (comments,
/// trailing commas, unquoted keys), YAML, or JavaScript evaluated by `node`
/// (see [`is_config_file`]). Errors name the file, and the line for a
/// syntax error.
pub fn read_config(path: &Path) -> Result<Vec<Value>, Error> {
    let root = config_file::read(path).map_err(Error::Invalid)?;
    apps_of_config(root).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Most bytes of config text a caller should read (from stdin).
pub const MAX_CONFIG_TEXT: usize = config_file::MAX_CONFIG_SIZE;

/// The apps of config text read elsewhere (`corral start -` reads stdin):
/// JSON as PM2 reads it when it starts with `{` or `[`, else YAML; `label`
/// names it in errors.
pub fn read_config_text(text: &str, label: &str) -> Result<Vec<Value>, Error> {
    let root = config_file::parse_stdin(text, label).map_err(Error::Invalid)?;
    apps_of_config(root).map_err(|e| Error::Invalid(format!("{label}: {e}")))
}

fn daemon_command(paths: &Paths) -> std::process::Command {
    let mut c = std::process::Command::new(&paths.binary);
    c.arg("daemon")
        .env("CORRAL_HOME", &paths.home)
        .env("CORRAL_SOCKET", &paths.socket);
    c
}

fn launch_failed(paths: &Paths, e: io::Error) -> Error {
    let bare = paths.binary.components().count() == 1;
    Error::NoDaemon(if bare && e.kind() == io::ErrorKind::NotFound {
        format!(
            "cannot start the daemon: no {} on PATH (set CORRAL_BIN to the corral binary)",
            paths.binary.display()
        )
    } else {
        format!(
            "cannot run {} to start the daemon: {e}",
            paths.binary.display()
        )
    })
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
            Ok(n) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::NoDaemon(format!("waiting for the daemon: {e}"))),
        }
    }
    let line = String::from_utf8_lossy(&got);
    let line = line.lines().next().unwrap_or("").trim();
    Ok(line.strip_prefix("error: ").unwrap_or(line).to_string())
}

/// Where the first newline is in `buf`, found by the library's memchr:
/// a byte loop would be the costliest part of passing a megabyte on. A
/// character cut at the end of `buf` cannot hide one.
fn find_newline(buf: &[u8]) -> Option<usize> {
    match std::str::from_utf8(buf) {
        Ok(text) => text.find('\n'),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(buf.get(..e.valid_up_to())?)
            .ok()?
            .find('\n'),
        // Not UTF-8: the slow way.
        Err(_) => buf.iter().position(|&b| b == b'\n'),
    }
}

/// Pass on the result of the answer line `reader` gives, if that line is
/// `head`, the result and `}` (as the daemon writes it without warnings,
/// `protocol::ok_line`), to `out` as it comes, with a newline: neither
/// parsed nor held whole. `Some(line)`: the line is of another shape
/// (an error, warnings), read whole for the caller to parse; nothing was
/// written. An error once the result has begun leaves it cut short. Only
/// for answers no daemon gives warnings with (`list`): daemons before
/// `ok_line` put warnings first wrote them after the result, which would
/// be passed on with it.
fn pass_result(
    reader: &mut impl BufRead,
    head: &str,
    out: &mut dyn Write,
) -> Result<Option<Vec<u8>>, Error> {
    let mut start = Vec::with_capacity(head.len());
    while start.len() < head.len() && !start.ends_with(b"\n") {
        let buf = reader.fill_buf().map_err(Error::Io)?;
        if buf.is_empty() {
            break;
        }
        let want = buf.iter().take(head.len() - start.len());
        let take = want
            .clone()
            .position(|&b| b == b'\n')
            .map_or(want.count(), |i| i + 1);
        start.extend_from_slice(buf.get(..take).unwrap_or_default());
        reader.consume(take);
    }
    if start != head.as_bytes() {
        if !start.ends_with(b"\n") {
            reader.read_until(b'\n', &mut start).map_err(Error::Io)?;
        }
        return match start.is_empty() {
            true => Err(Error::Closed),
            false => Ok(Some(start)),
        };
    }
    // The rest of the line but its last byte, the `}` of the line's
    // object: each chunk's last byte is held until the next one comes.
    let mut held: Option<u8> = None;
    loop {
        let buf = reader.fill_buf().map_err(Error::Io)?;
        if buf.is_empty() {
            return Err(Error::Closed);
        }
        let end = find_newline(buf);
        let chunk = buf.get(..end.unwrap_or(buf.len())).unwrap_or_default();
        if let Some((last, body)) = chunk.split_last() {
            if let Some(h) = held.replace(*last) {
                out.write_all(&[h]).map_err(Error::Io)?;
            }
            out.write_all(body).map_err(Error::Io)?;
        }
        let used = chunk.len() + usize::from(end.is_some());
        reader.consume(used);
        if end.is_some() {
            return match held {
                Some(b'}') => out.write_all(b"\n").map(|()| None).map_err(Error::Io),
                _ => Err(Error::Invalid(
                    "unreadable answer from the daemon: a line cut short".into(),
                )),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::options::parse_app;
    use crate::protocol::ProcessRef;

    #[test]
    fn typed_options_are_sent_under_their_pm2_keys() {
        let cases: &[(StartOptions, Value)] = &[
            (StartOptions::script("a.js"), json!({"script": "a.js"})),
            (
                StartOptions {
                    name: Some("api".into()),
                    exec_mode: Some(ExecMode::Cluster),
                    instances: Some(4),
                    max_memory_restart: Some(100 * 1024 * 1024),
                    ..StartOptions::script("api.js")
                },
                json!({"script": "api.js", "name": "api", "exec_mode": "cluster",
                       "instances": 4, "max_memory_restart": 104857600}),
            ),
            (
                StartOptions {
                    exec_mode: Some(ExecMode::Fork),
                    instances: Some(-1),
                    ..StartOptions::script("a")
                },
                json!({"script": "a", "exec_mode": "fork", "instances": -1}),
            ),
            (
                StartOptions {
                    instances: Some(2),
                    extra: Map::from_iter([
                        ("watch".to_string(), json!(true)),
                        ("instances".to_string(), json!("max")),
                    ]),
                    ..StartOptions::script("a")
                },
                json!({"script": "a", "instances": "max", "watch": true}),
            ),
        ];
        for (opts, want) in cases {
            assert_eq!(&serde_json::to_value(opts).unwrap(), want, "{opts:?}");
        }
    }

    #[test]
    fn the_daemon_reads_the_typed_options() {
        let opts = StartOptions {
            exec_mode: Some(ExecMode::Cluster),
            instances: Some(4),
            max_memory_restart: Some(100 * 1024 * 1024),
            ..StartOptions::script("api.js")
        };
        let spec = parse_app(&serde_json::to_value(&opts).unwrap())
            .unwrap()
            .spec;
        assert_eq!(spec.rare().instances, 4);
        assert_eq!(spec.rare().cluster, Some(true));
        assert_eq!(spec.rare().max_memory_restart, Some(100 * 1024 * 1024));
        // The same as PM2's spelling of the seed's options.
        let pm2 = parse_app(&json!({"script": "api.js", "exec_mode": "cluster",
                                    "instances": 4, "max_memory_restart": "100M"}))
        .unwrap()
        .spec;
        assert_eq!(spec, pm2);
        let fork = StartOptions {
            exec_mode: Some(ExecMode::Fork),
            instances: Some(0),
            ..StartOptions::script("a")
        };
        let spec = parse_app(&serde_json::to_value(&fork).unwrap())
            .unwrap()
            .spec;
        assert_eq!(
            (spec.rare().cluster, spec.rare().instances),
            (Some(false), 0)
        );
    }

    fn event_line(kind: &str, pm_id: u32) -> String {
        format!(
            "{{\"event\":\"process:event\",\"data\":{{\"event\":\"{kind}\",\"at\":1,\
             \"process\":{{\"name\":\"a\",\"pm_id\":{pm_id},\"pid\":9,\"namespace\":\"default\"}}}}}}\n"
        )
    }

    fn kind_of(e: Option<Event>) -> Option<(String, u32)> {
        match e {
            Some(Event::Process { kind, process, .. }) => Some((kind, process.pm_id)),
            other => panic!("not a process event: {other:?}"),
        }
    }

    #[test]
    fn newlines_are_found_in_any_bytes() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"", None),
            (b"abc", None),
            (b"\n", Some(0)),
            (b"ab\ncd\n", Some(2)),
            ("é✓\n".as_bytes(), Some(5)),
            // A character cut at the end.
            (&"a✓".as_bytes()[..3], None),
            (&"\n✓".as_bytes()[..3], Some(0)),
            // Not UTF-8 at all.
            (b"\xff\xfe\n", Some(2)),
            (b"a\xc3(\n", Some(3)),
        ];
        for (buf, want) in cases {
            assert_eq!(find_newline(buf), *want, "{buf:?}");
        }
    }

    #[test]
    fn a_result_is_passed_on_as_it_comes() {
        let head = crate::protocol::ok_head(&json!(5));
        let list = r#"[{"name":"a}\"","env":{"K":"}\n"}},{}]"#;
        // (answer, what is written, the line left to parse or the error)
        type Want = Result<Option<&'static str>, &'static str>;
        let fast = format!("{head}{list}}}\n");
        let other = format!(r#"{{"id":5,"ok":true,"warnings":["w"],"result":{list}}}"#) + "\n";
        let cases: Vec<(String, String, Want)> = vec![
            (fast.clone(), format!("{list}\n"), Ok(None)),
            (format!("{head}[]}}\n"), "[]\n".into(), Ok(None)),
            // What follows the line stays unread.
            (
                fast.clone() + "{\"next\":1}\n",
                format!("{list}\n"),
                Ok(None),
            ),
            (other.clone(), String::new(), Ok(Some("other"))),
            (
                "{\"id\":5,\"ok\":false}\n".into(),
                String::new(),
                Ok(Some("short")),
            ),
            ("\n".into(), String::new(), Ok(Some("empty"))),
            (String::new(), String::new(), Err("closed")),
            (head.clone(), String::new(), Err("closed")),
            (format!("{head}[1,2"), "[1,".into(), Err("closed")),
            (format!("{head}[1,2]\n"), "[1,2".into(), Err("invalid")),
        ];
        // Every way the bytes may come in pieces.
        for cap in [1, 2, 3, 7, 30, 64 * 1024] {
            for (answer, written, want) in &cases {
                let mut reader = BufReader::with_capacity(cap, answer.as_bytes());
                let mut out = Vec::new();
                let got = pass_result(&mut reader, &head, &mut out);
                let what = format!("{answer:?} in pieces of {cap}");
                assert_eq!(String::from_utf8(out).unwrap(), *written, "{what}");
                match (got, want) {
                    (Ok(None), Ok(None)) => {}
                    (Ok(Some(line)), Ok(Some(kind))) => {
                        let whole = match *kind {
                            "other" => other.clone(),
                            "short" => "{\"id\":5,\"ok\":false}\n".into(),
                            _ => "\n".into(),
                        };
                        assert_eq!(String::from_utf8(line).unwrap(), whole, "{what}");
                    }
                    (Err(Error::Closed), Err("closed")) => {}
                    (Err(Error::Invalid(_)), Err("invalid")) => {}
                    (got, want) => panic!("{what}: {got:?}, want {want:?}"),
                }
                let mut rest = String::new();
                reader.read_to_string(&mut rest).unwrap();
                let left = if answer.ends_with("{\"next\":1}\n") {
                    "{\"next\":1}\n"
                } else {
                    ""
                };
                assert_eq!(rest, left, "{what}");
            }
        }
    }

    #[test]
    fn the_bus_reads_with_a_timeout_and_without_blocking() {
        let (daemon, ours) = UnixStream::pair().unwrap();
        let mut daemon = daemon;
        let mut bus = Bus::new(ours);
        // Nothing there: no wait, or the whole timeout.
        assert!(bus.try_next().unwrap().is_none());
        let t = Instant::now();
        assert!(
            bus.next_timeout(Duration::from_millis(50))
                .unwrap()
                .is_none()
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
        // Two events and half of a third in one write: both whole ones,
        // then nothing until the rest comes.
        let third = event_line("exit", 3);
        let (head, tail) = third.split_at(20);
        let two = format!(
            "{}{}{head}",
            event_line("start", 1),
            event_line("online", 2)
        );
        daemon.write_all(two.as_bytes()).unwrap();
        let want = |k: &str, id| Some((k.to_string(), id));
        assert_eq!(kind_of(bus.next_timeout(SOON).unwrap()), want("start", 1));
        assert_eq!(kind_of(bus.try_next().unwrap()), want("online", 2));
        assert!(bus.try_next().unwrap().is_none());
        daemon.write_all(tail.as_bytes()).unwrap();
        assert_eq!(kind_of(bus.next_timeout(SOON).unwrap()), want("exit", 3));
        // A line that is not an event is an error, and the bus goes on.
        daemon.write_all(b"{\n").unwrap();
        daemon.write_all(event_line("stop", 4).as_bytes()).unwrap();
        assert!(matches!(bus.next_timeout(SOON), Err(Error::Invalid(_))));
        assert_eq!(kind_of(bus.next_timeout(SOON).unwrap()), want("stop", 4));
        // The iterator and the raw lines read the same stream.
        daemon
            .write_all(event_line("delete", 5).as_bytes())
            .unwrap();
        daemon.write_all(event_line("start", 6).as_bytes()).unwrap();
        let Some(Ok(Event::Process { process, .. })) = bus.next() else {
            panic!("no event from the iterator");
        };
        assert_eq!(
            process,
            ProcessRef {
                name: "a".into(),
                pm_id: 5,
                pid: 9,
                namespace: "default".into()
            }
        );
        assert_eq!(
            bus.next_line().unwrap().unwrap(),
            event_line("start", 6).trim_end()
        );
        // The daemon goes: what it sent is still read, then Closed.
        daemon
            .write_all(event_line("online", 7).as_bytes())
            .unwrap();
        drop(daemon);
        assert_eq!(kind_of(bus.try_next().unwrap()), want("online", 7));
        assert!(matches!(bus.try_next(), Err(Error::Closed)));
        assert!(matches!(bus.next_timeout(SOON), Err(Error::Closed)));
        assert!(bus.next().is_none());
    }

    /// The patience of a read that should succeed at once.
    const SOON: Duration = Duration::from_secs(10);
}
