//! One pure machine per OS process (STYLE 4): an app's main process, a
//! reload's replacement and an old process draining after a reload all go
//! through the same phases — spawning, launching, online, stopping with its
//! kill deadline, gone — and the same transition function, `step`, which
//! returns what the loop must do (`Out`). It never forks, signals or reads a
//! clock: the loop feeds it events and the time, so it is tested from a
//! table. What the process means to its app (restart, swap) is `state.rs`'s.
//!
//! Times are milliseconds on the daemon's monotonic clock.

use crate::sys::Signal;

/// After SIGKILL (or the kill signal of a process asked by message), how
/// long leftovers of a process group are waited for (ms). SIGKILLed
/// processes end at once unless stuck in the kernel.
pub const KILL_GRACE: u64 = 1000;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// What counts as ready once the process has exec'd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Launch {
    /// Online as soon as it exec'd.
    Now,
    /// It has `timeout` ms to say it is ready; then `on_timeout`.
    Wait { timeout: u64, on_timeout: OnTimeout },
}

/// What the end of a `Launch::Wait` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OnTimeout {
    /// Online anyway, with a warning (`wait_ready` past `listen_timeout`).
    Warn,
    /// Online: staying up that long was all it had to do (a replacement of
    /// an app that cannot say it is ready, after `min_uptime`).
    Accept,
    /// Not ready: the process failed (a replacement that had to say so).
    Fail,
}

/// How to ask a process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stop {
    /// The kill signal, then SIGKILL at the deadline.
    Signal(Signal),
    /// Messages on its channel (`shutdown`, a Node worker's `disconnect`);
    /// the loop falls back to `signal` when it cannot (`Event::AskFailed`).
    /// With `signal_at_deadline`, the deadline brings `signal` first and
    /// SIGKILL `KILL_GRACE` later; otherwise SIGKILL at once.
    Ask {
        shutdown: bool,
        disconnect: bool,
        signal: Signal,
        signal_at_deadline: bool,
    },
}

/// Where the process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Forked; its exec status is not known yet.
    Spawning,
    /// Exec'd, and must say it is ready by `deadline`.
    Launching {
        deadline: u64,
        on_timeout: OnTimeout,
    },
    /// Running, ready.
    Online,
    /// Asked to stop. `leader` is false once the process itself was reaped
    /// but members of its group remain. `then` is the signal still to send
    /// at `deadline` before SIGKILL (`Stop::Ask`); `fallback` the one to
    /// send if asking fails.
    Stopping {
        deadline: u64,
        killed: bool,
        leader: bool,
        then: Option<Signal>,
        fallback: Signal,
    },
    /// Its exec failed; waiting to reap it.
    Failed,
    /// Reaped, its group empty: nothing more to do.
    Gone,
}

/// What happened to the process, fed by the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The exec status pipe reached end of file: the program runs.
    Execd,
    /// The exec status pipe reported a failure.
    ExecFailed,
    /// It said it is ready (`"ready"`, `READY=1`, a worker's `listening`).
    Ready,
    /// Stop it, SIGKILL after `timeout` ms.
    Stop { how: Stop, timeout: u64 },
    /// SIGKILL now (a replacement given up on).
    Kill,
    /// `Out::Ask` could not be delivered (no open channel).
    AskFailed,
    /// It was reaped; `group_alive` tells whether its group lives on.
    Exited { exit: Exit, group_alive: bool },
    /// The last member of its group was reaped.
    GroupEmpty,
    /// Its deadline is due (the loop only feeds current deadlines).
    Deadline,
}

/// What the loop must do, and what the app must learn, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// Send this signal, then SIGCONT.
    Signal(Signal),
    /// Send these messages on the channel.
    Ask { shutdown: bool, disconnect: bool },
    /// SIGKILL (the group once the leader is gone).
    Kill,
    /// Feed `Deadline` at this time.
    Timer(u64),
    /// It is ready (or accepted as such).
    Online,
    /// Online because its time to say ready ran out (`OnTimeout::Warn`).
    ReadyTimeout,
    /// It was not ready in time (`OnTimeout::Fail`); it still runs.
    NotReady,
    /// Its exec failed.
    ExecFailed,
    /// It was reaped, with this exit.
    Exited(Exit),
    /// Nothing of it is left: forget its pid.
    Gone,
}

/// One OS process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Process {
    pid: i32,
    since: u64,
    /// Signals reach its whole group (`treekill`).
    group: bool,
    launch: Launch,
    phase: Phase,
}

impl Process {
    /// A process just forked at `now`.
    pub fn spawned(pid: i32, now: u64, group: bool, launch: Launch) -> Process {
        Process {
            pid,
            since: now,
            group,
            launch,
            phase: Phase::Spawning,
        }
    }

    /// Its pid (also its process group id: it is a session leader).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// When it was forked.
    pub fn since(&self) -> u64 {
        self.since
    }

    /// Its phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether signals go to its group.
    pub fn group(&self) -> bool {
        self.group
    }

    /// The time its current phase wants `Deadline`.
    pub fn deadline(&self) -> Option<u64> {
        match self.phase {
            Phase::Launching { deadline, .. } | Phase::Stopping { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Whether the process itself has not been reaped yet.
    pub fn leader_alive(&self) -> bool {
        match self.phase {
            Phase::Stopping { leader, .. } => leader,
            Phase::Gone => false,
            _ => true,
        }
    }

    /// Whether it is on its way out (stopping, failed or gone).
    pub fn is_leaving(&self) -> bool {
        matches!(
            self.phase,
            Phase::Stopping { .. } | Phase::Failed | Phase::Gone
        )
    }

    /// The one transition function.
    pub fn step(&mut self, ev: Event, now: u64) -> Vec<Out> {
        let mut out = Vec::new();
        match (self.phase, ev) {
            (Phase::Spawning, Event::Execd) => match self.launch {
                Launch::Now => {
                    self.phase = Phase::Online;
                    out.push(Out::Online);
                }
                Launch::Wait {
                    timeout,
                    on_timeout,
                } => {
                    let deadline = now + timeout;
                    self.phase = Phase::Launching {
                        deadline,
                        on_timeout,
                    };
                    out.push(Out::Timer(deadline));
                }
            },
            (Phase::Spawning, Event::ExecFailed) => {
                self.phase = Phase::Failed;
                out.push(Out::ExecFailed);
            }
            // Reaped before its exec status was read: it never ran.
            (Phase::Spawning, Event::Exited { .. }) => {
                self.phase = Phase::Gone;
                out.push(Out::ExecFailed);
                out.push(Out::Gone);
            }
            (Phase::Failed, Event::Exited { .. }) => {
                self.phase = Phase::Gone;
                out.push(Out::Gone);
            }
            (Phase::Launching { .. }, Event::Ready) => {
                self.phase = Phase::Online;
                out.push(Out::Online);
            }
            (Phase::Launching { on_timeout, .. }, Event::Deadline) => match on_timeout {
                OnTimeout::Warn => {
                    self.phase = Phase::Online;
                    out.push(Out::ReadyTimeout);
                    out.push(Out::Online);
                }
                OnTimeout::Accept => {
                    self.phase = Phase::Online;
                    out.push(Out::Online);
                }
                OnTimeout::Fail => out.push(Out::NotReady),
            },
            // Not exec'd yet: it has run nothing of the app; kill it.
            (Phase::Spawning, Event::Stop { .. } | Event::Kill) => self.kill(now, &mut out),
            (Phase::Launching { .. } | Phase::Online, Event::Stop { how, timeout }) => {
                let deadline = now + timeout;
                let (then, fallback) = match how {
                    Stop::Signal(sig) => {
                        out.push(Out::Signal(sig));
                        (None, sig)
                    }
                    Stop::Ask {
                        shutdown,
                        disconnect,
                        signal,
                        signal_at_deadline,
                    } => {
                        out.push(Out::Ask {
                            shutdown,
                            disconnect,
                        });
                        (signal_at_deadline.then_some(signal), signal)
                    }
                };
                self.phase = Phase::Stopping {
                    deadline,
                    killed: false,
                    leader: true,
                    then,
                    fallback,
                };
                out.push(Out::Timer(deadline));
            }
            (Phase::Launching { .. } | Phase::Online, Event::Kill) => self.kill(now, &mut out),
            (Phase::Stopping { killed: false, .. }, Event::Kill) => self.kill(now, &mut out),
            (
                Phase::Stopping {
                    deadline,
                    killed: false,
                    leader: true,
                    fallback,
                    ..
                },
                Event::AskFailed,
            ) => {
                self.phase = Phase::Stopping {
                    deadline,
                    killed: false,
                    leader: true,
                    then: None,
                    fallback,
                };
                out.push(Out::Signal(fallback));
            }
            (
                Phase::Stopping {
                    killed: false,
                    leader: true,
                    then: Some(sig),
                    fallback,
                    ..
                },
                Event::Deadline,
            ) => {
                let deadline = now + KILL_GRACE;
                self.phase = Phase::Stopping {
                    deadline,
                    killed: false,
                    leader: true,
                    then: None,
                    fallback,
                };
                out.push(Out::Signal(sig));
                out.push(Out::Timer(deadline));
            }
            (Phase::Stopping { killed: false, .. }, Event::Deadline) => self.kill(now, &mut out),
            (
                Phase::Stopping {
                    killed: true,
                    leader: false,
                    ..
                },
                Event::Deadline,
            ) => {
                self.phase = Phase::Gone;
                out.push(Out::Gone);
            }
            (Phase::Launching { .. } | Phase::Online, Event::Exited { exit, .. }) => {
                self.phase = Phase::Gone;
                out.push(Out::Exited(exit));
                out.push(Out::Gone);
            }
            (
                Phase::Stopping {
                    deadline,
                    killed,
                    leader: true,
                    fallback,
                    ..
                },
                Event::Exited { exit, group_alive },
            ) => {
                out.push(Out::Exited(exit));
                if group_alive && self.group {
                    // Wait for the rest of the group: until the kill
                    // timeout, or, once SIGKILLed, KILL_GRACE for it to go.
                    let deadline = match killed {
                        true => {
                            let d = now + KILL_GRACE;
                            out.push(Out::Timer(d));
                            d
                        }
                        false => deadline,
                    };
                    self.phase = Phase::Stopping {
                        deadline,
                        killed,
                        leader: false,
                        then: None,
                        fallback,
                    };
                } else {
                    self.phase = Phase::Gone;
                    out.push(Out::Gone);
                }
            }
            (Phase::Stopping { leader: false, .. }, Event::GroupEmpty) => {
                self.phase = Phase::Gone;
                out.push(Out::Gone);
            }
            // A second stop, a stale deadline, a ready message after the
            // fact, an empty group nobody waits for.
            _ => {}
        }
        out
    }

    /// SIGKILL now. The process itself is always waited for (SIGKILL cannot
    /// be caught, its exit will be reaped); leftovers of a group whose
    /// leader is gone no longer than `KILL_GRACE`.
    fn kill(&mut self, now: u64, out: &mut Vec<Out>) {
        let leader = self.leader_alive();
        let deadline = now + KILL_GRACE;
        let fallback = match self.phase {
            Phase::Stopping { fallback, .. } => fallback,
            _ => Signal::KILL,
        };
        self.phase = Phase::Stopping {
            deadline,
            killed: true,
            leader,
            then: None,
            fallback,
        };
        out.push(Out::Kill);
        if !leader {
            out.push(Out::Timer(deadline));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Out::*;
    use super::{Event, Exit, Launch, OnTimeout, Out, Phase, Process, Stop};
    use crate::sys::Signal as Sig;

    const INT: Sig = Sig::INT;

    fn at(phase: Phase) -> Process {
        Process {
            pid: 10,
            since: 0,
            group: true,
            launch: Launch::Now,
            phase,
        }
    }

    fn stopping(leader: bool, killed: bool, then: Option<Sig>) -> Process {
        at(Phase::Stopping {
            deadline: 2600,
            killed,
            leader,
            then,
            fallback: INT,
        })
    }

    fn exited(group_alive: bool) -> Event {
        Event::Exited {
            exit: Exit::Code(0),
            group_alive,
        }
    }

    fn ask(signal_at_deadline: bool) -> Event {
        Event::Stop {
            how: Stop::Ask {
                shutdown: true,
                disconnect: true,
                signal: INT,
                signal_at_deadline,
            },
            timeout: 1600,
        }
    }

    /// (name, before, event, now, phase after, outs)
    type Case = (&'static str, Process, Event, u64, Phase, Vec<Out>);

    #[test]
    fn transitions_from_a_table() {
        let wait = |on_timeout| Launch::Wait {
            timeout: 3000,
            on_timeout,
        };
        let launching = |on_timeout| {
            let mut p = at(Phase::Launching {
                deadline: 3000,
                on_timeout,
            });
            p.launch = wait(on_timeout);
            p
        };
        let stop = Event::Stop {
            how: Stop::Signal(INT),
            timeout: 1600,
        };
        let cases: Vec<Case> = vec![
            (
                "exec'd is online",
                at(Phase::Spawning),
                Event::Execd,
                5,
                Phase::Online,
                vec![Online],
            ),
            (
                "exec'd with a wait launches",
                Process::spawned(10, 0, true, wait(OnTimeout::Warn)),
                Event::Execd,
                5,
                Phase::Launching {
                    deadline: 3005,
                    on_timeout: OnTimeout::Warn,
                },
                vec![Timer(3005)],
            ),
            (
                "exec failed waits to be reaped",
                at(Phase::Spawning),
                Event::ExecFailed,
                5,
                Phase::Failed,
                vec![ExecFailed],
            ),
            (
                "a failed exec is reaped",
                at(Phase::Failed),
                exited(false),
                6,
                Phase::Gone,
                vec![Gone],
            ),
            (
                "reaped before its status was read never ran",
                at(Phase::Spawning),
                exited(false),
                6,
                Phase::Gone,
                vec![ExecFailed, Gone],
            ),
            (
                "ready while launching is online",
                launching(OnTimeout::Warn),
                Event::Ready,
                50,
                Phase::Online,
                vec![Online],
            ),
            (
                "wait_ready's timeout: online with a warning",
                launching(OnTimeout::Warn),
                Event::Deadline,
                3000,
                Phase::Online,
                vec![ReadyTimeout, Online],
            ),
            (
                "min_uptime up: accepted",
                launching(OnTimeout::Accept),
                Event::Deadline,
                3000,
                Phase::Online,
                vec![Online],
            ),
            (
                "had to say ready and did not",
                launching(OnTimeout::Fail),
                Event::Deadline,
                3000,
                Phase::Launching {
                    deadline: 3000,
                    on_timeout: OnTimeout::Fail,
                },
                vec![NotReady],
            ),
            (
                "stop signals and arms the kill timer",
                at(Phase::Online),
                stop,
                1000,
                Phase::Stopping {
                    deadline: 2600,
                    killed: false,
                    leader: true,
                    then: None,
                    fallback: INT,
                },
                vec![Signal(INT), Timer(2600)],
            ),
            (
                "stop by message asks",
                at(Phase::Online),
                ask(false),
                1000,
                Phase::Stopping {
                    deadline: 2600,
                    killed: false,
                    leader: true,
                    then: None,
                    fallback: INT,
                },
                vec![
                    Ask {
                        shutdown: true,
                        disconnect: true,
                    },
                    Timer(2600),
                ],
            ),
            (
                "asking failed: the signal instead",
                stopping(true, false, Some(INT)),
                Event::AskFailed,
                1001,
                Phase::Stopping {
                    deadline: 2600,
                    killed: false,
                    leader: true,
                    then: None,
                    fallback: INT,
                },
                vec![Signal(INT)],
            ),
            (
                "asked and still there: the signal, then SIGKILL later",
                stopping(true, false, Some(INT)),
                Event::Deadline,
                2600,
                Phase::Stopping {
                    deadline: 3600,
                    killed: false,
                    leader: true,
                    then: None,
                    fallback: INT,
                },
                vec![Signal(INT), Timer(3600)],
            ),
            (
                "stop before exec kills",
                at(Phase::Spawning),
                stop,
                3,
                Phase::Stopping {
                    deadline: 1003,
                    killed: true,
                    leader: true,
                    then: None,
                    fallback: Sig::KILL,
                },
                vec![Kill],
            ),
            (
                "kill timeout: SIGKILL, the exit is waited for",
                stopping(true, false, None),
                Event::Deadline,
                2600,
                Phase::Stopping {
                    deadline: 3600,
                    killed: true,
                    leader: true,
                    then: None,
                    fallback: INT,
                },
                vec![Kill],
            ),
            (
                "kill timeout with only the group left: SIGKILL and a grace",
                stopping(false, false, None),
                Event::Deadline,
                2600,
                Phase::Stopping {
                    deadline: 3600,
                    killed: true,
                    leader: false,
                    then: None,
                    fallback: INT,
                },
                vec![Kill, Timer(3600)],
            ),
            (
                "leftovers past the grace are given up on",
                stopping(false, true, None),
                Event::Deadline,
                3600,
                Phase::Gone,
                vec![Gone],
            ),
            (
                "exit while stopping: gone",
                stopping(true, false, None),
                exited(false),
                100,
                Phase::Gone,
                vec![Exited(Exit::Code(0)), Gone],
            ),
            (
                "exit while stopping, group alive: waited for until the deadline",
                stopping(true, false, None),
                exited(true),
                100,
                Phase::Stopping {
                    deadline: 2600,
                    killed: false,
                    leader: false,
                    then: None,
                    fallback: INT,
                },
                vec![Exited(Exit::Code(0))],
            ),
            (
                "exit after SIGKILL, group alive: a grace",
                stopping(true, true, None),
                exited(true),
                2700,
                Phase::Stopping {
                    deadline: 3700,
                    killed: true,
                    leader: false,
                    then: None,
                    fallback: INT,
                },
                vec![Exited(Exit::Code(0)), Timer(3700)],
            ),
            (
                "the group empties",
                stopping(false, false, None),
                Event::GroupEmpty,
                200,
                Phase::Gone,
                vec![Gone],
            ),
            (
                "a crash while online",
                at(Phase::Online),
                exited(true),
                200,
                Phase::Gone,
                vec![Exited(Exit::Code(0)), Gone],
            ),
            (
                "kill while online",
                at(Phase::Online),
                Event::Kill,
                200,
                Phase::Stopping {
                    deadline: 1200,
                    killed: true,
                    leader: true,
                    then: None,
                    fallback: Sig::KILL,
                },
                vec![Kill],
            ),
            (
                "a second stop changes nothing",
                stopping(true, false, None),
                stop,
                200,
                Phase::Stopping {
                    deadline: 2600,
                    killed: false,
                    leader: true,
                    then: None,
                    fallback: INT,
                },
                vec![],
            ),
            (
                "ready when online changes nothing",
                at(Phase::Online),
                Event::Ready,
                200,
                Phase::Online,
                vec![],
            ),
        ];
        for (name, mut p, ev, now, phase, outs) in cases {
            let got = p.step(ev, now);
            assert_eq!(got, outs, "{name}: outs");
            assert_eq!(p.phase, phase, "{name}: phase");
        }
    }

    #[test]
    fn without_treekill_the_group_is_not_waited_for() {
        let mut p = stopping(true, false, None);
        p.group = false;
        assert_eq!(p.step(exited(true), 10), vec![Exited(Exit::Code(0)), Gone]);
    }
}
