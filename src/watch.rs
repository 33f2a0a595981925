//! File watching for the `watch` option: one inotify fd for every app.
//!
//! This module owns the inotify fd, the map of watch descriptors (wd -> the
//! directory each app knows it by), the map of apps (id -> roots, ignore
//! rules, wds), the glob matcher behind `ignore_watch`, and the parsing of
//! inotify events. It does not own timing: the daemon registers
//! [`Watcher::raw_fd`] with mio, calls [`Watcher::read_changes`] when it is
//! readable, and debounces restarts per app itself.
//!
//! Decisions:
//! - A directory root is watched recursively. Symlinks met while recursing
//!   are not followed (`IN_DONT_FOLLOW`, and entries are typed with
//!   `lstat`), so a link back up the tree cannot loop. A root given as a
//!   symlink is followed: the user named it.
//! - A file root is watched through its parent directory (not recursively),
//!   and only events naming that file count. Watching the file's own inode
//!   would lose it to the rename-over-the-original that editors and deploy
//!   tools do on save.
//! - A directory created or moved in under a watched tree is added at once,
//!   recursively; its creation counts as a change, which covers whatever
//!   was written inside it before its watch existed. A directory moved out
//!   of the tree is dropped (its wd would otherwise report under a stale
//!   path).
//! - A deleted directory root is not watched again if it comes back.
//! - `IN_Q_OVERFLOW` counts as a change for every app, and every app's trees
//!   are rescanned, since directory creations may have been lost.
//! - Problems found while [`Watcher::read_changes`] adds new directories
//!   cannot be returned; they are kept for [`Watcher::take_warnings`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;

use crate::sys::{self, syscall};

/// Most directories (watch descriptors) one app may watch.
pub const MAX_DIRS_PER_APP: usize = 8192;
/// Most `ignore_watch` patterns one app may have.
pub const MAX_IGNORE_PATTERNS: usize = 1024;
/// Longest `ignore_watch` pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Size of the buffer inotify events are read into.
pub const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Most warnings kept until [`Watcher::take_warnings`]; later ones are dropped.
pub const MAX_WARNINGS: usize = 256;

/// Events that count as a change.
const WATCH_MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// Size of the fixed part of an inotify event (wd, mask, cookie, len).
const EVENT_HEADER: usize = std::mem::size_of::<libc::inotify_event>();

// ---------------------------------------------------------------------------
// Globs

/// One element of a compiled glob.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `?`: one character.
    One,
    /// `*`: any run of characters (not '/' unless crossing is allowed).
    Star,
    /// `**` not standing as a whole path segment: any run, '/' included.
    Globstar,
    /// `**/` as whole segments: nothing, or any run ending in '/'.
    AnyDirs,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled glob pattern.
#[derive(Debug, Clone)]
struct Glob {
    toks: Vec<Tok>,
}

impl Glob {
    /// Compiles `pattern`; the error says what is wrong with it.
    // Indexes below `chars.len()`, checked by each loop.
    #[allow(clippy::indexing_slicing)]
    fn compile(pattern: &str) -> Result<Glob, String> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(format!("it is longer than {MAX_PATTERN_LEN} bytes"));
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    let start = i;
                    while i < chars.len() && chars[i] == '*' {
                        i += 1;
                    }
                    if i - start == 1 {
                        toks.push(Tok::Star);
                        continue;
                    }
                    let at_segment_start = start == 0 || chars[start - 1] == '/';
                    if at_segment_start && chars.get(i) == Some(&'/') {
                        toks.push(Tok::AnyDirs);
                        i += 1;
                    } else {
                        toks.push(Tok::Globstar);
                    }
                    continue;
                }
                '?' => toks.push(Tok::One),
                '\\' => match chars.get(i + 1) {
                    Some(&c) => {
                        toks.push(Tok::Lit(c));
                        i += 1;
                    }
                    None => return Err("it ends with a lone '\\'".to_string()),
                },
                '[' => {
                    let (tok, next) = parse_class(&chars, i)?;
                    toks.push(tok);
                    i = next;
                    continue;
                }
                c => toks.push(Tok::Lit(c)),
            }
            i += 1;
        }
        Ok(Glob { toks })
    }

    /// Whether the whole of `text` matches. `cross_slash`: `*`, `?` and
    /// classes may match '/' too.
    // A dynamic programme over positions of slices sized from the same
    // text: every index is below a length checked by its loop.
    #[allow(clippy::indexing_slicing)]
    fn matches(&self, text: &str, cross_slash: bool) -> bool {
        let t: Vec<char> = text.chars().collect();
        let n = t.len();
        // reach[p]: the tokens so far can match exactly t[..p].
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        let single = |p: usize| cross_slash || t[p] != '/';
        for tok in &self.toks {
            let mut next = vec![false; n + 1];
            match tok {
                Tok::Lit(c) => {
                    for p in 0..n {
                        next[p + 1] = reach[p] && t[p] == *c;
                    }
                }
                Tok::One => {
                    for p in 0..n {
                        next[p + 1] = reach[p] && single(p);
                    }
                }
                Tok::Class { negated, ranges } => {
                    for p in 0..n {
                        let inside = ranges.iter().any(|&(lo, hi)| lo <= t[p] && t[p] <= hi);
                        next[p + 1] = reach[p] && single(p) && inside != *negated;
                    }
                }
                Tok::Star | Tok::Globstar => {
                    let crosses = cross_slash || *tok == Tok::Globstar;
                    let mut open = false;
                    for q in 0..=n {
                        open |= reach[q];
                        next[q] = open;
                        if q < n && t[q] == '/' && !crosses {
                            open = false;
                        }
                    }
                }
                Tok::AnyDirs => {
                    let mut seen = false;
                    for q in 0..=n {
                        next[q] = reach[q] || (seen && t[q - 1] == '/');
                        seen |= reach[q];
                    }
                }
            }
            if !next.iter().any(|&r| r) {
                return false;
            }
            reach = next;
        }
        reach[n]
    }
}

/// Parses the class starting at `chars[open] == '['`; returns it and the
/// index just past its ']'.
fn parse_class(chars: &[char], open: usize) -> Result<(Tok, usize), String> {
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(format!("'[' at offset {open} is never closed"));
        };
        if c == ']' && !first {
            return Ok((Tok::Class { negated, ranges }, i + 1));
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *chars
                .get(i)
                .ok_or_else(|| format!("'[' at offset {open} is never closed"))?
        } else {
            c
        };
        i += 1;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&h| h != ']') {
            let hi = chars.get(i + 1).copied().unwrap_or(lo);
            if hi < lo {
                return Err(format!("range {lo}-{hi} is backwards"));
            }
            ranges.push((lo, hi));
            i += 2;
        } else {
            ranges.push((lo, lo));
        }
    }
}

/// Matches `text` against the glob `pattern`: `*` any run of characters,
/// `?` one character, `[abc]`, `[a-z]`, `[!a-z]` classes, `\` escapes the
/// next character. With `cross_slash` false, `*`, `?` and classes do not
/// match '/', `**` does, and a `**/` segment matches any number of whole
/// directories (none included). An invalid pattern matches nothing.
#[cfg(test)]
fn glob_match(pattern: &str, text: &str, cross_slash: bool) -> bool {
    Glob::compile(pattern).is_ok_and(|g| g.matches(text, cross_slash))
}

// ---------------------------------------------------------------------------
// Ignore rules

/// What must not be watched or cause a restart.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    /// Patterns without '/', matched against each path component.
    component: Vec<Glob>,
    /// Patterns with '/', matched against the path relative to the root
    /// and against each of its leading directories.
    relative: Vec<Glob>,
    /// Absolute paths ignored with everything below them.
    exact: Vec<PathBuf>,
}

impl Ignore {
    /// `patterns`: a pattern without '/' is a glob matched against each
    /// path component (`node_modules` or `*.log` anywhere); a pattern with
    /// '/' is a glob matched against the path relative to the watched root
    /// (so a leading '/' or "./" anchors a name to the root; a trailing '/'
    /// is dropped), where `*` does not cross '/' and `**` does; a directory it
    /// matches is ignored with everything below it. `exact`: absolute paths
    /// ignored exactly, plus everything below them. A bad pattern (e.g. an
    /// unclosed '[') is an error naming it.
    pub fn new(patterns: &[String], exact: Vec<PathBuf>) -> Result<Ignore, String> {
        if patterns.len() > MAX_IGNORE_PATTERNS {
            return Err(format!(
                "{} ignore patterns given; at most {MAX_IGNORE_PATTERNS} are allowed",
                patterns.len()
            ));
        }
        let mut ignore = Ignore::default();
        for raw in patterns {
            let mut p = raw.trim_end_matches('/');
            // Any '/' left ("./" and a leading '/' included) anchors it to
            // the root.
            let anchored = p.contains('/');
            while let Some(rest) = p.strip_prefix("./") {
                p = rest;
            }
            let p = p.trim_start_matches('/');
            if p.is_empty() {
                return Err(format!("ignore pattern \"{raw}\" is empty"));
            }
            let glob = Glob::compile(p).map_err(|why| {
                let shown: String = raw.chars().take(80).collect();
                format!("ignore pattern \"{shown}\" is not a valid glob: {why}")
            })?;
            if anchored {
                ignore.relative.push(glob);
            } else {
                ignore.component.push(glob);
            }
        }
        ignore.exact = exact
            .into_iter()
            .map(|p| std::path::absolute(&p).unwrap_or(p))
            .collect();
        Ok(ignore)
    }

    /// Whether `path` (below `root`, or `root` itself) is ignored. The root
    /// itself is only ever ignored by an exact path.
    pub fn is_ignored(&self, root: &Path, path: &Path) -> bool {
        if self.exact.iter().any(|e| path.starts_with(e)) {
            return true;
        }
        let rel = path.strip_prefix(root).unwrap_or(path);
        let mut prefix = String::new();
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                continue;
            };
            let name = name.to_string_lossy();
            if self.component.iter().any(|g| g.matches(&name, true)) {
                return true;
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(&name);
            if self.relative.iter().any(|g| g.matches(&prefix, false)) {
                return true;
            }
        }
        false
    }
}

// ---------------------------------------------------------------------------
// Watcher

/// One watch descriptor: the directory it is, as each app reached it.
#[derive(Debug, Default)]
struct WdEntry {
    dirs: BTreeMap<u32, PathBuf>,
}

/// One app's watch.
#[derive(Debug)]
struct AppWatch {
    roots: Vec<PathBuf>,
    ignore: Ignore,
    wds: BTreeSet<i32>,
}

impl AppWatch {
    /// The deepest root `path` is at or below.
    fn root_for(&self, path: &Path) -> Option<&Path> {
        self.roots
            .iter()
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
            .map(PathBuf::as_path)
    }

    fn ignores(&self, path: &Path) -> bool {
        match self.root_for(path) {
            Some(root) => self.ignore.is_ignored(root, path),
            None => true,
        }
    }
}

/// Why one directory could not be added.
enum AddError {
    Io(io::Error),
    /// The app already watches `max_dirs` directories.
    Limit,
}

/// Watches the directory trees of every app on one inotify fd.
#[derive(Debug)]
pub struct Watcher {
    fd: OwnedFd,
    wds: HashMap<i32, WdEntry>,
    apps: BTreeMap<u32, AppWatch>,
    warnings: Vec<String>,
    /// [`MAX_DIRS_PER_APP`], lowered by tests.
    max_dirs: usize,
}

/// Adds directories for one app; borrows the Watcher's parts separately so
/// the app need not be in the map yet.
struct Adder<'a> {
    fd: RawFd,
    wds: &'a mut HashMap<i32, WdEntry>,
    id: u32,
    app: &'a mut AppWatch,
    warnings: &'a mut Vec<String>,
    max_dirs: usize,
}

impl Adder<'_> {
    /// Watches one root: a directory recursively, a file through its parent.
    fn add_root(&mut self, root: &Path) -> Result<(), String> {
        let meta = fs::metadata(root).map_err(|e| io_text("watch", root, &e))?;
        if meta.is_dir() {
            return self.add_tree(root, root, true);
        }
        let parent = match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("/"),
        };
        self.add_dir(parent, true)
            .map_err(|e| self.describe(parent, e))
    }

    /// Watches `start` and every directory below it that is not ignored.
    /// `strict`: any problem with `start` itself is an error (a root);
    /// otherwise (a directory that just appeared) its vanishing is not.
    /// Below `start`, vanished entries are skipped and unreadable ones are
    /// warnings; running out of watches is an error.
    fn add_tree(&mut self, root: &Path, start: &Path, strict: bool) -> Result<(), String> {
        let mut stack = vec![start.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let is_start = dir == start;
            if self.app.ignore.is_ignored(root, &dir) {
                continue;
            }
            let listed = match self.add_dir(&dir, is_start && strict) {
                Ok(()) => fs::read_dir(&dir).map_err(AddError::Io),
                Err(e) => Err(e),
            };
            let entries = match listed {
                Ok(entries) => entries,
                Err(e) => {
                    let vanished = matches!(&e, AddError::Io(io) if is_vanished(io));
                    let denied = matches!(&e, AddError::Io(io)
                        if io.raw_os_error() == Some(libc::EACCES));
                    if is_start && strict {
                        return Err(self.describe(&dir, e));
                    }
                    if vanished {
                        continue;
                    }
                    if denied && !is_start {
                        let text = self.describe(&dir, e);
                        push_warning(self.warnings, text);
                        continue;
                    }
                    return Err(self.describe(&dir, e));
                }
            };
            for entry in entries.flatten() {
                // `file_type` does not follow symlinks.
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Adds one directory's watch for this app. `follow`: a symlink may be
    /// followed (only for a root the user named).
    fn add_dir(&mut self, dir: &Path, follow: bool) -> Result<(), AddError> {
        let mut mask = WATCH_MASK | libc::IN_ONLYDIR | libc::IN_EXCL_UNLINK;
        if !follow {
            mask |= libc::IN_DONT_FOLLOW;
        }
        let wd = add_watch(self.fd, dir, mask).map_err(AddError::Io)?;
        if !self.app.wds.contains(&wd) && self.app.wds.len() >= self.max_dirs {
            if !self.wds.contains_key(&wd) {
                rm_watch(self.fd, wd);
            }
            return Err(AddError::Limit);
        }
        self.wds
            .entry(wd)
            .or_default()
            .dirs
            .insert(self.id, dir.to_path_buf());
        self.app.wds.insert(wd);
        Ok(())
    }

    fn describe(&self, path: &Path, e: AddError) -> String {
        match e {
            AddError::Io(e) => io_text("watch", path, &e),
            AddError::Limit => {
                let root = self.app.root_for(path).unwrap_or(path);
                format!(
                    "cannot watch {}: app {} would watch more than {} directories \
                     (add the big ones to ignore_watch)",
                    root.display(),
                    self.id,
                    self.max_dirs
                )
            }
        }
    }
}

impl Watcher {
    /// Opens the inotify fd (close-on-exec, non-blocking).
    pub fn new() -> io::Result<Watcher> {
        // SAFETY: inotify_init1 takes only flags and returns a new fd or -1.
        let raw = unsafe { syscall!(inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK)) }?;
        // SAFETY: `raw` was just returned by inotify_init1 and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Watcher {
            fd,
            wds: HashMap::new(),
            apps: BTreeMap::new(),
            warnings: Vec::new(),
            max_dirs: MAX_DIRS_PER_APP,
        })
    }

    /// The inotify fd, to register with mio (`SourceFd`) for readability.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Watches every directory below each root for app `id`, skipping the
    /// ignored ones; a root may be a file. Roots are made absolute (not
    /// canonical: a symlinked root keeps its name). Replaces any earlier
    /// watch of `id`. Errors (a root that does not exist, a directory that
    /// cannot be watched, too many directories) name the path; on error
    /// nothing stays watched for `id`.
    pub fn watch(&mut self, id: u32, roots: &[PathBuf], ignore: Ignore) -> Result<(), String> {
        self.unwatch(id);
        let mut abs = Vec::with_capacity(roots.len());
        for root in roots {
            let a = std::path::absolute(root).map_err(|e| io_text("watch", root, &e))?;
            if !abs.contains(&a) {
                abs.push(a);
            }
        }
        let mut app = AppWatch {
            roots: abs.clone(),
            ignore,
            wds: BTreeSet::new(),
        };
        let mut adder = Adder {
            fd: self.fd.as_raw_fd(),
            wds: &mut self.wds,
            id,
            app: &mut app,
            warnings: &mut self.warnings,
            max_dirs: self.max_dirs,
        };
        for root in &abs {
            if let Err(e) = adder.add_root(root) {
                let wds = std::mem::take(&mut app.wds);
                release(self.fd.as_raw_fd(), &mut self.wds, id, &wds);
                return Err(e);
            }
        }
        self.apps.insert(id, app);
        Ok(())
    }

    /// Stops watching for app `id`; removes the watches no app uses any more.
    pub fn unwatch(&mut self, id: u32) {
        if let Some(app) = self.apps.remove(&id) {
            release(self.fd.as_raw_fd(), &mut self.wds, id, &app.wds);
        }
    }

    /// Whether app `id` is watched.
    pub fn is_watching(&self, id: u32) -> bool {
        self.apps.contains_key(&id)
    }

    /// Problems met while adding directories from [`Watcher::read_changes`]
    /// (and unreadable subdirectories skipped by [`Watcher::watch`]), oldest
    /// first, for the daemon to log. Empties the list.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Drains the fd until it would block and returns the ids (sorted, no
    /// duplicates) of the apps that saw a change they do not ignore.
    pub fn read_changes(&mut self) -> Vec<u32> {
        let mut changed = BTreeSet::new();
        let mut buf = vec![0u8; READ_BUFFER_SIZE];
        loop {
            match sys::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(len) => self.process(buf.get(..len).unwrap_or_default(), &mut changed),
                Err(e) => {
                    let e = io::Error::from(e);
                    let text = format!("cannot read inotify events: {}", os_text(&e));
                    push_warning(&mut self.warnings, text);
                    break;
                }
            }
        }
        changed.into_iter().collect()
    }

    /// Handles every event in one read.
    fn process(&mut self, buf: &[u8], changed: &mut BTreeSet<u32>) {
        let mut off = 0;
        while buf.len() - off >= EVENT_HEADER {
            let word = |at: usize| {
                let mut b = [0u8; 4];
                if let Some(w) = buf.get(off + at..off + at + 4) {
                    b.copy_from_slice(w);
                }
                b
            };
            let wd = i32::from_ne_bytes(word(0));
            let mask = u32::from_ne_bytes(word(4));
            let len = usize::try_from(u32::from_ne_bytes(word(12))).unwrap_or(usize::MAX);
            let Some(end) = (off + EVENT_HEADER)
                .checked_add(len)
                .filter(|&e| e <= buf.len())
            else {
                break;
            };
            let raw_name = buf.get(off + EVENT_HEADER..end).unwrap_or_default();
            let name_len = raw_name
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(raw_name.len());
            let name = OsStr::from_bytes(raw_name.get(..name_len).unwrap_or_default());
            self.handle(wd, mask, name, changed);
            off = end;
        }
    }

    /// Handles one event.
    fn handle(&mut self, wd: i32, mask: u32, name: &OsStr, changed: &mut BTreeSet<u32>) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            changed.extend(self.apps.keys().copied());
            self.rescan_all();
            return;
        }
        if mask & libc::IN_IGNORED != 0 {
            // The kernel dropped the watch (its directory is gone, or we
            // removed it): forget it.
            if let Some(entry) = self.wds.remove(&wd) {
                for id in entry.dirs.keys() {
                    if let Some(app) = self.apps.get_mut(id) {
                        app.wds.remove(&wd);
                    }
                }
            }
            return;
        }
        let Some(entry) = self.wds.get(&wd) else {
            return;
        };
        let targets: Vec<(u32, PathBuf)> = entry
            .dirs
            .iter()
            .map(|(&id, dir)| {
                let path = if name.is_empty() {
                    dir.clone()
                } else {
                    dir.join(name)
                };
                (id, path)
            })
            .collect();
        let is_dir = mask & libc::IN_ISDIR != 0;
        for (id, path) in targets {
            if is_dir && mask & libc::IN_MOVED_FROM != 0 {
                self.drop_subtree(id, &path);
            }
            let Some(app) = self.apps.get_mut(&id) else {
                continue;
            };
            if app.ignores(&path) {
                continue;
            }
            changed.insert(id);
            if is_dir && mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                let root = app.root_for(&path).map(Path::to_path_buf);
                let mut adder = Adder {
                    fd: self.fd.as_raw_fd(),
                    wds: &mut self.wds,
                    id,
                    app,
                    warnings: &mut self.warnings,
                    max_dirs: self.max_dirs,
                };
                if let Some(root) = root
                    && let Err(e) = adder.add_tree(&root, &path, false)
                {
                    push_warning(&mut self.warnings, e);
                }
            }
        }
    }

    /// Stops watching, for app `id`, `path` and every directory below it.
    fn drop_subtree(&mut self, id: u32, path: &Path) {
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        let gone: BTreeSet<i32> = app
            .wds
            .iter()
            .copied()
            .filter(|wd| {
                self.wds
                    .get(wd)
                    .and_then(|e| e.dirs.get(&id))
                    .is_some_and(|dir| dir.starts_with(path))
            })
            .collect();
        for wd in &gone {
            app.wds.remove(wd);
        }
        release(self.fd.as_raw_fd(), &mut self.wds, id, &gone);
    }

    /// Adds again every root of every app (after an overflow lost events).
    fn rescan_all(&mut self) {
        let fd = self.fd.as_raw_fd();
        for (&id, app) in self.apps.iter_mut() {
            let roots = app.roots.clone();
            let mut adder = Adder {
                fd,
                wds: &mut self.wds,
                id,
                app,
                warnings: &mut self.warnings,
                max_dirs: self.max_dirs,
            };
            let mut errors = Vec::new();
            for root in &roots {
                if let Err(e) = adder.add_root(root) {
                    errors.push(e);
                }
            }
            for e in errors {
                push_warning(&mut self.warnings, e);
            }
        }
    }
}

impl AsFd for Watcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Takes app `id` off each of `wds`; removes the watches left with no app.
fn release(fd: RawFd, map: &mut HashMap<i32, WdEntry>, id: u32, wds: &BTreeSet<i32>) {
    for wd in wds {
        let Some(entry) = map.get_mut(wd) else {
            continue;
        };
        entry.dirs.remove(&id);
        if entry.dirs.is_empty() {
            map.remove(wd);
            rm_watch(fd, *wd);
        }
    }
}

fn add_watch(fd: RawFd, path: &Path, mask: u32) -> io::Result<i32> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    Ok(unsafe { syscall!(inotify_add_watch(fd, c.as_ptr(), mask)) }?)
}

/// Removes a watch; one the kernel already dropped (EINVAL) is fine.
fn rm_watch(fd: RawFd, wd: i32) {
    // SAFETY: plain syscall on integers; a stale wd only yields EINVAL.
    unsafe {
        libc::inotify_rm_watch(fd, wd);
    }
}

/// The entry went away (or was replaced by a non-directory) between being
/// listed and being watched.
fn is_vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}

fn push_warning(warnings: &mut Vec<String>, text: String) {
    if warnings.len() < MAX_WARNINGS {
        warnings.push(text);
    }
}

/// "cannot OP PATH: reason".
fn io_text(op: &str, path: &Path, e: &io::Error) -> String {
    format!("cannot {op} {}: {}", path.display(), os_text(e))
}

/// An io error as lower-case text without "(os error N)".
fn os_text(e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return "the system's inotify watch limit is reached (sysctl fs.inotify.max_user_watches)"
            .to_string();
    }
    let full = e.to_string();
    let text = full
        .rfind(" (os error ")
        .map_or(full.as_str(), |i| &full[..i]);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // -- globs and ignore rules ---------------------------------------------

    #[test]
    fn glob_table() {
        // (pattern, text, cross_slash, expected)
        let cases: &[(&str, &str, bool, bool)] = &[
            ("*.log", "a.log", false, true),
            ("*.log", "a.log.1", false, false),
            ("*.log", ".log", false, true),
            ("*.log*", "a.log.1", false, true),
            ("a?c", "abc", false, true),
            ("a?c", "ac", false, false),
            ("a?c", "a/c", false, false),
            ("a?c", "a/c", true, true),
            ("[abc].js", "b.js", false, true),
            ("[abc].js", "d.js", false, false),
            ("[a-z]1", "q1", false, true),
            ("[a-z]1", "Q1", false, false),
            ("[!a-z]1", "Q1", false, true),
            ("[^a-z]1", "q1", false, false),
            ("[]]", "]", false, true),
            ("[a-]", "-", false, true),
            ("\\*", "*", false, true),
            ("\\*", "a", false, false),
            ("src/**/*.js", "src/a/b/c.js", false, true),
            ("src/**/*.js", "src/c.js", false, true),
            ("src/**/*.js", "lib/a/c.js", false, false),
            ("src/**/*.js", "src/a/c.ts", false, false),
            ("src/*.js", "src/a/c.js", false, false),
            ("src/*.js", "src/a/c.js", true, true),
            ("src/*.js", "src/c.js", false, true),
            ("**/tmp", "tmp", false, true),
            ("**/tmp", "a/b/tmp", false, true),
            ("**/tmp", "a/btmp", false, false),
            ("src/**", "src/a/b", false, true),
            ("a**b", "a/x/b", false, true),
            ("*", "", false, true),
            ("", "", false, true),
            ("", "a", false, false),
            ("node_modules", "node_modules", false, true),
            ("node_modules", "node_modules2", false, false),
            (
                "*a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
                false,
            ),
            ("[", "[", false, false),
        ];
        for &(pattern, text, cross, want) in cases {
            assert_eq!(
                glob_match(pattern, text, cross),
                want,
                "glob_match({pattern:?}, {text:?}, {cross})"
            );
        }
    }

    #[test]
    fn bad_patterns_are_errors_naming_them() {
        let cases = ["[abc", "src/[a-", "x\\", "[z-a]", "ab[!"];
        for pattern in cases {
            let err = Ignore::new(&[pattern.to_string()], Vec::new())
                .expect_err(&format!("{pattern:?} should be refused"));
            assert!(err.contains(pattern), "{err:?} should name {pattern:?}");
        }
        let err =
            Ignore::new(&["x".repeat(MAX_PATTERN_LEN + 1)], Vec::new()).expect_err("too long");
        assert!(err.contains("longer than"), "{err}");
        let many = vec!["x".to_string(); MAX_IGNORE_PATTERNS + 1];
        assert!(Ignore::new(&many, Vec::new()).is_err());
        assert!(Ignore::new(&["/".to_string()], Vec::new()).is_err());
    }

    #[test]
    fn ignore_table() {
        let patterns: Vec<String> = [
            "node_modules",
            "*.log",
            "src/gen",
            "docs/**/*.md",
            "/build/",
            "./tmp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let ignore = Ignore::new(
            &patterns,
            vec![
                PathBuf::from("/srv/app/logs"),
                PathBuf::from("/srv/app/app.pid"),
            ],
        )
        .expect("valid patterns");
        let root = Path::new("/srv/app");
        let cases: &[(&str, bool)] = &[
            ("/srv/app", false),
            ("/srv/app/index.js", false),
            ("/srv/app/node_modules", true),
            ("/srv/app/node_modules/x/index.js", true),
            ("/srv/app/lib/node_modules/x.js", true),
            ("/srv/app/node_modules2/x.js", false),
            ("/srv/app/out.log", true),
            ("/srv/app/a/b/out.log", true),
            ("/srv/app/out.log.1", false),
            ("/srv/app/src/gen", true),
            ("/srv/app/src/gen/a/b.js", true),
            ("/srv/app/src/generated/b.js", false),
            ("/srv/app/lib/src/gen/b.js", false),
            ("/srv/app/docs/a.md", true),
            ("/srv/app/docs/x/y/a.md", true),
            ("/srv/app/docs/x/y/a.txt", false),
            ("/srv/app/build", true),
            ("/srv/app/build/x.js", true),
            ("/srv/app/tmp/x", true),
            ("/srv/app/lib/build/x.js", false),
            ("/srv/app/lib/tmp", false),
            ("/srv/app/logs", true),
            ("/srv/app/logs/out-0.txt", true),
            ("/srv/app/logs2/x.js", false),
            ("/srv/app/app.pid", true),
            ("/srv/app/app.pid2", false),
        ];
        for &(path, want) in cases {
            assert_eq!(ignore.is_ignored(root, Path::new(path)), want, "{path}");
        }
        // The root's own name is never matched by a component pattern.
        let nm = Path::new("/x/node_modules");
        assert!(!ignore.is_ignored(nm, nm));
        assert!(ignore.is_ignored(nm, &nm.join("node_modules")));
    }

    // -- the watcher --------------------------------------------------------

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let path =
                std::env::temp_dir().join(format!("corral-watch-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        /// This directory as the only root.
        fn roots(&self) -> Vec<PathBuf> {
            vec![self.0.clone()]
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }

        fn mkdir(&self, rel: &str) -> PathBuf {
            let p = self.path(rel);
            fs::create_dir_all(&p).expect("mkdir");
            p
        }

        fn write(&self, rel: &str) {
            fs::write(self.path(rel), b"x").expect("write");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ignore(patterns: &[&str]) -> Ignore {
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Ignore::new(&patterns, Vec::new()).expect("valid patterns")
    }

    fn watcher() -> Watcher {
        Watcher::new().expect("inotify_init1")
    }

    fn touch(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `c` is NUL-terminated and outlives the call; a null `times`
        // sets both timestamps to now.
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
        assert_eq!(rc, 0, "utimensat {}", path.display());
    }

    #[test]
    fn fd_is_cloexec_and_nonblocking() {
        let w = watcher();
        // SAFETY: fcntl F_GETFD/F_GETFL on an fd this test owns.
        let (fd_flags, fl_flags) = unsafe {
            (
                libc::fcntl(w.raw_fd(), libc::F_GETFD),
                libc::fcntl(w.raw_fd(), libc::F_GETFL),
            )
        };
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0);
        assert_ne!(fl_flags & libc::O_NONBLOCK, 0);
        let mut w = w;
        assert_eq!(w.read_changes(), Vec::<u32>::new());
    }

    #[test]
    fn simple_changes_are_seen_per_app() {
        // (what is done in a watched tree with `src/` and `node_modules/`,
        //  ignore patterns, whether it counts)
        type Action = fn(&TempDir);
        let cases: &[(&str, Action, &[&str], bool)] = &[
            ("write a file", |t| t.write("a.js"), &[], true),
            ("write below", |t| t.write("src/a.js"), &[], true),
            ("touch", |t| touch(&t.path("src/old.js")), &[], true),
            (
                "chmod",
                |t| {
                    use std::os::unix::fs::PermissionsExt;
                    let p = t.path("src/old.js");
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
                },
                &[],
                true,
            ),
            (
                "delete",
                |t| fs::remove_file(t.path("src/old.js")).expect("rm"),
                &[],
                true,
            ),
            (
                "rename",
                |t| fs::rename(t.path("src/old.js"), t.path("src/new.js")).expect("mv"),
                &[],
                true,
            ),
            (
                "read only",
                |t| {
                    fs::read(t.path("src/old.js")).expect("read");
                },
                &[],
                false,
            ),
            (
                "ignored dir",
                |t| t.write("node_modules/x.js"),
                &["node_modules"],
                false,
            ),
            (
                "ignored new dir",
                |t| {
                    t.mkdir("src/node_modules/y");
                    t.write("src/node_modules/y/x.js");
                },
                &["node_modules"],
                false,
            ),
            ("ignored name", |t| t.write("src/a.log"), &["*.log"], false),
            (
                "ignored glob",
                |t| t.write("src/a.js"),
                &["src/*.js"],
                false,
            ),
            (
                "not ignored by glob",
                |t| t.write("a.js"),
                &["src/*.js"],
                true,
            ),
        ];
        for &(what, action, patterns, want) in cases {
            let t = TempDir::new();
            t.mkdir("src");
            t.mkdir("node_modules");
            t.write("src/old.js");
            let mut w = watcher();
            w.watch(7, &t.roots(), ignore(patterns)).expect("watch");
            assert!(w.is_watching(7));
            assert_eq!(w.read_changes(), Vec::<u32>::new(), "{what}: nothing yet");
            action(&t);
            let want: Vec<u32> = if want { vec![7] } else { vec![] };
            assert_eq!(w.read_changes(), want, "{what}");
            assert_eq!(w.read_changes(), Vec::<u32>::new(), "{what}: drained");
        }
    }

    #[test]
    fn new_subdir_is_watched_recursively() {
        let t = TempDir::new();
        let mut w = watcher();
        w.watch(1, &t.roots(), Ignore::default()).expect("watch");
        // Made before its watch can exist: the creation itself counts.
        t.mkdir("new/deeper");
        t.write("new/deeper/a.js");
        assert_eq!(w.read_changes(), vec![1]);
        // Now both levels are watched.
        t.write("new/b.js");
        assert_eq!(w.read_changes(), vec![1]);
        t.write("new/deeper/c.js");
        assert_eq!(w.read_changes(), vec![1]);
        assert_eq!(w.wds.len(), 3);
    }

    #[test]
    fn moved_dirs_follow_their_new_path() {
        let t = TempDir::new();
        t.mkdir("a/inner");
        let outside = TempDir::new();
        let mut w = watcher();
        w.watch(1, &t.roots(), ignore(&["skip"])).expect("watch");
        fs::rename(t.path("a"), t.path("b")).expect("mv");
        assert_eq!(w.read_changes(), vec![1]);
        t.write("b/inner/x.js");
        assert_eq!(w.read_changes(), vec![1]);
        // Moved to an ignored name: no longer watched.
        fs::rename(t.path("b"), t.path("skip")).expect("mv");
        assert_eq!(w.read_changes(), vec![1]);
        t.write("skip/inner/x.js");
        assert_eq!(w.read_changes(), Vec::<u32>::new());
        // Moved out of the tree: dropped.
        // Moved from an ignored name to a watched one: added again.
        fs::rename(t.path("skip"), t.path("c")).expect("mv");
        assert_eq!(w.read_changes(), vec![1]);
        t.write("c/inner/x.js");
        assert_eq!(w.read_changes(), vec![1]);
        fs::rename(t.path("c"), outside.path("c")).expect("mv");
        assert_eq!(w.read_changes(), vec![1]);
        fs::write(outside.path("c/inner/y.js"), b"y").expect("write");
        assert_eq!(w.read_changes(), Vec::<u32>::new());
        assert_eq!(w.wds.len(), 1);
    }

    #[test]
    fn deleted_dirs_are_forgotten() {
        let t = TempDir::new();
        t.mkdir("gone/sub");
        let mut w = watcher();
        w.watch(3, &t.roots(), Ignore::default()).expect("watch");
        assert_eq!(w.wds.len(), 3);
        fs::remove_dir_all(t.path("gone")).expect("rm -r");
        assert_eq!(w.read_changes(), vec![3]);
        assert_eq!(w.wds.len(), 1);
        assert_eq!(w.apps[&3].wds.len(), 1);
    }

    #[test]
    fn two_apps_share_a_dir_with_their_own_ignores() {
        let t = TempDir::new();
        t.mkdir("build");
        let mut w = watcher();
        w.watch(1, &t.roots(), ignore(&["*.tmp", "build"]))
            .expect("watch 1");
        w.watch(2, &t.roots(), Ignore::default()).expect("watch 2");
        assert_eq!(w.wds.len(), 2);
        let cases: &[(&str, &[u32])] =
            &[("x.tmp", &[2]), ("x.js", &[1, 2]), ("build/out.js", &[2])];
        for &(file, want) in cases {
            t.write(file);
            assert_eq!(w.read_changes(), want, "{file}");
        }
        w.unwatch(2);
        assert!(!w.is_watching(2));
        assert_eq!(w.wds.len(), 1, "build/ was only watched for app 2");
        t.write("build/out.js");
        t.write("x.tmp");
        assert_eq!(w.read_changes(), Vec::<u32>::new());
        t.write("x.js");
        assert_eq!(w.read_changes(), vec![1]);
        w.unwatch(1);
        t.write("x.js");
        assert_eq!(w.read_changes(), Vec::<u32>::new());
        assert!(w.wds.is_empty());
    }

    #[test]
    fn watch_again_replaces() {
        let t = TempDir::new();
        t.mkdir("a");
        let mut w = watcher();
        w.watch(1, &t.roots(), Ignore::default()).expect("watch");
        w.watch(1, &t.roots(), ignore(&["a"])).expect("watch again");
        assert_eq!(w.wds.len(), 1);
        t.write("a/x");
        assert_eq!(w.read_changes(), Vec::<u32>::new());
    }

    #[test]
    fn exact_paths_are_not_watched() {
        let t = TempDir::new();
        let logs = t.mkdir("logs");
        let pid = t.path("app.pid");
        let mut w = watcher();
        let ign = Ignore::new(&[], vec![logs, pid]).expect("ignore");
        w.watch(1, &t.roots(), ign).expect("watch");
        assert_eq!(w.wds.len(), 1);
        t.write("logs/out.log");
        t.write("app.pid");
        assert_eq!(w.read_changes(), Vec::<u32>::new());
        t.write("app.js");
        assert_eq!(w.read_changes(), vec![1]);
    }

    #[test]
    fn file_root_survives_replacement() {
        let t = TempDir::new();
        t.write("config.json");
        let mut w = watcher();
        w.watch(4, &[t.path("config.json")], Ignore::default())
            .expect("watch");
        t.write("other.json");
        assert_eq!(w.read_changes(), Vec::<u32>::new(), "a sibling");
        t.write("config.json");
        assert_eq!(w.read_changes(), vec![4]);
        // Save by rename over the original, as editors do.
        t.write("config.json.swp");
        fs::rename(t.path("config.json.swp"), t.path("config.json")).expect("mv");
        assert_eq!(w.read_changes(), vec![4]);
        touch(&t.path("config.json"));
        assert_eq!(w.read_changes(), vec![4]);
    }

    #[test]
    fn symlinks_are_not_followed_while_recursing() {
        let t = TempDir::new();
        t.mkdir("real");
        std::os::unix::fs::symlink(&t.0, t.path("real/loop")).expect("symlink");
        let mut w = watcher();
        w.watch(1, &t.roots(), Ignore::default()).expect("watch");
        assert_eq!(w.wds.len(), 2);
        // A symlinked root is followed and keeps its name.
        let link = TempDir::new();
        let root = link.path("app");
        std::os::unix::fs::symlink(&t.0, &root).expect("symlink");
        w.watch(2, &[root], Ignore::default()).expect("watch link");
        assert_eq!(w.wds.len(), 2);
        t.write("real/x.js");
        assert_eq!(w.read_changes(), vec![1, 2]);
    }

    #[test]
    fn bad_roots_are_errors_naming_them() {
        let t = TempDir::new();
        let missing = t.path("missing");
        let mut w = watcher();
        let err = w
            .watch(1, &[t.0.clone(), missing.clone()], Ignore::default())
            .expect_err("missing root");
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("no such file or directory"), "{err}");
        assert!(!w.is_watching(1));
        assert!(w.wds.is_empty(), "rolled back");
    }

    #[test]
    fn too_many_dirs_is_an_error_naming_the_root() {
        let t = TempDir::new();
        for d in ["a", "b", "c", "d"] {
            t.mkdir(d);
        }
        let mut w = watcher();
        w.max_dirs = 3;
        let err = w
            .watch(1, &t.roots(), Ignore::default())
            .expect_err("over the limit");
        assert!(err.contains(&t.0.display().to_string()), "{err}");
        assert!(err.contains("more than 3 directories"), "{err}");
        assert!(!w.is_watching(1));
        assert!(w.wds.is_empty());
        w.watch(1, &t.roots(), ignore(&["[ab]"]))
            .expect("under the limit");
        // A directory made later past the limit is a warning.
        t.mkdir("e");
        assert_eq!(w.read_changes(), vec![1]);
        let warnings = w.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("more than 3"), "{warnings:?}");
    }

    /// Builds the bytes of one inotify event.
    fn event(wd: i32, mask: u32, name: &str) -> Vec<u8> {
        let mut padded = name.as_bytes().to_vec();
        if !padded.is_empty() {
            padded.resize((padded.len() / 16 + 1) * 16, 0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&wd.to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&u32::try_from(padded.len()).expect("small").to_ne_bytes());
        out.extend_from_slice(&padded);
        out
    }

    #[test]
    fn parsed_events() {
        let t = TempDir::new();
        let other = TempDir::new();
        let mut w = watcher();
        w.watch(1, &t.roots(), ignore(&["*.log"])).expect("watch 1");
        w.watch(2, &other.roots(), Ignore::default())
            .expect("watch 2");
        let wd1 = *w.apps[&1].wds.first().expect("a wd");
        // (bytes read, expected ids)
        let cases: Vec<(Vec<u8>, Vec<u32>)> = vec![
            (event(wd1, libc::IN_MODIFY, "a.js"), vec![1]),
            (event(wd1, libc::IN_MODIFY, "a.log"), vec![]),
            (event(wd1 + 1000, libc::IN_MODIFY, "a.js"), vec![]),
            (event(-1, libc::IN_Q_OVERFLOW, ""), vec![1, 2]),
            (
                [
                    event(wd1, libc::IN_MODIFY, "a.log"),
                    event(wd1, libc::IN_CREATE, "b"),
                ]
                .concat(),
                vec![1],
            ),
            // A truncated trailing event is dropped, the whole ones are seen.
            (
                [event(wd1, libc::IN_ATTRIB, ""), vec![1, 2, 3]].concat(),
                vec![1],
            ),
        ];
        for (bytes, want) in cases {
            let mut changed = BTreeSet::new();
            w.process(&bytes, &mut changed);
            assert_eq!(changed.into_iter().collect::<Vec<_>>(), want, "{bytes:?}");
        }
        // The overflow rescan added nothing new and lost nothing.
        assert_eq!(w.wds.len(), 2);
        w.process(&event(wd1, libc::IN_IGNORED, ""), &mut BTreeSet::new());
        assert_eq!(w.wds.len(), 1);
        assert!(w.apps[&1].wds.is_empty());
    }

    #[test]
    fn error_texts() {
        let cases = [
            (libc::EACCES, "cannot watch /srv/app/src: permission denied"),
            (
                libc::ENOENT,
                "cannot watch /srv/app/src: no such file or directory",
            ),
        ];
        for (errno, want) in cases {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(io_text("watch", Path::new("/srv/app/src"), &e), want);
        }
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(io_text("watch", Path::new("/x"), &e).contains("max_user_watches"));
    }
}
