//! Starting a child: clone or fork + exec with a close-on-exec status pipe
//! (STYLE 7).
//!
//! Everything the child needs (argv, envp, paths, fds, credentials) is built
//! before it exists (`Plan`). The child makes raw system calls only
//! (`rawsys`): `setsid`, signal reset, `dup3`, `chdir`, credentials,
//! `execve`. If one fails it writes the step and errno to the status pipe
//! and exits; EOF on the pipe means the exec succeeded. The parent does not
//! wait for it: the loop watches the pipe (`Pending`). Not `vfork` nor
//! `posix_spawn`: with those the daemon would stop until the child's
//! `chdir` and `execve` are done, for ever on a hung mount.
//!
//! Three ways to make the child, quickest first: cloned into the daemon's
//! memory on a stack of its own (`spawn_shared`: a restart, x86_64, while
//! the daemon has few fds); by the spawner (`crate::spawner`: a bulk start,
//! or where the first is refused); forked by the daemon (`spawn_child`:
//! where neither can). A child given a cgroup is born in it (`clone3` with
//! `CLONE_INTO_CGROUP`).

use std::ffi::CString;
use std::fmt;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use nix::errno::Errno;

use crate::{rawsys, sys};

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
    /// What a child cloned into the daemon's memory still reads
    /// (`spawn_shared`).
    pub(crate) held: Option<Held>,
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
    /// Read the status pipe without blocking. At its end of file the child
    /// has exec'd or ended, and what it was given is let go (`Held`).
    pub fn check(&mut self) -> ExecStatus {
        let mut buf = [0u8; 5];
        match sys::read(self.status.as_raw_fd(), &mut buf) {
            Ok(0) => {
                self.ended();
                ExecStatus::Running
            }
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

    /// The child has exec'd or ended (reaped, or the end of file of its
    /// status pipe read): nothing of the daemon's is used by it any more.
    pub fn ended(&mut self) {
        if let Some(h) = &mut self.held {
            h.released = true;
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
        held: None,
    }
}

/// Whether children may be cloned into the daemon's memory here: cleared
/// for good when the kernel or a seccomp filter refuses both clone3 and
/// clone with `CLONE_VM`.
static SHARED: AtomicBool = AtomicBool::new(rawsys::CAN_CLONE_ON);

/// Start `cmd`'s child the way `posix_spawn` does, but without stopping
/// the daemon: cloned with `CLONE_VM`, on a stack of its own, it shares
/// the daemon's memory until its exec (no page tables copied, no
/// copy-on-write fault for the daemon after) and makes raw system calls
/// only (`rawsys`); unlike `vfork`, the daemon goes on at once, so a child
/// stuck in `chdir` or `execve` on a hung mount stops nothing. Born in its
/// cgroup where the kernel can, as `fork_into`.
///
/// What the child reads (its stack, its plan, the command's strings) is
/// kept in the `Pending` until its exec or its end is known (`Held`). The
/// child makes itself undumpable first thing, and again after its change
/// of user (which sets the flag to `fs.suid_dumpable`), and keeps every
/// signal blocked until its exec: a core dump of it would be one of the
/// daemon's memory (and before Linux 5.16 would kill the daemon), and an
/// app's user must never trace a process that shares it. The daemon's own
/// flag is put back once no such child is left.
///
/// `Err(cmd)` where that cannot be done here (another architecture, or a
/// kernel that refuses): the caller forks.
// The command comes back whole (moved, once per spawn) where it cannot be
// cloned here.
#[allow(clippy::result_large_err)]
pub fn spawn_shared(cmd: Command) -> Result<Result<Pending, SpawnError>, Command> {
    if !SHARED.load(Ordering::Relaxed) {
        return Err(cmd);
    }
    let failed = |e: Errno, cmd: &Command| Ok(Err(fail(Step::Exec, e, &cmd.path)));
    let (status_r, status_w) = match status_pipe() {
        Ok(p) => p,
        Err(e) => return failed(e, &cmd),
    };
    let (mut plan, moved) = match plan(&cmd, &status_w) {
        Ok(p) => p,
        Err(e) => return failed(e, &cmd),
    };
    plan.undumpable = true;
    let stack = match Stack::new() {
        Ok(s) => s,
        Err(e) => return failed(e, &cmd),
    };
    // Owned through this pointer alone from now on (the child writes
    // through it): `Kept` frees it.
    let plan = Box::into_raw(plan);
    Dumpable::before_clone();
    let old = rawsys::set_mask(u64::MAX);
    // SAFETY: the stack is this child's alone; the plan, the stack and the
    // command's strings are kept in its `Held` until it has exec'd or
    // ended; `child_main` makes raw system calls only.
    let r = unsafe { clone_shared(cmd.cgroup.as_ref(), &stack, plan) };
    rawsys::set_mask(old);
    // The status pipe's write end is the child's alone from now on.
    drop((moved, status_w));
    let pid = match r {
        Ok(pid) => pid,
        Err(e) => {
            // SAFETY: no child was made; the pointer is `into_raw`'s.
            drop(unsafe { Box::from_raw(plan) });
            if e.is_none() {
                SHARED.store(false, Ordering::Relaxed);
            }
            return match e {
                Some(e) => failed(e, &cmd),
                None => Err(cmd),
            };
        }
    };
    let mut pending = pending(&cmd, pid, status_r);
    let Command {
        path,
        argv,
        envp,
        cwd,
        cgroup,
        ..
    } = cmd;
    Dumpable::enter();
    pending.held = Some(Held {
        pid,
        released: false,
        keep: ManuallyDrop::new(Kept {
            _stack: stack,
            plan,
            _strings: (path, argv, envp, cwd, cgroup.map(|c| c.procs)),
        }),
    });
    Ok(Ok(pending))
}

/// Clone the child of `plan` on `stack`, in this process's memory, born in
/// `cgroup` where the kernel can (else it writes itself there:
/// `Plan::join`). Its pid; `Err(None)` where the kernel (or a seccomp
/// filter) refuses such a clone at all.
///
/// # Safety
/// As `rawsys::clone_on`, for `child_main` with `plan`.
unsafe fn clone_shared(
    cgroup: Option<&Cgroup>,
    stack: &Stack,
    plan: *mut Plan,
) -> Result<i32, Option<Errno>> {
    let entry: rawsys::Entry = child_main;
    let arg = plan;
    let errno = |r: isize| Errno::from_raw((r as i32).wrapping_neg());
    let refused = |r: isize| matches!(errno(r), Errno::ENOSYS | Errno::EPERM);
    let join = cgroup.map_or(std::ptr::null(), |c| c.procs.as_ptr());
    if CLONE3.load(Ordering::Relaxed) {
        let mut args = CloneArgs {
            flags: libc::CLONE_VM as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: stack.base() as u64,
            stack_size: STACK_SIZE as u64,
            ..CloneArgs::default()
        };
        let size = std::mem::size_of::<CloneArgs>();
        let child = arg.cast();
        let clone3 = move |args: &CloneArgs| {
            let a = args as *const CloneArgs as usize;
            // SAFETY: as this function's contract; `args` names the stack
            // and an open cgroup fd.
            unsafe { rawsys::clone_on(libc::SYS_clone3, a, size, 0, 0, 0, entry, child) }
        };
        if let Some(cg) = cgroup.filter(|_| CLONE_INTO.load(Ordering::Relaxed)) {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = cg.dir.as_raw_fd() as u64;
            // SAFETY: the child is not made yet.
            unsafe { (*arg).join = std::ptr::null() };
            let r = clone3(&args);
            if r > 0 {
                return Ok(r as i32);
            }
            if !into_refused(errno(r)) {
                return Err(Some(errno(r)));
            }
            CLONE_INTO.store(false, Ordering::Relaxed);
            args.flags &= !CLONE_INTO_CGROUP;
            args.cgroup = 0;
        }
        // SAFETY: as above.
        unsafe { (*arg).join = join };
        let r = clone3(&args);
        if r > 0 {
            return Ok(r as i32);
        }
        if !refused(r) {
            return Err(Some(errno(r)));
        }
        // Before Linux 5.3, or Docker's default seccomp profile.
        CLONE3.store(false, Ordering::Relaxed);
    }
    // SAFETY: as above.
    unsafe { (*arg).join = join };
    let flags = (libc::CLONE_VM | libc::SIGCHLD) as usize;
    // SAFETY: as this function's contract; clone's second argument is the
    // stack's top.
    let r = unsafe {
        rawsys::clone_on(
            libc::SYS_clone,
            flags,
            stack.top(),
            0,
            0,
            0,
            entry,
            arg.cast(),
        )
    };
    match r {
        r if r > 0 => Ok(r as i32),
        r if refused(r) => Err(None),
        r => Err(Some(errno(r))),
    }
}

/// Usable bytes of a shared child's stack (it needs a few hundred), above
/// a guard page that faults instead of letting it run into other memory.
const STACK_SIZE: usize = 32 * 1024;
const GUARD: usize = 4096;

/// The one stack kept for the next child (most spawns are one at a time,
/// and a mapping is two system calls to make and one to drop); null: none.
static SPARE_STACK: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// A shared child's stack: `STACK_SIZE` bytes from `base()`.
struct Stack(*mut u8);

impl Stack {
    fn new() -> Result<Stack, Errno> {
        let spare = SPARE_STACK.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if !spare.is_null() {
            return Ok(Stack(spare));
        }
        // SAFETY: a new private anonymous mapping; its lowest page made
        // inaccessible; unmapped once, by `drop`.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                GUARD + STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(Errno::last());
            }
            if libc::mprotect(p, GUARD, libc::PROT_NONE) < 0 {
                let e = Errno::last();
                libc::munmap(p, GUARD + STACK_SIZE);
                return Err(e);
            }
            Ok(Stack(p.cast::<u8>().add(GUARD)))
        }
    }

    fn base(&self) -> usize {
        self.0 as usize
    }

    /// Its top, where a stack starts (page-aligned).
    fn top(&self) -> usize {
        self.base() + STACK_SIZE
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let kept = SPARE_STACK.compare_exchange(
            std::ptr::null_mut(),
            self.0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if kept.is_err() {
            // SAFETY: the mapping `new` made, used by nothing any more.
            unsafe { libc::munmap(self.0.sub(GUARD).cast(), GUARD + STACK_SIZE) };
        }
    }
}

/// What a child cloned into the daemon's memory (`spawn_shared`) reads
/// until its exec. Freed only once the child is known to have exec'd or
/// ended (`Pending::ended`); dropped before that, it is left allocated: a
/// child still on its way must never find its memory reused.
pub struct Held {
    pid: i32,
    released: bool,
    keep: ManuallyDrop<Kept>,
}

type Strings = (
    CString,
    Vec<CString>,
    Vec<CString>,
    CString,
    Option<CString>,
);

struct Kept {
    _stack: Stack,
    /// `Box::into_raw`'s.
    plan: *mut Plan,
    _strings: Strings,
}

impl Drop for Kept {
    fn drop(&mut self) {
        // SAFETY: the pointer `spawn_shared` took from `Box::into_raw`,
        // freed once, here.
        drop(unsafe { Box::from_raw(self.plan) });
    }
}

impl Held {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The child has ended (reaped).
    pub fn release(&mut self) {
        self.released = true;
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Held({}, released: {})", self.pid, self.released)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.released {
            // SAFETY: dropped once, here; the child uses none of it now.
            unsafe { ManuallyDrop::drop(&mut self.keep) };
            Dumpable::leave();
        }
    }
}

/// The daemon's own dumpable flag (`PR_SET_DUMPABLE`), which a shared
/// child clears for the memory it shares: put back once the last of them
/// has exec'd or ended.
struct Dumpable;

/// Shared children not yet released.
static SHARED_LIVE: AtomicUsize = AtomicUsize::new(0);
/// The daemon's flag before the first of them (`PR_GET_DUMPABLE`).
static DUMPABLE_BEFORE: AtomicI32 = AtomicI32::new(0);

impl Dumpable {
    /// Before a shared child is cloned: the flag to put back, read while
    /// none is alive.
    fn before_clone() {
        if SHARED_LIVE.load(Ordering::Relaxed) == 0 {
            // SAFETY: reads this process's flag.
            let v = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
            DUMPABLE_BEFORE.store(v, Ordering::Relaxed);
        }
    }

    fn enter() {
        SHARED_LIVE.fetch_add(1, Ordering::Relaxed);
    }

    fn leave() {
        if SHARED_LIVE.fetch_sub(1, Ordering::Relaxed) == 1
            && DUMPABLE_BEFORE.load(Ordering::Relaxed) == 1
        {
            // SAFETY: sets this process's flag; no other process shares its
            // memory any more.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1) };
        }
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

/// Everything a child does between its birth and its exec, made before
/// it. The strings it points to are its `Command`'s, which must outlive the
/// child's use of them; the arrays are its own.
struct Plan {
    path: *const libc::c_char,
    cwd: *const libc::c_char,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The uid to take (if any) and the gid, with `groups`.
    creds: Option<(Option<u32>, u32)>,
    groups: Vec<libc::gid_t>,
    /// The fds it gets, in order: 0, 1, 2, the listening sockets, the
    /// channel (moved in place by the child).
    fds: Vec<i32>,
    /// Its end of the status pipe, numbered above `fds`' targets.
    status_fd: i32,
    fd_limit: Option<Rlimit64>,
    /// The `cgroup.procs` it writes itself to where it was not born in its
    /// cgroup; null: none.
    join: *const libc::c_char,
    /// An fd to close first (the spawner's socket), or -1.
    close_first: i32,
    /// Every disposition back to the default and no signal blocked (the
    /// daemon's child; the spawner's has nothing to undo).
    reset_signals: bool,
    /// It shares the daemon's memory: never dumped (`spawn_shared`).
    undumpable: bool,
    /// `LISTEN_PID=` and room for the child's pid, which it writes here
    /// itself; `envp` points here where the command had the placeholder.
    listen_pid: [u8; 32],
    has_listen_pid: bool,
}

/// The kernel's `struct rlimit64`, as `prlimit64` takes it everywhere.
#[repr(C)]
struct Rlimit64 {
    cur: u64,
    max: u64,
}

/// `cmd`'s plan with `status` as the child's end of its status pipe, and
/// the copy of that fd made to keep it above the child's fds (the caller
/// closes it once the child is made).
fn plan(cmd: &Command, status: &OwnedFd) -> Result<(Box<Plan>, Option<OwnedFd>), Errno> {
    let mut fds: Vec<i32> = vec![
        cmd.stdin.as_raw_fd(),
        cmd.stdout.as_raw_fd(),
        cmd.stderr.as_raw_fd(),
    ];
    fds.extend(&cmd.listen);
    if let Some(c) = &cmd.channel {
        fds.push(c.as_raw_fd());
    }
    let moved = match status.as_raw_fd() >= fds.len() as i32 {
        true => None,
        false => Some(sys::dup_cloexec(status.as_raw_fd(), fds.len() as i32)?),
    };
    let status_fd = moved.as_ref().unwrap_or(status).as_raw_fd();
    // The soft fd limit the daemon was started with, not its raised one.
    // (0 in the spawner, forked before the daemon raised it: its children
    // inherit its limit, the one the daemon was started with.)
    let app_soft = sys::app_fd_limit();
    // rlim_t is 32 bits on some targets (armv7 with glibc).
    #[allow(clippy::useless_conversion)]
    let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, hard)| (u64::from(soft), u64::from(hard)))
        .filter(|&(soft, _)| app_soft > 0 && app_soft < soft)
        .map(|(_, hard)| Rlimit64 {
            cur: app_soft,
            max: hard,
        });
    let mut plan = Box::new(Plan {
        path: cmd.path.as_ptr(),
        cwd: cmd.cwd.as_ptr(),
        argv: null_terminated(&cmd.argv),
        envp: null_terminated(&cmd.envp),
        creds: cmd.creds.as_ref().map(|c| (c.0, c.1)),
        groups: cmd.creds.as_ref().map(|c| c.2.clone()).unwrap_or_default(),
        fds,
        status_fd,
        fd_limit,
        join: std::ptr::null(),
        close_first: -1,
        reset_signals: true,
        undumpable: false,
        listen_pid: [0; 32],
        has_listen_pid: false,
    });
    if let Some(i) = cmd.listen_pid_env {
        for (b, p) in plan.listen_pid.iter_mut().zip(b"LISTEN_PID=") {
            *b = *p;
        }
        let at = plan.listen_pid.as_ptr().cast();
        if let Some(entry) = plan.envp.get_mut(i) {
            *entry = at;
            plan.has_listen_pid = true;
        }
    }
    Ok((plan, moved))
}

/// Fork `cmd`'s child with `status` as its end of the status pipe. Its pid,
/// or why no child was made.
pub fn fork_exec(cmd: &Command, status: &OwnedFd, forker: Forker) -> Result<i32, Errno> {
    let (mut plan, _moved) = plan(cmd, status)?;
    if let Forker::Spawner { sock, .. } = forker {
        plan.close_first = sock;
        plan.reset_signals = false;
    }
    // Every signal is blocked across the daemon's fork: until the child has
    // reset the daemon's handlers, a signal must not run one of them in it
    // (they write to the daemon's signal pipe).
    let old_mask = match forker {
        Forker::Daemon => Some(rawsys::set_mask(u64::MAX)),
        Forker::Spawner { .. } => None,
    };
    // SAFETY: the daemon and the spawner are single-threaded, and the child
    // below only makes raw system calls on memory prepared before the fork.
    let (pid, joined) = unsafe {
        match forker {
            Forker::Daemon => fork_into(cmd.cgroup.as_ref()),
            Forker::Spawner { slot, .. } => clone_for_parent(cmd.cgroup.as_ref(), slot),
        }
    };
    if pid == 0 {
        if !joined && let Some(cg) = &cmd.cgroup {
            plan.join = cg.procs.as_ptr();
        }
        // SAFETY: in the new child, with its own copy of the plan; never
        // returns.
        unsafe { child_main((&mut *plan as *mut Plan).cast()) }
    }
    let errno = Errno::last();
    if let Some(old) = old_mask {
        rawsys::set_mask(old);
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
        if into_refused(Errno::last()) {
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
        if !into_refused(Errno::last()) {
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
fn into_refused(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL | Errno::EPERM
    )
}

/// Whether clone3 may work here for the spawner (cleared for good at the
/// first ENOSYS or EPERM).
static CLONE3: AtomicBool = AtomicBool::new(true);

/// `clone(CLONE_PARENT | CLONE_PARENT_SETTID)` without a new stack: a fork
/// whose child is the caller's parent's, its pid at `slot`. Only where the
/// parent's tid pointer is the system call's third argument (x86, x86-64,
/// ARM, AArch64, RISC-V); elsewhere ENOSYS, and the daemon makes its
/// children itself.
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

/// The system calls that take 32-bit ids (the first ones took 16 bits
/// where there are still both).
#[cfg(any(target_arch = "arm", target_arch = "x86"))]
const ID_CALLS: [libc::c_long; 3] = [
    libc::SYS_setgroups32,
    libc::SYS_setgid32,
    libc::SYS_setuid32,
];
#[cfg(not(any(target_arch = "arm", target_arch = "x86")))]
const ID_CALLS: [libc::c_long; 3] = [libc::SYS_setgroups, libc::SYS_setgid, libc::SYS_setuid];

/// Report the failed `step` (`r`: minus its errno) on the status pipe
/// `fd` and exit 127.
///
/// # Safety
/// In a child before its exec.
unsafe fn report(fd: i32, step: Step, r: isize) -> ! {
    let e = (r as i32).wrapping_neg().to_ne_bytes();
    let msg = [step as u8, e[0], e[1], e[2], e[3]];
    // SAFETY: writing a stack buffer to our own pipe, then ending this
    // process without running anything else.
    unsafe {
        rawsys::call(libc::SYS_write, fd as usize, msg.as_ptr() as usize, 5, 0);
        rawsys::call(libc::SYS_exit_group, 127, 0, 0, 0);
    }
    // The kernel does not come back from exit_group.
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The child's side, from its birth to its exec; a step that fails is
/// reported (`report`). Raw system calls only, through `rawsys`: it may
/// share the daemon's memory, where libc's errno and state are the
/// daemon's. Nothing here may allocate or panic.
///
/// # Safety
/// `plan` points to a live `Plan` this child alone uses (its own copy, or
/// one the daemon keeps untouched until the child has exec'd or ended);
/// the caller is the new child.
unsafe extern "C" fn child_main(plan: *mut std::ffi::c_void) -> ! {
    use rawsys::call;
    // SAFETY: as this function's contract.
    let plan = unsafe { &mut *plan.cast::<Plan>() };
    let status = plan.status_fd;
    // SAFETY: plain system calls on this process's own state, with
    // pointers into the plan or this stack.
    unsafe {
        if plan.undumpable {
            call(libc::SYS_prctl, libc::PR_SET_DUMPABLE as usize, 0, 0, 0);
        }
        if plan.close_first >= 0 {
            call(libc::SYS_close, plan.close_first as usize, 0, 0, 0);
        }
        let r = call(libc::SYS_setsid, 0, 0, 0, 0);
        if r < 0 {
            report(status, Step::Setsid, r);
        }
        if !plan.join.is_null() {
            let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
            let fd = call(
                libc::SYS_openat,
                libc::AT_FDCWD as usize,
                plan.join as usize,
                flags,
                0,
            );
            if fd >= 0 {
                call(libc::SYS_write, fd as usize, b"0".as_ptr() as usize, 1, 0);
                call(libc::SYS_close, fd as usize, 0, 0, 0);
            }
        }
        // The daemon's child resets every disposition; its mask (all
        // blocked by the parent across the fork) stays full until just
        // before its exec, so no signal acts on it before then.
        if plan.reset_signals {
            rawsys::default_signals();
        }
        // Lowering a soft limit cannot fail for want of privilege; if it
        // fails anyway the app runs with the daemon's.
        if let Some(l) = &plan.fd_limit {
            let which = libc::RLIMIT_NOFILE as usize;
            call(
                libc::SYS_prlimit64,
                0,
                which,
                l as *const Rlimit64 as usize,
                0,
            );
        }
        // Move every source below the targets' range out of the way first,
        // so that placing one never overwrites another; dup3 then clears
        // close-on-exec on each target (never its own source: those left
        // in place are at or above the range).
        let top = plan.fds.len();
        for fd in plan.fds.iter_mut() {
            if (*fd as usize) < top {
                let dupfd = libc::F_DUPFD_CLOEXEC as usize;
                let moved = call(libc::SYS_fcntl, *fd as usize, dupfd, top, 0);
                if moved < 0 {
                    report(status, Step::Dup, moved);
                }
                *fd = moved as i32;
            }
        }
        for (target, fd) in plan.fds.iter().enumerate() {
            let r = call(libc::SYS_dup3, *fd as usize, target, 0, 0);
            if r < 0 {
                report(status, Step::Dup, r);
            }
        }
        // The status pipe right above them, and every other fd closed now:
        // all are close-on-exec, but a child stuck in `chdir` or `execve`
        // on a hung mount would hold the daemon's listening socket, lock
        // and pipes until then. (Before Linux 5.9 the exec closes them.)
        let mut status = status;
        if status != top as i32 {
            let cloexec = libc::O_CLOEXEC as usize;
            if call(libc::SYS_dup3, status as usize, top, cloexec, 0) >= 0 {
                status = top as i32;
            }
        }
        if status == top as i32 {
            call(libc::SYS_close_range, top + 1, u32::MAX as usize, 0, 0);
        }
        if plan.has_listen_pid {
            // Our pid (the one exec keeps) after `LISTEN_PID=`, then a NUL
            // (the buffer is zeroed): at most 20 digits in the 21 bytes.
            let mut n = call(libc::SYS_getpid, 0, 0, 0, 0) as u64;
            let mut digits = [0u8; 20];
            let mut len = 0usize;
            for d in digits.iter_mut() {
                *d = b'0' + (n % 10) as u8;
                len = len.wrapping_add(1);
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            let room = plan.listen_pid.iter_mut().skip(b"LISTEN_PID=".len());
            for (slot, d) in room.zip(digits.iter().take(len).rev()) {
                *slot = *d;
            }
        }
        let r = call(libc::SYS_chdir, plan.cwd as usize, 0, 0, 0);
        if r < 0 {
            report(status, Step::Chdir, r);
        }
        if let Some((uid, gid)) = plan.creds {
            let [groups, setgid, setuid] = ID_CALLS;
            let (n, list) = (plan.groups.len(), plan.groups.as_ptr() as usize);
            let r = call(groups, n, list, 0, 0);
            if r < 0 {
                report(status, Step::Groups, r);
            }
            let r = call(setgid, gid as usize, 0, 0, 0);
            if r < 0 {
                report(status, Step::Gid, r);
            }
            if let Some(uid) = uid {
                let r = call(setuid, uid as usize, 0, 0, 0);
                if r < 0 {
                    report(status, Step::Uid, r);
                }
            }
            // A change of user sets the flag to fs.suid_dumpable (2 on
            // some systems: a core dump, as root, of the daemon's memory
            // too): cleared again for the memory it shares.
            if plan.undumpable {
                call(libc::SYS_prctl, libc::PR_SET_DUMPABLE as usize, 0, 0, 0);
            }
        }
        if plan.reset_signals {
            rawsys::set_mask(0);
        }
        let (argv, envp) = (plan.argv.as_ptr() as usize, plan.envp.as_ptr() as usize);
        let r = call(libc::SYS_execve, plan.path as usize, argv, envp, 0);
        report(status, Step::Exec, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Mutex;

    /// The tests that clone into this process's memory, one at a time (the
    /// dumpable flag is the process's).
    static SHARED_TESTS: Mutex<()> = Mutex::new(());

    fn c(s: &str) -> CString {
        CString::new(s).expect("no NUL")
    }

    /// `sh -c script` in `cwd` with `LISTEN_PID` and one listening fd (a
    /// pipe's read end stands in), its stdout a pipe: the command and that
    /// pipe's read end.
    fn command(path: &str, script: &str, cwd: &str) -> (Command, std::fs::File) {
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"));
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let (listen_r, _listen_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        // Kept open by the test for the child's fd 3 (leaked on purpose:
        // the fd number must stay valid until the child has it).
        let listen = std::mem::ManuallyDrop::new(listen_r).as_raw_fd();
        let cmd = Command {
            path: c(path),
            argv: vec![c("sh"), c("-c"), c(script)],
            envp: vec![c("A=1"), c(LISTEN_PID_PLACEHOLDER), c("PATH=/usr/bin:/bin")],
            cwd: c(cwd),
            creds: None,
            stdin: null(),
            stdout: out_w,
            stderr: null(),
            listen: vec![listen],
            channel: None,
            listen_pid_env: Some(1),
            cgroup: None,
        };
        (cmd, std::fs::File::from(out_r))
    }

    /// Wait (5 s at most) until the status pipe says more than Waiting.
    fn settle(p: &mut Pending) -> ExecStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match p.check() {
                ExecStatus::Waiting if std::time::Instant::now() < deadline => {
                    let mut fds = [libc::pollfd {
                        fd: p.status.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    }];
                    // SAFETY: poll(2) on a live array of one.
                    unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
                }
                s => return s,
            }
        }
    }

    fn exit_code(pid: i32) -> i32 {
        let mut st = 0;
        // SAFETY: waits for this test's own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        assert!(libc::WIFEXITED(st), "status {st:#x}");
        libc::WEXITSTATUS(st)
    }

    fn dumpable() -> i32 {
        // SAFETY: reads this process's flag.
        unsafe { libc::prctl(libc::PR_GET_DUMPABLE) }
    }

    #[test]
    fn a_shared_child_gets_its_fds_cwd_env_and_own_pid() {
        let _one = SHARED_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let script = "echo \"$LISTEN_PID $$ $A $(pwd)\"; ls /proc/$$/fd | sort -n | tr '\\n' ' '";
        let (cmd, mut out) = command("/bin/sh", script, "/tmp");
        let before = dumpable();
        let mut p = match spawn_shared(cmd) {
            Ok(r) => r.expect("cloned"),
            Err(_) => {
                if rawsys::CAN_CLONE_ON {
                    panic!("refused on x86_64");
                }
                eprintln!("skipped: no shared clone on this architecture");
                return;
            }
        };
        assert!(p.held.is_some(), "what it reads is kept");
        assert_eq!(settle(&mut p), ExecStatus::Running);
        assert!(
            p.held.as_ref().is_some_and(|h| h.released),
            "let go at exec"
        );
        let pid = p.pid;
        drop(p);
        assert_eq!(dumpable(), before, "the daemon's dumpable flag put back");
        assert_eq!(exit_code(pid), 0);
        let mut text = String::new();
        out.read_to_string(&mut text).expect("output");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(format!("{pid} {pid} 1 /tmp").as_str()));
        // 0, 1, 2 and the listening fd as 3, nothing else: not even what
        // the test harness left open without close-on-exec.
        let fds: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{fds:?}");
    }

    #[test]
    fn a_shared_child_reports_the_step_that_failed() {
        let _one = SHARED_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        for (path, cwd, step, object) in [
            (
                "/bin/sh",
                "/nonexistent-cwd",
                Step::Chdir,
                "/nonexistent-cwd",
            ),
            ("/nonexistent-prog", "/", Step::Exec, "/nonexistent-prog"),
        ] {
            let (cmd, _out) = command(path, "exit 0", cwd);
            let before = dumpable();
            let Ok(r) = spawn_shared(cmd) else {
                if rawsys::CAN_CLONE_ON {
                    panic!("refused on x86_64");
                }
                eprintln!("skipped: no shared clone on this architecture");
                return;
            };
            let mut p = r.expect("cloned");
            let expected = ExecStatus::Failed(SpawnError {
                step,
                errno: Errno::ENOENT,
                object: object.into(),
            });
            assert_eq!(settle(&mut p), expected);
            // Not let go at its report: it still runs to its exit, and
            // the daemon stays undumpable meanwhile (the child cleared
            // the flag of the memory they share).
            let mut held = p.held.take().expect("held");
            assert!(!held.released);
            assert_eq!(dumpable(), 0, "undumpable while it shares memory");
            assert_eq!(exit_code(p.pid), 127);
            held.release();
            drop(held);
            assert_eq!(dumpable(), before, "the flag put back");
        }
    }
}
