//! `corral runtime`: the daemon in the foreground as a container's
//! entrypoint (PM2's `pm2-runtime`). Owns what differs from a daemon: the
//! console (every app's output on the runtime's own stdout/stderr, each
//! line prefixed `name|`, written without ever blocking the loop), which
//! apps ended on their own and with what code, and when the runtime exits.
//! Never changes an app's state itself.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::os::fd::RawFd;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::errno::Errno;
use serde_json::Value;

use crate::protocol::Status;
use crate::state::Exit;
use crate::sys;

use super::Daemon;
use super::relay::Stream;

/// The console's fds in the poller.
pub(super) const CONSOLE_OUT: Token = Token(5);
pub(super) const CONSOLE_ERR: Token = Token(6);

/// Unwritten console output kept per stream; past it whole lines are
/// dropped and counted.
const CONSOLE_QUEUE: usize = 1 << 20;
/// A partial line longer than this goes out without waiting for its end.
const CONSOLE_LINE: usize = 64 * 1024;

/// How the runtime was asked to run: its apps and its console.
#[derive(Debug)]
pub struct Runtime {
    /// The apps to start, as start options (cwd resolved).
    pub apps: Vec<Value>,
    /// `--env NAME`: the `env_<NAME>` overlay.
    pub env_name: Option<String>,
    /// `--raw`: app output without the `name|` prefix.
    pub raw: bool,
    /// Which ended app's code is the runtime's exit status.
    pub exit_with: ExitWith,
}

/// `--exit-with`: when every app has ended on its own, the exit status is
/// the code of the first app that ended, of the last one (the default), or
/// the highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitWith {
    First,
    Last,
    Max,
}

impl ExitWith {
    /// `first`, `last` or `max`.
    pub fn parse(word: &str) -> Option<ExitWith> {
        match word {
            "first" => Some(ExitWith::First),
            "last" => Some(ExitWith::Last),
            "max" => Some(ExitWith::Max),
            _ => None,
        }
    }
}

/// One of the runtime's output streams.
struct Sink {
    fd: RawFd,
    token: Token,
    queue: Vec<u8>,
    /// Lines dropped while the queue was full, not yet reported.
    dropped: u64,
    /// Non-blocking and in the poller (a pipe or socket): writes that would
    /// block wait for the next writable event. A terminal or a file is
    /// written as it comes.
    polled: bool,
}

impl Sink {
    fn new(fd: RawFd, token: Token, poll: &mio::Poll) -> Sink {
        // A terminal's flags are shared with the shell that started us:
        // never make it non-blocking. Files never block.
        let is_tty = match fd {
            1 => std::io::stdout().is_terminal(),
            _ => std::io::stderr().is_terminal(),
        };
        let polled = !is_tty
            && sys::set_nonblocking(fd, true).is_ok()
            && poll
                .registry()
                .register(&mut SourceFd(&fd), token, Interest::WRITABLE)
                .is_ok();
        if !polled && !is_tty {
            let _ = sys::set_nonblocking(fd, false);
        }
        Sink {
            fd,
            token,
            queue: Vec::new(),
            dropped: 0,
            polled,
        }
    }

    /// Queue `line` (whole) and write what can be written.
    fn push(&mut self, line: &[u8]) {
        if self.queue.len() + line.len() > CONSOLE_QUEUE {
            self.dropped += 1;
            return;
        }
        if self.dropped > 0 {
            let note = format!("corral: {} lines of output dropped\n", self.dropped);
            self.queue.extend_from_slice(note.as_bytes());
            self.dropped = 0;
        }
        self.queue.extend_from_slice(line);
        self.flush();
    }

    fn flush(&mut self) {
        while !self.queue.is_empty() {
            // SAFETY: writing a live buffer of the stated length to one of
            // the standard fds this process owns.
            let r = unsafe {
                sys::syscall!(write(self.fd, self.queue.as_ptr().cast(), self.queue.len()))
            };
            match r {
                Ok(n) => {
                    self.queue.drain(..n as usize);
                }
                Err(Errno::EINTR) => {}
                // Full: the poller says when there is room again.
                Err(Errno::EAGAIN) if self.polled => return,
                // Nobody reads any more (EPIPE) or worse: output is lost,
                // the apps are not.
                Err(_) => {
                    self.queue.clear();
                    return;
                }
            }
        }
    }
}

/// The runtime's state in the daemon.
pub(super) struct Console {
    raw: bool,
    pub exit_with: ExitWith,
    out: Sink,
    err: Sink,
    /// Partial lines per app and stream.
    partial: HashMap<(u32, bool), Vec<u8>>,
    /// Apps in the order their last process ended on its own.
    pub ended: Vec<u32>,
}

impl Console {
    pub fn new(rt: &Runtime, poll: &mio::Poll) -> Console {
        Console {
            raw: rt.raw,
            exit_with: rt.exit_with,
            out: Sink::new(1, CONSOLE_OUT, poll),
            err: Sink::new(2, CONSOLE_ERR, poll),
            partial: HashMap::new(),
            ended: Vec::new(),
        }
    }

    /// App `id` (named `name`) wrote `chunk` on `stream`: its whole lines
    /// go out, prefixed.
    pub fn relay(&mut self, id: u32, name: &str, stream: Stream, chunk: &[u8]) {
        let is_err = stream == Stream::Err;
        let partial = self.partial.entry((id, is_err)).or_default();
        partial.extend_from_slice(chunk);
        let cut = match partial.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if partial.len() > CONSOLE_LINE => partial.len(),
            None => return,
        };
        let whole: Vec<u8> = partial.drain(..cut).collect();
        let sink = match is_err {
            true => &mut self.err,
            false => &mut self.out,
        };
        for line in whole.split_inclusive(|&b| b == b'\n') {
            let mut l = Vec::with_capacity(line.len() + name.len() + 2);
            if !self.raw {
                l.extend_from_slice(name.as_bytes());
                l.push(b'|');
                l.push(b' ');
            }
            l.extend_from_slice(line);
            if l.last() != Some(&b'\n') {
                l.push(b'\n');
            }
            sink.push(&l);
        }
    }

    /// A line of the runtime's own on its stderr.
    pub fn say(&mut self, msg: &str) {
        self.err.push(format!("corral: {msg}\n").as_bytes());
    }

    /// The console's fd behind `t` may be written again.
    pub fn writable(&mut self, t: Token) {
        for s in [&mut self.out, &mut self.err] {
            if s.token == t {
                s.flush();
            }
        }
    }

    /// Before exiting: write what is queued, blocking if need be.
    pub fn drain(&mut self) {
        for s in [&mut self.out, &mut self.err] {
            if s.polled {
                let _ = sys::set_nonblocking(s.fd, false);
                s.polled = false;
            }
            s.flush();
        }
    }
}

impl Daemon {
    /// Note that app `id`'s process ended; the runtime remembers the order
    /// in which apps ended.
    pub(super) fn runtime_exit_seen(&mut self, id: u32) {
        if let Some(c) = self.console.as_mut() {
            c.ended.retain(|x| *x != id);
            c.ended.push(id);
        }
    }

    /// The runtime's exit status once no app is left to run: every app
    /// stopped or errored, none waiting to restart, none stopping or
    /// reloading. Apps stopped on request count as 0.
    pub(super) fn runtime_done(&self) -> Option<i32> {
        let c = self.console.as_ref()?;
        if self.stopping_all {
            return None;
        }
        let live = self.table.iter().any(|(_, e)| {
            let m = e.m();
            !m.is_quiet() || !matches!(m.status(), Status::Stopped | Status::Errored)
        });
        if live {
            return None;
        }
        let code_of = |id: &u32| {
            let e = self.table.get(*id)?;
            if e.stop_requested {
                return Some(0);
            }
            Some(match e.m().last_exit() {
                Some(Exit::Code(c)) => c,
                Some(Exit::Signal(s)) => 128 + s,
                // Errored without ever running (its program cannot be run).
                None => 1,
            })
        };
        let mut codes: Vec<i32> = c.ended.iter().filter_map(code_of).collect();
        // Apps whose program could not be run never ended: they count as 1.
        codes.extend(
            self.table
                .iter()
                .filter(|(id, e)| e.m().status() == Status::Errored && !c.ended.contains(id))
                .map(|_| 1),
        );
        let code = match c.exit_with {
            ExitWith::First => codes.first().copied(),
            ExitWith::Last => codes.last().copied(),
            ExitWith::Max => codes.iter().copied().max(),
        };
        Some(code.unwrap_or(0))
    }
}
