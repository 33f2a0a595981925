//! One state machine per app (STYLE 4): the *wanted* state kept apart from
//! what runs, the restart counters and backoff, the restart policy, and the
//! app's processes — its main one, a reload's replacement, old ones
//! draining — each a `process::Process`. `step` is the one transition
//! function; it is pure and returns the effects the daemon's loop performs
//! (spawn, signal, arm a timer, emit an event, swap, forget), so a whole
//! rolling reload is tested from a table without forking. Nothing outside
//! this module writes its fields.
//!
//! Times are milliseconds on the daemon's monotonic clock.

pub use crate::process::Exit;
use crate::process::{Event, Launch, OnTimeout, Out, Phase, Process, Stop};
use crate::protocol::Status;
use crate::sys::Signal;

/// The backoff delay grows ×1.5 per restart up to this (ms).
pub const BACKOFF_MAX: u64 = 15_000;
/// An app that ran this long (ms) before it exited starts its backoff over.
pub const BACKOFF_RESET: u64 = 30_000;

/// What the app is doing while it has no main process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rest {
    Stopped,
    /// Gave up: too many unstable restarts, or the program cannot be run.
    Errored,
    /// Exited; starts again at `until`.
    WaitingRestart {
        until: u64,
    },
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Wanted {
    Up,
    Down,
    Gone,
}

/// What one of the app's processes is to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The app's process.
    Main,
    /// A reload's replacement, started beside the main one.
    Candidate,
    /// An old process on its way out (after a swap, or given up on).
    Drain,
}

/// Why a reload's replacement did not take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Failure {
    /// It had to say it was ready within this many ms and did not.
    NotReady(u64),
    /// It ended before it was ready.
    Exited(Exit),
    /// It could not be started.
    SpawnFailed,
    /// A stop, restart or delete came first.
    Cancelled,
    /// The process it was to replace crashed meanwhile.
    LostPredecessor,
}

/// The restart and stop rules of one app (its options).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub min_uptime: u64,
    pub max_restarts: u32,
    pub restart_delay: u64,
    pub autorestart: bool,
    pub stop_exit_codes: Vec<i32>,
    pub kill_timeout: u64,
    pub kill_signal: Signal,
    pub treekill: bool,
    /// The app must say it is ready (online until then: `launching`).
    pub wait_ready: bool,
    /// How long it has to say so.
    pub listen_timeout: u64,
    /// Stop with the `shutdown` message instead of the kill signal.
    pub shutdown_with_message: bool,
    /// First delay of the exponential backoff; `None` = off.
    pub exp_backoff: Option<u64>,
    /// Least time between two starts of the app by automatic restarts
    /// (`min_restart_interval`): a process that died sooner waits out the
    /// rest, so a crash loop costs at most one spawn per interval.
    pub min_restart_interval: u64,
}

/// What happened, fed by the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Start,
    Stop,
    Restart,
    Delete,
    /// Zero the counters.
    Reset,
    /// SIGKILL every process of the app now (a second SIGTERM to the
    /// runtime while it stops); the app ends as a stop would.
    Kill,
    /// Replace the running process by a new one started beside it (`rolls`:
    /// several instances, cluster mode, `listen`), else restart. A
    /// replacement that `must_signal` (wait_ready, a Node worker) has
    /// `listen_timeout` to say it is ready; another is ready after
    /// `min_uptime` up. `graceful`: the old one gets `shutdown` first.
    Reload {
        graceful: bool,
        rolls: bool,
        must_signal: bool,
    },
    /// The loop forked the process `Effect::Spawn` asked for.
    Spawned {
        role: Role,
        pid: i32,
    },
    /// It could not even fork it (no pipe, no process).
    SpawnFailed {
        role: Role,
    },
    /// Something happened to the process `pid` (any role).
    Proc {
        pid: i32,
        event: Event,
    },
    /// A deadline is due: the app's own (`pid` None: the restart delay) or
    /// a process's. Stale ones are ignored here.
    Deadline {
        pid: Option<i32>,
        at: u64,
    },
}

/// What the loop must do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Fork and exec a process for this role, then feed `Spawned`.
    Spawn(Role),
    /// Send this signal, then SIGCONT, to the group (or the pid alone).
    Signal {
        pid: i32,
        sig: Signal,
        group: bool,
    },
    /// Send `shutdown` and/or (to a Node worker) `disconnect` on the
    /// channel of `pid`; feed `Event::AskFailed` if nothing could be sent.
    Ask {
        pid: i32,
        shutdown: bool,
        disconnect: bool,
    },
    /// SIGKILL `pid`'s group (or the pid alone); once its `leader` is
    /// reaped, only while the group still has members.
    Kill {
        pid: i32,
        group: bool,
        leader: bool,
    },
    /// Feed `Deadline { pid, at }` at `at`.
    Timer {
        pid: Option<i32>,
        at: u64,
    },
    /// The main process `pid` started: record it (pid file, uptime).
    MainStarted(i32),
    /// The main process ended: remove its pid file.
    ClearPid,
    Emit(&'static str),
    /// Online because `listen_timeout` passed without a ready message.
    ReadyTimeout,
    /// The replacement `new` took over from `old`.
    Swapped {
        old: i32,
        new: i32,
    },
    /// The reload of this app is over.
    Reloaded(Result<(), Failure>),
    /// Nothing of process `pid` is left: forget its pid and channel.
    Released(i32),
    /// Drop the app from the table.
    Forget,
}

/// What of an app's machine the journal keeps (`Machine::journaled`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Journaled {
    wanted: Wanted,
    errored: bool,
    restart_time: u32,
    unstable_restarts: u32,
    pids: Vec<i32>,
}

/// The state of one app.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    wanted: Wanted,
    /// Not handed over (`corral update`): the new image sets it again from
    /// the app's options.
    #[serde(skip, default = "unset_policy")]
    policy: Policy,
    restart_time: u32,
    unstable_restarts: u32,
    /// Exits of the main process on its own (not asked to stop), ever: a
    /// request waiting on a crash-looping app is answered once it crashed.
    /// (What is at its default is left out of a hand-over: a thousand
    /// apps are handed over in one go.)
    #[serde(default, skip_serializing_if = "is_zero")]
    crashes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_exit: Option<Exit>,
    /// The last backoff delay (0 before the first), PM2's
    /// `prev_restart_delay`.
    #[serde(default, skip_serializing_if = "is_zero")]
    prev_restart_delay: u64,
    rest: Rest,
    main: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Boxed: there is one only during a reload.
    candidate: Option<Box<Process>>,
    /// How the replacement being started must be ready and how the old
    /// process is to be asked to go.
    #[serde(default, skip_serializing_if = "is_false")]
    must_signal: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    graceful: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    drains: Vec<Process>,
    /// Deleted, waiting for draining processes to go before it is forgotten.
    #[serde(default, skip_serializing_if = "is_false")]
    forget_when_quiet: bool,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The policy of a machine read from a hand-over until its app's is set.
fn unset_policy() -> Policy {
    Policy {
        min_uptime: 0,
        max_restarts: 0,
        restart_delay: 0,
        autorestart: false,
        stop_exit_codes: Vec::new(),
        kill_timeout: 0,
        kill_signal: Signal::KILL,
        treekill: false,
        wait_ready: false,
        listen_timeout: 0,
        shutdown_with_message: false,
        exp_backoff: None,
        min_restart_interval: 0,
    }
}

impl Machine {
    /// A stopped app.
    pub fn new(policy: Policy) -> Machine {
        Machine {
            wanted: Wanted::Down,
            policy,
            restart_time: 0,
            unstable_restarts: 0,
            crashes: 0,
            last_exit: None,
            prev_restart_delay: 0,
            rest: Rest::Stopped,
            main: None,
            candidate: None,
            must_signal: false,
            graceful: false,
            drains: Vec::new(),
            forget_when_quiet: false,
        }
    }

    /// Counters carried over from a previous daemon (crash recovery), for
    /// an app that is not running.
    pub fn restore(&mut self, restart_time: u32, unstable_restarts: u32) {
        if self.main.is_none() {
            self.restart_time = restart_time;
            self.unstable_restarts = unstable_restarts;
        }
    }

    /// New options for an app that is not running.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn wanted(&self) -> Wanted {
        self.wanted
    }

    pub fn restart_time(&self) -> u32 {
        self.restart_time
    }

    pub fn unstable_restarts(&self) -> u32 {
        self.unstable_restarts
    }

    /// How many times the main process exited without being asked to.
    pub fn crashes(&self) -> u32 {
        self.crashes
    }

    pub fn last_exit(&self) -> Option<Exit> {
        self.last_exit
    }

    pub fn prev_restart_delay(&self) -> u64 {
        self.prev_restart_delay
    }

    pub fn status(&self) -> Status {
        match &self.main {
            Some(p) => match p.phase() {
                Phase::Spawning | Phase::Launching { .. } => Status::Launching,
                Phase::Online => Status::Online,
                _ => Status::Stopping,
            },
            None => match self.rest {
                Rest::Stopped => Status::Stopped,
                Rest::Errored => Status::Errored,
                Rest::WaitingRestart { .. } => Status::WaitingRestart,
            },
        }
    }

    /// The pid of the main process while it is not reaped.
    pub fn pid(&self) -> Option<i32> {
        self.main
            .as_ref()
            .filter(|p| p.leader_alive())
            .map(Process::pid)
    }

    /// Whether the main process runs (and may be signalled).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Whether the main process is up and ready.
    pub fn is_online(&self) -> bool {
        self.main
            .as_ref()
            .is_some_and(|p| p.phase() == Phase::Online)
    }

    /// Whether a request waiting on this app can be answered: it is not in
    /// the middle of starting, stopping or restarting.
    pub fn is_settled(&self) -> bool {
        !self.forget_when_quiet
            && self
                .main
                .as_ref()
                .is_none_or(|p| p.phase() == Phase::Online)
    }

    /// Whether no replacement or draining process is left.
    pub fn is_quiet(&self) -> bool {
        self.candidate.is_none() && self.drains.is_empty()
    }

    /// What process `pid` is to this app.
    pub fn role_of(&self, pid: i32) -> Option<Role> {
        if self.main.as_ref().is_some_and(|p| p.pid() == pid) {
            Some(Role::Main)
        } else if self.candidate.as_ref().is_some_and(|p| p.pid() == pid) {
            Some(Role::Candidate)
        } else if self.drains.iter().any(|p| p.pid() == pid) {
            Some(Role::Drain)
        } else {
            None
        }
    }

    /// Processes whose leader was reaped while members of their group may
    /// remain: the loop checks them after every reap (`GroupEmpty`).
    pub fn lingering(&self) -> impl Iterator<Item = i32> + '_ {
        self.processes()
            .filter(|p| matches!(p.phase(), Phase::Stopping { leader: false, .. }))
            .map(Process::pid)
    }

    /// Every deadline the machine waits on: the app's own (`None`: the
    /// restart delay) and its processes' (a new daemon image re-arms them).
    pub fn deadlines(&self) -> Vec<(Option<i32>, u64)> {
        let mut out: Vec<(Option<i32>, u64)> = self
            .processes()
            .filter_map(|p| p.deadline().map(|at| (Some(p.pid()), at)))
            .collect();
        if let Rest::WaitingRestart { until } = self.rest {
            out.push((None, until));
        }
        out
    }

    /// What of the machine the daemon's journal keeps: a step that leaves
    /// it as it was does not make the journal due.
    pub fn journaled(&self) -> Journaled {
        Journaled {
            wanted: self.wanted,
            errored: self.status() == Status::Errored,
            restart_time: self.restart_time,
            unstable_restarts: self.unstable_restarts,
            pids: self.pids(),
        }
    }

    /// The pids of every process of the app that has not been released.
    pub fn pids(&self) -> Vec<i32> {
        self.pid_iter().collect()
    }

    /// `pids`, without a vector.
    pub fn pid_iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.processes().map(Process::pid)
    }

    fn processes(&self) -> impl Iterator<Item = &Process> {
        self.main
            .iter()
            .chain(self.candidate.as_deref())
            .chain(self.drains.iter())
    }

    fn process(&self, pid: i32) -> Option<&Process> {
        self.processes().find(|p| p.pid() == pid)
    }

    /// The time the app's own deadline is due (the restart delay).
    pub fn deadline(&self) -> Option<u64> {
        match (&self.main, self.rest) {
            (None, Rest::WaitingRestart { until }) => Some(until),
            _ => None,
        }
    }

    /// The one transition function.
    pub fn step(&mut self, input: Input, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Start => {
                self.wanted = Wanted::Up;
                if self.main.is_none() {
                    self.unstable_restarts = 0;
                    fx.push(Effect::Emit("start"));
                    fx.push(Effect::Spawn(Role::Main));
                }
            }
            Input::Stop => self.ask_down(Wanted::Down, now, &mut fx),
            Input::Restart => self.ask_down(Wanted::Up, now, &mut fx),
            Input::Delete => self.ask_down(Wanted::Gone, now, &mut fx),
            Input::Reset => {
                self.restart_time = 0;
                self.unstable_restarts = 0;
            }
            Input::Kill => {
                if self.wanted == Wanted::Up {
                    self.wanted = Wanted::Down;
                }
                for pid in self.pids() {
                    self.feed(pid, Event::Kill, now, &mut fx);
                }
            }
            Input::Reload {
                graceful,
                rolls,
                must_signal,
            } => {
                if self.candidate.is_some() {
                    return fx;
                }
                if rolls && self.is_online() {
                    self.graceful = graceful;
                    self.must_signal = must_signal;
                    fx.push(Effect::Spawn(Role::Candidate));
                } else {
                    // Nothing serves: a plain restart loses nothing.
                    self.ask_down(Wanted::Up, now, &mut fx);
                    fx.push(Effect::Reloaded(Ok(())));
                }
            }
            Input::Spawned { role, pid } => self.spawned(role, pid, now, &mut fx),
            Input::SpawnFailed { role: Role::Main } => self.give_up(&mut fx),
            Input::SpawnFailed { .. } => fx.push(Effect::Reloaded(Err(Failure::SpawnFailed))),
            Input::Proc { pid, event } => self.feed(pid, event, now, &mut fx),
            Input::Deadline { pid: None, at } => {
                if self.deadline() == Some(at) {
                    self.restart_time += 1;
                    fx.push(Effect::Spawn(Role::Main));
                }
            }
            Input::Deadline { pid: Some(pid), at } => {
                if self.process(pid).and_then(Process::deadline) == Some(at) {
                    self.feed(pid, Event::Deadline, now, &mut fx);
                }
            }
        }
        fx
    }

    /// Stop, restart (`Up`) or delete (`Gone`): stop the main process if it
    /// runs; act at once if none does.
    fn ask_down(&mut self, wanted: Wanted, now: u64, fx: &mut Vec<Effect>) {
        self.cancel_candidate(Failure::Cancelled, now, fx);
        self.wanted = wanted;
        match &self.main {
            Some(p) if p.is_leaving() => {}
            Some(p) => {
                let pid = p.pid();
                let how = match self.policy.shutdown_with_message {
                    true => Stop::Ask {
                        shutdown: true,
                        disconnect: false,
                        signal: self.policy.kill_signal,
                        signal_at_deadline: false,
                    },
                    false => Stop::Signal(self.policy.kill_signal),
                };
                let timeout = self.policy.kill_timeout;
                self.feed(pid, Event::Stop { how, timeout }, now, fx);
            }
            None => match wanted {
                Wanted::Down => {
                    if self.rest != Rest::Stopped {
                        self.rest = Rest::Stopped;
                        fx.push(Effect::Emit("stop"));
                    }
                }
                Wanted::Up => {
                    self.unstable_restarts = 0;
                    self.prev_restart_delay = 0;
                    self.restart_time += 1;
                    fx.push(Effect::Emit("restart"));
                    fx.push(Effect::Spawn(Role::Main));
                }
                Wanted::Gone => {
                    fx.push(Effect::Emit("delete"));
                    self.forget(fx);
                }
            },
        }
    }

    fn spawned(&mut self, role: Role, pid: i32, now: u64, fx: &mut Vec<Effect>) {
        let group = self.policy.treekill;
        match role {
            Role::Main => {
                let launch = match self.policy.wait_ready {
                    true => Launch::Wait {
                        timeout: self.policy.listen_timeout,
                        on_timeout: OnTimeout::Warn,
                    },
                    false => Launch::Now,
                };
                self.rest = Rest::Stopped;
                self.main = Some(Process::spawned(pid, now, group, launch));
                fx.push(Effect::MainStarted(pid));
            }
            Role::Candidate | Role::Drain => {
                let launch = match self.must_signal {
                    true => Launch::Wait {
                        timeout: self.policy.listen_timeout,
                        on_timeout: OnTimeout::Fail,
                    },
                    false => Launch::Wait {
                        timeout: self.policy.min_uptime,
                        on_timeout: OnTimeout::Accept,
                    },
                };
                self.candidate = Some(Box::new(Process::spawned(pid, now, group, launch)));
            }
        }
    }

    /// Feed `event` to process `pid` and act on what it says, by its role.
    fn feed(&mut self, pid: i32, event: Event, now: u64, fx: &mut Vec<Effect>) {
        let Some(role) = self.role_of(pid) else {
            // The exit of a process already forgotten, a stale event.
            return;
        };
        let slot = match role {
            Role::Main => self.main.as_mut(),
            Role::Candidate => self.candidate.as_deref_mut(),
            Role::Drain => self.drains.iter_mut().find(|p| p.pid() == pid),
        };
        let Some(p) = slot else {
            return;
        };
        let was_leaving = p.is_leaving();
        let since = p.since();
        let outs = p.step(event, now);
        let (group, leader) = (p.group(), p.leader_alive());
        let mut exited = None;
        let mut gone = false;
        let mut online = false;
        let mut failed = false;
        let mut not_ready = false;
        for out in outs {
            match out {
                Out::Signal(sig) => fx.push(Effect::Signal { pid, sig, group }),
                Out::Ask {
                    shutdown,
                    disconnect,
                } => fx.push(Effect::Ask {
                    pid,
                    shutdown,
                    disconnect,
                }),
                Out::Kill => fx.push(Effect::Kill { pid, group, leader }),
                Out::Timer(at) => fx.push(Effect::Timer { pid: Some(pid), at }),
                Out::Online => online = true,
                Out::ReadyTimeout => fx.push(Effect::ReadyTimeout),
                Out::NotReady => not_ready = true,
                Out::ExecFailed => failed = true,
                Out::Exited(exit) => exited = Some(exit),
                Out::Gone => gone = true,
            }
        }
        match role {
            Role::Main => {
                if online {
                    fx.push(Effect::Emit("online"));
                }
                if let Some(exit) = exited {
                    self.last_exit = Some(exit);
                    fx.push(Effect::ClearPid);
                    fx.push(Effect::Emit("exit"));
                }
                if failed {
                    // Never ran: it goes when reaped, as a drain.
                    if let Some(p) = self.main.take().filter(|_| !gone) {
                        self.drains.push(p);
                    }
                }
                if gone {
                    self.main = None;
                    fx.push(Effect::Released(pid));
                }
                if failed {
                    self.cancel_candidate(Failure::LostPredecessor, now, fx);
                    self.give_up(fx);
                } else if gone && was_leaving {
                    self.finish_stop(fx);
                } else if let (Some(exit), false) = (exited, was_leaving) {
                    self.cancel_candidate(Failure::LostPredecessor, now, fx);
                    self.after_crash(exit, now.saturating_sub(since), now, fx);
                }
            }
            Role::Candidate => {
                if online {
                    self.swap(now, fx);
                } else if failed || not_ready || exited.is_some() {
                    let why = match (failed, exited) {
                        (true, _) => Failure::SpawnFailed,
                        (false, Some(exit)) => Failure::Exited(exit),
                        (false, None) => Failure::NotReady(self.policy.listen_timeout),
                    };
                    if let (Some(_), Event::Exited { group_alive, .. }) = (exited, event)
                        && group_alive
                        && group
                    {
                        // Its leftovers go with it.
                        fx.push(Effect::Kill {
                            pid,
                            group: true,
                            leader: false,
                        });
                    }
                    self.retire_candidate(gone, now, fx);
                    fx.push(Effect::Reloaded(Err(why)));
                } else if gone {
                    self.candidate = None;
                    fx.push(Effect::Released(pid));
                }
            }
            Role::Drain => {
                if gone {
                    self.drains.retain(|p| p.pid() != pid);
                    fx.push(Effect::Released(pid));
                    if self.forget_when_quiet && self.main.is_none() && self.is_quiet() {
                        self.forget_when_quiet = false;
                        fx.push(Effect::Forget);
                    }
                }
            }
        }
    }

    /// Give up on the replacement (a stop, restart or delete came, or the
    /// process it replaces crashed): SIGKILL it and report `why`.
    fn cancel_candidate(&mut self, why: Failure, now: u64, fx: &mut Vec<Effect>) {
        let Some(pid) = self.candidate.as_deref().map(Process::pid) else {
            return;
        };
        let mut outs = Vec::new();
        if let Some(c) = self.candidate.as_mut() {
            outs = c.step(Event::Kill, now);
        }
        self.emit_outs(pid, &outs, fx);
        self.retire_candidate(false, now, fx);
        fx.push(Effect::Reloaded(Err(why)));
    }

    /// The replacement is no longer one: gone, or a drain until reaped
    /// (SIGKILLed if it still runs).
    fn retire_candidate(&mut self, gone: bool, now: u64, fx: &mut Vec<Effect>) {
        let Some(mut c) = self.candidate.take() else {
            return;
        };
        let pid = c.pid();
        if gone || c.phase() == Phase::Gone {
            fx.push(Effect::Released(pid));
            return;
        }
        if !c.is_leaving() {
            let outs = c.step(Event::Kill, now);
            self.emit_outs(pid, &outs, fx);
        }
        self.drains.push(*c);
    }

    /// The signal, kill and timer outs of a process, as effects.
    fn emit_outs(&self, pid: i32, outs: &[Out], fx: &mut Vec<Effect>) {
        let (group, leader) = self.process(pid).map_or((self.policy.treekill, true), |p| {
            (p.group(), p.leader_alive())
        });
        for out in outs {
            match *out {
                Out::Signal(sig) => fx.push(Effect::Signal { pid, sig, group }),
                Out::Ask {
                    shutdown,
                    disconnect,
                } => fx.push(Effect::Ask {
                    pid,
                    shutdown,
                    disconnect,
                }),
                Out::Kill => fx.push(Effect::Kill { pid, group, leader }),
                Out::Timer(at) => fx.push(Effect::Timer { pid: Some(pid), at }),
                _ => {}
            }
        }
    }

    /// The replacement is ready: it becomes the main process and the old
    /// one drains — asked to go (`shutdown` with graceful_reload, a Node
    /// worker's `disconnect`), the kill signal at its kill timeout, SIGKILL
    /// `KILL_GRACE` later.
    fn swap(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let (Some(new), Some(mut old)) = (self.candidate.take(), self.main.take()) else {
            return;
        };
        let (old_pid, new_pid) = (old.pid(), new.pid());
        self.main = Some(*new);
        self.restart_time += 1;
        fx.push(Effect::Swapped {
            old: old_pid,
            new: new_pid,
        });
        let how = Stop::Ask {
            shutdown: self.graceful,
            disconnect: true,
            signal: self.policy.kill_signal,
            signal_at_deadline: true,
        };
        let timeout = self.policy.kill_timeout;
        let outs = old.step(Event::Stop { how, timeout }, now);
        self.drains.push(old);
        self.emit_outs(old_pid, &outs, fx);
        fx.push(Effect::Emit("restart"));
        fx.push(Effect::Emit("online"));
        fx.push(Effect::Reloaded(Ok(())));
    }

    /// The main process cannot be started: errored.
    fn give_up(&mut self, fx: &mut Vec<Effect>) {
        self.wanted = Wanted::Down;
        self.rest = Rest::Errored;
        fx.push(Effect::Emit("restart overlimit"));
    }

    fn forget(&mut self, fx: &mut Vec<Effect>) {
        if self.is_quiet() {
            fx.push(Effect::Forget);
        } else {
            self.forget_when_quiet = true;
        }
    }

    /// The process (and its group) is gone after a stop, restart or delete.
    fn finish_stop(&mut self, fx: &mut Vec<Effect>) {
        self.rest = Rest::Stopped;
        match self.wanted {
            Wanted::Up => {
                self.unstable_restarts = 0;
                self.prev_restart_delay = 0;
                self.restart_time += 1;
                fx.push(Effect::Emit("restart"));
                fx.push(Effect::Spawn(Role::Main));
            }
            Wanted::Down => fx.push(Effect::Emit("stop")),
            Wanted::Gone => {
                fx.push(Effect::Emit("delete"));
                self.forget(fx);
            }
        }
    }

    /// The main process exited on its own after `uptime` ms.
    fn after_crash(&mut self, exit: Exit, uptime: u64, now: u64, fx: &mut Vec<Effect>) {
        self.crashes = self.crashes.wrapping_add(1);
        let p = &self.policy;
        let wanted_stop = match exit {
            Exit::Code(c) => p.stop_exit_codes.contains(&c),
            Exit::Signal(_) => false,
        };
        if self.wanted != Wanted::Up || !p.autorestart || wanted_stop {
            self.wanted = Wanted::Down;
            self.rest = Rest::Stopped;
            return;
        }
        if uptime < p.min_uptime {
            if self.unstable_restarts >= p.max_restarts {
                self.give_up(fx);
                return;
            }
            self.unstable_restarts += 1;
        } else {
            self.unstable_restarts = 0;
        }
        let delay = match p.exp_backoff {
            None => p.restart_delay,
            Some(first) => {
                self.prev_restart_delay = if uptime >= BACKOFF_RESET || self.prev_restart_delay == 0
                {
                    first
                } else {
                    (self.prev_restart_delay * 3 / 2).min(BACKOFF_MAX)
                };
                self.prev_restart_delay.max(p.restart_delay)
            }
        };
        // The floor counts from the start of the process that died (s6's
        // rule): one that ran longer restarts at once.
        let delay = delay.max(p.min_restart_interval.saturating_sub(uptime));
        // Even without a delay the restart goes through a deadline: the
        // loop spawns at most so many due restarts per wake, so a crash
        // storm cannot keep it from requests and signals.
        let until = now + delay;
        self.rest = Rest::WaitingRestart { until };
        fx.push(Effect::Timer {
            pid: None,
            at: until,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Effect::*;
    use super::{
        BACKOFF_MAX, BACKOFF_RESET, Effect, Event, Exit, Failure, Input, Machine, Policy, Role,
        Status, Wanted,
    };
    use crate::sys::Signal as Sig;

    const INT: Sig = Sig::INT;

    fn policy() -> Policy {
        Policy {
            min_uptime: 1000,
            max_restarts: 2,
            restart_delay: 0,
            autorestart: true,
            stop_exit_codes: vec![3],
            kill_timeout: 1600,
            kill_signal: INT,
            treekill: true,
            wait_ready: false,
            listen_timeout: 3000,
            shutdown_with_message: false,
            exp_backoff: None,
            min_restart_interval: 0,
        }
    }

    fn proc_(pid: i32, event: Event) -> Input {
        Input::Proc { pid, event }
    }

    fn exited(pid: i32, code: i32) -> Input {
        proc_(
            pid,
            Event::Exited {
                exit: Exit::Code(code),
                group_alive: false,
            },
        )
    }

    /// An app whose main process `pid` went online at `since`.
    fn online_with(policy: Policy, pid: i32, since: u64) -> Machine {
        let mut m = Machine::new(policy);
        m.step(Input::Start, since);
        m.step(
            Input::Spawned {
                role: Role::Main,
                pid,
            },
            since,
        );
        m.step(proc_(pid, Event::Execd), since);
        m
    }

    fn online(pid: i32, since: u64) -> Machine {
        online_with(policy(), pid, since)
    }

    fn with<F: FnOnce(&mut Machine)>(mut m: Machine, f: F) -> Machine {
        f(&mut m);
        m
    }

    /// `online(10, 0)` asked at `at` for a rolling reload that must
    /// signal, its replacement `pid` spawned.
    fn reloading(pid: i32, at: u64) -> Machine {
        with(online(10, 0), |m| {
            m.step(
                Input::Reload {
                    graceful: false,
                    rolls: true,
                    must_signal: true,
                },
                at,
            );
            m.step(
                Input::Spawned {
                    role: Role::Candidate,
                    pid,
                },
                at,
            );
        })
    }

    fn stopping(wanted: Input) -> Machine {
        with(online(10, 0), |m| {
            m.step(wanted, 1000);
        })
    }

    /// A machine handed to a new daemon image (`corral update`) as JSON,
    /// its policy set again from the app: the same machine, the same
    /// deadlines, the same effects when they come.
    #[test]
    fn a_handed_over_machine_goes_on_as_before() {
        let waiting = with(online(10, 0), |m| {
            m.step(exited(10, 1), 5000);
        });
        type Deadlines = Vec<(Option<i32>, u64)>;
        let cases: Vec<(&str, Machine, Deadlines)> = vec![
            ("online", online(10, 0), vec![]),
            ("stopping", stopping(Input::Stop), vec![(Some(10), 2600)]),
            ("waiting to restart", waiting, vec![(None, 5000)]),
            (
                "reloading",
                with(reloading(11, 2000), |m| {
                    m.step(proc_(11, Event::Execd), 2010);
                }),
                vec![(Some(11), 5010)],
            ),
        ];
        for (what, m, deadlines) in cases {
            assert_eq!(m.deadlines(), deadlines, "{what}");
            let text = serde_json::to_string(&m).unwrap();
            let mut back: Machine = serde_json::from_str(&text).unwrap();
            back.set_policy(m.policy().clone());
            assert_eq!(back, m, "{what}");
            for (pid, at) in deadlines {
                let (mut a, mut b) = (m.clone(), back.clone());
                let due = Input::Deadline { pid, at };
                assert_eq!(a.step(due, at), b.step(due, at), "{what}");
            }
        }
    }

    /// Which steps change what the journal keeps: an exec (of a main
    /// process, or of a replacement that must still say it is ready) does
    /// not; a spawn, an exit, a stop, a swap do.
    #[test]
    fn what_the_journal_keeps_changes_with_a_table() {
        let spawning = with(Machine::new(policy()), |m| {
            m.step(Input::Start, 0);
            m.step(
                Input::Spawned {
                    role: Role::Main,
                    pid: 10,
                },
                0,
            );
        });
        let ready = with(reloading(11, 2000), |m| {
            m.step(proc_(11, Event::Execd), 2010);
        });
        let cases: Vec<(&str, Machine, Input, bool)> = vec![
            (
                "main exec'd",
                spawning.clone(),
                proc_(10, Event::Execd),
                false,
            ),
            (
                "replacement exec'd",
                reloading(11, 2000),
                proc_(11, Event::Execd),
                false,
            ),
            (
                "replacement ready: swap",
                ready,
                proc_(11, Event::Ready),
                true,
            ),
            (
                "exec failed: errored",
                spawning.clone(),
                proc_(10, Event::ExecFailed),
                true,
            ),
            ("crash", online(10, 0), exited(10, 1), true),
            ("stop asked", online(10, 0), Input::Stop, true),
            (
                "spawned",
                with(Machine::new(policy()), |m| {
                    m.step(Input::Start, 0);
                }),
                Input::Spawned {
                    role: Role::Main,
                    pid: 12,
                },
                true,
            ),
        ];
        for (what, mut m, input, changes) in cases {
            let before = m.journaled();
            m.step(input, 5000);
            assert_eq!(m.journaled() != before, changes, "{what}");
        }
    }

    /// (name, machine before, input, now, status after, wanted after, effects)
    type Case = (
        &'static str,
        Machine,
        Input,
        u64,
        Status,
        Wanted,
        Vec<Effect>,
    );

    #[test]
    fn transitions_from_a_table() {
        let sig = |pid| Signal {
            pid,
            sig: INT,
            group: true,
        };
        let main = |pid| Input::Spawned {
            role: Role::Main,
            pid,
        };
        let cases: Vec<Case> = vec![
            (
                "start a stopped app",
                Machine::new(policy()),
                Input::Start,
                0,
                Status::Stopped,
                Wanted::Up,
                vec![Emit("start"), Spawn(Role::Main)],
            ),
            (
                "spawned is launching until exec'd",
                with(Machine::new(policy()), |m| {
                    m.step(Input::Start, 0);
                }),
                main(10),
                5,
                Status::Launching,
                Wanted::Up,
                vec![MainStarted(10)],
            ),
            (
                "exec'd is online",
                with(Machine::new(policy()), |m| {
                    m.step(Input::Start, 0);
                    m.step(main(10), 0);
                }),
                proc_(10, Event::Execd),
                5,
                Status::Online,
                Wanted::Up,
                vec![Emit("online")],
            ),
            (
                "start while online does nothing",
                online(10, 0),
                Input::Start,
                9,
                Status::Online,
                Wanted::Up,
                vec![],
            ),
            (
                "stop signals the group and arms the kill timer",
                online(10, 0),
                Input::Stop,
                1000,
                Status::Stopping,
                Wanted::Down,
                vec![
                    sig(10),
                    Timer {
                        pid: Some(10),
                        at: 2600,
                    },
                ],
            ),
            (
                "stop without treekill signals the pid",
                online_with(
                    Policy {
                        treekill: false,
                        ..policy()
                    },
                    10,
                    0,
                ),
                Input::Stop,
                0,
                Status::Stopping,
                Wanted::Down,
                vec![
                    Signal {
                        pid: 10,
                        sig: INT,
                        group: false,
                    },
                    Timer {
                        pid: Some(10),
                        at: 1600,
                    },
                ],
            ),
            (
                "exit while stopping is stopped",
                stopping(Input::Stop),
                exited(10, 0),
                1100,
                Status::Stopped,
                Wanted::Down,
                vec![ClearPid, Emit("exit"), Released(10), Emit("stop")],
            ),
            (
                "exit while stopping with the group alive waits for it",
                stopping(Input::Stop),
                proc_(
                    10,
                    Event::Exited {
                        exit: Exit::Code(0),
                        group_alive: true,
                    },
                ),
                1100,
                Status::Stopping,
                Wanted::Down,
                vec![ClearPid, Emit("exit")],
            ),
            (
                "the group empties: stopped",
                with(stopping(Input::Stop), |m| {
                    m.step(
                        proc_(
                            10,
                            Event::Exited {
                                exit: Exit::Code(0),
                                group_alive: true,
                            },
                        ),
                        1100,
                    );
                }),
                proc_(10, Event::GroupEmpty),
                1200,
                Status::Stopped,
                Wanted::Down,
                vec![Released(10), Emit("stop")],
            ),
            (
                "kill timeout sends SIGKILL and waits for the exit",
                stopping(Input::Stop),
                Input::Deadline {
                    pid: Some(10),
                    at: 2600,
                },
                2600,
                Status::Stopping,
                Wanted::Down,
                vec![Kill {
                    pid: 10,
                    group: true,
                    leader: true,
                }],
            ),
            (
                "a stale deadline is ignored",
                stopping(Input::Stop),
                Input::Deadline {
                    pid: Some(10),
                    at: 2000,
                },
                2600,
                Status::Stopping,
                Wanted::Down,
                vec![],
            ),
            (
                "exit while stopping for a restart spawns again",
                stopping(Input::Restart),
                exited(10, 0),
                1100,
                Status::Stopped,
                Wanted::Up,
                vec![
                    ClearPid,
                    Emit("exit"),
                    Released(10),
                    Emit("restart"),
                    Spawn(Role::Main),
                ],
            ),
            (
                "exit while deleting forgets",
                stopping(Input::Delete),
                exited(10, 0),
                1100,
                Status::Stopped,
                Wanted::Gone,
                vec![ClearPid, Emit("exit"), Released(10), Emit("delete"), Forget],
            ),
            (
                "stable crash restarts at once",
                online(10, 0),
                exited(10, 1),
                5000,
                Status::WaitingRestart,
                Wanted::Up,
                vec![
                    ClearPid,
                    Emit("exit"),
                    Released(10),
                    Timer {
                        pid: None,
                        at: 5000,
                    },
                ],
            ),
            (
                "crash with restart_delay waits",
                online_with(
                    Policy {
                        restart_delay: 500,
                        ..policy()
                    },
                    10,
                    0,
                ),
                exited(10, 1),
                5000,
                Status::WaitingRestart,
                Wanted::Up,
                vec![
                    ClearPid,
                    Emit("exit"),
                    Released(10),
                    Timer {
                        pid: None,
                        at: 5500,
                    },
                ],
            ),
            (
                "waiting restart is due",
                with(
                    online_with(
                        Policy {
                            restart_delay: 500,
                            ..policy()
                        },
                        10,
                        0,
                    ),
                    |m| {
                        m.step(exited(10, 1), 5000);
                    },
                ),
                Input::Deadline {
                    pid: None,
                    at: 5500,
                },
                5500,
                Status::WaitingRestart,
                Wanted::Up,
                vec![Spawn(Role::Main)],
            ),
            (
                "stop while waiting restart",
                with(
                    online_with(
                        Policy {
                            restart_delay: 500,
                            ..policy()
                        },
                        10,
                        0,
                    ),
                    |m| {
                        m.step(exited(10, 1), 5000);
                    },
                ),
                Input::Stop,
                5100,
                Status::Stopped,
                Wanted::Down,
                vec![Emit("stop")],
            ),
            (
                "an exit code in stop_exit_codes stays stopped",
                online(10, 0),
                exited(10, 3),
                5000,
                Status::Stopped,
                Wanted::Down,
                vec![ClearPid, Emit("exit"), Released(10)],
            ),
            (
                "autorestart false stays stopped",
                online_with(
                    Policy {
                        autorestart: false,
                        ..policy()
                    },
                    10,
                    0,
                ),
                exited(10, 1),
                5000,
                Status::Stopped,
                Wanted::Down,
                vec![ClearPid, Emit("exit"), Released(10)],
            ),
            (
                "unstable crash under the limit restarts",
                online(10, 0),
                exited(10, 1),
                10,
                Status::WaitingRestart,
                Wanted::Up,
                vec![
                    ClearPid,
                    Emit("exit"),
                    Released(10),
                    Timer { pid: None, at: 10 },
                ],
            ),
            (
                "unstable crash at the limit is errored",
                with(online(10, 0), |m| m.unstable_restarts = 2),
                exited(10, 1),
                10,
                Status::Errored,
                Wanted::Down,
                vec![
                    ClearPid,
                    Emit("exit"),
                    Released(10),
                    Emit("restart overlimit"),
                ],
            ),
            (
                "the exit of an unknown pid is ignored",
                online(11, 0),
                exited(10, 1),
                10,
                Status::Online,
                Wanted::Up,
                vec![],
            ),
            (
                "restart a stopped app spawns",
                Machine::new(policy()),
                Input::Restart,
                0,
                Status::Stopped,
                Wanted::Up,
                vec![Emit("restart"), Spawn(Role::Main)],
            ),
            (
                "delete a stopped app forgets it",
                Machine::new(policy()),
                Input::Delete,
                0,
                Status::Stopped,
                Wanted::Gone,
                vec![Emit("delete"), Forget],
            ),
            (
                "with wait_ready an exec'd app is launching until ready",
                with(
                    Machine::new(Policy {
                        wait_ready: true,
                        ..policy()
                    }),
                    |m| {
                        m.step(Input::Start, 0);
                        m.step(main(10), 0);
                    },
                ),
                proc_(10, Event::Execd),
                5,
                Status::Launching,
                Wanted::Up,
                vec![Timer {
                    pid: Some(10),
                    at: 3005,
                }],
            ),
            (
                "listen_timeout makes it online with a warning",
                with(
                    Machine::new(Policy {
                        wait_ready: true,
                        ..policy()
                    }),
                    |m| {
                        m.step(Input::Start, 0);
                        m.step(main(10), 0);
                        m.step(proc_(10, Event::Execd), 5);
                    },
                ),
                Input::Deadline {
                    pid: Some(10),
                    at: 3005,
                },
                3005,
                Status::Online,
                Wanted::Up,
                vec![ReadyTimeout, Emit("online")],
            ),
            (
                "shutdown_with_message stops with the message",
                online_with(
                    Policy {
                        shutdown_with_message: true,
                        ..policy()
                    },
                    10,
                    0,
                ),
                Input::Stop,
                0,
                Status::Stopping,
                Wanted::Down,
                vec![
                    Ask {
                        pid: 10,
                        shutdown: true,
                        disconnect: false,
                    },
                    Timer {
                        pid: Some(10),
                        at: 1600,
                    },
                ],
            ),
            (
                "exec failure is errored",
                with(Machine::new(policy()), |m| {
                    m.step(Input::Start, 0);
                    m.step(main(10), 0);
                }),
                proc_(10, Event::ExecFailed),
                1,
                Status::Errored,
                Wanted::Down,
                vec![Emit("restart overlimit")],
            ),
            (
                "kill SIGKILLs the main process at once",
                online(10, 0),
                Input::Kill,
                100,
                Status::Stopping,
                Wanted::Down,
                vec![Kill {
                    pid: 10,
                    group: true,
                    leader: true,
                }],
            ),
            (
                "a fork failure is errored",
                with(Machine::new(policy()), |m| {
                    m.step(Input::Start, 0);
                }),
                Input::SpawnFailed { role: Role::Main },
                1,
                Status::Errored,
                Wanted::Down,
                vec![Emit("restart overlimit")],
            ),
        ];
        for (name, mut m, input, now, status, wanted, effects) in cases {
            let fx = m.step(input, now);
            assert_eq!(fx, effects, "{name}: effects");
            assert_eq!(m.status(), status, "{name}: status");
            assert_eq!(m.wanted, wanted, "{name}: wanted");
        }
    }

    #[test]
    fn a_failed_exec_is_released_when_reaped() {
        let mut m = Machine::new(policy());
        m.step(Input::Start, 0);
        m.step(
            Input::Spawned {
                role: Role::Main,
                pid: 10,
            },
            0,
        );
        m.step(proc_(10, Event::ExecFailed), 1);
        assert_eq!(m.role_of(10), Some(Role::Drain));
        assert_eq!(m.pid(), None);
        assert_eq!(m.step(exited(10, 127), 2), vec![Released(10)]);
        assert!(m.is_quiet());
    }

    #[test]
    fn a_crash_loop_is_errored_after_exactly_max_restarts() {
        let mut m = Machine::new(policy());
        let mut spawns = 0;
        let mut now = 0;
        m.step(Input::Start, now);
        let mut pid = 10;
        loop {
            m.step(
                Input::Spawned {
                    role: Role::Main,
                    pid,
                },
                now,
            );
            m.step(proc_(pid, Event::Execd), now);
            now += 10;
            m.step(exited(pid, 1), now);
            let Some(at) = m.deadline() else {
                break;
            };
            let fx = m.step(Input::Deadline { pid: None, at }, at);
            assert_eq!(fx, vec![Spawn(Role::Main)]);
            spawns += 1;
            pid += 1;
        }
        assert_eq!(m.status(), Status::Errored);
        assert_eq!(spawns, 2);
        assert_eq!(m.restart_time, 2);
    }

    #[test]
    fn backoff_grows_by_half_and_starts_over_after_a_long_run() {
        let backoff = |first, delay| Policy {
            exp_backoff: Some(first),
            restart_delay: delay,
            max_restarts: 100,
            ..policy()
        };
        let mut m = Machine::new(backoff(100, 0));
        // (uptime before the exit, expected delay)
        let steps: &[(u64, u64)] = &[
            (10, 100),
            (10, 150),
            (10, 225),
            (5_000, 337),
            (10, 505),
            (BACKOFF_RESET, 100),
            (10, 150),
        ];
        let mut now = 0;
        m.step(Input::Start, now);
        for (i, &(uptime, want)) in steps.iter().enumerate() {
            let pid = 10 + i as i32;
            m.step(
                Input::Spawned {
                    role: Role::Main,
                    pid,
                },
                now,
            );
            m.step(proc_(pid, Event::Execd), now);
            now += uptime;
            let fx = m.step(exited(pid, 1), now);
            assert_eq!(m.deadline(), Some(now + want), "step {i}");
            assert_eq!(m.prev_restart_delay, want, "step {i}");
            assert!(
                fx.contains(&Timer {
                    pid: None,
                    at: now + want
                }),
                "step {i}"
            );
        }
        let mut capped = online_with(backoff(14_000, 0), 10, 0);
        capped.prev_restart_delay = 14_000;
        capped.step(exited(10, 1), 10);
        assert_eq!(capped.prev_restart_delay, BACKOFF_MAX);
        // restart_delay is a floor under the backoff.
        let mut floor = online_with(backoff(100, 400), 10, 0);
        floor.step(exited(10, 1), 10);
        assert_eq!(floor.deadline(), Some(410));
        // A manual restart starts the backoff over.
        floor.step(Input::Restart, 20);
        assert_eq!(floor.prev_restart_delay, 0);
    }

    #[test]
    fn min_restart_interval_spaces_the_starts_of_a_crash_loop() {
        // (interval, restart_delay, backoff, uptime) → the delay before the
        // restart (0: at once).
        let cases: &[(u64, u64, Option<u64>, u64, u64)] = &[
            (100, 0, None, 0, 100),
            (100, 0, None, 30, 70),
            (100, 0, None, 100, 0),
            (100, 0, None, 5_000, 0),
            (0, 0, None, 0, 0),
            // restart_delay and the backoff over the floor win.
            (100, 500, None, 10, 500),
            (100, 40, None, 10, 90),
            (100, 0, Some(300), 10, 300),
            (1_000, 0, Some(300), 10, 990),
        ];
        for (i, &(interval, restart_delay, exp_backoff, uptime, want)) in cases.iter().enumerate() {
            let p = Policy {
                min_restart_interval: interval,
                restart_delay,
                exp_backoff,
                max_restarts: 100,
                ..policy()
            };
            let mut m = online_with(p, 10, 1_000);
            let now = 1_000 + uptime;
            let fx = m.step(exited(10, 1), now);
            // Even "at once" is a deadline, so the loop can spread a storm.
            assert_eq!(m.status(), Status::WaitingRestart, "case {i}");
            assert_eq!(m.deadline(), Some(now + want), "case {i}");
            let at = now + want;
            assert!(fx.contains(&Timer { pid: None, at }), "case {i}: {fx:?}");
            assert!(!fx.contains(&Spawn(Role::Main)), "case {i}: {fx:?}");
            assert_eq!(m.crashes(), 1, "case {i}");
        }
        // A process asked to stop did not crash.
        let mut m = online(10, 0);
        m.step(Input::Stop, 5);
        m.step(exited(10, 0), 6);
        assert_eq!((m.crashes(), m.status()), (0, Status::Stopped));
    }

    #[test]
    fn counters_move_with_restarts() {
        let mut m = online(10, 0);
        m.step(exited(10, 1), 10);
        assert_eq!((m.restart_time, m.unstable_restarts), (0, 1));
        m.step(Input::Deadline { pid: None, at: 10 }, 10);
        assert_eq!((m.restart_time, m.unstable_restarts), (1, 1));
        m.step(
            Input::Spawned {
                role: Role::Main,
                pid: 11,
            },
            10,
        );
        m.step(proc_(11, Event::Execd), 10);
        m.step(
            proc_(
                11,
                Event::Exited {
                    exit: Exit::Signal(9),
                    group_alive: false,
                },
            ),
            5000,
        );
        m.step(
            Input::Deadline {
                pid: None,
                at: 5000,
            },
            5000,
        );
        assert_eq!((m.restart_time, m.unstable_restarts), (2, 0));
        assert_eq!(m.last_exit, Some(Exit::Signal(9)));
        m.step(Input::Reset, 5001);
        assert_eq!((m.restart_time, m.unstable_restarts), (0, 0));
    }

    // ---- rolling reload, driven without forking ----------------------------

    fn reload(must_signal: bool, graceful: bool) -> Input {
        Input::Reload {
            graceful,
            rolls: true,
            must_signal,
        }
    }

    fn candidate(pid: i32) -> Input {
        Input::Spawned {
            role: Role::Candidate,
            pid,
        }
    }

    /// One reload scenario: steps fed in order, each with the effects it
    /// must give; then the status and the roles of pids 10 and 20.
    struct Scenario {
        name: &'static str,
        policy: Policy,
        steps: Vec<(Input, u64, Vec<Effect>)>,
        status: Status,
        roles: [Option<Role>; 2],
        main_pid: Option<i32>,
    }

    #[test]
    fn rolling_reloads_from_a_table() {
        let ask = |pid, shutdown| Ask {
            pid,
            shutdown,
            disconnect: true,
        };
        let timer = |pid, at| Timer { pid: Some(pid), at };
        let kill = |pid| Kill {
            pid,
            group: true,
            leader: true,
        };
        let scenarios = vec![
            Scenario {
                name: "the replacement says ready: swapped, the old one asked to go",
                policy: policy(),
                steps: vec![
                    (reload(true, false), 100, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 100, vec![]),
                    (proc_(20, Event::Execd), 101, vec![timer(20, 3101)]),
                    (
                        proc_(20, Event::Ready),
                        150,
                        vec![
                            Swapped { old: 10, new: 20 },
                            ask(10, false),
                            timer(10, 1750),
                            Emit("restart"),
                            Emit("online"),
                            Reloaded(Ok(())),
                        ],
                    ),
                    (exited(10, 0), 200, vec![Released(10)]),
                ],
                status: Status::Online,
                roles: [None, Some(Role::Main)],
                main_pid: Some(20),
            },
            Scenario {
                name: "graceful: shutdown first; an app that cannot say is ready after min_uptime",
                policy: policy(),
                steps: vec![
                    (reload(false, true), 100, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 100, vec![]),
                    (proc_(20, Event::Execd), 100, vec![timer(20, 1100)]),
                    (
                        Input::Deadline {
                            pid: Some(20),
                            at: 1100,
                        },
                        1100,
                        vec![
                            Swapped { old: 10, new: 20 },
                            ask(10, true),
                            timer(10, 2700),
                            Emit("restart"),
                            Emit("online"),
                            Reloaded(Ok(())),
                        ],
                    ),
                ],
                status: Status::Online,
                roles: [Some(Role::Drain), Some(Role::Main)],
                main_pid: Some(20),
            },
            Scenario {
                name: "the old one ignores everything: kill signal at its timeout, SIGKILL after the grace",
                policy: policy(),
                steps: vec![
                    (reload(true, false), 100, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 100, vec![]),
                    (proc_(20, Event::Execd), 100, vec![timer(20, 3100)]),
                    (
                        proc_(20, Event::Ready),
                        200,
                        vec![
                            Swapped { old: 10, new: 20 },
                            ask(10, false),
                            timer(10, 1800),
                            Emit("restart"),
                            Emit("online"),
                            Reloaded(Ok(())),
                        ],
                    ),
                    (
                        Input::Deadline {
                            pid: Some(10),
                            at: 1800,
                        },
                        1800,
                        vec![
                            Signal {
                                pid: 10,
                                sig: INT,
                                group: true,
                            },
                            timer(10, 2800),
                        ],
                    ),
                    (
                        Input::Deadline {
                            pid: Some(10),
                            at: 2800,
                        },
                        2800,
                        vec![kill(10)],
                    ),
                    (
                        proc_(
                            10,
                            Event::Exited {
                                exit: Exit::Signal(9),
                                group_alive: false,
                            },
                        ),
                        2801,
                        vec![Released(10)],
                    ),
                ],
                status: Status::Online,
                roles: [None, Some(Role::Main)],
                main_pid: Some(20),
            },
            Scenario {
                name: "no channel to ask through: the kill signal at once",
                policy: policy(),
                steps: vec![
                    (reload(false, false), 0, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 0, vec![]),
                    (proc_(20, Event::Ready), 0, vec![]),
                    (proc_(20, Event::Execd), 0, vec![timer(20, 1000)]),
                    (
                        Input::Deadline {
                            pid: Some(20),
                            at: 1000,
                        },
                        1000,
                        vec![
                            Swapped { old: 10, new: 20 },
                            ask(10, false),
                            timer(10, 2600),
                            Emit("restart"),
                            Emit("online"),
                            Reloaded(Ok(())),
                        ],
                    ),
                    (
                        proc_(10, Event::AskFailed),
                        1000,
                        vec![Signal {
                            pid: 10,
                            sig: INT,
                            group: true,
                        }],
                    ),
                    (
                        Input::Deadline {
                            pid: Some(10),
                            at: 2600,
                        },
                        2600,
                        vec![kill(10)],
                    ),
                ],
                status: Status::Online,
                roles: [Some(Role::Drain), Some(Role::Main)],
                main_pid: Some(20),
            },
            Scenario {
                name: "the replacement is not ready in time: killed, the old one keeps serving",
                policy: policy(),
                steps: vec![
                    (reload(true, false), 100, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 100, vec![]),
                    (proc_(20, Event::Execd), 100, vec![timer(20, 3100)]),
                    (
                        Input::Deadline {
                            pid: Some(20),
                            at: 3100,
                        },
                        3100,
                        vec![kill(20), Reloaded(Err(Failure::NotReady(3000)))],
                    ),
                    (exited(20, 0), 3101, vec![Released(20)]),
                ],
                status: Status::Online,
                roles: [Some(Role::Main), None],
                main_pid: Some(10),
            },
            Scenario {
                name: "the replacement crashes before ready; its group is killed",
                policy: policy(),
                steps: vec![
                    (reload(true, false), 100, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 100, vec![]),
                    (proc_(20, Event::Execd), 100, vec![timer(20, 3100)]),
                    (
                        proc_(
                            20,
                            Event::Exited {
                                exit: Exit::Code(1),
                                group_alive: true,
                            },
                        ),
                        200,
                        vec![
                            Kill {
                                pid: 20,
                                group: true,
                                leader: false,
                            },
                            Released(20),
                            Reloaded(Err(Failure::Exited(Exit::Code(1)))),
                        ],
                    ),
                ],
                status: Status::Online,
                roles: [Some(Role::Main), None],
                main_pid: Some(10),
            },
            Scenario {
                name: "the replacement cannot be executed",
                policy: policy(),
                steps: vec![
                    (reload(true, false), 100, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 100, vec![]),
                    (
                        proc_(20, Event::ExecFailed),
                        101,
                        vec![Reloaded(Err(Failure::SpawnFailed))],
                    ),
                    (exited(20, 127), 102, vec![Released(20)]),
                ],
                status: Status::Online,
                roles: [Some(Role::Main), None],
                main_pid: Some(10),
            },
            Scenario {
                name: "a stop while the replacement starts cancels it",
                policy: policy(),
                steps: vec![
                    (reload(true, false), 100, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 100, vec![]),
                    (
                        Input::Stop,
                        200,
                        vec![
                            kill(20),
                            Reloaded(Err(Failure::Cancelled)),
                            Signal {
                                pid: 10,
                                sig: INT,
                                group: true,
                            },
                            timer(10, 1800),
                        ],
                    ),
                ],
                status: Status::Stopping,
                roles: [Some(Role::Main), Some(Role::Drain)],
                main_pid: Some(10),
            },
            Scenario {
                name: "the old one crashes while its replacement starts",
                policy: policy(),
                steps: vec![
                    (reload(true, false), 100, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 100, vec![]),
                    (
                        exited(10, 1),
                        5000,
                        vec![
                            ClearPid,
                            Emit("exit"),
                            Released(10),
                            kill(20),
                            Reloaded(Err(Failure::LostPredecessor)),
                            Timer {
                                pid: None,
                                at: 5000,
                            },
                        ],
                    ),
                ],
                status: Status::WaitingRestart,
                roles: [None, Some(Role::Drain)],
                main_pid: None,
            },
            Scenario {
                name: "a stop during a drain stops the new process; the drain goes on",
                policy: policy(),
                steps: vec![
                    (reload(false, false), 0, vec![Spawn(Role::Candidate)]),
                    (candidate(20), 0, vec![]),
                    (proc_(20, Event::Execd), 0, vec![timer(20, 1000)]),
                    (
                        Input::Deadline {
                            pid: Some(20),
                            at: 1000,
                        },
                        1000,
                        vec![
                            Swapped { old: 10, new: 20 },
                            ask(10, false),
                            timer(10, 2600),
                            Emit("restart"),
                            Emit("online"),
                            Reloaded(Ok(())),
                        ],
                    ),
                    (
                        Input::Stop,
                        1100,
                        vec![
                            Signal {
                                pid: 20,
                                sig: INT,
                                group: true,
                            },
                            timer(20, 2700),
                        ],
                    ),
                    (
                        exited(20, 0),
                        1200,
                        vec![ClearPid, Emit("exit"), Released(20), Emit("stop")],
                    ),
                ],
                status: Status::Stopped,
                roles: [Some(Role::Drain), None],
                main_pid: None,
            },
            Scenario {
                name: "an app that does not roll restarts instead",
                policy: policy(),
                steps: vec![(
                    Input::Reload {
                        graceful: false,
                        rolls: false,
                        must_signal: false,
                    },
                    100,
                    vec![
                        Signal {
                            pid: 10,
                            sig: INT,
                            group: true,
                        },
                        timer(10, 1700),
                        Reloaded(Ok(())),
                    ],
                )],
                status: Status::Stopping,
                roles: [Some(Role::Main), None],
                main_pid: Some(10),
            },
        ];
        for s in scenarios {
            let mut m = online_with(s.policy, 10, 0);
            for (i, (input, now, want)) in s.steps.into_iter().enumerate() {
                assert_eq!(m.step(input, now), want, "{}: step {i}", s.name);
            }
            assert_eq!(m.status(), s.status, "{}: status", s.name);
            assert_eq!([m.role_of(10), m.role_of(20)], s.roles, "{}: roles", s.name);
            assert_eq!(m.pid(), s.main_pid, "{}: main pid", s.name);
        }
    }

    #[test]
    fn a_delete_during_a_drain_forgets_once_the_drain_is_gone() {
        let mut m = online(10, 0);
        m.step(reload(false, false), 0);
        m.step(candidate(20), 0);
        m.step(proc_(20, Event::Execd), 0);
        m.step(
            Input::Deadline {
                pid: Some(20),
                at: 1000,
            },
            1000,
        );
        m.step(Input::Delete, 1100);
        let fx = m.step(exited(20, 0), 1200);
        assert!(!fx.contains(&Forget), "forgotten with a drain alive");
        assert!(!m.is_settled());
        let fx = m.step(exited(10, 0), 1300);
        assert_eq!(fx, vec![Released(10), Forget]);
    }
}
