//! The syscall seam: every raw `libc` call the daemon makes outside
//! `spawn.rs`'s child, behind one `syscall!` helper that turns `-1` into a
//! typed `Errno`. Owns fd flags (close-on-exec, non-blocking, copies above a
//! floor), signals (`Signal`, sent to a process or its group), atomic file
//! writes and the daemon's own stdio. Never touches the process table.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// Mark `fd` close-on-exec.
pub fn set_cloexec(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: fcntl on an fd the caller owns; flags only.
    let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFD)) }?;
    // SAFETY: as above.
    unsafe { syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC)) }?;
    Ok(())
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
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // A closed one (the directory's own fd) fails harmlessly.
        let _ = set_cloexec(fd);
    }
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

/// Return freed heap pages to the kernel (glibc; musl's allocator gives
/// them back by itself).
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free pages; nothing else runs.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0)
    };
}

/// `write_atomic` for a private file (the dump): mode `mode` whatever the
/// umask, always durable, and the `.tmp` made afresh (`O_EXCL`,
/// `O_NOFOLLOW`), so a link planted there is never written through.
pub fn write_atomic_private(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Write a file through `.tmp` + rename (STYLE 12), so nobody reads it half
/// written; `durable` adds an fsync of the file before the rename and of
/// its directory after, for files that must survive a crash of the machine
/// (pid files need not).
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
    std::fs::rename(&tmp, path)?;
    if durable && let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_group_is_alive_at_nonsense_ids() {
        assert!(!group_alive(0));
        assert!(!group_alive(-5));
    }
}
