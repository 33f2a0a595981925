//! App options: turning one app's JSON object (from a start request or a
//! config file) into a validated, coerced [`AppSpec`].
//!
//! This module owns the option table (canonical snake_case names, their
//! camelCase forms and explicit aliases, and whether each key is supported,
//! not supported yet, or accepted without effect), what an unknown key is
//! (within two edits of an option: a typo, refused with "did you mean";
//! else a custom key, accepted with a warning, as PM2 drops such keys), the
//! mode `instances` implies (PM2's rule: cluster for a Node app), the value
//! coercions (durations, sizes, signals, shell-like argument splitting) and
//! the shapes of a config file. It is pure: no filesystem, no environment,
//! no process.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Number, Value};

use crate::sys::Signal;

/// Longest app name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 256;
use crate::sys::MAX_SIGNAL;
/// Highest process exit code.
pub const MAX_EXIT_CODE: u64 = 255;
/// Highest TCP port.
pub const MAX_PORT: u64 = 65_535;

pub const DEFAULT_MIN_UPTIME_MS: u64 = 1000;
pub const DEFAULT_MAX_RESTARTS: u32 = 16;
pub const DEFAULT_KILL_TIMEOUT_MS: u64 = 1600;
pub const DEFAULT_KILL_SIGNAL: Signal = Signal::INT;
pub const DEFAULT_RESTART_DELAY_MS: u64 = 0;
/// Least time between two automatic starts of one app (systemd's
/// `RestartSec` default): a crash loop spawns at most ten times a second.
pub const DEFAULT_MIN_RESTART_INTERVAL_MS: u64 = 100;
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_WATCH_DELAY_MS: u64 = 1000;
pub const DEFAULT_LISTEN_TIMEOUT_MS: u64 = 3000;
pub const DEFAULT_INSTANCE_VAR: &str = "NODE_APP_INSTANCE";
/// The most instances of one app.
pub const MAX_INSTANCES: usize = 1024;
/// The target word meaning "every app"; no name or namespace may take it.
pub const ALL_TARGET: &str = "all";
/// The `log_date_format` that `time: true` selects.
pub const TIME_LOG_DATE_FORMAT: &str = "YYYY-MM-DDTHH:mm:ss";
/// The log path that discards output (`disable_logs: true`).
pub const DISCARD_LOG_PATH: &str = "/dev/null";
/// The `interpreter` value meaning "execute the script itself".
pub const NO_INTERPRETER: &str = "none";

/// Prefix of the environment overlay keys (`env_production`).
const ENV_OVERLAY_PREFIX: &str = "env_";
/// Longest rendering of an offending value inside an error message.
const MAX_SHOWN_CHARS: usize = 60;
/// Fraction digits kept when scaling a decimal (more cannot matter).
const MAX_FRACTION_DIGITS: usize = 18;

const MS_PER_SECOND: u64 = 1000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

const DURATION_EXPECTED: &str = "expected a duration (ms number or \"5s\")";
const SIZE_EXPECTED: &str = "expected a size (bytes number or \"100M\")";
const CONFIG_SHAPE_ERROR: &str =
    "config: expected an object with \"apps\", an array or an app object";

/// Interpreter chosen from the script's extension when none is given.
const EXTENSION_INTERPRETERS: &[(&str, &str)] = &[
    ("js", "node"),
    ("mjs", "node"),
    ("cjs", "node"),
    ("py", "python3"),
    ("sh", "bash"),
    ("rb", "ruby"),
    ("pl", "perl"),
    ("php", "php"),
];

/// Standard Linux signals by name (without the `SIG` prefix).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Other names for signals above, accepted on input only.
const SIGNAL_ALIASES: &[(&str, i32)] = &[
    ("IOT", libc::SIGABRT),
    ("POLL", libc::SIGIO),
    ("CLD", libc::SIGCHLD),
];

/// An app's options after validation and coercion; pure data, no filesystem access.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    pub name: String,
    pub script: String,
    pub args: Vec<String>,
    pub interpreter: Option<String>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    /// `/dev/null`, the usual value, borrowed (no heap block per app).
    pub output: Option<Cow<'static, str>>,
    pub error: Option<Cow<'static, str>>,
    pub autorestart: bool,
    pub autostart: bool,
    /// Borrowed when it is the default (no heap block per app).
    pub namespace: Cow<'static, str>,
    pub treekill: bool,
    /// Give the app an IPC channel (`NODE_CHANNEL_FD`).
    pub ipc: bool,
    /// Give the app a stdin pipe the daemon writes to (`send`), as PM2
    /// does; false: `/dev/null`.
    pub stdin: bool,
    /// The variable carrying the instance index (`NODE_APP_INSTANCE`).
    pub instance_var: Cow<'static, str>,
    /// The options most apps leave unset (`Rare`).
    pub rare: Rarely,
}

/// The options of an app most apps leave unset, apart from `AppSpec`:
/// held boxed only when one of them is set (a thousand apps would carry
/// some 300 bytes of empty fields each).
#[derive(Debug, Clone, PartialEq)]
pub struct Rare {
    pub interpreter_args: Vec<String>,
    pub env_overlays: BTreeMap<String, BTreeMap<String, String>>,
    pub log_date_format: Option<String>,
    pub pid_file: Option<String>,
    pub stop_exit_codes: Vec<i32>,
    /// Restart when the app's resident memory (its whole process group) is
    /// above this many bytes.
    pub max_memory_restart: Option<u64>,
    /// First delay of the exponential backoff (ms); none = off.
    pub exp_backoff_restart_delay: Option<u64>,
    /// `None`: the defaults (`node_modules`, `.git`, the log directory).
    pub ignore_watch: Option<Vec<String>>,
    /// A cron expression, checked by `cron::Cron::parse`.
    pub cron_restart: Option<String>,
    /// A variable of `env` incremented for each instance (`PORT`).
    pub increment_var: Option<String>,
    /// Addresses corral binds and passes to every instance (`listen.rs`).
    pub listen: Vec<String>,
    /// Rotate a log file before a write takes it past this many bytes;
    /// `None`: the daemon's default (`corral daemon --max-log-size`);
    /// `Some(0)`: never.
    pub max_log_size: Option<u64>,
    /// Rotated files kept (`.1` newest); `None`: the daemon's default.
    pub log_retain: Option<u32>,
    /// The combined stdout+stderr file (`log_file`), if any.
    pub log_file: Option<CombinedLog>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// Least time (ms) from one start of the app to an automatic restart
    /// after it died; 0 = none.
    pub min_restart_interval: u64,
    pub watch: Watch,
    pub watch_delay: u64,
    /// With `wait_ready`: how long to wait for it (ms).
    pub listen_timeout: u64,
    pub min_uptime: u64,
    pub max_restarts: u32,
    pub kill_timeout: u64,
    pub kill_signal: Signal,
    pub restart_delay: u64,
    pub force: bool,
    pub execute_command: bool,
    pub write: bool,
    pub source_map_support: bool,
    pub disable_source_map_support: bool,
    /// Online only once the app says it is ready.
    pub wait_ready: bool,
    /// Stop with the `shutdown` message instead of the kill signal.
    pub shutdown_with_message: bool,
    /// How many processes: > 0 that many; 0 one per CPU; < 0 CPUs minus
    /// that many (at least 1).
    pub instances: i64,
    /// `exec_mode`: cluster (true) or fork (false); `None` = fork.
    pub cluster: Option<bool>,
    /// All instances write the same two log files.
    pub merge_logs: bool,
    /// How lines are written to the files.
    pub log_type: LogType,
}

/// All of `Rare` unset.
static NO_RARE: Rare = Rare {
    interpreter_args: Vec::new(),
    env_overlays: BTreeMap::new(),
    log_date_format: None,
    pid_file: None,
    stop_exit_codes: Vec::new(),
    max_memory_restart: None,
    exp_backoff_restart_delay: None,
    ignore_watch: None,
    cron_restart: None,
    increment_var: None,
    listen: Vec::new(),
    max_log_size: None,
    log_retain: None,
    log_file: None,
    uid: None,
    gid: None,
    min_restart_interval: DEFAULT_MIN_RESTART_INTERVAL_MS,
    watch: Watch::Off,
    watch_delay: DEFAULT_WATCH_DELAY_MS,
    listen_timeout: DEFAULT_LISTEN_TIMEOUT_MS,
    min_uptime: DEFAULT_MIN_UPTIME_MS,
    max_restarts: DEFAULT_MAX_RESTARTS,
    kill_timeout: DEFAULT_KILL_TIMEOUT_MS,
    kill_signal: DEFAULT_KILL_SIGNAL,
    restart_delay: DEFAULT_RESTART_DELAY_MS,
    force: false,
    execute_command: false,
    write: false,
    source_map_support: false,
    disable_source_map_support: false,
    wait_ready: false,
    shutdown_with_message: false,
    instances: 1,
    cluster: None,
    merge_logs: false,
    log_type: LogType::Text,
};

impl Default for Rare {
    fn default() -> Rare {
        NO_RARE.clone()
    }
}

/// `Rare`, boxed when anything in it is set: equal when the options are.
#[derive(Clone, Default)]
pub struct Rarely(Option<Box<Rare>>);

impl Rarely {
    pub fn new(rare: Rare) -> Rarely {
        match rare == NO_RARE {
            true => Rarely(None),
            false => Rarely(Some(Box::new(rare))),
        }
    }

    #[inline]
    pub fn get(&self) -> &Rare {
        self.0.as_deref().unwrap_or(&NO_RARE)
    }

    /// To change: boxed now if it was not.
    pub fn get_mut(&mut self) -> &mut Rare {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for Rarely {
    fn eq(&self, other: &Rarely) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for Rarely {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl AppSpec {
    /// The options most apps leave unset.
    #[inline]
    pub fn rare(&self) -> &Rare {
        self.rare.get()
    }
}

/// `log_file`: `true` (`logs/<name>.log`) or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CombinedLog {
    Default,
    Path(String),
}

/// `log_type`: lines as written, or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogType {
    #[default]
    Text,
    Json,
}

/// The number of processes `instances` asks for on a machine of `cpus`.
pub fn instance_count(instances: i64, cpus: usize) -> usize {
    let cpus = cpus.max(1) as i64;
    let n = match instances {
        n if n > 0 => n,
        0 => cpus,
        n => cpus + n,
    };
    n.clamp(1, MAX_INSTANCES as i64) as usize
}

/// What `watch` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    Off,
    /// The app's cwd.
    Cwd,
    /// These paths (relative to the cwd).
    Paths(Vec<String>),
}

/// A parsed app and the warnings about keys accepted without effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub spec: AppSpec,
    pub warnings: Vec<String>,
}

/// `spec` with the options of `changes` laid over it (`restart` and
/// `reload` with flags, as PM2's `--watch`, `--node-args`,
/// `--max-memory-restart`...). Options that would make it another app
/// (`name`, `script`, `instances`...) are refused, or ignored when
/// `lenient` (a config file's app restarted: PM2 keeps those too). With
/// the keys of `changes` that were applied.
pub fn overlay(
    spec: &AppSpec,
    changes: &Map<String, Value>,
    lenient: bool,
) -> Result<(AppSpec, Vec<String>), OptionError> {
    let mut applied = Vec::new();
    let mut v = changes.clone();
    v.insert("script".into(), Value::String(spec.script.clone()));
    v.insert("name".into(), Value::String(spec.name.clone()));
    let new = parse_app(&Value::Object(v))?.spec;
    let mut out = spec.clone();
    for key in changes.keys() {
        let Some(def) = lookup(key) else {
            if let Some(n) = key.strip_prefix(ENV_OVERLAY_PREFIX)
                && let Some(o) = new.rare().env_overlays.get(n)
            {
                out.rare
                    .get_mut()
                    .env_overlays
                    .insert(n.to_string(), o.clone());
                applied.push(key.clone());
            }
            // Custom keys: parse_app warned about them already.
            continue;
        };
        applied.push(key.clone());
        match def.name {
            "args" => out.args = new.args.clone(),
            "interpreter_args" => {
                out.rare.get_mut().interpreter_args = new.rare().interpreter_args.clone()
            }
            "env" => out.env = new.env.clone(),
            "log_date_format" | "time" => {
                out.rare.get_mut().log_date_format = new.rare().log_date_format.clone()
            }
            "min_uptime" => out.rare.get_mut().min_uptime = new.rare().min_uptime,
            "max_restarts" => out.rare.get_mut().max_restarts = new.rare().max_restarts,
            "kill_timeout" => out.rare.get_mut().kill_timeout = new.rare().kill_timeout,
            "kill_signal" => out.rare.get_mut().kill_signal = new.rare().kill_signal,
            "restart_delay" => out.rare.get_mut().restart_delay = new.rare().restart_delay,
            "autorestart" => out.autorestart = new.autorestart,
            "stop_exit_codes" => {
                out.rare.get_mut().stop_exit_codes = new.rare().stop_exit_codes.clone()
            }
            "treekill" => out.treekill = new.treekill,
            "source_map_support" => {
                out.rare.get_mut().source_map_support = new.rare().source_map_support
            }
            "disable_source_map_support" => {
                out.rare.get_mut().disable_source_map_support =
                    new.rare().disable_source_map_support
            }
            "max_memory_restart" => {
                out.rare.get_mut().max_memory_restart = new.rare().max_memory_restart
            }
            "exp_backoff_restart_delay" => {
                out.rare.get_mut().exp_backoff_restart_delay = new.rare().exp_backoff_restart_delay
            }
            "watch" => out.rare.get_mut().watch = new.rare().watch.clone(),
            "ignore_watch" => out.rare.get_mut().ignore_watch = new.rare().ignore_watch.clone(),
            "watch_delay" => out.rare.get_mut().watch_delay = new.rare().watch_delay,
            "cron_restart" => out.rare.get_mut().cron_restart = new.rare().cron_restart.clone(),
            "wait_ready" => out.rare.get_mut().wait_ready = new.rare().wait_ready,
            "listen_timeout" => out.rare.get_mut().listen_timeout = new.rare().listen_timeout,
            "shutdown_with_message" => {
                out.rare.get_mut().shutdown_with_message = new.rare().shutdown_with_message
            }
            "output" => out.output = new.output.clone(),
            "error" => out.error = new.error.clone(),
            "pid_file" => out.rare.get_mut().pid_file = new.rare().pid_file.clone(),
            "interpreter" => out.interpreter = new.interpreter.clone(),
            "cwd" => out.cwd = new.cwd.clone(),
            "uid" => out.rare.get_mut().uid = new.rare().uid.clone(),
            "gid" => out.rare.get_mut().gid = new.rare().gid.clone(),
            "stdin" => out.stdin = new.stdin,
            "force" | "write" | "name" | "script" => {
                applied.pop();
            }
            _ if lenient => {
                applied.pop();
            }
            other => {
                return Err(OptionError::new(
                    key.as_str(),
                    format!(
                        "cannot be changed by a restart or reload (`{other}`); \
                         delete the app and start it again"
                    ),
                ));
            }
        }
    }
    Ok((out, applied))
}

/// The key that is wrong (as the user wrote it) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionError {
    pub key: String,
    pub message: String,
}

impl OptionError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        OptionError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "option `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for OptionError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Support {
    Yes,
    Later,
    NoEffect,
}

/// One option: its canonical snake_case name and explicit aliases. Every
/// name and alias is also accepted in camelCase.
struct OptionDef {
    name: &'static str,
    aliases: &'static [&'static str],
    support: Support,
}

/// Every option name and alias (the fuzz tests build apps from them).
#[cfg(test)]
pub(crate) fn known_keys() -> impl Iterator<Item = &'static str> {
    OPTIONS
        .iter()
        .flat_map(|o| std::iter::once(o.name).chain(o.aliases.iter().copied()))
}

const fn yes(name: &'static str, aliases: &'static [&'static str]) -> OptionDef {
    OptionDef {
        name,
        aliases,
        support: Support::Yes,
    }
}

const fn later(name: &'static str, aliases: &'static [&'static str]) -> OptionDef {
    OptionDef {
        name,
        aliases,
        support: Support::Later,
    }
}

const fn no_effect(name: &'static str) -> OptionDef {
    OptionDef {
        name,
        aliases: &[],
        support: Support::NoEffect,
    }
}

const OPTIONS: &[OptionDef] = &[
    yes("name", &[]),
    yes("script", &["exec", "cmd", "command"]),
    yes("args", &[]),
    yes("interpreter", &["exec_interpreter"]),
    yes("interpreter_args", &["node_args"]),
    yes("cwd", &[]),
    yes("env", &[]),
    yes("output", &["out_file", "out", "out_log"]),
    yes("error", &["error_file", "err", "err_file", "err_log"]),
    yes("log_date_format", &[]),
    yes("pid_file", &["pid"]),
    yes("min_uptime", &[]),
    yes("max_restarts", &[]),
    yes("kill_timeout", &[]),
    yes("kill_signal", &[]),
    yes("restart_delay", &[]),
    yes("autorestart", &[]),
    yes("autostart", &[]),
    yes("stop_exit_codes", &[]),
    yes("force", &[]),
    yes("namespace", &[]),
    yes("treekill", &[]),
    yes("uid", &["user"]),
    yes("gid", &[]),
    yes("execute_command", &[]),
    yes("write", &[]),
    yes("source_map_support", &[]),
    yes("disable_source_map_support", &[]),
    yes("port", &[]),
    yes("disable_logs", &[]),
    yes("time", &[]),
    yes("instances", &[]),
    yes("exec_mode", &[]),
    yes("merge_logs", &["combine_logs"]),
    yes("max_memory_restart", &[]),
    yes("exp_backoff_restart_delay", &[]),
    yes("min_restart_interval", &[]),
    yes("watch", &[]),
    yes("ignore_watch", &[]),
    yes("watch_delay", &[]),
    yes("cron_restart", &["cron"]),
    yes("wait_ready", &[]),
    yes("listen_timeout", &[]),
    yes("shutdown_with_message", &[]),
    yes("ipc", &[]),
    yes("stdin", &[]),
    yes("listen", &[]),
    yes("instance_var", &[]),
    yes("increment_var", &[]),
    yes("max_log_size", &[]),
    yes("log_retain", &[]),
    yes("log_file", &["log"]),
    yes("log_type", &[]),
    later("filter_env", &[]),
    later("append_env_to_name", &[]),
    no_effect("vizion"),
    no_effect("pmx"),
    no_effect("automation"),
    no_effect("windowsHide"),
    no_effect("kill_retry_time"),
    no_effect("v8"),
    no_effect("trace"),
    no_effect("disable_trace"),
    no_effect("event_loop_inspector"),
    no_effect("deep_monitoring"),
    no_effect("io"),
    no_effect("post_update"),
    no_effect("install_url"),
    no_effect("username"),
    no_effect("name_prefix"),
    no_effect("versioning"),
    no_effect("node_version"),
    // chokidar's own options: corral watches with inotify.
    no_effect("watch_options"),
];

/// `kill_timeout` -> `killTimeout`.
fn to_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper_next = false;
    for c in snake.chars() {
        if c == '_' {
            upper_next = true;
        } else if upper_next {
            out.push(c.to_ascii_uppercase());
            upper_next = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `key` is `snake` in camelCase (`to_camel`), without building
/// it: every key of every app is looked up (a thousand at a hand-over).
fn is_camel_of(key: &str, snake: &str) -> bool {
    let mut rest = key.bytes();
    let mut upper_next = false;
    for c in snake.bytes() {
        if c == b'_' {
            upper_next = true;
            continue;
        }
        let want = match upper_next {
            true => c.to_ascii_uppercase(),
            false => c,
        };
        upper_next = false;
        if rest.next() != Some(want) {
            return false;
        }
    }
    rest.next().is_none()
}

/// The option a key (as written) refers to, if any.
fn lookup(key: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|def| {
        std::iter::once(def.name)
            .chain(def.aliases.iter().copied())
            .any(|spelling| key == spelling || is_camel_of(key, spelling))
    })
}

/// Whether keys `a` and `b` (as written) name the same option: the same
/// key, or two spellings of one option (`killTimeout`, `kill_timeout`).
/// A key that is no option only matches itself.
pub fn same_option(a: &str, b: &str) -> bool {
    a == b
        || match (lookup(a), lookup(b)) {
            (Some(x), Some(y)) => std::ptr::eq(x, y),
            _ => false,
        }
}

/// Largest edit distance at which an unknown key is taken for a misspelt
/// option (an error) rather than a custom key (a warning).
pub const MAX_SUGGESTION_DISTANCE: usize = 2;

/// `killTimeout` -> `kill_timeout`.
fn to_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Edit distance counting an insertion, a deletion, a substitution or a
/// swap of two neighbours as one (optimal string alignment).
// A dynamic programme whose indexes are bounded by the lengths of the rows
// it allocates.
#[allow(clippy::indexing_slicing)]
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: two back (for swaps), one back, this one.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut prev, row);
    }
    prev[b.len()]
}

/// The option an unknown key is probably a misspelling of, in the key's
/// style (camelCase if it has a capital): within
/// [`MAX_SUGGESTION_DISTANCE`] edits, and at most a third of the longer
/// word changed, so that short custom keys (`foo`) are not taken for short
/// options (`io`).
fn nearest_option(key: &str) -> Option<String> {
    let snake_key = to_snake(key);
    let camel_style = key.chars().any(|c| c.is_ascii_uppercase());
    let mut best: Option<(usize, String)> = None;
    for def in OPTIONS {
        for spelling in std::iter::once(def.name).chain(def.aliases.iter().copied()) {
            let camel = to_camel(spelling);
            let styled = if camel_style { &camel } else { spelling };
            let candidates = [
                (edit_distance(key, spelling), spelling),
                (edit_distance(key, &camel), camel.as_str()),
                (edit_distance(&snake_key, spelling), styled),
            ];
            for (d, suggestion) in candidates {
                let longer = key.chars().count().max(suggestion.chars().count());
                if d <= MAX_SUGGESTION_DISTANCE
                    && 3 * d <= longer
                    && best.as_ref().is_none_or(|(bd, _)| d < *bd)
                {
                    best = Some((d, suggestion.to_string()));
                }
            }
        }
    }
    best.map(|(_, s)| s)
}

/// The options present in an app object, by canonical name, with the key
/// as the user wrote it.
struct Given<'a> {
    by_name: BTreeMap<&'static str, (&'a str, &'a Value)>,
}

impl<'a> Given<'a> {
    fn parse<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&'a str, &'a Value) -> Result<T, OptionError>,
    ) -> Result<Option<T>, OptionError> {
        debug_assert!(OPTIONS.iter().any(|d| d.name == name), "no option {name}");
        self.by_name
            .get(name)
            .map(|&(key, value)| parse(key, value))
            .transpose()
    }
}

/// Validate and coerce one app object.
pub fn parse_app(v: &Value) -> Result<Parsed, OptionError> {
    let Some(obj) = v.as_object() else {
        return Err(OptionError::new(
            "app",
            format!("expected an object, got {}", describe(v)),
        ));
    };
    let mut given = Given {
        by_name: BTreeMap::new(),
    };
    let mut env_overlays = BTreeMap::new();
    let mut warnings = Vec::new();
    for (key, value) in obj {
        if let Some(def) = lookup(key) {
            if let Some(&(earlier, _)) = given.by_name.get(def.name) {
                return Err(OptionError::new(
                    key.as_str(),
                    format!("given twice, as `{earlier}` and `{key}`"),
                ));
            }
            match def.support {
                Support::Yes => {}
                Support::Later => {
                    return Err(OptionError::new(key.as_str(), "is not supported yet"));
                }
                Support::NoEffect => {
                    warnings.push(format!("option `{key}` has no effect in corral"));
                }
            }
            given.by_name.insert(def.name, (key.as_str(), value));
        } else if let Some(overlay) = key
            .strip_prefix(ENV_OVERLAY_PREFIX)
            .filter(|rest| !rest.is_empty())
        {
            env_overlays.insert(overlay.to_string(), env_map(key, value)?);
        } else if let Some(near) = nearest_option(key) {
            return Err(OptionError::new(
                key.as_str(),
                format!("unknown option; did you mean `{near}`?"),
            ));
        } else {
            // As PM2, which drops keys it does not know: configs carry
            // custom keys for other tools.
            warnings.push(format!("option `{key}` is unknown; ignored"));
        }
    }
    let spec = build_spec(&given, env_overlays)?;
    Ok(Parsed { spec, warnings })
}

fn build_spec(
    given: &Given<'_>,
    env_overlays: BTreeMap<String, BTreeMap<String, String>>,
) -> Result<AppSpec, OptionError> {
    let script = given
        .parse("script", |k, v| {
            let s = string(k, v)?;
            if s.trim().is_empty() {
                return Err(OptionError::new(k, "is required"));
            }
            Ok(s)
        })?
        .ok_or_else(|| OptionError::new("script", "is required"))?;
    let name = match given.parse("name", |k, v| {
        let s = string(k, v)?;
        check_name(k, &s).map(|()| s)
    })? {
        Some(name) => name,
        None => {
            let derived = default_name(&script);
            check_name("name", &derived).map_err(|e| {
                OptionError::new(
                    "name",
                    format!(
                        "{} (derived from `script` {}); give a `name`",
                        e.message,
                        describe(&Value::String(script.clone()))
                    ),
                )
            })?;
            derived
        }
    };
    let interpreter = match given.parse("interpreter", nonempty_string)? {
        Some(s) if s == NO_INTERPRETER => None,
        Some(s) => Some(s),
        None => interpreter_for(&script),
    };
    let instances = given.parse("instances", instances)?;
    let cluster = match given.parse("exec_mode", exec_mode)? {
        Some(cluster) => Some(cluster),
        // As PM2: `instances` without `exec_mode` is cluster mode for a
        // Node (or Bun) app, fork mode for anything else.
        None if instances.is_some() => Some(interpreter.as_deref().is_some_and(is_node_like)),
        None => None,
    };
    let mut env = given.parse("env", env_map)?.unwrap_or_default();
    if let Some(port) = given.parse("port", port)? {
        env.entry("PORT".to_string()).or_insert(port);
    }
    let discard_borrowed = |p: String| match p == DISCARD_LOG_PATH {
        true => Cow::Borrowed(DISCARD_LOG_PATH),
        false => Cow::Owned(p),
    };
    let mut output = given
        .parse("output", nonempty_string)?
        .map(discard_borrowed);
    let mut error = given.parse("error", nonempty_string)?.map(discard_borrowed);
    let disabled = given.parse("disable_logs", boolean)? == Some(true);
    if disabled {
        output = Some(Cow::Borrowed(DISCARD_LOG_PATH));
        error = Some(Cow::Borrowed(DISCARD_LOG_PATH));
    }
    let mut log_date_format = given.parse("log_date_format", nonempty_string)?;
    if given.parse("time", boolean)? == Some(true) && log_date_format.is_none() {
        log_date_format = Some(TIME_LOG_DATE_FORMAT.to_string());
    }
    Ok(AppSpec {
        name,
        script,
        args: given.parse("args", word_list)?.unwrap_or_default(),
        interpreter,
        cwd: given.parse("cwd", nonempty_string)?,
        env,
        output,
        error,
        autorestart: given.parse("autorestart", boolean)?.unwrap_or(true),
        autostart: given.parse("autostart", boolean)?.unwrap_or(true),
        namespace: given
            .parse("namespace", namespace)?
            .map_or(Cow::Borrowed(DEFAULT_NAMESPACE), Cow::Owned),
        treekill: given.parse("treekill", boolean)?.unwrap_or(true),
        ipc: given.parse("ipc", boolean)?.unwrap_or(true),
        stdin: given.parse("stdin", boolean)?.unwrap_or(true),
        instance_var: given
            .parse("instance_var", env_name_string)?
            .map_or(Cow::Borrowed(DEFAULT_INSTANCE_VAR), Cow::Owned),
        rare: Rarely::new(Rare {
            min_uptime: given
                .parse("min_uptime", duration)?
                .unwrap_or(DEFAULT_MIN_UPTIME_MS),
            max_restarts: given
                .parse("max_restarts", count)?
                .unwrap_or(DEFAULT_MAX_RESTARTS),
            kill_timeout: given
                .parse("kill_timeout", duration)?
                .unwrap_or(DEFAULT_KILL_TIMEOUT_MS),
            kill_signal: given
                .parse("kill_signal", signal)?
                .unwrap_or(DEFAULT_KILL_SIGNAL),
            restart_delay: given
                .parse("restart_delay", duration)?
                .unwrap_or(DEFAULT_RESTART_DELAY_MS),
            force: given.parse("force", boolean)?.unwrap_or(false),
            execute_command: given.parse("execute_command", boolean)?.unwrap_or(false),
            write: given.parse("write", boolean)?.unwrap_or(false),
            source_map_support: given.parse("source_map_support", boolean)?.unwrap_or(false),
            disable_source_map_support: given
                .parse("disable_source_map_support", boolean)?
                .unwrap_or(false),
            wait_ready: given.parse("wait_ready", boolean)?.unwrap_or(false),
            shutdown_with_message: given
                .parse("shutdown_with_message", boolean)?
                .unwrap_or(false),
            instances: instances.unwrap_or(1),
            cluster,
            merge_logs: given.parse("merge_logs", boolean)?.unwrap_or(false),
            log_type: given.parse("log_type", log_type)?.unwrap_or_default(),
            uid: given.parse("uid", id)?,
            gid: given.parse("gid", id)?,
            min_restart_interval: given
                .parse("min_restart_interval", duration)?
                .unwrap_or(DEFAULT_MIN_RESTART_INTERVAL_MS),
            watch: given.parse("watch", watch)?.unwrap_or(Watch::Off),
            watch_delay: given
                .parse("watch_delay", duration)?
                .unwrap_or(DEFAULT_WATCH_DELAY_MS),
            listen_timeout: given
                .parse("listen_timeout", duration)?
                .unwrap_or(DEFAULT_LISTEN_TIMEOUT_MS),
            interpreter_args: given
                .parse("interpreter_args", word_list)?
                .unwrap_or_default(),
            env_overlays,
            log_date_format,
            pid_file: given.parse("pid_file", nonempty_string)?,
            stop_exit_codes: given
                .parse("stop_exit_codes", exit_codes)?
                .unwrap_or_default(),
            max_memory_restart: given.parse("max_memory_restart", size)?.filter(|&n| n > 0),
            exp_backoff_restart_delay: given
                .parse("exp_backoff_restart_delay", duration)?
                .filter(|&n| n > 0),
            ignore_watch: given.parse("ignore_watch", string_list)?,
            cron_restart: given.parse("cron_restart", cron)?.flatten(),
            increment_var: given.parse("increment_var", env_name_string)?,
            listen: given.parse("listen", listen_list)?.unwrap_or_default(),
            max_log_size: given.parse("max_log_size", size)?,
            log_retain: given.parse("log_retain", count)?,
            log_file: if disabled {
                None
            } else {
                given.parse("log_file", combined_log)?.flatten()
            },
        }),
    })
}

/// `log_file`: a boolean (`true`: the default path) or a path.
fn combined_log(key: &str, v: &Value) -> Result<Option<CombinedLog>, OptionError> {
    match v {
        Value::Bool(true) => Ok(Some(CombinedLog::Default)),
        Value::Bool(false) => Ok(None),
        Value::String(s) if s == "true" => Ok(Some(CombinedLog::Default)),
        Value::String(s) if s == "false" => Ok(None),
        _ => nonempty_string(key, v).map(|p| Some(CombinedLog::Path(p))),
    }
}

/// `log_type`: `json`, or `text` (PM2 writes text for any other word, but
/// a typo should not go unnoticed).
fn log_type(key: &str, v: &Value) -> Result<LogType, OptionError> {
    match v.as_str() {
        Some("json") => Ok(LogType::Json),
        Some("text" | "raw" | "") => Ok(LogType::Text),
        _ => Err(OptionError::new(
            key,
            format!("expected \"json\" or \"text\", got {}", describe(v)),
        )),
    }
}

/// One address or an array of them, each checked by `listen::parse`.
fn listen_list(key: &str, v: &Value) -> Result<Vec<String>, OptionError> {
    let list = match v {
        Value::Number(_) => vec![v.to_string()],
        _ => string_list(key, v)?,
    };
    for a in &list {
        crate::listen::parse(a).map_err(|e| OptionError::new(key, e))?;
    }
    Ok(list)
}

/// A number, `"max"` (one per CPU) or a numeric string.
fn instances(key: &str, v: &Value) -> Result<i64, OptionError> {
    if v.as_str() == Some("max") {
        return Ok(0);
    }
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n.unsigned_abs() as usize <= MAX_INSTANCES => Ok(n),
        Some(_) => Err(OptionError::new(
            key,
            format!("at most {MAX_INSTANCES} instances"),
        )),
        None => Err(OptionError::new(
            key,
            format!("expected a number or \"max\", got {}", describe(v)),
        )),
    }
}

/// Whether an interpreter runs Node's cluster protocol: its file name ends
/// in `node` or `bun`, as PM2 checks.
fn is_node_like(interpreter: &str) -> bool {
    let base = interpreter.rsplit('/').next().unwrap_or(interpreter);
    base.ends_with("node") || base.ends_with("bun")
}

/// `fork`/`fork_mode` (false) or `cluster`/`cluster_mode` (true).
fn exec_mode(key: &str, v: &Value) -> Result<bool, OptionError> {
    match v.as_str() {
        Some("fork" | "fork_mode") => Ok(false),
        Some("cluster" | "cluster_mode") => Ok(true),
        _ => Err(OptionError::new(
            key,
            format!("expected fork or cluster, got {}", describe(v)),
        )),
    }
}

/// The name of an environment variable.
fn env_name_string(key: &str, v: &Value) -> Result<String, OptionError> {
    let s = nonempty_string(key, v)?;
    if s.contains('=') {
        return Err(OptionError::new(key, "must not contain `=`"));
    }
    Ok(s)
}

fn size(key: &str, v: &Value) -> Result<u64, OptionError> {
    parse_size(v).map_err(|e| OptionError::new(key, e))
}

/// `true` (the cwd), `false`, a path, or an array of paths.
fn watch(key: &str, v: &Value) -> Result<Watch, OptionError> {
    match v {
        Value::Bool(true) => Ok(Watch::Cwd),
        Value::Bool(false) => Ok(Watch::Off),
        Value::String(s) if s == "true" => Ok(Watch::Cwd),
        Value::String(s) if s == "false" => Ok(Watch::Off),
        Value::Array(a) if a.is_empty() => Ok(Watch::Off),
        _ => string_list(key, v).map(Watch::Paths),
    }
}

/// A non-empty string, or an array of them.
fn string_list(key: &str, v: &Value) -> Result<Vec<String>, OptionError> {
    let one = |k: &str, v: &Value| nonempty_string(k, v);
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| one(&format!("{key}[{i}]"), item))
            .collect(),
        Value::String(_) => one(key, v).map(|s| vec![s]),
        other => Err(OptionError::new(
            key,
            format!(
                "expected a string or an array of strings, got {}",
                describe(other)
            ),
        )),
    }
}

/// A cron expression; `0`, `"0"` and `""` mean none, as in PM2.
fn cron(key: &str, v: &Value) -> Result<Option<String>, OptionError> {
    match v {
        Value::Number(_) if whole(v) == Some(0) => Ok(None),
        Value::String(s) if s.trim().is_empty() || s.trim() == "0" => Ok(None),
        Value::String(s) => {
            crate::cron::Cron::parse(s).map_err(|e| OptionError::new(key, e))?;
            Ok(Some(s.trim().to_string()))
        }
        other => Err(OptionError::new(
            key,
            format!("expected a cron expression, got {}", describe(other)),
        )),
    }
}

/// Default name: the script's file name without its last extension. A
/// script with whitespace is a command line (PM2 runs it through a shell),
/// named by its first word's stem (`python3 -m http.server` -> `python3`).
fn default_name(script: &str) -> String {
    let script = script.split_ascii_whitespace().next().unwrap_or_default();
    Path::new(script)
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| script.to_string())
}

/// Interpreter from the script's extension; none for a command line.
fn interpreter_for(script: &str) -> Option<String> {
    if script.trim().chars().any(|c| c.is_ascii_whitespace()) {
        return None;
    }
    let ext = Path::new(script).extension()?.to_str()?;
    EXTENSION_INTERPRETERS
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map(|(_, interpreter)| interpreter.to_string())
}

fn check_name(key: &str, name: &str) -> Result<(), OptionError> {
    let problem = if name.is_empty() {
        "must not be empty".to_string()
    } else if name.len() > MAX_NAME_LEN {
        format!("is longer than {MAX_NAME_LEN} bytes")
    } else if name == ALL_TARGET {
        format!("must not be \"{ALL_TARGET}\" (it means every app)")
    } else if name.bytes().all(|b| b.is_ascii_digit()) {
        "must not be all digits (it would be taken for a pm_id)".to_string()
    } else if name.contains('/') {
        "must not contain `/` (names make file names)".to_string()
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        format!(
            "must not contain control characters (found {})",
            c.escape_default()
        )
    } else {
        return Ok(());
    };
    Err(OptionError::new(key, problem))
}

fn namespace(key: &str, v: &Value) -> Result<String, OptionError> {
    let s = nonempty_string(key, v)?;
    if s.len() > MAX_NAMESPACE_LEN {
        Err(OptionError::new(
            key,
            format!("is longer than {MAX_NAMESPACE_LEN} bytes"),
        ))
    } else if s == ALL_TARGET {
        Err(OptionError::new(
            key,
            format!("must not be \"{ALL_TARGET}\" (it means every app)"),
        ))
    } else {
        Ok(s)
    }
}

/// A JSON value rendered for an error message, shortened when long.
fn describe(v: &Value) -> String {
    match v {
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        other => {
            let text = other.to_string();
            if text.chars().count() > MAX_SHOWN_CHARS {
                let mut short: String = text.chars().take(MAX_SHOWN_CHARS).collect();
                short.push_str("...");
                short
            } else {
                text
            }
        }
    }
}

fn no_nul(key: &str, s: &str) -> Result<(), OptionError> {
    if s.contains('\0') {
        Err(OptionError::new(key, "must not contain a NUL byte"))
    } else {
        Ok(())
    }
}

fn string(key: &str, v: &Value) -> Result<String, OptionError> {
    match v {
        Value::String(s) => no_nul(key, s).map(|()| s.clone()),
        other => Err(OptionError::new(
            key,
            format!("expected a string, got {}", describe(other)),
        )),
    }
}

fn nonempty_string(key: &str, v: &Value) -> Result<String, OptionError> {
    let s = string(key, v)?;
    if s.is_empty() {
        Err(OptionError::new(key, "must not be empty"))
    } else {
        Ok(s)
    }
}

fn boolean(key: &str, v: &Value) -> Result<bool, OptionError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        other => Err(OptionError::new(
            key,
            format!("expected a boolean, got {}", describe(other)),
        )),
    }
}

/// A float that is a non-negative whole number fitting u64.
fn whole_f64(f: f64) -> Option<u64> {
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64).then_some(f as u64)
}

/// A JSON number that is a non-negative whole number fitting u64.
fn whole_number(n: &Number) -> Option<u64> {
    n.as_u64().or_else(|| n.as_f64().and_then(whole_f64))
}

/// A non-negative whole number given as a JSON number or a numeric string.
fn whole(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => whole_number(n),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<u64>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().and_then(whole_f64))
        }
        _ => None,
    }
}

fn count(key: &str, v: &Value) -> Result<u32, OptionError> {
    whole(v).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
        OptionError::new(
            key,
            format!("expected a non-negative integer, got {}", describe(v)),
        )
    })
}

fn duration(key: &str, v: &Value) -> Result<u64, OptionError> {
    parse_duration(v).map_err(|message| OptionError::new(key, message))
}

fn signal(key: &str, v: &Value) -> Result<Signal, OptionError> {
    parse_signal(v).map_err(|message| OptionError::new(key, message))
}

fn exit_code(key: &str, v: &Value) -> Result<i32, OptionError> {
    whole(v)
        .filter(|&n| n <= MAX_EXIT_CODE)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| {
            OptionError::new(
                key,
                format!(
                    "expected an exit code 0..={MAX_EXIT_CODE}, got {}",
                    describe(v)
                ),
            )
        })
}

fn exit_codes(key: &str, v: &Value) -> Result<Vec<i32>, OptionError> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| exit_code(&format!("{key}[{i}]"), item))
            .collect(),
        other => exit_code(key, other).map(|code| vec![code]),
    }
}

/// A user or group: a name, or a numeric id kept as its decimal string.
fn id(key: &str, v: &Value) -> Result<String, OptionError> {
    match v {
        Value::String(_) => nonempty_string(key, v),
        Value::Number(n) => whole_number(n).map(|n| n.to_string()).ok_or_else(|| {
            OptionError::new(
                key,
                format!("expected a non-negative integer id, got {}", describe(v)),
            )
        }),
        other => Err(OptionError::new(
            key,
            format!("expected a name or a numeric id, got {}", describe(other)),
        )),
    }
}

fn port(key: &str, v: &Value) -> Result<String, OptionError> {
    whole(v)
        .filter(|&n| n <= MAX_PORT)
        .map(|n| n.to_string())
        .ok_or_else(|| {
            OptionError::new(
                key,
                format!("expected a port number 0..={MAX_PORT}, got {}", describe(v)),
            )
        })
}

/// `args`-like options: a shell-split string, or an array of strings/numbers.
fn word_list(key: &str, v: &Value) -> Result<Vec<String>, OptionError> {
    match v {
        Value::String(s) => {
            no_nul(key, s)?;
            split_args(s)
                .map_err(|e| OptionError::new(key, format!("cannot split {}: {e}", describe(v))))
        }
        // `args: 3000` in YAML or JavaScript: one word.
        Value::Number(n) => Ok(vec![n.to_string()]),
        Value::Array(items) => {
            // Kept for the app's life: room for these words only.
            let mut words = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_key = format!("{key}[{i}]");
                words.push(match item {
                    Value::String(s) => no_nul(&item_key, s).map(|()| s.clone())?,
                    Value::Number(n) => n.to_string(),
                    other => {
                        return Err(OptionError::new(
                            item_key,
                            format!("expected a string or number, got {}", describe(other)),
                        ));
                    }
                });
            }
            Ok(words)
        }
        other => Err(OptionError::new(
            key,
            format!(
                "expected a string or an array of strings, got {}",
                describe(other)
            ),
        )),
    }
}

/// `env` and `env_<name>`: an object of strings, numbers or booleans.
fn env_map(key: &str, v: &Value) -> Result<BTreeMap<String, String>, OptionError> {
    let Value::Object(vars) = v else {
        return Err(OptionError::new(
            key,
            format!("expected an object, got {}", describe(v)),
        ));
    };
    let mut env = BTreeMap::new();
    for (var, value) in vars {
        let var_key = format!("{key}.{var}");
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            return Err(OptionError::new(
                var_key,
                "is not a valid variable name (empty, or contains '=' or NUL)",
            ));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(OptionError::new(
                    var_key,
                    format!(
                        "expected a string, number or boolean, got {}",
                        describe(other)
                    ),
                ));
            }
        };
        no_nul(&var_key, &text)?;
        env.insert(var.clone(), text);
    }
    Ok(env)
}

/// Split `"1.5s"` into `("1.5", "s")`; the unit may follow a space.
fn split_unit(s: &str) -> (&str, &str) {
    let s = s.trim();
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..at], s[at..].trim_start())
}

/// An unsigned decimal ("12", "1.5", ".5") times `unit`, rounded to the
/// nearest whole; None when malformed or too large.
fn scaled_decimal(text: &str, unit: u64) -> Option<u64> {
    let (int_part, frac_part) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty()) || !digits(int_part) || !digits(frac_part) {
        return None;
    }
    let int: u64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let frac_digits = &frac_part[..frac_part.len().min(MAX_FRACTION_DIGITS)];
    let frac = if frac_digits.is_empty() {
        0
    } else {
        let numerator: u128 = frac_digits.parse().ok()?;
        let denominator = 10u128.pow(u32::try_from(frac_digits.len()).ok()?);
        let rounded = (2 * numerator * u128::from(unit) + denominator) / (2 * denominator);
        u64::try_from(rounded).ok()?
    };
    int.checked_mul(unit)?.checked_add(frac)
}

/// Milliseconds: a non-negative integer number, or a string "500", "500ms",
/// "5s", "2m", "1h" (also fractional like "1.5s" -> 1500, rounded to the
/// nearest ms). Negative, NaN, empty, unknown unit -> Err(message).
pub fn parse_duration(v: &Value) -> Result<u64, String> {
    let bad = || format!("{DURATION_EXPECTED}, got {}", describe(v));
    match v {
        Value::Number(n) => whole_number(n).ok_or_else(bad),
        Value::String(s) => {
            let (number, unit) = split_unit(s);
            let scale = match unit.to_ascii_lowercase().as_str() {
                "" | "ms" => 1,
                "s" => MS_PER_SECOND,
                "m" => MS_PER_MINUTE,
                "h" => MS_PER_HOUR,
                _ => return Err(bad()),
            };
            scaled_decimal(number, scale).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// Bytes: a non-negative integer, or "512", "512K", "100M", "1G" (also
/// lowercase, with a trailing "B", and fractional like "1.5K"), powers of 1024.
pub fn parse_size(v: &Value) -> Result<u64, String> {
    let bad = || format!("{SIZE_EXPECTED}, got {}", describe(v));
    match v {
        Value::Number(n) => whole_number(n).ok_or_else(bad),
        Value::String(s) => {
            let (number, unit) = split_unit(s);
            let scale = match unit.to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" => KIB,
                "m" | "mb" => MIB,
                "g" | "gb" => GIB,
                _ => return Err(bad()),
            };
            scaled_decimal(number, scale).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// Split a string into words as a POSIX shell would: whitespace separates,
/// single quotes are literal, double quotes allow backslash escapes of
/// `"` `\` `$` `` ` `` (and line continuation), a backslash outside quotes
/// escapes the next character. No expansion of any kind.
pub fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".to_string()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".to_string()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("trailing backslash escapes nothing".to_string()),
            },
            c if c.is_ascii_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn signal_number(n: u64) -> Option<i32> {
    i32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_SIGNAL).contains(n))
}

/// "SIGINT", "INT", "sigint", "2" or a JSON number 2 -> SIGINT. Numbers
/// 1..=64.
pub fn parse_signal(v: &Value) -> Result<Signal, String> {
    parse_signal_number(v).and_then(|n| Signal::new(n).ok_or_else(|| format!("no signal {n}")))
}

fn parse_signal_number(v: &Value) -> Result<i32, String> {
    let out_of_range = || {
        format!(
            "signal number {} is out of range 1..={MAX_SIGNAL}",
            describe(v)
        )
    };
    match v {
        Value::Number(n) => whole_number(n)
            .and_then(signal_number)
            .ok_or_else(out_of_range),
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                return t
                    .parse::<u64>()
                    .ok()
                    .and_then(signal_number)
                    .ok_or_else(out_of_range);
            }
            let upper = t.to_ascii_uppercase();
            let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
            SIGNALS
                .iter()
                .chain(SIGNAL_ALIASES)
                .find(|(name, _)| *name == bare)
                .map(|&(_, number)| number)
                .ok_or_else(|| format!("unknown signal {}", describe(v)))
        }
        other => Err(format!(
            "expected a signal name or number, got {}",
            describe(other)
        )),
    }
}

/// The name of a signal number, "SIGINT" for 2; "SIG<n>" for unnamed ones.
pub fn signal_name(n: i32) -> String {
    match signal_short_name(n) {
        Some(name) => format!("SIG{name}"),
        None => format!("SIG{n}"),
    }
}

/// The name of a signal number without its `SIG`: "INT" for 2; `None`
/// for unnamed ones.
pub fn signal_short_name(n: i32) -> Option<&'static str> {
    SIGNALS
        .iter()
        .find(|&&(_, number)| number == n)
        .map(|&(name, _)| name)
}

/// The apps of a config file's value: `{"apps":[...]}` (or `{"pm2":[...]}`;
/// other top-level keys such as `deploy` are ignored), a bare array, or one
/// app object. The apps are returned unvalidated, for [`parse_app`].
pub fn apps_of_config(root: Value) -> Result<Vec<Value>, String> {
    let (label, apps) = match root {
        Value::Array(items) => ("apps", items),
        Value::Object(mut map) => {
            if map.contains_key("apps") && map.contains_key("pm2") {
                return Err("config: both \"apps\" and \"pm2\" given".to_string());
            }
            let Some(label) = ["apps", "pm2"].into_iter().find(|k| map.contains_key(*k)) else {
                return Ok(vec![Value::Object(map)]);
            };
            match map.remove(label) {
                Some(Value::Array(items)) => (label, items),
                _ => return Err(format!("config: \"{label}\" is not an array")),
            }
        }
        _ => return Err(CONFIG_SHAPE_ERROR.to_string()),
    };
    if apps.is_empty() {
        return Err("config: no apps".to_string());
    }
    if let Some(i) = apps.iter().position(|app| !app.is_object()) {
        return Err(format!("config: {label}[{i}] is not an object"));
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What `{"script": "app.js"}` parses to.
    fn base() -> AppSpec {
        AppSpec {
            name: "app".to_string(),
            script: "app.js".to_string(),
            args: vec![],
            interpreter: Some("node".to_string()),
            cwd: None,
            env: BTreeMap::new(),
            output: None,
            error: None,
            autorestart: true,
            autostart: true,
            namespace: "default".into(),
            treekill: true,
            ipc: true,
            stdin: true,
            instance_var: DEFAULT_INSTANCE_VAR.into(),
            rare: Rarely::default(),
        }
    }

    /// `{"script": "app.js"}` plus `extra`.
    fn app_with(extra: Value) -> Value {
        let mut app = json!({"script": "app.js"});
        if let (Some(obj), Value::Object(more)) = (app.as_object_mut(), extra) {
            obj.extend(more);
        }
        app
    }

    #[test]
    fn durations() {
        let cases: &[(Value, Option<u64>)] = &[
            (json!(0), Some(0)),
            (json!(1500), Some(1500)),
            (json!(1500.0), Some(1500)),
            (json!("500"), Some(500)),
            (json!("500ms"), Some(500)),
            (json!("5s"), Some(5000)),
            (json!("2m"), Some(120_000)),
            (json!("1h"), Some(3_600_000)),
            (json!("1.5s"), Some(1500)),
            (json!(".5s"), Some(500)),
            (json!("0.5ms"), Some(1)),
            (json!("1.25m"), Some(75_000)),
            (json!(" 5s "), Some(5000)),
            (json!("5 s"), Some(5000)),
            (json!("5S"), Some(5000)),
            (json!(-1), None),
            (json!(1.5), None),
            (json!("-5"), None),
            (json!("-5s"), None),
            (json!(""), None),
            (json!("s"), None),
            (json!("."), None),
            (json!("abc"), None),
            (json!("NaN"), None),
            (json!("5x"), None),
            (json!("5d"), None),
            (json!("1.2.3s"), None),
            (json!("99999999999999999999h"), None),
            (json!(true), None),
            (json!(null), None),
            (json!([5]), None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_duration(input).ok(), *expected, "input {input}");
        }
        assert_eq!(
            parse_duration(&json!("abc")),
            Err("expected a duration (ms number or \"5s\"), got \"abc\"".to_string())
        );
    }

    #[test]
    fn sizes() {
        let cases: &[(Value, Option<u64>)] = &[
            (json!(0), Some(0)),
            (json!(512), Some(512)),
            (json!("512"), Some(512)),
            (json!("512B"), Some(512)),
            (json!("512K"), Some(512 * 1024)),
            (json!("512k"), Some(512 * 1024)),
            (json!("512KB"), Some(512 * 1024)),
            (json!("100M"), Some(100 * 1024 * 1024)),
            (json!("100mb"), Some(100 * 1024 * 1024)),
            (json!("1G"), Some(1 << 30)),
            (json!("1GB"), Some(1 << 30)),
            (json!("1.5K"), Some(1536)),
            (json!(-1), None),
            (json!("-1K"), None),
            (json!("1T"), None),
            (json!(""), None),
            (json!("M"), None),
            (json!("12Q"), None),
            (json!(false), None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_size(input).ok(), *expected, "input {input}");
        }
    }

    #[test]
    fn splitting_args() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            ("", Ok(&[])),
            ("   ", Ok(&[])),
            ("a", Ok(&["a"])),
            ("  a  b\tc\n", Ok(&["a", "b", "c"])),
            ("a 'b c'", Ok(&["a", "b c"])),
            ("\"a b\" c", Ok(&["a b", "c"])),
            ("--x=\"1 2\"", Ok(&["--x=1 2"])),
            ("'it'\"'\"'s'", Ok(&["it's"])),
            ("a\\ b", Ok(&["a b"])),
            ("\\'x", Ok(&["'x"])),
            ("\"x\\\"y\"", Ok(&["x\"y"])),
            ("\"\\$HOME \\` \\\\\"", Ok(&["$HOME ` \\"])),
            ("\"a\\nb\"", Ok(&["a\\nb"])),
            ("'a\\b'", Ok(&["a\\b"])),
            ("\"$HOME\"", Ok(&["$HOME"])),
            ("\"\"", Ok(&[""])),
            ("a '' b", Ok(&["a", "", "b"])),
            ("a\\\nb", Ok(&["ab"])),
            ("'abc", Err("unterminated single quote")),
            ("\"abc", Err("unterminated double quote")),
            ("\"abc\\", Err("unterminated double quote")),
            ("abc\\", Err("trailing backslash escapes nothing")),
        ];
        for (input, expected) in cases {
            let want = expected
                .map(|words| words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
                .map_err(str::to_string);
            assert_eq!(split_args(input), want, "input {input:?}");
        }
    }

    #[test]
    fn signals() {
        let cases: &[(Value, Option<i32>)] = &[
            (json!("SIGINT"), Some(libc::SIGINT)),
            (json!("INT"), Some(libc::SIGINT)),
            (json!("sigint"), Some(libc::SIGINT)),
            (json!("2"), Some(2)),
            (json!(2), Some(2)),
            (json!("SIGTERM"), Some(libc::SIGTERM)),
            (json!("KILL"), Some(libc::SIGKILL)),
            (json!("usr1"), Some(libc::SIGUSR1)),
            (json!("SIGUSR2"), Some(libc::SIGUSR2)),
            (json!("SIGSTKFLT"), Some(libc::SIGSTKFLT)),
            (json!("SIGPWR"), Some(libc::SIGPWR)),
            (json!("SIGSYS"), Some(libc::SIGSYS)),
            (json!("SIGIOT"), Some(libc::SIGABRT)),
            (json!(34), Some(34)),
            (json!("64"), Some(64)),
            (json!(0), None),
            (json!(65), None),
            (json!(-1), None),
            (json!("0"), None),
            (json!("99999999999999999999999"), None),
            (json!("SIGFOO"), None),
            (json!("SIG"), None),
            (json!(""), None),
            (json!(true), None),
            (json!(null), None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_signal(input).ok().map(Signal::number),
                *expected,
                "input {input}"
            );
        }
        assert_eq!(
            parse_signal(&json!("SIGFOO")),
            Err("unknown signal \"SIGFOO\"".to_string())
        );
    }

    #[test]
    fn signal_names() {
        let cases: &[(i32, &str)] = &[
            (libc::SIGINT, "SIGINT"),
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGKILL, "SIGKILL"),
            (libc::SIGHUP, "SIGHUP"),
            (libc::SIGABRT, "SIGABRT"),
            (libc::SIGIO, "SIGIO"),
            (34, "SIG34"),
            (0, "SIG0"),
        ];
        for (number, name) in cases {
            assert_eq!(signal_name(*number), *name);
        }
        for n in 1..=31 {
            let name = signal_name(n);
            assert_ne!(name, format!("SIG{n}"), "signal {n} has no name");
            assert_eq!(parse_signal(&json!(name)).map(Signal::number), Ok(n));
        }
    }

    #[test]
    fn minimal_app_defaults() {
        let parsed = parse_app(&json!({"script": "app.js"})).expect("parses");
        assert_eq!(parsed.spec, base());
        assert!(parsed.warnings.is_empty());
    }

    #[test]
    fn name_and_interpreter_from_script() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("app.js", "app", Some("node")),
            ("/srv/app.js", "app", Some("node")),
            ("./lib/worker.mjs", "worker", Some("node")),
            ("x.cjs", "x", Some("node")),
            ("APP.JS", "APP", Some("node")),
            ("tool.py", "tool", Some("python3")),
            ("run.sh", "run", Some("bash")),
            ("a.rb", "a", Some("ruby")),
            ("a.pl", "a", Some("perl")),
            ("index.php", "index", Some("php")),
            ("sleep", "sleep", None),
            ("/usr/bin/env", "env", None),
            ("archive.tar.gz", "archive.tar", None),
            ("server.go", "server", None),
            (".hidden", ".hidden", None),
            ("node server.js --x", "node", None),
            ("python3 -m http.server", "python3", None),
            ("/usr/bin/python3.12 -m x", "python3", None),
            ("node ./dist/a.js\n--x\t1", "node", None),
        ];
        for (script, name, interpreter) in cases {
            let spec = parse_app(&json!({ "script": script }))
                .expect("parses")
                .spec;
            assert_eq!(spec.name, *name, "script {script}");
            assert_eq!(spec.interpreter.as_deref(), *interpreter, "script {script}");
        }
    }

    #[test]
    fn options_and_aliases() {
        type Change = fn(&mut AppSpec);
        let cases: &[(Value, Change)] = &[
            (json!({"name": "web"}), |s| s.name = "web".into()),
            (json!({"args": "a 'b c'"}), |s| {
                s.args = vec!["a".into(), "b c".into()]
            }),
            (json!({"args": ["-p", 80, 1.5]}), |s| {
                s.args = vec!["-p".into(), "80".into(), "1.5".into()]
            }),
            (json!({"args": 3000}), |s| s.args = vec!["3000".into()]),
            (json!({"interpreter": "none"}), |s| s.interpreter = None),
            (json!({"interpreter": "/usr/bin/python3"}), |s| {
                s.interpreter = Some("/usr/bin/python3".into())
            }),
            (json!({"exec_interpreter": "bun"}), |s| {
                s.interpreter = Some("bun".into())
            }),
            (json!({"execInterpreter": "bun"}), |s| {
                s.interpreter = Some("bun".into())
            }),
            (json!({"interpreter_args": "--a 'b c'"}), |s| {
                s.rare.get_mut().interpreter_args = vec!["--a".into(), "b c".into()]
            }),
            (json!({"interpreterArgs": ["--x"]}), |s| {
                s.rare.get_mut().interpreter_args = vec!["--x".into()]
            }),
            (json!({"node_args": "--x"}), |s| {
                s.rare.get_mut().interpreter_args = vec!["--x".into()]
            }),
            (json!({"nodeArgs": "--x"}), |s| {
                s.rare.get_mut().interpreter_args = vec!["--x".into()]
            }),
            (json!({"cwd": "/srv"}), |s| s.cwd = Some("/srv".into())),
            (json!({"output": "o"}), |s| s.output = Some("o".into())),
            (json!({"out_file": "o"}), |s| s.output = Some("o".into())),
            (json!({"outFile": "o"}), |s| s.output = Some("o".into())),
            (json!({"out": "o"}), |s| s.output = Some("o".into())),
            (json!({"out_log": "o"}), |s| s.output = Some("o".into())),
            (json!({"error": "e"}), |s| s.error = Some("e".into())),
            (json!({"error_file": "e"}), |s| s.error = Some("e".into())),
            (json!({"errorFile": "e"}), |s| s.error = Some("e".into())),
            (json!({"err": "e"}), |s| s.error = Some("e".into())),
            (json!({"err_file": "e"}), |s| s.error = Some("e".into())),
            (json!({"err_log": "e"}), |s| s.error = Some("e".into())),
            (json!({"logDateFormat": "HH:mm"}), |s| {
                s.rare.get_mut().log_date_format = Some("HH:mm".into())
            }),
            (json!({"time": true}), |s| {
                s.rare.get_mut().log_date_format = Some(TIME_LOG_DATE_FORMAT.into())
            }),
            (json!({"time": true, "log_date_format": "HH"}), |s| {
                s.rare.get_mut().log_date_format = Some("HH".into())
            }),
            (json!({"time": false}), |_| {}),
            (json!({"pid": "/p"}), |s| {
                s.rare.get_mut().pid_file = Some("/p".into())
            }),
            (json!({"pidFile": "/p"}), |s| {
                s.rare.get_mut().pid_file = Some("/p".into())
            }),
            (json!({"pid_file": "/p"}), |s| {
                s.rare.get_mut().pid_file = Some("/p".into())
            }),
            (json!({"minUptime": "2s"}), |s| {
                s.rare.get_mut().min_uptime = 2000
            }),
            (json!({"min_uptime": 500}), |s| {
                s.rare.get_mut().min_uptime = 500
            }),
            (json!({"maxRestarts": "3"}), |s| {
                s.rare.get_mut().max_restarts = 3
            }),
            (json!({"max_restarts": 0}), |s| {
                s.rare.get_mut().max_restarts = 0
            }),
            (json!({"killTimeout": "5s"}), |s| {
                s.rare.get_mut().kill_timeout = 5000
            }),
            (json!({"kill_timeout": "3000"}), |s| {
                s.rare.get_mut().kill_timeout = 3000
            }),
            (json!({"killSignal": "SIGTERM"}), |s| {
                s.rare.get_mut().kill_signal = Signal::new(libc::SIGTERM).unwrap()
            }),
            (json!({"kill_signal": 1}), |s| {
                s.rare.get_mut().kill_signal = Signal::new(libc::SIGHUP).unwrap()
            }),
            (json!({"restartDelay": "1.5s"}), |s| {
                s.rare.get_mut().restart_delay = 1500
            }),
            (json!({"autorestart": "false"}), |s| s.autorestart = false),
            (json!({"autostart": false}), |s| s.autostart = false),
            (json!({"stopExitCodes": [0, "2"]}), |s| {
                s.rare.get_mut().stop_exit_codes = vec![0, 2]
            }),
            (json!({"stop_exit_codes": 3}), |s| {
                s.rare.get_mut().stop_exit_codes = vec![3]
            }),
            (json!({"force": true}), |s| s.rare.get_mut().force = true),
            (json!({"namespace": "prod"}), |s| {
                s.namespace = "prod".into()
            }),
            (json!({"treekill": false}), |s| s.treekill = false),
            (json!({"uid": "www-data"}), |s| {
                s.rare.get_mut().uid = Some("www-data".into())
            }),
            (json!({"user": 1000}), |s| {
                s.rare.get_mut().uid = Some("1000".into())
            }),
            (json!({"gid": 33}), |s| {
                s.rare.get_mut().gid = Some("33".into())
            }),
            (json!({"executeCommand": true}), |s| {
                s.rare.get_mut().execute_command = true
            }),
            (json!({"write": "true"}), |s| s.rare.get_mut().write = true),
            (json!({"sourceMapSupport": true}), |s| {
                s.rare.get_mut().source_map_support = true
            }),
            (json!({"disableSourceMapSupport": true}), |s| {
                s.rare.get_mut().disable_source_map_support = true
            }),
            (json!({"port": 3000}), |s| s.env = map(&[("PORT", "3000")])),
            (json!({"port": "8080"}), |s| {
                s.env = map(&[("PORT", "8080")])
            }),
            (json!({"port": 3000, "env": {"PORT": 1}}), |s| {
                s.env = map(&[("PORT", "1")])
            }),
            (json!({"disable_logs": true, "output": "o"}), |s| {
                s.output = Some(DISCARD_LOG_PATH.into());
                s.error = Some(DISCARD_LOG_PATH.into());
            }),
            (json!({"disableLogs": false}), |_| {}),
            (json!({"instances": 1}), |s| {
                s.rare.get_mut().cluster = Some(true)
            }),
            (json!({"instances": "1"}), |s| {
                s.rare.get_mut().cluster = Some(true)
            }),
            (json!({"instances": 4}), |s| {
                s.rare.get_mut().instances = 4;
                s.rare.get_mut().cluster = Some(true)
            }),
            (json!({"instances": "max"}), |s| {
                s.rare.get_mut().instances = 0;
                s.rare.get_mut().cluster = Some(true)
            }),
            (json!({"instances": -1}), |s| {
                s.rare.get_mut().instances = -1;
                s.rare.get_mut().cluster = Some(true)
            }),
            (json!({"exec_mode": "fork"}), |s| {
                s.rare.get_mut().cluster = Some(false)
            }),
            (json!({"execMode": "fork_mode"}), |s| {
                s.rare.get_mut().cluster = Some(false)
            }),
            (json!({"exec_mode": "cluster_mode"}), |s| {
                s.rare.get_mut().cluster = Some(true)
            }),
            (json!({"merge_logs": false}), |_| {}),
            (json!({"mergeLogs": true}), |s| {
                s.rare.get_mut().merge_logs = true
            }),
            (json!({"combine_logs": true}), |s| {
                s.rare.get_mut().merge_logs = true
            }),
            (json!({"max_log_size": "10M"}), |s| {
                s.rare.get_mut().max_log_size = Some(10 * 1024 * 1024)
            }),
            (json!({"maxLogSize": 4096}), |s| {
                s.rare.get_mut().max_log_size = Some(4096)
            }),
            (json!({"log_retain": "3"}), |s| {
                s.rare.get_mut().log_retain = Some(3)
            }),
            (json!({"log_file": true}), |s| {
                s.rare.get_mut().log_file = Some(CombinedLog::Default)
            }),
            (json!({"log": "all.log"}), |s| {
                s.rare.get_mut().log_file = Some(CombinedLog::Path("all.log".into()))
            }),
            (json!({"log_file": false}), |_| {}),
            (json!({"log_file": true, "disable_logs": true}), |s| {
                s.output = Some(DISCARD_LOG_PATH.into());
                s.error = Some(DISCARD_LOG_PATH.into());
            }),
            (json!({"log_type": "json"}), |s| {
                s.rare.get_mut().log_type = LogType::Json
            }),
            (json!({"logType": "text"}), |_| {}),
            (json!({"instance_var": "INSTANCE_ID"}), |s| {
                s.instance_var = "INSTANCE_ID".into()
            }),
            (json!({"increment_var": "PORT"}), |s| {
                s.rare.get_mut().increment_var = Some("PORT".into())
            }),
            (json!({"listen": "tcp:8080"}), |s| {
                s.rare.get_mut().listen = vec!["tcp:8080".into()]
            }),
            (json!({"listen": 8080}), |s| {
                s.rare.get_mut().listen = vec!["8080".into()]
            }),
            (
                json!({"listen": ["127.0.0.1:81", "unix:/tmp/a.sock"]}),
                |s| {
                    s.rare.get_mut().listen = vec!["127.0.0.1:81".into(), "unix:/tmp/a.sock".into()]
                },
            ),
            (json!({"watch": false}), |_| {}),
            (json!({"watch": true}), |s| {
                s.rare.get_mut().watch = Watch::Cwd
            }),
            (json!({"watch": "src"}), |s| {
                s.rare.get_mut().watch = Watch::Paths(vec!["src".into()])
            }),
            (json!({"watch": ["src", "lib"]}), |s| {
                s.rare.get_mut().watch = Watch::Paths(vec!["src".into(), "lib".into()])
            }),
            (json!({"ignore_watch": "*.tmp"}), |s| {
                s.rare.get_mut().ignore_watch = Some(vec!["*.tmp".into()])
            }),
            (json!({"ignoreWatch": ["a", "b/**"]}), |s| {
                s.rare.get_mut().ignore_watch = Some(vec!["a".into(), "b/**".into()])
            }),
            (json!({"watch_delay": "2s"}), |s| {
                s.rare.get_mut().watch_delay = 2000
            }),
            (json!({"max_memory_restart": "100M"}), |s| {
                s.rare.get_mut().max_memory_restart = Some(100 * 1024 * 1024)
            }),
            (json!({"maxMemoryRestart": 4096}), |s| {
                s.rare.get_mut().max_memory_restart = Some(4096)
            }),
            (json!({"exp_backoff_restart_delay": 100}), |s| {
                s.rare.get_mut().exp_backoff_restart_delay = Some(100)
            }),
            (json!({"expBackoffRestartDelay": "1s"}), |s| {
                s.rare.get_mut().exp_backoff_restart_delay = Some(1000)
            }),
            (json!({"cron_restart": "*/2 * * * * *"}), |s| {
                s.rare.get_mut().cron_restart = Some("*/2 * * * * *".into())
            }),
            (json!({"cron": "0 3 * * *"}), |s| {
                s.rare.get_mut().cron_restart = Some("0 3 * * *".into())
            }),
            (json!({"cron_restart": 0}), |_| {}),
            (json!({"cron": "0"}), |_| {}),
            (json!({"wait_ready": true}), |s| {
                s.rare.get_mut().wait_ready = true
            }),
            (json!({"listenTimeout": "5s"}), |s| {
                s.rare.get_mut().listen_timeout = 5000
            }),
            (json!({"shutdown_with_message": true}), |s| {
                s.rare.get_mut().shutdown_with_message = true
            }),
            (json!({"ipc": false}), |s| s.ipc = false),
        ];
        for (extra, change) in cases {
            let mut want = base();
            change(&mut want);
            let parsed =
                parse_app(&app_with(extra.clone())).unwrap_or_else(|e| panic!("{extra}: {e}"));
            assert_eq!(parsed.spec, want, "input {extra}");
            assert!(parsed.warnings.is_empty(), "input {extra}");
        }
    }

    #[test]
    fn script_aliases() {
        let cases: &[&str] = &["script", "exec", "cmd", "command"];
        for key in cases {
            let spec = parse_app(&json!({ *key: "app.js" })).expect("parses").spec;
            assert_eq!(spec, base(), "key {key}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        // Keys in the duplicate cases are in sorted order, so the result is the
        // same whether or not serde_json preserves insertion order.
        let cases: &[(Value, &str, &str)] = &[
            (json!("app.js"), "app", "expected an object, got \"app.js\""),
            (json!({}), "script", "is required"),
            (json!({"script": ""}), "script", "is required"),
            (json!({"cmd": " "}), "cmd", "is required"),
            (json!({"script": 5}), "script", "expected a string, got 5"),
            (
                json!({"out_file": "y", "output": "x", "script": "a"}),
                "output",
                "given twice, as `out_file` and `output`",
            ),
            (
                json!({"killTimeout": 2, "kill_timeout": 1, "script": "a"}),
                "kill_timeout",
                "given twice, as `killTimeout` and `kill_timeout`",
            ),
            (
                json!({"exec": "b", "script": "a"}),
                "script",
                "given twice, as `exec` and `script`",
            ),
            (
                json!({"script": "a", "env_": {}}),
                "env_",
                "unknown option; did you mean `env`?",
            ),
            (
                json!({"script": "a", "Script": "b"}),
                "Script",
                "unknown option; did you mean `script`?",
            ),
            (
                json!({"script": "a", "instances": "many"}),
                "instances",
                "expected a number or \"max\", got \"many\"",
            ),
            (
                json!({"script": "a", "instances": 5000}),
                "instances",
                "at most 1024 instances",
            ),
            (
                json!({"script": "a", "exec_mode": "threads"}),
                "exec_mode",
                "expected fork or cluster, got \"threads\"",
            ),
            (
                json!({"script": "a", "watch": 3}),
                "watch",
                "expected a string or an array of strings, got 3",
            ),
            (
                json!({"script": "a", "watch": ["src", ""]}),
                "watch[1]",
                "must not be empty",
            ),
            (
                json!({"script": "a", "cronRestart": "* * *"}),
                "cronRestart",
                "cron `* * *`: expected 5 or 6 fields, got 3",
            ),
            (
                json!({"script": "a", "cron": true}),
                "cron",
                "expected a cron expression, got true",
            ),
            (
                json!({"script": "a", "max_memory_restart": "1X"}),
                "max_memory_restart",
                "expected a size (bytes number or \"100M\"), got \"1X\"",
            ),
            (
                json!({"script": "a", "maxMemoryRestart": -1}),
                "maxMemoryRestart",
                "expected a size (bytes number or \"100M\"), got -1",
            ),
            (
                json!({"script": "a", "ignore_watch": {}}),
                "ignore_watch",
                "expected a string or an array of strings, got an object",
            ),
            (
                json!({"script": "a", "watch_delay": "soon"}),
                "watch_delay",
                "expected a duration (ms number or \"5s\"), got \"soon\"",
            ),
            (
                json!({"script": "a", "log": ""}),
                "log",
                "must not be empty",
            ),
            (
                json!({"script": "a", "log_type": "xml"}),
                "log_type",
                "expected \"json\" or \"text\", got \"xml\"",
            ),
            (
                json!({"script": "a", "max_log_size": "big"}),
                "max_log_size",
                "expected a size (bytes number or \"100M\"), got \"big\"",
            ),
            (
                json!({"script": "a", "log_retain": -1}),
                "log_retain",
                "expected a non-negative integer, got -1",
            ),
            (
                json!({"script": "a", "waitReady": "soon"}),
                "waitReady",
                "expected a boolean, got \"soon\"",
            ),
            (
                json!({"script": "a", "merge_logs": "yes"}),
                "merge_logs",
                "expected a boolean, got \"yes\"",
            ),
            (
                json!({"script": "a", "kill_timeout": "abc"}),
                "kill_timeout",
                "expected a duration (ms number or \"5s\"), got \"abc\"",
            ),
            (
                json!({"script": "a", "killTimeout": true}),
                "killTimeout",
                "expected a duration (ms number or \"5s\"), got true",
            ),
            (
                json!({"script": "a", "minUptime": -5}),
                "minUptime",
                "expected a duration (ms number or \"5s\"), got -5",
            ),
            (
                json!({"script": "a", "max_restarts": -1}),
                "max_restarts",
                "expected a non-negative integer, got -1",
            ),
            (
                json!({"script": "a", "max_restarts": 1.5}),
                "max_restarts",
                "expected a non-negative integer, got 1.5",
            ),
            (
                json!({"script": "a", "max_restarts": "x"}),
                "max_restarts",
                "expected a non-negative integer, got \"x\"",
            ),
            (
                json!({"script": "a", "max_restarts": 5_000_000_000u64}),
                "max_restarts",
                "expected a non-negative integer, got 5000000000",
            ),
            (
                json!({"script": "a", "autorestart": "yes"}),
                "autorestart",
                "expected a boolean, got \"yes\"",
            ),
            (
                json!({"script": "a", "autorestart": 1}),
                "autorestart",
                "expected a boolean, got 1",
            ),
            (
                json!({"script": "a", "args": true}),
                "args",
                "expected a string or an array of strings, got true",
            ),
            (
                json!({"script": "a", "args": ["x", null]}),
                "args[1]",
                "expected a string or number, got null",
            ),
            (
                json!({"script": "a", "args": "'oops"}),
                "args",
                "cannot split \"'oops\": unterminated single quote",
            ),
            (
                json!({"script": "a", "nodeArgs": {}}),
                "nodeArgs",
                "expected a string or an array of strings, got an object",
            ),
            (
                json!({"script": "a", "stop_exit_codes": 256}),
                "stop_exit_codes",
                "expected an exit code 0..=255, got 256",
            ),
            (
                json!({"script": "a", "stopExitCodes": [0, "x"]}),
                "stopExitCodes[1]",
                "expected an exit code 0..=255, got \"x\"",
            ),
            (
                json!({"script": "a", "kill_signal": "SIGFOO"}),
                "kill_signal",
                "unknown signal \"SIGFOO\"",
            ),
            (
                json!({"script": "a", "kill_signal": 99}),
                "kill_signal",
                "signal number 99 is out of range 1..=64",
            ),
            (
                json!({"script": "a", "name": ""}),
                "name",
                "must not be empty",
            ),
            (
                json!({"script": "a", "name": "all"}),
                "name",
                "must not be \"all\" (it means every app)",
            ),
            (
                json!({"script": "a", "name": "123"}),
                "name",
                "must not be all digits (it would be taken for a pm_id)",
            ),
            (
                json!({"script": "a", "name": "a/b"}),
                "name",
                "must not contain `/` (names make file names)",
            ),
            (
                json!({"script": "a", "name": "a\nb"}),
                "name",
                "must not contain control characters (found \\n)",
            ),
            (
                json!({"script": "a", "name": "red\u{1b}[31m"}),
                "name",
                "must not contain control characters (found \\u{1b})",
            ),
            (
                json!({"script": "a", "name": "tab\there"}),
                "name",
                "must not contain control characters (found \\t)",
            ),
            (
                json!({"script": "a\u{7}b"}),
                "name",
                "must not contain control characters (found \\u{7}) (derived from `script` \"a\\u0007b\"); give a `name`",
            ),
            (
                json!({"script": "a", "name": "x".repeat(MAX_NAME_LEN + 1)}),
                "name",
                "is longer than 256 bytes",
            ),
            (
                json!({"script": "a", "name": 5}),
                "name",
                "expected a string, got 5",
            ),
            (
                json!({"script": "/bin/123"}),
                "name",
                "must not be all digits (it would be taken for a pm_id) (derived from `script` \"/bin/123\"); give a `name`",
            ),
            (
                json!({"script": "a", "namespace": "all"}),
                "namespace",
                "must not be \"all\" (it means every app)",
            ),
            (
                json!({"script": "a", "namespace": ""}),
                "namespace",
                "must not be empty",
            ),
            (
                json!({"script": "a", "interpreter": ""}),
                "interpreter",
                "must not be empty",
            ),
            (
                json!({"script": "a", "cwd": 1}),
                "cwd",
                "expected a string, got 1",
            ),
            (
                json!({"script": "a", "output": ""}),
                "output",
                "must not be empty",
            ),
            (
                json!({"script": "a", "env": "A=1"}),
                "env",
                "expected an object, got \"A=1\"",
            ),
            (
                json!({"script": "a", "env": {"A": null}}),
                "env.A",
                "expected a string, number or boolean, got null",
            ),
            (
                json!({"script": "a", "env": {"A": [1]}}),
                "env.A",
                "expected a string, number or boolean, got an array",
            ),
            (
                json!({"script": "a", "env": {"A=B": "1"}}),
                "env.A=B",
                "is not a valid variable name (empty, or contains '=' or NUL)",
            ),
            (
                json!({"script": "a", "env": {"A": "x\u{0}y"}}),
                "env.A",
                "must not contain a NUL byte",
            ),
            (
                json!({"script": "a", "env_production": {"B": {}}}),
                "env_production.B",
                "expected a string, number or boolean, got an object",
            ),
            (
                json!({"script": "a", "env_prod": "x"}),
                "env_prod",
                "expected an object, got \"x\"",
            ),
            (
                json!({"script": "a", "uid": true}),
                "uid",
                "expected a name or a numeric id, got true",
            ),
            (
                json!({"script": "a", "gid": -1}),
                "gid",
                "expected a non-negative integer id, got -1",
            ),
            (
                json!({"script": "a", "user": ""}),
                "user",
                "must not be empty",
            ),
            (
                json!({"script": "a", "port": "abc"}),
                "port",
                "expected a port number 0..=65535, got \"abc\"",
            ),
            (
                json!({"script": "a", "port": 70000}),
                "port",
                "expected a port number 0..=65535, got 70000",
            ),
            (
                json!({"script": "a", "time": "yes"}),
                "time",
                "expected a boolean, got \"yes\"",
            ),
            (
                json!({"script": "a", "disable_logs": 1}),
                "disable_logs",
                "expected a boolean, got 1",
            ),
        ];
        for (input, key, message) in cases {
            let want = OptionError::new(*key, *message);
            assert_eq!(parse_app(input), Err(want), "input {input}");
        }
    }

    #[test]
    fn error_display() {
        let cases: &[(OptionError, &str)] = &[
            (
                OptionError::new(
                    "kill_timeout",
                    "expected a duration (ms number or \"5s\"), got \"abc\"",
                ),
                "option `kill_timeout`: expected a duration (ms number or \"5s\"), got \"abc\"",
            ),
            (
                OptionError::new("nmae", "unknown option; did you mean `name`?"),
                "option `nmae`: unknown option; did you mean `name`?",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), *text);
        }
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let long = "x".repeat(MAX_SHOWN_CHARS * 2);
        let err = parse_app(&json!({"script": "a", "kill_timeout": long})).unwrap_err();
        assert!(err.message.ends_with("..."), "{}", err.message);
        assert!(err.message.len() < MAX_SHOWN_CHARS * 2, "{}", err.message);
    }

    #[test]
    fn edit_distances() {
        let cases: &[(&str, &str, usize)] = &[
            ("", "", 0),
            ("abc", "", 3),
            ("name", "name", 0),
            ("nmae", "name", 1),
            ("scirpt", "script", 1),
            ("instance", "instances", 1),
            ("kill_timout", "kill_timeout", 1),
            ("wacth_dealy", "watch_delay", 2),
            ("foo", "io", 2),
            ("ca", "abc", 3),
            ("é", "e", 1),
        ];
        for (a, b, d) in cases {
            assert_eq!(edit_distance(a, b), *d, "{a} -> {b}");
            assert_eq!(edit_distance(b, a), *d, "{b} -> {a}");
        }
    }

    #[test]
    fn misspelt_keys_are_errors_custom_keys_warn() {
        let misspelt: &[(&str, &str)] = &[
            ("nmae", "name"),
            ("scirpt", "script"),
            ("instance", "instances"),
            ("kill_timout", "kill_timeout"),
            ("killTimout", "killTimeout"),
            ("KillTimeout", "killTimeout"),
            ("max_memory_restarts", "max_memory_restart"),
            ("maxMemoryRestarts", "maxMemoryRestart"),
            ("exec-mode", "exec_mode"),
            ("watch_dealy", "watch_delay"),
            ("ignoreWatch_", "ignoreWatch"),
            ("env_", "env"),
            ("evn", "env"),
            ("autoRestart", "autorestart"),
            ("cron_restarts", "cron_restart"),
            ("interpeter", "interpreter"),
            ("listen_timout", "listen_timeout"),
            ("node_arg", "node_args"),
        ];
        for (key, near) in misspelt {
            let err = parse_app(&app_with(json!({ *key: 1 }))).unwrap_err();
            assert_eq!(
                err,
                OptionError::new(*key, format!("unknown option; did you mean `{near}`?")),
                "key {key}"
            );
        }
        let custom: &[&str] = &[
            "foo",
            "colour",
            "description",
            "owner",
            "x",
            "NODE_ENV",
            "deploy",
            "myCustomSetting",
            "envProduction",
            "env-production",
        ];
        for key in custom {
            let parsed = parse_app(&app_with(json!({ *key: {"a": 1} }))).expect("parses");
            assert_eq!(parsed.spec, base(), "key {key}");
            assert_eq!(
                parsed.warnings,
                vec![format!("option `{key}` is unknown; ignored")],
                "key {key}"
            );
        }
    }

    #[test]
    fn exec_mode_follows_instances_as_in_pm2() {
        let cases: &[(Value, Option<bool>)] = &[
            (json!({"script": "a.js"}), None),
            (json!({"script": "a.js", "instances": 2}), Some(true)),
            (json!({"script": "a.mjs", "instances": 1}), Some(true)),
            (json!({"script": "a.js", "instances": "max"}), Some(true)),
            (
                json!({"script": "a.js", "instances": 2, "exec_mode": "fork"}),
                Some(false),
            ),
            (json!({"script": "a.py", "instances": 2}), Some(false)),
            (
                json!({"script": "a.py", "instances": 2, "exec_mode": "cluster"}),
                Some(true),
            ),
            (json!({"script": "bin/server", "instances": 4}), Some(false)),
            (
                json!({"script": "a", "interpreter": "/opt/node/bin/node", "instances": 2}),
                Some(true),
            ),
            (
                json!({"script": "a.ts", "interpreter": "bun", "instances": 2}),
                Some(true),
            ),
            (
                json!({"script": "a.js", "interpreter": "none", "instances": 2}),
                Some(false),
            ),
        ];
        for (app, want) in cases {
            let parsed = parse_app(app).expect("parses");
            assert_eq!(parsed.spec.rare().cluster, *want, "app {app}");
        }
    }

    #[test]
    fn no_effect_keys_warn() {
        let cases: &[&str] = &[
            "vizion",
            "pmx",
            "automation",
            "windowsHide",
            "kill_retry_time",
            "killRetryTime",
            "v8",
            "trace",
            "disable_trace",
            "disableTrace",
            "event_loop_inspector",
            "eventLoopInspector",
            "deep_monitoring",
            "deepMonitoring",
            "io",
            "post_update",
            "postUpdate",
            "install_url",
            "installUrl",
            "username",
            "name_prefix",
            "namePrefix",
            "versioning",
            "node_version",
            "nodeVersion",
        ];
        for key in cases {
            let parsed = parse_app(&app_with(json!({ *key: true }))).expect("parses");
            assert_eq!(parsed.spec, base(), "key {key}");
            assert_eq!(
                parsed.warnings,
                vec![format!("option `{key}` has no effect in corral")]
            );
        }
        let parsed = parse_app(&app_with(json!({"pmx": false, "vizion": false}))).expect("parses");
        assert_eq!(parsed.warnings.len(), 2);
    }

    #[test]
    fn env_and_overlays() {
        type Env<'a> = &'a [(&'a str, &'a str)];
        type Overlays<'a> = &'a [(&'a str, Env<'a>)];
        let cases: &[(Value, Env, Overlays)] = &[
            (json!({}), &[], &[]),
            (
                json!({"env": {"S": "x", "PORT": 3000, "DEBUG": true, "F": 1.5, "E": ""}}),
                &[
                    ("S", "x"),
                    ("PORT", "3000"),
                    ("DEBUG", "true"),
                    ("F", "1.5"),
                    ("E", ""),
                ],
                &[],
            ),
            (
                json!({"env": {"A": "1"}, "env_production": {"NODE_ENV": "production", "N": 1}}),
                &[("A", "1")],
                &[("production", &[("NODE_ENV", "production"), ("N", "1")])],
            ),
            (
                json!({"env_a": {}, "env_b_c": {"X": false}}),
                &[],
                &[("a", &[]), ("b_c", &[("X", "false")])],
            ),
        ];
        for (extra, env, overlays) in cases {
            let spec = parse_app(&app_with(extra.clone())).expect("parses").spec;
            assert_eq!(spec.env, map(env), "input {extra}");
            let want: BTreeMap<String, BTreeMap<String, String>> = overlays
                .iter()
                .map(|(name, vars)| (name.to_string(), map(vars)))
                .collect();
            assert_eq!(spec.rare().env_overlays, want, "input {extra}");
        }
    }

    #[test]
    fn two_spellings_of_one_option_are_the_same_option() {
        for (a, b, same) in [
            ("kill_timeout", "kill_timeout", true),
            ("kill_timeout", "killTimeout", true),
            ("out_file", "output", true),
            ("error_file", "errFile", true),
            ("kill_timeout", "listen_timeout", false),
            ("my_key", "my_key", true),
            ("my_key", "myKey", false),
            ("kill_timeout", "my_key", false),
        ] {
            assert_eq!(same_option(a, b), same, "{a} / {b}");
        }
    }

    #[test]
    fn camel_keys_match_without_building_them() {
        let cases = [
            ("killTimeout", "kill_timeout", true),
            ("kill_timeout", "kill_timeout", false),
            ("killtimeout", "kill_timeout", false),
            ("killTimeou", "kill_timeout", false),
            ("killTimeoutX", "kill_timeout", false),
            ("name", "name", true),
            ("windowsHide", "windowsHide", true),
            ("", "", true),
            ("é_x", "é_x", false),
            ("éX", "é_x", true),
        ];
        for (key, snake, want) in cases {
            assert_eq!(is_camel_of(key, snake), want, "{key} / {snake}");
            assert_eq!(key == to_camel(snake), want, "{key} / {snake}");
        }
        for def in OPTIONS {
            for spelling in std::iter::once(def.name).chain(def.aliases.iter().copied()) {
                assert!(is_camel_of(&to_camel(spelling), spelling), "{spelling}");
            }
        }
    }

    #[test]
    fn every_spelling_names_one_option() {
        for def in OPTIONS {
            for spelling in std::iter::once(def.name).chain(def.aliases.iter().copied()) {
                for key in [spelling.to_string(), to_camel(spelling)] {
                    let found = lookup(&key).map(|d| d.name);
                    assert_eq!(found, Some(def.name), "key {key}");
                    assert!(!key.starts_with(ENV_OVERLAY_PREFIX), "key {key}");
                }
            }
        }
    }

    #[test]
    fn config_shapes() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            (
                r#"{"apps":[{"script":"a"},{"script":"b"}]}"#,
                Ok(&["a", "b"]),
            ),
            (r#"{"apps":[{"script":"a"}],"deploy":{}}"#, Ok(&["a"])),
            (r#"{"pm2":[{"script":"a"}]}"#, Ok(&["a"])),
            (r#"[{"script":"a"},{"script":"b"}]"#, Ok(&["a", "b"])),
            (r#"{"script":"a"}"#, Ok(&["a"])),
            (r#""x""#, Err(CONFIG_SHAPE_ERROR)),
            ("42", Err(CONFIG_SHAPE_ERROR)),
            ("null", Err(CONFIG_SHAPE_ERROR)),
            (
                r#"{"apps":[{},{},3]}"#,
                Err("config: apps[2] is not an object"),
            ),
            (r#"[{}, "x"]"#, Err("config: apps[1] is not an object")),
            (r#"{"pm2":[1]}"#, Err("config: pm2[0] is not an object")),
            (r#"{"apps":{}}"#, Err("config: \"apps\" is not an array")),
            (
                r#"{"apps":[],"pm2":[]}"#,
                Err("config: both \"apps\" and \"pm2\" given"),
            ),
            ("[]", Err("config: no apps")),
            (r#"{"apps":[]}"#, Err("config: no apps")),
            (
                "{\"apps\":[\n",
                Err("line 2: unexpected end of file: the array opened on line 1 is not closed"),
            ),
        ];
        for (text, expected) in cases {
            let root = crate::relaxed_json::parse(text).map_err(|e| e.to_string());
            let got = root.and_then(apps_of_config).map(|apps| {
                apps.iter()
                    .map(|app| app["script"].as_str().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            });
            let want = expected
                .map(|scripts| scripts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(str::to_string);
            assert_eq!(got, want, "text {text:?}");
        }
    }
}
