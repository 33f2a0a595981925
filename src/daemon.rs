//! The daemon at a glance: one single-threaded mio loop (STYLE 1) that owns
//! the control socket, the signal pipe, the apps' pipes, channels and exec
//! status pipes, the process table and the deadline set. It sleeps until an
//! fd is ready or the first deadline is due. This file holds its state, its
//! start-up and `serve`, the order of one wake; the work is in the modules
//! below, each named for what it owns:
//!
//! | module | owns |
//! |---|---|
//! | `table` | the process table, its one door, the pid index |
//! | `supervise` | carrying out the machines' effects; reaping; exec status |
//! | `pidfiles` | the apps' pid files, and spares of the home's kept for reuse |
//! | `links` | IPC channels, Node's cluster protocol, sd_notify |
//! | `relay` | output pipes → log files and `log:*` events; the bus |
//! | `conn` | client connections: accept, framing, output buffers |
//! | `requests` | what clients ask; pending answers; rolling reloads |
//! | `schedule` | deadlines, sampling, cron, watch |
//! | `setup` | start-up: home, lock, socket, signals, poller |
//! | `describe` | a process → PM2's description |
//! | `persist` | the dump file: `dump`, `resurrect`, the save on SIGTERM |
//! | `runtime` | `corral runtime`: the console, when to exit |
//! | `recover` | the journal's file, crash recovery |
//! | `handover` | `corral update`: the daemon replaced in place |

mod conn;
mod describe;
mod handover;
mod links;
mod persist;
mod pidfiles;
mod recover;
mod relay;
mod requests;
mod runtime;
mod schedule;
mod setup;
mod supervise;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdStream;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::app::Home;
use crate::cluster::Cluster;
use crate::listen;
use crate::logs::LogFile;
use crate::notify::Notify;
use crate::options;
use crate::poll::Sampler;
use crate::protocol::{ErrorCode, WireError};
use crate::reaper;
use crate::rotate::Rotation;
use crate::spawn::{SpawnError, Step};
use crate::spawner::Spawner;
use crate::startup;
use crate::state::Input;
use crate::sys;
use crate::timers::Timers;
use crate::vecmap::VecMap;
use crate::watch::Watcher;

use conn::Conn;
use relay::Pipe;
use requests::{Pending, PendingKind, Reload};
use runtime::{CONSOLE_ERR, CONSOLE_OUT, Console};
pub use runtime::{ExitWith, Runtime};
use supervise::Exec;
use table::Table;

/// `ignore_watch` when none is given (the log directory is always ignored).
const DEFAULT_IGNORE_WATCH: &[&str] = &["node_modules", ".git"];

/// The signals turned into bytes on the signal pipe.
const CAUGHT: [i32; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR2,
];

/// Readiness events taken from the poller per wake (more wait for the
/// next one, in order).
const EVENTS_PER_WAKE: usize = 1024;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const LIFELINE: Token = Token(2);
const WATCH: Token = Token(3);
const NOTIFY: Token = Token(4);
// 5 and 6: the runtime's console (`runtime.rs`).
const FIRST_DYNAMIC: usize = 7;
/// The "connection" of a request that came as a signal: nobody to answer.
const NOBODY: Token = Token(usize::MAX);

/// How long (ms) after a fork the pid files and the journal may wait for
/// the children's exec.
const PUT_OFF_MAX: u64 = 20;

/// How the daemon was started.
#[derive(Debug)]
pub struct Config {
    pub home: PathBuf,
    pub socket: PathBuf,
    /// Write `ready` (or `error: <why>`) on this fd once serving.
    pub ready: Option<File>,
    /// Point stdin at /dev/null and stdout/stderr at the daemon's log once
    /// serving (a daemon in the background).
    pub detach_stdio: bool,
    /// Stop every app and exit when stdin reaches end of file (the caller of
    /// `Client::connect_no_daemon` is gone).
    pub lifeline: bool,
    /// Time between two samples of the apps with `max_memory_restart` (ms).
    pub sample_interval: u64,
    /// Rotation for apps that set no `max_log_size`, and for the daemon's
    /// own log (`--max-log-size`; none: never).
    pub max_log_size: Option<u64>,
    /// Rotated files kept for apps that set no `log_retain` (`--log-retain`).
    pub log_retain: u32,
    /// Users whose connections are obeyed besides the daemon's own
    /// (`--allow-uid`).
    pub allow_uid: Vec<u32>,
    /// Groups whose members' connections are obeyed (`--allow-gid`): the
    /// peer's effective gid, as the kernel reports it on the socket.
    pub allow_gid: Vec<u32>,
    /// Run as `corral runtime`: start these apps, relay their output to
    /// stdout/stderr, exit when none is left to run.
    pub runtime: Option<Runtime>,
    /// Take over from a previous image of the daemon (`corral update`):
    /// the hand-over file it wrote.
    pub handover: Option<PathBuf>,
}

/// What went wrong inside the daemon while acting for an app (spawning,
/// opening, registering); a request turns it into a `WireError`, an event
/// or the daemon's log into a sentence.
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    code: ErrorCode,
    message: String,
}

impl Fault {
    /// The system refused something the daemon needed.
    fn system(message: impl Into<String>) -> Fault {
        Fault {
            code: ErrorCode::Internal,
            message: message.into(),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<SpawnError> for Fault {
    /// The program cannot be run, or an option (cwd, uid, gid) cannot be
    /// applied.
    fn from(e: SpawnError) -> Fault {
        let code = match e.step {
            Step::Exec => ErrorCode::ScriptNotFound,
            Step::Chdir | Step::Groups | Step::Gid | Step::Uid => ErrorCode::InvalidOption,
            Step::Setsid | Step::Dup => ErrorCode::Internal,
        };
        Fault {
            code,
            message: e.to_string(),
        }
    }
}

impl From<WireError> for Fault {
    fn from(e: WireError) -> Fault {
        Fault {
            code: e.code,
            message: e.message,
        }
    }
}

impl From<Fault> for WireError {
    fn from(f: Fault) -> WireError {
        WireError::new(f.code, f.message)
    }
}

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// An app's own deadline (its restart delay).
    App(u32),
    /// A deadline of one of an app's processes (kill timeout, readiness).
    Proc(u32, i32),
    Cron(u32),
    Watch(u32),
    /// The next /proc sample.
    Sample,
    /// A client connection's deadline (a stalled line, an idle reserve).
    Conn(Token),
    /// Accept again after running out of file descriptors.
    Accept,
    /// The next `WATCHDOG=1` to the service manager.
    Watchdog,
    /// The next look at the processes of a dead daemon being stopped.
    Orphans,
    /// The latest the pid files and the journal wait for the children's
    /// exec (`PUT_OFF_MAX`).
    PutOff,
    /// Give freed memory back (`TRIM_AFTER`).
    Trim,
}

/// How long after the wake that freed memory it is given back to the
/// kernel: a burst of restarts or requests trims once, after it.
const TRIM_AFTER: u64 = 500;

/// Start the daemon and serve until told to stop; the exit status.
pub fn run(mut cfg: Config) -> i32 {
    // First, while the process is small: the spawner is a copy of it.
    let spawner = Spawner::start();
    // Read before the inherited fds are marked: it names them.
    let handed = match cfg.handover.as_deref().map(handover::read_state) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            eprintln!("corral: {e}");
            return 1;
        }
    };
    sys::mark_inherited_fds_cloexec();
    sys::tune_allocator();
    match Daemon::new(&cfg, handed.as_ref()) {
        Ok(mut d) => {
            d.spawner = spawner;
            if let Some(mut f) = cfg.ready.take() {
                let _ = f.write_all(b"ready\n");
            }
            if cfg.detach_stdio {
                // Under a lifeline, stdin is the lifeline and stays.
                if let Err(e) = sys::redirect_stdio(&cfg.home.join("corral.log"), !cfg.lifeline) {
                    d.log(&format!("cannot detach from the terminal: {e}"));
                }
            }
            match handed {
                Some(state) => d.adopt(state),
                None => {
                    d.log(&format!(
                        "daemon {} started (pid {}, home {})",
                        env!("CARGO_PKG_VERSION"),
                        std::process::id(),
                        cfg.home.display()
                    ));
                    d.recover();
                }
            }
            // `corral runtime`: its apps start once the daemon serves.
            if let Some(rt) = cfg.runtime.take()
                && let Err(e) = d.start_runtime(rt)
            {
                eprintln!("corral: {}", e.message);
                d.cleanup();
                return 1;
            }
            // Under systemd (`Type=notify`): serving now.
            d.tell_systemd("READY=1");
            if let Some(every) = d.watchdog {
                d.timers.arm(every, Timer::Watchdog);
            }
            let code = d.serve();
            d.cleanup();
            code
        }
        Err(e) => {
            match cfg.ready.take() {
                Some(mut f) => {
                    let _ = writeln!(f, "error: {e}");
                }
                None => eprintln!("corral: {e}"),
            }
            1
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn internal(m: &str) -> WireError {
    WireError::new(ErrorCode::Internal, m)
}

/// Whose `listen` sockets these are: the instances of one name in one
/// namespace share them.
fn listen_key(spec: &options::AppSpec) -> String {
    format!("{}/{}", spec.namespace, spec.name)
}

struct Daemon {
    poll: Poll,
    home: Home,
    socket: PathBuf,
    listener: UnixListener,
    signals: UnixStream,
    _lock: Flock<File>,
    pid_file: PathBuf,
    log_file: Option<LogFile>,
    table: Table,
    conns: HashMap<Token, Conn>,
    /// Out of file descriptors: not accepting until `Timer::Accept`.
    accept_paused: bool,
    /// Accepting failed and has not succeeded since (logged once).
    accept_failing: bool,
    pipes: HashMap<Token, Pipe>,
    /// Output pipes with data left after their share of a wake.
    busy_pipes: Vec<Token>,
    /// Children to reap: a SIGCHLD came, or a wake's share of exits left
    /// some (`wait4` looks at every child the daemon has: with 1000 apps,
    /// one call per wake was the most of a wake that had nothing to reap).
    reap_due: bool,
    /// Channel tokens → (pm_id, pid).
    channels: VecMap<Token, (u32, i32)>,
    /// Exec status pipes being watched.
    execs: HashMap<Token, Exec>,
    /// What children cloned into the daemon's memory read, kept after
    /// they said their exec failed until they are reaped
    /// (`spawn::spawn_shared`).
    held: Vec<crate::spawn::Held>,
    /// `corral runtime`'s console and exit rules.
    console: Option<Console>,
    next_token: usize,
    timers: Timers<Timer>,
    sampler: Sampler,
    sample_interval: u64,
    /// The deadline of the next sample, while any running app has
    /// `max_memory_restart`.
    sample_at: Option<u64>,
    /// Half of systemd's `WATCHDOG_USEC` (ms): how often the loop says it
    /// is alive, when the service manager asks.
    watchdog: Option<u64>,
    /// inotify, once an app watches files.
    watcher: Option<Watcher>,
    /// The sd_notify socket, when its path fits in a socket address.
    notify: Option<Notify>,
    /// The `listen` sockets of each app (`listen_key`), shared by its
    /// instances and kept across restarts and reloads.
    listeners: HashMap<String, Vec<(listen::Addr, OwnedFd)>>,
    /// Node cluster mode: the listening sockets workers share.
    cluster: Cluster,
    next_worker: u32,
    reloads: Vec<Reload>,
    /// How many connections subscribed to the bus (publishing is free
    /// without any).
    subscribers: usize,
    pending: Vec<Pending>,
    clock: Instant,
    started: Instant,
    stopping_all: bool,
    exit_now: bool,
    /// This boot's id, for the journal.
    boot_id: String,
    /// cgroup v2 where it is there and writable: one cgroup per app process.
    cgroups: Option<crate::cgroup::Cgroups>,
    /// The cgroup of each app process that has one.
    proc_cgroups: crate::cgroup::ByPid,
    /// Processes of a dead daemon being stopped (crash recovery).
    orphans: Vec<recover::Orphan>,
    /// Return freed heap to the kernel at the end of this wake.
    trim: bool,
    /// The process whose cgroup was just read empty (`group_alive`), so
    /// that its release does not read it again.
    emptied: Option<i32>,
    /// When the trim asked for is due (`Timer::Trim`).
    trim_at: Option<u64>,
    /// The buffer output pipes are read into, kept until the next trim.
    scratch: Vec<u8>,
    /// Pid files of processes that exited in this wake.
    stale_pid_files: Vec<(u32, PathBuf, Option<sys::FsUser>)>,
    /// Apps whose main process started: their pid file is due.
    pid_files_due: Vec<u32>,
    /// Removed pid files of `pids/`, kept for the next ones.
    spares: pidfiles::Spares,
    /// A child was forked in this wake.
    forked: bool,
    /// Spawns whose spawner answers are not read yet, in a bulk start
    /// (`Daemon::begin_batch`); None outside one.
    batch: Option<std::collections::VecDeque<supervise::Begun>>,
    /// The pid files and the journal wait for the children's exec until
    /// this deadline at the latest (`Timer::PutOff`).
    put_off: Option<u64>,
    /// A hash of the journal last written (an identical one is not
    /// written again).
    journal_hash: Option<u64>,
    root: bool,
    /// `--max-log-size` and `--log-retain`.
    log_defaults: (Option<u64>, u32),
    /// Stdout and stderr point at the daemon's log: after it rotates they
    /// are pointed at the new file.
    detached: bool,
    allow_uid: Vec<u32>,
    allow_gid: Vec<u32>,
    /// Under `connect_no_daemon` (stdin is the lifeline).
    lifeline: bool,
    /// `corral update` asked on this connection (with the wall clock
    /// then): hand over at the end of the wake.
    update_to: Option<(Token, Value, u64)>,
    /// The process that forks the apps' processes of a bulk start
    /// (`crate::spawner`); None where there is none, or it is gone: the
    /// daemon makes them.
    spawner: Option<Spawner>,
}

impl Daemon {
    /// Tell the service manager that started the daemon (`NOTIFY_SOCKET`,
    /// systemd's `Type=notify`) how it is; nothing without one.
    fn tell_systemd(&mut self, state: &str) {
        if let Err(e) = startup::sd_notify(state) {
            self.log(&format!("cannot notify the service manager ({state}): {e}"));
        }
    }

    /// One line in the daemon's own log.
    fn log(&mut self, msg: &str) {
        if let Some(c) = self.console.as_mut() {
            c.say(msg);
        }
        if let Some(f) = self.log_file.as_mut() {
            let before = f.rotations();
            let _ = f.write_chunk(format!("{msg}\n").as_bytes(), wall_ms() as i64);
            if f.rotations() != before && self.detached {
                // What the daemon's stdout/stderr get goes to the new file.
                let _ = sys::redirect_stdio(&self.home.dir.join("corral.log"), false);
            }
        }
    }

    /// Monotonic milliseconds since the daemon started.
    fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// A fresh token: never reused, so an event for a closed fd cannot
    /// reach a new one.
    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    /// The loop. Order in each wake: exits first (reap, then act on them),
    /// then exec statuses, app output and channels, then requests, then due
    /// deadlines — so a recycled pid is never signalled, the log has an
    /// app's last words before anything reacts to its death, and a request
    /// sees the latest state. Then reloads move on and parked requests
    /// whose apps settled are answered.
    fn serve(&mut self) -> i32 {
        let mut events = Events::with_capacity(EVENTS_PER_WAKE);
        loop {
            let timeout = match self.busy_pipes.is_empty() && !self.reap_due {
                true => self.timers.timeout(self.now()),
                // Output left unread or exits left to reap: look at the
                // other fds, then come back.
                false => Some(Duration::ZERO),
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != ErrorKind::Interrupted
            {
                self.log(&format!("poll failed: {e}"));
                return 1;
            }
            let mut conns = Vec::new();
            let mut pipes = std::mem::take(&mut self.busy_pipes);
            let mut chans = Vec::new();
            let mut execs = Vec::new();
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.drain_signals(),
                    LISTENER => self.accept_all(),
                    LIFELINE => self.read_lifeline(),
                    WATCH => self.read_watch(),
                    NOTIFY => self.read_notify(),
                    t @ (CONSOLE_OUT | CONSOLE_ERR) => {
                        if let Some(c) = self.console.as_mut() {
                            c.writable(t);
                        }
                    }
                    t if self.execs.contains_key(&t) => execs.push(t),
                    t if self.channels.contains_key(t) => chans.push(t),
                    t if self.pipes.contains_key(&t) => {
                        if !pipes.contains(&t) {
                            pipes.push(t);
                        }
                    }
                    t => conns.push(t),
                }
            }
            self.forked = false;
            self.handle_exits();
            for t in execs {
                self.read_exec(t);
            }
            for t in pipes {
                self.read_pipe(t);
            }
            for t in chans {
                self.service_channel(t);
            }
            for t in conns {
                self.service_conn(t);
            }
            self.fire_timers();
            self.arm_sampling();
            // After a fork, the pid files and the journal wait for the
            // children's exec (`bookkeeping_can_wait`).
            let put_off = self.bookkeeping_can_wait();
            if !put_off {
                self.write_due_pid_files();
            }
            // Before answers: a stop is answered once its pid file is gone.
            self.remove_stale_pid_files();
            self.drive_reloads();
            self.finish_pending();
            if self.update_to.is_some() {
                self.write_due_pid_files();
                self.hand_over();
            }
            if self.exit_now {
                return 0;
            }
            if !put_off && let Some(at) = self.put_off.take() {
                self.timers.disarm(at, Timer::PutOff);
            }
            // What changed in this wake, on disk once; its text is freed
            // at once.
            if !put_off && self.table.take_dirty() {
                self.write_journal(false);
                self.trim = true;
            }
            // Freed memory goes back once things are quiet, not after each
            // wake of a burst (the next wake would fault it in again).
            if std::mem::take(&mut self.trim) && self.trim_at.is_none() {
                let at = self.now() + TRIM_AFTER;
                self.timers.arm(at, Timer::Trim);
                self.trim_at = Some(at);
            }
            if let Some(code) = self.runtime_done() {
                self.log(&format!("no app left to run: exiting with status {code}"));
                return code;
            }
        }
    }

    fn drain_signals(&mut self) {
        let mut buf = [0u8; 64];
        let mut came = Vec::new();
        loop {
            match self.signals.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => came.extend(buf.iter().take(n).map(|&b| i32::from(b))),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        came.sort_unstable();
        came.dedup();
        for sig in came {
            match sig {
                // Reaped in this wake (`handle_exits`).
                libc::SIGCHLD => self.reap_due = true,
                libc::SIGTERM | libc::SIGINT if self.stopping_all && self.console.is_some() => {
                    self.log("second stop signal: SIGKILL to every app");
                    for id in self.table.ids() {
                        self.step(id, Input::Kill);
                    }
                }
                libc::SIGTERM | libc::SIGINT => {
                    let name = options::signal_name(sig);
                    // Saved before the stops make every app `stopped`;
                    // a second signal finds the list already stopping. Not
                    // in a container's runtime (PM2's runtime does not).
                    if !self.stopping_all && self.console.is_none() {
                        self.dump_on_signal(&name);
                    }
                    self.log(&format!("signal {name}: stopping every app"));
                    self.stop_everything(NOBODY, Value::Null);
                }
                libc::SIGHUP if self.console.is_some() => {
                    self.log("SIGHUP: reloading every app");
                    self.reload_all();
                }
                libc::SIGHUP => self.log("SIGHUP ignored"),
                libc::SIGUSR2 => {
                    let n = self.reopen_logs();
                    self.log(&format!("SIGUSR2: reopened {n} log files"));
                }
                _ => {}
            }
        }
    }

    /// Stdin of a daemon under `connect_no_daemon`: its end means the
    /// caller died.
    fn read_lifeline(&mut self) {
        let mut buf = [0u8; 256];
        loop {
            match sys::read(0, &mut buf) {
                Ok(n) if n > 0 => continue,
                Err(Errno::EAGAIN) => break,
                _ => {
                    let _ = self.poll.registry().deregister(&mut SourceFd(&0));
                    self.log("the caller of connect_no_daemon is gone: stopping every app");
                    self.stop_everything(NOBODY, Value::Null);
                    break;
                }
            }
        }
    }

    /// Stop every app, then exit (SIGTERM, lifeline, kill_daemon); `conn`
    /// and `id` get the answer.
    fn stop_everything(&mut self, conn: Token, id: Value) {
        let ids = self.table.ids();
        // Every app in the list, as PM2 counts them (stopped ones too).
        let stopped = ids.len();
        self.pending.push(Pending {
            conn,
            id,
            kind: PendingKind::KillDaemon,
            crashes: Vec::new(),
            pm_ids: ids.clone(),
            gone: BTreeMap::new(),
            stopped,
            warnings: Vec::new(),
        });
        self.park(conn);
        if self.stopping_all {
            return;
        }
        self.stopping_all = true;
        self.tell_systemd("STOPPING=1");
        for id in ids {
            self.step(id, Input::Stop);
        }
    }

    fn cleanup(&mut self) {
        self.log("daemon exiting");
        if let Some(c) = &self.cgroups {
            c.remove_all();
        }
        // Stopped on request: nothing to recover. Otherwise (the poller
        // failed) the apps may run on, and the next daemon takes them back.
        self.write_journal(self.exit_now);
        if let Some(c) = self.console.as_mut() {
            c.drain();
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.pid_file);
        self.spares.remove_all();
    }
}
