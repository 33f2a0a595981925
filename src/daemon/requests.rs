//! What clients ask: one request line in, its answer now or once its apps
//! have settled (`Pending`), rolling reloads one instance at a time
//! (`Reload`). Resolves targets, validates a start whole before changing
//! anything, installs apps in the table, scales. Every state change goes
//! through an app's machine (`step`); every error a client sees is a
//! `WireError` made here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use mio::Token;
use serde_json::{Value, json};

use crate::app::{App, Home, Slot};
use crate::cron::Cron;
use crate::listen;
use crate::logs::LogFile;
use crate::options::{self, LogType, instance_count, parse_app};
use crate::protocol::{
    self, Action, Command, Description, ErrorCode, PROTOCOL, Request, StartArgs, Target, WireError,
};
use crate::rotate::Rotation;
use crate::state::{Exit, Failure, Input, Policy};
use crate::sys;
use crate::users;

use super::schedule::check_watch;
use super::table::{Entry, MAX_APPS};
use super::{Daemon, internal, listen_key};

/// A request answered once its apps have settled.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Pending {
    #[serde(with = "super::handover::token")]
    pub conn: Token,
    pub id: Value,
    pub kind: PendingKind,
    pub pm_ids: Vec<u32>,
    /// Each app's crash count when the request came: one that crashed
    /// since has shown how its start went, even if a crash loop never
    /// leaves it settled at the end of a wake.
    pub crashes: Vec<(u32, u32)>,
    /// Descriptions of apps forgotten meanwhile (delete).
    pub gone: BTreeMap<u32, Description>,
    /// How many apps the list held when the request came (kill_daemon).
    pub stopped: usize,
    /// Warnings to send with the answer.
    pub warnings: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) enum PendingKind {
    Describe,
    /// A start: apps whose program could not be run make it an error; the
    /// new ones among them (`fresh`) leave the table.
    Start {
        fresh: Vec<u32>,
    },
    /// A resurrect: as a start, plus the apps that could not even be
    /// installed (`failed`), out of `asked`.
    Resurrect {
        fresh: Vec<u32>,
        failed: Vec<WireError>,
        asked: usize,
    },
    /// Describe only the apps still there (scale).
    Present,
    KillDaemon,
}

/// Longest `send_line` line with its newline: PIPE_BUF, so a write to the
/// app's stdin pipe is atomic.
const MAX_STDIN_LINE: usize = libc::PIPE_BUF;

/// A rolling reload: one instance at a time.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Reload {
    #[serde(with = "super::handover::token")]
    pub conn: Token,
    pub id: Value,
    pub queue: VecDeque<u32>,
    pub current: Option<u32>,
    /// How the current instance's replacement went (`Effect::Reloaded`).
    pub outcome: Option<Result<(), Failure>>,
    pub done: Vec<u32>,
    pub graceful: bool,
}

type Answer = Result<Option<(String, Vec<String>)>, WireError>;

/// The `listen` sockets of one app (`listen_key`), bound.
type Binds = (String, Vec<(listen::Addr, std::os::fd::OwnedFd)>);

/// What a start did: the pm_ids started, those new to the table, and the
/// warnings.
struct Started {
    ids: Vec<u32>,
    fresh: Vec<u32>,
    warnings: Vec<String>,
}

impl Daemon {
    pub(super) fn handle_line(&mut self, t: Token, line: &[u8]) {
        // Requests are rare next to their cost: give the heap they freed
        // back to the kernel at the end of the wake.
        self.trim = true;
        let req = match Request::parse(line) {
            Ok(r) => r,
            Err((id, e)) => return self.reply(t, protocol::err_line(&id, &e)),
        };
        let id = req.id.clone();
        match self.handle(t, req) {
            Ok(Some((result, warnings))) => {
                self.reply(t, protocol::ok_line(&id, result, &warnings))
            }
            Ok(None) => {}
            Err(e) => self.reply(t, protocol::err_line(&id, &e)),
        }
    }

    /// Handle a request: its result now, or `None` when it was queued to
    /// be answered later.
    fn handle(&mut self, t: Token, req: Request) -> Answer {
        let done = |v: String| Ok(Some((v, Vec::new())));
        match req.cmd {
            Command::Ping => done(
                json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "pid": std::process::id(),
                    "protocol": PROTOCOL,
                    "uptime_ms": self.started.elapsed().as_millis() as u64,
                    "allow_uid": self.allow_uid,
                    "allow_gid": self.allow_gid,
                })
                .to_string(),
            ),
            Command::List => {
                self.answer_list(t, &req.id);
                Ok(None)
            }
            Command::Start(args) => {
                self.refuse_while_stopping()?;
                let s = self.start(args)?;
                let kind = PendingKind::Start { fresh: s.fresh };
                self.wait_for(t, req.id, kind, s.ids, s.warnings);
                Ok(None)
            }
            Command::Act(action, target) => self.act(t, req.id, action, &target),
            Command::Update {
                action,
                target,
                changes,
            } => {
                let ids = self.resolve(&target)?;
                self.reconfigure(&ids, &changes, action)?;
                self.act_on(t, req.id, action, ids)
            }
            Command::SendSignal { signal, target } => {
                let sig = options::parse_signal(&signal)
                    .map_err(|m| WireError::new(ErrorCode::BadRequest, format!("signal: {m}")))?;
                let ids = self.resolve(&target)?;
                let running: Vec<(u32, i32, bool)> = ids
                    .into_iter()
                    .filter_map(|id| {
                        let e = self.table.get(id)?;
                        Some((id, e.m().pid()?, e.app.spec.treekill))
                    })
                    .collect();
                if running.is_empty() {
                    return Err(WireError::new(
                        ErrorCode::NotFound,
                        format!("no running process for target {target}"),
                    ));
                }
                for (_, pid, group) in &running {
                    sys::send(*pid, sig, *group);
                }
                let ids: Vec<u32> = running.iter().map(|(id, _, _)| *id).collect();
                done(self.describe_all(&ids))
            }
            Command::KillDaemon => {
                self.stop_everything(t, req.id);
                Ok(None)
            }
            Command::UpdateDaemon => self.ask_update(t, req.id).map(|()| None),
            Command::SendData { packet } => self.send_data(packet).map(|v| Some((v, Vec::new()))),
            Command::SendLine { pm_id, line } => {
                self.send_line(pm_id, &line).map(|v| Some((v, Vec::new())))
            }
            Command::Subscribe { events } => {
                if self.conns.get(&t).is_some_and(|c| c.reserve) {
                    return Err(internal(&format!(
                        "too many connections for a bus subscription (at most {})",
                        super::conn::MAX_CONNS
                    )));
                }
                if let Some(c) = self.conns.get_mut(&t)
                    && c.sub.is_none()
                {
                    c.sub = Some(crate::bus::Subscription::new(crate::bus::Filter::new(
                        events,
                    )));
                    self.subscribers += 1;
                }
                done(json!({"subscribed": true}).to_string())
            }
            Command::Flush(target) => {
                let ids = match &target {
                    Some(t) => self.resolve(t)?,
                    None => self.table.ids(),
                };
                // Every file, even past one that fails; then the failures.
                let mut files = BTreeSet::new();
                let mut failed = Vec::new();
                for id in ids {
                    if let Some(e) = self.table.get_mut(id) {
                        for lf in [&mut e.out, &mut e.err] {
                            match lf.truncate() {
                                Ok(true) => {
                                    files.extend(lf.paths());
                                }
                                Ok(false) => {}
                                Err(err) => failed
                                    .push(format!("cannot empty {}: {err}", lf.path().display())),
                            }
                        }
                    }
                }
                if !failed.is_empty() {
                    return Err(internal(&failed.join("; ")));
                }
                done(json!({ "files": files.len() }).to_string())
            }
            Command::Scale { name, instances } => {
                self.refuse_while_stopping()?;
                let (keep, drop) = self.scale(&name, &instances)?;
                for id in &drop {
                    self.unwatch_app(*id);
                    self.step(*id, Input::Delete);
                }
                let mut ids = keep;
                ids.extend(drop);
                self.wait_for(t, req.id, PendingKind::Present, ids, Vec::new());
                Ok(None)
            }
            Command::ReloadLogs { rotate } => {
                let n = match rotate {
                    true => self.rotate_logs_numbered(),
                    false => self.reopen_logs(),
                };
                done(json!({ "files": n }).to_string())
            }
            Command::Dump { force } => {
                let (path, count) = self.save_dump(force)?;
                done(json!({"path": path.display().to_string(), "count": count}).to_string())
            }
            Command::Resurrect { apps } => {
                self.refuse_while_stopping()?;
                let r = self.resurrect(apps)?;
                let kind = PendingKind::Resurrect {
                    fresh: r.ids.clone(),
                    failed: r.failed,
                    asked: r.asked,
                };
                self.wait_for(t, req.id, kind, r.ids, r.warnings);
                Ok(None)
            }
        }
    }

    /// `corral runtime`: start its apps, with the daemon's own environment.
    pub(super) fn start_runtime(&mut self, rt: super::Runtime) -> Result<(), WireError> {
        self.start(StartArgs {
            apps: rt.apps,
            target: None,
            env_name: rt.env_name,
            caller_env: None,
        })
        .map(drop)
    }

    /// SIGHUP to the runtime: reload every app, answering nobody.
    pub(super) fn reload_all(&mut self) {
        let ids = self.table.ids();
        if let Err(e) = self.begin_reload(super::NOBODY, Value::Null, ids, false) {
            self.log(&format!("reload: {}", e.message));
        }
    }

    pub(super) fn refuse_while_stopping(&self) -> Result<(), WireError> {
        match self.stopping_all {
            true => Err(internal("the daemon is shutting down")),
            false => Ok(()),
        }
    }

    /// The crash counts of `pm_ids`, for a `Pending`.
    pub(super) fn crash_counts(&self, pm_ids: &[u32]) -> Vec<(u32, u32)> {
        pm_ids
            .iter()
            .filter_map(|id| self.table.get(*id).map(|e| (*id, e.m().crashes())))
            .collect()
    }

    /// Park connection `t` until `pm_ids` have settled.
    pub(super) fn wait_for(
        &mut self,
        t: Token,
        id: Value,
        kind: PendingKind,
        pm_ids: Vec<u32>,
        warnings: Vec<String>,
    ) {
        let crashes = self.crash_counts(&pm_ids);
        self.pending.push(Pending {
            conn: t,
            id,
            kind,
            crashes,
            pm_ids,
            gone: BTreeMap::new(),
            stopped: 0,
            warnings,
        });
        self.park(t);
    }

    /// `send_data`: one packet to an app's channel, as PM2's
    /// `sendDataToProcessId` sends it.
    fn send_data(&mut self, packet: Value) -> Result<String, WireError> {
        let bad = |m: &str| WireError::new(ErrorCode::BadRequest, m);
        let Value::Object(mut packet) = packet else {
            return Err(bad("`packet` must be an object"));
        };
        let id = packet
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad("`packet.id` must be a pm_id"))?;
        if !packet.contains_key("data") {
            return Err(bad("`packet.data` is required"));
        }
        packet.entry("type").or_insert_with(|| json!("process:msg"));
        let name = self
            .table
            .get(id)
            .map(|e| e.app.spec.name.clone())
            .ok_or_else(|| {
                WireError::new(ErrorCode::NotFound, format!("no process with pm_id {id}"))
            })?;
        self.send_to_main(id, &Value::Object(packet))
            .map_err(|e| WireError::new(ErrorCode::NoChannel, format!("{name} ({id}): {e}")))?;
        Ok(json!({"delivered": true}).to_string())
    }

    /// `send_line`: `line` and a newline to app `id`'s stdin. A line fits
    /// in PIPE_BUF, so the write is whole or refused: the pipe's buffer is
    /// the queue, and an app that does not read gets an error, never a
    /// blocked daemon.
    fn send_line(&mut self, id: u32, line: &str) -> Result<String, WireError> {
        let bad = |m: String| WireError::new(ErrorCode::BadRequest, m);
        if line.len() >= MAX_STDIN_LINE {
            return Err(bad(format!(
                "a stdin line is at most {} bytes",
                MAX_STDIN_LINE - 1
            )));
        }
        if line.contains('\n') {
            return Err(bad("a stdin line has no newline in it".into()));
        }
        let e = self.table.get(id).ok_or_else(|| {
            WireError::new(ErrorCode::NotFound, format!("no process with pm_id {id}"))
        })?;
        let name = &e.app.spec.name;
        let Some(pid) = e.m().pid() else {
            return Err(bad(format!("{name} ({id}) is not running")));
        };
        let Some((_, fd)) = e.stdins.iter().find(|(p, _)| *p == pid) else {
            return Err(bad(format!(
                "{name} ({id}) has no stdin pipe (option stdin: false)"
            )));
        };
        let mut buf = line.as_bytes().to_vec();
        buf.push(b'\n');
        match nix::unistd::write(fd, &buf) {
            Ok(n) if n == buf.len() => Ok(json!({"written": n}).to_string()),
            Ok(_) => Err(internal("short write to the stdin pipe")),
            Err(nix::errno::Errno::EAGAIN) => Err(WireError::new(
                ErrorCode::Internal,
                format!("{name} ({id}) does not read its stdin: its pipe is full"),
            )),
            Err(nix::errno::Errno::EPIPE) => Err(WireError::new(
                ErrorCode::Internal,
                format!("{name} ({id}) has closed its stdin"),
            )),
            Err(err) => Err(internal(&format!("cannot write to {name}'s stdin: {err}"))),
        }
    }

    /// The pm_ids of the apps named `name`.
    pub(super) fn named(&self, name: &str) -> Vec<u32> {
        self.table
            .iter()
            .filter(|(_, e)| e.app.spec.name == name)
            .map(|(id, _)| id)
            .collect()
    }

    /// The instance indexes of the apps named `name`.
    fn instances_of(&self, name: &str) -> Vec<u32> {
        self.table
            .iter()
            .filter(|(_, e)| e.app.spec.name == name)
            .map(|(_, e)| e.app.slot.instance)
            .collect()
    }

    /// The pm_ids a target names, in order; `not_found` if none.
    fn resolve(&self, target: &Target) -> Result<Vec<u32>, WireError> {
        let ids: Vec<u32> = match target {
            Target::All => self.table.ids(),
            Target::Id(id) => self
                .table
                .contains(*id)
                .then_some(*id)
                .into_iter()
                .collect(),
            Target::Name(n) => {
                let by_name = self.named(n);
                if by_name.is_empty() {
                    self.table
                        .iter()
                        .filter(|(_, e)| &e.app.spec.namespace == n)
                        .map(|(id, _)| id)
                        .collect()
                } else {
                    by_name
                }
            }
        };
        if ids.is_empty() && *target != Target::All {
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("no process named {target}"),
            ));
        }
        Ok(ids)
    }

    fn act(&mut self, t: Token, id: Value, action: Action, target: &Target) -> Answer {
        if action == Action::Describe {
            let ids = self.resolve(target).unwrap_or_default();
            self.sample_apps(&ids, crate::poll::MIN_GAP);
            return Ok(Some((self.describe_all(&ids), Vec::new())));
        }
        let ids = self.resolve(target)?;
        self.act_on(t, id, action, ids)
    }

    /// Give apps `ids` new options (`restart api --watch`, `--update-env`,
    /// `--env`): each app's options with `changes` laid over them, resolved
    /// again as at a start; all checked before any changes. The next start
    /// (the restart that follows) uses them; `describe` shows them.
    fn reconfigure(
        &mut self,
        ids: &[u32],
        changes: &protocol::Changes,
        action: Action,
    ) -> Result<(), WireError> {
        if action != Action::Stop {
            self.refuse_while_stopping()?;
        }
        let caller_env = changes.caller_env.clone().map(Rc::new);
        let mut plan = Vec::new();
        for id in ids {
            let e = self.table.get(*id).ok_or_else(|| internal("vanished"))?;
            let name = &e.app.spec.name;
            let invalid = |m: String| WireError::new(ErrorCode::InvalidOption, m);
            let (mut spec, applied) =
                options::overlay(&e.app.spec, &changes.options, changes.from_config)
                    .map_err(|err| invalid(format!("{name} ({id}): {err}")))?;
            if changes.toggle_watch {
                spec.rare.get_mut().watch = match spec.rare().watch {
                    options::Watch::Off => options::Watch::Cwd,
                    _ => options::Watch::Off,
                };
            }
            if let Some(n) = &changes.env_name
                && !spec.rare().env_overlays.contains_key(n)
            {
                return Err(invalid(format!(
                    "{name} ({id}) has no `env_{n}` (from --env {n})"
                )));
            }
            let env_name = changes
                .env_name
                .clone()
                .or_else(|| e.app.env_name().map(str::to_string));
            let base_env = caller_env.clone().or_else(|| e.app.base_env.clone());
            // The options as given, for the dump: the changes laid over them.
            let mut given = match e.app.options.value() {
                Value::Object(o) => o,
                _ => serde_json::Map::new(),
            };
            for k in applied {
                if let Some(v) = changes.options.get(&k) {
                    // One spelling per option: `killTimeout` over a given
                    // `kill_timeout` replaces it (both would be "given
                    // twice" when the options are read again: dump,
                    // journal, hand-over).
                    given.retain(|g, _| !options::same_option(g, &k));
                    given.insert(k, v.clone());
                }
            }
            if changes.toggle_watch {
                given.insert(
                    "watch".into(),
                    json!(spec.rare().watch != options::Watch::Off),
                );
            }
            let given = Value::Object(given);
            let app = App::resolve(
                spec, &given, e.app.slot, &self.home, base_env, env_name, self.root,
            )?;
            let logs = open_logs(&app, &self.home, self.log_defaults)?;
            if action != Action::Stop {
                check_watch(&app)?;
            }
            plan.push((*id, app, logs));
        }
        for (id, app, logs) in plan {
            self.unwatch_app(id);
            let policy = policy_of(&app);
            let cron = app
                .spec
                .rare()
                .cron_restart
                .as_deref()
                .and_then(|c| Cron::parse(c).ok());
            self.table.reconfigure(id, app, policy, logs);
            if let Some(e) = self.table.get_mut(id) {
                e.cron = cron.map(Box::new);
                e.clear_rare(|r| (r.cron_at, r.cron_fired) = (None, None));
            }
            self.arm_cron(id);
        }
        Ok(())
    }

    /// Act on apps `ids`.
    fn act_on(&mut self, t: Token, id: Value, action: Action, ids: Vec<u32>) -> Answer {
        let input = match action {
            Action::Stop => Input::Stop,
            Action::Restart => Input::Restart,
            Action::Delete => Input::Delete,
            Action::Reload | Action::GracefulReload => {
                return self.begin_reload(t, id, ids, action == Action::GracefulReload);
            }
            Action::Reset | Action::Describe => {
                for pm_id in &ids {
                    self.step(*pm_id, Input::Reset);
                }
                return Ok(Some((self.describe_all(&ids), Vec::new())));
            }
        };
        if input == Input::Restart {
            self.refuse_while_stopping()?;
        }
        // Watching ends with a stop or delete, and starts again with a
        // restart, as in PM2. Checked for every app before any changes.
        if input == Input::Restart {
            for pm_id in &ids {
                self.watch_app(*pm_id)?;
            }
        }
        // Register the answer before stepping, so a delete that forgets an
        // app at once still finds its description.
        self.wait_for(t, id, PendingKind::Describe, ids.clone(), Vec::new());
        for pm_id in ids {
            if input != Input::Restart {
                self.unwatch_app(pm_id);
            }
            if let Some(e) = self.table.get_mut(pm_id) {
                e.stop_requested = input != Input::Restart;
                e.manual = true;
            }
            self.step(pm_id, input);
        }
        Ok(None)
    }

    /// Queue a rolling reload of `ids`, answered when it is over.
    fn begin_reload(&mut self, t: Token, id: Value, ids: Vec<u32>, graceful: bool) -> Answer {
        self.refuse_while_stopping()?;
        let busy = ids.iter().find(|x| {
            self.reloads
                .iter()
                .any(|r| r.current == Some(**x) || r.queue.contains(x))
        });
        if let Some(x) = busy {
            let name = self.table.get(*x).map(|e| e.app.spec.name.clone());
            return Err(WireError::new(
                ErrorCode::BadRequest,
                format!(
                    "a reload of {} (pm_id {x}) is already running",
                    name.unwrap_or_default()
                ),
            ));
        }
        self.reloads.push(Reload {
            conn: t,
            id,
            queue: ids.into_iter().collect(),
            current: None,
            outcome: None,
            done: Vec::new(),
            graceful,
        });
        self.park(t);
        Ok(None)
    }

    /// Move the rolling reloads on: replace the next instance, note a swap,
    /// or give up on a replacement that failed.
    pub(super) fn drive_reloads(&mut self) {
        let mut i = 0;
        while i < self.reloads.len() {
            match self.step_reload(i) {
                Some(outcome) => {
                    let r = self.reloads.remove(i);
                    let line = match outcome {
                        Ok(()) => protocol::ok_line(&r.id, self.describe_all(&r.done), &[]),
                        Err(e) => protocol::err_line(&r.id, &e),
                    };
                    self.answer(r.conn, line);
                }
                None => i += 1,
            }
        }
    }

    /// One move of reload `i`; `Some` when it is over.
    fn step_reload(&mut self, i: usize) -> Option<Result<(), WireError>> {
        loop {
            let r = self.reloads.get_mut(i)?;
            if let Some(id) = r.current {
                match r.outcome.take() {
                    Some(Ok(())) => {
                        r.done.push(id);
                        r.current = None;
                        continue;
                    }
                    Some(Err(why)) => return Some(Err(self.reload_failure(id, why))),
                    None if !self.table.contains(id) => {
                        r.current = None;
                        continue;
                    }
                    None => return None,
                }
            }
            let Some(id) = r.queue.pop_front() else {
                // Apps that were restarted instead answer once back.
                let settled = r
                    .done
                    .iter()
                    .all(|id| self.table.get(*id).is_none_or(|e| e.m().is_settled()));
                return settled.then_some(Ok(()));
            };
            let graceful = r.graceful;
            r.current = Some(id);
            r.outcome = None;
            let Some(e) = self.table.get(id) else {
                continue;
            };
            let a = &e.app;
            let rolls = a.slot.cluster || a.slot.count > 1 || !a.spec.rare().listen.is_empty();
            // Told ready (wait_ready, a Node worker's `listening`), or ready
            // once it ran min_uptime.
            let must_signal =
                a.spec.rare().wait_ready || (a.slot.cluster && a.is_node() && a.spec.ipc);
            self.step(
                id,
                Input::Reload {
                    graceful,
                    rolls,
                    must_signal,
                },
            );
        }
    }

    fn reload_failure(&self, id: u32, why: Failure) -> WireError {
        let e = self.table.get(id);
        let name = e.map(|e| e.app.spec.name.clone()).unwrap_or_default();
        let why = match why {
            Failure::NotReady(ms) => format!("was not ready within listen_timeout ({ms} ms)"),
            Failure::Exited(Exit::Code(c)) => format!("exited with code {c} before it was ready"),
            Failure::Exited(Exit::Signal(s)) => format!(
                "was killed by {} before it was ready",
                options::signal_name(s)
            ),
            Failure::SpawnFailed => match e.and_then(|e| e.rare().spawn_error.as_ref()) {
                Some(f) => format!("could not be started ({f})"),
                None => "could not be started".to_string(),
            },
            Failure::Cancelled => "was cancelled by a stop, restart or delete".to_string(),
            Failure::LostPredecessor => "lost its predecessor, which crashed meanwhile".to_string(),
        };
        WireError::new(
            ErrorCode::Internal,
            format!(
                "reload of {name} stopped at pm_id {id}: the replacement {why}; \
                 the old process keeps serving"
            ),
        )
    }

    /// Answer the pending requests whose apps have all settled.
    pub(super) fn finish_pending(&mut self) {
        let mut i = 0;
        while let Some(op) = self.pending.get(i) {
            let settled = op.pm_ids.iter().all(|id| match self.table.get(*id) {
                None => true,
                Some(e) => match op.kind {
                    PendingKind::KillDaemon => {
                        !e.m().is_running() && e.m().is_settled() && e.m().is_quiet()
                    }
                    _ => {
                        e.m().is_settled()
                            || op
                                .crashes
                                .iter()
                                .any(|&(c, n)| c == *id && n != e.m().crashes())
                    }
                },
            });
            if !settled {
                i += 1;
                continue;
            }
            let mut op = self.pending.remove(i);
            let conn = op.conn;
            let kind = std::mem::replace(&mut op.kind, PendingKind::Describe);
            let line = match kind {
                PendingKind::Start { fresh } => self.start_answer(op, &fresh, Vec::new(), 0),
                PendingKind::Resurrect {
                    fresh,
                    failed,
                    asked,
                } => self.start_answer(op, &fresh, failed, asked),
                PendingKind::Describe | PendingKind::Present => {
                    let present = matches!(kind, PendingKind::Present);
                    let list = self.describe_or(&op.pm_ids, |id| match present {
                        true => None,
                        false => op.gone.get(&id),
                    });
                    protocol::ok_line(&op.id, list, &op.warnings)
                }
                PendingKind::KillDaemon => {
                    if !self.exit_now {
                        self.publish("daemon:kill", json!({"at": super::wall_ms()}));
                    }
                    self.exit_now = true;
                    protocol::ok_line(&op.id, json!({"stopped": op.stopped}).to_string(), &[])
                }
            };
            if self.exit_now {
                self.reply(conn, line);
                self.flush_all();
            } else {
                self.answer(conn, line);
            }
        }
    }

    /// The answer to a start: the descriptions, or the errors of the apps
    /// that could not be run (the new ones leave the table). A resurrect
    /// brings `errors` of its own, and says how many of `asked` came back.
    fn start_answer(
        &mut self,
        op: Pending,
        fresh: &[u32],
        mut errors: Vec<WireError>,
        asked: usize,
    ) -> String {
        for id in &op.pm_ids {
            let failed = self.table.get(*id).and_then(|e| {
                (e.m().status() == protocol::Status::Errored)
                    .then(|| e.rare().spawn_error.clone())
                    .flatten()
            });
            if let Some(f) = failed {
                errors.push(WireError::from(f));
                if fresh.contains(id) {
                    self.unwatch_app(*id);
                    self.table.remove(*id);
                }
            }
        }
        if errors.is_empty() {
            return protocol::ok_line(&op.id, self.describe_all(&op.pm_ids), &op.warnings);
        }
        let mut e = join_errors(errors);
        if asked > 0 {
            let back = op.pm_ids.iter().filter(|id| self.table.contains(**id));
            e.message = format!(
                "{} of {asked} apps came back; not: {}",
                back.count(),
                e.message
            );
        }
        protocol::err_line(&op.id, &e)
    }

    /// The `listen` sockets `spec` needs that its name does not hold yet
    /// (addresses already held are shared, not bound again); `None` when
    /// it holds them all or has none.
    pub(super) fn bind_listen(&self, spec: &options::AppSpec) -> Result<Option<Binds>, WireError> {
        if spec.rare().listen.is_empty() {
            return Ok(None);
        }
        // A unix socket is made as the app's user, like its files.
        let user = match (self.root, &spec.rare().uid) {
            (true, Some(_)) => {
                users::lookup(spec.rare().uid.as_deref(), spec.rare().gid.as_deref())
                    .ok()
                    .and_then(|c| c.fs_user())
            }
            _ => None,
        };
        let addrs: Vec<listen::Addr> = spec
            .rare()
            .listen
            .iter()
            .filter_map(|a| listen::parse(a).ok())
            .collect();
        let key = listen_key(spec);
        let held: Vec<&listen::Addr> = self
            .listeners
            .get(&key)
            .map(|l| l.iter().map(|(a, _)| a).collect())
            .unwrap_or_default();
        if held == addrs.iter().collect::<Vec<_>>() {
            return Ok(None);
        }
        let mut socks = Vec::new();
        for a in addrs {
            // An address already held is kept (a copy of it): binding it
            // again would find it in use.
            let held_fd = self
                .listeners
                .get(&key)
                .and_then(|l| l.iter().find(|(h, _)| *h == a))
                .and_then(|(_, fd)| fd.try_clone().ok());
            let fd = match held_fd {
                Some(fd) => fd,
                None => sys::as_user(user.as_ref(), || Ok(a.bind()))
                    .map_err(|e| e.to_string())
                    .and_then(|bound| bound)
                    .map_err(|e| {
                        WireError::new(ErrorCode::InvalidOption, format!("option `listen`: {e}"))
                    })?,
            };
            socks.push((a, fd));
        }
        Ok(Some((key, socks)))
    }

    /// Start apps, their spawns in one batch (`begin_batch`).
    fn start(&mut self, args: StartArgs) -> Result<Started, WireError> {
        let opened = self.begin_batch();
        let r = self.start_apps(args);
        if opened {
            self.end_batch();
        }
        r
    }

    fn start_apps(&mut self, args: StartArgs) -> Result<Started, WireError> {
        if let Some(target) = &args.target {
            let ids = self.resolve(target)?;
            for id in &ids {
                if let Some(e) = self.table.get_mut(*id) {
                    e.stop_requested = false;
                }
                if !self.table.get(*id).is_some_and(|e| e.m().is_running()) {
                    self.watch_app(*id)?;
                    self.step(*id, Input::Start);
                }
            }
            return Ok(Started {
                ids,
                fresh: Vec::new(),
                warnings: Vec::new(),
            });
        }
        // Validate everything before changing anything.
        let many = args.apps.len() > 1;
        let mut warnings = Vec::new();
        let mut specs = Vec::new();
        for (i, v) in args.apps.iter().enumerate() {
            let parsed = parse_app(v).map_err(|e| {
                let at = if many {
                    format!("apps[{i}]: ")
                } else {
                    String::new()
                };
                WireError::new(ErrorCode::InvalidOption, format!("{at}{e}"))
            })?;
            warnings.extend(parsed.warnings);
            // The request's own options object, not a copy: a copy made
            // here and dropped once the app is resolved would leave a hole
            // in the heap between every two apps of a bulk start.
            specs.push((parsed.spec, v));
        }
        if let Some(name) = &args.env_name
            && !specs
                .iter()
                .any(|(s, _)| s.rare().env_overlays.contains_key(name))
        {
            return Err(WireError::new(
                ErrorCode::InvalidOption,
                format!("no app has `env_{name}` (from --env {name})"),
            ));
        }
        let caller_env = args.caller_env.map(Rc::new);
        let mut plan = Vec::new();
        let mut binds = Vec::new();
        let mut next_id = self.table.next_id();
        let mut replaced = Vec::new();
        // Where every app logs (pm_id, whether planned here), listed once:
        // a check of every pair of apps made two lists per pair, 500,000
        // pairs for a start of 1000 apps.
        let mut logged: Vec<(std::path::PathBuf, u32, bool)> = Vec::new();
        for (id, e) in self.table.iter() {
            for (p, _) in e.app.log_paths() {
                logged.push((p.to_path_buf(), id, false));
            }
        }
        for (spec, raw) in specs {
            let same = self.named(&spec.name);
            // Still stopping (its group lingering) counts as running.
            let busy = |id: &u32| {
                self.table
                    .get(*id)
                    .is_some_and(|e| e.m().is_running() || !e.m().is_settled())
            };
            if !spec.rare().force
                && let Some(first) = same.iter().find(|id| busy(id))
            {
                return Err(WireError::new(
                    ErrorCode::AlreadyRunning,
                    format!(
                        "{} is already running (pm_id {first}); use force to start another",
                        spec.name
                    ),
                ));
            }
            // The CPUs are counted (a few file reads) only for `max`.
            let cpus = match spec.rare().instances > 0 {
                true => 1,
                false => cpu_count(),
            };
            let count = instance_count(spec.rare().instances, cpus);
            if let Some(b) = self.bind_listen(&spec)? {
                binds.push(b);
            }
            let cluster = spec.rare().cluster.unwrap_or(false) && !spec.rare().execute_command;
            // Stopped apps of that name: one is started again with the new
            // options, as PM2 does; several are replaced by fresh instances.
            let reuse = match (spec.rare().force, same.as_slice(), count) {
                (false, [one], 1) => Some(*one),
                _ => None,
            };
            if !spec.rare().force && reuse.is_none() {
                replaced.extend(same.iter().copied());
            }
            let taken: Vec<u32> = match spec.rare().force {
                true => self.instances_of(&spec.name),
                false => Vec::new(),
            };
            let indexes = free_indexes(&taken, count);
            let last = indexes.len().saturating_sub(1);
            let mut spec = Some(spec);
            for (k, instance) in indexes.into_iter().enumerate() {
                let pm_id = match reuse {
                    Some(id) => id,
                    None => {
                        next_id += 1;
                        next_id - 1
                    }
                };
                let slot = Slot {
                    pm_id,
                    instance,
                    count: count as u32,
                    cluster,
                };
                // The last instance takes the parsed spec itself.
                let spec = match k == last {
                    true => spec.take(),
                    false => spec.clone(),
                }
                .ok_or_else(|| internal("spec taken"))?;
                let app = App::resolve(
                    spec,
                    raw,
                    slot,
                    &self.home,
                    caller_env.clone(),
                    args.env_name.clone(),
                    self.root,
                )?;
                // Two apps never share a log file by accident.
                let mine = app.log_paths();
                let clash = logged
                    .iter()
                    .filter(|(p, id, planned)| {
                        mine.iter().any(|(q, _)| p.as_os_str() == q.as_os_str())
                            && (*planned || (!replaced.contains(id) && reuse != Some(*id)))
                    })
                    .find_map(|&(_, id, planned)| {
                        let other = match planned {
                            true => plan
                                .iter()
                                .find(|(i, _, _, _): &&(u32, bool, App, _)| *i == id)
                                .map(|(_, _, a, _)| a),
                            false => self.table.get(id).map(|e| &e.app),
                        }?;
                        log_clash(&app, other).map(|p| (id, other, p))
                    });
                if let Some((id, other, path)) = clash {
                    return Err(WireError::new(
                        ErrorCode::InvalidOption,
                        format!(
                            "log file {} of `{}` is already that of `{}` (pm_id {id}); \
                             give `{}` its own `output`, `error` or `log_file`, or another name",
                            path.display(),
                            app.spec.name,
                            other.spec.name,
                            app.spec.name
                        ),
                    ));
                }
                let logs = open_logs(&app, &self.home, self.log_defaults)?;
                check_watch(&app)?;
                for (p, _) in mine {
                    logged.push((p.to_path_buf(), pm_id, true));
                }
                plan.push((pm_id, reuse.is_some(), app, logs));
            }
        }
        let fresh = plan.iter().filter(|(_, reused, _, _)| !reused).count();
        check_room(self.table.len() - replaced.len(), fresh)?;
        for id in replaced {
            self.unwatch_app(id);
            let pids: Vec<i32> = self
                .table
                .get(id)
                .map(|e| e.links.iter().map(|l| l.pid).collect())
                .unwrap_or_default();
            for pid in pids {
                self.drop_link(id, pid);
            }
            self.table.remove(id);
        }
        for (name, socks) in binds {
            self.listeners.insert(name, socks);
        }
        let mut started = Vec::new();
        let mut fresh = Vec::new();
        for (pm_id, reused, app, logs) in plan {
            let start = app.spec.autostart;
            self.install(pm_id, reused, app, logs, start)?;
            started.push(pm_id);
            if !reused {
                fresh.push(pm_id);
            }
        }
        Ok(Started {
            ids: started,
            fresh,
            warnings,
        })
    }

    /// Put app `pm_id` in the table (or give a known one its new options),
    /// start it if `autostart`, arm its cron.
    pub(super) fn install(
        &mut self,
        pm_id: u32,
        reused: bool,
        app: App,
        logs: (LogFile, LogFile),
        autostart: bool,
    ) -> Result<(), WireError> {
        let write = app.spec.rare().write;
        let policy = policy_of(&app);
        let cron = app
            .spec
            .rare()
            .cron_restart
            .as_deref()
            .and_then(|c| Cron::parse(c).ok());
        if reused {
            self.unwatch_app(pm_id);
            if !self.table.contains(pm_id) {
                return Err(internal("vanished"));
            }
            self.table.reconfigure(pm_id, app, policy, logs);
            let e = self
                .table
                .get_mut(pm_id)
                .ok_or_else(|| internal("vanished"))?;
            e.cron = cron.map(Box::new);
            e.clear_rare(|r| (r.cron_at, r.cron_fired) = (None, None));
        } else {
            let (out, err) = logs;
            self.table
                .insert(pm_id, Entry::new(app, policy, out, err, cron));
        }
        if autostart {
            if let Err(e) = self.watch_app(pm_id) {
                if !reused {
                    self.table.remove(pm_id);
                }
                return Err(e);
            }
            if let Some(e) = self.table.get_mut(pm_id) {
                e.manual = true;
            }
            self.step(pm_id, Input::Start);
        }
        self.arm_cron(pm_id);
        if write {
            // It shows the process: forked first.
            self.finish_spawns();
            self.write_app_file(pm_id);
        }
        // The logs come closed (`open_logs`); a start that failed at once
        // may have opened them: held only while it runs.
        if autostart {
            self.close_idle_logs(pm_id);
        }
        Ok(())
    }

    /// `scale`: grow or shrink the instances of the app `name` to `want`;
    /// the pm_ids of those that stay or come, and of those that go.
    fn scale(&mut self, name: &str, want: &Value) -> Result<(Vec<u32>, Vec<u32>), WireError> {
        let bad = |m: String| WireError::new(ErrorCode::BadRequest, m);
        let ids = self.named(name);
        let Some(&first) = ids.first() else {
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("no process named {name}"),
            ));
        };
        let have = ids.len() as i64;
        let target = match want {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => match (s.strip_prefix('+'), s.strip_prefix('-')) {
                (Some(d), _) => d.parse::<i64>().ok().map(|d| have + d),
                (_, Some(d)) => d.parse::<i64>().ok().map(|d| have - d),
                _ => s.parse::<i64>().ok(),
            },
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "`instances` must be a number, +N or -N, got {want}"
            ))
        })?;
        if target < 1 || target as usize > options::MAX_INSTANCES {
            return Err(bad(format!(
                "cannot scale {name} to {target} instances (1 to {})",
                options::MAX_INSTANCES
            )));
        }
        let target = target as usize;
        check_room(self.table.len(), target.saturating_sub(ids.len()))?;
        // Every instance knows how many there are (descriptions, reload).
        for id in &ids {
            if let Some(e) = self.table.get_mut(*id) {
                e.app.slot.count = target as u32;
            }
        }
        if target <= ids.len() {
            // The newest go first.
            let (keep, drop) = ids.split_at(target);
            return Ok((keep.to_vec(), drop.to_vec()));
        }
        let template = self
            .table
            .get(first)
            .map(|e| e.app.clone())
            .ok_or_else(|| internal("vanished"))?;
        let taken = self.instances_of(name);
        let mut kept = ids.clone();
        for instance in free_indexes(&taken, target - ids.len()) {
            let pm_id = self.table.next_id();
            let slot = Slot {
                pm_id,
                instance,
                count: target as u32,
                cluster: template.slot.cluster,
            };
            let app = App::resolve(
                template.spec.clone(),
                &template.options.value(),
                slot,
                &self.home,
                template.base_env.clone(),
                template.env_name().map(str::to_string),
                self.root,
            )?;
            let logs = open_logs(&app, &self.home, self.log_defaults)?;
            let start = app.spec.autostart;
            self.install(pm_id, false, app, logs, start)?;
            kept.push(pm_id);
        }
        Ok((kept, Vec::new()))
    }

    /// `write`: the resolved options in `<name>-corral.json` in the cwd.
    fn write_app_file(&mut self, id: u32) {
        let Some(d) = self.describe(id) else { return };
        let Some(e) = self.table.get(id) else { return };
        let path = e.app.cwd.join(format!(
            "{}-corral.json",
            crate::app::file_stem(&e.app.spec.name)
        ));
        let text = serde_json::to_string_pretty(&d.pm2_env).unwrap_or_default();
        let user = e.app.file_user(&self.home, &path);
        let written = sys::as_user(user.as_ref(), || {
            sys::write_atomic(&path, text.as_bytes(), false)
        });
        if let Err(err) = written {
            self.log(&format!("app {id}: cannot write {}: {err}", path.display()));
        }
    }
}

/// Several errors of one request as one: the first one's code, every message.
fn join_errors(errors: Vec<WireError>) -> WireError {
    let code = errors.first().map_or(ErrorCode::Internal, |e| e.code);
    let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
    WireError::new(code, msgs.join("; "))
}

/// A log path `app` would share with `other`, an app of another name, by
/// accident: at least one of the two paths was chosen by corral from the
/// name (names such as `a b` and `a-b` make the same file name), not given.
fn log_clash(app: &App, other: &App) -> Option<std::path::PathBuf> {
    if app.spec.name == other.spec.name {
        return None;
    }
    let theirs = other.log_paths();
    app.log_paths().into_iter().find_map(|(p, given)| {
        theirs
            .iter()
            .any(|(q, q_given)| *q == p && !(given && *q_given))
            .then(|| p.to_path_buf())
    })
}

/// The two log files of an app, each also feeding the combined file
/// (`log_file`) when there is one; rotation from the app's options, else
/// the daemon's `defaults` (`--max-log-size`, `--log-retain`). Checked by
/// opening them, then closed: a start with a log that cannot be opened is
/// refused, yet an app holds no fd until it runs (the spawn opens them).
pub(super) fn open_logs(
    app: &App,
    home: &Home,
    defaults: (Option<u64>, u32),
) -> Result<(LogFile, LogFile), WireError> {
    logs_of(app, home, defaults, true)
}

/// `open_logs` without opening them: an app handed over by the old image
/// (`corral update`), whose files it had open.
pub(super) fn unopened_logs(
    app: &App,
    home: &Home,
    defaults: (Option<u64>, u32),
) -> Result<(LogFile, LogFile), WireError> {
    logs_of(app, home, defaults, false)
}

fn logs_of(
    app: &App,
    home: &Home,
    defaults: (Option<u64>, u32),
    check: bool,
) -> Result<(LogFile, LogFile), WireError> {
    let s = &app.spec;
    let rotation = match s.rare().max_log_size.or(defaults.0) {
        Some(max) if max > 0 => Some(Rotation {
            max,
            retain: s.rare().log_retain.unwrap_or(defaults.1),
        }),
        _ => None,
    };
    let open = |path: &std::path::Path, err: bool| {
        let user = app.file_user(home, path);
        let format = s.rare().log_date_format.as_deref();
        let lf = match check {
            true => LogFile::open(path, format, user).map_err(|e| {
                WireError::new(
                    ErrorCode::InvalidOption,
                    format!("cannot open log {}: {e}", path.display()),
                )
            })?,
            false => LogFile::unopened(path, format, user),
        }
        .with_rotation(rotation);
        Ok::<_, WireError>(match s.rare().log_type {
            LogType::Json => lf.with_json(&s.name, app.slot.pm_id, err),
            LogType::Text => lf,
        })
    };
    let combined = |err: bool| match app.log_path() {
        Some(p) => open(p, err).map(|lf| Some(lf.whole_lines())),
        None => Ok(None),
    };
    let mut out = open(&app.out_path, false)?.with_also(combined(false)?);
    out.close();
    let mut err = open(&app.err_path, true)?.with_also(combined(true)?);
    err.close();
    Ok((out, err))
}

/// `more` apps fit beside the `have` in the table (`MAX_APPS`).
fn check_room(have: usize, more: usize) -> Result<(), WireError> {
    match have + more > MAX_APPS {
        true => Err(WireError::new(
            ErrorCode::BadRequest,
            format!("too many apps: {have} known, {more} more would pass the limit of {MAX_APPS}"),
        )),
        false => Ok(()),
    }
}

/// How many CPUs this process may use (`instances: "max"`).
fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The `count` lowest instance indexes not in `taken`.
fn free_indexes(taken: &[u32], count: usize) -> Vec<u32> {
    (0..).filter(|i| !taken.contains(i)).take(count).collect()
}

/// The restart and stop rules of an app's options.
pub(super) fn policy_of(app: &App) -> Policy {
    let s = &app.spec;
    Policy {
        min_uptime: s.rare().min_uptime,
        max_restarts: s.rare().max_restarts,
        restart_delay: s.rare().restart_delay,
        autorestart: s.autorestart,
        stop_exit_codes: s.rare().stop_exit_codes.clone(),
        kill_timeout: s.rare().kill_timeout,
        kill_signal: s.rare().kill_signal,
        treekill: s.treekill,
        wait_ready: s.rare().wait_ready,
        listen_timeout: s.rare().listen_timeout,
        shutdown_with_message: s.rare().shutdown_with_message,
        exp_backoff: s.rare().exp_backoff_restart_delay,
        min_restart_interval: s.rare().min_restart_interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_at_most_max_apps() {
        let cases: &[(usize, usize, bool)] = &[
            (0, 1, true),
            (0, MAX_APPS, true),
            (MAX_APPS - 1, 1, true),
            (MAX_APPS, 0, true),
            (MAX_APPS, 1, false),
            (1, MAX_APPS, false),
        ];
        for &(have, more, fits) in cases {
            let got = check_room(have, more);
            assert_eq!(got.is_ok(), fits, "{have} + {more}");
            if let Err(e) = got {
                assert_eq!(e.code, ErrorCode::BadRequest);
                assert!(e.message.contains("too many apps"), "{}", e.message);
            }
        }
    }
}
