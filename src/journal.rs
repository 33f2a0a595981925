//! The journal: the process table on disk as the daemon last saw it, so a
//! daemon that died without warning (SIGKILL, the OOM killer, a panic) is
//! followed by one that knows exactly what was running. Pure: the text of a
//! journal, and what a new daemon must do with one; the daemon does the
//! file (`daemon/persist.rs`).
//!
//! ```json
//! {"version": 1, "boot_id": "…", "daemon_pid": 4242, "clean": false,
//!  "apps": [{<a dump entry>, "restart_time": 3, "unstable_restarts": 0,
//!            "created_at": 1764…, "base_env": 0,
//!            "processes": [{"pid": 4300, "starttime": 123456}]}],
//!  "envs": [{…}]}
//! ```
//!
//! Rules (the man page says them too):
//! - Written atomically (`.tmp` + rename) at most once per wake, only when
//!   the table changed. Not fsync'd: it must survive the daemon's death,
//!   which the page cache does; a power loss is a reboot, after which the
//!   journal is not used anyway (its boot id differs).
//! - `clean` is set when the daemon stopped on request (SIGTERM, SIGINT,
//!   `kill`): a clean stop is never recovered — after a reboot or a clean
//!   stop, `resurrect` (the boot unit's) brings the dump back.
//! - A journal of this boot that is not clean was left by a daemon that
//!   died: every app comes back with its pm_id, name, namespace, options
//!   and counters. A process of the old daemon that still runs — the same
//!   pid *and* the same start time in `/proc/<pid>/stat`, so a recycled pid
//!   is never touched — is stopped by its group (kill signal, kill timeout,
//!   SIGKILL) before its app starts again.
//! - Unlike the dump, an entry keeps the environment the app inherited
//!   (`base_env`: the caller's, for a start from the command line), so a
//!   recovered app runs as it ran; each environment is kept once in `envs`
//!   and named by its index, as the apps of one start share it. The file
//!   is 0600 in the 0700 home.
//! - A journal that cannot be read is set aside (`journal.json.corrupt`)
//!   with a message, and the daemon starts afresh: never a crash loop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dump::Saved;

/// The journal's file name in the home.
pub const FILE: &str = "journal.json";
/// The version written, and the highest read.
pub const VERSION: u64 = 1;

/// One process of an app when the journal was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: with the pid, it names the process.
    pub starttime: u64,
}

/// One app of the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct App {
    #[serde(flatten)]
    pub saved: Saved,
    #[serde(default)]
    pub restart_time: u32,
    #[serde(default)]
    pub unstable_restarts: u32,
    #[serde(default)]
    pub created_at: u64,
    /// The environment it inherited instead of the daemon's: an index in
    /// the journal's `envs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_env: Option<usize>,
    /// Its processes (main, replacement, draining) that were running.
    #[serde(default)]
    pub processes: Vec<Proc>,
}

/// The whole journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub version: u64,
    pub boot_id: String,
    pub daemon_pid: u32,
    /// The daemon stopped on request: nothing to recover.
    pub clean: bool,
    pub apps: Vec<App>,
    /// The environments the apps inherited, each once.
    #[serde(default)]
    pub envs: Vec<BTreeMap<String, String>>,
}

/// What a new daemon does with the journal it finds.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Nothing to recover; why, for the daemon's log (`None`: no journal).
    Nothing(Option<String>),
    /// The previous daemon died: bring these apps back.
    Recover {
        daemon_pid: u32,
        apps: Vec<App>,
        envs: Vec<BTreeMap<String, String>>,
    },
    /// The journal cannot be read: set it aside, start afresh.
    Corrupt(String),
}

impl Journal {
    /// Its text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What to do with the journal `text` (None: there is none) on a machine
/// whose boot id is `boot_id`.
pub fn plan(text: Option<&str>, boot_id: &str) -> Plan {
    let Some(text) = text else {
        return Plan::Nothing(None);
    };
    let j: Journal = match serde_json::from_str(text) {
        Ok(j) => j,
        Err(e) => return Plan::Corrupt(format!("unreadable ({e})")),
    };
    if j.version > VERSION {
        return Plan::Corrupt(format!(
            "version {} is newer than this corral's ({VERSION})",
            j.version
        ));
    }
    if j.clean {
        return Plan::Nothing(Some(format!(
            "the previous daemon (pid {}) stopped cleanly: nothing to recover",
            j.daemon_pid
        )));
    }
    if j.boot_id != boot_id {
        return Plan::Nothing(Some(format!(
            "the journal is from an earlier boot: {} apps not started (`corral resurrect` brings the dump back)",
            j.apps.len()
        )));
    }
    if j.apps.is_empty() {
        return Plan::Nothing(Some(format!(
            "the previous daemon (pid {}) died with no app",
            j.daemon_pid
        )));
    }
    Plan::Recover {
        daemon_pid: j.daemon_pid,
        apps: j.apps,
        envs: j.envs,
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`); empty if unknown,
/// which never matches a journal's.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::Wanted;
    use serde_json::json;

    fn app(name: &str, pid: i32) -> App {
        App {
            saved: Saved {
                name: name.into(),
                pm_id: 0,
                namespace: "default".into(),
                instance: 0,
                instances: 1,
                wanted: Wanted::Online,
                env_name: None,
                options: json!({"script": "a.sh", "name": name}),
            },
            restart_time: 2,
            unstable_restarts: 1,
            created_at: 5,
            base_env: Some(0),
            processes: vec![Proc { pid, starttime: 77 }],
        }
    }

    fn journal(clean: bool, boot: &str, apps: Vec<App>) -> String {
        Journal {
            version: VERSION,
            boot_id: boot.into(),
            daemon_pid: 9,
            clean,
            apps,
            envs: vec![BTreeMap::from([("PATH".into(), "/bin".into())])],
        }
        .to_text()
    }

    #[test]
    fn plans_from_a_table() {
        let died = journal(false, "b1", vec![app("a", 10)]);
        let cases: Vec<(&str, Option<String>, Plan)> = vec![
            ("no journal", None, Plan::Nothing(None)),
            (
                "a dead daemon of this boot",
                Some(died.clone()),
                Plan::Recover {
                    daemon_pid: 9,
                    apps: vec![app("a", 10)],
                    envs: vec![BTreeMap::from([("PATH".into(), "/bin".into())])],
                },
            ),
            (
                "a clean stop",
                Some(journal(true, "b1", vec![app("a", 10)])),
                Plan::Nothing(Some(
                    "the previous daemon (pid 9) stopped cleanly: nothing to recover".into(),
                )),
            ),
            (
                "an earlier boot",
                Some(journal(false, "b0", vec![app("a", 10)])),
                Plan::Nothing(Some(
                    "the journal is from an earlier boot: 1 apps not started (`corral resurrect` brings the dump back)".into(),
                )),
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(plan(text.as_deref(), "b1"), want, "{name}");
        }
    }

    #[test]
    fn torn_or_foreign_journals_are_corrupt_not_fatal() {
        let died = journal(false, "b1", vec![app("a", 10)]);
        for text in [
            &died[..died.len() / 2],
            "",
            "[]",
            "{\"version\": 1}",
            "{\"version\": 99, \"boot_id\": \"b1\", \"daemon_pid\": 1, \"clean\": false, \"apps\": []}",
        ] {
            assert!(
                matches!(plan(Some(text), "b1"), Plan::Corrupt(_)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_boot_id_is_read() {
        let id = boot_id();
        assert_eq!(id.len(), 36, "{id}");
    }
}
