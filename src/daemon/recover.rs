//! The journal's file and crash recovery (the rules are `journal.rs`'s):
//! writing the table at the end of a wake that changed it, marking a clean
//! stop, and — when the previous daemon died — bringing its apps back:
//! installed at once with their pm_ids and counters, their old processes
//! (checked by pid and start time) stopped by group, then started again.
//! Never reads a client's request.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use crate::dump::Wanted;
use crate::journal::{self, Plan};
use crate::process::KILL_GRACE;
use crate::procfs;
use crate::protocol::WireError;
use crate::state::Input;
use crate::sys::{self, Signal};

use super::persist::saved_wanted;
use super::requests::open_logs;
use super::schedule::check_watch;
use super::{Daemon, Timer};

/// How often the groups of a dead daemon's processes are looked at while
/// they are being stopped (they are not our children: no exit to reap).
const ORPHAN_POLL: u64 = 20;

/// A process group of the previous daemon, being stopped.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Orphan {
    pub pm_id: u32,
    pub pgid: i32,
    pub group: bool,
    pub deadline: u64,
    pub killed: bool,
}

/// The index of `env` in `envs`, added if it is not there yet: each
/// inherited environment is written once (the apps of a start share one).
pub(super) fn env_index(
    envs: &mut Vec<Rc<BTreeMap<String, String>>>,
    env: &Rc<BTreeMap<String, String>>,
) -> usize {
    match envs.iter().position(|x| Rc::ptr_eq(x, env)) {
        Some(i) => i,
        None => {
            envs.push(Rc::clone(env));
            envs.len() - 1
        }
    }
}

impl Daemon {
    fn journal_path(&self) -> PathBuf {
        self.home.dir.join(journal::FILE)
    }

    /// Write the journal: the table now, and whether the daemon is stopping
    /// cleanly. The runtime keeps none (a container's PID 1 takes its apps
    /// with it).
    pub(super) fn write_journal(&mut self, clean: bool) {
        if self.console.is_some() {
            return;
        }
        // Start times are read once per process, when first journaled. All
        // first, before the text grows: a start time allocated between two
        // of its growths would leave a hole in the heap once it is freed.
        for (_, e) in self.table.iter_mut() {
            // Most often the same processes as last time: nothing to do.
            let m = e.m();
            if m.pid_iter().count() == e.starttimes.len()
                && m.pid_iter()
                    .all(|pid| e.starttimes.iter().any(|(p, _)| *p == pid))
            {
                continue;
            }
            let pids = m.pids();
            e.starttimes.retain(|(p, _)| pids.contains(p));
            for pid in pids {
                if !e.starttimes.iter().any(|(p, _)| *p == pid)
                    && let Ok(Some(st)) = procfs::read_stat(pid)
                {
                    e.starttimes.reserve_exact(1);
                    e.starttimes.push((pid, st.starttime));
                }
            }
        }
        // Each inherited environment once (the apps of a start share one).
        let mut envs: Vec<Rc<BTreeMap<String, String>>> = Vec::new();
        let mut w = journal::Writer::new(&self.boot_id, std::process::id(), clean);
        for (id, e) in self.table.iter() {
            let Some(wanted) = saved_wanted(e) else {
                continue;
            };
            let (a, m) = (&e.app, e.m());
            w.app(&journal::Entry {
                name: &a.spec.name,
                pm_id: id,
                namespace: &a.spec.namespace,
                instance: a.slot.instance,
                instances: a.slot.count.max(1),
                wanted,
                env_name: a.env_name(),
                options: a.options.raw(),
                cwd: &a.cwd.to_string_lossy(),
                restart_time: m.restart_time(),
                unstable_restarts: m.unstable_restarts(),
                created_at: e.created_at,
                base_env: a.base_env.as_ref().map(|env| env_index(&mut envs, env)),
                processes: &e.starttimes,
            });
        }
        let envs: Vec<&BTreeMap<String, String>> = envs.iter().map(|e| &**e).collect();
        let text = w.finish(&envs);
        // A wake that changed nothing the journal keeps (a process that
        // exec'd, a ready message) does not write it again.
        let hash = Some(journal::digest(&text));
        if hash == self.journal_hash {
            return;
        }
        let path = self.journal_path();
        match sys::write_swapped(&path, &text, 0o600) {
            Ok(()) => self.journal_hash = hash,
            Err(e) => {
                self.journal_hash = None;
                self.log(&format!("cannot write the journal {}: {e}", path.display()));
            }
        }
    }

    /// Before serving: act on the journal the previous daemon left.
    pub(super) fn recover(&mut self) {
        let path = self.journal_path();
        if self.console.is_some() {
            return;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("unreadable: {e}")),
        };
        match journal::plan(text.as_deref(), &self.boot_id) {
            Plan::Nothing(None) => {}
            Plan::Nothing(Some(why)) => self.log(&format!("journal: {why}")),
            Plan::Corrupt(why) => {
                let mut aside = path.as_os_str().to_owned();
                aside.push(".corrupt");
                let aside = PathBuf::from(aside);
                let kept = std::fs::rename(&path, &aside).is_ok();
                self.log(&format!(
                    "journal {}: {why}; {}; starting afresh",
                    path.display(),
                    match kept {
                        true => format!("kept as {}", aside.display()),
                        false => "left where it is".to_string(),
                    }
                ));
            }
            Plan::Recover {
                daemon_pid,
                apps,
                envs,
            } => {
                self.log(&format!(
                    "journal: the previous daemon (pid {daemon_pid}) died; bringing back {} apps",
                    apps.len()
                ));
                let envs: Vec<Rc<BTreeMap<String, String>>> =
                    envs.into_iter().map(Rc::new).collect();
                for app in apps {
                    let name = app.saved.name.clone();
                    let pm_id = app.saved.pm_id;
                    let env = app.base_env.and_then(|i| envs.get(i)).cloned();
                    if let Err(e) = self.recover_app(app, env) {
                        self.log(&format!(
                            "journal: {name} ({pm_id}) cannot come back: {}",
                            e.message
                        ));
                    }
                }
                self.check_orphans();
            }
        }
    }

    /// Put one app of the journal back in the table, stopped, and stop
    /// what still runs of it; it starts once that is gone.
    fn recover_app(
        &mut self,
        j: journal::App,
        base_env: Option<Rc<BTreeMap<String, String>>>,
    ) -> Result<(), WireError> {
        let e = j.saved;
        let (name, pm_id, online) = (e.name.clone(), e.pm_id, e.wanted == Wanted::Online);
        let (app, _) = self.resolve_saved(pm_id, e, base_env)?;
        let (signal, timeout, group) = (
            app.spec.rare().kill_signal,
            app.spec.rare().kill_timeout,
            app.spec.treekill,
        );
        let logs = open_logs(&app, &self.home, self.log_defaults)?;
        check_watch(&app)?;
        self.install(pm_id, false, app, logs, false)?;
        self.table
            .restore(pm_id, j.restart_time, j.unstable_restarts);
        if let Some(entry) = self.table.get_mut(pm_id) {
            entry.created_at = j.created_at;
            entry.recovering = online;
        }
        // Its old processes: the same pid and start time, or not ours.
        let now = self.now();
        for p in j.processes {
            let same = procfs::read_stat(p.pid)
                .ok()
                .flatten()
                .is_some_and(|st| st.starttime == p.starttime);
            if !same {
                continue;
            }
            self.log(&format!(
                "journal: {} ({}): pid {} of the previous daemon still runs: stopping it",
                name, pm_id, p.pid
            ));
            sys::send_and_continue(p.pid, signal, group);
            self.orphans.push(Orphan {
                pm_id,
                pgid: p.pid,
                group,
                deadline: now + timeout,
                killed: false,
            });
        }
        Ok(())
    }

    /// Look at the groups being stopped: SIGKILL at the kill timeout, give
    /// up on leftovers after a grace; start the apps whose old processes
    /// are all gone.
    pub(super) fn check_orphans(&mut self) {
        let now = self.now();
        let mut left = Vec::new();
        for mut o in std::mem::take(&mut self.orphans) {
            // Not our child: once it has died its parent (init) reaps it
            // when it will. A dead leader is gone; what is left of its
            // group gets SIGKILL at once.
            let leader = procfs::read_stat(o.pgid).ok().flatten();
            if leader.is_none_or(|st| st.state == 'Z') {
                if o.group && sys::group_alive(o.pgid) {
                    sys::send(o.pgid, Signal::KILL, true);
                }
                continue;
            }
            if now >= o.deadline {
                if o.killed {
                    self.log(&format!(
                        "journal: pid {} survived SIGKILL for {KILL_GRACE} ms: left alone",
                        o.pgid
                    ));
                    continue;
                }
                sys::send(o.pgid, Signal::KILL, o.group);
                o.killed = true;
                o.deadline = now + KILL_GRACE;
            }
            left.push(o);
        }
        self.orphans = left;
        let ready: Vec<u32> = self
            .table
            .iter()
            .filter(|(id, e)| e.recovering && !self.orphans.iter().any(|o| o.pm_id == *id))
            .map(|(id, _)| id)
            .collect();
        for id in ready {
            self.start_recovered(id);
        }
        if !self.orphans.is_empty() {
            self.timers.arm(now + ORPHAN_POLL, Timer::Orphans);
        }
    }

    /// Start app `id` again under this daemon, its `listen` sockets bound
    /// anew now that its old processes have let them go.
    fn start_recovered(&mut self, id: u32) {
        let Some(spec) = self.table.get_mut(id).map(|e| {
            e.recovering = false;
            e.rare_mut().restart_reason = Some("recovered".to_string());
            e.app.spec.clone()
        }) else {
            return;
        };
        match self.bind_listen(&spec) {
            Ok(binds) => {
                if let Some((key, socks)) = binds {
                    self.listeners.insert(key, socks);
                }
            }
            Err(e) => {
                self.log(&format!(
                    "journal: {} ({id}) cannot bind its sockets again: {}",
                    spec.name, e.message
                ));
                return;
            }
        }
        if let Err(e) = self.watch_app(id) {
            self.log(&format!("journal: {} ({id}): {}", spec.name, e.message));
        }
        self.step(id, Input::Start);
    }
}
