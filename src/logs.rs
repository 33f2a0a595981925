//! App log files: what the daemon reads from an app's stdout or stderr pipe
//! is appended to its file, with the `log_date_format` timestamp at the
//! start of every line — of every line, not of every chunk, so a line split
//! across two reads gets exactly one stamp. Beside that (the section at the
//! end): rotation by size (`rotate.rs` cuts and renames), PM2's JSON lines
//! (`log_type`), and the combined file (`log_file`) each stream also feeds.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::rotate::{self, Rotation, memchr, memrchr};
use crate::sys::{self, FsUser};
use crate::timefmt::{Format, Tm, local_tm, utc_tm};
use serde_json::Value;

/// Where one stream of one app goes.
pub struct LogFile {
    /// Empty for `/dev/null` itself (see `path`): most apps' files are, and
    /// a thousand copies of its name cost a heap block each.
    path: PathBuf,
    /// `None` when the path is `/dev/null` (nothing is written) or the
    /// file is closed (`close`: opened again when written to).
    file: Option<File>,
    /// The path is `/dev/null`.
    null: bool,
    /// Whose identity the file is opened with (`None`: the daemon's);
    /// boxed: most files are the daemon's.
    user: Option<Box<FsUser>>,
    /// `log_date_format`, boxed: most files have none.
    stamp: Option<Box<Stamp>>,
    at_line_start: bool,
    buf: Vec<u8>,
    /// Bytes of the current, unfinished line already in the file.
    partial: u64,
    /// The rest of a line that could not be written whole is dropped.
    skipping: bool,
    /// The last write failed (the next success ends the run of failures).
    failing: bool,
    /// Lines dropped because they could not be written whole.
    dropped: u64,
    /// Device and inode of the open file, to see it renamed away.
    identity: Option<(u64, u64)>,
    /// Whether what was written last ended a line.
    ends_line: bool,
    /// Rotations done, for a caller that must follow them.
    rotations: u64,
    /// Rotation, JSON lines, the combined file and the local time of
    /// stamps (see "Rotation, JSON lines, the combined file" below): boxed,
    /// and only for a file that has one of them (an app's two files cost
    /// 400 bytes less without).
    extra: Option<Box<Extra>>,
}

/// A file's `log_date_format`, with the last rendered prefix and the time
/// slot it is good for: local time is computed and rendered once per slot,
/// not once per line.
struct Stamp {
    format: Format,
    prefix: Vec<u8>,
    slot: Option<i64>,
}

const DEV_NULL: &str = "/dev/null";

/// Whether this path discards output (no pipe, no file).
pub fn is_null(path: &Path) -> bool {
    path == Path::new("/dev/null") || path == Path::new("NULL")
}

/// Open for appending, close-on-exec, 0640, creating the directory if it
/// is missing (made after the open fails: a crash loop opens its logs at
/// every spawn); as `user` when given.
fn open_append(path: &Path, user: Option<&FsUser>) -> io::Result<File> {
    sys::as_user(user, || {
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
        let file = match is_null(path) {
            true => None,
            false => Some(open_append(path, user.as_ref())?),
        };
        Ok(LogFile::with_file(path, file, date_format, user))
    }

    /// As `open`, the file not opened yet (a hand-over: it was open in
    /// the old image): the next write, or `ensure_open`, opens it.
    pub fn unopened(path: &Path, date_format: Option<&str>, user: Option<FsUser>) -> LogFile {
        LogFile::with_file(path, None, date_format, user)
    }

    fn with_file(
        path: &Path,
        file: Option<File>,
        date_format: Option<&str>,
        user: Option<FsUser>,
    ) -> LogFile {
        let null = is_null(path);
        LogFile {
            path: match null && path == Path::new(DEV_NULL) {
                true => PathBuf::new(),
                false => path.to_path_buf(),
            },
            file,
            null,
            user: user.map(Box::new),
            stamp: date_format.map(|f| {
                Box::new(Stamp {
                    format: Format::parse(f),
                    prefix: Vec::new(),
                    slot: None,
                })
            }),
            at_line_start: true,
            buf: Vec::new(),
            partial: 0,
            skipping: false,
            failing: false,
            dropped: 0,
            identity: None,
            ends_line: false,
            rotations: 0,
            extra: None,
        }
        .with_identity()
    }

    #[inline]
    pub fn path(&self) -> &Path {
        match self.null && self.path.as_os_str().is_empty() {
            true => Path::new(DEV_NULL),
            false => &self.path,
        }
    }

    /// Lines dropped because they could not be written whole (a full
    /// disk).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Open the path again (after logrotate renamed the file), keeping
    /// where the current line stands; false for /dev/null or a closed
    /// file (it is opened afresh when next needed).
    pub fn reopen(&mut self) -> io::Result<bool> {
        if self.file.is_none() {
            return Ok(false);
        }
        self.file = Some(open_append(self.path(), self.user.as_deref())?);
        self.partial = 0;
        self.identity = self.file.as_ref().and_then(identity_of);
        if let Some(also) = self.also_mut() {
            also.reopen()?;
        }
        Ok(true)
    }

    /// Close the file and the combined one (the app stopped): a stopped
    /// app holds no fd. The next write, or `ensure_open`, opens them again.
    pub fn close(&mut self) {
        self.file = None;
        if let Some(also) = self.also_mut() {
            also.close();
        }
    }

    /// Open the file and the combined one if they are closed.
    pub fn ensure_open(&mut self) -> io::Result<()> {
        if let Some(also) = self.also_mut() {
            also.ensure_open()?;
        }
        if !self.null && self.file.is_none() {
            self.file = Some(open_append(self.path(), self.user.as_deref())?);
            self.identity = self.file.as_ref().and_then(identity_of);
        }
        Ok(())
    }

    /// Empty the file, and the combined file (`flush`); false for
    /// /dev/null.
    pub fn truncate(&mut self) -> io::Result<bool> {
        if let Some(also) = self.also_mut() {
            also.truncate()?;
        }
        match self.file.as_mut() {
            Some(f) => {
                f.set_len(0)?;
                self.partial = 0;
                Ok(true)
            }
            None if self.null => Ok(false),
            None => {
                open_append(self.path(), self.user.as_deref())?.set_len(0)?;
                self.partial = 0;
                Ok(true)
            }
        }
    }

    /// Append a chunk read from the app at `now_ms` (to the combined file
    /// too). Only whole lines reach the file: when a write falls short (a
    /// full disk), the line it cut is taken back off the file and dropped
    /// with the lines after it, counted in `dropped`; the next chunk tries
    /// again. The error is returned once, when writing starts to fail.
    pub fn write_chunk(&mut self, chunk: &[u8], now_ms: i64) -> io::Result<()> {
        let also = match self.also_mut() {
            Some(a) => a.write_chunk(chunk, now_ms),
            None => Ok(()),
        };
        self.write_own(chunk, now_ms).and(also)
    }

    fn write_own(&mut self, chunk: &[u8], now_ms: i64) -> io::Result<()> {
        if !self.null && self.file.is_none() {
            self.file = Some(open_append(self.path(), self.user.as_deref())?);
            self.identity = self.file.as_ref().and_then(identity_of);
        }
        if self.file.is_none() {
            return Ok(());
        }
        if self
            .extra
            .as_ref()
            .is_some_and(|x| x.json.is_some() || x.whole_lines)
        {
            return self.write_held_lines(chunk, now_ms);
        }
        if self.stamp.is_none() && !self.skipping {
            if let Some(&last) = chunk.last() {
                self.at_line_start = last == b'\n';
            }
            return self.emit(chunk);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.stamp_lines(chunk, now_ms, &mut buf);
        let r = self.emit(&buf);
        self.buf = buf;
        r
    }

    /// `chunk` with the timestamp (if any) at the start of each line, to
    /// `out`, without the rest of a line dropped before (`skipping`).
    fn stamp_lines(&mut self, chunk: &[u8], now_ms: i64, out: &mut Vec<u8>) {
        if let Some(stamp) = &mut self.stamp {
            let slot = now_ms.div_euclid(stamp.format.resolution_ms());
            if stamp.slot != Some(slot) {
                // Local time changes only at a second: kept per second,
                // the milliseconds put in.
                let second = now_ms.div_euclid(1000);
                let extra = self.extra.get_or_insert_with(Box::default);
                let tm = match extra.tm {
                    Some((s, tm)) if s == second => tm,
                    _ => {
                        let tm = local_tm(now_ms);
                        extra.tm = Some((second, tm));
                        tm
                    }
                };
                let tm = Tm {
                    millis: now_ms.rem_euclid(1000) as u32,
                    ..tm
                };
                stamp.prefix.clear();
                stamp.format.render(&tm, now_ms, &mut stamp.prefix);
                stamp.prefix.extend_from_slice(b": ");
                stamp.slot = Some(slot);
            }
        }
        let mut rest = chunk;
        if self.skipping {
            // The rest of a line already dropped.
            match memchr(b'\n', rest) {
                Some(i) => {
                    rest = rest.get(i + 1..).unwrap_or_default();
                    self.skipping = false;
                    self.at_line_start = true;
                }
                None => return,
            }
        }
        let Some(&last) = rest.last() else {
            return;
        };
        let prefix: &[u8] = self.stamp.as_ref().map_or(&[], |s| &s.prefix);
        if prefix.is_empty() {
            out.extend_from_slice(rest);
            self.at_line_start = last == b'\n';
            return;
        }
        // One memchr per line: a binary built for size does not vectorise
        // a byte loop. Room for lines of 84 bytes or more with a 21-byte
        // stamp; shorter lines make it grow once.
        out.reserve(rest.len() + rest.len() / 4 + prefix.len());
        let mut at_start = self.at_line_start;
        while !rest.is_empty() {
            let end = memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            let (line, tail) = rest.split_at(end);
            let p = if at_start { prefix } else { &[][..] };
            let need = p.len() + line.len();
            // One check of room per line, then two plain copies (two
            // `extend_from_slice` check and grow each: a quarter of the
            // time per line in this build).
            out.reserve(need);
            // SAFETY: `reserve` made room for `need` bytes after `len`;
            // both sources are live slices apart from `out`; the bytes are
            // written before `set_len` counts them.
            unsafe {
                let dst = out.as_mut_ptr().add(out.len());
                std::ptr::copy_nonoverlapping(p.as_ptr(), dst, p.len());
                std::ptr::copy_nonoverlapping(line.as_ptr(), dst.add(p.len()), line.len());
                out.set_len(out.len() + need);
            }
            // Only the last piece can end without a newline.
            at_start = true;
            rest = tail;
        }
        self.at_line_start = last == b'\n';
    }

    /// Write `data` (whole lines, but perhaps the end of one already begun);
    /// on a short write, take the cut line back off (see `write_chunk`).
    fn write_cut_back(&mut self, data: &[u8]) -> io::Result<()> {
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

// ---- Rotation, JSON lines, the combined file (issue 13) ----------------
//
// What a `LogFile` does beyond appending: rotate when a write would take
// the file past `max_log_size` (cut after a newline, see `rotate::plan`),
// follow a rename by someone else (another writer of the same path, or
// logrotate) before deciding, write each line as PM2's JSON object
// (`log_type: "json"`), keep partial lines back (the combined file, where
// two streams meet), and feed a second file (`also`: the combined one).

/// A partial line kept back longer than this is written as it is.
const MAX_PENDING: usize = 64 * 1024;

/// What a JSON line says of its app: everything after the timestamp.
struct JsonTag {
    /// `,"type":"out","process_id":0,"app_name":"api"}` and a newline.
    tail: Vec<u8>,
    /// The timestamp of the current slot, as a JSON string, and its slot.
    ts: Vec<u8>,
    ts_slot: Option<i64>,
}

#[derive(Default)]
struct Extra {
    rotation: Option<Rotation>,
    json: Option<JsonTag>,
    /// Write only whole lines; keep a partial one back until its end.
    whole_lines: bool,
    pending: Vec<u8>,
    /// The combined file this stream also goes to.
    also: Option<Box<LogFile>>,
    /// Local time of the last stamped second.
    tm: Option<(i64, Tm)>,
}

fn identity_of(f: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    f.metadata().ok().map(|m| (m.dev(), m.ino()))
}

impl LogFile {
    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The combined file this stream also goes to.
    fn also_mut(&mut self) -> Option<&mut LogFile> {
        self.extra.as_mut().and_then(|x| x.also.as_deref_mut())
    }

    fn with_identity(mut self) -> LogFile {
        self.identity = self.file.as_ref().and_then(identity_of);
        self.ends_line = true;
        self.partial = 0;
        self
    }

    /// Rotate by size (`None`: never).
    pub fn with_rotation(mut self, rotation: Option<Rotation>) -> LogFile {
        match rotation.filter(|r| r.max > 0) {
            Some(r) => self.extra_mut().rotation = Some(r),
            None => {
                if let Some(x) = self.extra.as_mut() {
                    x.rotation = None;
                }
            }
        }
        self
    }

    /// Write each line as PM2's `{"message","timestamp","type",
    /// "process_id","app_name"}`; the timestamp in `log_date_format` if
    /// the file has one, else ISO 8601 UTC, as PM2.
    pub fn with_json(mut self, app_name: &str, pm_id: u32, err: bool) -> LogFile {
        let kind = if err { "err" } else { "out" };
        let tail = format!(
            ",\"type\":\"{kind}\",\"process_id\":{pm_id},\"app_name\":{}}}\n",
            Value::String(app_name.to_string())
        );
        let extra = self.extra_mut();
        extra.json = Some(JsonTag {
            tail: tail.into_bytes(),
            ts: Vec::new(),
            ts_slot: None,
        });
        extra.whole_lines = true;
        self
    }

    /// Write whole lines only (a file that several streams share).
    pub fn whole_lines(mut self) -> LogFile {
        self.extra_mut().whole_lines = true;
        self
    }

    /// Send what this stream writes to `also` too (the combined file).
    pub fn with_also(mut self, also: Option<LogFile>) -> LogFile {
        match also {
            Some(a) => self.extra_mut().also = Some(Box::new(a)),
            None => {
                if let Some(x) = self.extra.as_mut() {
                    x.also = None;
                }
            }
        }
        self
    }

    /// This file's path and the combined file's, without /dev/null.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        if self.file.is_some() {
            v.push(self.path().to_path_buf());
        }
        if let Some(a) = self.extra.as_ref().and_then(|x| x.also.as_ref()) {
            v.extend(a.paths());
        }
        v
    }

    /// How many times this file was rotated by size.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// The app's pipe closed: write the partial line kept back.
    pub fn finish(&mut self, now_ms: i64) -> io::Result<()> {
        let also = match self.also_mut() {
            Some(a) => a.finish(now_ms),
            None => Ok(()),
        };
        if self.extra.as_ref().is_none_or(|x| x.pending.is_empty()) || self.file.is_none() {
            return also;
        }
        let pending = std::mem::take(&mut self.extra_mut().pending);
        self.format_and_emit(&pending, now_ms).and(also)
    }

    /// The seed's `reloadLogs`: rename the file to the next free
    /// `<stem>-<N>.<ext>` and open a fresh one (the combined file too).
    /// A path in `renamed` was renamed already (by another stream writing
    /// it): only reopened.
    pub fn rotate_numbered(&mut self, renamed: &mut BTreeSet<PathBuf>) -> io::Result<()> {
        if let Some(also) = self.also_mut() {
            also.rotate_numbered(renamed)?;
        }
        if self.null {
            return Ok(());
        }
        if renamed.insert(self.path().to_path_buf()) {
            let to = rotate::next_numbered(self.path());
            match sys::as_user(self.user.as_deref(), || std::fs::rename(self.path(), &to)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if self.file.is_none() {
            // Closed (the app is not running): a fresh file when it runs.
            self.ends_line = true;
            self.partial = 0;
            return Ok(());
        }
        self.file = Some(open_append(self.path(), self.user.as_deref())?);
        self.identity = self.file.as_ref().and_then(identity_of);
        self.ends_line = true;
        self.partial = 0;
        Ok(())
    }

    /// Whole lines of `chunk` (after what was kept back) written; a
    /// partial one kept back.
    fn write_held_lines(&mut self, chunk: &[u8], now_ms: i64) -> io::Result<()> {
        let Some(i) = memrchr(b'\n', chunk) else {
            self.extra_mut().pending.extend_from_slice(chunk);
            if self.extra_mut().pending.len() >= MAX_PENDING {
                let pending = std::mem::take(&mut self.extra_mut().pending);
                return self.format_and_emit(&pending, now_ms);
            }
            return Ok(());
        };
        let (lines, tail) = chunk.split_at(i + 1);
        let r = if self.extra_mut().pending.is_empty() {
            self.format_and_emit(lines, now_ms)
        } else {
            let mut p = std::mem::take(&mut self.extra_mut().pending);
            p.extend_from_slice(lines);
            let r = self.format_and_emit(&p, now_ms);
            // An idle app keeps no big buffer.
            if p.capacity() <= MAX_PENDING / 8 {
                p.clear();
                self.extra_mut().pending = p;
            }
            r
        };
        self.extra_mut().pending.extend_from_slice(tail);
        r
    }

    fn format_and_emit(&mut self, data: &[u8], now_ms: i64) -> io::Result<()> {
        // Held lines start at a line's start: nothing is left of a line
        // dropped before.
        self.skipping = false;
        self.at_line_start = true;
        let json = self.extra.as_ref().is_some_and(|x| x.json.is_some());
        if !json && self.stamp.is_none() {
            return self.emit(data);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match json {
            true => self.json_lines(data, now_ms, &mut buf),
            false => self.stamp_lines(data, now_ms, &mut buf),
        }
        let r = self.emit(&buf);
        self.buf = buf;
        r
    }

    /// Each line of `data` as one JSON object (a last line without its
    /// newline too), to `out`.
    fn json_lines(&mut self, data: &[u8], now_ms: i64, out: &mut Vec<u8>) {
        let Some(tag) = self.extra.as_mut().and_then(|x| x.json.as_mut()) else {
            return;
        };
        let resolution = self.stamp.as_ref().map_or(1, |s| s.format.resolution_ms());
        let slot = now_ms.div_euclid(resolution);
        if tag.ts_slot != Some(slot) {
            let mut text = Vec::new();
            match &self.stamp {
                Some(s) => s.format.render(&local_tm(now_ms), now_ms, &mut text),
                None => iso_format().render(&utc_tm(now_ms), now_ms, &mut text),
            }
            tag.ts.clear();
            tag.ts.extend_from_slice(b",\"timestamp\":");
            let text = String::from_utf8_lossy(&text).into_owned();
            tag.ts
                .extend_from_slice(Value::String(text).to_string().as_bytes());
            tag.ts_slot = Some(slot);
        }
        let mut rest = data;
        while !rest.is_empty() {
            let (line, tail) = match memchr(b'\n', rest) {
                Some(i) => rest.split_at(i + 1),
                None => (rest, &[][..]),
            };
            out.extend_from_slice(b"{\"message\":");
            let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(line));
            out.extend_from_slice(&tag.ts);
            out.extend_from_slice(&tag.tail);
            rest = tail;
        }
    }

    /// Write `data` to the file, rotating on the way when it has a limit.
    fn emit(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let Some(rot) = self.extra.as_ref().and_then(|x| x.rotation) else {
            self.ends_line = data.last() == Some(&b'\n');
            return self.write_cut_back(data);
        };
        self.follow_rename()?;
        let mut size = match self.file.as_ref() {
            Some(f) => f.metadata()?.len(),
            None => return Ok(()),
        };
        let mut rest = data;
        let mut failed = None;
        while !rest.is_empty() {
            let at_start = size == 0 || self.ends_line;
            let (n, rotate) = match failed {
                // Could not rotate: the rest goes on where it is.
                Some(_) => (rest.len(), false),
                None => rotate::plan(size, at_start, rot.max, rest),
            };
            let (now, tail) = rest.split_at(n.min(rest.len()));
            if !now.is_empty() {
                self.write_cut_back(now)?;
                size += now.len() as u64;
                self.ends_line = now.last() == Some(&b'\n');
            }
            if rotate {
                match self.rotate_now(rot.retain) {
                    Ok(()) => size = 0,
                    Err(e) => failed = Some(e),
                }
            }
            rest = tail;
        }
        match failed {
            Some(e) => Err(io::Error::new(e.kind(), format!("cannot rotate: {e}"))),
            None => Ok(()),
        }
    }

    /// Rename the file to `.1` (shifting the older ones) and open a fresh
    /// one.
    fn rotate_now(&mut self, retain: u32) -> io::Result<()> {
        // As the file's user: a directory of the app's user is never
        // renamed in or deleted from with the daemon's rights.
        sys::as_user(self.user.as_deref(), || rotate::shift(self.path(), retain))?;
        self.file = Some(open_append(self.path(), self.user.as_deref())?);
        self.identity = self.file.as_ref().and_then(identity_of);
        self.ends_line = true;
        self.partial = 0;
        self.rotations += 1;
        Ok(())
    }

    /// Another writer of the path (or logrotate) renamed the file away:
    /// open the path again.
    fn follow_rename(&mut self) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::metadata(self.path())
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if now.is_none() || now != self.identity {
            self.file = Some(open_append(self.path(), self.user.as_deref())?);
            self.identity = self.file.as_ref().and_then(identity_of);
            self.ends_line = true;
            self.partial = 0;
        }
        Ok(())
    }
}

/// `Date.prototype.toISOString`: what PM2 writes without a format.
fn iso_format() -> &'static Format {
    static ISO: std::sync::OnceLock<Format> = std::sync::OnceLock::new();
    ISO.get_or_init(|| Format::parse("YYYY-MM-DDTHH:mm:ss.SSS[Z]"))
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

    /// Stamping from a table: (stamped, at a line's start, skipping the
    /// rest of a dropped line, chunk) -> (output, at a line's start,
    /// skipping) after it.
    #[test]
    fn stamps_lines_from_a_table() {
        type Case = (bool, bool, bool, &'static str, (&'static str, bool, bool));
        let cases: &[Case] = &[
            (true, true, false, "a\nb\n", ("T: a\nT: b\n", true, false)),
            (true, true, false, "a\nb", ("T: a\nT: b", false, false)),
            (true, false, false, "b\nc\n", ("b\nT: c\n", true, false)),
            (true, false, false, "b", ("b", false, false)),
            (true, true, false, "\n\n", ("T: \nT: \n", true, false)),
            (true, true, false, "", ("", true, false)),
            (
                true,
                false,
                true,
                "rest\nnext\n",
                ("T: next\n", true, false),
            ),
            (true, false, true, "rest\nnext", ("T: next", false, false)),
            (true, false, true, "no newline yet", ("", false, true)),
            (true, false, true, "end\n", ("", true, false)),
            (false, true, true, "x\ny\nz", ("y\nz", false, false)),
            (false, true, false, "x\n", ("x\n", true, false)),
        ];
        for &(stamped, start, skipping, chunk, (want, start_after, skipping_after)) in cases {
            let mut lf = LogFile::unopened(Path::new("/dev/null"), stamped.then_some("[T]"), None);
            lf.at_line_start = start;
            lf.skipping = skipping;
            let mut out = Vec::new();
            lf.stamp_lines(chunk.as_bytes(), 0, &mut out);
            let got = (
                String::from_utf8(out).unwrap(),
                lf.at_line_start,
                lf.skipping,
            );
            assert_eq!(
                got,
                (want.to_string(), start_after, skipping_after),
                "{stamped} {start} {skipping} {chunk:?}"
            );
        }
    }

    /// How long stamping takes per line (run by hand, in release:
    /// `cargo test --release --lib -- --ignored stamping_speed --nocapture`).
    #[test]
    #[ignore]
    fn stamping_speed() {
        let mut lf = LogFile::unopened(Path::new("/dev/null"), Some("YYYY-MM-DDTHH:mm:ss"), None);
        let mut chunk = Vec::new();
        while chunk.len() < 65536 - 100 {
            chunk.extend_from_slice(&[b'x'; 99]);
            chunk.push(b'\n');
        }
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        let rounds = 3000;
        for _ in 0..rounds {
            out.clear();
            lf.stamp_lines(&chunk, 1_764_000_000_000, &mut out);
        }
        let lines = rounds * chunk.len() / 100;
        eprintln!(
            "{:.1} ns per line",
            t.elapsed().as_nanos() as f64 / lines as f64
        );
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
