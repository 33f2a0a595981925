//! The dump: one versioned serialization of the process table — each app's
//! identity (name, pm_id, namespace, instance), its wanted state and the
//! options it was started with — written by `dump`, read by `resurrect`,
//! and made to be reused by a journal of the table. Also the import of
//! PM2's own `dump.pm2`. Pure: text in, text or values out; the daemon
//! does the files.
//!
//! The file (`$DUMP_FILE_PATH`, else `$CORRAL_HOME/dump.json`):
//!
//! ```json
//! {"version": 1, "apps": [
//!   {"name": "api", "pm_id": 0, "namespace": "default",
//!    "instance": 0, "instances": 2, "wanted": "online",
//!    "env_name": "production",
//!    "options": {"script": "api.js", "cwd": "/srv/api", "env": {"PORT": "3000"}}}
//! ]}
//! ```
//!
//! Decisions:
//! - `options` is the app's options object exactly as the start request
//!   gave it (validated then, validated again when read), with `cwd` made
//!   absolute and `name` set, rather than a re-serialization of `AppSpec`:
//!   a new option needs no code here, and what comes back is what was
//!   asked for. The caller's environment (`caller_env`) is never saved:
//!   only the `env` keys given (and the `env_<name>` overlays).
//! - One entry per process (per pm_id), as PM2 does; `instance` and
//!   `instances` put the instances of a name back in their slots.
//! - Readers ignore keys they do not know, so a later writer (the
//!   journal) may add fields without a new version; a file whose version
//!   is higher than [`VERSION`] is refused with a message saying so.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::options::parse_app;

/// The version this corral writes and the highest it reads.
pub const VERSION: u64 = 1;

/// What the user wanted of an app when it was saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wanted {
    /// Running (online, launching, waiting to restart, or errored: it was
    /// meant to run).
    Online,
    /// Stopped by the user, never started, or ended for good: it comes
    /// back installed, not started.
    Stopped,
}

/// One process of the table as the dump keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub name: String,
    pub pm_id: u32,
    pub namespace: String,
    /// Its index among the instances of its name.
    #[serde(default)]
    pub instance: u32,
    /// How many instances its name has.
    #[serde(default = "one")]
    pub instances: u32,
    pub wanted: Wanted,
    /// The `env_<name>` overlay it was started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_name: Option<String>,
    /// The options object it was started with.
    pub options: Value,
}

fn one() -> u32 {
    1
}

/// The text of a dump of `apps`.
pub fn to_text(apps: &[Saved]) -> String {
    // `version` first, for a person reading the file.
    let list = serde_json::to_string_pretty(apps).unwrap_or_else(|_| "[]".into());
    format!(
        "{{\n  \"version\": {VERSION},\n  \"apps\": {}\n}}\n",
        list.replace('\n', "\n  ")
    )
}

/// What a dump file held.
#[derive(Debug, PartialEq)]
pub struct Read {
    pub apps: Vec<Saved>,
    /// Said once about the whole file (PM2's fields ignored, …).
    pub warnings: Vec<String>,
    /// PM2's `dump.pm2` rather than corral's own.
    pub pm2: bool,
}

/// Read a dump: corral's (`{"version":1,"apps":[...]}`) or PM2's (an
/// array of `pm2_env` objects). `label` names the file in errors.
pub fn read(text: &str, label: &str) -> Result<Read, String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("{label}: not a dump (unreadable JSON: {e})"))?;
    match v {
        Value::Array(list) => {
            let (apps, warnings) = from_pm2(&list, label)?;
            Ok(Read {
                apps,
                warnings,
                pm2: true,
            })
        }
        Value::Object(obj) => Ok(Read {
            apps: from_corral(obj, label)?,
            warnings: Vec::new(),
            pm2: false,
        }),
        _ => Err(format!(
            "{label}: not a dump (expected {{\"version\", \"apps\"}} or PM2's array)"
        )),
    }
}

fn from_corral(mut obj: Map<String, Value>, label: &str) -> Result<Vec<Saved>, String> {
    let version = obj
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{label}: not a corral dump (no numeric `version`)"))?;
    if version == 0 || version > VERSION {
        return Err(format!(
            "{label}: dump version {version} is not one this corral reads (it reads {VERSION})"
        ));
    }
    let Some(Value::Array(list)) = obj.remove("apps") else {
        return Err(format!("{label}: `apps` must be an array"));
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| entry(v).map_err(|e| format!("{label}: apps[{i}]: {e}")))
        .collect()
}

/// One entry, checked.
pub fn entry(v: Value) -> Result<Saved, String> {
    let s: Saved = serde_json::from_value(v).map_err(|e| e.to_string())?;
    if !s.options.is_object() {
        return Err(format!("{}: `options` must be an object", s.name));
    }
    if s.instances == 0 || s.instance >= s.instances {
        return Err(format!(
            "{}: instance {} of {} is out of range",
            s.name, s.instance, s.instances
        ));
    }
    Ok(s)
}

/// `pm2_env` fields that are PM2's runtime state or derived from the
/// options (paths it resolved, counters, monitoring), and PM2's defaults
/// for options that mean nothing here: never options, skipped.
const PM2_RUNTIME: &[&str] = &[
    "pm_id",
    "status",
    "pm_uptime",
    "created_at",
    "restart_time",
    "unstable_restarts",
    "prev_restart_delay",
    "exit_code",
    "axm_actions",
    "axm_monitor",
    "axm_options",
    "axm_dynamic",
    "vizion_running",
    "km_link",
    "_pm2_version",
    "version",
    "node_version",
    "unique_id",
    "pm_exec_path",
    "pm_cwd",
    "pm_out_log_path",
    "pm_err_log_path",
    "pm_pid_path",
    "pm_log_path",
    "instances",
    "username",
    "windowsHide",
    "kill_retry_time",
    "automation",
    "pmx",
    "vizion",
    "versioning",
    // Already applied to `env` and `name` when PM2 started the app.
    "filter_env",
    "append_env_to_name",
    // Taken from pm_exec_path / pm_cwd, which PM2 resolved.
    "script",
    "cwd",
    "env",
    "exec_interpreter",
    "node_args",
];

/// Variables of PM2's `env` that PM2 or corral set themselves.
fn pm2_own_var(key: &str, name: &str, instance_var: &str) -> bool {
    key.starts_with("PM2_")
        || matches!(
            key,
            "unique_id" | "pm_id" | "name" | "namespace" | "km_link" | "vizion_running"
        )
        || key == name
        || key == instance_var
        || key == "NODE_APP_INSTANCE"
        || key.starts_with("CORRAL_")
        || matches!(key, "NODE_CHANNEL_FD" | "NODE_UNIQUE_ID" | "NOTIFY_SOCKET")
}

/// A top-level key of `pm2_env` that is a variable PM2 copied from `env`
/// (PM2 flattens the environment into `pm2_env`): options are lower case.
fn is_env_var_name(key: &str) -> bool {
    key.chars().any(|c| c.is_ascii_uppercase())
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// PM2's default log or pid path (`<PM2_HOME>/logs/<name>-out[-N].log`,
/// `<PM2_HOME>/pids/<name>-N.pid`): corral chooses its own.
fn pm2_default_path(path: &str, dir: &str) -> bool {
    std::path::Path::new(path)
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|d| d == dir)
}

/// PM2's `dump.pm2` (an array of `pm2_env` objects, `pm_id` and
/// `instances` removed by PM2) as corral entries. Fields that are PM2's
/// runtime state are skipped; option fields go through corral's option
/// parser, so one corral cannot honour is refused, naming the app and the
/// field.
pub fn from_pm2(list: &[Value], label: &str) -> Result<(Vec<Saved>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut envs = 0;
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    for (i, v) in list.iter().enumerate() {
        let at = |m: String| format!("{label}: app {i}: {m}");
        let Some(p) = v.as_object() else {
            return Err(at("expected an object (a pm2_env)".into()));
        };
        // PM2 modules are PM2's own plugins, not apps.
        if p.get("pmx_module")
            .is_some_and(|m| m != &Value::Bool(false))
        {
            continue;
        }
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| at("no `name`".into()))?
            .to_string();
        let at = |m: String| format!("{label}: app {i} ({name}): {m}");
        let script = p
            .get("pm_exec_path")
            .or_else(|| p.get("script"))
            .and_then(Value::as_str)
            .ok_or_else(|| at("no `pm_exec_path`".into()))?;
        let instance_var = p
            .get("instance_var")
            .and_then(Value::as_str)
            .unwrap_or("NODE_APP_INSTANCE")
            .to_string();
        let mut o = Map::new();
        o.insert("name".into(), json!(name));
        o.insert("script".into(), json!(script));
        if let Some(cwd) = p.get("pm_cwd").or_else(|| p.get("cwd")) {
            o.insert("cwd".into(), cwd.clone());
        }
        match p.get("exec_interpreter").and_then(Value::as_str) {
            // PM2 resolves node to its own path; "node" finds it on PATH.
            Some(i) if i.ends_with("/node") || i == "node" => {
                o.insert("interpreter".into(), json!("node"));
            }
            Some(i) => {
                o.insert("interpreter".into(), json!(i));
            }
            None => {}
        }
        if let Some(a) = p.get("node_args").filter(|a| !is_empty(a)) {
            o.insert("interpreter_args".into(), a.clone());
        }
        let mut env = BTreeMap::new();
        if let Some(Value::Object(e)) = p.get("env") {
            for (k, v) in e {
                if pm2_own_var(k, &name, &instance_var) {
                    continue;
                }
                match v {
                    Value::String(s) => {
                        env.insert(k.clone(), s.clone());
                    }
                    Value::Number(_) | Value::Bool(_) => {
                        env.insert(k.clone(), v.to_string());
                    }
                    _ => {
                        dropped.insert(format!("{name}: env {k}"));
                    }
                }
            }
        }
        if !env.is_empty() {
            envs += 1;
            o.insert("env".into(), json!(env));
        }
        let saved_env = p.get("env").and_then(Value::as_object);
        for (k, v) in p {
            // PM2 copies every variable of `env` into pm2_env itself.
            let flattened = saved_env.is_some_and(|e| e.get(k) == Some(v));
            if flattened
                || PM2_RUNTIME.contains(&k.as_str())
                || k == &instance_var
                || k.starts_with("env_")
                || k == "pmx_module"
                || is_env_var_name(k)
                || o.contains_key(k)
            {
                continue;
            }
            let default_file = match k.as_str() {
                "out_file" | "error_file" | "log_file" => v
                    .as_str()
                    .is_some_and(|p| pm2_default_path(p, "logs") && !p.ends_with("/dev/null")),
                "pid_file" => v.as_str().is_some_and(|p| pm2_default_path(p, "pids")),
                _ => false,
            };
            // PM2 keeps unset options as null or false.
            if default_file || v.is_null() || (k == "log_file" && v == &Value::Bool(false)) {
                continue;
            }
            o.insert(k.clone(), v.clone());
        }
        let options = Value::Object(o);
        let parsed = parse_app(&options).map_err(|e| at(format!("cannot import: {e}")))?;
        let wanted = match p.get("status").and_then(Value::as_str) {
            Some("stopped") => Wanted::Stopped,
            _ => Wanted::Online,
        };
        out.push(Saved {
            name: parsed.spec.name.clone(),
            pm_id: 0,
            namespace: parsed.spec.namespace.clone().into_owned(),
            instance: 0,
            instances: 1,
            wanted,
            env_name: None,
            options,
        });
    }
    // PM2 removes pm_id and instances: number the entries in order, and
    // the instances of each name.
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for s in &out {
        *counts.entry(s.name.clone()).or_default() += 1;
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for (i, s) in out.iter_mut().enumerate() {
        s.pm_id = i as u32;
        let n = seen.entry(s.name.clone()).or_default();
        s.instance = *n;
        *n += 1;
        s.instances = counts.get(&s.name).copied().unwrap_or(1);
    }
    let mut warnings = Vec::new();
    if envs > 0 {
        warnings.push(format!(
            "{label}: PM2 saves the whole environment of the shell that started each app; \
             it was imported as the apps' `env` ({envs} apps), which `corral describe` shows"
        ));
    }
    if !dropped.is_empty() {
        let list: Vec<String> = dropped.into_iter().collect();
        warnings.push(format!(
            "{label}: variables that are not strings were left out: {}",
            list.join(", ")
        ));
    }
    Ok((out, warnings))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(name: &str, pm_id: u32) -> Saved {
        Saved {
            name: name.into(),
            pm_id,
            namespace: "default".into(),
            instance: 0,
            instances: 1,
            wanted: Wanted::Online,
            env_name: None,
            options: json!({"name": name, "script": "a.sh", "env": {"A": "1"}}),
        }
    }

    #[test]
    fn a_dump_reads_back_what_it_wrote() {
        let mut b = saved("b", 3);
        b.wanted = Wanted::Stopped;
        b.env_name = Some("prod".into());
        let apps = vec![saved("a", 0), b];
        let text = to_text(&apps);
        let r = read(&text, "d.json").unwrap();
        assert_eq!(r.apps, apps);
        assert!(!r.pm2);
        assert!(text.contains("\"wanted\": \"stopped\""));
    }

    #[test]
    fn bad_dumps_are_refused_naming_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("{", "unreadable JSON"),
            ("3", "not a dump"),
            (r#"{"apps":[]}"#, "no numeric `version`"),
            (r#"{"version":2,"apps":[]}"#, "dump version 2"),
            (r#"{"version":1}"#, "`apps` must be an array"),
            (
                r#"{"version":1,"apps":[{"name":"a","pm_id":0,"namespace":"d","wanted":"up","options":{}}]}"#,
                "apps[0]: unknown variant `up`",
            ),
            (
                r#"{"version":1,"apps":[{"name":"a","pm_id":0,"namespace":"d","wanted":"online","options":[]}]}"#,
                "apps[0]: a: `options` must be an object",
            ),
            (
                r#"{"version":1,"apps":[{"name":"a","pm_id":0,"namespace":"d","instance":2,"instances":2,"wanted":"online","options":{}}]}"#,
                "instance 2 of 2",
            ),
        ];
        for (text, want) in cases {
            let e = read(text, "d.json").unwrap_err();
            assert!(e.starts_with("d.json: "), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_ignored_for_later_writers() {
        let text = r#"{"version":1,"boot_id":"x","apps":[{"name":"a","pm_id":4,
            "namespace":"default","wanted":"online","options":{"script":"a"},"pid":7}]}"#;
        let r = read(text, "j").unwrap();
        assert_eq!(r.apps.len(), 1);
        assert_eq!((r.apps[0].pm_id, r.apps[0].instances), (4, 1));
    }

    fn pm2_env(name: &str, extra: Value) -> Value {
        let mut v = json!({
            "name": name, "namespace": "default", "pm_exec_path": "/srv/app.js",
            "pm_cwd": "/srv", "exec_interpreter": "/usr/local/bin/node", "node_args": [],
            "exec_mode": "fork_mode", "status": "online", "pm_uptime": 1, "created_at": 1,
            "restart_time": 3, "unstable_restarts": 0, "axm_actions": [], "axm_monitor": {},
            "vizion": true, "automation": true, "pmx": true, "treekill": true,
            "autorestart": true, "autostart": true, "instance_var": "NODE_APP_INSTANCE",
            "NODE_APP_INSTANCE": 0, "merge_logs": false, "watch": false,
            "pm_out_log_path": "/home/u/.pm2/logs/a-out.log",
            "pm_pid_path": "/home/u/.pm2/pids/a-0.pid", "unique_id": "u",
            "kill_retry_time": 100, "windowsHide": true, "username": "u",
            "PATH": "/usr/bin", "PORT": "3000", "http_proxy": "h", "_": "/usr/bin/pm2",
        });
        v["env"] = json!({"PATH": "/usr/bin", "PORT": "3000", "PM2_HOME": "/home/u/.pm2",
                          "unique_id": "u", "N": 5, "http_proxy": "h", "_": "/usr/bin/pm2"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn pm2_dumps_map_to_options() {
        let list = vec![
            pm2_env(
                "api",
                json!({"max_memory_restart": 1024, "args": ["-p", "1"]}),
            ),
            pm2_env(
                "w",
                json!({"exec_mode": "cluster_mode", "NODE_APP_INSTANCE": 0}),
            ),
            pm2_env(
                "w",
                json!({"exec_mode": "cluster_mode", "NODE_APP_INSTANCE": 1, "status": "stopped"}),
            ),
        ];
        let (apps, warnings) = from_pm2(&list, "dump.pm2").unwrap();
        assert_eq!(apps.len(), 3);
        let o = &apps[0].options;
        assert_eq!(o["script"], json!("/srv/app.js"));
        assert_eq!(o["cwd"], json!("/srv"));
        assert_eq!(o["interpreter"], json!("node"));
        assert_eq!(o["max_memory_restart"], json!(1024));
        assert_eq!(o["args"], json!(["-p", "1"]));
        assert_eq!(
            o["env"],
            json!({"PATH": "/usr/bin", "PORT": "3000", "N": "5", "http_proxy": "h", "_": "/usr/bin/pm2"})
        );
        for k in [
            "http_proxy",
            "_",
            "PORT",
            "pm_uptime",
            "status",
            "vizion",
            "unique_id",
            "output",
        ] {
            assert!(o.get(k).is_none(), "{k} in {o}");
        }
        let ids: Vec<(u32, u32, u32, Wanted)> = apps
            .iter()
            .map(|s| (s.pm_id, s.instance, s.instances, s.wanted))
            .collect();
        assert_eq!(
            ids,
            vec![
                (0, 0, 1, Wanted::Online),
                (1, 0, 2, Wanted::Online),
                (2, 1, 2, Wanted::Stopped)
            ]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn pm2_fields_corral_cannot_honour_are_refused_by_name() {
        let cases: &[(Value, &str)] = &[
            (json!({"log_type": "xml"}), "log_type"),
            (json!({"exec_mode": "spawn_mode"}), "exec_mode"),
            (json!({"max_restarts": "x"}), "max_restarts"),
        ];
        for (extra, key) in cases {
            let e = from_pm2(&[pm2_env("api", extra.clone())], "d.pm2").unwrap_err();
            assert!(e.starts_with("d.pm2: app 0 (api): "), "{e}");
            assert!(e.contains(key), "{key}: {e}");
        }
        // Chosen paths are kept; PM2's defaults are not.
        let (apps, _) = from_pm2(
            &[pm2_env(
                "api",
                json!({"out_file": "/var/log/api.log", "error_file": "/home/u/.pm2/logs/api-error.log"}),
            )],
            "d",
        )
        .unwrap();
        assert_eq!(apps[0].options["out_file"], json!("/var/log/api.log"));
        assert!(apps[0].options.get("error_file").is_none());
        assert!(from_pm2(&[json!(3)], "d").is_err());
        assert!(from_pm2(&[json!({"name": "a"})], "d").is_err());
    }

    #[test]
    fn read_tells_pm2_from_corral() {
        let text = serde_json::to_string(&vec![pm2_env("api", json!({}))]).unwrap();
        let r = read(&text, "d").unwrap();
        assert!(r.pm2);
        assert_eq!(r.apps[0].name, "api");
    }
}
