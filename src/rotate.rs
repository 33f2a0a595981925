//! Log rotation, built in (`max_log_size`, `log_retain`) and the seed's
//! numbered `reloadLogs` (`reload_logs` with `rotate`): where a write is cut
//! so every file holds whole lines, and the renames. A file is rotated by
//! rename and reopen, never by copy-and-truncate (which loses what is
//! written between the two). Nothing here compresses: that would need a
//! deflate implementation (a crate) or a child process per file; neither
//! is worth it in the daemon's loop.

use std::io;
use std::path::{Path, PathBuf};

/// Built-in rotation of one log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a write takes the file past this many bytes (> 0).
    pub max: u64,
    /// Rotated files kept: `<path>.1` (newest) to `<path>.<retain>`.
    pub retain: u32,
}

/// The old files kept when neither the app nor the daemon says otherwise.
pub const DEFAULT_RETAIN: u32 = 5;

/// How much of `data` to write to a file of `size` bytes (whose last byte
/// ends a line when `at_line_start`) before rotating, and whether to
/// rotate after those bytes. Cuts only after a newline, so every file
/// holds whole lines; a file passes `max` only by a line longer than
/// `max`, or to finish a line it already holds. Each call makes progress:
/// it writes bytes, or rotates a non-empty file.
pub fn plan(size: u64, at_line_start: bool, max: u64, data: &[u8]) -> (usize, bool) {
    let len = data.len();
    if size.saturating_add(len as u64) <= max {
        return (len, false);
    }
    if size > 0 && !at_line_start {
        // Finish the line the file holds, then rotate.
        return match memchr(b'\n', data) {
            Some(i) => (i + 1, true),
            None => (len, false),
        };
    }
    let room = usize::try_from(max.saturating_sub(size)).unwrap_or(usize::MAX);
    let fits = data.get(..room.min(len)).and_then(|d| memrchr(b'\n', d));
    match (fits, size) {
        (Some(i), _) => (i + 1, true),
        (None, 0) => {
            // A first line longer than the limit goes in whole.
            let n = memchr(b'\n', data).map_or(len, |i| i + 1);
            (n, false)
        }
        (None, _) => (0, true),
    }
}

/// `<path>.<n>`.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Rename `path` to `<path>.1`, after shifting `.1` to `.2` and so on;
/// what would pass `.<retain>` is deleted (with `retain` 0, the file
/// itself). The caller reopens `path`.
pub fn shift(path: &Path, retain: u32) -> io::Result<()> {
    if retain == 0 {
        return ignore_missing(std::fs::remove_file(path));
    }
    // Only the files there are touched (a large `log_retain` costs
    // nothing): the highest generation first.
    let mut top = 0;
    while numbered(path, top + 1).exists() {
        top += 1;
    }
    // The oldest, and any beyond it left by a larger `log_retain`.
    for n in (retain..=top).rev() {
        ignore_missing(std::fs::remove_file(numbered(path, n)))?;
    }
    for n in (1..=top.min(retain - 1)).rev() {
        std::fs::rename(numbered(path, n), numbered(path, n + 1))?;
    }
    std::fs::rename(path, numbered(path, 1))
}

/// The seed's numbering: `dir/app-out.log` → `dir/app-out-<N>.log` with
/// `N` one more than the highest number already there (1 for the first),
/// so the newest has the highest number and nothing is overwritten.
pub fn next_numbered(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let prefix = format!("{stem}-");
    let highest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(&prefix)?.strip_suffix(&ext)?;
            n.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0);
    let mut n = highest + 1;
    loop {
        let p = path.with_file_name(format!("{stem}-{n}{ext}"));
        if !p.exists() {
            return p;
        }
        n += 1;
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The first `b` in `s` (libc's memchr: vectorised, unlike a byte loop in
/// a binary built for size).
#[inline]
pub fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    // SAFETY: the pointer and length describe the live slice `s`; memchr
    // reads only within them.
    let p = unsafe { libc::memchr(s.as_ptr().cast(), i32::from(b), s.len()) };
    (!p.is_null()).then(|| p as usize - s.as_ptr() as usize)
}

/// The last `b` in `s`.
pub fn memrchr(b: u8, s: &[u8]) -> Option<usize> {
    // SAFETY: as in `memchr`; glibc and musl both have memrchr.
    let p = unsafe { libc::memrchr(s.as_ptr().cast(), i32::from(b), s.len()) };
    (!p.is_null()).then(|| p as usize - s.as_ptr() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// size, at_line_start, max, data, what `plan` says.
    type Case = (u64, bool, u64, &'static str, (usize, bool));

    #[test]
    fn plans_from_a_table() {
        let cases: &[Case] = &[
            (0, true, 10, "abc\n", (4, false)),
            (6, true, 10, "abc\n", (4, false)),
            // Does not fit: the whole lines that do, then rotate.
            (4, true, 10, "abc\ndef\n", (4, true)),
            (8, true, 10, "abc\n", (0, true)),
            // Mid-line: finish the line first.
            (9, false, 10, "ab\ncd\n", (3, true)),
            (9, false, 10, "abcdefghijk", (11, false)),
            // A line longer than the limit in an empty file goes in whole.
            (0, true, 4, "abcdefgh\nij\n", (9, false)),
            (0, true, 4, "abcdefgh", (8, false)),
            (0, true, 4, "ab\ncdefgh\n", (3, true)),
            (0, true, 0, "", (0, false)),
        ];
        for (i, &(size, start, max, data, want)) in cases.iter().enumerate() {
            assert_eq!(plan(size, start, max, data.as_bytes()), want, "case {i}");
        }
    }

    /// Every cut ends a line and files stay under the limit: a simulation
    /// over many line lengths.
    #[test]
    fn plans_keep_lines_whole() {
        let text: String = (0..500)
            .map(|i| format!("{}\n", "x".repeat(i % 37)))
            .collect();
        for max in [1u64, 7, 40, 100, 1000] {
            let mut files = vec![String::new()];
            let mut rest = text.as_bytes();
            let mut steps = 0;
            while !rest.is_empty() {
                let cur = files.last().unwrap();
                let start = cur.is_empty() || cur.ends_with('\n');
                let (n, rotate) = plan(cur.len() as u64, start, max, rest);
                files
                    .last_mut()
                    .unwrap()
                    .push_str(std::str::from_utf8(&rest[..n]).unwrap());
                rest = &rest[n..];
                if rotate {
                    files.push(String::new());
                }
                steps += 1;
                assert!(steps < 10_000, "no progress at max {max}");
            }
            assert_eq!(files.concat(), text);
            for f in &files {
                assert!(f.is_empty() || f.ends_with('\n'));
                let longest = f.lines().map(|l| l.len() + 1).max().unwrap_or(0) as u64;
                assert!(f.len() as u64 <= max.max(longest), "max {max}: {f:?}");
            }
        }
    }

    #[test]
    fn shifts_and_numbers() {
        let dir = std::env::temp_dir().join(format!("corral-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a-out.log");
        for i in 0..5 {
            std::fs::write(&p, format!("{i}")).unwrap();
            shift(&p, 3).unwrap();
        }
        let read = |n| std::fs::read_to_string(numbered(&p, n)).ok();
        assert_eq!(
            [read(1), read(2), read(3), read(4)],
            [Some("4".into()), Some("3".into()), Some("2".into()), None]
        );
        assert!(!p.exists());
        // A smaller retain drops the extra old ones.
        std::fs::write(&p, "5").unwrap();
        shift(&p, 1).unwrap();
        assert_eq!([read(1), read(2), read(3)], [Some("5".into()), None, None]);
        std::fs::write(&p, "x").unwrap();
        shift(&p, 0).unwrap();
        assert!(!p.exists());

        assert_eq!(next_numbered(&p), dir.join("a-out-1.log"));
        std::fs::write(dir.join("a-out-1.log"), "").unwrap();
        std::fs::write(dir.join("a-out-7.log"), "").unwrap();
        std::fs::write(dir.join("a-out-x.log"), "").unwrap();
        assert_eq!(next_numbered(&p), dir.join("a-out-8.log"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_bytes() {
        assert_eq!(memchr(b'\n', b"ab\ncd\n"), Some(2));
        assert_eq!(memrchr(b'\n', b"ab\ncd\n"), Some(5));
        assert_eq!(memchr(b'\n', b""), None);
        assert_eq!(memrchr(b'\n', b"abc"), None);
    }
}
