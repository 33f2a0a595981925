//! What the daemon does on its own initiative: due deadlines, `/proc`
//! sampling (for `max_memory_restart`, and of the apps a list shows),
//! `cron_restart`, and `watch` with its debounce. Each restart it decides
//! goes through the app's machine like a user's. Never reads a client's
//! request.

use std::collections::HashSet;
use std::path::PathBuf;

use mio::Interest;
use mio::unix::SourceFd;

use crate::app::App;
use crate::options::Watch;
use crate::protocol::{ErrorCode, Status, WireError};
use crate::state::{Input, Wanted};
use crate::watch::{Ignore, Watcher};

use super::{DEFAULT_IGNORE_WATCH, Daemon, Timer, WATCH, internal, wall_ms};
use crate::sys;

/// Deadlines acted on in one wake. Every automatic restart is one, so
/// this bounds the spawns of a wake: a crash storm of hundreds of apps is
/// spread over several wakes, each of which serves requests and signals.
const TIMERS_PER_WAKE: usize = 8;

impl Daemon {
    /// Act on due deadlines, at most `TIMERS_PER_WAKE` (restarts of a
    /// crash storm come due together); the rest are still due at the next
    /// wake, which comes at once.
    pub(super) fn fire_timers(&mut self) {
        let now = self.now();
        for _ in 0..TIMERS_PER_WAKE {
            let Some((t, timer)) = self.timers.pop_due(now) else {
                break;
            };
            match timer {
                Timer::App(id) => self.step(id, Input::Deadline { pid: None, at: t }),
                Timer::Proc(id, pid) => self.step(
                    id,
                    Input::Deadline {
                        pid: Some(pid),
                        at: t,
                    },
                ),
                Timer::Cron(id) => {
                    if self.table.get(id).and_then(|e| e.rare().cron_at) == Some(t) {
                        self.restart_for(id, "cron_restart");
                        self.arm_cron(id);
                    }
                }
                Timer::Watch(id) => {
                    if self.table.get(id).and_then(|e| e.rare().watch_at) == Some(t) {
                        if let Some(e) = self.table.get_mut(id) {
                            e.clear_rare(|r| r.watch_at = None);
                        }
                        self.restart_for(id, "files changed (watch)");
                    }
                }
                Timer::Conn(token) => self.conn_deadline(token, t),
                Timer::Accept => self.resume_accepting(),
                Timer::Orphans => self.check_orphans(),
                Timer::Watchdog => {
                    // The loop runs: say so, and again in half the period.
                    self.tell_systemd("WATCHDOG=1");
                    if let Some(every) = self.watchdog {
                        self.timers.arm(now + every, Timer::Watchdog);
                    }
                }
                // Nothing to do here: the wake writes what was put off.
                Timer::PutOff => {}
                Timer::Trim => {
                    if self.trim_at == Some(t) {
                        self.trim_at = None;
                        self.scratch = Vec::new();
                        if self.execs.is_empty() {
                            // Room for the execs of a bulk start, given back.
                            self.execs.shrink_to_fit();
                        }
                        sys::trim_heap();
                    }
                }
                Timer::Sample => {
                    if self.sample_at == Some(t) {
                        self.sample_at = None;
                        self.sample();
                    }
                }
            }
        }
    }

    /// Restart an app on the daemon's own initiative (memory limit, cron,
    /// watch); a stopped app starts (a cron restart does, as in PM2).
    fn restart_for(&mut self, id: u32, reason: &str) {
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        if e.m().status() == Status::Stopping || self.stopping_all {
            return;
        }
        e.rare_mut().restart_reason = Some(reason.to_string());
        self.step(id, Input::Restart);
    }

    /// Keep a sample due while any running app has `max_memory_restart`,
    /// and none otherwise: an idle daemon does not wake up for apps nobody
    /// looks at.
    pub(super) fn arm_sampling(&mut self) {
        let online = self.table.any_running();
        let limited = self.table.any_limited_running();
        match (limited, self.sample_at) {
            (true, None) => {
                let t = self.now() + self.sample_interval;
                self.sample_at = Some(t);
                self.timers.arm(t, Timer::Sample);
            }
            (false, Some(t)) => {
                self.timers.disarm(t, Timer::Sample);
                self.sample_at = None;
            }
            _ => {}
        }
        if !online {
            self.sampler.reset();
        }
    }

    /// Sample the apps with a memory limit; restart those over it
    /// (gracefully: kill signal, then kill timeout).
    fn sample(&mut self) {
        let limited: Vec<u32> = self
            .table
            .iter()
            .filter(|(_, e)| e.app.spec.rare().max_memory_restart.is_some())
            .map(|(id, _)| id)
            .collect();
        self.sample_apps(&limited, 0);
        let mut over = Vec::new();
        for id in limited {
            let Some(e) = self.table.get(id) else {
                continue;
            };
            if let Some(limit) = e.app.spec.rare().max_memory_restart
                && e.m().is_running()
                && e.monit.memory > limit
            {
                over.push((id, e.monit.memory, limit));
            }
        }
        for (id, memory, limit) in over {
            let reason =
                format!("memory {memory} bytes over the limit of {limit} (max_memory_restart)");
            self.restart_for(id, &reason);
        }
    }

    /// Read the memory and CPU of those of apps `ids` that run into their
    /// `monit`: now (one scan of /proc), or as read less than `max_age` ms
    /// ago.
    pub(super) fn sample_apps(&mut self, ids: &[u32], max_age: u64) {
        let groups: Vec<(u32, i32)> = ids
            .iter()
            .filter_map(|&id| {
                let e = self.table.get(id)?;
                if !matches!(e.m().status(), Status::Online | Status::Launching) {
                    return None;
                }
                Some((id, e.m().pid()?))
            })
            .collect();
        if groups.is_empty() {
            return;
        }
        let pgids: Vec<i32> = groups.iter().map(|(_, g)| *g).collect();
        if self.sampler.sample(&pgids, self.now(), max_age) {
            // Readings of processes no longer running are dropped.
            let live: HashSet<i32> = self.table.iter().filter_map(|(_, e)| e.m().pid()).collect();
            self.sampler.keep_groups(&live);
            // The scan's buffers are freed now: give the pages back.
            self.trim = true;
        }
        for (id, pgid) in groups {
            if let Some(e) = self.table.get_mut(id) {
                e.monit = self.sampler.usage(pgid);
            }
        }
    }

    /// Arm app `id`'s next cron firing.
    pub(super) fn arm_cron(&mut self, id: u32) {
        let now_mono = self.now();
        let now_wall = wall_ms();
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        let Some(cron) = &e.cron else {
            return;
        };
        // After a firing, the next one is after the second that fired, even
        // if the monotonic deadline came a hair before the wall clock's
        // second turned.
        let after = ((now_wall / 1000) as i64).max(e.rare().cron_fired.unwrap_or(i64::MIN));
        let next = cron.next_fire(after);
        let at = next.map(|at| {
            let wait = (at.max(0) as u64 * 1000).saturating_sub(now_wall);
            now_mono + wait
        });
        match next {
            Some(_) => {
                let r = e.rare_mut();
                (r.cron_fired, r.cron_at) = (next, at);
            }
            None => e.clear_rare(|r| (r.cron_fired, r.cron_at) = (None, None)),
        }
        if let Some(t) = at {
            self.timers.arm(t, Timer::Cron(id));
        }
    }

    /// Start watching app `id`'s files, if it asks for it and is not yet.
    pub(super) fn watch_app(&mut self, id: u32) -> Result<(), WireError> {
        let Some(e) = self.table.get(id) else {
            return Ok(());
        };
        let roots: Vec<PathBuf> = match &e.app.spec.rare().watch {
            Watch::Off => return Ok(()),
            Watch::Cwd => vec![e.app.cwd.clone()],
            Watch::Paths(paths) => paths.iter().map(|x| e.app.cwd.join(x)).collect(),
        };
        if self.watcher.as_ref().is_some_and(|w| w.is_watching(id)) {
            return Ok(());
        }
        let patterns = e
            .app
            .spec
            .rare()
            .ignore_watch
            .clone()
            .unwrap_or_else(|| DEFAULT_IGNORE_WATCH.iter().map(|s| s.to_string()).collect());
        // Never restart for what the daemon itself writes.
        let exact = vec![
            self.home.logs(),
            e.app.out_path.clone(),
            e.app.err_path.clone(),
            e.app.pid_path(&self.home),
        ];
        let invalid = |m: String| WireError::new(ErrorCode::InvalidOption, m);
        let ignore = Ignore::new(&patterns, exact)
            .map_err(|err| invalid(format!("option `ignore_watch`: {err}")))?;
        if self.watcher.is_none() {
            let w =
                Watcher::new().map_err(|err| internal(&format!("cannot use inotify: {err}")))?;
            let fd = w.raw_fd();
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), WATCH, Interest::READABLE)
                .map_err(|err| internal(&format!("cannot poll inotify: {err}")))?;
            self.watcher = Some(w);
        }
        if let Some(w) = self.watcher.as_mut() {
            w.watch(id, &roots, ignore)
                .map_err(|err| invalid(format!("option `watch`: {err}")))?;
        }
        Ok(())
    }

    pub(super) fn unwatch_app(&mut self, id: u32) {
        if let Some(w) = self.watcher.as_mut() {
            w.unwatch(id);
        }
        if let Some(e) = self.table.get_mut(id) {
            e.clear_rare(|r| r.watch_at = None);
        }
    }

    /// Files changed: one restart per burst, `watch_delay` after its first
    /// change.
    pub(super) fn read_watch(&mut self) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        let changed = w.read_changes();
        for warning in w.take_warnings() {
            self.log(&format!("watch: {warning}"));
        }
        let now = self.now();
        for id in changed {
            let Some(e) = self.table.get_mut(id) else {
                continue;
            };
            if e.rare().watch_at.is_none() && e.m().wanted() != Wanted::Down {
                let t = now + e.app.spec.rare().watch_delay;
                e.rare_mut().watch_at = Some(t);
                self.timers.arm(t, Timer::Watch(id));
            }
        }
    }
}

/// The paths `watch` names exist, and `ignore_watch` parses.
pub(super) fn check_watch(app: &App) -> Result<(), WireError> {
    let invalid = |m: String| WireError::new(ErrorCode::InvalidOption, m);
    if let Watch::Paths(paths) = &app.spec.rare().watch {
        for p in paths {
            let full = app.cwd.join(p);
            if !full.exists() {
                return Err(invalid(format!(
                    "option `watch`: {} does not exist",
                    full.display()
                )));
            }
        }
    }
    if let Some(patterns) = &app.spec.rare().ignore_watch {
        Ignore::new(patterns, Vec::new())
            .map_err(|err| invalid(format!("option `ignore_watch`: {err}")))?;
    }
    Ok(())
}
