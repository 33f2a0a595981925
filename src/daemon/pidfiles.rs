//! The apps' pid files: written once a main process started (after its
//! exec, `bookkeeping_can_wait`), removed when it ended and did not start
//! again, and the files of the home's `pids/` kept for the next ones.
//!
//! Why keep them: on ext4 without a journal (many SD cards and embedded
//! boxes) making a file skips every inode of its block group freed in the
//! last minutes, reading each one's block, so a `start` of 100 apps right
//! after a `stop` of 100 spent most of its time making their pid files.
//! A removed pid file of `pids/` is therefore renamed to a hidden spare
//! (`pids/.spare-N`, at most `SPARES_MAX`) rather than unlinked, and the
//! next pid file made there is a spare renamed into place and written
//! over. The spares are the daemon's own files in its own directory, never
//! an app's (`pid_file` elsewhere is made and removed as before); a daemon
//! that exits removes them, the next one (or `update`'s new image) takes
//! on those a crash left.

use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::app::{SPARE_PREFIX, spare_number};
use crate::sys;

use super::Daemon;

/// The most spares kept: as many as a large fleet stopping at once.
const SPARES_MAX: usize = 1024;

/// Files of removed pid files, kept in the home's `pids/` to be renamed
/// into place as the next pid files.
pub(crate) struct Spares {
    dir: PathBuf,
    /// The numbers of the spares there are.
    kept: Vec<u32>,
    /// The number of the next spare.
    next: u32,
    /// This filesystem cannot rename without replacing (`RENAME_NOREPLACE`:
    /// NFS, FUSE, kernels before 3.15): no spare is kept.
    off: bool,
}

impl Spares {
    /// The spares of `dir` left by an earlier daemon (one that crashed, or
    /// the image before an `update`), at most `SPARES_MAX` kept.
    pub fn adopt(dir: PathBuf) -> Spares {
        let mut s = Spares {
            dir,
            kept: Vec::new(),
            next: 0,
            off: false,
        };
        let Ok(entries) = std::fs::read_dir(&s.dir) else {
            return s;
        };
        for n in entries
            .flatten()
            .filter_map(|e| spare_number(&e.file_name()))
        {
            s.next = s.next.max(n.saturating_add(1));
            match s.kept.len() < SPARES_MAX {
                true => s.kept.push(n),
                false => {
                    let _ = std::fs::remove_file(s.path(n));
                }
            }
        }
        s
    }

    fn path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{SPARE_PREFIX}{n}"))
    }

    /// Remove `path` (a pid file of this directory): kept as a spare where
    /// there is room, else unlinked.
    fn retire(&mut self, path: &Path) -> std::io::Result<()> {
        // A number taken by a file not ours is skipped (a few at most).
        for _ in 0..4 {
            if self.off || self.kept.len() >= SPARES_MAX {
                break;
            }
            let n = self.next;
            self.next = n.wrapping_add(1);
            match sys::rename_noreplace(path, &self.path(n)) {
                Ok(()) => {
                    self.kept.push(n);
                    return Ok(());
                }
                Err(Errno::EEXIST) => continue,
                Err(Errno::ENOENT) => return Err(Errno::ENOENT.into()),
                // Not here: removed, as without spares.
                Err(_) => self.off = true,
            }
        }
        std::fs::remove_file(path)
    }

    /// Give `to` (a `.tmp` of this directory that `write_swapped` opens
    /// next) a spare's file, if there is one and `to` does not exist.
    fn reuse(&mut self, to: &Path) {
        if self.off {
            return;
        }
        let Some(n) = self.kept.pop() else {
            return;
        };
        match sys::rename_noreplace(&self.path(n), to) {
            // Taken, or gone behind the daemon's back.
            Ok(()) | Err(Errno::ENOENT) => {}
            // Already there (a restart's old pid): the spare stays a spare.
            Err(Errno::EEXIST) => self.kept.push(n),
            // Kept until the exit removes it.
            Err(_) => {
                self.kept.push(n);
                self.off = true;
            }
        }
    }

    /// Unlink every spare (the daemon exits).
    pub fn remove_all(&mut self) {
        for n in std::mem::take(&mut self.kept) {
            let _ = std::fs::remove_file(self.path(n));
        }
    }
}

/// `path` with `.tmp` after it (`sys::write_swapped`'s other name).
fn tmp_of(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

impl Daemon {
    pub(super) fn write_pid_file(&mut self, id: u32, pid: i32) {
        let Some(e) = self.table.get(id) else {
            return;
        };
        let path = e.app.pid_path(&self.home);
        let user = e.app.file_user(&self.home, &path);
        let text = format!("{pid}\n");
        // In the home's pids/ (the daemon's own directory), a restart makes
        // and removes no file (`write_swapped`; `.tmp` keeps the old pid),
        // and a first start takes a spare's file where there is one.
        let own = path.parent() == Some(self.spares.dir.as_path());
        if own {
            self.spares.reuse(&tmp_of(&path));
        }
        let write = |path: &Path, text: &[u8]| match own {
            true => sys::write_swapped(path, text, 0o644),
            false => sys::write_atomic(path, text, false),
        };
        let written = sys::as_user(user.as_ref(), || {
            match write(&path, text.as_bytes()) {
                // The directory is made only when missing: a crash loop
                // writes the file at every spawn.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    write(&path, text.as_bytes())
                }
                other => other,
            }
        });
        if let Err(err) = written {
            self.log(&format!("app {id}: cannot write {}: {err}", path.display()));
        }
    }

    /// Write the pid files of the apps whose main process started since
    /// the last call: the pid of the one running now.
    pub(super) fn write_due_pid_files(&mut self) {
        for id in std::mem::take(&mut self.pid_files_due) {
            if let Some(pid) = self.table.get(id).and_then(|e| e.m().pid()) {
                self.write_pid_file(id, pid);
            }
        }
    }

    /// Remove the pid files of apps that exited and did not start again.
    pub(super) fn remove_stale_pid_files(&mut self) {
        for (id, path, user) in std::mem::take(&mut self.stale_pid_files) {
            if self.table.get(id).is_some_and(|e| e.m().is_running()) {
                continue;
            }
            let tmp = tmp_of(&path);
            if path.parent() == Some(self.spares.dir.as_path()) {
                // The old pid `write_swapped` kept, if any, goes; the file
                // itself is kept as a spare.
                let _ = std::fs::remove_file(&tmp);
                let _ = self.spares.retire(&path);
                continue;
            }
            let _ = sys::as_user(user.as_ref(), || {
                let _ = std::fs::remove_file(&tmp);
                std::fs::remove_file(&path)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::ffi::OsStr;

    #[test]
    fn spare_names_are_told_apart() {
        for (name, n) in [
            (".spare-0", Some(0)),
            (".spare-17", Some(17)),
            (".spare-", None),
            (".spare-1x", None),
            (".spare--1", None),
            ("spare-1", None),
            (".spare-1.pid", None),
            ("a-0.pid", None),
            (".spare-99999999999", None),
            (".spare-007", None),
            (".spare-+7", None),
        ] {
            assert_eq!(spare_number(OsStr::new(name)), n, "{name}");
        }
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "corral-spares-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_removed_pid_file_is_the_next_one() {
        let d = dir();
        let mut s = Spares::adopt(d.clone());
        let a = d.join("a-0.pid");
        std::fs::write(&a, "41\n").unwrap();
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = ino(&a);
        s.retire(&a).unwrap();
        assert_eq!(names(&d), [".spare-0"]);
        // Another app's file takes it; written over by write_swapped.
        let b = d.join("b-1.pid");
        s.reuse(&tmp_of(&b));
        sys::write_swapped(&b, b"7\n", 0o644).unwrap();
        assert_eq!(names(&d), ["b-1.pid"]);
        assert_eq!(ino(&b), before);
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "7\n");
        // None left: a new file.
        let c = d.join("c-2.pid");
        s.reuse(&tmp_of(&c));
        sys::write_swapped(&c, b"8\n", 0o644).unwrap();
        assert_eq!(names(&d), ["b-1.pid", "c-2.pid"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_tmp_there_keeps_the_spare() {
        let d = dir();
        let mut s = Spares::adopt(d.clone());
        let a = d.join("a-0.pid");
        std::fs::write(&a, "1\n").unwrap();
        s.retire(&a).unwrap();
        std::fs::write(tmp_of(&a), "2\n").unwrap();
        s.reuse(&tmp_of(&a));
        assert_eq!(names(&d), [".spare-0", "a-0.pid.tmp"]);
        assert_eq!(std::fs::read_to_string(tmp_of(&a)).unwrap(), "2\n");
        // Gone already: nothing kept, nothing said.
        assert!(s.retire(&a).is_err());
        assert_eq!(s.kept, [0]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn spares_left_are_taken_on_and_removed_at_exit() {
        let d = dir();
        for n in ["3", "10"] {
            std::fs::write(d.join(format!(".spare-{n}")), "").unwrap();
        }
        std::fs::write(d.join("x-0.pid"), "5\n").unwrap();
        let mut s = Spares::adopt(d.clone());
        s.kept.sort_unstable();
        assert_eq!((s.kept.clone(), s.next), (vec![3, 10], 11));
        // A number taken by a file not ours is skipped.
        std::fs::write(d.join(".spare-11"), "not ours").unwrap();
        s.kept.clear();
        s.retire(&d.join("x-0.pid")).unwrap();
        assert_eq!(s.kept, [12]);
        s.remove_all();
        assert_eq!(names(&d), [".spare-10", ".spare-11", ".spare-3"]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
