//! Starting a child: fork + exec with a close-on-exec status pipe (STYLE 7).
//!
//! Everything the child needs (argv, envp, paths, fds, credentials) is built
//! before `fork`. The child only calls async-signal-safe functions: `setsid`,
//! signal reset, `dup2`, `chdir`, credentials, `execve`. If one fails it
//! writes the step and errno to the status pipe and `_exit`s; EOF on the pipe
//! means the exec succeeded. The parent does not wait for it: the loop
//! watches the pipe (`Pending`). Not `vfork`/`posix_spawn`: with those the
//! daemon would stop until the child's `chdir` and `execve` are done, for
//! ever on a hung mount. A child given a cgroup is born in it (`clone3`,
//! `fork_into`).

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;

use crate::sys;

/// Everything needed to run one program.
pub struct Command {
    /// Absolute path given to `execve`.
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    /// Switch to these credentials (uid, gid, supplementary groups).
    pub creds: Option<(Option<u32>, u32, Vec<u32>)>,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Listening sockets given as fds 3, 4, … (socket activation); the
    /// daemon keeps them.
    pub listen: Vec<RawFd>,
    /// The app's end of its IPC channel, given as the fd after them
    /// (`channel_fd`).
    pub channel: Option<OwnedFd>,
    /// Which `envp` entry is the `LISTEN_PID=` placeholder the child fills
    /// with its own pid.
    pub listen_pid_env: Option<usize>,
    /// The cgroup the child starts in; where it cannot join it, it stays
    /// in the daemon's and is reached through its process group alone.
    pub cgroup: Option<Cgroup>,
}

/// A cgroup for a child: it is born there (`clone3` with
/// `CLONE_INTO_CGROUP`, Linux 5.7), or, where the kernel or a seccomp
/// filter refuses that, it writes `0` (itself) to `cgroup.procs` before
/// `execve`. Being born there costs nothing; moving a running process
/// takes the kernel's cgroup write lock, a wait of 0.4 to 12 ms here.
pub struct Cgroup {
    /// The cgroup's directory, opened `O_PATH`.
    pub dir: OwnedFd,
    /// Its `cgroup.procs`.
    pub procs: CString,
}

/// The first fd after stdin, stdout and stderr.
pub const FIRST_PASSED_FD: i32 = 3;

/// The fd number of the IPC channel in a child given `listen` sockets:
/// right after them (3 without any, where Node puts it too).
pub fn channel_fd(listen: usize) -> i32 {
    FIRST_PASSED_FD + listen as i32
}

/// `LISTEN_PID=` and room for any pid and its NUL.
pub const LISTEN_PID_PLACEHOLDER: &str = "LISTEN_PID=                    ";

/// The step of the child's set-up that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Setsid = 1,
    Dup = 2,
    Chdir = 3,
    Groups = 4,
    Gid = 5,
    Uid = 6,
    Exec = 7,
}

impl Step {
    fn from_byte(b: u8) -> Step {
        match b {
            1 => Step::Setsid,
            2 => Step::Dup,
            3 => Step::Chdir,
            4 => Step::Groups,
            5 => Step::Gid,
            6 => Step::Uid,
            _ => Step::Exec,
        }
    }
}

/// Why a program could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnError {
    pub step: Step,
    pub errno: Errno,
    /// What the step acted on (the path, the cwd, the uid).
    pub object: String,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.step {
            Step::Setsid => "cannot start a new session for",
            Step::Dup => "cannot set up the standard fds of",
            Step::Chdir => "cannot change to the working directory",
            Step::Groups => "cannot set the groups of",
            Step::Gid => "cannot set the group of",
            Step::Uid => "cannot set the user of",
            Step::Exec => "cannot execute",
        };
        write!(f, "{what} {}: {}", self.object, self.errno.desc())
    }
}

impl std::error::Error for SpawnError {}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A child forked and on its way to `execve`: its pid, and the read end of
/// its status pipe, which the loop watches (non-blocking) instead of
/// waiting on it, so a child stuck in `chdir` or `execve` on a hung mount
/// never freezes the daemon.
#[derive(Debug)]
pub struct Pending {
    pub pid: i32,
    pub status: OwnedFd,
    pub(crate) path: String,
    pub(crate) cwd: String,
}

/// What the status pipe says.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecStatus {
    /// Nothing yet: the child has not reached `execve`.
    Waiting,
    /// End of file: the program runs.
    Running,
    /// The step that failed, and why.
    Failed(SpawnError),
}

impl Pending {
    /// Read the status pipe without blocking.
    pub fn check(&self) -> ExecStatus {
        let mut buf = [0u8; 5];
        match sys::read(self.status.as_raw_fd(), &mut buf) {
            Ok(0) => ExecStatus::Running,
            // The child writes its five bytes at once (less than
            // PIPE_BUF), so a read gets all of them or none.
            Ok(n) if n == buf.len() => {
                let step = Step::from_byte(buf[0]);
                let errno = Errno::from_raw(i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]));
                let object = match step {
                    Step::Chdir => self.cwd.clone(),
                    _ => self.path.clone(),
                };
                ExecStatus::Failed(SpawnError {
                    step,
                    errno,
                    object,
                })
            }
            Ok(_) => ExecStatus::Failed(SpawnError {
                step: Step::Exec,
                errno: Errno::EIO,
                object: self.path.clone(),
            }),
            Err(Errno::EAGAIN) => ExecStatus::Waiting,
            Err(errno) => ExecStatus::Failed(SpawnError {
                step: Step::Exec,
                errno,
                object: self.path.clone(),
            }),
        }
    }
}

/// Fork `cmd`'s child; it execs on its own, and says how that went on the
/// status pipe (`Pending::check`).
pub fn spawn_child(cmd: &Command) -> Result<Pending, SpawnError> {
    let (status_r, status_w) = status_pipe().map_err(|e| fail(Step::Exec, e, &cmd.path))?;
    match fork_exec(cmd, &status_w, Forker::Daemon) {
        Ok(pid) => Ok(pending(cmd, pid, status_r)),
        Err(e) => Err(fail(Step::Exec, e, &cmd.path)),
    }
}

/// Why `object` (the program or the cwd) could not be started.
pub(crate) fn fail(step: Step, errno: Errno, object: &CString) -> SpawnError {
    SpawnError {
        step,
        errno,
        object: object.to_string_lossy().into_owned(),
    }
}

/// A child's status pipe: the daemon's end (close-on-exec, non-blocking)
/// and the child's (close-on-exec, blocking, so its report is never lost).
pub fn status_pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    sys::child_pipe(true)
}

/// The child `pid` of `cmd`, whose status pipe the daemon reads at `status`.
pub fn pending(cmd: &Command, pid: i32, status: OwnedFd) -> Pending {
    Pending {
        pid,
        status,
        path: cmd.path.to_string_lossy().into_owned(),
        cwd: cmd.cwd.to_string_lossy().into_owned(),
    }
}

/// Who forks, and so what the child must undo before it execs.
#[derive(Clone, Copy)]
pub enum Forker {
    /// The daemon itself: every signal is blocked across the fork and the
    /// child resets the daemon's handlers.
    Daemon,
    /// The spawner (`crate::spawner`), whose handlers are all the default
    /// and whose mask is empty: nothing to undo. The child is the
    /// daemon's (`CLONE_PARENT`), and its pid is also stored at `slot`
    /// before the spawner learns it (`CLONE_PARENT_SETTID`), where the
    /// daemon finds it if the spawner dies before it answers. The child
    /// closes the spawner's socket `sock` first thing: a child stuck before
    /// its exec must not keep the daemon from seeing the spawner's end.
    Spawner { slot: *mut i32, sock: RawFd },
}

/// Fork `cmd`'s child with `status` as its end of the status pipe. Its pid,
/// or why no child was made.
pub fn fork_exec(cmd: &Command, status: &OwnedFd, forker: Forker) -> Result<i32, Errno> {
    // The fds the child gets, in order: 0, 1, 2, the listening sockets, the
    // channel. The status pipe stays above them.
    let mut fds: Vec<i32> = vec![
        cmd.stdin.as_raw_fd(),
        cmd.stdout.as_raw_fd(),
        cmd.stderr.as_raw_fd(),
    ];
    fds.extend(&cmd.listen);
    if let Some(c) = &cmd.channel {
        fds.push(c.as_raw_fd());
    }
    let moved;
    let status_fd = match status.as_raw_fd() >= fds.len() as i32 {
        true => status.as_raw_fd(),
        false => {
            moved = sys::dup_cloexec(status.as_raw_fd(), fds.len() as i32)?;
            moved.as_raw_fd()
        }
    };
    let argv = null_terminated(&cmd.argv);
    let envp = null_terminated(&cmd.envp);
    let groups: Vec<libc::gid_t> = cmd.creds.as_ref().map(|c| c.2.clone()).unwrap_or_default();
    // The soft fd limit the daemon was started with, not its raised one.
    // (0 in the spawner, forked before the daemon raised it: its children
    // inherit its limit, the one the daemon was started with.)
    let app_soft = sys::app_fd_limit();
    let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .filter(|&(soft, _)| app_soft > 0 && app_soft < soft)
        .map(|(_, hard)| libc::rlimit {
            rlim_cur: app_soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        });

    // Every signal is blocked across the daemon's fork: until the child has
    // reset the daemon's handlers, a signal must not run one of them in it
    // (they write to the daemon's signal pipe).
    let old_mask = match forker {
        Forker::Daemon => Some(sys::block_all_signals()),
        Forker::Spawner { .. } => None,
    };
    // SAFETY: the daemon and the spawner are single-threaded, and the child
    // below only calls async-signal-safe functions on memory prepared
    // before the fork.
    let (pid, joined) = unsafe {
        match forker {
            Forker::Daemon => fork_into(cmd.cgroup.as_ref()),
            Forker::Spawner { slot, .. } => clone_for_parent(cmd.cgroup.as_ref(), slot),
        }
    };
    if pid == 0 {
        let join = match joined {
            true => None,
            false => cmd.cgroup.as_ref().map(|c| &c.procs),
        };
        let spawner_sock = match forker {
            Forker::Daemon => None,
            Forker::Spawner { sock, .. } => Some(sock),
        };
        // SAFETY: in the child, only async-signal-safe calls; never returns.
        unsafe {
            child_after_fork(
                cmd,
                &argv,
                &envp,
                &groups,
                &mut fds,
                status_fd,
                fd_limit,
                join,
                spawner_sock,
            )
        }
    }
    let errno = Errno::last();
    if let Some(old) = &old_mask {
        sys::restore_signal_mask(old);
    }
    match pid < 0 {
        true => Err(errno),
        false => Ok(pid),
    }
}

/// `struct clone_args` of clone3(2), up to `cgroup` (its second version).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3's flag: the child is born in the cgroup `CloneArgs::cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Whether clone3 with `CLONE_INTO_CGROUP` may work here: cleared for good
/// the first time the kernel (older than 5.7) or a seccomp filter says it
/// does not know it.
static CLONE_INTO: AtomicBool = AtomicBool::new(true);

/// Fork; the child is born in `cgroup` where the kernel can do that. The
/// pid (0 in the child, -1 with errno set on failure), and whether the
/// child is in the cgroup already. A child the kernel could not place
/// (clone3 missing, or refused for this cgroup) is forked plainly and
/// joins it itself (`child_after_fork`).
///
/// # Safety
/// As `fork`: the caller is single-threaded, and the child makes only
/// async-signal-safe calls until it execs or exits.
unsafe fn fork_into(cgroup: Option<&Cgroup>) -> (libc::pid_t, bool) {
    // Only with glibc, which asks the kernel for the calling thread's id:
    // musl keeps it in the thread's record, which a raw clone3 leaves as
    // the daemon's, so its raise/abort in the child would signal the daemon.
    if cfg!(target_env = "gnu")
        && let Some(cg) = cgroup
        && CLONE_INTO.load(Ordering::Relaxed)
    {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cg.dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: as this function's contract; `args` names an open fd.
        let r = unsafe { clone3(&args) };
        if r >= 0 {
            return (r, true);
        }
        if into_refused() {
            CLONE_INTO.store(false, Ordering::Relaxed);
        }
    }
    // SAFETY: as this function's contract.
    (unsafe { libc::fork() }, false)
}

/// The spawner's fork (`Forker::Spawner`): clone3 with `CLONE_PARENT`, so
/// the child is the daemon's (which reaps it and which it sees as its
/// parent), and `CLONE_PARENT_SETTID`, so its pid is at `slot` before
/// clone3 returns. Born in `cgroup` where the kernel can, as `fork_into`.
/// With `CLONE_PARENT` the child's exit signal is the spawner's own
/// (SIGCHLD), and clone3 wants none given.
///
/// # Safety
/// As `fork_into`; `slot` is valid for writes (a page shared with the
/// daemon).
unsafe fn clone_for_parent(cgroup: Option<&Cgroup>, slot: *mut i32) -> (libc::pid_t, bool) {
    let mut args = CloneArgs {
        flags: (libc::CLONE_PARENT | libc::CLONE_PARENT_SETTID) as u64,
        parent_tid: slot as u64,
        ..CloneArgs::default()
    };
    let into = cgroup.filter(|_| CLONE_INTO.load(Ordering::Relaxed));
    if let Some(cg) = into {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.dir.as_raw_fd() as u64;
        // SAFETY: as this function's contract (the kernel also writes the
        // child's pid to `slot`); `args` names an open fd.
        let r = unsafe { clone3(&args) };
        if r >= 0 {
            return (r, true);
        }
        if !into_refused() {
            return (-1, false);
        }
        // The kernel refuses this flag: the child joins the cgroup itself.
        CLONE_INTO.store(false, Ordering::Relaxed);
        args.flags &= !CLONE_INTO_CGROUP;
        args.cgroup = 0;
    }
    if CLONE3.load(Ordering::Relaxed) {
        // SAFETY: as above.
        let r = unsafe { clone3(&args) };
        if r >= 0 || !matches!(Errno::last(), Errno::ENOSYS | Errno::EPERM) {
            return (r, false);
        }
        // Before Linux 5.3, or a seccomp filter that refuses clone3
        // (Docker's default profile answers ENOSYS): the older clone.
        CLONE3.store(false, Ordering::Relaxed);
    }
    // SAFETY: as clone3 above, through the older call.
    (unsafe { legacy_clone_for_parent(slot) }, false)
}

/// clone3(2) with `args`: a fork with more arguments (no `CLONE_VM`: the
/// child gets a copy of the address space and returns with 0). The pid,
/// or -1 with errno set.
///
/// # Safety
/// As `fork_into`: the caller is single-threaded and the child makes only
/// raw, async-signal-safe calls (glibc's fork bookkeeping is skipped, and
/// glibc reads no cached pid or tid); every fd and pointer in `args` is
/// valid (the kernel only reads `args`, and writes the pid where
/// `CLONE_PARENT_SETTID` points).
unsafe fn clone3(args: &CloneArgs) -> libc::pid_t {
    // SAFETY: as this function's contract; the size is `args`'s own.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        ) as libc::pid_t
    }
}

/// Whether clone3's failure says the kernel (older than 5.7) or a seccomp
/// filter (EPERM) refuses `CLONE_INTO_CGROUP`.
fn into_refused() -> bool {
    matches!(
        Errno::last(),
        Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL | Errno::EPERM
    )
}

/// Whether clone3 may work here for the spawner (cleared for good at the
/// first ENOSYS or EPERM).
static CLONE3: AtomicBool = AtomicBool::new(true);

/// `clone(CLONE_PARENT | CLONE_PARENT_SETTID)` without a new stack: a fork
/// whose child is the caller's parent's, its pid at `slot`. Only where the
/// parent's tid pointer is the system call's third argument (x86, x86-64,
/// ARM, AArch64, RISC-V); elsewhere ENOSYS, and the daemon forks itself.
///
/// # Safety
/// As `clone_for_parent`.
unsafe fn legacy_clone_for_parent(slot: *mut i32) -> libc::pid_t {
    if cfg!(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    )) {
        let flags =
            (libc::CLONE_PARENT | libc::CLONE_PARENT_SETTID | libc::SIGCHLD) as libc::c_ulong;
        // SAFETY: as a fork (no CLONE_VM, stack 0: the child goes on on a
        // copy of this one); the kernel writes the child's pid to `slot`.
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags,
                0 as libc::c_ulong,
                slot,
                std::ptr::null_mut::<i32>(),
                0 as libc::c_ulong,
            ) as libc::pid_t
        }
    } else {
        Errno::set_raw(libc::ENOSYS);
        -1
    }
}

/// The child's side. Never returns.
///
/// # Safety
/// Call only in the child right after `fork` of a single-threaded process.
// Indexes bounded by construction (the placeholder's room, 20 digits for a
// pid); nothing here may allocate.
#[allow(clippy::indexing_slicing, clippy::too_many_arguments)]
unsafe fn child_after_fork(
    cmd: &Command,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    groups: &[libc::gid_t],
    fds: &mut [i32],
    status_fd: i32,
    fd_limit: Option<libc::rlimit>,
    join: Option<&CString>,
    spawner_sock: Option<RawFd>,
) -> ! {
    let report = |step: Step| -> ! {
        let e = Errno::last_raw().to_ne_bytes();
        let msg = [step as u8, e[0], e[1], e[2], e[3]];
        // SAFETY: writing a stack buffer to our own pipe, then exiting
        // without running any destructor or atexit handler.
        unsafe {
            libc::write(status_fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: plain syscalls on values owned by this process.
    unsafe {
        if let Some(fd) = spawner_sock {
            libc::close(fd);
        }
        if libc::setsid() < 0 {
            report(Step::Setsid);
        }
        if let Some(procs) = join {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
        // The daemon's child resets every disposition, then empties the
        // mask (blocked by the parent across the fork): ignored signals
        // (SIGPIPE above all) survive exec, and the daemon's handlers must
        // never run here. The spawner's has nothing to undo.
        if spawner_sock.is_none() {
            sys::default_signals();
        }
        // Lowering a soft limit cannot fail for want of privilege; if it
        // fails anyway the app runs with the daemon's.
        if let Some(l) = &fd_limit {
            libc::setrlimit(libc::RLIMIT_NOFILE, l);
        }
        // Move every source below the targets' range out of the way first,
        // so that placing one never overwrites another; dup2 then clears
        // close-on-exec on each target.
        let top = fds.len() as i32;
        for fd in fds.iter_mut() {
            if *fd < top {
                let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, top);
                if moved < 0 {
                    report(Step::Dup);
                }
                *fd = moved;
            }
        }
        for (target, fd) in fds.iter().enumerate() {
            if libc::dup2(*fd, target as i32) < 0 {
                report(Step::Dup);
            }
        }
        if let Some(i) = cmd.listen_pid_env {
            // The placeholder is this process's own copy of the string:
            // write our pid (the one exec keeps) into it, then a NUL.
            let entry = envp[i] as *mut u8;
            let start = "LISTEN_PID=".len();
            let mut digits = [0u8; 20];
            let mut n = libc::getpid() as u64;
            let mut len = 0;
            loop {
                digits[len] = b'0' + (n % 10) as u8;
                len += 1;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for k in 0..len {
                *entry.add(start + k) = digits[len - 1 - k];
            }
            *entry.add(start + len) = 0;
        }
        if libc::chdir(cmd.cwd.as_ptr()) < 0 {
            report(Step::Chdir);
        }
        if let Some((uid, gid, _)) = cmd.creds {
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
                report(Step::Groups);
            }
            if libc::setgid(gid) < 0 {
                report(Step::Gid);
            }
            if let Some(uid) = uid
                && libc::setuid(uid) < 0
            {
                report(Step::Uid);
            }
        }
        libc::execve(cmd.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        report(Step::Exec)
    }
}
