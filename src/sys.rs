//! The syscall seam: every raw `libc` call the daemon makes outside
//! `spawn.rs`'s child, behind one `syscall!` helper that turns `-1` into a
//! typed `Errno`. Owns fd flags (close-on-exec, non-blocking, copies above a
//! floor), signals (`Signal`, sent to a process or its group), atomic file
//! writes and the daemon's own stdio. Never touches the process table.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;

/// Call a libc function that returns -1 and sets errno on failure; its
/// result as `Result<_, Errno>`. The caller writes `unsafe` with its own
/// SAFETY line around the macro.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let r = libc::$fn($($arg),*);
        if r == -1 {
            Err(nix::errno::Errno::last())
        } else {
            Ok(r)
        }
    }};
}
pub(crate) use syscall;

/// The highest signal number accepted (real-time signals included).
pub const MAX_SIGNAL: i32 = 64;

/// A signal number known to be valid (1..=64), real-time ones included,
/// which `nix::sys::signal::Signal` cannot name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Signal(i32);

impl Signal {
    pub const INT: Signal = Signal(libc::SIGINT);
    pub const KILL: Signal = Signal(libc::SIGKILL);
    pub const CONT: Signal = Signal(libc::SIGCONT);

    /// The signal numbered `n`, if there is one.
    pub fn new(n: i32) -> Option<Signal> {
        (1..=MAX_SIGNAL).contains(&n).then_some(Signal(n))
    }

    /// Its number.
    pub fn number(self) -> i32 {
        self.0
    }
}

/// Send `sig` to the process group `pid` leads (`group`), or to `pid`
/// alone. A target that has vanished is a normal outcome, not an error.
pub fn send(pid: i32, sig: Signal, group: bool) {
    if pid <= 0 {
        return;
    }
    let target = if group { -pid } else { pid };
    // SAFETY: kill(2) with a positive pid or a negated process group id;
    // never 0 or -1, which would reach the daemon's own group or everyone.
    let _ = unsafe { syscall!(kill(target, sig.number())) };
}

/// Send `sig`, then SIGCONT so a stopped process can act on it.
pub fn send_and_continue(pid: i32, sig: Signal, group: bool) {
    send(pid, sig, group);
    send(pid, Signal::CONT, group);
}

/// Whether process `pid` exists (a zombie counts).
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence; EPERM means it exists.
    pid > 0 && !matches!(unsafe { syscall!(kill(pid, 0)) }, Err(Errno::ESRCH))
}

/// Whether any process still belongs to the group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence; EPERM means it exists.
    let r = unsafe { syscall!(kill(-pgid, 0)) };
    !matches!(r, Err(Errno::ESRCH))
}

/// The effective uid of the daemon.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Set or clear `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> Result<(), Errno> {
    // SAFETY: fcntl on an fd the caller owns; flags only.
    let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFL)) }?;
    let want = match on {
        true => flags | libc::O_NONBLOCK,
        false => flags & !libc::O_NONBLOCK,
    };
    if want != flags {
        // SAFETY: as above.
        unsafe { syscall!(fcntl(fd, libc::F_SETFL, want)) }?;
    }
    Ok(())
}

/// A close-on-exec pipe for a child, `(read end, write end)`: the
/// daemon's end (the read end if `daemon_reads`) does not block, the
/// child's blocks like any ordinary stdio. Made blocking and one end then
/// set: a fresh pipe has no status flag to keep (`F_SETFL` leaves the
/// access mode alone), so one `fcntl` instead of a read and a write of the
/// flags (four pipes per spawn).
pub fn child_pipe(daemon_reads: bool) -> Result<(OwnedFd, OwnedFd), Errno> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let ours = match daemon_reads {
        true => r.as_raw_fd(),
        false => w.as_raw_fd(),
    };
    // SAFETY: fcntl on an fd just made and owned here; flags only.
    unsafe { syscall!(fcntl(ours, libc::F_SETFL, libc::O_NONBLOCK)) }?;
    Ok((r, w))
}

/// This process's environment as text, and the names (lossy) of the
/// variables left out of it because their name or value is not UTF-8:
/// requests are JSON, and `std::env::vars` panics on such a variable.
pub fn utf8_env() -> (std::collections::BTreeMap<String, String>, Vec<String>) {
    let mut env = std::collections::BTreeMap::new();
    let mut left_out = Vec::new();
    for (k, v) in std::env::vars_os() {
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => {
                env.insert(k, v);
            }
            (Ok(k), Err(_)) => left_out.push(k),
            (Err(k), _) => left_out.push(k.to_string_lossy().into_owned()),
        }
    }
    (env, left_out)
}

/// Mark `fd` close-on-exec.
pub fn set_cloexec(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: fcntl on an fd the caller owns; flags only.
    let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFD)) }?;
    // SAFETY: as above.
    unsafe { syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC)) }?;
    Ok(())
}

/// Let `fd` survive `execve` (a daemon handing itself over to its new
/// image), or close-on-exec again when `keep` is false.
pub fn keep_across_exec(fd: RawFd, keep: bool) -> Result<(), Errno> {
    // FD_CLOEXEC is the only fd flag: one call, no F_GETFD (a hand-over
    // does this for thousands of fds).
    let flags = match keep {
        true => 0,
        false => libc::FD_CLOEXEC,
    };
    // SAFETY: fcntl on an fd the caller owns; flags only.
    unsafe { syscall!(fcntl(fd, libc::F_SETFD, flags)) }?;
    Ok(())
}

/// Block (`true`) or unblock `signals`: a daemon blocks those it catches
/// across the `execve` of its new image (the mask survives it; the
/// handlers do not), which unblocks them once it has its own.
pub fn block_signals(signals: &[i32], block: bool) {
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset;
    // sigprocmask only changes this thread's mask (the daemon has one).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

/// A close-on-exec copy of `fd` numbered at least `min`.
pub fn dup_cloexec(fd: RawFd, min: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new fd that nothing else owns.
    let n = unsafe { syscall!(fcntl(fd, libc::F_DUPFD_CLOEXEC, min)) }?;
    // SAFETY: `n` was just created and is owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Whatever fds the daemon inherited beyond 0, 1 and 2 must not reach the
/// apps: mark them close-on-exec (the daemon's own are so from birth).
pub fn mark_inherited_fds_cloexec() {
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
    for fd in open_fds(3) {
        // A closed one (the directory's own fd) fails harmlessly.
        let _ = set_cloexec(fd);
    }
}

/// The fds this process has open from `first` up (/proc/self/fd; the
/// listing's own fd among them, closed by the time this returns).
pub fn open_fds(first: i32) -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd >= first)
                .collect()
        })
        .unwrap_or_default()
}

/// Point fds 1 and 2 at the daemon log, and fd 0 at /dev/null if `stdin`.
pub fn redirect_stdio(log: &Path, stdin: bool) -> io::Result<()> {
    let null = File::open("/dev/null")?;
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(log)?;
    let mut pairs = vec![(log.as_raw_fd(), 1), (log.as_raw_fd(), 2)];
    if stdin {
        pairs.push((null.as_raw_fd(), 0));
    }
    for (from, to) in pairs {
        // SAFETY: dup2 onto the standard fds, which this process owns.
        unsafe { syscall!(dup2(from, to)) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// Read from `fd` without blocking; `Ok(0)` is end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: reading into a live buffer of the stated length.
        match unsafe { syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())) } {
            Ok(n) => return Ok(n as usize),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The soft `RLIMIT_NOFILE` the daemon was started with, which its apps
/// get back (0 until `raise_fd_limit`).
static APP_FD_LIMIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Raise the soft limit on open files to the hard one (a daemon with
/// hundreds of apps and clients needs more than the usual 1024), keeping
/// the old soft limit for the apps, as systemd does: a program that loops
/// over every possible fd, or uses `select`, is not handed a million.
/// The limits after: (soft, hard).
pub fn raise_fd_limit() -> Result<(u64, u64), Errno> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    // rlim_t is 32 bits on some targets (armv7 with glibc).
    #[allow(clippy::useless_conversion)]
    let wide = u64::from(soft);
    APP_FD_LIMIT.store(wide, std::sync::atomic::Ordering::Relaxed);
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    #[allow(clippy::useless_conversion)]
    let hard = u64::from(hard);
    Ok((hard, hard))
}

/// The soft limit on open files an app starts with (0: leave it).
pub fn app_fd_limit() -> u64 {
    APP_FD_LIMIT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Read from `fd` into `buf`'s spare room (its contents dropped first):
/// only the pages the kernel fills are touched, none for an end of file.
/// The bytes read, now `buf`'s length.
pub fn read_into_spare(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    // SAFETY: read(2) writes at most `capacity` bytes into the buffer's
    // allocation; exactly the `n` it returns are then initialized.
    unsafe {
        let n = syscall!(read(fd, buf.as_mut_ptr().cast(), buf.capacity()))?;
        let n = n as usize;
        buf.set_len(n);
        Ok(n)
    }
}

/// Return freed heap pages to the kernel (glibc; musl's allocator gives
/// them back by itself).
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free pages; nothing else runs.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0)
    };
}

/// Set the allocator up for a daemon that lives long (glibc; musl's needs
/// nothing): a block of 128 KiB or more (the answer to a list of a
/// thousand apps, the journal's text) always gets a mapping of its own,
/// given back whole when freed. glibc otherwise raises that threshold to
/// the largest such block freed so far, and the next ones are cut from
/// the heap, where the small blocks allocated beside them keep its pages
/// from being given back (1.7 MB of free heap held with 1000 apps).
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a parameter of the allocator, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// The identity files are opened with on behalf of an app that runs as
/// another user: the kernel checks every component of the path, links
/// included, against it (as systemd does for `StandardOutput=file:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

fn set_groups(groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: setgroups reads `len` gids from a live slice. The daemon has
    // one thread, so the whole process changes together.
    unsafe { syscall!(setgroups(groups.len(), groups.as_ptr())) }.map(drop)
}

fn current_groups() -> Result<Vec<u32>, Errno> {
    // SAFETY: a size query (0, null) writes nothing.
    let n = unsafe { syscall!(getgroups(0, std::ptr::null_mut())) }?;
    let mut groups = vec![0u32; usize::try_from(n).unwrap_or(0)];
    // SAFETY: getgroups writes at most `len` gids into the live buffer.
    let n = unsafe { syscall!(getgroups(n, groups.as_mut_ptr())) }?;
    groups.truncate(usize::try_from(n).unwrap_or(0));
    Ok(groups)
}

/// Run `f` with the filesystem identity of `user` (fsuid, fsgid and the
/// supplementary groups), then take the daemon's back; `f` alone when
/// `user` is `None`. Only root can switch; the daemon has one thread, so
/// nothing else runs meanwhile.
pub fn as_user<T>(user: Option<&FsUser>, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let Some(u) = user else { return f() };
    let saved = current_groups()?;
    set_groups(&u.groups)?;
    // SAFETY: setfsgid/setfsuid change this thread's filesystem identity
    // only; they return the previous value and cannot fail otherwise.
    // A second call with the same value reads back what is in force.
    let (old_gid, old_uid, now_uid, now_gid) = unsafe {
        let old_gid = libc::setfsgid(u.gid);
        let old_uid = libc::setfsuid(u.uid);
        let now_uid = libc::setfsuid(u.uid);
        let now_gid = libc::setfsgid(u.gid);
        (old_gid, old_uid, now_uid, now_gid)
    };
    let r = match (now_uid as u32 == u.uid, now_gid as u32 == u.gid) {
        (true, true) => f(),
        _ => Err(io::Error::other(format!(
            "cannot take the identity of uid {} gid {}",
            u.uid, u.gid
        ))),
    };
    // SAFETY: as above, back to what was in force before.
    unsafe {
        libc::setfsuid(old_uid as u32);
        libc::setfsgid(old_gid as u32);
    }
    set_groups(&saved)?;
    r
}

fn cstring(p: &std::ffi::OsStr) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Write a file through `<name>.tmp` + rename (STYLE 12), so nobody reads
/// it half written. Both happen in the directory opened once (`openat`,
/// `renameat`), and the temporary file is created new (`O_EXCL`,
/// `O_NOFOLLOW`), so a link planted at either name is replaced, never
/// written through. `durable` adds an fsync of the file before the rename
/// and of its directory after, for files that must survive a crash of the
/// machine (pid files need not).
pub fn write_atomic(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    write_atomic_mode(path, data, durable, None)
}

/// `write_atomic` for a private file (the dump): durable, and mode `mode`
/// whatever the umask.
pub fn write_atomic_private(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_mode(path, data, true, Some(mode))
}

/// The directory `path` is in, opened to work through (`.` for a bare
/// name), and the NUL-terminated names of `path` and of its `.tmp` in it.
fn dir_and_names(path: &Path) -> io::Result<(OwnedFd, std::ffi::CString, std::ffi::CString)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = name.to_owned();
    tmp.push(".tmp");
    let (name, tmp, cdir) = (cstring(name)?, cstring(&tmp)?, cstring(dir.as_os_str())?);
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: open(2) of a NUL-terminated path; the fd is owned below.
    let dfd = unsafe { syscall!(open(cdir.as_ptr(), flags)) }?;
    // SAFETY: `dfd` was just opened and nothing else owns it.
    Ok((unsafe { OwnedFd::from_raw_fd(dfd) }, name, tmp))
}

/// `write_atomic`, the new file made 0644 less the umask, or exactly
/// `mode`.
pub fn write_atomic_mode(
    path: &Path,
    data: &[u8],
    durable: bool,
    mode: Option<u32>,
) -> io::Result<()> {
    let (dir, name, tmp) = dir_and_names(path)?;
    let dfd = dir.as_raw_fd();
    // A leftover (or planted) temporary file goes; unlink removes a link
    // itself, not what it points to.
    // SAFETY: unlinkat of a NUL-terminated name in a live directory fd.
    match unsafe { syscall!(unlinkat(dfd, tmp.as_ptr(), 0)) } {
        Ok(_) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let create = mode.unwrap_or(0o644) as libc::c_uint;
    // SAFETY: openat of a NUL-terminated name; the fd is owned below.
    let fd = unsafe { syscall!(openat(dfd, tmp.as_ptr(), flags, create)) }?;
    // SAFETY: `fd` was just created and nothing else owns it.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let chmod = match mode {
        Some(m) => f.set_permissions(std::fs::Permissions::from_mode(m)),
        None => Ok(()),
    };
    let written = chmod
        .and_then(|()| f.write_all(data))
        .and_then(|()| if durable { f.sync_all() } else { Ok(()) });
    let written = written.and_then(|()| {
        // SAFETY: renameat of NUL-terminated names in a live directory fd.
        let r = unsafe { syscall!(renameat(dfd, tmp.as_ptr(), dfd, name.as_ptr())) };
        r.map(drop).map_err(io::Error::from)
    });
    if let Err(e) = written {
        // SAFETY: as the unlinkat above.
        let _ = unsafe { syscall!(unlinkat(dfd, tmp.as_ptr(), 0)) };
        return Err(e);
    }
    if durable {
        File::from(dir).sync_all()?;
    }
    Ok(())
}

/// Replace `path`'s contents, atomically as `write_atomic_mode` does (not
/// durable), without making and removing a file at every call: the new
/// contents go into `<path>.tmp`, kept from the call before and truncated,
/// and the two names are swapped (`renameat2` with `RENAME_EXCHANGE`), so
/// `.tmp` holds the old contents until the next call. For a file rewritten
/// often in a directory only the daemon writes (the journal in the home,
/// the pid files in its `pids/`), and only there: where others may write,
/// they could swap `.tmp` between its check and the exchange. On a busy
/// ext4 a new inode costs half a millisecond. A reader that keeps `path`
/// open across two calls sees the second write in its file (it became
/// `.tmp`): readers open the name each time. Where `.tmp` is not
/// a plain file of this user with one link, `path` does not exist yet, or
/// the filesystem cannot swap, it is `write_atomic_mode`.
pub fn write_swapped(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let fallback = || write_atomic_mode(path, data, false, Some(mode));
    let (dir, name, tmp) = dir_and_names(path)?;
    let dfd = dir.as_raw_fd();
    // Never through a link: a planted symlink fails to open, a hard link
    // is refused below.
    // Nor does a FIFO or a device planted there block or become a
    // controlling terminal: refused below as not a plain file.
    let flags = libc::O_WRONLY
        | libc::O_CREAT
        | libc::O_NOFOLLOW
        | libc::O_NONBLOCK
        | libc::O_NOCTTY
        | libc::O_CLOEXEC;
    // SAFETY: openat of a NUL-terminated name; the fd is owned below.
    let Ok(fd) = (unsafe { syscall!(openat(dfd, tmp.as_ptr(), flags, mode as libc::c_uint)) })
    else {
        return fallback();
    };
    // SAFETY: `fd` was just opened and nothing else owns it.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let Some(old) = f
        .metadata()
        .ok()
        .filter(|m| m.file_type().is_file() && m.nlink() == 1 && m.uid() == euid())
    else {
        return fallback();
    };
    // Written over the old contents, then cut to length (when it was
    // longer): truncating to zero first would make ext4 flush the file at
    // close.
    if old.mode() & 0o7777 != mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    f.write_all(data)?;
    if old.len() > data.len() as u64 {
        f.set_len(data.len() as u64)?;
    }
    if renameat2(dfd, &tmp, dfd, &name, libc::RENAME_EXCHANGE).is_ok() {
        return Ok(());
    }
    // The first write (nothing to swap with), or a filesystem that cannot.
    // SAFETY: renameat of NUL-terminated names in a live directory fd.
    unsafe { syscall!(renameat(dfd, tmp.as_ptr(), dfd, name.as_ptr())) }?;
    Ok(())
}

/// `renameat2(2)`, raw: not every libc has a wrapper.
fn renameat2(
    olddir: RawFd,
    old: &std::ffi::CStr,
    newdir: RawFd,
    new: &std::ffi::CStr,
    flags: libc::c_uint,
) -> Result<(), Errno> {
    // SAFETY: renameat2 of NUL-terminated names, relative to directory fds
    // (or AT_FDCWD) the caller holds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            olddir,
            old.as_ptr(),
            newdir,
            new.as_ptr(),
            flags,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(Errno::last()),
    }
}

/// `from` renamed to `to` unless `to` exists (`EEXIST`); `EINVAL` where
/// the filesystem cannot (NFS, FUSE).
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<(), Errno> {
    let c = |p: &Path| cstring(p.as_os_str()).map_err(|_| Errno::EINVAL);
    let (from, to) = (c(from)?, c(to)?);
    renameat2(
        libc::AT_FDCWD,
        &from,
        libc::AT_FDCWD,
        &to,
        libc::RENAME_NOREPLACE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon's end of a child's pipe does not block, the child's does;
    /// both are close-on-exec; data goes through.
    #[test]
    fn a_childs_pipe_blocks_only_at_the_childs_end() {
        // SAFETY (the three calls below): fcntl and write on fds owned here.
        let flags = |fd: &OwnedFd| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        let cloexec = |fd: &OwnedFd| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        for daemon_reads in [true, false] {
            let (r, w) = child_pipe(daemon_reads).unwrap();
            let (ours, theirs) = if daemon_reads { (&r, &w) } else { (&w, &r) };
            assert_ne!(flags(ours) & libc::O_NONBLOCK, 0, "{daemon_reads}");
            assert_eq!(flags(theirs) & libc::O_NONBLOCK, 0, "{daemon_reads}");
            assert_eq!(flags(&r) & libc::O_ACCMODE, libc::O_RDONLY);
            assert_eq!(flags(&w) & libc::O_ACCMODE, libc::O_WRONLY);
            for fd in [&r, &w] {
                assert_ne!(cloexec(fd) & libc::FD_CLOEXEC, 0, "{daemon_reads}");
            }
            assert_eq!(
                unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) },
                1
            );
            let mut b = [0u8; 2];
            assert_eq!(read(r.as_raw_fd(), &mut b), Ok(1));
        }
    }

    #[test]
    fn a_read_fills_only_the_spare_room() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"old");
        nix::unistd::write(&w, b"abcd").unwrap();
        assert_eq!(read_into_spare(r.as_raw_fd(), &mut buf).unwrap(), 4);
        assert_eq!(buf, b"abcd");
        drop(w);
        assert_eq!(read_into_spare(r.as_raw_fd(), &mut buf).unwrap(), 0);
        assert!(buf.is_empty() && buf.capacity() >= 64);
        assert!(read_into_spare(-1, &mut buf).is_err());
    }

    #[test]
    fn signals_are_checked() {
        assert_eq!(Signal::new(2), Some(Signal::INT));
        assert_eq!(Signal::new(34).map(Signal::number), Some(34));
        for bad in [0, -1, 65] {
            assert_eq!(Signal::new(bad), None, "{bad}");
        }
    }

    #[test]
    fn copies_are_cloexec_and_above_the_floor() {
        let f = File::open("/dev/null").unwrap();
        let copy = dup_cloexec(f.as_raw_fd(), 50).unwrap();
        assert!(copy.as_raw_fd() >= 50);
        // SAFETY: reading flags of an fd owned by this test.
        let flags = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        set_nonblocking(copy.as_raw_fd(), true).unwrap();
        // SAFETY: as above.
        let fl = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, libc::O_NONBLOCK);
        set_nonblocking(copy.as_raw_fd(), false).unwrap();
        // SAFETY: as above.
        let fl = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = std::env::temp_dir().join(format!("corral-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        write_atomic(&path, b"one", true).unwrap();
        write_atomic(&path, b"two", false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!dir.join("f.tmp").exists());
        // Links at the name or at its temporary name are replaced, not
        // written through.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("g")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("g.tmp")).unwrap();
        write_atomic(&dir.join("g"), b"three", false).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.join("g")).unwrap(), b"three");
        assert!(!dir.join("g").is_symlink());
        assert!(!dir.join("g.tmp").exists());
        // A private file has its mode exactly, even over a wider one.
        let p = dir.join("dump.json");
        write_atomic(&p, b"old", false).unwrap();
        write_atomic_private(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn swapped_writes_replace_whole_files_and_never_write_through_links() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("corral-swap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j");
        // The first write renames; later ones swap with the kept `.tmp`.
        for (i, text) in ["one", "two", "three"].iter().enumerate() {
            write_swapped(&path, text.as_bytes(), 0o600).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), text.as_bytes(), "write {i}");
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let inode = std::fs::metadata(&path).unwrap().ino();
        write_swapped(&path, b"four", 0o600).unwrap();
        write_swapped(&path, b"five", 0o600).unwrap();
        // Two files take turns (where the filesystem can swap them).
        let swaps = std::fs::metadata(dir.join("j.tmp")).is_ok();
        if swaps {
            assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"five");
        // Another mode is set; a shorter text cuts the longer one kept.
        write_swapped(&path, b"six", 0o640).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        write_swapped(&path, b"7", 0o640).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"7");
        // A planted symlink or hard link at `.tmp` is not written through.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        for (name, plant) in [("s", true), ("h", false)] {
            let p = dir.join(name);
            write_swapped(&p, b"x", 0o600).unwrap();
            let tmp = dir.join(format!("{name}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            match plant {
                true => std::os::unix::fs::symlink(&victim, &tmp).unwrap(),
                false => std::fs::hard_link(&victim, &tmp).unwrap(),
            }
            write_swapped(&p, b"y", 0o600).unwrap();
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep", "{name}");
            assert_eq!(std::fs::read(&p).unwrap(), b"y", "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_group_is_alive_at_nonsense_ids() {
        assert!(!group_alive(0));
        assert!(!group_alive(-5));
    }
}
