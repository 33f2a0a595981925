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

use crate::dump::{Saved, Wanted};
use crate::jsonw::{array, boolean, int, string, uint};

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
    /// Its text, as `Writer` writes it.
    #[cfg(test)]
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One app as the daemon holds it, borrowed, for `Writer::app`: the fields
/// of its `App` entry, with its options as the text they were given in.
pub struct Entry<'a> {
    pub name: &'a str,
    pub pm_id: u32,
    pub namespace: &'a str,
    pub instance: u32,
    pub instances: u32,
    pub wanted: Wanted,
    pub env_name: Option<&'a str>,
    /// The options object as given (`app::Given`); the entry's `options`
    /// are these with `cwd` and `name` set as below.
    pub options: &'a serde_json::value::RawValue,
    pub cwd: &'a str,
    pub restart_time: u32,
    pub unstable_restarts: u32,
    pub created_at: u64,
    pub base_env: Option<usize>,
    /// Its processes: (pid, start time).
    pub processes: &'a [(i32, u64)],
}

/// The journal's text, written app by app: the text a `Journal` of the
/// same apps serializes to (the same JSON value), without building one.
/// The journal is rewritten after every change of the table (each restart
/// of each app), so this is on the daemon's busiest path: each app's
/// options are copied as the text they are kept in, not parsed into a
/// `Value` and written out again (with 1000 apps that was most of the
/// daemon's CPU in a restart).
pub struct Writer {
    out: Vec<u8>,
    first: bool,
}

impl Writer {
    pub fn new(boot_id: &str, daemon_pid: u32, clean: bool) -> Writer {
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"version\":");
        uint(&mut out, VERSION);
        out.extend_from_slice(b",\"boot_id\":");
        string(&mut out, boot_id);
        out.extend_from_slice(b",\"daemon_pid\":");
        uint(&mut out, daemon_pid.into());
        out.extend_from_slice(b",\"clean\":");
        boolean(&mut out, clean);
        out.extend_from_slice(b",\"apps\":[");
        Writer { out, first: true }
    }

    /// The next app's entry.
    pub fn app(&mut self, e: &Entry) {
        let out = &mut self.out;
        if !std::mem::take(&mut self.first) {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        string(out, e.name);
        out.extend_from_slice(b",\"pm_id\":");
        uint(out, e.pm_id.into());
        out.extend_from_slice(b",\"namespace\":");
        string(out, e.namespace);
        out.extend_from_slice(b",\"instance\":");
        uint(out, e.instance.into());
        out.extend_from_slice(b",\"instances\":");
        uint(out, e.instances.into());
        out.extend_from_slice(match e.wanted {
            Wanted::Online => b",\"wanted\":\"online\"",
            Wanted::Stopped => b",\"wanted\":\"stopped\"",
        });
        if let Some(env_name) = e.env_name {
            out.extend_from_slice(b",\"env_name\":");
            string(out, env_name);
        }
        out.extend_from_slice(b",\"restart_time\":");
        uint(out, e.restart_time.into());
        out.extend_from_slice(b",\"unstable_restarts\":");
        uint(out, e.unstable_restarts.into());
        out.extend_from_slice(b",\"created_at\":");
        uint(out, e.created_at);
        if let Some(i) = e.base_env {
            out.extend_from_slice(b",\"base_env\":");
            uint(out, i as u64);
        }
        out.extend_from_slice(b",\"processes\":");
        array(out, e.processes.iter(), |out, &(pid, starttime)| {
            out.extend_from_slice(b"{\"pid\":");
            int(out, pid.into());
            out.extend_from_slice(b",\"starttime\":");
            uint(out, starttime);
            out.push(b'}');
        });
        out.extend_from_slice(b",\"options\":");
        let given = e.options.get().trim();
        match given.strip_prefix('{').and_then(|g| g.strip_suffix('}')) {
            // An object: its members, then `cwd` and `name` (last, so they
            // are what a reader keeps where the given options have them
            // too: serde_json keeps the last of two equal keys).
            Some(members) => {
                out.push(b'{');
                out.extend_from_slice(members.as_bytes());
                if !members.trim().is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"cwd\":");
                string(out, e.cwd);
                out.extend_from_slice(b",\"name\":");
                string(out, e.name);
                out.push(b'}');
            }
            None => out.extend_from_slice(given.as_bytes()),
        }
        out.push(b'}');
    }

    /// The text (UTF-8: only whole strings went in), with the environments
    /// the apps' `base_env` name.
    pub fn finish(mut self, envs: &[&BTreeMap<String, String>]) -> Vec<u8> {
        self.out.extend_from_slice(b"],\"envs\":");
        let _ = serde_json::to_writer(&mut self.out, envs);
        self.out.push(b'}');
        self.out
    }
}

/// A digest of a journal's text, to tell whether it changed since the last
/// write: eight bytes per step, each step a bijection of the state (an odd
/// multiply, then the high half folded into the low), so two texts of one
/// length that differ in one word never have the same digest, and changes
/// in several words do not cancel out (a multiply alone only carries a
/// change upwards: two changed digits in the top bytes of their words met
/// one time in 150); the length is in it too. Not for an adversary;
/// SipHash over 150 kB (1000 apps) was a tenth of a restart's CPU.
pub fn digest(text: &[u8]) -> u64 {
    const P: u64 = 0x9e37_79b9_7f4a_7c15;
    let step = |h: u64, w: u64| {
        let h = (h ^ w).wrapping_mul(P);
        h ^ (h >> 29)
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ text.len() as u64;
    let mut words = text.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = step(h, u64::from_le_bytes(b));
    }
    for &b in words.remainder() {
        h = step(h, u64::from(b));
    }
    h
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

    /// The Writer's text is the same JSON value as the `Journal` of the same
    /// apps (the options as `saved_entry` makes them: the given object with
    /// `cwd` and `name` set), whatever the options and the strings hold.
    #[test]
    fn the_writer_writes_what_a_journal_serializes_to() {
        use serde_json::value::{RawValue, to_raw_value};
        // (given options, the options the entry must hold)
        let cases: Vec<(serde_json::Value, serde_json::Value)> = vec![
            (
                json!({"script": "a.sh", "args": ["x", "y z"], "env": {"A": "1"}}),
                json!({"script": "a.sh", "args": ["x", "y z"], "env": {"A": "1"},
                       "cwd": "/srv/a \"q\"\n\u{e9}", "name": "api"}),
            ),
            // Nothing given but what was resolved.
            (
                json!({}),
                json!({"cwd": "/srv/a \"q\"\n\u{e9}", "name": "api"}),
            ),
            // Given cwd and name are replaced by the resolved ones.
            (
                json!({"name": "other", "cwd": "rel", "max_memory_restart": 5}),
                json!({"max_memory_restart": 5, "cwd": "/srv/a \"q\"\n\u{e9}", "name": "api"}),
            ),
            // Not an object: kept as it is.
            (json!(null), json!(null)),
        ];
        let env = BTreeMap::from([("PATH".to_string(), "/bin:\"x\"".to_string())]);
        for (i, (given, want)) in cases.into_iter().enumerate() {
            let raw: Box<RawValue> = to_raw_value(&given).unwrap();
            let procs = [(7, 70), (8, 80)];
            let entries = [
                Entry {
                    name: "api",
                    pm_id: 3,
                    namespace: "ns \u{1}",
                    instance: 1,
                    instances: 2,
                    wanted: Wanted::Online,
                    env_name: Some("production"),
                    options: &raw,
                    cwd: "/srv/a \"q\"\n\u{e9}",
                    restart_time: 4,
                    unstable_restarts: 2,
                    created_at: 1_764_000_000_000,
                    base_env: Some(0),
                    processes: &procs,
                },
                Entry {
                    name: "api",
                    pm_id: 4,
                    namespace: "default",
                    instance: 0,
                    instances: 1,
                    wanted: Wanted::Stopped,
                    env_name: None,
                    options: &raw,
                    cwd: "/srv/a \"q\"\n\u{e9}",
                    restart_time: 0,
                    unstable_restarts: 0,
                    created_at: 0,
                    base_env: None,
                    processes: &[],
                },
            ];
            let mut w = Writer::new("boot \"7\"", 42, i % 2 == 0);
            for e in &entries {
                w.app(e);
            }
            let text = String::from_utf8(w.finish(&[&env])).unwrap();
            let got: Journal = serde_json::from_str(&text).unwrap();
            let apps = entries
                .iter()
                .map(|e| App {
                    saved: Saved {
                        name: e.name.into(),
                        pm_id: e.pm_id,
                        namespace: e.namespace.into(),
                        instance: e.instance,
                        instances: e.instances,
                        wanted: e.wanted,
                        env_name: e.env_name.map(str::to_string),
                        options: want.clone(),
                    },
                    restart_time: e.restart_time,
                    unstable_restarts: e.unstable_restarts,
                    created_at: e.created_at,
                    base_env: e.base_env,
                    processes: e
                        .processes
                        .iter()
                        .map(|&(pid, starttime)| Proc { pid, starttime })
                        .collect(),
                })
                .collect();
            let expected = Journal {
                version: VERSION,
                boot_id: "boot \"7\"".into(),
                daemon_pid: 42,
                clean: i % 2 == 0,
                apps,
                envs: vec![env.clone()],
            };
            assert_eq!(got, expected, "case {i}: {text}");
            // The same value as the serde text, not only the same parse.
            let a: serde_json::Value = serde_json::from_str(&text).unwrap();
            let b: serde_json::Value = serde_json::from_str(&expected.to_text()).unwrap();
            assert_eq!(a, b, "case {i}");
        }
        // No apps at all.
        let text = Writer::new("b", 1, true).finish(&[]);
        let got: Journal = serde_json::from_slice(&text).unwrap();
        assert!(got.apps.is_empty() && got.envs.is_empty() && got.clean);
    }

    #[test]
    fn the_digest_changes_with_any_byte_and_the_length() {
        let text: Vec<u8> =
            br#"{"version":1,"apps":[{"name":"api","pm_id":3,"restart_time":4}]}"#.to_vec();
        let d = digest(&text);
        assert_eq!(d, digest(&text.clone()));
        for i in 0..text.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut t = text.clone();
                t[i] ^= flip;
                assert_ne!(digest(&t), d, "byte {i} ^ {flip:#x}");
            }
        }
        // A digit more, a byte less, a NUL appended.
        let mut longer = text.clone();
        longer.insert(text.len() - 3, b'0');
        assert_ne!(digest(&longer), d);
        assert_ne!(digest(&text[..text.len() - 1]), d);
        let mut nul = text.clone();
        nul.push(0);
        assert_ne!(digest(&nul), d);
        assert_ne!(digest(b""), digest(b"\0"));
        // Two changed bytes, in every pair of words, at the top byte of
        // each (where a plain multiply kept the change from spreading) and
        // elsewhere: no two of these texts have one digest.
        let base: Vec<u8> = (0..256u32).map(|i| b'0' + (i % 10) as u8).collect();
        let mut seen = std::collections::HashMap::new();
        seen.insert(digest(&base), (0, 0, 0));
        for i in (0..base.len()).step_by(8) {
            for j in (i + 8..base.len()).step_by(8) {
                for off in [7, 3] {
                    for flip in 1..=9u8 {
                        let mut t = base.clone();
                        t[i + off] ^= flip;
                        t[j + off] ^= flip;
                        let was = seen.insert(digest(&t), (i + off, j + off, flip));
                        assert_eq!(was, None, "bytes {} and {} ^ {flip}", i + off, j + off);
                    }
                }
            }
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
