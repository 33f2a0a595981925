//! The wire: requests, responses, error codes, bus events and the process
//! description, shared by the daemon, the command line and
//! [`Client`](crate::Client).
//!
//! A request is one line: JSON (`{"id":7,"cmd":"stop","target":"api"}`) or
//! the short form (`stop api`). A response is one line of JSON. Nothing here
//! exposes `nix` or `libc` types.
//!
//! Public: what the client's calls take and answer with ([`Target`],
//! [`Description`], [`Event`], [`ErrorCode`], …). The requests and
//! responses themselves, and the daemon's side, are private to the crate.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Version of this protocol, reported by `ping`.
pub const PROTOCOL: u32 = 1;

/// Longest request line accepted, newline excluded.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Why the daemon refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request line could not be read (bad JSON, a missing argument).
    BadRequest,
    /// No such command.
    UnknownCommand,
    /// An app option is wrong; the message names it.
    InvalidOption,
    /// No app matches the target.
    NotFound,
    /// The script to start does not exist.
    ScriptNotFound,
    /// An app of that name already runs.
    AlreadyRunning,
    /// The app has no IPC channel to send data on.
    NoChannel,
    /// The daemon failed doing something it should have been able to do.
    Internal,
}

impl ErrorCode {
    /// The code as it travels on the wire (`"not_found"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::InvalidOption => "invalid_option",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ScriptNotFound => "script_not_found",
            ErrorCode::AlreadyRunning => "already_running",
            ErrorCode::NoChannel => "no_channel",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels in a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// What a request acts on: every app, one `pm_id`, or a name (which also
/// matches a namespace when no app has that name).
///
/// Made from what PM2 takes, without ceremony: a `u32` is a `pm_id`, and a
/// string is read as PM2 reads it — `"all"`, a string of digits (a
/// `pm_id`), or a name.
///
/// ```
/// use corral::protocol::Target;
///
/// assert_eq!(Target::from("api"), Target::Name("api".into()));
/// assert_eq!(Target::from(String::from("api")), Target::Name("api".into()));
/// assert_eq!(Target::from(3), Target::Id(3));
/// assert_eq!(Target::from("3"), Target::Id(3));
/// assert_eq!(Target::from("all"), Target::All);
/// assert_eq!(Target::from(3).to_string(), "3");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every app (`"all"`).
    All,
    /// The app with this `pm_id`.
    Id(u32),
    /// The apps of this name, or else of this namespace.
    Name(String),
}

impl From<&str> for Target {
    fn from(s: &str) -> Target {
        Target::from_word(s)
    }
}

impl From<&String> for Target {
    fn from(s: &String) -> Target {
        Target::from_word(s)
    }
}

impl From<String> for Target {
    fn from(s: String) -> Target {
        Target::from_word(&s)
    }
}

impl From<u32> for Target {
    fn from(pm_id: u32) -> Target {
        Target::Id(pm_id)
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Target {
        t.clone()
    }
}

impl Target {
    /// `"all"`, a number, a string of digits, or a name.
    pub(crate) fn parse(v: &Value) -> Result<Target, String> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Target::Id)
                .ok_or_else(|| format!("target {n} is not a pm_id")),
            Value::String(s) => Ok(Target::from_word(s)),
            _ => Err("target must be a name, a pm_id or \"all\"".to_string()),
        }
    }

    /// `"all"`, a string of digits (a `pm_id`), or a name.
    fn from_word(s: &str) -> Target {
        if s == "all" {
            Target::All
        } else if let Ok(id) = s.parse::<u32>() {
            Target::Id(id)
        } else {
            Target::Name(s.to_string())
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Target::All => json!("all"),
            Target::Id(id) => json!(id),
            Target::Name(n) => json!(n),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::All => f.write_str("all"),
            Target::Id(id) => write!(f, "{id}"),
            Target::Name(n) => f.write_str(n),
        }
    }
}

/// The verbs that act on a target and answer with descriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Stop,
    Restart,
    Reload,
    GracefulReload,
    Delete,
    Reset,
    Describe,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::GracefulReload => "graceful_reload",
            Action::Delete => "delete",
            Action::Reset => "reset",
            Action::Describe => "describe",
        }
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Command {
    Ping,
    /// New apps (option objects), or known apps by target.
    Start(StartArgs),
    Act(Action, Target),
    /// `stop`, `restart` or `reload` that first changes the apps' options.
    Update {
        action: Action,
        target: Target,
        changes: Changes,
    },
    List,
    SendSignal {
        signal: Value,
        target: Target,
    },
    /// A packet for an app's IPC channel (`sendDataToProcessId`).
    SendData {
        packet: Value,
    },
    /// A line for an app's stdin (`sendLineToStdin`).
    SendLine {
        pm_id: u32,
        line: String,
    },
    /// Turn this connection into a stream of bus events (all, or these).
    Subscribe {
        events: Option<Vec<String>>,
    },
    /// Grow or shrink an app's instances: a number, `"+N"` or `"-N"`.
    Scale {
        name: String,
        instances: Value,
    },
    /// Empty the log files (of the target, or of every app).
    Flush(Option<Target>),
    /// Reopen every log file (after logrotate renamed them); with
    /// `rotate`, rename each to the next free `<name>-<out|err>-<N>.log`
    /// first (the seed's `reloadLogs`).
    ReloadLogs {
        rotate: bool,
    },
    KillDaemon,
    /// Replace the daemon by the binary on disk, apps running on
    /// (`corral update`).
    UpdateDaemon,
    /// Save every app to the dump file; `force` lets an empty list replace
    /// a dump that holds apps.
    Dump {
        force: bool,
    },
    /// Bring back the apps of the dump file, or of `apps` (dump entries,
    /// as a client read them from a file, e.g. PM2's dump).
    Resurrect {
        apps: Option<Vec<Value>>,
    },
}

/// New options for apps a `restart`/`reload` (or `stop`) acts on.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Changes {
    /// Options laid over each app's (`options::overlay`).
    pub options: Map<String, Value>,
    /// Use `env_<name>` from now on.
    pub env_name: Option<String>,
    /// `--update-env`: the caller's environment replaces the one the apps
    /// inherited (keys gone from it are gone).
    pub caller_env: Option<BTreeMap<String, String>>,
    /// `restart --watch`: watching on if it was off, off if it was on.
    pub toggle_watch: bool,
    /// The options are a config file's app: those that cannot change are
    /// ignored rather than refused.
    pub from_config: bool,
}

impl Changes {
    fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// The arguments of `start`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StartArgs {
    pub apps: Vec<Value>,
    pub target: Option<Target>,
    pub env_name: Option<String>,
    /// The environment the apps inherit instead of the daemon's (the CLI
    /// sends its own, as PM2 does). Never shown in descriptions.
    pub caller_env: Option<BTreeMap<String, String>>,
}

/// One request: its id (echoed in the answer) and what it asks.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Request {
    pub id: Value,
    pub cmd: Command,
}

/// A refused line: the id (if one could be read) and why.
pub(crate) type Refusal = (Value, WireError);

const VERBS: &str = "ping, start, stop, restart, reload, graceful_reload, delete, reset, describe, list, \
                     send_signal, send_data, send_line, subscribe, flush, reload_logs, scale, \
                     kill_daemon, dump, resurrect";

impl Request {
    /// Parse one line (newline already removed).
    pub fn parse(line: &[u8]) -> Result<Request, Refusal> {
        let text = std::str::from_utf8(line)
            .map_err(|_| bad(Value::Null, "request is not valid UTF-8"))?
            .trim();
        if text.starts_with('{') {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| bad(Value::Null, format!("malformed JSON: {e}")))?;
            let Value::Object(obj) = v else {
                return Err(bad(Value::Null, "request must be a JSON object"));
            };
            Request::from_object(obj)
        } else {
            Request::from_short(text)
        }
    }

    fn from_object(mut obj: Map<String, Value>) -> Result<Request, Refusal> {
        let id = obj.remove("id").unwrap_or(Value::Null);
        let cmd = match obj.remove("cmd") {
            Some(Value::String(c)) => c,
            Some(_) => return Err(bad(id, "`cmd` must be a string")),
            None => return Err(bad(id, "missing `cmd`")),
        };
        match command_of(&cmd, obj) {
            Ok(cmd) => Ok(Request { id, cmd }),
            Err(e) => Err((id, e)),
        }
    }

    /// `verb [target]`, `start {json}`, `send_signal SIG target`.
    fn from_short(text: &str) -> Result<Request, Refusal> {
        let (verb, rest) = match text.split_once(char::is_whitespace) {
            Some((v, r)) => (v, r.trim()),
            None => (text, ""),
        };
        if verb.is_empty() {
            return Err(bad(Value::Null, "empty request"));
        }
        let mut obj = Map::new();
        if verb == "start" && rest.starts_with('{') {
            let app: Value = serde_json::from_str(rest)
                .map_err(|e| bad(Value::Null, format!("malformed JSON after start: {e}")))?;
            obj.insert("app".into(), app);
        } else if verb == "send_signal" {
            let mut words = rest.split_whitespace();
            if let Some(sig) = words.next() {
                obj.insert("signal".into(), json!(sig));
            }
            if let Some(t) = words.next() {
                obj.insert("target".into(), json!(t));
            }
        } else if !rest.is_empty() {
            obj.insert("target".into(), json!(rest));
        }
        command_of(verb, obj)
            .map(|cmd| Request {
                id: Value::Null,
                cmd,
            })
            .map_err(|e| (Value::Null, e))
    }

    /// The JSON line for this request, newline included.
    pub fn to_line(&self) -> String {
        let mut obj = Map::new();
        obj.insert("id".into(), self.id.clone());
        let (cmd, args): (&str, Vec<(&str, Value)>) = match &self.cmd {
            Command::Ping => ("ping", vec![]),
            Command::List => ("list", vec![]),
            Command::KillDaemon => ("kill_daemon", vec![]),
            Command::UpdateDaemon => ("update_daemon", vec![]),
            Command::ReloadLogs { rotate: false } => ("reload_logs", vec![]),
            Command::ReloadLogs { rotate: true } => ("reload_logs", vec![("rotate", json!(true))]),
            Command::Dump { force } => (
                "dump",
                match force {
                    true => vec![("force", json!(true))],
                    false => vec![],
                },
            ),
            Command::Resurrect { apps } => (
                "resurrect",
                apps.iter()
                    .map(|a| ("apps", Value::Array(a.clone())))
                    .collect(),
            ),
            Command::Scale { name, instances } => (
                "scale",
                vec![("target", json!(name)), ("instances", instances.clone())],
            ),
            Command::Flush(t) => (
                "flush",
                t.iter().map(|t| ("target", t.to_value())).collect(),
            ),
            Command::SendData { packet } => ("send_data", vec![("packet", packet.clone())]),
            Command::SendLine { pm_id, line } => (
                "send_line",
                vec![("pm_id", json!(pm_id)), ("line", json!(line))],
            ),
            Command::Subscribe { events } => (
                "subscribe",
                events.iter().map(|e| ("events", json!(e))).collect(),
            ),
            Command::Act(a, t) => (a.name(), vec![("target", t.to_value())]),
            Command::Update {
                action,
                target,
                changes,
            } => {
                let mut args = vec![("target", target.to_value())];
                if !changes.options.is_empty() {
                    args.push(("options", Value::Object(changes.options.clone())));
                }
                if let Some(e) = &changes.env_name {
                    args.push(("env_name", json!(e)));
                }
                if let Some(env) = &changes.caller_env {
                    args.push(("caller_env", json!(env)));
                }
                if changes.toggle_watch {
                    args.push(("toggle_watch", json!(true)));
                }
                if changes.from_config {
                    args.push(("from_config", json!(true)));
                }
                (action.name(), args)
            }
            Command::SendSignal { signal, target } => (
                "send_signal",
                vec![("signal", signal.clone()), ("target", target.to_value())],
            ),
            Command::Start(s) => {
                let mut args = vec![("apps", Value::Array(s.apps.clone()))];
                if let Some(t) = &s.target {
                    args.push(("target", t.to_value()));
                }
                if let Some(e) = &s.env_name {
                    args.push(("env_name", json!(e)));
                }
                if let Some(env) = &s.caller_env {
                    args.push(("caller_env", json!(env)));
                }
                ("start", args)
            }
        };
        obj.insert("cmd".into(), json!(cmd));
        for (k, v) in args {
            obj.insert(k.into(), v);
        }
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        line
    }
}

fn bad(id: Value, msg: impl Into<String>) -> Refusal {
    (id, WireError::new(ErrorCode::BadRequest, msg))
}

fn command_of(verb: &str, mut obj: Map<String, Value>) -> Result<Command, WireError> {
    let bad = |m: String| WireError::new(ErrorCode::BadRequest, m);
    let target = |obj: &mut Map<String, Value>| -> Result<Target, WireError> {
        match obj.remove("target") {
            Some(v) => Target::parse(&v).map_err(bad),
            None => Err(bad(format!("`{verb}` needs a `target`"))),
        }
    };
    let action = match verb {
        "stop" => Some(Action::Stop),
        "restart" => Some(Action::Restart),
        "reload" => Some(Action::Reload),
        "graceful_reload" => Some(Action::GracefulReload),
        "delete" => Some(Action::Delete),
        "reset" => Some(Action::Reset),
        "describe" => Some(Action::Describe),
        _ => None,
    };
    let cmd = if let Some(a) = action {
        let changes = match a {
            Action::Stop | Action::Restart | Action::Reload | Action::GracefulReload => {
                changes(&mut obj)?
            }
            _ => Changes::default(),
        };
        match changes.is_empty() {
            true => Command::Act(a, target(&mut obj)?),
            false => Command::Update {
                action: a,
                target: target(&mut obj)?,
                changes,
            },
        }
    } else {
        match verb {
            "ping" => Command::Ping,
            "list" => Command::List,
            "kill_daemon" => Command::KillDaemon,
            "update_daemon" => Command::UpdateDaemon,
            "reload_logs" => Command::ReloadLogs {
                rotate: match obj.remove("rotate") {
                    None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                    Some(Value::Bool(true)) => true,
                    Some(_) => return Err(bad("`rotate` must be a boolean".into())),
                },
            },
            "dump" => Command::Dump {
                force: match obj.remove("force") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => b,
                    Some(_) => return Err(bad("`force` must be true or false".into())),
                },
            },
            "resurrect" => Command::Resurrect {
                apps: match obj.remove("apps") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(a)) => Some(a),
                    Some(_) => return Err(bad("`apps` must be an array of dump entries".into())),
                },
            },
            "scale" => Command::Scale {
                name: match obj.remove("target") {
                    Some(Value::String(n)) => n,
                    _ => return Err(bad("`scale` needs a `target` name".into())),
                },
                instances: obj
                    .remove("instances")
                    .ok_or_else(|| bad("`scale` needs `instances`".into()))?,
            },
            "flush" => Command::Flush(match obj.remove("target") {
                None | Some(Value::Null) => None,
                Some(v) => Some(Target::parse(&v).map_err(bad)?),
            }),
            "send_line" => Command::SendLine {
                pm_id: obj
                    .remove("pm_id")
                    .and_then(|v| v.as_u64())
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad("`send_line` needs a `pm_id`".into()))?,
                line: match obj.remove("line") {
                    Some(Value::String(l)) => l,
                    _ => return Err(bad("`send_line` needs a `line` string".into())),
                },
            },
            "send_data" => Command::SendData {
                packet: obj
                    .remove("packet")
                    .ok_or_else(|| bad("`send_data` needs a `packet`".into()))?,
            },
            "subscribe" => Command::Subscribe {
                events: match obj.remove("events") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        serde_json::from_value(v)
                            .map_err(|_| bad("`events` must be an array of names".into()))?,
                    ),
                },
            },
            "send_signal" => {
                let signal = obj
                    .remove("signal")
                    .ok_or_else(|| bad("`send_signal` needs a `signal`".into()))?;
                Command::SendSignal {
                    signal,
                    target: target(&mut obj)?,
                }
            }
            "start" => Command::Start(start_args(&mut obj)?),
            _ => {
                return Err(WireError::new(
                    ErrorCode::UnknownCommand,
                    format!("unknown command `{verb}` (known: {VERBS})"),
                ));
            }
        }
    };
    if let Some(k) = obj.keys().next() {
        return Err(bad(format!("`{verb}` takes no argument `{k}`")));
    }
    Ok(cmd)
}

fn changes(obj: &mut Map<String, Value>) -> Result<Changes, WireError> {
    let bad = |m: &str| WireError::new(ErrorCode::BadRequest, m);
    let mut c = Changes::default();
    match obj.remove("options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => c.options = o,
        Some(_) => return Err(bad("`options` must be an object")),
    }
    match obj.remove("env_name") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => c.env_name = Some(s),
        Some(_) => return Err(bad("`env_name` must be a string")),
    }
    match obj.remove("caller_env") {
        None | Some(Value::Null) => {}
        Some(v) => {
            c.caller_env = Some(
                serde_json::from_value(v)
                    .map_err(|_| bad("`caller_env` must be an object of strings"))?,
            );
        }
    }
    match obj.remove("toggle_watch") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => c.toggle_watch = b,
        Some(_) => return Err(bad("`toggle_watch` must be true or false")),
    }
    match obj.remove("from_config") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => c.from_config = b,
        Some(_) => return Err(bad("`from_config` must be true or false")),
    }
    Ok(c)
}

fn start_args(obj: &mut Map<String, Value>) -> Result<StartArgs, WireError> {
    let bad = |m: &str| WireError::new(ErrorCode::BadRequest, m);
    let mut args = StartArgs::default();
    match (obj.remove("app"), obj.remove("apps")) {
        (Some(_), Some(_)) => return Err(bad("give `app` or `apps`, not both")),
        (Some(app), None) => args.apps.push(app),
        (None, Some(Value::Array(apps))) => args.apps = apps,
        (None, Some(_)) => return Err(bad("`apps` must be an array")),
        (None, None) => {}
    }
    if let Some(t) = obj.remove("target") {
        args.target = Some(Target::parse(&t).map_err(|m| bad(&m))?);
    }
    if args.apps.is_empty() == args.target.is_none() {
        return Err(bad("`start` needs `app`, `apps` or `target`"));
    }
    match obj.remove("env_name") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => args.env_name = Some(s),
        Some(_) => return Err(bad("`env_name` must be a string")),
    }
    match obj.remove("caller_env") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let env: BTreeMap<String, String> = serde_json::from_value(v)
                .map_err(|_| bad("`caller_env` must be an object of strings"))?;
            args.caller_env = Some(env);
        }
    }
    Ok(args)
}

/// A success line; `result` is JSON text (descriptions are written
/// straight to text, without an intermediate `Value`). The result comes
/// last, after [`ok_head`] when there is no warning, so that a client can
/// pass it on as it arrives without parsing it (`corral jlist`); the line
/// is built in `result`'s own buffer (a `jlist` of 1000 apps is a megabyte:
/// it is moved, not copied into a new one).
pub(crate) fn ok_line(id: &Value, mut result: String, warnings: &[String]) -> String {
    let head = match warnings.is_empty() {
        true => ok_head(id),
        false => format!(
            r#"{{"id":{id},"ok":true,"warnings":{},"result":"#,
            json!(warnings)
        ),
    };
    result.reserve(head.len() + 2);
    result.insert_str(0, &head);
    result.push_str("}\n");
    result
}

/// What a success line without warnings to request `id` begins with, up
/// to its result: `{"id":<id>,"ok":true,"result":`.
pub(crate) fn ok_head(id: &Value) -> String {
    format!(r#"{{"id":{id},"ok":true,"result":"#)
}

/// An error line.
pub(crate) fn err_line(id: &Value, err: &WireError) -> String {
    let mut s = json!({"id": id, "ok": false, "error": err}).to_string();
    s.push('\n');
    s
}

/// A response as the client reads it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Response {
    pub ok: bool,
    /// Kept as text: the caller decides what to parse it into.
    pub result: Option<Box<serde_json::value::RawValue>>,
    pub error: Option<WireError>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The app an event is about, as bus events name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    /// The app's name.
    pub name: String,
    /// Its `pm_id`.
    pub pm_id: u32,
    /// Its process id when the event happened; 0 if it had none.
    pub pid: i32,
    /// Its namespace.
    pub namespace: String,
}

/// A stream of an app's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output (`log:out`).
    Out,
    /// Standard error (`log:err`).
    Err,
}

/// One bus event, as `subscribe` streams them (PM2's names).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `process:event`: `kind` is start, online, exit, stop, restart, delete
    /// or `restart overlimit`; `data` is the whole payload (with `code` or
    /// `signal` for exit, `reason` for a restart the daemon decided,
    /// `warning` for an online after `listen_timeout`).
    Process {
        /// What happened: `start`, `online`, `exit`, ….
        kind: String,
        /// The app it happened to.
        process: ProcessRef,
        /// When, in milliseconds since the Unix epoch.
        at: u64,
        /// The whole payload, as the daemon sent it.
        data: Value,
    },
    /// `log:out` / `log:err`: one whole line, newline included.
    Log {
        /// Which of the app's outputs.
        stream: LogStream,
        /// The app that wrote it.
        process: ProcessRef,
        /// The line, newline included.
        line: String,
        /// When, in milliseconds since the Unix epoch.
        at: u64,
    },
    /// `process:msg` (`data` is what the app sent, PM2's `raw`) or a typed
    /// message `{"type": T, "data": D}` (`kind` is T, `data` is D).
    Message {
        /// The event name: `process:msg`, or the message's `type`.
        kind: String,
        /// The app that sent it.
        process: ProcessRef,
        /// What it sent.
        data: Value,
        /// When, in milliseconds since the Unix epoch.
        at: u64,
    },
    /// `daemon:kill`: the daemon is about to exit.
    DaemonKill {
        /// When, in milliseconds since the Unix epoch.
        at: u64,
    },
    /// `daemon:update`: the daemon replaced itself by its new binary
    /// (`corral update`); the subscription goes on.
    DaemonUpdate {
        /// The daemon's pid (the same before and after).
        pid: u32,
        /// When, in milliseconds since the Unix epoch.
        at: u64,
    },
    /// `bus:dropped`: this many events were dropped for a slow reader.
    Dropped {
        /// How many.
        count: u64,
    },
}

impl Event {
    /// Read one event line, as [`Bus::next_line`](crate::client::Bus::next_line)
    /// gives it.
    pub fn parse(line: &str) -> Result<Event, String> {
        #[derive(Deserialize)]
        struct Wire {
            event: String,
            #[serde(default)]
            data: Value,
        }
        let w: Wire = serde_json::from_str(line).map_err(|e| format!("unreadable event: {e}"))?;
        let at = w.data.get("at").and_then(Value::as_u64).unwrap_or(0);
        let process = || -> Result<ProcessRef, String> {
            serde_json::from_value(w.data.get("process").cloned().unwrap_or(Value::Null))
                .map_err(|e| format!("event {} without its process: {e}", w.event))
        };
        Ok(match w.event.as_str() {
            "process:event" => Event::Process {
                kind: w
                    .data
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                process: process()?,
                at,
                data: w.data.clone(),
            },
            "log:out" | "log:err" => Event::Log {
                stream: if w.event == "log:out" {
                    LogStream::Out
                } else {
                    LogStream::Err
                },
                process: process()?,
                line: w
                    .data
                    .get("data")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                at,
            },
            "daemon:kill" => Event::DaemonKill { at },
            "daemon:update" => Event::DaemonUpdate {
                pid: w.data.get("pid").and_then(Value::as_u64).unwrap_or(0) as u32,
                at,
            },
            "bus:dropped" => Event::Dropped {
                count: w.data.get("count").and_then(Value::as_u64).unwrap_or(0),
            },
            // PM2's `raw` for what the app sent as is, `data` for a typed
            // message of type process:msg.
            "process:msg" => Event::Message {
                kind: w.event.clone(),
                process: process()?,
                data: w
                    .data
                    .get("raw")
                    .or_else(|| w.data.get("data"))
                    .cloned()
                    .unwrap_or(Value::Null),
                at,
            },
            _ => Event::Message {
                kind: w.event.clone(),
                process: process()?,
                data: w.data.get("data").cloned().unwrap_or(Value::Null),
                at,
            },
        })
    }
}

/// `status` of a description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Started, not yet online (waiting for `ready` with `wait_ready`).
    #[serde(rename = "launching")]
    Launching,
    /// Running.
    #[serde(rename = "online")]
    Online,
    /// Sent its stop signal, not yet exited.
    #[serde(rename = "stopping")]
    Stopping,
    /// Not running, and not to be restarted.
    #[serde(rename = "stopped")]
    Stopped,
    /// Could not be started, or restarted too often.
    #[serde(rename = "errored")]
    Errored,
    /// Exited; restarts when its restart delay is over.
    #[serde(rename = "waiting restart")]
    WaitingRestart,
    /// Ran once and is not to be restarted (`autorestart: false`).
    #[serde(rename = "one-launch-status")]
    OneLaunch,
}

impl Status {
    /// The status as PM2 writes it (`"waiting restart"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Launching => "launching",
            Status::Online => "online",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Errored => "errored",
            Status::WaitingRestart => "waiting restart",
            Status::OneLaunch => "one-launch-status",
        }
    }
}

/// Resident memory and CPU of a running app.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Monit {
    /// Resident memory, in bytes.
    pub memory: u64,
    /// CPU use, in percent of one core.
    pub cpu: f64,
}

/// One element of `list`/`describe`/`jlist`, in PM2's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// The process id; 0 when not running.
    pub pid: i32,
    /// The app's name.
    pub name: String,
    /// Its `pm_id`, unique in the daemon.
    pub pm_id: u32,
    /// Its memory and CPU use (zero when not running).
    pub monit: Monit,
    /// Its options and runtime state.
    pub pm2_env: Pm2Env,
}

/// `pm2_env`: the resolved options plus the runtime fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pm2Env {
    /// The app's name.
    pub name: String,
    /// Its `pm_id`.
    pub pm_id: u32,
    /// Its namespace (`default` unless given).
    pub namespace: String,
    /// Where it is in its life.
    pub status: Status,
    /// The script, resolved to a path (or the command found on `PATH`).
    pub pm_exec_path: String,
    /// Its working directory.
    pub pm_cwd: String,
    /// The interpreter (`node`, `python3`, …), or `none`.
    pub exec_interpreter: String,
    /// Arguments given to the interpreter, before the script.
    pub node_args: Vec<String>,
    /// Arguments given to the script.
    pub args: Vec<String>,
    /// `fork_mode` or `cluster_mode`.
    pub exec_mode: String,
    /// How many instances the app has.
    pub instances: u32,
    /// The variable that carries the instance index.
    pub instance_var: String,
    #[serde(rename = "NODE_APP_INSTANCE")]
    /// This instance's index, 0..instances.
    pub node_app_instance: u32,
    /// Its stdout log file.
    pub pm_out_log_path: String,
    /// Its stderr log file.
    pub pm_err_log_path: String,
    /// Its pid file.
    pub pm_pid_path: String,
    /// Its combined stdout+stderr file (`log_file`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm_log_path: Option<String>,
    /// `"json"` when its lines are written as JSON objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_type: Option<String>,
    /// Bytes past which its log files rotate (its own or the daemon's
    /// default); none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_size: Option<u64>,
    /// Rotated files kept.
    #[serde(default)]
    pub log_retain: u32,
    /// When it last started (ms since the epoch).
    pub pm_uptime: u64,
    /// When it was first started (ms since the epoch).
    pub created_at: u64,
    /// How many times it was restarted.
    pub restart_time: u32,
    /// How many of those came too soon after a start (`min_uptime`).
    pub unstable_restarts: u32,
    /// The exit code of its last exit, if it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended it last, if one did (`"SIGKILL"`).
    pub exit_signal: Option<String>,
    /// Whether an exit restarts it.
    pub autorestart: bool,
    /// `false`, `true` (the cwd) or the watched paths, as given.
    pub watch: Value,
    /// The variables of its `env` option (the inherited environment is
    /// never shown).
    pub env: BTreeMap<String, String>,
    /// Milliseconds: an exit sooner than this after a start is unstable.
    pub min_uptime: u64,
    /// Unstable restarts in a row before it is `errored`.
    pub max_restarts: u32,
    /// Milliseconds from the stop signal to SIGKILL.
    pub kill_timeout: u64,
    /// The stop signal (`"SIGINT"`).
    pub kill_signal: String,
    /// Milliseconds to wait before a restart.
    pub restart_delay: u64,
    /// Exit codes that do not restart it.
    pub stop_exit_codes: Vec<i32>,
    /// Whether signals go to its whole process group.
    pub treekill: bool,
    /// The timestamp format of its log lines, if any.
    pub log_date_format: Option<String>,
    /// Whether all instances write the same log files.
    pub merge_logs: bool,
    /// The user it runs as, if not the daemon's.
    pub uid: Option<String>,
    /// The group it runs as, if not the daemon's.
    pub gid: Option<String>,
    /// Names or globs not watched.
    #[serde(default)]
    pub ignore_watch: Vec<String>,
    /// Milliseconds of quiet before a watch restart.
    #[serde(default)]
    pub watch_delay: u64,
    /// Bytes; none when unlimited.
    #[serde(default)]
    pub max_memory_restart: Option<u64>,
    /// The first backoff delay (ms), if restarts back off.
    #[serde(default)]
    pub exp_backoff_restart_delay: Option<u64>,
    /// The last backoff delay (ms), with `exp_backoff_restart_delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_restart_delay: Option<u64>,
    /// The cron expression that restarts it, if any.
    #[serde(default)]
    pub cron_restart: Option<String>,
    /// Lines of its output not written to its log files because they could
    /// not be written whole (a full disk), since it was started.
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// The cgroup (v2) of the running process, through which a stop reaches
    /// every process it started; `None`: its process group is used (no
    /// writable cgroup v2 here, or `treekill` off).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Whether it is online only once it says it is ready.
    #[serde(default)]
    pub wait_ready: bool,
    /// Milliseconds to wait for ready (with `wait_ready`).
    #[serde(default)]
    pub listen_timeout: u64,
    /// Whether it is stopped by the `shutdown` message instead of a signal.
    #[serde(default)]
    pub shutdown_with_message: bool,
    /// Whether it has an IPC channel (Node's `process.send`).
    #[serde(default)]
    pub ipc: bool,
    /// Whether its stdin is a pipe `send` writes to (else `/dev/null`).
    #[serde(default = "yes")]
    pub stdin: bool,
    /// The last `STATUS=` an app sent through `NOTIFY_SOCKET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_status: Option<String>,
    /// What a Node app reported of itself over its channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_version: Option<String>,
    /// Whether it starts when registered (false: it is registered stopped).
    #[serde(default)]
    pub autostart: bool,
    /// The app's version (PM2 reads package.json; corral does not).
    #[serde(default)]
    pub version: String,
    /// Filled by @pm2/io inside PM2's apps; present and empty here, for
    /// tools that expect the keys.
    #[serde(default)]
    pub axm_actions: Vec<Value>,
    /// Empty (see `axm_actions`).
    #[serde(default)]
    pub axm_monitor: Map<String, Value>,
    /// Empty (see `axm_actions`).
    #[serde(default)]
    pub axm_options: Map<String, Value>,
    /// Empty (see `axm_actions`).
    #[serde(default)]
    pub axm_dynamic: Map<String, Value>,
}

/// `true`, for serde defaults.
fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_from_a_table() {
        let cases: &[(&str, Result<Command, ErrorCode>)] = &[
            ("ping", Ok(Command::Ping)),
            (r#"{"cmd":"ping","id":1}"#, Ok(Command::Ping)),
            ("list", Ok(Command::List)),
            ("update_daemon", Ok(Command::UpdateDaemon)),
            (
                r#"{"cmd":"update_daemon","id":2}"#,
                Ok(Command::UpdateDaemon),
            ),
            (
                "stop api",
                Ok(Command::Act(Action::Stop, Target::Name("api".into()))),
            ),
            ("stop 3", Ok(Command::Act(Action::Stop, Target::Id(3)))),
            ("delete all", Ok(Command::Act(Action::Delete, Target::All))),
            (
                r#"{"cmd":"restart","target":2}"#,
                Ok(Command::Act(Action::Restart, Target::Id(2))),
            ),
            (
                "send_signal SIGUSR1 api",
                Ok(Command::SendSignal {
                    signal: json!("SIGUSR1"),
                    target: Target::Name("api".into()),
                }),
            ),
            (
                r#"start {"script":"a.js"}"#,
                Ok(Command::Start(StartArgs {
                    apps: vec![json!({"script":"a.js"})],
                    ..StartArgs::default()
                })),
            ),
            (
                "start api",
                Ok(Command::Start(StartArgs {
                    target: Some(Target::Name("api".into())),
                    ..StartArgs::default()
                })),
            ),
            ("stop", Err(ErrorCode::BadRequest)),
            ("start", Err(ErrorCode::BadRequest)),
            ("frobnicate all", Err(ErrorCode::UnknownCommand)),
            (r#"{"cmd":"frob"}"#, Err(ErrorCode::UnknownCommand)),
            (r#"{"cmd":"ping""#, Err(ErrorCode::BadRequest)),
            (r#"{"id":1}"#, Err(ErrorCode::BadRequest)),
            (r#"{"cmd":7}"#, Err(ErrorCode::BadRequest)),
            (r#"{"cmd":"list","bogus":1}"#, Err(ErrorCode::BadRequest)),
            (r#"{"cmd":"stop","target":[1]}"#, Err(ErrorCode::BadRequest)),
            (r#"{"cmd":"start","apps":{}}"#, Err(ErrorCode::BadRequest)),
            ("", Err(ErrorCode::BadRequest)),
            ("[1,2]", Err(ErrorCode::UnknownCommand)),
            ("flush", Ok(Command::Flush(None))),
            (
                "flush api",
                Ok(Command::Flush(Some(Target::Name("api".into())))),
            ),
            ("reload_logs", Ok(Command::ReloadLogs { rotate: false })),
            (
                r#"{"cmd":"reload_logs","rotate":true}"#,
                Ok(Command::ReloadLogs { rotate: true }),
            ),
            (
                r#"{"cmd":"reload_logs","rotate":"yes"}"#,
                Err(ErrorCode::BadRequest),
            ),
            ("dump", Ok(Command::Dump { force: false })),
            (
                r#"{"cmd":"dump","force":true}"#,
                Ok(Command::Dump { force: true }),
            ),
            (r#"{"cmd":"dump","force":1}"#, Err(ErrorCode::BadRequest)),
            ("resurrect", Ok(Command::Resurrect { apps: None })),
            (
                r#"{"cmd":"resurrect","apps":[]}"#,
                Ok(Command::Resurrect { apps: Some(vec![]) }),
            ),
            (
                r#"{"cmd":"resurrect","apps":{}}"#,
                Err(ErrorCode::BadRequest),
            ),
            (
                r#"{"cmd":"scale","target":"api","instances":"+2"}"#,
                Ok(Command::Scale {
                    name: "api".into(),
                    instances: json!("+2"),
                }),
            ),
            (
                r#"{"cmd":"scale","instances":2}"#,
                Err(ErrorCode::BadRequest),
            ),
            ("subscribe", Ok(Command::Subscribe { events: None })),
            (
                r#"{"cmd":"subscribe","events":["log:out"]}"#,
                Ok(Command::Subscribe {
                    events: Some(vec!["log:out".into()]),
                }),
            ),
            (
                r#"{"cmd":"subscribe","events":"x"}"#,
                Err(ErrorCode::BadRequest),
            ),
            (
                r#"{"cmd":"send_data","packet":{"id":1,"data":2}}"#,
                Ok(Command::SendData {
                    packet: json!({"id":1,"data":2}),
                }),
            ),
            (r#"{"cmd":"send_data"}"#, Err(ErrorCode::BadRequest)),
        ];
        for (line, want) in cases {
            let got = Request::parse(line.as_bytes())
                .map(|r| r.cmd)
                .map_err(|(_, e)| e.code);
            assert_eq!(&got, want, "line {line:?}");
        }
    }

    #[test]
    fn targets_convert_as_pm2_reads_them() {
        let cases: &[(Target, Target)] = &[
            (Target::from("api"), Target::Name("api".into())),
            (Target::from("all"), Target::All),
            (Target::from("All"), Target::Name("All".into())),
            (Target::from("3"), Target::Id(3)),
            (Target::from("03"), Target::Id(3)),
            (Target::from("-1"), Target::Name("-1".into())),
            (
                Target::from("4294967296"),
                Target::Name("4294967296".into()),
            ),
            (Target::from("1e3"), Target::Name("1e3".into())),
            (Target::from(""), Target::Name("".into())),
            (
                Target::from(String::from("web")),
                Target::Name("web".into()),
            ),
            (Target::from(String::from("all")), Target::All),
            (Target::from(&String::from("7")), Target::Id(7)),
            (Target::from(0), Target::Id(0)),
            (Target::from(u32::MAX), Target::Id(u32::MAX)),
            (Target::from(&Target::All), Target::All),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        // What goes on the wire, and back.
        for (t, v) in [
            (Target::All, json!("all")),
            (Target::Id(3), json!(3)),
            (Target::Name("api".into()), json!("api")),
        ] {
            assert_eq!(t.to_value(), v);
            assert_eq!(Target::parse(&v).unwrap(), t);
        }
    }

    #[test]
    fn reads_bus_events() {
        let p = r#""process":{"name":"a","pm_id":1,"pid":5,"namespace":"default"}"#;
        let line = format!(r#"{{"event":"log:err","data":{{{p},"data":"x\n","at":7}}}}"#);
        let want = Event::Log {
            stream: LogStream::Err,
            process: ProcessRef {
                name: "a".into(),
                pm_id: 1,
                pid: 5,
                namespace: "default".into(),
            },
            line: "x\n".into(),
            at: 7,
        };
        assert_eq!(Event::parse(&line).unwrap(), want);
        let line = format!(r#"{{"event":"process:msg","data":{{{p},"raw":"ready","at":1}}}}"#);
        let Event::Message { kind, data, .. } = Event::parse(&line).unwrap() else {
            panic!("not a message");
        };
        assert_eq!((kind.as_str(), data), ("process:msg", json!("ready")));
        let line = format!(r#"{{"event":"custom","data":{{{p},"data":{{"k":1}},"at":1}}}}"#);
        let Event::Message { kind, data, .. } = Event::parse(&line).unwrap() else {
            panic!("not a message");
        };
        assert_eq!((kind.as_str(), data), ("custom", json!({"k": 1})));
        assert_eq!(
            Event::parse(r#"{"event":"bus:dropped","data":{"count":3}}"#).unwrap(),
            Event::Dropped { count: 3 }
        );
        assert_eq!(
            Event::parse(r#"{"event":"daemon:update","data":{"pid":42,"at":7}}"#).unwrap(),
            Event::DaemonUpdate { pid: 42, at: 7 }
        );
        assert!(Event::parse("{").is_err());
    }

    #[test]
    fn echoes_the_id_of_a_refused_request() {
        let (id, e) = Request::parse(br#"{"id":"x","cmd":"nope"}"#).unwrap_err();
        assert_eq!(id, json!("x"));
        assert_eq!(e.code, ErrorCode::UnknownCommand);
    }

    #[test]
    fn a_request_survives_its_own_line() {
        let reqs = [
            Command::Ping,
            Command::Act(Action::Delete, Target::Id(4)),
            Command::SendSignal {
                signal: json!(10),
                target: Target::All,
            },
            Command::Start(StartArgs {
                apps: vec![json!({"script":"x"})],
                target: None,
                env_name: Some("prod".into()),
                caller_env: Some(BTreeMap::from([("A".into(), "1".into())])),
            }),
            Command::Dump { force: true },
            Command::Dump { force: false },
            Command::Resurrect {
                apps: Some(vec![json!({"name": "a"})]),
            },
            Command::Resurrect { apps: None },
            Command::UpdateDaemon,
        ];
        for cmd in reqs {
            let req = Request {
                id: json!(9),
                cmd: cmd.clone(),
            };
            let line = req.to_line();
            let back = Request::parse(line.trim_end().as_bytes()).unwrap();
            assert_eq!(back, req);
        }
    }

    #[test]
    fn a_success_line_ends_with_its_result() {
        let w = |ws: &[&str]| ws.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (id, result, warnings): the line reads back as a Response with
        // them; without warnings it is the head, the result and "}\n".
        let cases: &[(Value, &str, Vec<String>)] = &[
            (json!(1), "[]", w(&[])),
            (json!(42), r#"[{"name":"a}","x":"]}\n"}]"#, w(&[])),
            (json!("alive-3"), r#"{"pid":1}"#, w(&[])),
            (json!(7), "[1,2]", w(&["`foo` has no effect", "quote \" }"])),
            (Value::Null, "0", w(&[])),
        ];
        for (id, result, warnings) in cases {
            let line = ok_line(id, result.to_string(), warnings);
            assert!(line.ends_with(&format!("{result}}}\n")), "{line}");
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            let resp: Response = serde_json::from_str(&line).unwrap();
            assert!(resp.ok);
            assert_eq!(resp.result.unwrap().get(), *result, "{line}");
            assert_eq!(&resp.warnings, warnings);
            let plain = format!("{}{result}}}\n", ok_head(id));
            assert_eq!(line == plain, warnings.is_empty(), "{line}");
        }
    }
}
