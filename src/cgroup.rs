//! cgroup v2, where it is there and writable: each app process gets a
//! cgroup of its own under the daemon's, so that stopping it reaches every
//! process it started — even one that called `setsid` to leave its process
//! group — through `cgroup.kill`, and "is anything of it left" is the
//! cgroup's `populated`. Where there is no writable cgroup v2 (most
//! containers without a delegated cgroup), the daemon keeps to process
//! groups, and `describe` says which is in use. Pure parsers for
//! `/proc/self/cgroup` and `/proc/self/mountinfo`; the rest is a few file
//! writes. Never signals a process itself.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The daemon's cgroup v2 directory, from `/proc/self/cgroup` (`0::/path`)
/// and the cgroup2 mount in `/proc/self/mountinfo`.
pub fn own_dir(proc_cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let rel = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim();
    let mount = cgroup2_mount(mountinfo)?;
    // A path that has left the mount's view (a "/.." prefix) cannot be used.
    if rel.starts_with("/..") {
        return None;
    }
    Some(mount.join(rel.trim_start_matches('/')))
}

/// Where cgroup2 is mounted: field 5 of the `mountinfo` line whose
/// filesystem type (after the ` - ` separator) is `cgroup2`.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (before, after) = l.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let point = before.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape(point)))
    })
}

/// `mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = oct.iter().fold(0u32, |a, d| a * 8 + u32::from(d - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroups of one daemon: `<own dir>/corral-<daemon pid>/<pm_id>-<n>`.
#[derive(Debug)]
pub struct Cgroups {
    base: PathBuf,
    next: u64,
}

impl Cgroups {
    /// The daemon's directory for its apps' cgroups, made now; `None` when
    /// cgroup v2 is not there, or not writable, or cannot kill
    /// (`cgroup.kill` needs Linux 5.14).
    pub fn open() -> Option<Cgroups> {
        let own = own_dir(
            &std::fs::read_to_string("/proc/self/cgroup").ok()?,
            &std::fs::read_to_string("/proc/self/mountinfo").ok()?,
        )?;
        if !own.join("cgroup.kill").exists() && !own.join("cgroup.procs").exists() {
            return None;
        }
        sweep(&own);
        let base = own.join(format!("corral-{}", std::process::id()));
        match std::fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
        if !base.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&base);
            return None;
        }
        Some(Cgroups { base, next: 0 })
    }

    /// The number of the last cgroup made (handed to a new daemon image).
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Go on numbering after `n` (a new daemon image, the same pid).
    pub fn set_next(&mut self, n: u64) {
        self.next = self.next.max(n);
    }

    /// A new, empty cgroup for one process of app `pm_id`.
    pub fn make(&mut self, pm_id: u32) -> io::Result<PathBuf> {
        self.next += 1;
        let dir = self.base.join(format!("{pm_id}-{}", self.next));
        std::fs::create_dir(&dir)?;
        Ok(dir)
    }

    /// Remove every (empty) cgroup of this daemon, and its directory.
    pub fn remove_all(&self) {
        if let Ok(dir) = std::fs::read_dir(&self.base) {
            for e in dir.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// Remove what daemons that died left under `own`: the empty cgroups of a
/// `corral-<pid>` whose daemon is gone (live ones stay: a process of a dead
/// daemon is the next daemon's to stop, see the journal).
fn sweep(own: &Path) {
    let Ok(dir) = std::fs::read_dir(own) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("corral-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if crate::sys::process_alive(pid) {
            continue;
        }
        if let Ok(apps) = std::fs::read_dir(e.path()) {
            for a in apps.flatten() {
                if a.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(a.path());
                }
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
}

/// The path the child writes `0` to, joining the cgroup before `execve`.
pub fn procs_file(dir: &Path) -> Option<CString> {
    CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok()
}

/// Whether any process is left in the cgroup (`populated 1` in
/// `cgroup.events`); a cgroup that cannot be read counts as empty.
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 1"))
}

/// SIGKILL every process of the cgroup, wherever it went in the tree of
/// processes.
pub fn kill(dir: &Path) -> io::Result<()> {
    std::fs::write(dir.join("cgroup.kill"), b"1")
}

/// Remove a cgroup once empty (a live one is left, `EBUSY`).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn the_daemons_cgroup_from_a_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("0::/\n", MOUNTINFO, Some("/sys/fs/cgroup/unified/")),
            (
                "4:memory:/x\n0::/system.slice/corral.service\n",
                MOUNTINFO,
                Some("/sys/fs/cgroup/unified/system.slice/corral.service"),
            ),
            (
                "0::/user.slice\n",
                "36 25 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
                Some("/sys/fs/cgroup/user.slice"),
            ),
            ("4:memory:/x\n", MOUNTINFO, None),
            ("0::/\n", "22 1 0:21 / /proc rw - proc proc rw\n", None),
            ("0::/../outside\n", MOUNTINFO, None),
        ];
        for (cg, mi, want) in cases {
            assert_eq!(
                own_dir(cg, mi),
                want.map(PathBuf::from),
                "{cg:?} with {mi:?}"
            );
        }
    }

    #[test]
    fn mount_points_are_unescaped() {
        let mi = "36 25 0:30 / /mnt/a\\040b rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(mi), Some(PathBuf::from("/mnt/a b")));
    }
}
