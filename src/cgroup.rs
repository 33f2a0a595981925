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
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::spawn;
use crate::vecmap::VecMap;

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

/// The most spare cgroups kept once their apps are deleted (each an empty
/// directory of the kernel's, and ~100 bytes here).
const SPARES_KEPT: usize = 256;

/// The cgroups of one daemon: `<own dir>/corral-<daemon pid>/<pm_id>-<n>`.
/// A process's cgroup, empty once nothing of it is left, is kept for its
/// app's next process (a restart does not wait for the kernel to make and
/// remove one); at most one per app, kept when the app is forgotten for the
/// next app given its pm_id (`forget`).
/// Never kept: one that `cgroup.kill` was written to (Linux 6.18 kills
/// every child later born into such a cgroup with `CLONE_INTO_CGROUP`), nor
/// one a previous image of the daemon made (it may have been).
#[derive(Debug)]
pub struct Cgroups {
    base: PathBuf,
    next: u64,
    /// The cgroups numbered up to this were made by a previous image.
    adopted: u64,
    /// Empty cgroups kept for the next process of their app (`pm_id`).
    spare: Vec<(u32, PathBuf)>,
    /// Cgroups `cgroup.kill` was written to, until given back.
    killed: Vec<PathBuf>,
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
            // A previous image of this daemon (`corral update`): its spare
            // cgroups are not handed over; the live ones stay (EBUSY).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => remove_children(&base),
            Err(_) => return None,
        }
        if !base.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&base);
            return None;
        }
        Some(Cgroups {
            base,
            next: 0,
            adopted: 0,
            spare: Vec::new(),
            killed: Vec::new(),
        })
    }

    /// The directory of the apps' cgroups.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The number of the last cgroup made (handed to a new daemon image).
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Go on numbering after `n` (a new daemon image, the same pid).
    pub fn set_next(&mut self, n: u64) {
        self.next = self.next.max(n);
        self.adopted = self.adopted.max(n);
    }

    /// An empty cgroup for one process of app `pm_id`: its spare, else a
    /// new one.
    pub fn take(&mut self, pm_id: u32) -> io::Result<PathBuf> {
        if let Some(i) = self.spare.iter().position(|(id, _)| *id == pm_id) {
            let (_, dir) = self.spare.swap_remove(i);
            // Unless someone removed it meanwhile.
            if dir.is_dir() {
                return Ok(dir);
            }
        }
        self.next += 1;
        let dir = self.base.join(format!("{pm_id}-{}", self.next));
        std::fs::create_dir(&dir)?;
        Ok(dir)
    }

    /// Nothing of the process in `dir` (of app `pm_id`) is left to watch:
    /// kept as its app's spare if empty and the app has none, else removed
    /// (a cgroup something still runs in is left, `EBUSY`).
    /// `seen_empty`: its `populated` was read as 0 since its last process
    /// ended (nothing can enter an empty cgroup but what the daemon puts
    /// there), so it is not read again.
    pub fn give_back(&mut self, pm_id: u32, dir: PathBuf, seen_empty: bool) {
        let killed = match self.killed.iter().position(|k| *k == dir) {
            Some(i) => {
                self.killed.swap_remove(i);
                true
            }
            None => false,
        };
        let keep = reusable(&dir, self.adopted, killed)
            && !self.spare.iter().any(|(id, _)| *id == pm_id)
            && (seen_empty || !populated(&dir));
        match keep {
            true => self.spare.push((pm_id, dir)),
            false => remove(&dir),
        }
    }

    /// SIGKILL every process of the cgroup `dir`, wherever it went in the
    /// tree of processes (the cgroup is then not reused).
    pub fn kill(&mut self, dir: &Path) -> io::Result<()> {
        if !self.killed.iter().any(|k| k == dir) {
            self.killed.push(dir.to_path_buf());
        }
        kill(dir)
    }

    /// App `pm_id` is gone: its spare is kept for the next app given that
    /// pm_id (a `delete all` then a start numbers from 0 again, and makes no
    /// cgroup), while there are at most `SPARES_KEPT`; else removed.
    pub fn forget(&mut self, pm_id: u32) {
        if self.spare.len() <= SPARES_KEPT {
            return;
        }
        self.spare.retain(|(id, dir)| {
            if *id == pm_id {
                remove(dir);
            }
            *id != pm_id
        });
    }

    /// Remove every (empty) cgroup of this daemon, and its directory.
    pub fn remove_all(&self) {
        remove_children(&self.base);
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// The cgroup of each app process, by pid, kept small: most are
/// `<base>/<pm_id>-<n>` (`Cgroups::take`), kept as the two numbers and the
/// path made again when it is used (an exit, a kill, a `describe`); any
/// other (handed over by an image with another base) is kept whole.
#[derive(Debug, Default)]
pub struct ByPid {
    /// `Cgroups`'s directory, if there is one.
    base: Option<PathBuf>,
    procs: VecMap<i32, Leaf>,
}

/// One process's cgroup.
#[derive(Debug, PartialEq)]
enum Leaf {
    /// `<base>/<pm_id>-<n>`.
    Made(u32, u64),
    Whole(Box<Path>),
}

impl ByPid {
    /// Compact the cgroups under `base` (that of `Cgroups`, if any).
    pub fn new(base: Option<&Path>) -> ByPid {
        ByPid {
            base: base.map(Path::to_path_buf),
            procs: VecMap::default(),
        }
    }

    fn leaf(&self, dir: PathBuf) -> Leaf {
        let made = || {
            if dir.parent()? != self.base.as_deref()? {
                return None;
            }
            let name = dir.file_name()?.to_str()?;
            let (id, n) = name.split_once('-')?;
            let (id, n) = (id.parse().ok()?, n.parse().ok()?);
            // Only the spelling `take` writes comes back the same.
            (format!("{id}-{n}") == name).then_some(Leaf::Made(id, n))
        };
        made().unwrap_or_else(|| Leaf::Whole(dir.into_boxed_path()))
    }

    fn path(&self, leaf: &Leaf) -> PathBuf {
        match (leaf, &self.base) {
            (Leaf::Made(id, n), Some(base)) => base.join(format!("{id}-{n}")),
            (Leaf::Whole(p), _) => p.to_path_buf(),
            // Not made without a base.
            (Leaf::Made(..), None) => PathBuf::new(),
        }
    }

    /// Process `pid` runs in the cgroup `dir`.
    pub fn insert(&mut self, pid: i32, dir: PathBuf) {
        let leaf = self.leaf(dir);
        self.procs.insert(pid, leaf);
    }

    /// The cgroup of process `pid`.
    pub fn get(&self, pid: i32) -> Option<PathBuf> {
        self.procs.get(pid).map(|l| self.path(l))
    }

    /// Forget process `pid`: its cgroup.
    pub fn remove(&mut self, pid: i32) -> Option<PathBuf> {
        self.procs.remove(pid).map(|l| self.path(&l))
    }

    /// Every process and its cgroup, by pid (a hand-over).
    pub fn all(&self) -> Vec<(i32, PathBuf)> {
        self.procs
            .iter()
            .map(|(pid, l)| (pid, self.path(l)))
            .collect()
    }
}

/// Whether the emptied cgroup `dir` may take another process: made by
/// this image (numbered after `adopted`, the last of a previous one) and
/// never killed through `cgroup.kill`.
fn reusable(dir: &Path, adopted: u64, killed: bool) -> bool {
    let n = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('-'))
        .and_then(|(_, n)| n.parse::<u64>().ok());
    !killed && n.is_some_and(|n| n > adopted)
}

/// Remove every empty cgroup under `dir` (live ones stay, `EBUSY`).
fn remove_children(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
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

/// What a child needs to start in the cgroup `dir`: the directory opened
/// `O_PATH` (for `clone3`) and its `cgroup.procs` (to join it itself where
/// `clone3` cannot place it). `None` if it cannot be opened.
pub fn for_child(dir: &Path) -> Option<spawn::Cgroup> {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok()?;
    let dir = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .ok()?;
    Some(spawn::Cgroup {
        dir: dir.into(),
        procs,
    })
}

/// Whether any process is left in the cgroup (`populated 1` in
/// `cgroup.events`); a cgroup that cannot be read counts as empty.
pub fn populated(dir: &Path) -> bool {
    // One open and one read (the file is a few dozen bytes): this is on
    // the way from an app's death to its restart.
    let Ok(mut f) = std::fs::File::open(dir.join("cgroup.events")) else {
        return false;
    };
    let mut buf = [0u8; 256];
    let n = io::Read::read(&mut f, &mut buf).unwrap_or(0);
    buf.get(..n)
        .is_some_and(|t| t.split(|c| *c == b'\n').any(|l| l == b"populated 1"))
}

/// SIGKILL every process of the cgroup, wherever it went in the tree of
/// processes (`Cgroups::kill` also keeps it from being reused).
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
    fn an_emptied_cgroup_is_reused_only_if_this_image_made_it_and_never_killed_it() {
        let cases: &[(&str, u64, bool, bool)] = &[
            ("/cg/corral-9/0-1", 0, false, true),
            ("/cg/corral-9/12-40", 39, false, true),
            // Killed: a child born into it would be killed too.
            ("/cg/corral-9/0-1", 0, true, false),
            // Made by a previous image of the daemon (`corral update`).
            ("/cg/corral-9/3-7", 7, false, false),
            ("/cg/corral-9/3-2", 7, false, false),
            // Not a name this module gives.
            ("/cg/corral-9/odd", 0, false, false),
            ("/cg/corral-9/0-x", 0, false, false),
        ];
        for &(dir, adopted, killed, want) in cases {
            assert_eq!(
                reusable(Path::new(dir), adopted, killed),
                want,
                "{dir} adopted {adopted} killed {killed}"
            );
        }
    }

    #[test]
    fn a_process_cgroup_is_kept_compact_and_made_again_whole() {
        let base = Path::new("/sys/fs/cgroup/a b/corral-7");
        let mut by = ByPid::new(Some(base));
        // (pid, cgroup, kept as its two numbers)
        let table: &[(i32, &str, bool)] = &[
            (30, "/sys/fs/cgroup/a b/corral-7/3-12", true),
            (10, "/sys/fs/cgroup/a b/corral-7/0-1", true),
            (
                20,
                "/sys/fs/cgroup/a b/corral-7/4294967295-18446744073709551615",
                true,
            ),
            // Not the spelling `take` writes, or not under the base:
            // kept whole.
            (40, "/sys/fs/cgroup/a b/corral-7/3-012", false),
            (50, "/sys/fs/cgroup/a b/corral-7/3-1-2", false),
            (60, "/sys/fs/cgroup/a b/corral-7/+3-1", false),
            (70, "/sys/fs/cgroup/a b/corral-6/3-1", false),
            (80, "/sys/fs/cgroup/a b/corral-7/x/3-1", false),
            (90, "/sys/fs/cgroup/a b/corral-7/4294967296-1", false),
            (25, "relative/3-1", false),
        ];
        for &(pid, dir, _) in table {
            by.insert(pid, PathBuf::from(dir));
        }
        for &(pid, dir, made) in table {
            assert_eq!(by.get(pid).as_deref(), Some(Path::new(dir)), "pid {pid}");
            let leaf = by.procs.get(pid).unwrap();
            assert_eq!(matches!(leaf, Leaf::Made(..)), made, "{dir}");
        }
        let pids: Vec<i32> = by.all().iter().map(|p| p.0).collect();
        assert_eq!(pids, [10, 20, 25, 30, 40, 50, 60, 70, 80, 90]);
        // Without a base every path is kept whole.
        let mut whole = ByPid::new(None);
        whole.insert(1, PathBuf::from("/x/corral-7/0-1"));
        assert_eq!(
            whole.procs.get(1),
            Some(&Leaf::Whole(Path::new("/x/corral-7/0-1").into()))
        );
        // Removed: gone.
        assert_eq!(by.remove(30).as_deref(), Some(Path::new(table[0].1)));
        assert_eq!((by.get(30), by.remove(30)), (None, None));
        assert_eq!(by.all().len(), table.len() - 1);
    }

    #[test]
    fn mount_points_are_unescaped() {
        let mi = "36 25 0:30 / /mnt/a\\040b rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(mi), Some(PathBuf::from("/mnt/a b")));
    }
}
