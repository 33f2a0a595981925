//! One state machine per managed process (STYLE 4): the actual state, the
//! wanted state kept apart from it, the restart counters, and `step`, the one
//! transition function. `step` is pure: it returns the actions the daemon's
//! loop performs (spawn, signal, arm a timer, emit an event, forget the app),
//! so it is tested from a table without forking.
//!
//! Times are milliseconds on the daemon's monotonic clock.

use crate::protocol::Status;

/// After SIGKILL, how long leftovers of a process group (not the main
/// process) are waited for before the stop is reported done (ms). SIGKILLed
/// processes end at once unless stuck in the kernel.
pub const KILL_GRACE: u64 = 1000;

/// The backoff delay grows ×1.5 per restart up to this (ms).
pub const BACKOFF_MAX: u64 = 15_000;
/// An app that ran this long (ms) before it exited starts its backoff over.
pub const BACKOFF_RESET: u64 = 30_000;

/// What the process is doing now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Spawned with `wait_ready`: not online until it says it is ready, or
    /// until `deadline` (`listen_timeout`).
    Launching {
        pid: i32,
        since: u64,
        deadline: u64,
    },
    /// Running since `since`.
    Online {
        pid: i32,
        since: u64,
    },
    /// Sent the stop signal; SIGKILL at `deadline` unless `killed` already.
    /// `pid` is `None` once the main process is gone but members of its
    /// group still run.
    Stopping {
        pid: Option<i32>,
        pgid: i32,
        deadline: u64,
        killed: bool,
    },
    /// Exited; starts again at `until`.
    WaitingRestart {
        until: u64,
    },
    Stopped,
    /// Gave up: too many unstable restarts, or the program cannot be run.
    Errored,
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    Up,
    Down,
    Gone,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// The restart and stop rules of one app (its options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub min_uptime: u64,
    pub max_restarts: u32,
    pub restart_delay: u64,
    pub autorestart: bool,
    pub stop_exit_codes: Vec<i32>,
    pub kill_timeout: u64,
    pub kill_signal: i32,
    pub treekill: bool,
    /// `listen_timeout` when the app must say it is ready; `None` = online
    /// at once.
    pub wait_ready: Option<u64>,
    /// Stop with the `shutdown` message instead of the kill signal.
    pub shutdown_with_message: bool,
    /// First delay of the exponential backoff; `None` = off.
    pub exp_backoff: Option<u64>,
}

/// What happened to the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Start,
    Stop,
    Restart,
    Delete,
    /// The main process was spawned (exec succeeded).
    Spawned {
        pid: i32,
    },
    /// The app said it is ready (`"ready"` on its channel, `READY=1`).
    Ready,
    /// It could not be spawned (exec failed).
    SpawnFailed,
    /// The main process was reaped; `group_alive` tells whether other
    /// members of its process group still run.
    Exited {
        pid: i32,
        exit: Exit,
        group_alive: bool,
    },
    /// The last member of a stopping process group was reaped.
    GroupEmpty,
    /// The deadline of the current state is due.
    Deadline,
}

/// What the loop must do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Spawn,
    /// Send this signal (then SIGCONT) to the group, or to the main pid
    /// without treekill.
    Signal {
        pid: i32,
        sig: i32,
        group: bool,
    },
    /// Ask the app to stop with the `shutdown` message on its channel (the
    /// loop falls back to `Signal` when it has no channel).
    SendShutdown {
        pid: i32,
        sig: i32,
        group: bool,
    },
    /// SIGKILL the group (or the main pid without treekill).
    Kill {
        pid: i32,
        group: bool,
    },
    /// Call `step(Deadline)` at this time.
    Timer(u64),
    /// Remove the pid file.
    ClearPid,
    Emit(&'static str),
    /// Online because `listen_timeout` passed without a ready message.
    ReadyTimeout,
    /// Drop the app from the table.
    Forget,
}

/// The state of one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub state: State,
    pub wanted: Wanted,
    pub policy: Policy,
    pub restart_time: u32,
    pub unstable_restarts: u32,
    pub last_exit: Option<Exit>,
    /// The last backoff delay (0 before the first), PM2's
    /// `prev_restart_delay`.
    pub prev_restart_delay: u64,
}

impl Machine {
    pub fn new(policy: Policy) -> Machine {
        Machine {
            state: State::Stopped,
            wanted: Wanted::Down,
            policy,
            restart_time: 0,
            unstable_restarts: 0,
            last_exit: None,
            prev_restart_delay: 0,
        }
    }

    pub fn status(&self) -> Status {
        match self.state {
            State::Launching { .. } => Status::Launching,
            State::Online { .. } => Status::Online,
            State::Stopping { .. } => Status::Stopping,
            State::WaitingRestart { .. } => Status::WaitingRestart,
            State::Stopped => Status::Stopped,
            State::Errored => Status::Errored,
        }
    }

    /// The pid of the main process, if it runs.
    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Launching { pid, .. } | State::Online { pid, .. } => Some(pid),
            State::Stopping { pid, .. } => pid,
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// When the current state wants `Deadline`.
    pub fn deadline(&self) -> Option<u64> {
        match self.state {
            State::Stopping { deadline, .. } | State::Launching { deadline, .. } => Some(deadline),
            State::WaitingRestart { until } => Some(until),
            _ => None,
        }
    }

    /// Whether a request waiting on this app can be answered: it is not in
    /// the middle of stopping or restarting.
    pub fn is_settled(&self) -> bool {
        !matches!(self.state, State::Stopping { .. } | State::Launching { .. })
    }

    /// The one transition function.
    pub fn step(&mut self, input: Input, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        match (self.state, input) {
            (
                State::Launching { .. } | State::Online { .. } | State::Stopping { .. },
                Input::Start,
            ) => {
                self.wanted = Wanted::Up;
            }
            (_, Input::Start) => {
                self.wanted = Wanted::Up;
                self.unstable_restarts = 0;
                fx.push(Effect::Emit("start"));
                fx.push(Effect::Spawn);
            }
            (
                State::Launching { pid, .. } | State::Online { pid, .. },
                Input::Stop | Input::Restart | Input::Delete,
            ) => {
                self.wanted = wanted_by(input);
                self.begin_stop(pid, now, &mut fx);
            }
            (State::Stopping { .. }, Input::Stop | Input::Restart | Input::Delete) => {
                self.wanted = wanted_by(input);
            }
            (_, Input::Stop) => {
                self.wanted = Wanted::Down;
                if self.state != State::Stopped {
                    self.state = State::Stopped;
                    fx.push(Effect::Emit("stop"));
                }
            }
            (_, Input::Restart) => {
                self.wanted = Wanted::Up;
                self.unstable_restarts = 0;
                self.prev_restart_delay = 0;
                self.restart_time += 1;
                fx.push(Effect::Emit("restart"));
                fx.push(Effect::Spawn);
            }
            (_, Input::Delete) => {
                self.wanted = Wanted::Gone;
                fx.push(Effect::Emit("delete"));
                fx.push(Effect::Forget);
            }
            (_, Input::Spawned { pid }) => match self.policy.wait_ready {
                Some(timeout) => {
                    let deadline = now + timeout;
                    self.state = State::Launching {
                        pid,
                        since: now,
                        deadline,
                    };
                    fx.push(Effect::Timer(deadline));
                }
                None => {
                    self.state = State::Online { pid, since: now };
                    fx.push(Effect::Emit("online"));
                }
            },
            (State::Launching { pid, since, .. }, Input::Ready) => {
                self.state = State::Online { pid, since };
                fx.push(Effect::Emit("online"));
            }
            (State::Launching { pid, since, .. }, Input::Deadline) => {
                self.state = State::Online { pid, since };
                fx.push(Effect::ReadyTimeout);
                fx.push(Effect::Emit("online"));
            }
            (_, Input::SpawnFailed) => {
                self.wanted = Wanted::Down;
                self.state = State::Errored;
                fx.push(Effect::Emit("restart overlimit"));
            }
            (
                State::Launching { pid: p, since, .. } | State::Online { pid: p, since },
                Input::Exited { pid, exit, .. },
            ) if p == pid => {
                self.last_exit = Some(exit);
                fx.push(Effect::ClearPid);
                fx.push(Effect::Emit("exit"));
                self.after_crash(exit, now.saturating_sub(since), now, &mut fx);
            }
            (
                State::Stopping {
                    pid: Some(p),
                    pgid,
                    deadline,
                    killed,
                },
                Input::Exited {
                    pid,
                    exit,
                    group_alive,
                },
            ) if p == pid => {
                self.last_exit = Some(exit);
                fx.push(Effect::ClearPid);
                fx.push(Effect::Emit("exit"));
                if group_alive && self.policy.treekill {
                    // Wait for the rest of the group: until the kill timeout,
                    // or, once SIGKILLed, for them to be reaped.
                    let deadline = if killed {
                        let d = now + KILL_GRACE;
                        fx.push(Effect::Timer(d));
                        d
                    } else {
                        deadline
                    };
                    self.state = State::Stopping {
                        pid: None,
                        pgid,
                        deadline,
                        killed,
                    };
                } else {
                    self.finish_stop(&mut fx);
                }
            }
            (State::Stopping { pid: None, .. }, Input::GroupEmpty) => self.finish_stop(&mut fx),
            (
                State::Stopping {
                    pid,
                    pgid,
                    killed: false,
                    ..
                },
                Input::Deadline,
            ) => {
                fx.push(Effect::Kill {
                    pid: pgid,
                    group: self.policy.treekill,
                });
                // SIGKILL cannot be caught: the exits will be reaped. Only
                // leftovers of the group are waited for no longer than
                // KILL_GRACE; the main process is always waited for.
                let deadline = now + KILL_GRACE;
                self.state = State::Stopping {
                    pid,
                    pgid,
                    deadline,
                    killed: true,
                };
                if pid.is_none() {
                    fx.push(Effect::Timer(deadline));
                }
            }
            (
                State::Stopping {
                    pid: None,
                    killed: true,
                    ..
                },
                Input::Deadline,
            ) => self.finish_stop(&mut fx),
            (State::WaitingRestart { .. }, Input::Deadline) => {
                self.restart_time += 1;
                fx.push(Effect::Spawn);
            }
            // A stale timer, the exit of an older process, an empty group
            // that nobody waits for, a ready message when not launching.
            (_, Input::Exited { .. } | Input::GroupEmpty | Input::Deadline | Input::Ready) => {}
        }
        fx
    }

    fn begin_stop(&mut self, pid: i32, now: u64, fx: &mut Vec<Effect>) {
        let deadline = now + self.policy.kill_timeout;
        self.state = State::Stopping {
            pid: Some(pid),
            pgid: pid,
            deadline,
            killed: false,
        };
        let (sig, group) = (self.policy.kill_signal, self.policy.treekill);
        fx.push(if self.policy.shutdown_with_message {
            Effect::SendShutdown { pid, sig, group }
        } else {
            Effect::Signal { pid, sig, group }
        });
        fx.push(Effect::Timer(deadline));
    }

    /// The process (and its group) is gone after a stop, restart or delete.
    fn finish_stop(&mut self, fx: &mut Vec<Effect>) {
        match self.wanted {
            Wanted::Up => {
                self.unstable_restarts = 0;
                self.prev_restart_delay = 0;
                self.restart_time += 1;
                self.state = State::Stopped;
                fx.push(Effect::Emit("restart"));
                fx.push(Effect::Spawn);
            }
            Wanted::Down => {
                self.state = State::Stopped;
                fx.push(Effect::Emit("stop"));
            }
            Wanted::Gone => {
                self.state = State::Stopped;
                fx.push(Effect::Emit("delete"));
                fx.push(Effect::Forget);
            }
        }
    }

    /// The process exited on its own while online.
    fn after_crash(&mut self, exit: Exit, uptime: u64, now: u64, fx: &mut Vec<Effect>) {
        let p = &self.policy;
        let wanted_stop = match exit {
            Exit::Code(c) => p.stop_exit_codes.contains(&c),
            Exit::Signal(_) => false,
        };
        if self.wanted != Wanted::Up || !p.autorestart || wanted_stop {
            self.wanted = Wanted::Down;
            self.state = State::Stopped;
            return;
        }
        if uptime < p.min_uptime {
            if self.unstable_restarts >= p.max_restarts {
                self.wanted = Wanted::Down;
                self.state = State::Errored;
                fx.push(Effect::Emit("restart overlimit"));
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
        if delay > 0 {
            let until = now + delay;
            self.state = State::WaitingRestart { until };
            fx.push(Effect::Timer(until));
        } else {
            self.state = State::Stopped;
            self.restart_time += 1;
            fx.push(Effect::Spawn);
        }
    }
}

fn wanted_by(input: Input) -> Wanted {
    match input {
        Input::Restart | Input::Start => Wanted::Up,
        Input::Delete => Wanted::Gone,
        _ => Wanted::Down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INT: i32 = 2;

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
            wait_ready: None,
            shutdown_with_message: false,
            exp_backoff: None,
        }
    }

    fn online(pid: i32, since: u64) -> Machine {
        let mut m = Machine::new(policy());
        m.wanted = Wanted::Up;
        m.state = State::Online { pid, since };
        m
    }

    fn stopping(pid: Option<i32>, wanted: Wanted) -> Machine {
        let mut m = online(10, 0);
        m.wanted = wanted;
        m.state = State::Stopping {
            pid,
            pgid: 10,
            deadline: 2600,
            killed: false,
        };
        m
    }

    fn exited(code: i32) -> Input {
        Input::Exited {
            pid: 10,
            exit: Exit::Code(code),
            group_alive: false,
        }
    }

    fn with<F: FnOnce(&mut Machine)>(mut m: Machine, f: F) -> Machine {
        f(&mut m);
        m
    }

    /// (name, machine before, input, now, state after, wanted after, effects)
    type Case = (
        &'static str,
        Machine,
        Input,
        u64,
        State,
        Wanted,
        Vec<Effect>,
    );

    #[test]
    fn transitions_from_a_table() {
        use Effect::*;
        let sig = |pid| Signal {
            pid,
            sig: INT,
            group: true,
        };
        let cases: Vec<Case> = vec![
            (
                "start a stopped app",
                Machine::new(policy()),
                Input::Start,
                0,
                State::Stopped,
                Wanted::Up,
                vec![Emit("start"), Spawn],
            ),
            (
                "spawned is online",
                Machine::new(policy()),
                Input::Spawned { pid: 10 },
                5,
                State::Online { pid: 10, since: 5 },
                Wanted::Down,
                vec![Emit("online")],
            ),
            (
                "start while online does nothing",
                online(10, 0),
                Input::Start,
                9,
                State::Online { pid: 10, since: 0 },
                Wanted::Up,
                vec![],
            ),
            (
                "stop signals the group and arms the kill timer",
                online(10, 0),
                Input::Stop,
                1000,
                State::Stopping {
                    pid: Some(10),
                    pgid: 10,
                    deadline: 2600,
                    killed: false,
                },
                Wanted::Down,
                vec![sig(10), Timer(2600)],
            ),
            (
                "stop without treekill signals the pid",
                with(online(10, 0), |m| m.policy.treekill = false),
                Input::Stop,
                0,
                State::Stopping {
                    pid: Some(10),
                    pgid: 10,
                    deadline: 1600,
                    killed: false,
                },
                Wanted::Down,
                vec![
                    Signal {
                        pid: 10,
                        sig: INT,
                        group: false,
                    },
                    Timer(1600),
                ],
            ),
            (
                "exit while stopping is stopped",
                stopping(Some(10), Wanted::Down),
                exited(0),
                100,
                State::Stopped,
                Wanted::Down,
                vec![ClearPid, Emit("exit"), Emit("stop")],
            ),
            (
                "exit while stopping with the group alive waits for it",
                stopping(Some(10), Wanted::Down),
                Input::Exited {
                    pid: 10,
                    exit: Exit::Code(0),
                    group_alive: true,
                },
                100,
                State::Stopping {
                    pid: None,
                    pgid: 10,
                    deadline: 2600,
                    killed: false,
                },
                Wanted::Down,
                vec![ClearPid, Emit("exit")],
            ),
            (
                "the group empties: stopped",
                stopping(None, Wanted::Down),
                Input::GroupEmpty,
                200,
                State::Stopped,
                Wanted::Down,
                vec![Emit("stop")],
            ),
            (
                "kill timeout sends SIGKILL and waits for the exit",
                stopping(Some(10), Wanted::Down),
                Input::Deadline,
                2600,
                State::Stopping {
                    pid: Some(10),
                    pgid: 10,
                    deadline: 3600,
                    killed: true,
                },
                Wanted::Down,
                vec![Kill {
                    pid: 10,
                    group: true,
                }],
            ),
            (
                "kill timeout with only the group left waits for it to be reaped",
                stopping(None, Wanted::Down),
                Input::Deadline,
                2600,
                State::Stopping {
                    pid: None,
                    pgid: 10,
                    deadline: 3600,
                    killed: true,
                },
                Wanted::Down,
                vec![
                    Kill {
                        pid: 10,
                        group: true,
                    },
                    Timer(3600),
                ],
            ),
            (
                "leftovers that outlive KILL_GRACE are given up on",
                with(stopping(None, Wanted::Down), |m| {
                    m.state = State::Stopping {
                        pid: None,
                        pgid: 10,
                        deadline: 3600,
                        killed: true,
                    }
                }),
                Input::Deadline,
                3600,
                State::Stopped,
                Wanted::Down,
                vec![Emit("stop")],
            ),
            (
                "the main process exits after SIGKILL, its group not yet reaped",
                with(stopping(Some(10), Wanted::Down), |m| {
                    m.state = State::Stopping {
                        pid: Some(10),
                        pgid: 10,
                        deadline: 3600,
                        killed: true,
                    }
                }),
                Input::Exited {
                    pid: 10,
                    exit: Exit::Signal(9),
                    group_alive: true,
                },
                2700,
                State::Stopping {
                    pid: None,
                    pgid: 10,
                    deadline: 3700,
                    killed: true,
                },
                Wanted::Down,
                vec![ClearPid, Emit("exit"), Timer(3700)],
            ),
            (
                "exit while stopping for a restart spawns again",
                stopping(Some(10), Wanted::Up),
                exited(0),
                100,
                State::Stopped,
                Wanted::Up,
                vec![ClearPid, Emit("exit"), Emit("restart"), Spawn],
            ),
            (
                "exit while deleting forgets",
                stopping(Some(10), Wanted::Gone),
                exited(0),
                100,
                State::Stopped,
                Wanted::Gone,
                vec![ClearPid, Emit("exit"), Emit("delete"), Forget],
            ),
            (
                "stable crash restarts at once",
                online(10, 0),
                exited(1),
                5000,
                State::Stopped,
                Wanted::Up,
                vec![ClearPid, Emit("exit"), Spawn],
            ),
            (
                "crash with restart_delay waits",
                with(online(10, 0), |m| m.policy.restart_delay = 500),
                exited(1),
                5000,
                State::WaitingRestart { until: 5500 },
                Wanted::Up,
                vec![ClearPid, Emit("exit"), Timer(5500)],
            ),
            (
                "waiting restart is due",
                with(online(10, 0), |m| {
                    m.state = State::WaitingRestart { until: 9 }
                }),
                Input::Deadline,
                9,
                State::WaitingRestart { until: 9 },
                Wanted::Up,
                vec![Spawn],
            ),
            (
                "stop while waiting restart",
                with(online(10, 0), |m| {
                    m.state = State::WaitingRestart { until: 9 }
                }),
                Input::Stop,
                5,
                State::Stopped,
                Wanted::Down,
                vec![Emit("stop")],
            ),
            (
                "an exit code in stop_exit_codes stays stopped",
                online(10, 0),
                exited(3),
                5000,
                State::Stopped,
                Wanted::Down,
                vec![ClearPid, Emit("exit")],
            ),
            (
                "autorestart false stays stopped",
                with(online(10, 0), |m| m.policy.autorestart = false),
                exited(1),
                5000,
                State::Stopped,
                Wanted::Down,
                vec![ClearPid, Emit("exit")],
            ),
            (
                "unstable crash under the limit restarts",
                with(online(10, 0), |m| m.unstable_restarts = 1),
                exited(1),
                10,
                State::Stopped,
                Wanted::Up,
                vec![ClearPid, Emit("exit"), Spawn],
            ),
            (
                "unstable crash at the limit is errored",
                with(online(10, 0), |m| m.unstable_restarts = 2),
                exited(1),
                10,
                State::Errored,
                Wanted::Down,
                vec![ClearPid, Emit("exit"), Emit("restart overlimit")],
            ),
            (
                "the exit of an older pid is ignored",
                online(11, 0),
                exited(1),
                10,
                State::Online { pid: 11, since: 0 },
                Wanted::Up,
                vec![],
            ),
            (
                "a stale deadline is ignored",
                online(10, 0),
                Input::Deadline,
                10,
                State::Online { pid: 10, since: 0 },
                Wanted::Up,
                vec![],
            ),
            (
                "restart a stopped app spawns",
                Machine::new(policy()),
                Input::Restart,
                0,
                State::Stopped,
                Wanted::Up,
                vec![Emit("restart"), Spawn],
            ),
            (
                "delete a stopped app forgets it",
                Machine::new(policy()),
                Input::Delete,
                0,
                State::Stopped,
                Wanted::Gone,
                vec![Emit("delete"), Forget],
            ),
            (
                "with wait_ready a spawned app is launching until ready",
                with(Machine::new(policy()), |m| m.policy.wait_ready = Some(3000)),
                Input::Spawned { pid: 10 },
                5,
                State::Launching {
                    pid: 10,
                    since: 5,
                    deadline: 3005,
                },
                Wanted::Down,
                vec![Timer(3005)],
            ),
            (
                "ready makes it online",
                with(online(10, 5), |m| {
                    m.state = State::Launching {
                        pid: 10,
                        since: 5,
                        deadline: 3005,
                    }
                }),
                Input::Ready,
                50,
                State::Online { pid: 10, since: 5 },
                Wanted::Up,
                vec![Emit("online")],
            ),
            (
                "listen_timeout makes it online with a warning",
                with(online(10, 5), |m| {
                    m.state = State::Launching {
                        pid: 10,
                        since: 5,
                        deadline: 3005,
                    }
                }),
                Input::Deadline,
                3005,
                State::Online { pid: 10, since: 5 },
                Wanted::Up,
                vec![ReadyTimeout, Emit("online")],
            ),
            (
                "ready when online changes nothing",
                online(10, 0),
                Input::Ready,
                50,
                State::Online { pid: 10, since: 0 },
                Wanted::Up,
                vec![],
            ),
            (
                "stop while launching",
                with(online(10, 5), |m| {
                    m.state = State::Launching {
                        pid: 10,
                        since: 5,
                        deadline: 3005,
                    }
                }),
                Input::Stop,
                100,
                State::Stopping {
                    pid: Some(10),
                    pgid: 10,
                    deadline: 1700,
                    killed: false,
                },
                Wanted::Down,
                vec![sig(10), Timer(1700)],
            ),
            (
                "shutdown_with_message stops with the message",
                with(online(10, 0), |m| m.policy.shutdown_with_message = true),
                Input::Stop,
                0,
                State::Stopping {
                    pid: Some(10),
                    pgid: 10,
                    deadline: 1600,
                    killed: false,
                },
                Wanted::Down,
                vec![
                    SendShutdown {
                        pid: 10,
                        sig: INT,
                        group: true,
                    },
                    Timer(1600),
                ],
            ),
            (
                "exec failure is errored",
                Machine::new(policy()),
                Input::SpawnFailed,
                0,
                State::Errored,
                Wanted::Down,
                vec![Emit("restart overlimit")],
            ),
        ];
        for (name, mut m, input, now, state, wanted, effects) in cases {
            let fx = m.step(input, now);
            assert_eq!(fx, effects, "{name}: effects");
            assert_eq!(m.state, state, "{name}: state");
            assert_eq!(m.wanted, wanted, "{name}: wanted");
        }
    }

    #[test]
    fn a_crash_loop_is_errored_after_exactly_max_restarts() {
        let mut m = Machine::new(policy());
        let mut spawns = 0;
        let mut now = 0;
        m.step(Input::Start, now);
        loop {
            m.step(Input::Spawned { pid: 10 }, now);
            now += 10;
            let fx = m.step(exited(1), now);
            if !fx.contains(&Effect::Spawn) {
                break;
            }
            spawns += 1;
        }
        assert_eq!(m.state, State::Errored);
        assert_eq!(spawns, 2);
        assert_eq!(m.restart_time, 2);
    }

    #[test]
    fn backoff_grows_by_half_and_starts_over_after_a_long_run() {
        let mut m = online(10, 0);
        m.policy.exp_backoff = Some(100);
        m.policy.max_restarts = 100;
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
        for (i, &(uptime, want)) in steps.iter().enumerate() {
            let pid = 10 + i as i32;
            m.state = State::Online { pid, since: now };
            now += uptime;
            let fx = m.step(
                Input::Exited {
                    pid,
                    exit: Exit::Code(1),
                    group_alive: false,
                },
                now,
            );
            assert_eq!(
                m.state,
                State::WaitingRestart { until: now + want },
                "step {i}"
            );
            assert_eq!(m.prev_restart_delay, want, "step {i}");
            assert!(fx.contains(&Effect::Timer(now + want)), "step {i}");
        }
        let mut capped = online(10, 0);
        capped.policy.exp_backoff = Some(14_000);
        capped.prev_restart_delay = 14_000;
        capped.step(exited(1), 10);
        assert_eq!(capped.prev_restart_delay, BACKOFF_MAX);
        // restart_delay is a floor under the backoff.
        let mut floor = online(10, 0);
        floor.policy.exp_backoff = Some(100);
        floor.policy.restart_delay = 400;
        floor.step(exited(1), 10);
        assert_eq!(floor.state, State::WaitingRestart { until: 410 });
        // A manual restart starts the backoff over.
        floor.step(Input::Restart, 20);
        assert_eq!(floor.prev_restart_delay, 0);
    }

    #[test]
    fn counters_move_with_restarts() {
        let mut m = online(10, 0);
        m.step(exited(1), 10);
        assert_eq!((m.restart_time, m.unstable_restarts), (1, 1));
        m.step(Input::Spawned { pid: 11 }, 10);
        m.step(
            Input::Exited {
                pid: 11,
                exit: Exit::Signal(9),
                group_alive: false,
            },
            5000,
        );
        assert_eq!((m.restart_time, m.unstable_restarts), (2, 0));
        assert_eq!(m.last_exit, Some(Exit::Signal(9)));
    }
}
