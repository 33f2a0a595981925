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
    /// `None` when the path is `/dev/null`: nothing is written.
    file: Option<File>,
    stamp: Option<Format>,
    at_line_start: bool,
    buf: Vec<u8>,
}

/// Whether this path discards output (no pipe, no file).
pub fn is_null(path: &Path) -> bool {
    path == Path::new("/dev/null") || path == Path::new("NULL")
}

/// Open for appending, close-on-exec, 0640, creating the directory.
fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl LogFile {
    pub fn open(path: &Path, date_format: Option<&str>) -> io::Result<LogFile> {
        let file = if is_null(path) {
            None
        } else {
            Some(open_append(path)?)
        };
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            stamp: date_format.map(Format::parse),
            at_line_start: true,
            buf: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append a chunk read from the app at `now_ms`.
    pub fn write_chunk(&mut self, chunk: &[u8], now_ms: i64) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let Some(stamp) = &self.stamp else {
            return file.write_all(chunk);
        };
        self.buf.clear();
        let tm = local_tm(now_ms);
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            if self.at_line_start {
                stamp.render(&tm, now_ms, &mut self.buf);
                self.buf.extend_from_slice(b": ");
            }
            self.buf.extend_from_slice(line);
            self.at_line_start = line.ends_with(b"\n");
        }
        file.write_all(&self.buf)
    }
}
