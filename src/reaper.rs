//! Reaping (STYLE 3): become a child subreaper, so orphaned descendants of
//! the apps come to the daemon, and drain `waitpid(-1, WNOHANG)` until no
//! child is left to report.

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::process::Exit;

/// Ask the kernel to re-parent orphaned descendants to this process.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Children that have ended, with how they ended: at most `limit`, and
/// whether more may be waiting (the rest stay zombies until the next call,
/// so their pids cannot be reused meanwhile).
pub fn reap_some(limit: usize) -> (Vec<(i32, Exit)>, bool) {
    let mut out = Vec::new();
    loop {
        if out.len() >= limit {
            return (out, true);
        }
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw(), Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid.as_raw(), Exit::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Err(Errno::EINTR) => continue,
            // Stopped/continued are not reported without WUNTRACED; any other
            // error means nothing more to reap now.
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    (out, false)
}
