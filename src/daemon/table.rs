//! The process table, with one door: every app enters (`insert`), leaves
//! (`remove`) and changes state (`step`) here, so a journal of the table can
//! be written from one place, and a pid → app index replaces
//! scans. An entry's machine is private to this module: the rest of the
//! daemon reads it and feeds it inputs, never writes it. Owns no fd but the
//! apps' log files; never signals, spawns or writes a socket.

use std::collections::BTreeMap;

use crate::app::App;
use crate::cron::Cron;
use crate::logs::LogFile;
use crate::process::Event;
use crate::protocol::Monit;
use crate::state::{Effect, Input, Machine, Policy};
use crate::vecmap::VecMap;

use super::links::Link;
use super::{Fault, wall_ms};

/// Most apps in the table: each costs an entry and a share of every
/// scan of the table, and while running some 5 fds. A start or scale past
/// it is refused.
pub(crate) const MAX_APPS: usize = 4096;

/// One managed app and what the daemon keeps beside its machine.
pub(crate) struct Entry {
    /// Replaced only by `Table::reconfigure`, whose summary follows it.
    pub app: App,
    m: Machine,
    pub created_at: u64,
    pub pm_uptime: u64,
    pub out: LogFile,
    pub err: LogFile,
    /// Memory and CPU of the process group at the last sample.
    pub monit: Monit,
    /// Parsed `cron_restart` (its deadlines are in `rare`).
    pub cron: Option<Box<Cron>>,
    /// The IPC channels of its processes (main, replacement, draining).
    pub links: Vec<Link>,
    /// The write ends of its processes' stdin pipes (non-blocking), by pid.
    pub stdins: Vec<(i32, std::os::fd::OwnedFd)>,
    /// What most entries never have, boxed apart: `rare()` to read,
    /// `rare_mut()` to set, `clear_rare()` to take or clear.
    rare: Option<Box<Rare>>,
    /// Brought back from the journal, waiting for its old processes to go
    /// before it starts.
    pub recovering: bool,
    /// A request caused what happens to it now (PM2's `manually`).
    pub manual: bool,
    /// Stopped or deleted by a request (not ended on its own).
    pub stop_requested: bool,
    /// The pid of the last main process, for the events that follow it.
    pub last_pid: i32,
    /// Start times (`/proc/<pid>/stat`) of its processes, for the journal.
    pub starttimes: Vec<(i32, u64)>,
    /// Partial lines of stdout and stderr, for `log:*` events.
    pub line_out: Vec<u8>,
    pub line_err: Vec<u8>,
    /// What it counts for in the table's summary (`Table::track`).
    tracked: Tracked,
}

/// What an entry adds to the table's summary, which the loop reads in every
/// wake instead of looking at every app (with 1000 apps, the two looks
/// were half of the daemon's work for a `ping`).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Tracked {
    /// It has a main process.
    running: bool,
    /// It has one, and a `max_memory_restart` to sample it for.
    limited: bool,
    /// A process of it was reaped while its group may live on.
    lingering: bool,
}

impl Entry {
    pub fn new(app: App, policy: Policy, out: LogFile, err: LogFile, cron: Option<Cron>) -> Entry {
        Entry {
            app,
            m: Machine::new(policy),
            created_at: wall_ms(),
            pm_uptime: 0,
            out,
            err,
            monit: Monit::default(),
            cron: cron.map(Box::new),
            links: Vec::new(),
            stdins: Vec::new(),
            rare: None,
            recovering: false,
            manual: false,
            stop_requested: false,
            last_pid: 0,
            starttimes: Vec::new(),
            line_out: Vec::new(),
            line_err: Vec::new(),
            tracked: Tracked::default(),
        }
    }

    /// What it adds to the table's summary now.
    fn tracked_now(&self) -> Tracked {
        let running = self.m.is_running();
        Tracked {
            running,
            limited: running && self.app.spec.rare().max_memory_restart.is_some(),
            lingering: self.m.lingering().next().is_some(),
        }
    }

    /// Its machine, to read.
    pub fn m(&self) -> &Machine {
        &self.m
    }

    /// New options for an app (`Table::reconfigure`).
    fn reconfigure(&mut self, app: App, policy: Policy, logs: (LogFile, LogFile)) {
        self.app = app;
        (self.out, self.err) = logs;
        self.m.set_policy(policy);
    }

    /// Its rare fields, to read (all `None` when it has none).
    pub fn rare(&self) -> &Rare {
        self.rare.as_deref().unwrap_or(&NO_RARE)
    }

    /// Its rare fields, to set (boxed at the first).
    pub fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Take or clear rare fields with `f` (nothing to do, and nothing
    /// boxed, when it has none); the box goes once they are all empty.
    pub fn clear_rare<T: Default>(&mut self, f: impl FnOnce(&mut Rare) -> T) -> T {
        let Some(r) = self.rare.as_deref_mut() else {
            return T::default();
        };
        let out = f(r);
        if r.is_empty() {
            self.rare = None;
        }
        out
    }

    /// Replace its rare fields (a hand-over): none boxed when all are empty.
    pub fn set_rare(&mut self, r: Rare) {
        self.rare = (!r.is_empty()).then(|| Box::new(r));
    }

    /// The channel of process `pid`.
    pub fn link_mut(&mut self, pid: i32) -> Option<&mut Link> {
        self.links.iter_mut().find(|l| l.pid == pid)
    }
}

/// What an entry has only now and then (a cron or watch deadline, a reason
/// to tell, what the app said of itself): most entries have none of it and
/// pay a pointer instead of ~180 bytes.
#[derive(Default)]
pub(crate) struct Rare {
    /// The deadline of the next `cron_restart` firing.
    pub cron_at: Option<u64>,
    /// The epoch second of the firing `cron_at` stands for.
    pub cron_fired: Option<i64>,
    /// Restart at this deadline: files changed (`watch_delay` debounce).
    pub watch_at: Option<u64>,
    /// Why the last replacement or spawn failed, for the answer and events.
    pub spawn_error: Option<Fault>,
    /// Why the daemon restarts the app (memory, cron, watch), for the
    /// `restart` event.
    pub restart_reason: Option<String>,
    /// Why the app went online without saying it was ready.
    pub online_warning: Option<String>,
    /// What the app said of itself: `STATUS=` (sd_notify), `node_version`.
    pub notify_status: Option<String>,
    pub node_version: Option<String>,
}

/// The rare fields of an entry that has none.
static NO_RARE: Rare = Rare {
    cron_at: None,
    cron_fired: None,
    watch_at: None,
    spawn_error: None,
    restart_reason: None,
    online_warning: None,
    notify_status: None,
    node_version: None,
};

impl Rare {
    fn is_empty(&self) -> bool {
        self.cron_at.is_none()
            && self.cron_fired.is_none()
            && self.watch_at.is_none()
            && self.spawn_error.is_none()
            && self.restart_reason.is_none()
            && self.online_warning.is_none()
            && self.notify_status.is_none()
            && self.node_version.is_none()
    }
}

/// Every app, by pm_id.
#[derive(Default)]
pub(crate) struct Table {
    apps: BTreeMap<u32, Box<Entry>>,
    /// Every process of every app not yet released, to its app.
    by_pid: VecMap<i32, u32>,
    next_id: u32,
    /// Something changed since the journal was last written.
    dirty: bool,
    /// Apps with a main process, and those of them with a memory limit.
    running: usize,
    limited: usize,
    /// Apps with a process reaped while its group may live on.
    lingering: Vec<u32>,
}

impl Table {
    pub fn get(&self, id: u32) -> Option<&Entry> {
        self.apps.get(&id).map(|b| &**b)
    }

    /// An entry's fields beside its machine.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Entry> {
        self.apps.get_mut(&id).map(|b| &mut **b)
    }

    pub fn contains(&self, id: u32) -> bool {
        self.apps.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn ids(&self) -> Vec<u32> {
        self.apps.keys().copied().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Entry)> {
        self.apps.iter().map(|(id, e)| (*id, &**e))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut Entry)> {
        self.apps.iter_mut().map(|(id, e)| (*id, &mut **e))
    }

    /// New options for app `id`: its machine keeps its counters. A running
    /// process goes on as it was started (its output goes to the new log
    /// files); the next start uses the new options.
    pub fn reconfigure(&mut self, id: u32, app: App, policy: Policy, logs: (LogFile, LogFile)) {
        if let Some(e) = self.apps.get_mut(&id) {
            e.reconfigure(app, policy, logs);
            self.track(id);
        }
    }

    /// Whether any app has a main process.
    pub fn any_running(&self) -> bool {
        self.running > 0
    }

    /// Whether any app with a `max_memory_restart` has a main process.
    pub fn any_limited_running(&self) -> bool {
        self.limited > 0
    }

    /// The processes reaped while their groups may live on, by app.
    pub fn lingering(&self) -> Vec<(u32, i32)> {
        let mut out = Vec::new();
        for &id in &self.lingering {
            if let Some(e) = self.get(id) {
                out.extend(e.m.lingering().map(|pid| (id, pid)));
            }
        }
        out
    }

    /// Bring app `id`'s part of the summary up to date (after anything that
    /// may have changed its machine or its options).
    fn track(&mut self, id: u32) {
        let (old, new) = match self.apps.get_mut(&id) {
            Some(e) => {
                let new = e.tracked_now();
                (std::mem::replace(&mut e.tracked, new), new)
            }
            None => return,
        };
        self.count(old, new);
        if old.lingering != new.lingering {
            match new.lingering {
                true => self.lingering.push(id),
                false => self.lingering.retain(|&i| i != id),
            }
        }
    }

    /// The summary's counts, `old` taken out and `new` put in.
    fn count(&mut self, old: Tracked, new: Tracked) {
        let n = |b: bool| usize::from(b);
        self.running = self.running + n(new.running) - n(old.running);
        self.limited = self.limited + n(new.limited) - n(old.limited);
    }

    /// Counters of a previous daemon for app `id` (crash recovery).
    pub fn restore(&mut self, id: u32, restart_time: u32, unstable_restarts: u32) {
        if let Some(e) = self.apps.get_mut(&id) {
            e.m.restore(restart_time, unstable_restarts);
            self.dirty = true;
        }
    }

    /// The machine a previous image of the daemon handed over for app `id`
    /// (`corral update`), its processes indexed again.
    pub fn adopt(&mut self, id: u32, m: Machine) {
        if let Some(e) = self.apps.get_mut(&id) {
            for pid in m.pids() {
                self.by_pid.insert(pid, id);
            }
            // The policy is the app's as installed; the rest is the
            // machine handed over.
            let policy = e.m.policy().clone();
            e.m = m;
            e.m.set_policy(policy);
            self.dirty = true;
            self.track(id);
        }
    }

    /// Whether anything changed since the last call: the journal is due.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The app process `pid` belongs to.
    pub fn app_of(&self, pid: i32) -> Option<u32> {
        self.by_pid.get(pid).copied()
    }

    /// The pm_id the next new app gets.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Put an app in the table under `id`.
    pub fn insert(&mut self, id: u32, entry: Entry) {
        self.next_id = self.next_id.max(id + 1);
        // One already there under `id` is taken out of the summary.
        if let Some(old) = self.apps.insert(id, Box::new(entry)) {
            self.count(old.tracked, Tracked::default());
            self.lingering.retain(|&i| i != id);
        }
        self.dirty = true;
        self.track(id);
    }

    /// Take an app out of the table; its processes are forgotten too. An
    /// empty table numbers from 0 again, as PM2's does.
    pub fn remove(&mut self, id: u32) -> Option<Box<Entry>> {
        let e = self.apps.remove(&id)?;
        if self.apps.is_empty() {
            self.next_id = 0;
        }
        for pid in e.m.pids() {
            self.by_pid.remove(pid);
        }
        self.count(e.tracked, Tracked::default());
        if e.tracked.lingering {
            self.lingering.retain(|&i| i != id);
        }
        self.dirty = true;
        Some(e)
    }

    /// Feed `input` to app `id`'s machine; the effects for the loop.
    pub fn step(&mut self, id: u32, input: Input, now: u64) -> Vec<Effect> {
        let Some(e) = self.apps.get_mut(&id) else {
            return Vec::new();
        };
        // A process that exec'd (the wake after every spawn) changes
        // nothing the journal keeps, unless the machine says otherwise.
        let before = matches!(
            input,
            Input::Proc {
                event: Event::Execd,
                ..
            }
        )
        .then(|| e.m.journaled());
        let fx = e.m.step(input, now);
        if before.is_none_or(|b| b != e.m.journaled()) {
            self.dirty = true;
        }
        if let Input::Spawned { pid, .. } = input {
            self.by_pid.insert(pid, id);
        }
        for f in &fx {
            if let Effect::Released(pid) = f {
                self.by_pid.remove(*pid);
            }
        }
        self.track(id);
        fx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{Home, Slot};
    use std::path::Path;

    fn entry() -> Entry {
        entry_with(serde_json::json!({"script": "/bin/sleep", "name": "s", "interpreter": "none"}))
    }

    fn entry_with(options: serde_json::Value) -> Entry {
        let spec = crate::options::parse_app(&options).unwrap().spec;
        let slot = Slot {
            pm_id: 0,
            instance: 0,
            count: 1,
            cluster: false,
        };
        let home = Home {
            dir: "/nonexistent".into(),
        };
        let app = App::resolve(spec, &options, slot, &home, None, None, false).unwrap();
        let null = || LogFile::unopened(Path::new("/dev/null"), None, None);
        let policy = super::super::requests::policy_of(&app);
        Entry::new(app, policy, null(), null(), None)
    }

    /// The summary the loop reads in every wake is what a look at every
    /// app would find, after each kind of change.
    #[test]
    fn the_summary_follows_every_change_of_the_table() {
        use crate::process::Exit;
        use crate::state::Role;
        let scanned = |t: &Table| {
            let running = t.iter().any(|(_, e)| e.m().is_running());
            let limited = t
                .iter()
                .any(|(_, e)| e.m().is_running() && e.app.spec.rare().max_memory_restart.is_some());
            let lingering: Vec<(u32, i32)> = t
                .iter()
                .flat_map(|(id, e)| e.m().lingering().map(move |pid| (id, pid)))
                .collect();
            (running, limited, lingering)
        };
        let summary = |t: &Table| {
            let mut l = t.lingering();
            l.sort_unstable();
            (t.any_running(), t.any_limited_running(), l)
        };
        fn proc(pid: i32, event: Event) -> Input {
            Input::Proc { pid, event }
        }
        fn limited() -> Entry {
            entry_with(serde_json::json!({"script": "/bin/sleep", "name": "s",
                "interpreter": "none", "max_memory_restart": "10M"}))
        }
        fn null() -> LogFile {
            LogFile::unopened(Path::new("/dev/null"), None, None)
        }
        let mut t = Table::default();
        // (what to do, running, limited, lingering)
        type Step = (
            &'static str,
            Box<dyn Fn(&mut Table)>,
            bool,
            bool,
            Vec<(u32, i32)>,
        );
        let steps: Vec<Step> = vec![
            (
                "insert",
                Box::new(|t| t.insert(0, entry())),
                false,
                false,
                vec![],
            ),
            (
                "start",
                Box::new(|t| {
                    t.step(0, Input::Start, 0);
                }),
                false,
                false,
                vec![],
            ),
            (
                "spawned",
                Box::new(|t| {
                    t.step(
                        0,
                        Input::Spawned {
                            role: Role::Main,
                            pid: 10,
                        },
                        0,
                    );
                }),
                true,
                false,
                vec![],
            ),
            (
                "execd",
                Box::new(|t| {
                    t.step(0, proc(10, Event::Execd), 1);
                }),
                true,
                false,
                vec![],
            ),
            (
                "a memory limit",
                Box::new(move |t| {
                    let e = limited();
                    let policy = super::super::requests::policy_of(&e.app);
                    t.reconfigure(0, e.app, policy, (null(), null()));
                }),
                true,
                true,
                vec![],
            ),
            (
                "stop",
                Box::new(|t| {
                    t.step(0, Input::Stop, 2);
                }),
                true,
                true,
                vec![],
            ),
            (
                "leader reaped, group alive",
                Box::new(|t| {
                    t.step(
                        0,
                        proc(
                            10,
                            Event::Exited {
                                exit: Exit::Signal(15),
                                group_alive: true,
                            },
                        ),
                        3,
                    );
                }),
                false,
                false,
                vec![(0, 10)],
            ),
            (
                "another app runs",
                Box::new(|t| {
                    t.insert(1, limited());
                    t.step(1, Input::Start, 4);
                    t.step(
                        1,
                        Input::Spawned {
                            role: Role::Main,
                            pid: 11,
                        },
                        4,
                    );
                }),
                true,
                true,
                vec![(0, 10)],
            ),
            (
                "group empty",
                Box::new(|t| {
                    t.step(0, proc(10, Event::GroupEmpty), 5);
                }),
                true,
                true,
                vec![],
            ),
            (
                "replaced under its id",
                Box::new(|t| t.insert(1, entry())),
                false,
                false,
                vec![],
            ),
            (
                "runs again",
                Box::new(|t| {
                    t.step(1, Input::Start, 6);
                    t.step(
                        1,
                        Input::Spawned {
                            role: Role::Main,
                            pid: 12,
                        },
                        6,
                    );
                }),
                true,
                false,
                vec![],
            ),
            (
                "removed",
                Box::new(|t| {
                    t.remove(1);
                }),
                false,
                false,
                vec![],
            ),
        ];
        for (what, act, running, limited, lingering) in steps {
            act(&mut t);
            assert_eq!(summary(&t), (running, limited, lingering), "{what}");
            assert_eq!(summary(&t), scanned(&t), "{what}: as a look at every app");
        }
    }

    #[test]
    fn rare_fields_are_boxed_only_while_one_is_set() {
        let mut e = entry();
        assert!(e.rare.is_none(), "a new entry has none");
        assert_eq!(e.clear_rare(|r| r.restart_reason.take()), None);
        assert!(e.rare.is_none(), "taking what is not there boxes nothing");
        e.rare_mut().restart_reason = Some("cron".into());
        e.rare_mut().watch_at = Some(5);
        assert_eq!(e.rare().watch_at, Some(5));
        let reason = e.clear_rare(|r| r.restart_reason.take());
        assert_eq!(reason.as_deref(), Some("cron"));
        assert!(e.rare.is_some(), "watch_at is still set");
        e.clear_rare(|r| r.watch_at = None);
        assert!(e.rare.is_none(), "all empty: the box goes");
        e.set_rare(Rare::default());
        assert!(e.rare.is_none());
        e.set_rare(Rare {
            node_version: Some("v20".into()),
            ..Rare::default()
        });
        assert_eq!(e.rare().node_version.as_deref(), Some("v20"));
    }
}
