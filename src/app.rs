//! What to run for an app: its options resolved against the filesystem
//! (script and interpreter found, cwd made absolute, log and pid paths
//! chosen, user and group looked up) and turned into a `spawn::Command`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_json::value::{RawValue, to_raw_value};

use crate::options::{AppSpec, CombinedLog};
use crate::protocol::{ErrorCode, WireError};
use crate::spawn;
use crate::users;

/// Variables of the caller's environment an app must not inherit: they
/// describe the caller's own channel and readiness socket.
const INHERITED_NOT: &[&str] = &[
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "NODE_UNIQUE_ID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Where the daemon keeps its files.
#[derive(Clone, Debug)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn pids(&self) -> PathBuf {
        self.dir.join("pids")
    }
}

/// What the names of the spares of removed pid files in the home's
/// `pids/` start with (`.spare-N`; see the daemon's `pidfiles`).
pub const SPARE_PREFIX: &str = ".spare-";

/// N of a spare's name `.spare-N` (written with no leading 0); None for
/// any other name (a pid file's ends in `.pid`).
pub fn spare_number(name: &std::ffi::OsStr) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    let digits = name.as_bytes().strip_prefix(SPARE_PREFIX.as_bytes())?;
    let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (digits.iter().all(u8::is_ascii_digit) && n.to_string().as_bytes() == digits).then_some(n)
}

/// What one spawn is wired to: its standard fds, its end of the IPC
/// channel, and the sd_notify socket it may report to.
pub struct Io {
    pub stdio: [OwnedFd; 3],
    /// Listening sockets (`listen`) with their `LISTEN_FDNAMES` names.
    pub listen: Vec<(std::os::fd::RawFd, String)>,
    pub channel: Option<OwnedFd>,
    pub notify_socket: Option<PathBuf>,
    /// `NODE_UNIQUE_ID` of a Node cluster worker.
    pub cluster_id: Option<String>,
}

/// An app ready to be spawned, as many times as it restarts.
#[derive(Clone, Debug)]
pub struct App {
    pub spec: AppSpec,
    pub exec_path: PathBuf,
    pub interpreter: Option<PathBuf>,
    pub cwd: PathBuf,
    pub out_path: PathBuf,
    pub err_path: PathBuf,
    /// The pid file given (`pid_file`); `None`: the home's
    /// `pids/<name>-<pm_id>.pid`, made when used (`pid_path`), not kept.
    pid_file: Option<PathBuf>,
    /// The environment inherited instead of the daemon's (the caller's),
    /// shared by the apps of one start request.
    pub base_env: Option<Rc<BTreeMap<String, String>>>,
    /// Boxed: most apps run as the daemon's user.
    pub creds: Option<Box<users::Credentials>>,
    /// `script` is a command line run with `sh -c`.
    pub shell: bool,
    /// Which instance of its app this is.
    pub slot: Slot,
    /// The options object `spec` was parsed from, kept whole for the dump
    /// (`dump.rs`).
    pub options: Given,
    /// What most apps have none of, boxed apart (`None`: none of it).
    rare: Option<Box<AppRare>>,
}

/// The fields of an app most apps leave empty.
#[derive(Clone, Debug)]
struct AppRare {
    /// The combined stdout+stderr file (`log_file`), if any.
    log_path: Option<PathBuf>,
    /// The `env_<name>` overlay in use.
    env_name: Option<String>,
    /// `increment_var` and its value for this instance.
    increment: Option<(String, i64)>,
}

/// The options object an app was parsed from, kept as compact JSON text:
/// read back only for a dump or a change of options, while a parsed
/// `Value` held for each app costs a kilobyte or more of heap. A
/// hand-over writes it as it is.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Given(Box<RawValue>);

impl Given {
    pub fn new(options: &serde_json::Value) -> Given {
        Given(to_raw_value(options).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// The options object's text.
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The options object again.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

/// One instance of an app: its pm_id, its index among the instances of the
/// name (0..n-1, `NODE_APP_INSTANCE`), how many were asked for, and its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub pm_id: u32,
    pub instance: u32,
    pub count: u32,
    pub cluster: bool,
}

/// `dir/app-out.log` -> `dir/app-out-3.log`; `/dev/null` stays.
fn with_id(path: &Path, pm_id: u32) -> PathBuf {
    if crate::logs::is_null(path) {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{pm_id}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{pm_id}"),
    };
    path.with_file_name(name)
}

/// File-name-safe form of an app name.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// PATH lookups already made: (program, PATH) → where it was found.
type Lookups = HashMap<(String, String), Option<PathBuf>>;

thread_local! {
    /// The lookups of a batch of apps resolved at once
    /// (`with_program_cache`); `None` outside one.
    static PROGRAMS: std::cell::RefCell<Option<Lookups>> = const { std::cell::RefCell::new(None) };
}

/// Run `f`, remembering PATH lookups across the apps it resolves: a
/// hand-over of 1000 apps looks `sleep` up once, not a thousand times
/// along every directory of PATH.
pub fn with_program_cache<T>(f: impl FnOnce() -> T) -> T {
    PROGRAMS.with(|c| *c.borrow_mut() = Some(HashMap::new()));
    let r = f();
    PROGRAMS.with(|c| *c.borrow_mut() = None);
    r
}

/// `prog` as a path (relative to `cwd`) if it has a slash, else on `path`.
fn find_program(prog: &str, cwd: &Path, path: Option<&str>) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = cwd.join(prog);
        return p.exists().then_some(p);
    }
    let path = path.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    let key = (prog.to_string(), path.to_string());
    if let Some(hit) = PROGRAMS.with(|c| c.borrow().as_ref().and_then(|m| m.get(&key).cloned())) {
        return hit;
    }
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| is_executable_file(p));
    PROGRAMS.with(|c| {
        if let Some(m) = c.borrow_mut().as_mut() {
            m.insert(key, found.clone());
        }
    });
    found
}

/// Two maps' pairs, each in key order, as one in key order; on a key in
/// both, `over`'s pair alone.
fn merge_sorted<'a>(
    base: impl Iterator<Item = (&'a String, &'a String)>,
    over: impl Iterator<Item = (&'a String, &'a String)>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let mut base = base.peekable();
    let mut over = over.peekable();
    std::iter::from_fn(move || {
        let (k, v) = match (base.peek(), over.peek()) {
            (Some((b, _)), Some((o, _))) if b < o => base.next(),
            (Some((b, _)), Some((o, _))) if b == o => {
                base.next();
                over.next()
            }
            (_, Some(_)) => over.next(),
            (Some(_), None) => base.next(),
            (None, None) => None,
        }?;
        Some((k.as_str(), v.as_str()))
    })
}

fn invalid(msg: String) -> WireError {
    WireError::new(ErrorCode::InvalidOption, msg)
}

impl App {
    /// Its log files, each with whether the user gave the path (rather
    /// than corral choosing it from the name).
    pub fn log_paths(&self) -> Vec<(&Path, bool)> {
        let mut v = vec![
            (self.out_path.as_path(), self.spec.output.is_some()),
            (self.err_path.as_path(), self.spec.error.is_some()),
        ];
        if let Some(p) = self.log_path() {
            let given = matches!(self.spec.rare().log_file, Some(CombinedLog::Path(_)));
            v.push((p, given));
        }
        v.retain(|(p, _)| !crate::logs::is_null(p));
        v
    }

    /// Resolve `spec` (parsed from `options`): `base_env` is the caller's environment, if any;
    /// `daemon_root` whether `uid`/`gid` may be used.
    pub fn resolve(
        spec: AppSpec,
        options: &serde_json::Value,
        slot: Slot,
        home: &Home,
        base_env: Option<Rc<BTreeMap<String, String>>>,
        env_name: Option<String>,
        daemon_root: bool,
    ) -> Result<App, WireError> {
        let found = Found::look(&spec, base_env.as_deref(), daemon_root)?;
        App::from_found(
            spec,
            Given::new(options),
            slot,
            home,
            base_env,
            env_name,
            found,
        )
    }

    /// The rest of resolving once `found` is known: the log and pid
    /// paths and `increment_var`, from the options alone.
    pub fn from_found(
        spec: AppSpec,
        options: Given,
        slot: Slot,
        home: &Home,
        base_env: Option<Rc<BTreeMap<String, String>>>,
        env_name: Option<String>,
        found: Found,
    ) -> Result<App, WireError> {
        let Found {
            cwd,
            exec_path,
            interpreter,
            shell,
            creds,
        } = found;
        let pm_id = slot.pm_id;
        let stem = file_stem(&spec.name);
        // `/dev/null` and PM2's `NULL` discard; other paths are relative to cwd.
        let in_cwd = |p: Option<&str>| {
            p.map(|p| match p {
                "NULL" | "/dev/null" => PathBuf::from("/dev/null"),
                p => cwd.join(p),
            })
        };
        let out_path = in_cwd(spec.output.as_deref())
            .unwrap_or_else(|| home.logs().join(format!("{stem}-out.log")));
        let err_path = in_cwd(spec.error.as_deref())
            .unwrap_or_else(|| home.logs().join(format!("{stem}-error.log")));
        // Several instances write files of their own unless merge_logs.
        let own_files = (slot.cluster || slot.count > 1) && !spec.rare().merge_logs;
        let log_path = match &spec.rare().log_file {
            None => None,
            Some(CombinedLog::Default) => Some(home.logs().join(format!("{stem}.log"))),
            Some(CombinedLog::Path(p)) => in_cwd(Some(p.as_str())),
        };
        let (out_path, err_path) = match own_files {
            true => (with_id(&out_path, pm_id), with_id(&err_path, pm_id)),
            false => (out_path, err_path),
        };
        let log_path = match own_files {
            true => log_path.map(|p| with_id(&p, pm_id)),
            false => log_path,
        };
        let increment = match &spec.rare().increment_var {
            None => None,
            Some(var) => {
                let overlay = env_name
                    .as_ref()
                    .and_then(|n| spec.rare().env_overlays.get(n));
                let value = overlay
                    .and_then(|o| o.get(var))
                    .or_else(|| spec.env.get(var));
                let base = match value {
                    Some(v) => v.trim().parse::<i64>().map_err(|_| {
                        invalid(format!(
                            "option `increment_var`: env {var}={v} is not a number"
                        ))
                    })?,
                    None => 0,
                };
                Some((var.clone(), base + i64::from(slot.instance)))
            }
        };
        // A pid file given for several instances is one per instance, named
        // by pm_id as in PM2 (`echo.pid` -> `echo-0.pid`, `echo-1.pid`).
        let pid_file = match in_cwd(spec.rare().pid_file.as_deref()) {
            Some(p) if slot.cluster || slot.count > 1 => Some(with_id(&p, pm_id)),
            p => p,
        };
        // The daemon keeps removed pid files there under these names (the
        // default, `<name>-<pm_id>.pid`, is never one).
        if let Some(p) = &pid_file
            && p.file_name().and_then(spare_number).is_some()
            && let Some(dir) = p.parent()
            && (dir == home.pids()
                // However it is spelt (`..`, a link).
                || std::fs::canonicalize(dir).is_ok_and(|d| {
                    std::fs::canonicalize(home.pids()).is_ok_and(|h| h == d)
                }))
        {
            return Err(invalid(format!(
                "option `pid_file`: {} is a name the daemon keeps for itself (.spare-*)",
                p.display()
            )));
        }
        Ok(App {
            spec,
            exec_path,
            interpreter,
            cwd,
            out_path,
            err_path,
            pid_file,
            base_env,
            creds: creds.map(Box::new),
            shell,
            slot,
            options,
            rare: match (log_path, env_name, increment) {
                (None, None, None) => None,
                (log_path, env_name, increment) => Some(Box::new(AppRare {
                    log_path,
                    env_name,
                    increment,
                })),
            },
        })
    }

    /// Its pid file: the one given, or `<home>/pids/<name>-<pm_id>.pid`.
    pub fn pid_path(&self, home: &Home) -> PathBuf {
        match &self.pid_file {
            Some(p) => p.clone(),
            None => home.pids().join(format!(
                "{}-{}.pid",
                file_stem(&self.spec.name),
                self.slot.pm_id
            )),
        }
    }

    /// The combined stdout+stderr file (`log_file`), if any.
    pub fn log_path(&self) -> Option<&Path> {
        self.rare.as_ref()?.log_path.as_deref()
    }

    /// The `env_<name>` overlay in use, if any.
    pub fn env_name(&self) -> Option<&str> {
        self.rare.as_ref()?.env_name.as_deref()
    }

    /// Whose identity a file of this app is opened or written with: the
    /// app's user for any file outside the daemon's `logs/` and `pids/`
    /// (a directory that user may control, where a planted link must not
    /// lead the daemon anywhere that user could not go); the daemon's for
    /// its own directories and for apps that run as the daemon's user.
    pub fn file_user(&self, home: &Home, path: &Path) -> Option<crate::sys::FsUser> {
        let parent = path.parent()?;
        if parent == home.logs() || parent == home.pids() {
            return None;
        }
        self.creds.as_ref()?.fs_user()
    }

    /// The `env` keys shown in descriptions: `env` with the overlay on it.
    pub fn shown_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (k, v) in self.shown_env_pairs() {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }

    /// [`App::shown_env`] borrowed, in key order: `env` and the overlay
    /// merged as they are stored (the overlay's value wins), nothing copied.
    pub fn shown_env_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let overlay = self
            .env_name()
            .and_then(|n| self.spec.rare().env_overlays.get(n));
        merge_sorted(
            self.spec.env.iter(),
            overlay.into_iter().flat_map(|o| o.iter()),
        )
    }

    /// The full environment of a spawn (the man page's WHAT AN APP GETS),
    /// as `KEY=value` strings in key order: the caller's (less what belongs
    /// to its own manager), the app's `env`, then what corral sets. Built
    /// straight into the strings `execve` takes (this is on the way from
    /// an app's death to its restart).
    pub fn environment(&self, pm_id: u32, home: &Home, io: &Io) -> Result<Vec<CString>, WireError> {
        let mut own = self.shown_env();
        if let Some(c) = &self.creds {
            if let Some(h) = &c.home {
                own.insert("HOME".into(), h.clone());
            }
            if let Some(u) = &c.user {
                own.insert("USER".into(), u.clone());
                own.insert("LOGNAME".into(), u.clone());
            }
        }
        own.insert("pm_id".into(), pm_id.to_string());
        own.insert("name".into(), self.spec.name.clone());
        own.insert("namespace".into(), self.spec.namespace.clone().into_owned());
        own.insert(
            self.spec.instance_var.clone().into_owned(),
            self.slot.instance.to_string(),
        );
        if let Some((var, value)) = self.rare.as_ref().and_then(|r| r.increment.as_ref()) {
            own.insert(var.clone(), value.to_string());
        }
        own.insert("CORRAL_HOME".into(), home.dir.display().to_string());
        if io.channel.is_some() {
            let fd = spawn::channel_fd(io.listen.len());
            own.insert("NODE_CHANNEL_FD".into(), fd.to_string());
            own.insert("NODE_CHANNEL_SERIALIZATION_MODE".into(), "json".into());
        }
        if !io.listen.is_empty() {
            own.insert("LISTEN_FDS".into(), io.listen.len().to_string());
            let names: Vec<&str> = io.listen.iter().map(|(_, n)| n.as_str()).collect();
            own.insert("LISTEN_FDNAMES".into(), names.join(":"));
        }
        if let Some(id) = &io.cluster_id {
            own.insert("NODE_UNIQUE_ID".into(), id.clone());
        }
        if let Some(n) = &io.notify_socket {
            own.insert("NOTIFY_SOCKET".into(), n.display().to_string());
        }
        let daemon_env;
        let base: &BTreeMap<String, String> = match &self.base_env {
            Some(e) => e,
            None => {
                daemon_env = crate::sys::utf8_env().0;
                &daemon_env
            }
        };
        // What the caller had of these belongs to its own manager, not to
        // this app: a stale NODE_CHANNEL_FD would point at a wrong fd.
        let inherited = |k: &str| {
            (!k.starts_with("CORRAL_") || k == "CORRAL_HOME")
                && !INHERITED_NOT.contains(&k)
                && !k.starts_with("LISTEN_")
        };
        if self.interpreter_name() == "python3"
            && !own.contains_key("PYTHONUNBUFFERED")
            && !base.contains_key("PYTHONUNBUFFERED")
        {
            own.insert("PYTHONUNBUFFERED".into(), "1".into());
        }
        merge_sorted(base.iter().filter(|(k, _)| inherited(k)), own.iter())
            .map(|(k, v)| {
                let mut b = Vec::with_capacity(k.len() + v.len() + 2);
                b.extend_from_slice(k.as_bytes());
                b.push(b'=');
                b.extend_from_slice(v.as_bytes());
                CString::new(b)
                    .map_err(|_| invalid("an environment variable contains a NUL byte".into()))
            })
            .collect()
    }

    /// `pm_exec_path`: the script's path, or the command line run by sh.
    pub fn shown_exec_path(&self) -> Cow<'_, str> {
        if self.shell {
            Cow::Borrowed(&self.spec.script)
        } else {
            let p = &self.exec_path;
            p.to_str()
                .map_or_else(|| p.to_string_lossy(), Cow::Borrowed)
        }
    }

    /// `exec_interpreter` as PM2 shows it: the interpreter's file name, or
    /// `none`.
    pub fn interpreter_name(&self) -> Cow<'_, str> {
        if self.shell {
            return Cow::Borrowed("sh");
        }
        match &self.spec.interpreter {
            Some(i) => Path::new(i)
                .file_name()
                .map_or(Cow::Borrowed(i.as_str()), |f| f.to_string_lossy()),
            None => Cow::Borrowed("none"),
        }
    }

    pub fn is_node(&self) -> bool {
        self.interpreter_name().starts_with("node")
    }

    /// argv: interpreter, its args, the script, its args.
    pub fn argv(&self) -> Vec<String> {
        if self.shell {
            let sh = self.interpreter.as_ref().map(|i| i.display().to_string());
            let mut argv = vec![sh.unwrap_or_else(|| "sh".into()), "-c".into()];
            argv.push(self.spec.script.clone());
            if !self.spec.args.is_empty() {
                // $0, then the args as $1...
                argv.push("sh".into());
                argv.extend(self.spec.args.iter().cloned());
            }
            return argv;
        }
        let script = self.exec_path.display().to_string();
        let mut argv = Vec::new();
        if let Some(i) = &self.interpreter {
            argv.push(i.display().to_string());
            argv.extend(self.spec.rare().interpreter_args.iter().cloned());
            if self.is_node()
                && self.spec.rare().source_map_support
                && !self.spec.rare().disable_source_map_support
            {
                argv.push("--enable-source-maps".into());
            }
        }
        argv.push(script);
        argv.extend(self.spec.args.iter().cloned());
        argv
    }

    /// The command to spawn, with the given standard fds.
    pub fn command(&self, pm_id: u32, home: &Home, io: Io) -> Result<spawn::Command, WireError> {
        let cstr = |s: &[u8], what: &str| {
            CString::new(s).map_err(|_| invalid(format!("{what} contains a NUL byte")))
        };
        let path = self
            .interpreter
            .as_ref()
            .unwrap_or(&self.exec_path)
            .as_os_str()
            .as_bytes();
        let argv = self
            .argv()
            .iter()
            .map(|a| cstr(a.as_bytes(), "an argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut envp = self.environment(pm_id, home, &io)?;
        // LISTEN_PID is the exec'd process's pid: the child fills it in.
        let listen_pid_env = match io.listen.is_empty() {
            true => None,
            false => {
                envp.push(cstr(
                    spawn::LISTEN_PID_PLACEHOLDER.as_bytes(),
                    "LISTEN_PID",
                )?);
                Some(envp.len() - 1)
            }
        };
        let [stdin, stdout, stderr] = io.stdio;
        Ok(spawn::Command {
            path: cstr(path, "the program path")?,
            argv,
            envp,
            cwd: cstr(self.cwd.as_os_str().as_bytes(), "cwd")?,
            creds: self
                .creds
                .as_ref()
                .map(|c| (c.uid, c.gid, c.groups.clone())),
            stdin,
            stdout,
            stderr,
            listen: io.listen.iter().map(|(fd, _)| *fd).collect(),
            channel: io.channel,
            listen_pid_env,
            cgroup: None,
        })
    }
}

/// What resolving an app looks up outside its options: its directory,
/// its program and interpreter (on the filesystem or `PATH`), and its
/// user and group (`/etc/passwd`, `/etc/group`). A hand-over (`corral
/// update`) carries it, so the new image runs what the old one ran
/// without looking again.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub cwd: PathBuf,
    pub exec_path: PathBuf,
    pub interpreter: Option<PathBuf>,
    /// `script` is a command line run with `sh -c`.
    pub shell: bool,
    pub creds: Option<users::Credentials>,
}

impl Found {
    /// Look them up for `spec`: `base_env` is the caller's environment,
    /// if any; `daemon_root` whether `uid`/`gid` may be used.
    pub fn look(
        spec: &AppSpec,
        base_env: Option<&BTreeMap<String, String>>,
        daemon_root: bool,
    ) -> Result<Found, WireError> {
        // The daemon's directory only when the cwd given is relative (a
        // hand-over resolves a thousand absolute ones at once).
        let here = || std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let cwd = match &spec.cwd {
            Some(c) if Path::new(c).is_absolute() => PathBuf::from(c),
            Some(c) => here().join(c),
            None => here(),
        };
        if !cwd.is_dir() {
            return Err(invalid(format!(
                "option `cwd`: {} is not a directory",
                cwd.display()
            )));
        }
        let path_var = match &base_env {
            Some(env) => env.get("PATH").cloned(),
            None => std::env::var("PATH").ok(),
        };
        let path_var = spec.env.get("PATH").cloned().or(path_var);
        let in_cwd = cwd.join(&spec.script);
        // A script that is a whole command line runs through the shell, as
        // in PM2 ("node server.js --port 3000").
        let shell = spec.interpreter.is_none()
            && spec.script.contains(char::is_whitespace)
            && !in_cwd.exists();
        let exec_path = if in_cwd.is_file() || shell {
            in_cwd
        } else {
            match (spec.interpreter.is_some(), spec.script.contains('/')) {
                // An interpreter is given a file, never a PATH command.
                (true, _) | (false, true) => None,
                (false, false) => find_program(&spec.script, &cwd, path_var.as_deref()),
            }
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::ScriptNotFound,
                    format!(
                        "script {} not found (in {} or on PATH)",
                        spec.script,
                        cwd.display()
                    ),
                )
            })?
        };
        let find = |i: &str| find_program(i, &cwd, path_var.as_deref());
        let interpreter =
            match (&spec.interpreter, shell) {
                (None, false) => None,
                (None, true) => Some(find("sh").ok_or_else(|| {
                    invalid(format!("script `{}`: no sh on PATH to run it", spec.script))
                })?),
                // `.sh` means bash, or sh where there is no bash.
                (Some(i), _) if i == "bash" && spec.script.ends_with(".sh") => {
                    Some(find("bash").or_else(|| find("sh")).ok_or_else(|| {
                        invalid("option `interpreter`: neither bash nor sh is on PATH".into())
                    })?)
                }
                (Some(i), _) => Some(find(i).ok_or_else(|| {
                    invalid(format!("option `interpreter`: {i} not found on PATH"))
                })?),
            };
        let creds = match (&spec.rare().uid, &spec.rare().gid) {
            (None, None) => None,
            (user, group) => {
                if !daemon_root {
                    return Err(invalid(
                        "options `uid`/`gid` need the daemon to run as root".to_string(),
                    ));
                }
                let c = users::lookup(user.as_deref(), group.as_deref());
                Some(c.map_err(|e| invalid(format!("option `uid`/`gid`: {e}")))?)
            }
        };
        Ok(Found {
            cwd,
            exec_path,
            interpreter,
            shell,
            creds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_sorted_maps_the_overlay_winning() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // (base, overlay, merged)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (&[], &[]),
            (&[("A", "1")], &[]),
            (&[], &[("A", "1")]),
            (&[("A", "1"), ("C", "3")], &[("B", "2"), ("D", "4")]),
            (&[("A", "1"), ("B", "2")], &[("B", "x"), ("C", "3")]),
            (
                &[("B", "2"), ("Z", "9")],
                &[("A", "0"), ("B", "x"), ("Z", "y")],
            ),
        ];
        for (base, over) in cases {
            let (b, o) = (map(base), map(over));
            let mut want = b.clone();
            want.extend(o.clone());
            let got: BTreeMap<String, String> = merge_sorted(b.iter(), o.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let in_order: Vec<&str> = merge_sorted(b.iter(), o.iter()).map(|(k, _)| k).collect();
            assert_eq!(got, want, "{base:?} + {over:?}");
            assert_eq!(
                in_order.len(),
                want.len(),
                "{base:?} + {over:?}: a key twice"
            );
            assert!(in_order.windows(2).all(|w| w[0] < w[1]), "{in_order:?}");
        }
    }

    #[test]
    fn the_rare_fields_of_an_app_are_boxed_only_when_set() {
        let home = Home { dir: "/h".into() };
        // (options, env_name, log_path, increment value)
        type Case = (
            serde_json::Value,
            Option<&'static str>,
            Option<&'static str>,
            Option<i64>,
        );
        let cases: Vec<Case> = vec![
            (serde_json::json!({}), None, None, None),
            (
                serde_json::json!({"env_prod": {"A": "1"}}),
                Some("prod"),
                None,
                None,
            ),
            (
                serde_json::json!({"log_file": "/tmp/all.log"}),
                None,
                Some("/tmp/all.log"),
                None,
            ),
            (
                serde_json::json!({"increment_var": "PORT", "env": {"PORT": "80"}}),
                None,
                None,
                Some(82),
            ),
        ];
        for (i, (extra, env_name, log, inc)) in cases.into_iter().enumerate() {
            let mut options =
                serde_json::json!({"script": "/bin/sleep", "name": "s", "interpreter": "none"});
            for (k, v) in extra.as_object().unwrap() {
                options[k] = v.clone();
            }
            let spec = crate::options::parse_app(&options).unwrap().spec;
            let slot = Slot {
                pm_id: 2,
                instance: 2,
                count: 1,
                cluster: false,
            };
            let app = App::resolve(
                spec,
                &options,
                slot,
                &home,
                None,
                env_name.map(str::to_string),
                false,
            )
            .unwrap();
            assert_eq!(app.env_name(), env_name, "case {i}");
            assert_eq!(app.log_path(), log.map(Path::new), "case {i}");
            let got = app
                .rare
                .as_ref()
                .and_then(|r| r.increment.as_ref())
                .map(|x| x.1);
            assert_eq!(got, inc, "case {i}");
            assert_eq!(app.rare.is_some(), i > 0, "case {i}: boxed only when set");
            assert_eq!(
                app.pid_path(&home),
                Path::new("/h/pids/s-2.pid"),
                "case {i}"
            );
        }
        // A pid file given is kept; for several instances, one each.
        for (count, want) in [(1, "/tmp/s.pid"), (2, "/tmp/s-2.pid")] {
            let options = serde_json::json!({"script": "/bin/sleep", "name": "s",
                "interpreter": "none", "pid_file": "/tmp/s.pid"});
            let spec = crate::options::parse_app(&options).unwrap().spec;
            let slot = Slot {
                pm_id: 2,
                instance: 1,
                count,
                cluster: false,
            };
            let app = App::resolve(spec, &options, slot, &home, None, None, false).unwrap();
            assert_eq!(app.pid_path(&home), Path::new(want));
        }
    }
}
