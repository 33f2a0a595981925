//! App log files: what the daemon reads from an app's stdout or stderr pipe
//! is appended to its file, with the `log_date_format` timestamp at the
//! start of every line — of every line, not of every chunk, so a line split
//! across two reads gets exactly one stamp.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::timefmt::{Format, local_tm};

/// Where one stream of one app goes.
pub struct LogFile {
    path: PathBuf,
    /// `None` when the path is `/dev/null` (nothing is written) or the
    /// file is closed (`close`: opened again when written to).
    file: Option<File>,
    /// The path is `/dev/null`.
    null: bool,
    stamp: Option<Format>,
    at_line_start: bool,
    buf: Vec<u8>,
    /// The last rendered prefix and the time slot it is good for: local
    /// time is computed and rendered once per slot, not once per line.
    prefix: Vec<u8>,
    prefix_slot: Option<i64>,
}

/// Whether this path discards output (no pipe, no file).
pub fn is_null(path: &Path) -> bool {
    path == Path::new("/dev/null") || path == Path::new("NULL")
}

/// Open for appending, close-on-exec, 0640, creating the directory if it
/// is missing (tried after the open fails: a crash loop opens its logs at
/// every spawn).
fn open_append(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
}

impl LogFile {
    pub fn open(path: &Path, date_format: Option<&str>) -> io::Result<LogFile> {
        let null = is_null(path);
        let file = if null { None } else { Some(open_append(path)?) };
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            null,
            stamp: date_format.map(Format::parse),
            at_line_start: true,
            buf: Vec::new(),
            prefix: Vec::new(),
            prefix_slot: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close the file (its app stopped): a stopped app holds no fd. The
    /// next write, or `ensure_open`, opens it again.
    pub fn close(&mut self) {
        self.file = None;
    }

    /// Open the file if it is closed.
    pub fn ensure_open(&mut self) -> io::Result<()> {
        if !self.null && self.file.is_none() {
            self.file = Some(open_append(&self.path)?);
        }
        Ok(())
    }

    /// Open the path again (after logrotate renamed the file), keeping
    /// where the current line stands; false for /dev/null or a closed
    /// file (it is opened afresh when next needed).
    pub fn reopen(&mut self) -> io::Result<bool> {
        if self.file.is_none() {
            return Ok(false);
        }
        self.file = Some(open_append(&self.path)?);
        Ok(true)
    }

    /// Empty the file (`flush`); false for /dev/null.
    pub fn truncate(&mut self) -> io::Result<bool> {
        match self.file.as_mut() {
            Some(f) => f.set_len(0).map(|()| true),
            None if self.null => Ok(false),
            None => open_append(&self.path)?.set_len(0).map(|()| true),
        }
    }

    /// Append a chunk read from the app at `now_ms`.
    pub fn write_chunk(&mut self, chunk: &[u8], now_ms: i64) -> io::Result<()> {
        self.ensure_open()?;
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let Some(stamp) = &self.stamp else {
            return file.write_all(chunk);
        };
        let slot = now_ms.div_euclid(stamp.resolution_ms());
        if self.prefix_slot != Some(slot) {
            self.prefix.clear();
            stamp.render(&local_tm(now_ms), now_ms, &mut self.prefix);
            self.prefix.extend_from_slice(b": ");
            self.prefix_slot = Some(slot);
        }
        self.buf.clear();
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            if self.at_line_start {
                self.buf.extend_from_slice(&self.prefix);
            }
            self.buf.extend_from_slice(line);
            self.at_line_start = line.ends_with(b"\n");
        }
        file.write_all(&self.buf)
    }
}

/// The last `n` lines of the file at `path` (fewer if it has fewer),
/// reading backwards from its end in blocks.
pub fn last_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 16 * 1024;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut pos = len;
    let mut tail: Vec<u8> = Vec::new();
    // n lines need n + 1 newlines before them, the last one may be missing.
    while pos > 0 && tail.iter().filter(|&&b| b == b'\n').count() <= n {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&tail);
        tail = block;
        pos = start;
    }
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().collect();
    // The first line is partial unless the read reached the file's start.
    let skip = usize::from(pos > 0).min(lines.len());
    let lines = lines.get(skip..).unwrap_or_default();
    Ok(lines
        .get(lines.len().saturating_sub(n)..)
        .unwrap_or_default()
        .iter()
        .map(|l| l.to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_from_a_table() {
        let dir = std::env::temp_dir().join(format!("corral-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let cases: &[(&str, usize, &[&str])] = &[
            ("", 3, &[]),
            ("a\nb\nc\n", 2, &["b", "c"]),
            ("a\nb\nc", 2, &["b", "c"]),
            ("a\nb\n", 5, &["a", "b"]),
            ("a\n", 0, &[]),
            (&long, 2, &["line 4998", "line 4999"]),
        ];
        for (i, (text, n, want)) in cases.iter().enumerate() {
            let path = dir.join(format!("{i}.log"));
            std::fs::write(&path, text).unwrap();
            assert_eq!(last_lines(&path, *n).unwrap(), *want, "case {i}");
        }
        let many = last_lines(&dir.join("5.log"), 3000).unwrap();
        assert_eq!(many.len(), 3000);
        assert_eq!(many[0], "line 2000");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stamps_every_line_once_even_across_chunks() {
        let dir = std::env::temp_dir().join(format!("corral-stamp-{}", std::process::id()));
        let path = dir.join("a.log");
        let mut lf = LogFile::open(&path, Some("[T]")).unwrap();
        for chunk in ["one\ntw", "o\n", "", "three\nfour"] {
            lf.write_chunk(chunk.as_bytes(), 0).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "T: one\nT: two\nT: three\nT: four");
        assert!(lf.truncate().unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        // Closed, it is opened again to be written or emptied.
        lf.close();
        assert!(!lf.reopen().unwrap());
        lf.write_chunk(b"five\nsix\n", 0).unwrap();
        // "four" had no newline: "five" goes on its line.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "five\nT: six\n");
        lf.close();
        assert!(lf.truncate().unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
