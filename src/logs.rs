//! App log files: what the daemon reads from an app's stdout or stderr pipe
//! is appended to its file, with the `log_date_format` timestamp at the
//! start of every line — of every line, not of every chunk, so a line split
//! across two reads gets exactly one stamp.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sys::{self, FsUser};
use crate::timefmt::{Format, local_tm};

/// Where one stream of one app goes.
pub struct LogFile {
    path: PathBuf,
    /// `None` when the path is `/dev/null`: nothing is written.
    file: Option<File>,
    /// Whose identity the file is opened with (`None`: the daemon's).
    user: Option<FsUser>,
    stamp: Option<Format>,
    at_line_start: bool,
    buf: Vec<u8>,
    /// The last rendered prefix and the time slot it is good for: local
    /// time is computed and rendered once per slot, not once per line.
    prefix: Vec<u8>,
    prefix_slot: Option<i64>,
    /// Bytes of the current, unfinished line already in the file.
    partial: u64,
    /// The rest of a line that could not be written whole is dropped.
    skipping: bool,
    /// The last write failed (the next success ends the run of failures).
    failing: bool,
    /// Lines dropped because they could not be written whole.
    dropped: u64,
}

/// Whether this path discards output (no pipe, no file).
pub fn is_null(path: &Path) -> bool {
    path == Path::new("/dev/null") || path == Path::new("NULL")
}

/// Open for appending, close-on-exec, 0640, creating the directory; as
/// `user` when given.
fn open_append(path: &Path, user: Option<&FsUser>) -> io::Result<File> {
    sys::as_user(user, || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    })
}

/// What a write that stopped after `written` bytes of `data` leaves: how
/// many bytes at the file's end belong to a line that is not whole (with
/// `partial`, the bytes of the line already there before `data`), how many
/// lines are lost, and whether the last lost line goes on in later chunks.
#[derive(Debug, PartialEq, Eq)]
struct Cut {
    bytes: u64,
    lines: u64,
    skip_rest: bool,
}

fn after_short_write(data: &[u8], written: usize, partial: u64) -> Cut {
    let done = data.get(..written).unwrap_or(data);
    let (bytes, lost_from) = match done.iter().rposition(|&b| b == b'\n') {
        Some(i) => ((written - i - 1) as u64, i + 1),
        None => (partial + written as u64, 0),
    };
    let lost = data.get(lost_from..).unwrap_or_default();
    Cut {
        bytes,
        lines: lost.split_inclusive(|&b| b == b'\n').count() as u64,
        skip_rest: !lost.is_empty() && !lost.ends_with(b"\n"),
    }
}

/// Write all of `data`; how much went, and why the rest did not.
fn write_counting(file: &mut File, data: &[u8]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    while let Some(rest) = data.get(done..).filter(|r| !r.is_empty()) {
        match file.write(rest) {
            Ok(0) => return (done, Some(ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// Take the last `bytes` off the file, unless someone else appended after
/// this descriptor's last write (then they are not ours to take).
fn cut_end(file: &mut File, bytes: u64) -> io::Result<()> {
    let end = file.metadata()?.len();
    let pos = file.stream_position()?;
    if bytes == 0 || pos != end || bytes > end {
        return Ok(());
    }
    file.set_len(end - bytes)?;
    file.seek(SeekFrom::End(0)).map(drop)
}

impl LogFile {
    /// Open `path` for appending, as `user` when given (see `sys::as_user`).
    pub fn open(
        path: &Path,
        date_format: Option<&str>,
        user: Option<FsUser>,
    ) -> io::Result<LogFile> {
        let file = if is_null(path) {
            None
        } else {
            Some(open_append(path, user.as_ref())?)
        };
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            user,
            stamp: date_format.map(Format::parse),
            at_line_start: true,
            buf: Vec::new(),
            prefix: Vec::new(),
            prefix_slot: None,
            partial: 0,
            skipping: false,
            failing: false,
            dropped: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines dropped because they could not be written whole (a full
    /// disk).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Open the path again (after logrotate renamed the file), keeping
    /// where the current line stands; false for /dev/null.
    pub fn reopen(&mut self) -> io::Result<bool> {
        if self.file.is_none() {
            return Ok(false);
        }
        self.file = Some(open_append(&self.path, self.user.as_ref())?);
        self.partial = 0;
        Ok(true)
    }

    /// Empty the file (`flush`); false for /dev/null.
    pub fn truncate(&mut self) -> io::Result<bool> {
        match self.file.as_mut() {
            Some(f) => {
                f.set_len(0)?;
                self.partial = 0;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Append a chunk read from the app at `now_ms`. Only whole lines
    /// reach the file: when a write falls short (a full disk), the line it
    /// cut is taken back off the file and dropped with the lines after it,
    /// counted in `dropped`; the next chunk tries again. The error is
    /// returned once, when writing starts to fail.
    pub fn write_chunk(&mut self, chunk: &[u8], now_ms: i64) -> io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        if let Some(stamp) = &self.stamp {
            let slot = now_ms.div_euclid(stamp.resolution_ms());
            if self.prefix_slot != Some(slot) {
                self.prefix.clear();
                stamp.render(&local_tm(now_ms), now_ms, &mut self.prefix);
                self.prefix.extend_from_slice(b": ");
                self.prefix_slot = Some(slot);
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let direct = self.stamp.is_none() && !self.skipping;
        if !direct {
            for line in chunk.split_inclusive(|&b| b == b'\n') {
                let ends = line.ends_with(b"\n");
                if self.skipping {
                    // The rest of a line already dropped.
                    self.skipping = !ends;
                } else {
                    if self.at_line_start && self.stamp.is_some() {
                        buf.extend_from_slice(&self.prefix);
                    }
                    buf.extend_from_slice(line);
                }
                self.at_line_start = ends;
            }
        }
        let data = match direct {
            true => chunk,
            false => &buf,
        };
        let r = self.write_whole_lines(data);
        if direct && let Some(&last) = chunk.last() {
            self.at_line_start = last == b'\n';
        }
        self.buf = buf;
        r
    }

    fn write_whole_lines(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        if data.is_empty() {
            return Ok(());
        }
        let (written, err) = write_counting(file, data);
        let Some(err) = err else {
            self.failing = false;
            self.partial = match data.iter().rposition(|&b| b == b'\n') {
                Some(i) => (data.len() - i - 1) as u64,
                None => self.partial + data.len() as u64,
            };
            return Ok(());
        };
        let cut = after_short_write(data, written, self.partial);
        let _ = cut_end(file, cut.bytes);
        self.partial = 0;
        self.dropped += cut.lines;
        self.skipping = cut.skip_rest;
        match std::mem::replace(&mut self.failing, true) {
            true => Ok(()),
            false => Err(err),
        }
    }
}

/// The last `n` lines of the file at `path` (fewer if it has fewer),
/// reading backwards from its end in blocks.
pub fn last_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    use std::io::Read;
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
        let mut lf = LogFile::open(&path, Some("[T]"), None).unwrap();
        for chunk in ["one\ntw", "o\n", "", "three\nfour"] {
            lf.write_chunk(chunk.as_bytes(), 0).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "T: one\nT: two\nT: three\nT: four");
        assert!(lf.truncate().unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_short_write_loses_whole_lines_from_a_table() {
        // (data, written, partial before) -> bytes to take back, lines
        // lost, whether the rest of the last lost line is to be skipped.
        type Case = (&'static str, usize, u64, (u64, u64, bool));
        let cases: &[Case] = &[
            ("a\nb\n", 0, 0, (0, 2, false)),
            ("a\nb\n", 1, 0, (1, 2, false)),
            ("a\nb\n", 2, 0, (0, 1, false)),
            ("a\nb\n", 3, 0, (1, 1, false)),
            ("a\nbc", 3, 0, (1, 1, true)),
            ("a\nbc", 2, 0, (0, 1, true)),
            // The line began in an earlier chunk: its start goes too.
            ("ef\ng\n", 1, 4, (5, 2, false)),
            ("ef\ng\n", 0, 4, (4, 2, false)),
            ("ef", 1, 4, (5, 1, true)),
            ("ef\ng\n", 4, 4, (1, 1, false)),
        ];
        for (i, (data, written, partial, (bytes, lines, skip))) in cases.iter().enumerate() {
            let got = after_short_write(data.as_bytes(), *written, *partial);
            let want = Cut {
                bytes: *bytes,
                lines: *lines,
                skip_rest: *skip,
            };
            assert_eq!(got, want, "case {i}: {data:?} {written} {partial}");
        }
    }

    #[test]
    fn a_full_disk_drops_whole_lines_and_writing_resumes() {
        let dir = std::env::temp_dir().join(format!("corral-full-{}", std::process::id()));
        let path = dir.join("a.log");
        let mut lf = LogFile::open(&path, Some("[T]"), None).unwrap();
        let real = lf.file.take();
        // /dev/full: every write fails with ENOSPC.
        lf.file = Some(OpenOptions::new().append(true).open("/dev/full").unwrap());
        let e = lf.write_chunk(b"one\ntw", 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(lf.dropped(), 2);
        // Failing again is not reported again, only counted; the rest of
        // the cut line is not written later either.
        lf.write_chunk(b"o\nthree\n", 0).unwrap();
        assert_eq!(lf.dropped(), 3);
        // Space is back.
        lf.file = real;
        for chunk in ["fo", "ur\n"] {
            lf.write_chunk(chunk.as_bytes(), 0).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "T: four\n");
        assert_eq!(lf.dropped(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
