//! Start-up: the home made the daemon's own (0700, `logs/` and `pids/`
//! never writable by others), the pid file locked before the socket is
//! bound, the socket bound with the right mode, signals turned into bytes
//! on a socket pair, the poller, the sd_notify socket, the fd limit, and
//! errors that say what was being done. Runs once, before the loop; never
//! touches an app.

use std::os::fd::FromRawFd;

use super::*;

/// Why the daemon could not start: what it was doing, and the system's
/// reason.
#[derive(Debug)]
pub struct StartupError {
    doing: String,
    cause: io::Error,
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.doing, self.cause)
    }
}

/// `map_err` to a `StartupError` that says what was being done.
fn failed<E: Into<io::Error>>(doing: impl Into<String>) -> impl FnOnce(E) -> StartupError {
    let doing = doing.into();
    move |e| StartupError {
        doing,
        cause: e.into(),
    }
}

/// Make the home the daemon's alone: created 0700, or an existing one
/// owned by the daemon's user tightened to 0700; one of another user's is
/// refused.
fn own_home(home: &std::path::Path) -> Result<(), StartupError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let shown = home.display();
    if !home.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
            .map_err(failed(format!("cannot create home {shown}")))?;
    }
    let meta = std::fs::metadata(home).map_err(failed(format!("cannot read home {shown}")))?;
    let me = sys::euid();
    if !meta.is_dir() {
        return Err(StartupError {
            doing: format!("home {shown}"),
            cause: io::Error::other("not a directory"),
        });
    }
    if meta.uid() != me {
        return Err(StartupError {
            doing: format!("home {shown}"),
            cause: io::Error::other(format!(
                "owned by uid {}, not by the daemon's user (uid {me})",
                meta.uid()
            )),
        });
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
            .map_err(failed(format!("cannot set the mode of {shown}")))?;
    }
    Ok(())
}

/// A directory of the daemon's (`logs/`, `pids/`): never writable by
/// group or others, whatever the umask.
fn own_dir(dir: &std::path::Path) -> Result<(), StartupError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let shown = dir.display();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(failed(format!("cannot create {shown}")))?;
    let meta = std::fs::metadata(dir).map_err(failed(format!("cannot read {shown}")))?;
    if meta.uid() != sys::euid() {
        return Err(StartupError {
            doing: shown.to_string(),
            cause: io::Error::other(format!(
                "owned by uid {}, not by the daemon's user (uid {})",
                meta.uid(),
                sys::euid()
            )),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o022))
            .map_err(failed(format!("cannot set the mode of {shown}")))?;
    }
    Ok(())
}

/// Bind the control socket at `path`, 0600 from birth (umask around
/// `bind`). What is already there is replaced only if it is a socket
/// nobody listens on (a daemon that died); anything else is an error
/// naming it.
fn bind_socket(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener, StartupError> {
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display();
    let cannot = |why: String| StartupError {
        doing: format!("cannot bind {shown}"),
        cause: io::Error::other(why),
    };
    if path.as_os_str().len() >= 108 {
        return Err(cannot("the path is too long (at most 107 bytes)".into()));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(failed(format!("cannot look at {shown}"))(e)),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(cannot(
                "a file that is not a socket is there; remove it if it is not needed".into(),
            ));
        }
        Ok(_) => match StdStream::connect(path) {
            Ok(_) => {
                return Err(cannot(
                    "the socket is in use (another daemon listens there)".into(),
                ));
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(failed(format!("cannot remove the stale socket {shown}")))?;
            }
            Err(e) => return Err(failed(format!("cannot look at {shown}"))(e)),
        },
    }
    // SAFETY: umask(2) cannot fail; the daemon has one thread, so no other
    // file is created under the narrower mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, the previous mask back.
    unsafe { libc::umask(old) };
    bound.map_err(failed(format!("cannot bind {shown}")))
}

/// Lock the pid file, then bind the control socket (STYLE 12).
fn lock_and_bind(
    cfg: &Config,
    home: &Home,
    pid_file: &std::path::Path,
) -> Result<(Flock<File>, std::os::unix::net::UnixListener), StartupError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(pid_file)
        .map_err(failed(format!("cannot open {}", pid_file.display())))?;
    let mut lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut f, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(StartupError {
                doing: format!("a daemon (pid {}) already runs", pid.trim()),
                cause: io::Error::other(format!("home {}", home.dir.display())),
            });
        }
        Err((_, e)) => return Err(failed(format!("cannot lock {}", pid_file.display()))(e)),
    };
    lock.set_len(0)
        .and_then(|_| lock.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(failed(format!("cannot write {}", pid_file.display())))?;

    let std_listener = bind_socket(&cfg.socket)?;
    std_listener
        .set_nonblocking(true)
        .map_err(failed(format!("cannot set up {}", cfg.socket.display())))?;
    Ok((lock, std_listener))
}

/// The pid file's lock and the control socket a previous image handed over
/// (`corral update`): the lock is still held (the same open file), the
/// socket still bound and listening.
fn adopt_fds(
    h: &handover::State,
) -> Result<(Flock<File>, std::os::unix::net::UnixListener), StartupError> {
    // SAFETY: the old image handed these fds over; owned here alone.
    let f = unsafe { File::from_raw_fd(h.lock) };
    let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| failed("cannot keep the pid file's lock")(e))?;
    // SAFETY: as above.
    let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(h.listener) };
    l.set_nonblocking(true)
        .map_err(failed("cannot set up the control socket"))?;
    Ok((lock, l))
}

impl Daemon {
    pub(super) fn new(
        cfg: &Config,
        handed: Option<&handover::State>,
    ) -> Result<Daemon, StartupError> {
        own_home(&cfg.home)?;
        let home = Home {
            dir: cfg.home.clone(),
        };
        for dir in [home.logs(), home.pids()] {
            own_dir(&dir)?;
        }
        let spares = super::pidfiles::Spares::adopt(home.pids());
        let pid_file = home.dir.join("corral.pid");
        let (lock, std_listener) = match handed {
            Some(h) => adopt_fds(h)?,
            None => lock_and_bind(cfg, &home, &pid_file)?,
        };
        let mut listener = UnixListener::from_std(std_listener);

        let (sig_r, sig_w) = StdStream::pair().map_err(failed("cannot make a socket pair"))?;
        sig_r
            .set_nonblocking(true)
            .and_then(|_| sig_w.set_nonblocking(true))
            .map_err(failed("cannot set up the signal pipe"))?;
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
            .map_err(failed(format!("cannot catch signal {sig}")))?;
        }
        // The write end lives as long as the process: the handlers use it.
        std::mem::forget(sig_w);
        // A previous image (`corral update`) blocked them across execve:
        // what came meanwhile is delivered to the handlers now.
        sys::block_signals(&CAUGHT, false);
        let mut signals = UnixStream::from_std(sig_r);

        reaper::become_subreaper().map_err(failed("cannot become a subreaper"))?;
        // As many fds as allowed: apps and clients each cost some. Failing
        // leaves the limit as it was, which is no reason not to start.
        let _ = sys::raise_fd_limit();

        let poll = Poll::new().map_err(failed("cannot create the poller"))?;
        let reg = poll.registry();
        reg.register(&mut listener, LISTENER, Interest::READABLE)
            .and_then(|_| reg.register(&mut signals, SIGNALS, Interest::READABLE))
            .map_err(failed("cannot register with the poller"))?;
        if cfg.lifeline {
            sys::set_nonblocking(0, true).map_err(failed("cannot watch stdin"))?;
            reg.register(&mut SourceFd(&0), LIFELINE, Interest::READABLE)
                .map_err(failed("cannot watch stdin"))?;
        }
        let bound = match handed.and_then(|h| h.notify.as_ref()) {
            Some((fd, path)) => Ok(Notify {
                // SAFETY: the old image handed this fd over; owned here.
                sock: mio::net::UnixDatagram::from_std(unsafe {
                    std::os::unix::net::UnixDatagram::from_raw_fd(*fd)
                }),
                path: path.clone(),
            }),
            None => Notify::bind(&home.dir.join("notify.sock")),
        };
        let notify = match bound {
            Ok(mut n) => {
                reg.register(&mut n.sock, NOTIFY, Interest::READABLE)
                    .map_err(failed("cannot register with the poller"))?;
                Some(n)
            }
            // A home too deep for a socket path: apps get no NOTIFY_SOCKET.
            Err(_) => None,
        };
        // The daemon's own log is stamped like an app's (`log_date_format`).
        let log_file = LogFile::open(
            &home.dir.join("corral.log"),
            Some(options::TIME_LOG_DATE_FORMAT),
            None,
        )
        .ok()
        .map(|f| {
            f.with_rotation(cfg.max_log_size.map(|max| Rotation {
                max,
                retain: cfg.log_retain,
            }))
        });
        let console = cfg.runtime.as_ref().map(|rt| Console::new(rt, &poll));
        let cgroups = crate::cgroup::Cgroups::open();
        let proc_cgroups = crate::cgroup::ByPid::new(cgroups.as_ref().map(|c| c.base()));
        Ok(Daemon {
            poll,
            home,
            socket: cfg.socket.clone(),
            listener,
            signals,
            _lock: lock,
            pid_file,
            log_file,
            table: Table::default(),
            conns: HashMap::new(),
            accept_paused: false,
            accept_failing: false,
            pipes: HashMap::new(),
            busy_pipes: Vec::new(),
            // Whatever ended before the handler was installed.
            reap_due: true,
            channels: Default::default(),
            execs: HashMap::new(),
            held: Vec::new(),
            console,
            next_token: FIRST_DYNAMIC,
            timers: Timers::default(),
            sampler: Sampler::new(),
            sample_interval: cfg.sample_interval,
            sample_at: None,
            watchdog: startup::watchdog_interval().map(|d| (d.as_millis() as u64 / 2).max(1)),
            watcher: None,
            notify,
            listeners: HashMap::new(),
            cluster: Cluster::new(),
            next_worker: 0,
            reloads: Vec::new(),
            subscribers: 0,
            pending: Vec::new(),
            clock: Instant::now(),
            started: Instant::now(),
            stopping_all: false,
            exit_now: false,
            boot_id: crate::journal::boot_id(),
            orphans: Vec::new(),
            cgroups,
            proc_cgroups,
            trim: false,
            trim_at: None,
            emptied: None,
            scratch: Vec::new(),
            stale_pid_files: Vec::new(),
            pid_files_due: Vec::new(),
            spares,
            forked: false,
            batch: None,
            put_off: None,
            journal_hash: None,
            root: sys::euid() == 0,
            log_defaults: (cfg.max_log_size, cfg.log_retain),
            detached: cfg.detach_stdio,
            allow_uid: cfg.allow_uid.clone(),
            allow_gid: cfg.allow_gid.clone(),
            lifeline: cfg.lifeline,
            update_to: None,
            spawner: None,
        })
    }
}
