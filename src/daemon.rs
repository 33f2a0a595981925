//! The daemon: one single-threaded mio loop (STYLE 1) that owns the control
//! socket, the signal pipe, every app's stdout/stderr pipes, the process
//! table and the deadline set. It sleeps until an fd is ready or the first
//! deadline is due.
//!
//! Order in each wake: exits first (reap, then act on them), then app
//! output, then requests, then due timers — so a recycled pid is never
//! signalled and a request sees the latest state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Pid, pipe2};
use serde_json::{Map, Value, json};

use crate::app::{App, Home, Io, Slot};
use crate::bus::{self, Filter, Subscription};
use crate::channel::{Channel, Message};
use crate::cluster::{Cluster, WorkerEvent};
use crate::cron::Cron;
use crate::listen;
use crate::logs::{LogFile, is_null};
use crate::notify::Notify;
use crate::options::Watch;
use crate::options::{self, instance_count, parse_app};
use crate::poll::Sampler;
use crate::procfs;
use crate::protocol::{
    self, Action, Command, Description, ErrorCode, Monit, PROTOCOL, Pm2Env, Request, StartArgs,
    Target, WireError,
};
use crate::reaper;
use crate::spawn::{SpawnError, Step, spawn_child};
use crate::state::{Effect, Exit, Input, Machine, Policy, State, Wanted};
use crate::watch::{Ignore, Watcher};

/// Most connections served at once; more are refused.
const MAX_CONNS: usize = 256;
/// `ignore_watch` when none is given (the log directory is always ignored).
const DEFAULT_IGNORE_WATCH: &[&str] = &["node_modules", ".git"];
/// About the size of one description as JSON, to size buffers.
const DESCRIPTION_BYTES: usize = 1024;
/// Reads of one output pipe in one wake, before the others get a turn.
const READS_PER_WAKE: usize = 16;
/// Bytes read from a pipe or socket per call.
const READ_CHUNK: usize = 64 * 1024;

/// The signals turned into bytes on the signal pipe.
const CAUGHT: [i32; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR2,
];

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const LIFELINE: Token = Token(2);
const WATCH: Token = Token(3);
const NOTIFY: Token = Token(4);
const FIRST_DYNAMIC: usize = 5;
/// The "connection" of a request that came as a signal: nobody to answer.
const NOBODY: Token = Token(usize::MAX);

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
    /// Time between two samples of the apps' memory and CPU (ms).
    pub sample_interval: u64,
}

/// One managed app.
struct Proc {
    app: App,
    m: Machine,
    created_at: u64,
    pm_uptime: u64,
    out: LogFile,
    err: LogFile,
    /// Memory and CPU of the process group at the last sample.
    monit: Monit,
    /// Parsed `cron_restart`, and the deadline of its next firing.
    cron: Option<Cron>,
    cron_at: Option<u64>,
    /// The epoch second of the firing `cron_at` stands for.
    cron_fired: Option<i64>,
    /// Restart at this deadline: files changed (`watch_delay` debounce).
    watch_at: Option<u64>,
    /// The current process's IPC channel.
    channel: Option<Link>,
    /// A reload's replacement, started beside the current process.
    candidate: Option<Candidate>,
    /// Why the last replacement failed.
    candidate_failure: Option<String>,
    /// Why the daemon restarts the app (memory, cron, watch), for the
    /// `restart` event.
    restart_reason: Option<String>,
    /// Why the app went online without saying it was ready.
    online_warning: Option<String>,
    /// What the app said of itself: `STATUS=` (sd_notify), `node_version`.
    notify_status: Option<String>,
    node_version: Option<String>,
    /// The pid of the last process spawned, for the events that follow it.
    last_pid: i32,
    /// Partial lines of stdout and stderr, for `log:*` events.
    line_out: Vec<u8>,
    line_err: Vec<u8>,
}

impl Proc {
    fn new(app: App, m: Machine, out: LogFile, err: LogFile, cron: Option<Cron>) -> Proc {
        Proc {
            app,
            m,
            created_at: wall_ms(),
            pm_uptime: 0,
            out,
            err,
            monit: Monit::default(),
            cron,
            cron_at: None,
            cron_fired: None,
            watch_at: None,
            channel: None,
            candidate: None,
            candidate_failure: None,
            restart_reason: None,
            online_warning: None,
            notify_status: None,
            node_version: None,
            last_pid: 0,
            line_out: Vec::new(),
            line_err: Vec::new(),
        }
    }
}

/// Which process of an app a channel belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Main,
    Candidate,
    Drain,
}

/// A process just spawned for an app.
struct Child {
    pid: i32,
    channel: Option<Link>,
}

/// The daemon's end of one process's channel, with its cluster identity.
struct Link {
    token: Token,
    ch: Channel,
    /// `NODE_UNIQUE_ID` of a Node cluster worker, 0 otherwise.
    worker: u32,
    /// Our message counter towards that worker.
    seq: u64,
}

/// A reload's replacement, not yet the app's process.
struct Candidate {
    pid: i32,
    since: u64,
    deadline: u64,
    /// It must say it is ready (wait_ready, or a Node worker's
    /// `listening`); otherwise staying up until `deadline` is enough.
    signals: bool,
    ready: bool,
    link: Option<Link>,
}

/// An old process after a reload's swap, stopping under its kill timer.
struct Drain {
    pm_id: u32,
    pid: i32,
    deadline: u64,
    treekill: bool,
    link: Option<Link>,
    /// The kill signal it gets at `deadline` if asked by message only;
    /// `None` once signalled (SIGKILL next).
    then_signal: Option<i32>,
    /// Its main process was reaped; the rest of its group is waited for.
    reaped: bool,
}

/// A rolling reload: one instance at a time.
struct Reload {
    conn: Token,
    id: Value,
    queue: std::collections::VecDeque<u32>,
    current: Option<u32>,
    done: Vec<u32>,
    graceful: bool,
}

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The deadline of an app's state (kill timeout, restart delay).
    State(u32),
    Cron(u32),
    Watch(u32),
    /// A reload's replacement is due to be ready.
    Candidate(u32),
    /// A draining old process is due to be gone (its pid).
    Drain(i32),
    /// The next /proc sample.
    Sample,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

struct Pipe {
    pm_id: u32,
    stream: Stream,
    rx: Receiver,
}

struct Conn {
    sock: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Discarding the rest of a line that was too long.
    skipping: bool,
    /// A request on this connection waits for apps to settle.
    waiting: bool,
    read_closed: bool,
    /// A subscriber of the bus: no more requests, events only.
    sub: Option<Subscription>,
}

/// A request answered once its apps have settled (stop, restart, delete).
struct Pending {
    conn: Token,
    id: Value,
    kind: PendingKind,
    pm_ids: Vec<u32>,
    /// Descriptions of apps forgotten meanwhile (delete).
    gone: BTreeMap<u32, Description>,
    /// How many of the apps were running when the request came.
    stopped: usize,
    /// Warnings to send with the answer.
    warnings: Vec<String>,
}

enum PendingKind {
    Describe,
    /// Describe only the apps still there (scale).
    Present,
    KillDaemon,
}

/// Start the daemon and serve until told to stop; the exit status.
pub fn run(mut cfg: Config) -> i32 {
    mark_inherited_fds_cloexec();
    match Daemon::new(&cfg) {
        Ok(mut d) => {
            if let Some(mut f) = cfg.ready.take() {
                let _ = f.write_all(b"ready\n");
            }
            if cfg.detach_stdio {
                // Under a lifeline, stdin is the lifeline and stays.
                redirect_stdio(&cfg.home.join("corral.log"), !cfg.lifeline);
            }
            d.log(&format!(
                "daemon {} started (pid {}, home {})",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                cfg.home.display()
            ));
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

/// Whatever fds the daemon inherited beyond 0, 1 and 2 must not reach the
/// apps: mark them close-on-exec (the daemon's own are so from birth).
fn mark_inherited_fds_cloexec() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on fds
    // of this process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    // Kernels before 5.11: one fcntl per open fd.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: flags only, on an fd number that was open a moment ago;
        // a closed one makes fcntl fail harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Point fds 1 and 2 at the daemon log, and fd 0 at /dev/null if `stdin`.
fn redirect_stdio(log: &Path, stdin: bool) {
    let null = File::open("/dev/null");
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(log);
    if let (Ok(null), Ok(log)) = (null, log) {
        // SAFETY: dup2 onto the standard fds, which this process owns.
        unsafe {
            if stdin {
                libc::dup2(null.as_raw_fd(), 0);
            }
            libc::dup2(log.as_raw_fd(), 1);
            libc::dup2(log.as_raw_fd(), 2);
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
    procs: BTreeMap<u32, Box<Proc>>,
    next_id: u32,
    conns: HashMap<Token, Conn>,
    pipes: HashMap<Token, Pipe>,
    next_token: usize,
    timers: BTreeSet<(u64, Timer)>,
    sampler: Sampler,
    sample_interval: u64,
    /// The deadline of the next sample, while any app is online.
    sample_at: Option<u64>,
    /// inotify, once an app watches files.
    watcher: Option<Watcher>,
    /// The sd_notify socket, when its path fits in a socket address.
    notify: Option<Notify>,
    /// Tokens of the apps' channels.
    channels: HashMap<Token, u32>,
    /// The `listen` sockets of each app (`listen_key`), shared by its
    /// instances and kept across restarts and reloads.
    listeners: HashMap<String, Vec<(listen::Addr, OwnedFd)>>,
    /// Node cluster mode: the listening sockets workers share.
    cluster: Cluster,
    next_worker: u32,
    drains: Vec<Drain>,
    reloads: Vec<Reload>,
    /// Output pipes with data left after their share of a wake.
    busy_pipes: Vec<Token>,
    /// How many connections subscribed to the bus (publishing is free
    /// without any).
    subscribers: usize,
    pending: Vec<Pending>,
    clock: Instant,
    started: Instant,
    stopping_all: bool,
    exit_now: bool,
    /// Return freed heap to the kernel at the end of this wake.
    trim: bool,
    /// Pid files of processes that exited in this wake.
    stale_pid_files: Vec<(u32, PathBuf)>,
    root: bool,
}

impl Daemon {
    fn new(cfg: &Config) -> Result<Daemon, String> {
        let home = &cfg.home;
        if !home.exists() {
            std::fs::create_dir_all(home)
                .map_err(|e| format!("cannot create home {}: {e}", home.display()))?;
            std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot set the mode of {}: {e}", home.display()))?;
        }
        let home = Home { dir: home.clone() };
        for dir in [home.logs(), home.pids()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        // Lock, then bind (STYLE 12).
        let pid_file = home.dir.join("corral.pid");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&pid_file)
            .map_err(|e| format!("cannot open {}: {e}", pid_file.display()))?;
        let mut lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut f, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                return Err(format!(
                    "a daemon (pid {}) already runs with home {}",
                    pid.trim(),
                    home.dir.display()
                ));
            }
            Err((_, e)) => return Err(format!("cannot lock {}: {e}", pid_file.display())),
        };
        lock.set_len(0)
            .and_then(|_| lock.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;

        if cfg.socket.as_os_str().len() >= 108 {
            return Err(format!(
                "socket path {} is too long (at most 107 bytes)",
                cfg.socket.display()
            ));
        }
        let _ = std::fs::remove_file(&cfg.socket);
        let std_listener = std::os::unix::net::UnixListener::bind(&cfg.socket)
            .map_err(|e| format!("cannot bind {}: {e}", cfg.socket.display()))?;
        std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot set the mode of {}: {e}", cfg.socket.display()))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot set up {}: {e}", cfg.socket.display()))?;
        let mut listener = UnixListener::from_std(std_listener);

        let (sig_r, sig_w) =
            StdStream::pair().map_err(|e| format!("cannot make a socket pair: {e}"))?;
        sig_r
            .set_nonblocking(true)
            .and_then(|_| sig_w.set_nonblocking(true))
            .map_err(|e| format!("cannot set up the signal pipe: {e}"))?;
        let sig_fd = sig_w.as_raw_fd();
        for sig in CAUGHT {
            // SAFETY: the handler only calls write(2), which is
            // async-signal-safe; signal-hook keeps errno intact around it.
            // The byte is the signal's number, so the loop knows which came.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    let b = sig as u8;
                    libc::write(sig_fd, (&b as *const u8).cast(), 1);
                })
            }
            .map_err(|e| format!("cannot catch signal {sig}: {e}"))?;
        }
        // The write end lives as long as the process: the handlers use it.
        std::mem::forget(sig_w);
        let mut signals = UnixStream::from_std(sig_r);

        reaper::become_subreaper().map_err(|e| format!("cannot become a subreaper: {e}"))?;

        let poll = Poll::new().map_err(|e| format!("cannot create the poller: {e}"))?;
        let reg = poll.registry();
        reg.register(&mut listener, LISTENER, Interest::READABLE)
            .and_then(|_| reg.register(&mut signals, SIGNALS, Interest::READABLE))
            .map_err(|e| format!("cannot register with the poller: {e}"))?;
        if cfg.lifeline {
            set_nonblocking(0);
            reg.register(&mut SourceFd(&0), LIFELINE, Interest::READABLE)
                .map_err(|e| format!("cannot watch stdin: {e}"))?;
        }
        let notify = match Notify::bind(&home.dir.join("notify.sock")) {
            Ok(mut n) => {
                reg.register(&mut n.sock, NOTIFY, Interest::READABLE)
                    .map_err(|e| format!("cannot register with the poller: {e}"))?;
                Some(n)
            }
            // A home too deep for a socket path: apps get no NOTIFY_SOCKET.
            Err(_) => None,
        };
        // The daemon's own log is stamped like an app's (`log_date_format`).
        let log_file = LogFile::open(
            &home.dir.join("corral.log"),
            Some(options::TIME_LOG_DATE_FORMAT),
        )
        .ok();
        Ok(Daemon {
            poll,
            home,
            socket: cfg.socket.clone(),
            listener,
            signals,
            _lock: lock,
            pid_file,
            log_file,
            procs: BTreeMap::new(),
            next_id: 0,
            conns: HashMap::new(),
            pipes: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            timers: BTreeSet::new(),
            sampler: Sampler::new(),
            sample_interval: cfg.sample_interval,
            sample_at: None,
            watcher: None,
            notify,
            channels: HashMap::new(),
            listeners: HashMap::new(),
            busy_pipes: Vec::new(),
            cluster: Cluster::new(),
            next_worker: 0,
            drains: Vec::new(),
            reloads: Vec::new(),
            subscribers: 0,
            pending: Vec::new(),
            clock: Instant::now(),
            started: Instant::now(),
            stopping_all: false,
            exit_now: false,
            trim: false,
            stale_pid_files: Vec::new(),
            // SAFETY: geteuid has no preconditions.
            root: unsafe { libc::geteuid() } == 0,
        })
    }

    fn log(&mut self, msg: &str) {
        if let Some(f) = self.log_file.as_mut() {
            let _ = f.write_chunk(format!("{msg}\n").as_bytes(), wall_ms() as i64);
        }
    }

    /// Monotonic milliseconds since the daemon started.
    fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    fn serve(&mut self) -> i32 {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = match self.busy_pipes.is_empty() {
                // Output left unread: look at the other fds, then come back.
                false => Some(Duration::ZERO),
                true => self
                    .timers
                    .first()
                    .map(|(t, _)| Duration::from_millis(t.saturating_sub(self.now()))),
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
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.drain_signals(),
                    LISTENER => self.accept_all(),
                    LIFELINE => self.read_lifeline(),
                    WATCH => self.read_watch(),
                    NOTIFY => self.read_notify(),
                    t if self.channels.contains_key(&t) => chans.push(t),
                    t if self.pipes.contains_key(&t) => {
                        if !pipes.contains(&t) {
                            pipes.push(t);
                        }
                    }
                    t => conns.push(t),
                }
            }
            // Exits before requests and timers, every wake.
            self.handle_exits();
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
            // Before answers: a stop is answered once its pid file is gone.
            self.remove_stale_pid_files();
            self.drive_reloads();
            self.finish_pending();
            if std::mem::take(&mut self.trim) {
                // SAFETY: malloc_trim only returns free heap pages to the
                // kernel; nothing else runs meanwhile.
                unsafe { libc::malloc_trim(0) };
            }
            if self.exit_now {
                return 0;
            }
        }
    }

    fn drain_signals(&mut self) {
        let mut buf = [0u8; 64];
        let mut came = Vec::new();
        loop {
            match self.signals.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => came.extend(buf[..n].iter().map(|&b| i32::from(b))),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        came.sort_unstable();
        came.dedup();
        // SIGCHLD needs nothing here: every wake reaps.
        for sig in came {
            match sig {
                libc::SIGTERM | libc::SIGINT => {
                    self.log(&format!(
                        "signal {}: stopping every app",
                        options::signal_name(sig)
                    ));
                    self.stop_everything(NOBODY, Value::Null);
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

    fn read_lifeline(&mut self) {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reading into a live buffer from our own stdin.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                continue;
            }
            if n == 0 || Errno::last() != Errno::EAGAIN {
                let _ = self.poll.registry().deregister(&mut SourceFd(&0));
                self.log("the caller of connect_no_daemon is gone: stopping every app");
                self.stop_everything(NOBODY, Value::Null);
            }
            break;
        }
    }

    /// Stop every app, then exit (SIGTERM, lifeline, kill_daemon); `conn`
    /// and `id` get the answer.
    fn stop_everything(&mut self, conn: Token, id: Value) {
        let ids: Vec<u32> = self.procs.keys().copied().collect();
        let stopped = ids
            .iter()
            .filter(|id| self.procs[id].m.is_running())
            .count();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.waiting = true;
        }
        self.pending.push(Pending {
            conn,
            id,
            kind: PendingKind::KillDaemon,
            pm_ids: ids.clone(),
            gone: BTreeMap::new(),
            stopped,
            warnings: Vec::new(),
        });
        if self.stopping_all {
            return;
        }
        self.stopping_all = true;
        for id in &ids {
            self.drop_candidate(*id, "was cancelled: the daemon is stopping");
            // A failure is logged where it happens (apply).
            let _ = self.step(*id, Input::Stop);
        }
    }

    /// Reopen every log file (logrotate renamed them); how many files.
    fn reopen_logs(&mut self) -> usize {
        let mut files = BTreeSet::new();
        let mut failed = Vec::new();
        for p in self.procs.values_mut() {
            for lf in [&mut p.out, &mut p.err] {
                match lf.reopen() {
                    Ok(true) => {
                        files.insert(lf.path().to_path_buf());
                    }
                    Ok(false) => {}
                    Err(e) => failed.push(format!("cannot reopen {}: {e}", lf.path().display())),
                }
            }
        }
        for f in failed {
            self.log(&f);
        }
        files.len()
    }

    // ---- exits and timers ------------------------------------------------

    fn handle_exits(&mut self) {
        for (pid, exit) in reaper::reap_all() {
            let found = self
                .procs
                .iter()
                .find(|(_, p)| p.m.pid() == Some(pid))
                .map(|(id, p)| (*id, p.app.spec.treekill));
            let Some((id, treekill)) = found else {
                self.reap_other(pid, exit);
                continue;
            };
            {
                let group_alive = treekill && reaper::group_alive(pid);
                let _ = self.step(
                    id,
                    Input::Exited {
                        pid,
                        exit,
                        group_alive,
                    },
                );
            }
        }
        let lingering: Vec<(u32, i32)> = self
            .procs
            .iter()
            .filter_map(|(id, p)| match p.m.state {
                State::Stopping {
                    pid: None, pgid, ..
                } => Some((*id, pgid)),
                _ => None,
            })
            .collect();
        self.settle_drains();
        for (id, pgid) in lingering {
            if !reaper::group_alive(pgid) {
                let _ = self.step(id, Input::GroupEmpty);
            }
        }
    }

    /// Remove the pid files of apps that exited and did not start again.
    fn remove_stale_pid_files(&mut self) {
        for (id, path) in std::mem::take(&mut self.stale_pid_files) {
            if !self.procs.get(&id).is_some_and(|p| p.m.is_running()) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now();
        while let Some(&(t, timer)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::State(id) => {
                    if self.procs.get(&id).and_then(|p| p.m.deadline()) == Some(t) {
                        let _ = self.step(id, Input::Deadline);
                    }
                }
                Timer::Cron(id) => {
                    if self.procs.get(&id).and_then(|p| p.cron_at) == Some(t) {
                        self.restart_for(id, "cron_restart");
                        self.arm_cron(id);
                    }
                }
                Timer::Watch(id) => {
                    if self.procs.get(&id).and_then(|p| p.watch_at) == Some(t) {
                        if let Some(p) = self.procs.get_mut(&id) {
                            p.watch_at = None;
                        }
                        self.restart_for(id, "files changed (watch)");
                    }
                }
                Timer::Candidate(id) => {
                    let due = self
                        .procs
                        .get(&id)
                        .and_then(|p| p.candidate.as_ref())
                        .map(|c| c.deadline);
                    if due == Some(t) {
                        self.candidate_due(id);
                    }
                }
                Timer::Drain(pid) => {
                    if self.drains.iter().any(|d| d.pid == pid && d.deadline == t) {
                        self.drain_due(pid);
                    }
                }
                Timer::Sample => {
                    if self.sample_at == Some(t) {
                        self.sample_at = None;
                        self.sample();
                    }
                }
            }
        }
    }

    /// Restart an app on the daemon's own initiative (memory limit, cron,
    /// watch); a stopped app starts (a cron restart does, as in PM2).
    fn restart_for(&mut self, id: u32, reason: &str) {
        let Some(p) = self.procs.get(&id) else {
            return;
        };
        if matches!(p.m.state, State::Stopping { .. }) || self.stopping_all {
            return;
        }
        self.drop_candidate(id, &format!("was cancelled by a restart ({reason})"));
        if let Some(p) = self.procs.get_mut(&id) {
            p.restart_reason = Some(reason.to_string());
        }
        let _ = self.step(id, Input::Restart);
    }

    // ---- sampling --------------------------------------------------------

    /// Keep a sample due while any app is online and none otherwise, so an
    /// idle daemon does not wake up.
    fn arm_sampling(&mut self) {
        let online = self.procs.values().any(|p| p.m.is_running());
        match (online, self.sample_at) {
            (true, None) => {
                let t = self.now() + self.sample_interval;
                self.sample_at = Some(t);
                self.timers.insert((t, Timer::Sample));
            }
            (false, Some(t)) => {
                self.timers.remove(&(t, Timer::Sample));
                self.sample_at = None;
                self.sampler.reset();
            }
            _ => {}
        }
    }

    /// Read every online app's memory and CPU; restart those over their
    /// memory limit (gracefully: kill signal, then kill timeout).
    fn sample(&mut self) {
        let groups: Vec<(u32, i32)> = self
            .procs
            .iter()
            .filter_map(|(id, p)| match p.m.state {
                State::Online { pid, .. } | State::Launching { pid, .. } => Some((*id, pid)),
                _ => None,
            })
            .collect();
        let pgids: Vec<i32> = groups.iter().map(|(_, g)| *g).collect();
        let usage = self.sampler.sample(&pgids, self.now());
        // The scan's buffers are freed now: give the pages back.
        self.trim = true;
        let mut over = Vec::new();
        for (id, pgid) in groups {
            let Some(p) = self.procs.get_mut(&id) else {
                continue;
            };
            p.monit = usage.get(&pgid).cloned().unwrap_or_default();
            if let Some(limit) = p.app.spec.max_memory_restart
                && p.monit.memory > limit
            {
                over.push((id, p.monit.memory, limit));
            }
        }
        for (id, memory, limit) in over {
            let reason =
                format!("memory {memory} bytes over the limit of {limit} (max_memory_restart)");
            self.restart_for(id, &reason);
        }
    }

    // ---- cron and watch --------------------------------------------------

    /// Arm app `id`'s next cron firing.
    fn arm_cron(&mut self, id: u32) {
        let now_mono = self.now();
        let now_wall = wall_ms();
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(cron) = &p.cron else {
            return;
        };
        // After a firing, the next one is after the second that fired, even
        // if the monotonic deadline came a hair before the wall clock's
        // second turned.
        let after = ((now_wall / 1000) as i64).max(p.cron_fired.unwrap_or(i64::MIN));
        let next = cron.next_fire(after);
        p.cron_fired = next;
        p.cron_at = next.map(|at| {
            let wait = (at.max(0) as u64 * 1000).saturating_sub(now_wall);
            now_mono + wait
        });
        if let Some(t) = p.cron_at {
            self.timers.insert((t, Timer::Cron(id)));
        }
    }

    /// Start watching app `id`'s files, if it asks for it and is not yet.
    fn watch_app(&mut self, id: u32) -> Result<(), WireError> {
        let Some(p) = self.procs.get(&id) else {
            return Ok(());
        };
        let roots: Vec<PathBuf> = match &p.app.spec.watch {
            Watch::Off => return Ok(()),
            Watch::Cwd => vec![p.app.cwd.clone()],
            Watch::Paths(paths) => paths.iter().map(|x| p.app.cwd.join(x)).collect(),
        };
        if self.watcher.as_ref().is_some_and(|w| w.is_watching(id)) {
            return Ok(());
        }
        let patterns = p
            .app
            .spec
            .ignore_watch
            .clone()
            .unwrap_or_else(|| DEFAULT_IGNORE_WATCH.iter().map(|s| s.to_string()).collect());
        // Never restart for what the daemon itself writes.
        let exact = vec![
            self.home.logs(),
            p.app.out_path.clone(),
            p.app.err_path.clone(),
            p.app.pid_path.clone(),
        ];
        let invalid = |m: String| WireError::new(ErrorCode::InvalidOption, m);
        let ignore = Ignore::new(&patterns, exact)
            .map_err(|e| invalid(format!("option `ignore_watch`: {e}")))?;
        if self.watcher.is_none() {
            let w = Watcher::new().map_err(|e| internal(&format!("cannot use inotify: {e}")))?;
            let fd = w.raw_fd();
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), WATCH, Interest::READABLE)
                .map_err(|e| internal(&format!("cannot poll inotify: {e}")))?;
            self.watcher = Some(w);
        }
        if let Some(w) = self.watcher.as_mut() {
            w.watch(id, &roots, ignore)
                .map_err(|e| invalid(format!("option `watch`: {e}")))?;
        }
        Ok(())
    }

    fn unwatch_app(&mut self, id: u32) {
        if let Some(w) = self.watcher.as_mut() {
            w.unwatch(id);
        }
        if let Some(p) = self.procs.get_mut(&id) {
            p.watch_at = None;
        }
    }

    /// Files changed: one restart per burst, `watch_delay` after its first
    /// change.
    fn read_watch(&mut self) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        let changed = w.read_changes();
        for warning in w.take_warnings() {
            self.log(&format!("watch: {warning}"));
        }
        let now = self.now();
        for id in changed {
            let Some(p) = self.procs.get_mut(&id) else {
                continue;
            };
            if p.watch_at.is_none() && p.m.wanted != Wanted::Down {
                let t = now + p.app.spec.watch_delay;
                p.watch_at = Some(t);
                self.timers.insert((t, Timer::Watch(id)));
            }
        }
    }

    /// Feed one input to an app's machine and carry out the effects.
    fn step(&mut self, id: u32, input: Input) -> Result<(), WireError> {
        let now = self.now();
        let Some(p) = self.procs.get_mut(&id) else {
            return Ok(());
        };
        let effects = p.m.step(input, now);
        let mut result = Ok(());
        for fx in effects {
            if let Err(e) = self.apply(id, fx) {
                result = Err(e);
            }
        }
        result
    }

    fn apply(&mut self, id: u32, fx: Effect) -> Result<(), WireError> {
        match fx {
            Effect::Spawn => {
                if self.stopping_all {
                    // Shutting down: nothing starts again.
                    if let Some(p) = self.procs.get_mut(&id) {
                        p.m.state = State::Stopped;
                    }
                    return Ok(());
                }
                match self.spawn_proc(id) {
                    Ok(pid) => self.step(id, Input::Spawned { pid }),
                    Err(e) => {
                        self.log(&format!("app {id}: {}", e.message));
                        self.step(id, Input::SpawnFailed)?;
                        Err(e)
                    }
                }
            }
            Effect::Signal { pid, sig, group } => {
                let sig = Signal::try_from(sig).unwrap_or(Signal::SIGINT);
                send(pid, sig, group);
                send(pid, Signal::SIGCONT, group);
                Ok(())
            }
            Effect::Kill { pid, group } => {
                self.log(&format!("app {id}: kill timeout, sending SIGKILL"));
                send(pid, Signal::SIGKILL, group);
                Ok(())
            }
            Effect::Timer(t) => {
                self.timers.insert((t, Timer::State(id)));
                Ok(())
            }
            Effect::ClearPid => {
                // Removed at the end of the wake, after any restart: the
                // replacement is not kept waiting for the filesystem, and
                // rewrites the file anyway.
                if let Some(p) = self.procs.get(&id) {
                    self.stale_pid_files.push((id, p.app.pid_path.clone()));
                }
                Ok(())
            }
            Effect::Emit(what) => {
                self.emit(id, what);
                Ok(())
            }
            Effect::SendShutdown { pid, sig, group } => {
                let sent = self
                    .procs
                    .get_mut(&id)
                    .and_then(|p| p.channel.as_mut())
                    .map(|l| l.ch.send(&json!("shutdown")));
                if !matches!(sent, Some(Ok(()))) {
                    // No channel to ask through: the kill signal it is.
                    let sig = Signal::try_from(sig).unwrap_or(Signal::SIGINT);
                    send(pid, sig, group);
                    send(pid, Signal::SIGCONT, group);
                }
                Ok(())
            }
            Effect::ReadyTimeout => {
                if let Some(p) = self.procs.get_mut(&id) {
                    p.online_warning = Some(format!(
                        "no ready message within listen_timeout ({} ms): online anyway",
                        p.app.spec.listen_timeout
                    ));
                }
                Ok(())
            }
            Effect::Forget => {
                self.drop_candidate(id, "was cancelled: the app was deleted");
                self.close_channel(id);
                if let Some(key) = self.procs.get(&id).map(|p| listen_key(&p.app.spec)) {
                    let others = self
                        .procs
                        .iter()
                        .any(|(other, p)| *other != id && listen_key(&p.app.spec) == key);
                    if !others {
                        self.listeners.remove(&key);
                    }
                }
                if self.procs.contains_key(&id) {
                    let desc = self.describe(id);
                    for op in self.pending.iter_mut().filter(|op| op.pm_ids.contains(&id)) {
                        if let Some(d) = &desc {
                            op.gone.insert(id, d.clone());
                        }
                    }
                    self.procs.remove(&id);
                }
                Ok(())
            }
        }
    }

    // ---- the bus -----------------------------------------------------------

    /// `process.name/pm_id/pid/namespace` of bus events.
    fn process_ref(&self, id: u32) -> Value {
        match self.procs.get(&id) {
            Some(p) => json!({
                "name": p.app.spec.name,
                "pm_id": id,
                "pid": p.m.pid().unwrap_or(p.last_pid),
                "namespace": p.app.spec.namespace,
            }),
            None => Value::Null,
        }
    }

    /// A `process:event` (and its line in the daemon's log).
    fn emit(&mut self, id: u32, what: &'static str) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let mut data = json!({"event": what, "at": wall_ms(), "manually": false});
        let mut words = what.to_string();
        match (what, p.m.last_exit) {
            ("exit", Some(Exit::Code(c))) => {
                data["code"] = json!(c);
                data["signal"] = Value::Null;
                words = format!("exit code {c}");
            }
            ("exit", Some(Exit::Signal(sig))) => {
                let name = options::signal_name(sig);
                data["code"] = Value::Null;
                data["signal"] = json!(name);
                words = format!("exit by {name}");
            }
            ("restart", _) => {
                if let Some(r) = p.restart_reason.take() {
                    words = format!("restart ({r})");
                    data["reason"] = json!(r);
                }
            }
            ("online", _) => {
                if let Some(w) = p.online_warning.take() {
                    words = format!("online ({w})");
                    data["warning"] = json!(w);
                }
            }
            _ => {}
        }
        let line = format!("app {} ({id}): {words}", p.app.spec.name);
        self.log(&line);
        if self.subscribers > 0 {
            data["process"] = self.process_ref(id);
            self.publish("process:event", data);
        }
    }

    /// Queue an event for every subscriber that wants it.
    fn publish(&mut self, event: &str, data: Value) {
        if self.subscribers == 0 {
            return;
        }
        let line = bus::line_of(event, data);
        let mut tokens = Vec::new();
        for (t, c) in self.conns.iter_mut() {
            if let Some(sub) = c.sub.as_mut()
                && sub.filter.wants(event)
            {
                sub.offer(&mut c.wbuf, &line);
                tokens.push(*t);
            }
        }
        for t in tokens {
            self.flush_conn(t);
        }
    }

    /// Whole lines of an app's output, as `log:out` / `log:err` events.
    fn publish_lines(&mut self, id: u32, stream: Stream, chunk: &[u8]) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let partial = match stream {
            Stream::Out => &mut p.line_out,
            Stream::Err => &mut p.line_err,
        };
        partial.extend_from_slice(chunk);
        let cut = match partial.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            // A line longer than a bus event may be goes out in pieces.
            None if partial.len() > bus::MAX_LINE => partial.len(),
            None => return,
        };
        let whole: Vec<u8> = partial.drain(..cut).collect();
        let event = match stream {
            Stream::Out => "log:out",
            Stream::Err => "log:err",
        };
        // Subscribers whose queues are full only count what they miss: no
        // need to build events nobody can take.
        let room = self.conns.values().any(|c| {
            c.sub
                .as_ref()
                .is_some_and(|s| s.filter.wants(event) && c.wbuf.len() < bus::MAX_QUEUE / 2)
        });
        if !room {
            let lines = whole.split_inclusive(|&b| b == b'\n').count() as u64;
            for c in self.conns.values_mut() {
                if let Some(sub) = c.sub.as_mut()
                    && sub.filter.wants(event)
                {
                    sub.dropped += lines;
                }
            }
            return;
        }
        let process = self.process_ref(id);
        let at = wall_ms();
        for line in whole.split_inclusive(|&b| b == b'\n') {
            let data = json!({
                "process": process,
                "data": String::from_utf8_lossy(line),
                "at": at,
            });
            self.publish(event, data);
        }
    }

    // ---- IPC channels and sd_notify ----------------------------------------

    /// Close app `id`'s channel (its process is gone or replaced).
    fn close_channel(&mut self, id: u32) {
        if let Some(link) = self.procs.get_mut(&id).and_then(|p| p.channel.take()) {
            self.drop_link(link);
        }
    }

    /// The channel behind token `t`: an app's main process, its reload
    /// replacement, or an old process draining.
    fn link_of(&mut self, t: Token) -> Option<(u32, Owner, &mut Link)> {
        let id = *self.channels.get(&t)?;
        if let Some(i) = self
            .drains
            .iter()
            .position(|d| d.link.as_ref().is_some_and(|l| l.token == t))
        {
            let d = &mut self.drains[i];
            return d.link.as_mut().map(|l| (d.pm_id, Owner::Drain, l));
        }
        let p = self.procs.get_mut(&id)?;
        if p.channel.as_ref().is_some_and(|l| l.token == t) {
            return p.channel.as_mut().map(|l| (id, Owner::Main, l));
        }
        let c = p.candidate.as_mut()?;
        c.link
            .as_mut()
            .filter(|l| l.token == t)
            .map(|l| (id, Owner::Candidate, l))
    }

    fn service_channel(&mut self, t: Token) {
        // Out of `self` while a link of `self` is borrowed.
        let mut cluster = std::mem::take(&mut self.cluster);
        let Some((id, owner, link)) = self.link_of(t) else {
            self.cluster = cluster;
            return;
        };
        let _ = link.ch.flush();
        let inbound = link.ch.read();
        // The cluster protocol is answered right here, on the same link.
        let mut events = Vec::new();
        let mut others = Vec::new();
        for msg in inbound.messages {
            match msg {
                Message::Internal(v) if link.worker > 0 && Cluster::is_cluster_message(&v) => {
                    let (outs, ev) = cluster.handle(link.worker, &v, &mut link.seq);
                    for out in outs {
                        let sent = match out.fd {
                            Some(fd) => link.ch.send_handle(&out.msg, fd),
                            None => link.ch.send(&out.msg),
                        };
                        if let Err(e) = sent {
                            events.push(Err(e));
                        }
                    }
                    if let Some(ev) = ev {
                        events.push(Ok(ev));
                    }
                }
                other => others.push(other),
            }
        }
        self.cluster = cluster;
        for w in &inbound.warnings {
            let line = format!("app {id}: channel: {w}");
            self.log(&line);
        }
        for ev in events {
            match ev {
                Ok(WorkerEvent::Listening) => self.on_message_from(id, owner, Message::Ready),
                Ok(_) => {}
                Err(e) => self.log(&format!("app {id}: cluster: {e}")),
            }
        }
        for msg in others {
            self.on_message_from(id, owner, msg);
        }
        if inbound.closed {
            // The process closed its end: it keeps running without a
            // channel (a draining Node worker is on its way out).
            match owner {
                Owner::Main => self.close_channel(id),
                Owner::Candidate => {
                    if let Some(link) = self
                        .procs
                        .get_mut(&id)
                        .and_then(|p| p.candidate.as_mut())
                        .and_then(|c| c.link.take())
                    {
                        self.drop_link(link);
                    }
                }
                Owner::Drain => {
                    let link = self
                        .drains
                        .iter_mut()
                        .find(|d| d.link.as_ref().is_some_and(|l| l.token == t))
                        .and_then(|d| d.link.take());
                    if let Some(link) = link {
                        self.drop_link(link);
                    }
                }
            }
        }
    }

    /// A message from one of app `id`'s processes: a replacement's ready
    /// makes it swappable; the rest is as from the main process.
    fn on_message_from(&mut self, id: u32, owner: Owner, msg: Message) {
        if owner == Owner::Candidate && msg == Message::Ready {
            if let Some(c) = self.procs.get_mut(&id).and_then(|p| p.candidate.as_mut()) {
                c.ready = true;
            }
            return;
        }
        if owner == Owner::Main {
            self.on_message(id, msg);
            return;
        }
        // A draining process's readiness means nothing any more.
        if msg != Message::Ready {
            self.on_message(id, msg);
        }
    }

    fn on_message(&mut self, id: u32, msg: Message) {
        let at = wall_ms();
        match msg {
            Message::Ready => {
                let _ = self.step(id, Input::Ready);
                let data = json!({"process": self.process_ref(id), "raw": "ready", "at": at});
                self.publish("process:msg", data);
            }
            // The cluster protocol (and handle acks, which the channel
            // keeps for itself): never bus events.
            Message::Internal(_) => {}
            Message::NodeVersion(v) => {
                if let Some(p) = self.procs.get_mut(&id) {
                    p.node_version = Some(v);
                }
            }
            // An app may not speak as the daemon: its messages named like
            // the daemon's own events go out as process:msg.
            Message::Typed { kind, data } if !bus::RESERVED.contains(&kind.as_str()) => {
                let data = json!({"process": self.process_ref(id), "data": data, "at": at});
                self.publish(&kind, data);
            }
            Message::Typed { kind, data } => {
                let raw = json!({"type": kind, "data": data});
                let data = json!({"process": self.process_ref(id), "raw": raw, "at": at});
                self.publish("process:msg", data);
            }
            Message::Raw(raw) => {
                let data = json!({"process": self.process_ref(id), "raw": raw, "at": at});
                self.publish("process:msg", data);
            }
        }
    }

    /// sd_notify datagrams: `READY=1` and `STATUS=`, from any process of an
    /// app's group.
    fn read_notify(&mut self) {
        let Some(n) = &self.notify else {
            return;
        };
        for note in n.recv_all() {
            let pgrp = procfs::read_stat(note.pid).ok().flatten().map(|st| st.pgrp);
            // A reload's replacement (or a process of its group) says it
            // is ready: it may take over.
            let main_of = |pid: i32| Some(pid) == Some(note.pid) || Some(pid) == pgrp;
            let candidate = self
                .procs
                .iter()
                .find(|(_, p)| p.candidate.as_ref().is_some_and(|c| main_of(c.pid)))
                .map(|(id, _)| *id);
            if let Some(id) = candidate {
                let ready = note.pairs.iter().any(|(k, v)| k == "READY" && v == "1");
                if let Some(c) = self.procs.get_mut(&id).and_then(|p| p.candidate.as_mut()) {
                    c.ready |= ready;
                }
                continue;
            }
            let found = self
                .procs
                .iter()
                .find(|(_, p)| {
                    let pid = p.m.pid();
                    pid == Some(note.pid) || (pid.is_some() && pid == pgrp)
                })
                .map(|(id, _)| *id);
            // A sender that exited at once (systemd-notify) cannot be
            // looked up: MAINPID= names the app's process instead.
            let found = found.or_else(|| {
                let main: i32 = note
                    .pairs
                    .iter()
                    .find(|(k, _)| k == "MAINPID")
                    .and_then(|(_, v)| v.parse().ok())?;
                self.procs
                    .iter()
                    .find(|(_, p)| p.m.pid() == Some(main))
                    .map(|(id, _)| *id)
            });
            let Some(id) = found else {
                continue;
            };
            for (k, v) in note.pairs {
                match k.as_str() {
                    "READY" if v == "1" => {
                        let _ = self.step(id, Input::Ready);
                    }
                    "STATUS" => {
                        if let Some(p) = self.procs.get_mut(&id) {
                            p.notify_status = Some(v);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    // ---- processes, candidates and drains ----------------------------------

    /// Fork and exec a process of app `id` with fresh pipes and channel;
    /// the caller decides whether it is the app's main process or a
    /// reload's replacement.
    fn spawn_process(&mut self, id: u32) -> Result<Child, WireError> {
        let p = self.procs.get(&id).ok_or_else(|| internal("no such app"))?;
        let null = || -> Result<OwnedFd, WireError> {
            File::options()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| internal(&format!("cannot open /dev/null: {e}")))
        };
        let pipe = |path: &Path| -> Result<(Option<OwnedFd>, OwnedFd), WireError> {
            if is_null(path) {
                return Ok((None, null()?));
            }
            let (r, w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                .map_err(|e| internal(&format!("cannot make a pipe: {e}")))?;
            // The child's end blocks like any ordinary stdout.
            clear_nonblocking(w.as_raw_fd());
            Ok((Some(r), w))
        };
        let (out_r, out_w) = pipe(&p.app.out_path)?;
        let (err_r, err_w) = pipe(&p.app.err_path)?;
        let (ours, theirs) = match p.app.spec.ipc {
            true => {
                let (a, b) = StdStream::pair()
                    .map_err(|e| internal(&format!("cannot make the IPC channel: {e}")))?;
                a.set_nonblocking(true)
                    .map_err(|e| internal(&format!("cannot set up the IPC channel: {e}")))?;
                (Some(a), Some(OwnedFd::from(b)))
            }
            false => (None, None),
        };
        // Only an app that asked for sockets gets them.
        let listen = self
            .listeners
            .get(&listen_key(&p.app.spec))
            .filter(|_| !p.app.spec.listen.is_empty())
            .map(|l| {
                l.iter()
                    .map(|(a, fd)| (fd.as_raw_fd(), a.fd_name()))
                    .collect()
            })
            .unwrap_or_default();
        // A Node app in cluster mode is a worker of corral, its primary.
        let worker = match p.app.slot.cluster && p.app.is_node() && p.app.spec.ipc {
            true => {
                self.next_worker += 1;
                self.next_worker
            }
            false => 0,
        };
        let io = Io {
            stdio: [null()?, out_w, err_w],
            listen,
            channel: theirs,
            notify_socket: self.notify.as_ref().map(|n| n.path.clone()),
            cluster_id: (worker > 0).then(|| worker.to_string()),
        };
        let cmd = p.app.command(id, &self.home, io)?;
        let owner = p.app.creds.as_ref().and_then(|c| c.uid.map(|u| (u, c.gid)));
        let cwd = p.app.cwd.clone();
        let pid =
            spawn_child(&cmd).map_err(|e| WireError::new(spawn_error_code(&e), e.to_string()))?;
        drop(cmd);
        // Its messages are read in a later wake: registered in time.
        if worker > 0 {
            self.cluster.register(worker, &cwd, owner);
        }
        for (r, stream) in [(out_r, Stream::Out), (err_r, Stream::Err)] {
            if let Some(r) = r {
                let mut rx = Receiver::from(r);
                let t = self.token();
                if self
                    .poll
                    .registry()
                    .register(&mut rx, t, Interest::READABLE)
                    .is_ok()
                {
                    self.pipes.insert(
                        t,
                        Pipe {
                            pm_id: id,
                            stream,
                            rx,
                        },
                    );
                }
            }
        }
        let mut channel = None;
        if let Some(sock) = ours {
            let mut sock = UnixStream::from_std(sock);
            let t = self.token();
            if self
                .poll
                .registry()
                .register(&mut sock, t, Interest::READABLE | Interest::WRITABLE)
                .is_ok()
            {
                self.channels.insert(t, id);
                channel = Some(Link {
                    token: t,
                    ch: Channel::new(sock),
                    worker,
                    seq: 0,
                });
            }
        }
        Ok(Child { pid, channel })
    }

    /// Fork and exec app `id`'s main process; its pid.
    fn spawn_proc(&mut self, id: u32) -> Result<i32, WireError> {
        let child = self.spawn_process(id)?;
        self.close_channel(id);
        let pid = child.pid;
        if let Some(p) = self.procs.get_mut(&id) {
            p.channel = child.channel;
            p.pm_uptime = wall_ms();
            p.monit = Monit::default();
            p.notify_status = None;
            p.node_version = None;
            p.last_pid = pid;
            p.line_out.clear();
            p.line_err.clear();
        }
        self.write_pid_file(id, pid);
        Ok(pid)
    }

    fn write_pid_file(&mut self, id: u32, pid: i32) {
        let Some(path) = self.procs.get(&id).map(|p| p.app.pid_path.clone()) else {
            return;
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = write_atomic(&path, format!("{pid}\n").as_bytes(), false) {
            self.log(&format!("app {id}: cannot write {}: {e}", path.display()));
        }
    }

    /// Whether `reload` replaces app `id` one instance at a time rather
    /// than restarting it: several instances, cluster mode, or `listen`
    /// sockets that keep connections waiting meanwhile.
    fn rolls(&self, id: u32) -> bool {
        self.procs.get(&id).is_some_and(|p| {
            p.app.slot.cluster || p.app.slot.count > 1 || !p.app.spec.listen.is_empty()
        })
    }

    /// Move the rolling reloads on: replace the next instance, swap in a
    /// ready replacement, or give up on one that failed.
    fn drive_reloads(&mut self) {
        let mut i = 0;
        while i < self.reloads.len() {
            match self.step_reload(i) {
                Some(outcome) => {
                    let r = self.reloads.remove(i);
                    let line = match outcome {
                        Ok(()) => {
                            let list: Vec<Description> =
                                r.done.iter().filter_map(|id| self.describe(*id)).collect();
                            protocol::ok_line(&r.id, &to_json(&list), &[])
                        }
                        Err(e) => protocol::err_line(&r.id, &e),
                    };
                    if let Some(c) = self.conns.get_mut(&r.conn) {
                        c.waiting = false;
                        c.wbuf.extend_from_slice(line.as_bytes());
                    }
                    self.service_conn(r.conn);
                }
                None => i += 1,
            }
        }
    }

    /// One move of reload `i`; `Some` when it is over.
    fn step_reload(&mut self, i: usize) -> Option<Result<(), WireError>> {
        loop {
            let r = &mut self.reloads[i];
            if let Some(id) = r.current {
                let Some(p) = self.procs.get(&id) else {
                    r.current = None;
                    continue;
                };
                match &p.candidate {
                    Some(c) if c.ready => {
                        let graceful = r.graceful;
                        if !self.swap(id, graceful) {
                            continue;
                        }
                        let r = &mut self.reloads[i];
                        r.done.push(id);
                        r.current = None;
                        continue;
                    }
                    Some(_) => return None,
                    None => {
                        let why = p
                            .candidate_failure
                            .clone()
                            .unwrap_or_else(|| "it was stopped".to_string());
                        let name = p.app.spec.name.clone();
                        return Some(Err(WireError::new(
                            ErrorCode::Internal,
                            format!(
                                "reload of {name} stopped at pm_id {id}: the replacement {why}; \
                                 the old process keeps serving"
                            ),
                        )));
                    }
                }
            }
            let Some(id) = r.queue.pop_front() else {
                // Apps that were restarted instead answer once back.
                let done = r.done.clone();
                let settled = done
                    .iter()
                    .all(|id| self.procs.get(id).is_none_or(|p| p.m.is_settled()));
                return settled.then_some(Ok(()));
            };
            r.current = Some(id);
            let Some(p) = self.procs.get(&id) else {
                r.current = None;
                continue;
            };
            if !matches!(p.m.state, State::Online { .. }) || !self.rolls(id) {
                // Nothing serves: a plain restart loses nothing.
                let r = &mut self.reloads[i];
                r.current = None;
                r.done.push(id);
                if let Err(e) = self.step(id, Input::Restart) {
                    return Some(Err(e));
                }
                continue;
            }
            if let Err(e) = self.start_candidate(id) {
                return Some(Err(e));
            }
            return None;
        }
    }

    /// Queue a rolling reload of `ids`, answered when it is over.
    fn begin_reload(
        &mut self,
        t: Token,
        id: Value,
        ids: Vec<u32>,
        graceful: bool,
    ) -> Result<Option<(String, Vec<String>)>, WireError> {
        if self.stopping_all {
            return Err(internal("the daemon is shutting down"));
        }
        let busy = ids.iter().find(|x| {
            self.reloads
                .iter()
                .any(|r| r.current == Some(**x) || r.queue.contains(x))
        });
        if let Some(x) = busy {
            let name = self.procs.get(x).map(|p| p.app.spec.name.clone());
            return Err(WireError::new(
                ErrorCode::BadRequest,
                format!(
                    "a reload of {} (pm_id {x}) is already running",
                    name.unwrap_or_default()
                ),
            ));
        }
        self.reloads.push(Reload {
            conn: t,
            id,
            queue: ids.into_iter().collect(),
            current: None,
            done: Vec::new(),
            graceful,
        });
        if let Some(c) = self.conns.get_mut(&t) {
            c.waiting = true;
        }
        Ok(None)
    }

    /// Start the replacement of app `id` beside its running process.
    fn start_candidate(&mut self, id: u32) -> Result<(), WireError> {
        let child = self.spawn_process(id)?;
        let now = self.now();
        let Some(p) = self.procs.get_mut(&id) else {
            return Ok(());
        };
        // Told ready (wait_ready, a Node worker's `listening`) within
        // listen_timeout; otherwise ready once it ran min_uptime.
        let signals = p.app.spec.wait_ready || child.channel.as_ref().is_some_and(|l| l.worker > 0);
        let wait = match signals {
            true => p.app.spec.listen_timeout,
            false => p.app.spec.min_uptime,
        };
        p.candidate_failure = None;
        p.candidate = Some(Candidate {
            pid: child.pid,
            since: now,
            deadline: now + wait,
            signals,
            ready: false,
            link: child.channel,
        });
        self.timers.insert((now + wait, Timer::Candidate(id)));
        let line = format!(
            "app {} ({id}): reload: replacement pid {}",
            p.app.spec.name, child.pid
        );
        self.log(&line);
        Ok(())
    }

    /// The replacement's deadline: ready if it only had to stay up, failed
    /// if it had to say so.
    fn candidate_due(&mut self, id: u32) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(c) = p.candidate.as_mut() else {
            return;
        };
        if !c.signals {
            c.ready = true;
            return;
        }
        let timeout = p.app.spec.listen_timeout;
        self.drop_candidate(
            id,
            &format!("was not ready within listen_timeout ({timeout} ms)"),
        );
    }

    /// Kill the replacement of app `id`: the reload fails with `why`.
    fn drop_candidate(&mut self, id: u32, why: &str) {
        self.end_candidate(id, why, false);
    }

    /// Kill the replacement of app `id` (or what is left of its group once
    /// `reaped`: a reaped pid is never signalled, but a live group keeps
    /// its id from being reused).
    fn end_candidate(&mut self, id: u32, why: &str, reaped: bool) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(c) = p.candidate.take() else {
            return;
        };
        p.candidate_failure = Some(why.to_string());
        let treekill = p.app.spec.treekill;
        if !reaped {
            send(c.pid, Signal::SIGKILL, treekill);
        } else if treekill && reaper::group_alive(c.pid) {
            send(c.pid, Signal::SIGKILL, true);
        }
        if let Some(link) = c.link {
            self.drop_link(link);
        }
    }

    /// The replacement of app `id` is ready: it becomes the app's process,
    /// and the old one drains — the cluster `disconnect`, or the shutdown
    /// message with graceful_reload, or the kill signal — under its kill
    /// timer.
    fn swap(&mut self, id: u32, graceful: bool) -> bool {
        let now = self.now();
        let Some(p) = self.procs.get_mut(&id) else {
            return false;
        };
        let Some(c) = p.candidate.take() else {
            return false;
        };
        let State::Online { pid: old, .. } = p.m.state else {
            // The old process died meanwhile and is being restarted: the
            // replacement is one too many.
            p.candidate = Some(c);
            self.drop_candidate(id, "lost its predecessor, which crashed meanwhile");
            return false;
        };
        p.m.state = State::Online {
            pid: c.pid,
            since: c.since,
        };
        p.m.restart_time += 1;
        p.pm_uptime = wall_ms();
        p.last_pid = c.pid;
        p.monit = Monit::default();
        let old_link = std::mem::replace(&mut p.channel, c.link);
        let (sig, treekill, deadline) = (
            p.m.policy.kill_signal,
            p.app.spec.treekill,
            now + p.app.spec.kill_timeout,
        );
        let mut drain = Drain {
            pm_id: id,
            pid: old,
            deadline,
            treekill,
            link: old_link,
            then_signal: None,
            reaped: false,
        };
        // graceful_reload: the shutdown message first; a Node worker then
        // gets the cluster disconnect. Asked by message, it gets the kill
        // signal at the deadline and SIGKILL after KILL_GRACE.
        let mut asked = false;
        if let Some(l) = drain.link.as_mut() {
            if graceful {
                asked |= l.ch.send(&json!("shutdown")).is_ok();
            }
            if l.worker > 0 {
                let msg = Cluster::disconnect(&mut l.seq);
                asked |= l.ch.send(&msg).is_ok();
            }
        }
        if asked {
            drain.then_signal = Some(sig);
        } else {
            let sig = Signal::try_from(sig).unwrap_or(Signal::SIGINT);
            send(old, sig, treekill);
            send(old, Signal::SIGCONT, treekill);
        }
        self.timers.insert((deadline, Timer::Drain(old)));
        self.drains.push(drain);
        self.write_pid_file(id, c.pid);
        self.emit(id, "restart");
        self.emit(id, "online");
        true
    }

    /// Close a channel that no process of the table owns any more.
    fn drop_link(&mut self, mut link: Link) {
        let _ = self.poll.registry().deregister(&mut link.ch.sock);
        self.channels.remove(&link.token);
        if link.worker > 0 {
            self.cluster.forget(link.worker);
        }
    }

    /// A process reaped that is not an app's main process: a reload's
    /// replacement that died, or an old process that finished draining.
    fn reap_other(&mut self, pid: i32, exit: Exit) {
        if let Some(i) = self.drains.iter().position(|d| d.pid == pid) {
            let d = &mut self.drains[i];
            d.reaped = true;
            // The rest of its group is waited for, then killed at the
            // deadline, as a stop does.
            if !(d.treekill && reaper::group_alive(pid)) {
                let d = self.drains.remove(i);
                if let Some(link) = d.link {
                    self.drop_link(link);
                }
            }
            return;
        }
        let found = self
            .procs
            .iter()
            .find(|(_, p)| p.candidate.as_ref().is_some_and(|c| c.pid == pid))
            .map(|(id, _)| *id);
        if let Some(id) = found {
            let how = match exit {
                Exit::Code(c) => format!("exited with code {c} before it was ready"),
                Exit::Signal(s) => {
                    format!(
                        "was killed by {} before it was ready",
                        options::signal_name(s)
                    )
                }
            };
            self.end_candidate(id, &how, true);
        }
    }

    /// An old process has not drained within its kill timeout.
    fn drain_due(&mut self, pid: i32) {
        let now = self.now();
        let Some(i) = self.drains.iter().position(|d| d.pid == pid) else {
            return;
        };
        let d = &mut self.drains[i];
        match d.then_signal.take() {
            // Asked by message and still there: the kill signal, then
            // SIGKILL after KILL_GRACE.
            Some(sig) if !d.reaped => {
                let sig = Signal::try_from(sig).unwrap_or(Signal::SIGINT);
                send(d.pid, sig, d.treekill);
                send(d.pid, Signal::SIGCONT, d.treekill);
                d.deadline = now + crate::state::KILL_GRACE;
                self.timers.insert((d.deadline, Timer::Drain(pid)));
            }
            _ => {
                // A reaped leader's group is signalled only while it lives.
                if !d.reaped || reaper::group_alive(d.pid) {
                    send(d.pid, Signal::SIGKILL, d.treekill || d.reaped);
                }
                if d.reaped {
                    let d = self.drains.remove(i);
                    if let Some(link) = d.link {
                        self.drop_link(link);
                    }
                }
            }
        }
    }

    /// Drains whose main process was reaped and whose group is now empty.
    fn settle_drains(&mut self) {
        let gone: Vec<usize> = (0..self.drains.len())
            .rev()
            .filter(|&i| self.drains[i].reaped && !reaper::group_alive(self.drains[i].pid))
            .collect();
        for i in gone {
            let d = self.drains.remove(i);
            if let Some(link) = d.link {
                self.drop_link(link);
            }
        }
    }

    /// Read an app's output, at most `READS_PER_WAKE` chunks: an app that
    /// writes without pause must not keep the loop from everything else.
    /// A pipe left with data is read again in the next wake (`busy_pipes`).
    fn read_pipe(&mut self, t: Token) {
        // Not kept between calls: an idle daemon should not hold 64 KiB of
        // buffer (freed heap goes back to the kernel, see `trim`).
        let mut buf = vec![0u8; READ_CHUNK];
        let mut closed = false;
        let mut reads = 0;
        loop {
            if reads == READS_PER_WAKE {
                self.busy_pipes.push(t);
                break;
            }
            reads += 1;
            let Some(pipe) = self.pipes.get_mut(&t) else {
                return;
            };
            match pipe.rx.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    let (id, stream) = (pipe.pm_id, pipe.stream);
                    if let Some(p) = self.procs.get_mut(&id) {
                        let lf = match stream {
                            Stream::Out => &mut p.out,
                            Stream::Err => &mut p.err,
                        };
                        if let Err(e) = lf.write_chunk(&buf[..n], wall_ms() as i64) {
                            let msg = format!("cannot write {}: {e}", lf.path().display());
                            self.log(&msg);
                        }
                        if self.subscribers > 0 {
                            self.publish_lines(id, stream, &buf[..n]);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed && let Some(mut pipe) = self.pipes.remove(&t) {
            let _ = self.poll.registry().deregister(&mut pipe.rx);
        }
    }

    // ---- connections -----------------------------------------------------

    fn accept_all(&mut self) {
        loop {
            let (mut sock, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.log(&format!("accept failed: {e}"));
                    return;
                }
            };
            let peer_ok = match getsockopt(&sock.as_fd(), PeerCredentials) {
                // SAFETY: geteuid has no preconditions.
                Ok(c) => self.root || c.uid() == unsafe { libc::geteuid() },
                Err(_) => false,
            };
            if !peer_ok {
                let _ = sock.write_all(
                    protocol::err_line(
                        &Value::Null,
                        &WireError::new(
                            ErrorCode::BadRequest,
                            "connection from another user refused",
                        ),
                    )
                    .as_bytes(),
                );
                continue;
            }
            if self.conns.len() >= MAX_CONNS {
                let _ = sock.write_all(
                    protocol::err_line(
                        &Value::Null,
                        &WireError::new(
                            ErrorCode::Internal,
                            format!("too many connections (at most {MAX_CONNS})"),
                        ),
                    )
                    .as_bytes(),
                );
                continue;
            }
            let t = self.token();
            if self
                .poll
                .registry()
                .register(&mut sock, t, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            self.conns.insert(
                t,
                Conn {
                    sock,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    skipping: false,
                    waiting: false,
                    read_closed: false,
                    sub: None,
                },
            );
        }
    }

    /// Answer every complete line, read more, flush; close when done.
    fn service_conn(&mut self, t: Token) {
        let mut buf = [0u8; 8192];
        loop {
            while let Some(line) = self.next_line(t) {
                if self.conns.get(&t).is_some_and(|c| c.sub.is_some()) {
                    // A subscriber's connection carries events only.
                    continue;
                }
                self.handle_line(t, &line);
            }
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            if c.waiting || c.read_closed {
                break;
            }
            match c.sock.read(&mut buf) {
                Ok(0) => c.read_closed = true,
                Ok(n) => c.rbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(t);
                    return;
                }
            }
        }
        self.flush_conn(t);
    }

    /// The next complete line, or an error answered for an overlong one.
    fn next_line(&mut self, t: Token) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&t)?;
        if c.waiting {
            return None;
        }
        loop {
            match c.rbuf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line: Vec<u8> = c.rbuf.drain(..=i).collect();
                    line.pop();
                    if c.skipping {
                        c.skipping = false;
                        continue;
                    }
                    if line.len() > protocol::MAX_LINE {
                        c.wbuf.extend_from_slice(too_long().as_bytes());
                        continue;
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(line);
                }
                None if c.rbuf.len() > protocol::MAX_LINE => {
                    c.rbuf.clear();
                    if !c.skipping {
                        c.skipping = true;
                        c.wbuf.extend_from_slice(too_long().as_bytes());
                    }
                    return None;
                }
                None if c.read_closed && !c.rbuf.is_empty() && !c.skipping => {
                    // A last line without its newline.
                    return Some(std::mem::take(&mut c.rbuf));
                }
                None => return None,
            }
        }
    }

    fn flush_conn(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        while !c.wbuf.is_empty() {
            match c.sock.write(&c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(t);
                    return;
                }
            }
        }
        if c.read_closed && !c.waiting {
            self.drop_conn(t);
        }
    }

    fn drop_conn(&mut self, t: Token) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.sock);
            if c.sub.is_some() {
                self.subscribers -= 1;
            }
        }
    }

    fn reply(&mut self, t: Token, line: String) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.wbuf.extend_from_slice(line.as_bytes());
        }
    }

    fn handle_line(&mut self, t: Token, line: &[u8]) {
        // Requests are rare next to their cost: give the heap they freed
        // back to the kernel at the end of the wake.
        self.trim = true;
        let req = match Request::parse(line) {
            Ok(r) => r,
            Err((id, e)) => return self.reply(t, protocol::err_line(&id, &e)),
        };
        let id = req.id.clone();
        match self.handle(t, req) {
            Ok(Some((result, warnings))) => {
                self.reply(t, protocol::ok_line(&id, &result, &warnings))
            }
            Ok(None) => {}
            Err(e) => self.reply(t, protocol::err_line(&id, &e)),
        }
    }

    /// Handle a request: its result now, or `None` when it was queued in
    /// `pending` to be answered later.
    fn handle(
        &mut self,
        t: Token,
        req: Request,
    ) -> Result<Option<(String, Vec<String>)>, WireError> {
        let done = |v: String| Ok(Some((v, Vec::new())));
        match req.cmd {
            Command::Ping => done(
                json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "pid": std::process::id(),
                    "protocol": PROTOCOL,
                    "uptime_ms": self.started.elapsed().as_millis() as u64,
                })
                .to_string(),
            ),
            Command::List => {
                let ids: Vec<u32> = self.procs.keys().copied().collect();
                done(self.describe_all(&ids))
            }
            Command::Start(args) => {
                if self.stopping_all {
                    return Err(WireError::new(
                        ErrorCode::Internal,
                        "the daemon is shutting down",
                    ));
                }
                let (ids, warnings) = self.start(args)?;
                if ids
                    .iter()
                    .all(|id| self.procs.get(id).is_none_or(|p| p.m.is_settled()))
                {
                    return Ok(Some((self.describe_all(&ids), warnings)));
                }
                // Some wait to say they are ready: answer then.
                self.pending.push(Pending {
                    conn: t,
                    id: req.id,
                    kind: PendingKind::Describe,
                    pm_ids: ids,
                    gone: BTreeMap::new(),
                    stopped: 0,
                    warnings,
                });
                if let Some(c) = self.conns.get_mut(&t) {
                    c.waiting = true;
                }
                Ok(None)
            }
            Command::Act(action, target) => self.act(t, req.id, action, &target),
            Command::SendSignal { signal, target } => {
                let sig = options::parse_signal(&signal)
                    .map_err(|m| WireError::new(ErrorCode::BadRequest, format!("signal: {m}")))?;
                let sig = Signal::try_from(sig).map_err(|_| {
                    WireError::new(
                        ErrorCode::BadRequest,
                        format!("signal {sig} cannot be sent"),
                    )
                })?;
                let ids = self.resolve(&target)?;
                let running: Vec<u32> = ids
                    .into_iter()
                    .filter(|id| self.procs[id].m.is_running())
                    .collect();
                if running.is_empty() {
                    return Err(WireError::new(
                        ErrorCode::NotFound,
                        format!("no running process for target {target}"),
                    ));
                }
                for id in &running {
                    let p = &self.procs[id];
                    if let Some(pid) = p.m.pid() {
                        send(pid, sig, p.app.spec.treekill);
                    }
                }
                done(self.describe_all(&running))
            }
            Command::KillDaemon => {
                self.stop_everything(t, req.id);
                Ok(None)
            }
            Command::SendData { packet } => self.send_data(packet).map(|v| Some((v, Vec::new()))),
            Command::Subscribe { events } => {
                if let Some(c) = self.conns.get_mut(&t)
                    && c.sub.is_none()
                {
                    c.sub = Some(Subscription::new(Filter::new(events)));
                    self.subscribers += 1;
                }
                done(json!({"subscribed": true}).to_string())
            }
            Command::Flush(target) => {
                let ids = match &target {
                    Some(t) => self.resolve(t)?,
                    None => self.procs.keys().copied().collect(),
                };
                // Every file, even past one that fails; then the failures.
                let mut files = BTreeSet::new();
                let mut failed = Vec::new();
                for id in ids {
                    if let Some(p) = self.procs.get_mut(&id) {
                        for lf in [&mut p.out, &mut p.err] {
                            match lf.truncate() {
                                Ok(true) => {
                                    files.insert(lf.path().to_path_buf());
                                }
                                Ok(false) => {}
                                Err(e) => failed
                                    .push(format!("cannot empty {}: {e}", lf.path().display())),
                            }
                        }
                    }
                }
                if !failed.is_empty() {
                    return Err(internal(&failed.join("; ")));
                }
                done(json!({ "files": files.len() }).to_string())
            }
            Command::Scale { name, instances } => {
                if self.stopping_all {
                    return Err(internal("the daemon is shutting down"));
                }
                let (keep, drop) = self.scale(&name, &instances)?;
                for id in &drop {
                    self.unwatch_app(*id);
                    let _ = self.step(*id, Input::Delete);
                }
                let mut ids = keep;
                ids.extend(drop);
                self.pending.push(Pending {
                    conn: t,
                    id: req.id,
                    kind: PendingKind::Present,
                    pm_ids: ids,
                    gone: BTreeMap::new(),
                    stopped: 0,
                    warnings: Vec::new(),
                });
                if let Some(c) = self.conns.get_mut(&t) {
                    c.waiting = true;
                }
                Ok(None)
            }
            Command::ReloadLogs => {
                let n = self.reopen_logs();
                done(json!({ "files": n }).to_string())
            }
        }
    }

    /// `send_data`: one packet to an app's channel, as PM2's
    /// `sendDataToProcessId` sends it.
    fn send_data(&mut self, packet: Value) -> Result<String, WireError> {
        let bad = |m: &str| WireError::new(ErrorCode::BadRequest, m);
        let Value::Object(mut packet) = packet else {
            return Err(bad("`packet` must be an object"));
        };
        let id = packet
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad("`packet.id` must be a pm_id"))?;
        if !packet.contains_key("data") {
            return Err(bad("`packet.data` is required"));
        }
        packet.entry("type").or_insert_with(|| json!("process:msg"));
        let p = self.procs.get_mut(&id).ok_or_else(|| {
            WireError::new(ErrorCode::NotFound, format!("no process with pm_id {id}"))
        })?;
        let Some(ch) = p
            .channel
            .as_mut()
            .map(|l| &mut l.ch)
            .filter(|ch| ch.is_open())
        else {
            return Err(WireError::new(
                ErrorCode::NoChannel,
                format!("{} ({id}) has no open IPC channel", p.app.spec.name),
            ));
        };
        ch.send(&Value::Object(packet))
            .map_err(|e| WireError::new(ErrorCode::NoChannel, e))?;
        Ok(json!({"delivered": true}).to_string())
    }

    /// The instance indexes of the apps named `name`.
    fn instances_of(&self, name: &str) -> Vec<u32> {
        self.procs
            .values()
            .filter(|p| p.app.spec.name == name)
            .map(|p| p.app.slot.instance)
            .collect()
    }

    /// The pm_ids a target names, in order; `not_found` if none.
    fn resolve(&self, target: &Target) -> Result<Vec<u32>, WireError> {
        let ids: Vec<u32> = match target {
            Target::All => self.procs.keys().copied().collect(),
            Target::Id(id) => self
                .procs
                .contains_key(id)
                .then_some(*id)
                .into_iter()
                .collect(),
            Target::Name(n) => {
                let by_name: Vec<u32> = self
                    .procs
                    .iter()
                    .filter(|(_, p)| &p.app.spec.name == n)
                    .map(|(id, _)| *id)
                    .collect();
                if by_name.is_empty() {
                    self.procs
                        .iter()
                        .filter(|(_, p)| &p.app.spec.namespace == n)
                        .map(|(id, _)| *id)
                        .collect()
                } else {
                    by_name
                }
            }
        };
        if ids.is_empty() && *target != Target::All {
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("no process named {target}"),
            ));
        }
        Ok(ids)
    }

    fn act(
        &mut self,
        t: Token,
        id: Value,
        action: Action,
        target: &Target,
    ) -> Result<Option<(String, Vec<String>)>, WireError> {
        if action == Action::Describe {
            let ids = self.resolve(target).unwrap_or_default();
            return Ok(Some((self.describe_all(&ids), Vec::new())));
        }
        let ids = self.resolve(target)?;
        let graceful = action == Action::GracefulReload;
        let reload = matches!(action, Action::Reload | Action::GracefulReload);
        if reload && ids.iter().any(|id| self.rolls(*id)) {
            return self.begin_reload(t, id, ids, graceful);
        }
        let input = match action {
            Action::Stop => Input::Stop,
            Action::Restart | Action::Reload | Action::GracefulReload => Input::Restart,
            Action::Delete => Input::Delete,
            Action::Reset => {
                for id in &ids {
                    if let Some(p) = self.procs.get_mut(id) {
                        p.m.restart_time = 0;
                        p.m.unstable_restarts = 0;
                    }
                }
                return Ok(Some((self.describe_all(&ids), Vec::new())));
            }
            Action::Describe => Input::Stop,
        };
        if (input == Input::Restart) && self.stopping_all {
            return Err(WireError::new(
                ErrorCode::Internal,
                "the daemon is shutting down",
            ));
        }
        // Register the answer before stepping, so a delete that forgets an
        // app at once still finds its description.
        self.pending.push(Pending {
            conn: t,
            id,
            kind: PendingKind::Describe,
            pm_ids: ids.clone(),
            gone: BTreeMap::new(),
            stopped: 0,
            warnings: Vec::new(),
        });
        if let Some(c) = self.conns.get_mut(&t) {
            c.waiting = true;
        }
        let mut errors = Vec::new();
        for pm_id in &ids {
            self.drop_candidate(*pm_id, "was cancelled by a stop, restart or delete");
            // Watching ends with a stop or delete, and starts again with a
            // restart, as in PM2.
            let watched = match input {
                Input::Stop | Input::Delete => {
                    self.unwatch_app(*pm_id);
                    Ok(())
                }
                _ => self.watch_app(*pm_id),
            };
            if let Err(e) = watched.and_then(|()| self.step(*pm_id, input)) {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            if let Some(c) = self.conns.get_mut(&t) {
                c.waiting = false;
            }
            self.pending.pop();
            return Err(join_errors(errors));
        }
        Ok(None)
    }

    /// Answer the pending requests whose apps have all settled.
    fn finish_pending(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            let op = &self.pending[i];
            let settled = op.pm_ids.iter().all(|id| match self.procs.get(id) {
                None => true,
                Some(p) => match op.kind {
                    PendingKind::Describe | PendingKind::Present => p.m.is_settled(),
                    // Not running, and not waiting for the rest of its group.
                    PendingKind::KillDaemon => {
                        !p.m.is_running() && p.m.is_settled() && p.candidate.is_none()
                    }
                },
            });
            // The daemon leaves no draining process behind either.
            let settled =
                settled && (!matches!(op.kind, PendingKind::KillDaemon) || self.drains.is_empty());
            if !settled {
                i += 1;
                continue;
            }
            let op = self.pending.remove(i);
            let line = match op.kind {
                PendingKind::Describe | PendingKind::Present => {
                    let present = matches!(op.kind, PendingKind::Present);
                    let list: Vec<Description> = op
                        .pm_ids
                        .iter()
                        .filter_map(|id| match self.describe(*id) {
                            Some(d) => Some(d),
                            None if present => None,
                            None => op.gone.get(id).cloned(),
                        })
                        .collect();
                    protocol::ok_line(&op.id, &to_json(&list), &op.warnings)
                }
                PendingKind::KillDaemon => {
                    if !self.exit_now {
                        self.publish("daemon:kill", json!({"at": wall_ms()}));
                    }
                    self.exit_now = true;
                    protocol::ok_line(&op.id, &json!({"stopped": op.stopped}).to_string(), &[])
                }
            };
            if let Some(c) = self.conns.get_mut(&op.conn) {
                c.waiting = false;
                c.wbuf.extend_from_slice(line.as_bytes());
            }
            if self.exit_now {
                self.flush_all();
            } else {
                self.service_conn(op.conn);
            }
        }
    }

    /// Before exiting: give every reply a last chance to be written, without
    /// blocking on a client that does not read (its answer is lost, as it
    /// would be if it had gone).
    fn flush_all(&mut self) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            if let Some(c) = self.conns.get_mut(&t) {
                c.read_closed = true;
                c.waiting = false;
            }
            self.flush_conn(t);
        }
    }

    fn cleanup(&mut self) {
        self.log("daemon exiting");
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.pid_file);
    }

    // ---- start -----------------------------------------------------------

    /// Start apps; the pm_ids started and the warnings.
    fn start(&mut self, args: StartArgs) -> Result<(Vec<u32>, Vec<String>), WireError> {
        if let Some(target) = &args.target {
            let ids = self.resolve(target)?;
            for id in &ids {
                if !self.procs[id].m.is_running() {
                    self.watch_app(*id)?;
                    self.step(*id, Input::Start)?;
                }
            }
            return Ok((ids, Vec::new()));
        }
        // Validate everything before changing anything.
        let many = args.apps.len() > 1;
        let mut warnings = Vec::new();
        let mut specs = Vec::new();
        for (i, v) in args.apps.iter().enumerate() {
            let parsed = parse_app(v).map_err(|e| {
                let at = if many {
                    format!("apps[{i}]: ")
                } else {
                    String::new()
                };
                WireError::new(ErrorCode::InvalidOption, format!("{at}{e}"))
            })?;
            warnings.extend(parsed.warnings);
            specs.push(parsed.spec);
        }
        if let Some(name) = &args.env_name
            && !specs.iter().any(|s| s.env_overlays.contains_key(name))
        {
            return Err(WireError::new(
                ErrorCode::InvalidOption,
                format!("no app has `env_{name}` (from --env {name})"),
            ));
        }
        let caller_env = args.caller_env.map(Rc::new);
        let mut plan = Vec::new();
        let mut binds = Vec::new();
        let mut next_id = self.next_id;
        let mut replaced = Vec::new();
        for spec in specs {
            let same: Vec<u32> = self
                .procs
                .iter()
                .filter(|(_, p)| p.app.spec.name == spec.name)
                .map(|(id, _)| *id)
                .collect();
            // Still stopping (its group lingering) counts as running.
            let busy = |p: &Proc| p.m.is_running() || !p.m.is_settled();
            if !spec.force && same.iter().any(|id| busy(&self.procs[id])) {
                return Err(WireError::new(
                    ErrorCode::AlreadyRunning,
                    format!(
                        "{} is already running (pm_id {}); use force to start another",
                        spec.name, same[0]
                    ),
                ));
            }
            let count = instance_count(spec.instances, cpu_count());
            if !spec.listen.is_empty() {
                let addrs: Vec<listen::Addr> = spec
                    .listen
                    .iter()
                    .filter_map(|a| listen::parse(a).ok())
                    .collect();
                let key = listen_key(&spec);
                let held: Vec<&listen::Addr> = self
                    .listeners
                    .get(&key)
                    .map(|l| l.iter().map(|(a, _)| a).collect())
                    .unwrap_or_default();
                if held != addrs.iter().collect::<Vec<_>>() {
                    let mut socks = Vec::new();
                    for a in addrs {
                        // An address already held is kept (a copy of it):
                        // binding it again would find it in use.
                        let held_fd = self
                            .listeners
                            .get(&key)
                            .and_then(|l| l.iter().find(|(h, _)| *h == a))
                            .and_then(|(_, fd)| fd.try_clone().ok());
                        let fd = match held_fd {
                            Some(fd) => fd,
                            None => a.bind().map_err(|e| {
                                WireError::new(
                                    ErrorCode::InvalidOption,
                                    format!("option `listen`: {e}"),
                                )
                            })?,
                        };
                        socks.push((a, fd));
                    }
                    binds.push((key, socks));
                }
            }
            let cluster = spec.cluster.unwrap_or(false) && !spec.execute_command;
            // Stopped apps of that name: one is started again with the new
            // options, as PM2 does; several are replaced by fresh instances.
            let reuse = match (spec.force, same.as_slice(), count) {
                (false, [one], 1) => Some(*one),
                _ => None,
            };
            if !spec.force && reuse.is_none() {
                replaced.extend(same.iter().copied());
            }
            let taken: Vec<u32> = match spec.force {
                true => self.instances_of(&spec.name),
                false => Vec::new(),
            };
            let indexes = free_indexes(&taken, count);
            for instance in indexes {
                let pm_id = match reuse {
                    Some(id) => id,
                    None => {
                        next_id += 1;
                        next_id - 1
                    }
                };
                let slot = Slot {
                    pm_id,
                    instance,
                    count: count as u32,
                    cluster,
                };
                let app = App::resolve(
                    spec.clone(),
                    slot,
                    &self.home,
                    caller_env.clone(),
                    args.env_name.clone(),
                    self.root,
                )?;
                let (out, err) = open_logs(&app)?;
                check_watch(&app)?;
                plan.push((pm_id, reuse.is_some(), app, out, err));
            }
        }
        for id in replaced {
            self.drop_candidate(id, "was cancelled: the app was replaced");
            self.unwatch_app(id);
            self.close_channel(id);
            self.procs.remove(&id);
        }
        for (name, socks) in binds {
            self.listeners.insert(name, socks);
        }
        let mut started = Vec::new();
        let mut failures = Vec::new();
        for (pm_id, reused, app, out, err) in plan {
            match self.install(pm_id, reused, app, out, err) {
                Ok(()) => started.push(pm_id),
                Err(e) => failures.push(e),
            }
        }
        if !failures.is_empty() {
            return Err(join_errors(failures));
        }
        Ok((started, warnings))
    }

    /// Put app `pm_id` in the table (or give a known one its new options),
    /// start it unless `autostart` is false, arm its cron. A start that
    /// fails leaves nothing behind.
    fn install(
        &mut self,
        pm_id: u32,
        reused: bool,
        app: App,
        out: LogFile,
        err: LogFile,
    ) -> Result<(), WireError> {
        let autostart = app.spec.autostart;
        let write = app.spec.write;
        let policy = policy_of(&app);
        let cron = app
            .spec
            .cron_restart
            .as_deref()
            .and_then(|c| Cron::parse(c).ok());
        if reused {
            self.unwatch_app(pm_id);
            let p = self
                .procs
                .get_mut(&pm_id)
                .ok_or_else(|| internal("vanished"))?;
            p.app = app;
            p.out = out;
            p.err = err;
            p.m.policy = policy;
            p.cron = cron;
            p.cron_at = None;
            p.cron_fired = None;
        } else {
            self.next_id = self.next_id.max(pm_id + 1);
            self.procs.insert(
                pm_id,
                Box::new(Proc::new(app, Machine::new(policy), out, err, cron)),
            );
        }
        let begun = match autostart {
            true => self
                .watch_app(pm_id)
                .and_then(|()| self.step(pm_id, Input::Start)),
            false => Ok(()),
        };
        if let Err(e) = begun {
            self.unwatch_app(pm_id);
            if !reused {
                self.close_channel(pm_id);
                self.procs.remove(&pm_id);
            }
            return Err(e);
        }
        self.arm_cron(pm_id);
        if write {
            self.write_app_file(pm_id);
        }
        Ok(())
    }

    /// `scale`: grow or shrink the instances of the app `name` to `want`;
    /// the pm_ids of those that stay or come.
    fn scale(&mut self, name: &str, want: &Value) -> Result<(Vec<u32>, Vec<u32>), WireError> {
        let bad = |m: String| WireError::new(ErrorCode::BadRequest, m);
        let ids: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.app.spec.name == name)
            .map(|(id, _)| *id)
            .collect();
        let Some(&first) = ids.first() else {
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("no process named {name}"),
            ));
        };
        let have = ids.len() as i64;
        let target = match want {
            Value::Number(n) => n.as_i64(),
            Value::String(s) if s.starts_with('+') || s.starts_with('-') => {
                s[1..].parse::<i64>().ok().map(|d| {
                    if s.starts_with('+') {
                        have + d
                    } else {
                        have - d
                    }
                })
            }
            Value::String(s) => s.parse::<i64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "`instances` must be a number, +N or -N, got {want}"
            ))
        })?;
        if target < 1 || target as usize > options::MAX_INSTANCES {
            return Err(bad(format!(
                "cannot scale {name} to {target} instances (1 to {})",
                options::MAX_INSTANCES
            )));
        }
        let target = target as usize;
        // Every instance knows how many there are (descriptions, reload).
        for id in &ids {
            if let Some(p) = self.procs.get_mut(id) {
                p.app.slot.count = target as u32;
            }
        }
        if target <= ids.len() {
            // The newest go first.
            let (keep, drop) = ids.split_at(target);
            return Ok((keep.to_vec(), drop.to_vec()));
        }
        let template = self.procs[&first].app.clone();
        let taken = self.instances_of(name);
        let mut kept = ids.clone();
        for instance in free_indexes(&taken, target - ids.len()) {
            let pm_id = self.next_id;
            let slot = Slot {
                pm_id,
                instance,
                count: target as u32,
                cluster: template.slot.cluster,
            };
            let app = App::resolve(
                template.spec.clone(),
                slot,
                &self.home,
                template.base_env.clone(),
                template.env_name.clone(),
                self.root,
            )?;
            let (out, err) = open_logs(&app)?;
            self.install(pm_id, false, app, out, err)?;
            kept.push(pm_id);
        }
        Ok((kept, Vec::new()))
    }

    /// `write`: the resolved options in `<name>-corral.json` in the cwd.
    fn write_app_file(&mut self, id: u32) {
        let Some(d) = self.describe(id) else { return };
        let Some(p) = self.procs.get(&id) else { return };
        let path = p.app.cwd.join(format!(
            "{}-corral.json",
            crate::app::file_stem(&p.app.spec.name)
        ));
        let text = serde_json::to_string_pretty(&d.pm2_env).unwrap_or_default();
        if let Err(e) = write_atomic(&path, text.as_bytes(), false) {
            self.log(&format!("app {id}: cannot write {}: {e}", path.display()));
        }
    }

    // ---- descriptions ----------------------------------------------------

    /// The descriptions of `ids` as JSON text.
    fn describe_all(&self, ids: &[u32]) -> String {
        let list: Vec<Description> = ids.iter().filter_map(|id| self.describe(*id)).collect();
        to_json(&list)
    }

    /// The description of app `id`, with its last sample.
    fn describe(&self, id: u32) -> Option<Description> {
        let p = self.procs.get(&id)?;
        let pid = p.m.pid().unwrap_or(0);
        let monit = match p.m.state {
            State::Online { .. } | State::Launching { .. } => p.monit.clone(),
            _ => Monit::default(),
        };
        let a = &p.app;
        let (exit_code, exit_signal) = match p.m.last_exit {
            Some(Exit::Code(c)) => (Some(c), None),
            Some(Exit::Signal(s)) => (None, Some(options::signal_name(s))),
            None => (None, None),
        };
        Some(Description {
            pid,
            name: a.spec.name.clone(),
            pm_id: id,
            monit,
            pm2_env: Pm2Env {
                name: a.spec.name.clone(),
                pm_id: id,
                namespace: a.spec.namespace.clone(),
                status: p.m.status(),
                pm_exec_path: a.shown_exec_path(),
                pm_cwd: a.cwd.display().to_string(),
                exec_interpreter: a.interpreter_name(),
                node_args: a.spec.interpreter_args.clone(),
                args: a.spec.args.clone(),
                exec_mode: if a.slot.cluster {
                    "cluster_mode"
                } else {
                    "fork_mode"
                }
                .into(),
                instances: a.slot.count,
                instance_var: a.spec.instance_var.clone(),
                node_app_instance: a.slot.instance,
                pm_out_log_path: a.out_path.display().to_string(),
                pm_err_log_path: a.err_path.display().to_string(),
                pm_pid_path: a.pid_path.display().to_string(),
                pm_uptime: p.pm_uptime,
                created_at: p.created_at,
                restart_time: p.m.restart_time,
                unstable_restarts: p.m.unstable_restarts,
                exit_code,
                exit_signal,
                autorestart: a.spec.autorestart,
                watch: match &a.spec.watch {
                    Watch::Off => json!(false),
                    Watch::Cwd => json!(true),
                    Watch::Paths(paths) => json!(paths),
                },
                ignore_watch: a.spec.ignore_watch.clone().unwrap_or_else(|| {
                    DEFAULT_IGNORE_WATCH.iter().map(|s| s.to_string()).collect()
                }),
                watch_delay: a.spec.watch_delay,
                max_memory_restart: a.spec.max_memory_restart,
                exp_backoff_restart_delay: a.spec.exp_backoff_restart_delay,
                prev_restart_delay: a
                    .spec
                    .exp_backoff_restart_delay
                    .map(|_| p.m.prev_restart_delay),
                cron_restart: a.spec.cron_restart.clone(),
                wait_ready: a.spec.wait_ready,
                listen_timeout: a.spec.listen_timeout,
                shutdown_with_message: a.spec.shutdown_with_message,
                ipc: a.spec.ipc,
                notify_status: p.notify_status.clone(),
                node_version: p.node_version.clone(),
                env: a.shown_env(),
                min_uptime: a.spec.min_uptime,
                max_restarts: a.spec.max_restarts,
                kill_timeout: a.spec.kill_timeout,
                kill_signal: a.kill_signal_name(),
                restart_delay: a.spec.restart_delay,
                stop_exit_codes: a.spec.stop_exit_codes.clone(),
                treekill: a.spec.treekill,
                log_date_format: a.spec.log_date_format.clone(),
                merge_logs: a.spec.merge_logs,
                uid: a.spec.uid.clone(),
                gid: a.spec.gid.clone(),
                autostart: a.spec.autostart,
                version: "N/A".into(),
                axm_actions: Vec::new(),
                axm_monitor: Map::new(),
                axm_options: Map::new(),
                axm_dynamic: Map::new(),
            },
        })
    }
}

/// Descriptions as JSON text, in a buffer sized once.
fn to_json(list: &[Description]) -> String {
    let mut out = Vec::with_capacity(list.len() * DESCRIPTION_BYTES + 2);
    match serde_json::to_writer(&mut out, list) {
        Ok(()) => String::from_utf8(out).unwrap_or_else(|_| "[]".to_string()),
        Err(_) => "[]".to_string(),
    }
}

/// The code of a failed spawn: the program cannot be run, or an option
/// (cwd, uid, gid) cannot be applied.
fn spawn_error_code(e: &SpawnError) -> ErrorCode {
    match e.step {
        Step::Exec => ErrorCode::ScriptNotFound,
        Step::Chdir | Step::Groups | Step::Gid | Step::Uid => ErrorCode::InvalidOption,
        Step::Setsid | Step::Dup => ErrorCode::Internal,
    }
}

/// Several errors of one request as one: the first one's code, every message.
fn join_errors(errors: Vec<WireError>) -> WireError {
    let code = errors.first().map_or(ErrorCode::Internal, |e| e.code);
    let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
    WireError::new(code, msgs.join("; "))
}

fn internal(m: &str) -> WireError {
    WireError::new(ErrorCode::Internal, m)
}

fn too_long() -> String {
    protocol::err_line(
        &Value::Null,
        &WireError::new(
            ErrorCode::BadRequest,
            format!("request line longer than {} bytes", protocol::MAX_LINE),
        ),
    )
}

/// Whose `listen` sockets these are: the instances of one name in one
/// namespace share them.
fn listen_key(spec: &options::AppSpec) -> String {
    format!("{}/{}", spec.namespace, spec.name)
}

/// The two log files of an app, open for appending.
fn open_logs(app: &App) -> Result<(LogFile, LogFile), WireError> {
    let open = |path: &Path| {
        LogFile::open(path, app.spec.log_date_format.as_deref()).map_err(|e| {
            WireError::new(
                ErrorCode::InvalidOption,
                format!("cannot open log {}: {e}", path.display()),
            )
        })
    };
    Ok((open(&app.out_path)?, open(&app.err_path)?))
}

/// How many CPUs this process may use (`instances: "max"`).
fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The `count` lowest instance indexes not in `taken`.
fn free_indexes(taken: &[u32], count: usize) -> Vec<u32> {
    (0..).filter(|i| !taken.contains(i)).take(count).collect()
}

/// The paths `watch` names exist, and `ignore_watch` parses.
fn check_watch(app: &App) -> Result<(), WireError> {
    let invalid = |m: String| WireError::new(ErrorCode::InvalidOption, m);
    if let Watch::Paths(paths) = &app.spec.watch {
        for p in paths {
            let full = app.cwd.join(p);
            if !full.exists() {
                return Err(invalid(format!(
                    "option `watch`: {} does not exist",
                    full.display()
                )));
            }
        }
    }
    if let Some(patterns) = &app.spec.ignore_watch {
        Ignore::new(patterns, Vec::new())
            .map_err(|e| invalid(format!("option `ignore_watch`: {e}")))?;
    }
    Ok(())
}

fn policy_of(app: &App) -> Policy {
    let s = &app.spec;
    Policy {
        min_uptime: s.min_uptime,
        max_restarts: s.max_restarts,
        restart_delay: s.restart_delay,
        autorestart: s.autorestart,
        stop_exit_codes: s.stop_exit_codes.clone(),
        kill_timeout: s.kill_timeout,
        kill_signal: s.kill_signal,
        treekill: s.treekill,
        wait_ready: s.wait_ready.then_some(s.listen_timeout),
        shutdown_with_message: s.shutdown_with_message,
        exp_backoff: s.exp_backoff_restart_delay,
    }
}

/// Signal a process group or one process; a vanished target is normal.
fn send(pid: i32, sig: Signal, group: bool) {
    let pid = Pid::from_raw(pid);
    let _ = if group {
        killpg(pid, sig)
    } else {
        kill(pid, sig)
    };
}

fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on an fd this process owns; flags only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

fn clear_nonblocking(fd: i32) {
    // SAFETY: fcntl on an fd this process owns; flags only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// Write a file through `.tmp` + rename (STYLE 12), so nobody reads it half
/// written; `durable` adds an fsync before the rename, for files that must
/// survive a crash of the machine (pid files need not).
pub fn write_atomic(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(data)?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
