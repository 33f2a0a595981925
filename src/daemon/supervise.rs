//! Carrying out what the machines decide: `step` feeds an app's machine
//! (through the table's one door) and `apply` performs each effect — fork
//! and exec with fresh pipes (stdin too: its write end waits in the entry
//! for `send_line`) and channel, signals, timers, pid files,
//! events, releasing a process, forgetting an app. Also the two sources of
//! process facts: reaping (exits, then groups that emptied) and the exec
//! status pipes, watched by the loop. Never reads a client's request.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream as StdStream;
use std::path::Path;

use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::unix::pipe::Receiver;
use mio::{Interest, Token};

use crate::app::Io;
use crate::cgroup;
use crate::channel::Channel;
use crate::logs::is_null;
use crate::process::{Event, Exit};
use crate::protocol::Monit;
use crate::reaper;
use crate::spawn::{self, Command, ExecStatus, Pending, SpawnError, spawn_child};
use crate::spawner::{IN_FLIGHT_MAX, Sent};
use crate::state::{Effect, Input, Role};
use crate::sys::{self, Signal};

use super::links::Link;
use super::relay::{Pipe, Stream};
use super::{Daemon, Fault, PUT_OFF_MAX, Timer, listen_key, wall_ms};

/// Exits handled in one wake, before requests, signals and timers get
/// their turn (as `relay::READS_PER_WAKE` bounds an output pipe). Handling
/// an exit is cheap (its restart is a deadline, spawned under the timers'
/// budget), so this is large: a zombie rarely outlives one wake.
pub(super) const EXITS_PER_WAKE: usize = 256;

/// A child on its way to `execve`, its status pipe watched by the loop.
pub(crate) struct Exec {
    pub pm_id: u32,
    pub pending: Pending,
}

impl Daemon {
    /// Feed one input to app `id`'s machine and carry out the effects.
    pub(super) fn step(&mut self, id: u32, input: Input) {
        // Its spawn in flight is answered first: a machine hears of its
        // process before anything else.
        if self.in_batch(id) {
            self.finish_spawns();
        }
        let now = self.now();
        for fx in self.table.step(id, input, now) {
            self.apply(id, fx);
        }
        self.close_idle_logs(id);
    }

    /// Close app `id`'s log files once it has no process and no pipe left
    /// (stopped, errored, waiting to restart): they are opened again at
    /// its next spawn, so an app costs no fd while it is not running.
    pub(super) fn close_idle_logs(&mut self, id: u32) {
        // One restarting in this wake keeps them (closed, then opened again
        // at once, they would only delay its replacement).
        let now = self.now();
        let idle =
            self.table.get(id).is_some_and(|e| {
                e.m().pids().is_empty() && e.m().deadline().is_none_or(|at| at > now)
            }) && !self.pipes.values().any(|p| p.pm_id == id)
                && !self.in_batch(id);
        if idle && let Some(e) = self.table.get_mut(id) {
            e.out.close();
            e.err.close();
        }
    }

    fn apply(&mut self, id: u32, fx: Effect) {
        match fx {
            Effect::Spawn(role) => {
                if self.stopping_all {
                    // Shutting down: nothing starts again.
                    let input = match role {
                        Role::Main => Input::Stop,
                        _ => Input::SpawnFailed { role },
                    };
                    return self.step(id, input);
                }
                if self.batch.is_some() && self.spawner.is_some() {
                    return self.spawn_in_batch(id, role);
                }
                let r = self.spawn_process(id, role);
                self.spawned(id, role, r);
            }
            Effect::Signal { pid, sig, group } => sys::send_and_continue(pid, sig, group),
            Effect::Ask {
                pid,
                shutdown,
                disconnect,
            } => {
                if !self.ask(id, pid, shutdown, disconnect) {
                    let event = Event::AskFailed;
                    self.step(id, Input::Proc { pid, event });
                }
            }
            Effect::Kill { pid, group, leader } => {
                // A reaped leader's group is signalled only while it lives.
                if leader || sys::group_alive(pid) {
                    self.log(&format!("app {id}: sending SIGKILL to pid {pid}"));
                    sys::send(pid, Signal::KILL, group || !leader);
                }
                // And everything of its cgroup, wherever it went.
                if group
                    && let Some(cg) = self.proc_cgroups.get(pid)
                    && cgroup::populated(&cg)
                {
                    let _ = match self.cgroups.as_mut() {
                        Some(c) => c.kill(&cg),
                        None => cgroup::kill(&cg),
                    };
                }
            }
            Effect::Timer { pid, at } => {
                let timer = match pid {
                    Some(pid) => Timer::Proc(id, pid),
                    None => Timer::App(id),
                };
                self.timers.arm(at, timer);
            }
            Effect::MainStarted(pid) => {
                if let Some(e) = self.table.get_mut(id) {
                    e.pm_uptime = wall_ms();
                    e.monit = Monit::default();
                    e.clear_rare(|r| {
                        r.notify_status = None;
                        r.node_version = None;
                        r.spawn_error = None;
                    });
                    e.last_pid = pid;
                    e.line_out.clear();
                    e.line_err.clear();
                }
                // Written once the wake is over, or its child exec'd
                // (`write_due_pid_files`): the child does not wait for it.
                if !self.pid_files_due.contains(&id) {
                    self.pid_files_due.push(id);
                }
            }
            Effect::ClearPid => {
                // Removed at the end of the wake, after any restart: the
                // replacement is not kept waiting for the filesystem, and
                // rewrites the file anyway.
                if let Some(e) = self.table.get(id) {
                    let path = e.app.pid_path(&self.home);
                    let user = e.app.file_user(&self.home, &path);
                    self.stale_pid_files.push((id, path, user));
                }
            }
            Effect::Emit(what) => {
                if what == "exit" {
                    self.runtime_exit_seen(id);
                }
                self.emit(id, what);
            }
            Effect::ReadyTimeout => {
                if let Some(e) = self.table.get_mut(id) {
                    e.rare_mut().online_warning = Some(format!(
                        "no ready message within listen_timeout ({} ms): online anyway",
                        e.app.spec.rare().listen_timeout
                    ));
                }
            }
            Effect::Swapped { old, new } => {
                if let Some(e) = self.table.get_mut(id) {
                    e.pm_uptime = wall_ms();
                    e.last_pid = new;
                    e.monit = Monit::default();
                }
                self.log(&format!("app {id}: reload: pid {new} replaces pid {old}"));
                self.write_pid_file(id, new);
            }
            Effect::Reloaded(outcome) => {
                if let Some(r) = self.reloads.iter_mut().find(|r| r.current == Some(id)) {
                    r.outcome = Some(outcome);
                }
            }
            Effect::Released(pid) => {
                let seen_empty = self.emptied.take() == Some(pid);
                if let Some(cg) = self.proc_cgroups.remove(pid) {
                    match self.cgroups.as_mut() {
                        Some(c) => c.give_back(id, cg, seen_empty),
                        None => cgroup::remove(&cg),
                    }
                }
                if let Some(e) = self.table.get_mut(id) {
                    e.stdins.retain(|(p, _)| *p != pid);
                }
                self.drop_link(id, pid);
                self.unwatch_exec(pid);
            }
            Effect::Forget => self.forget(id),
        }
    }

    /// Feed the outcome of a spawn to app `id`'s machine.
    fn spawned(&mut self, id: u32, role: Role, r: Result<i32, Fault>) {
        match r {
            Ok(pid) => self.step(id, Input::Spawned { role, pid }),
            Err(f) => {
                self.log(&format!("app {id}: {f}"));
                if let Some(e) = self.table.get_mut(id) {
                    e.rare_mut().spawn_error = Some(f);
                }
                self.step(id, Input::SpawnFailed { role });
            }
        }
    }

    /// Spawn through the spawner without waiting for its answer, which is
    /// read when `IN_FLIGHT_MAX` requests are out, or at the end of the
    /// batch (`end_batch`): the daemon makes the next child's fds while the
    /// spawner forks, and neither sleeps between two children. A bulk
    /// start batches (`begin_batch`); an input for an app whose spawn is
    /// in flight first has it answered (`step`).
    fn spawn_in_batch(&mut self, id: u32, role: Role) {
        match self.spawn_begin(id, role, true) {
            Ok(b) => {
                if let Some(q) = self.batch.as_mut() {
                    q.push_back(b);
                }
                // Oldest first until there is room (one not sent, too big,
                // frees none).
                while self
                    .spawner
                    .as_ref()
                    .is_none_or(|s| s.in_flight() >= IN_FLIGHT_MAX)
                    && let Some(b) = self.batch.as_mut().and_then(|q| q.pop_front())
                {
                    let (id, role) = (b.id, b.role);
                    let r = self.spawn_end(b);
                    self.spawned(id, role, r);
                }
            }
            Err(f) => self.spawned(id, role, Err(f)),
        }
    }

    /// App `id` has a spawn in flight in the batch.
    pub(super) fn in_batch(&self, id: u32) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|q| q.iter().any(|b| b.id == id))
    }

    /// Spawns go in a batch until `end_batch` (false: one was open).
    pub(super) fn begin_batch(&mut self) -> bool {
        let open = self.batch.is_none();
        if open {
            self.batch = Some(Default::default());
        }
        open
    }

    /// Read the answers of every spawn in flight, and end the batch.
    pub(super) fn end_batch(&mut self) {
        self.finish_spawns();
        self.batch = None;
    }

    /// Read the answers of every spawn in flight (the batch stays open).
    pub(super) fn finish_spawns(&mut self) {
        while let Some(b) = self.batch.as_mut().and_then(|q| q.pop_front()) {
            let (id, role) = (b.id, b.role);
            let r = self.spawn_end(b);
            self.spawned(id, role, r);
        }
    }

    /// Drop app `id` from the table, with its watch, its channels, and its
    /// `listen` sockets if no other app of its name holds them.
    fn forget(&mut self, id: u32) {
        self.unwatch_app(id);
        if let Some(c) = self.cgroups.as_mut() {
            c.forget(id);
        }
        let Some(e) = self.table.get(id) else {
            return;
        };
        let key = listen_key(&e.app.spec);
        let pids: Vec<i32> = e.links.iter().map(|l| l.pid).collect();
        for pid in pids {
            self.drop_link(id, pid);
        }
        let others = self
            .table
            .iter()
            .any(|(other, e)| other != id && listen_key(&e.app.spec) == key);
        if !others {
            self.listeners.remove(&key);
        }
        let desc = self.describe(id);
        for op in self.pending.iter_mut().filter(|op| op.pm_ids.contains(&id)) {
            if let Some(d) = &desc {
                op.gone.insert(id, d.clone());
            }
        }
        self.table.remove(id);
    }

    /// Start `cmd`'s child, or take the spawner's answer to the request
    /// `sent` for it. Not sent: cloned here into the daemon's memory
    /// (`spawn_shared`, the quickest), else through the spawner where
    /// there is one, else forked here. A spawner that is gone or cannot
    /// fork is let go once nothing is in flight, and said so.
    fn fork_child(&mut self, cmd: Command, sent: Option<Sent>) -> Result<Pending, SpawnError> {
        // A child cloned here starts with a copy of the daemon's fd table,
        // and its exec closes every one of them: past `SHARED_FDS_MAX`
        // that costs more than the spawner's round trip (whose children
        // get only their own fds).
        let spawner_free = self.spawner.as_ref().is_some_and(|s| s.in_flight() == 0);
        let cmd = match clone_here(sent.is_some(), spawner_free, self.fds_estimate()) {
            true => match spawn::spawn_shared(cmd) {
                Ok(r) => return r,
                Err(cmd) => cmd,
            },
            false => cmd,
        };
        let answer = match (self.spawner.as_mut(), sent) {
            (Some(s), Some(sent)) => Some(s.receive(sent, &cmd)),
            // Not while others are in flight: the next answer is theirs.
            (Some(s), None) if s.in_flight() == 0 => Some(s.spawn(&cmd)),
            _ => None,
        };
        let done = self
            .spawner
            .as_ref()
            .and_then(|s| s.done().map(str::to_owned));
        if let Some(why) = done {
            self.spawner = None;
            self.log(&format!(
                "the spawner {why}: the daemon makes the apps' processes itself from now on"
            ));
        }
        match answer {
            Some(Ok(r)) => r,
            Some(Err(_)) | None => spawn_child(&cmd),
        }
    }

    /// About how many fds the daemon has open: those of its processes'
    /// output pipes and channels, and a stdin pipe per app at most (its
    /// own few and the listening sockets aside).
    fn fds_estimate(&self) -> usize {
        self.pipes.len() + self.channels.len() + self.table.len()
    }

    /// Fork a process for app `id` with fresh pipes and channel, all
    /// registered with the poller before the fork (an app is never left
    /// writing into a pipe nobody reads); its exec status is watched by
    /// the loop. Its pid.
    fn spawn_process(&mut self, id: u32, role: Role) -> Result<i32, Fault> {
        let begun = self.spawn_begin(id, role, false)?;
        self.spawn_end(begun)
    }

    /// `spawn_process` up to the fork: the child's fds and command made,
    /// what the daemon reads registered, and (`send`) the request sent to
    /// the spawner, whose answer `spawn_end` reads.
    fn spawn_begin(&mut self, id: u32, role: Role, send: bool) -> Result<Begun, Fault> {
        let e = self
            .table
            .get_mut(id)
            .ok_or_else(|| Fault::system("no such app"))?;
        // Logs are open while the app runs (closed by `close_idle_logs`).
        for lf in [&mut e.out, &mut e.err] {
            lf.ensure_open().map_err(|err| Fault {
                code: crate::protocol::ErrorCode::InvalidOption,
                message: format!("cannot open log {}: {err}", lf.path().display()),
            })?;
        }
        let e = &*e;
        let null = || -> Result<OwnedFd, Fault> {
            File::options()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|err| Fault::system(format!("cannot open /dev/null: {err}")))
        };
        // The runtime shows every app's output, logged to a file or not.
        let console = self.console.is_some();
        let pipe = |path: &Path| -> Result<(Option<OwnedFd>, OwnedFd), Fault> {
            if is_null(path) && !console {
                return Ok((None, null()?));
            }
            let (r, w) = sys::child_pipe(true)
                .map_err(|err| Fault::system(format!("cannot make a pipe: {err}")))?;
            Ok((Some(r), w))
        };
        // stdin: a pipe the daemon writes `send` lines to, as PM2's.
        let (stdin_r, stdin_w) = match e.app.spec.stdin {
            true => {
                let (r, w) = sys::child_pipe(false)
                    .map_err(|err| Fault::system(format!("cannot make a pipe: {err}")))?;
                (r, Some(w))
            }
            false => (null()?, None),
        };
        let (out_r, out_w) = pipe(&e.app.out_path)?;
        let (err_r, err_w) = pipe(&e.app.err_path)?;
        let (ours, theirs) = match e.app.spec.ipc {
            true => {
                let (a, b) = StdStream::pair()
                    .map_err(|err| Fault::system(format!("cannot make the IPC channel: {err}")))?;
                a.set_nonblocking(true).map_err(|err| {
                    Fault::system(format!("cannot set up the IPC channel: {err}"))
                })?;
                (Some(a), Some(OwnedFd::from(b)))
            }
            false => (None, None),
        };
        // Only an app that asked for sockets gets them.
        let listen = self
            .listeners
            .get(&listen_key(&e.app.spec))
            .filter(|_| !e.app.spec.rare().listen.is_empty())
            .map(|l| {
                l.iter()
                    .map(|(a, fd)| (fd.as_raw_fd(), a.fd_name()))
                    .collect()
            })
            .unwrap_or_default();
        // A Node app in cluster mode is a worker of corral, its primary.
        let worker = match e.app.slot.cluster && e.app.is_node() && e.app.spec.ipc {
            true => self.next_worker + 1,
            false => 0,
        };
        let io = Io {
            stdio: [stdin_r, out_w, err_w],
            listen,
            channel: theirs,
            notify_socket: self.notify.as_ref().map(|n| n.path.clone()),
            cluster_id: (worker > 0).then(|| worker.to_string()),
        };
        let mut cmd = e.app.command(id, &self.home, io)?;
        // A cgroup of its own, where there is one to have: stopping it then
        // reaches every process it starts, `setsid` or not.
        let cg = match (&mut self.cgroups, e.app.spec.treekill) {
            (Some(c), true) => c.take(id).ok(),
            _ => None,
        };
        cmd.cgroup = cg.as_deref().and_then(cgroup::for_child);
        // One that cannot be opened (removed behind the daemon's back, or
        // no fd left) is not the child's: given back, not left behind.
        let cg = match (cg, cmd.cgroup.is_some(), self.cgroups.as_mut()) {
            (Some(dir), false, Some(c)) => {
                c.give_back(id, dir, false);
                None
            }
            (cg, _, _) => cg,
        };
        let owner = e.app.creds.as_ref().and_then(|c| c.uid.map(|u| (u, c.gid)));
        let cwd = e.app.cwd.clone();

        // Register everything the daemon reads before the child exists.
        let mut registered: Vec<(Token, Registered)> = Vec::new();
        let mut failure = None;
        for (r, stream) in [(out_r, Stream::Out), (err_r, Stream::Err)] {
            let Some(r) = r else { continue };
            let mut rx = Receiver::from(r);
            let t = self.token();
            match self
                .poll
                .registry()
                .register(&mut rx, t, Interest::READABLE)
            {
                Ok(()) => registered.push((t, Registered::Pipe(stream, rx))),
                Err(err) => {
                    failure = Some(reg_fail("output pipe", err));
                    break;
                }
            }
        }
        if failure.is_none()
            && let Some(sock) = ours
        {
            let mut sock = UnixStream::from_std(sock);
            let t = self.token();
            match self.poll.registry().register(
                &mut sock,
                t,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                Ok(()) => registered.push((t, Registered::Channel(sock))),
                Err(err) => failure = Some(reg_fail("IPC channel", err)),
            }
        }
        // Taken now: the next child of a batch is made before this one's
        // answer is read.
        if worker > 0 {
            self.next_worker = worker;
        }
        let mut begun = Begun {
            id,
            role,
            cmd,
            sent: None,
            registered,
            cg,
            stdin_w,
            worker,
            cwd,
            owner,
            failure,
        };
        if send
            && begun.failure.is_none()
            && let Some(s) = self.spawner.as_mut()
        {
            match s.send(&begun.cmd) {
                Ok(Ok(sent)) => begun.sent = Some(sent),
                Ok(Err(e)) => begun.failure = Some(Fault::from(e)),
                // Forked here at its end.
                Err(_) => {}
            }
        }
        Ok(begun)
    }

    /// `spawn_process` from the fork: the pid (the spawner's answer to a
    /// request `spawn_begin` sent, or a fork now), and what the daemon
    /// keeps of the child.
    fn spawn_end(&mut self, begun: Begun) -> Result<i32, Fault> {
        let Begun {
            id,
            role,
            cmd,
            sent,
            registered,
            cg,
            stdin_w,
            worker,
            cwd,
            owner,
            failure,
        } = begun;
        let spawned = match failure {
            Some(f) => Err(f),
            None => self.fork_child(cmd, sent).map_err(Fault::from),
        };
        let pending = match spawned {
            Ok(p) => p,
            Err(f) => {
                if let (Some(cg), Some(c)) = (cg, self.cgroups.as_mut()) {
                    c.give_back(id, cg, false);
                }
                for (_, r) in registered {
                    let _ = match r {
                        Registered::Pipe(_, mut rx) => self.poll.registry().deregister(&mut rx),
                        Registered::Channel(mut s) => self.poll.registry().deregister(&mut s),
                    };
                }
                return Err(f);
            }
        };
        let pid = pending.pid;
        self.forked = true;
        if let Some(cg) = cg {
            self.proc_cgroups.insert(pid, cg);
        }
        if let (Some(w), Some(e)) = (stdin_w, self.table.get_mut(id)) {
            // Room for this one only (a first push reserves four).
            e.stdins.reserve_exact(1);
            e.stdins.push((pid, w));
        }
        let t = self.token();
        let status_fd = pending.status.as_raw_fd();
        if let Err(err) =
            self.poll
                .registry()
                .register(&mut SourceFd(&status_fd), t, Interest::READABLE)
        {
            // Without a watch on the status pipe the exec would never be
            // known: give this child up (what it reads is freed once it is
            // reaped).
            sys::send(pid, Signal::KILL, false);
            let mut pending = pending;
            if let Some(h) = pending.held.take() {
                self.held.push(h);
            }
            return Err(reg_fail("exec status pipe", err));
        }
        self.execs.insert(t, Exec { pm_id: id, pending });
        if worker > 0 {
            // Its messages are read in a later wake: registered in time.
            self.cluster.register(worker, &cwd, owner);
        }
        for (t, r) in registered {
            match r {
                Registered::Pipe(stream, rx) => {
                    self.pipes.insert(
                        t,
                        Pipe {
                            pm_id: id,
                            pid,
                            stream,
                            rx,
                        },
                    );
                }
                Registered::Channel(sock) => {
                    self.channels.insert(t, (id, pid));
                    if let Some(e) = self.table.get_mut(id) {
                        // Room for this one only: a Vec's first push
                        // reserves four, and a Link is large.
                        e.links.reserve_exact(1);
                        e.links.push(Link {
                            pid,
                            token: t,
                            ch: Channel::new(sock),
                            worker,
                            seq: 0,
                        });
                    }
                }
            }
        }
        if role == Role::Candidate
            && let Some(e) = self.table.get(id)
        {
            let line = format!(
                "app {} ({id}): reload: replacement pid {pid}",
                e.app.spec.name
            );
            self.log(&line);
        }
        Ok(pid)
    }

    /// The exec status pipe behind `t` is readable: the child exec'd (end of
    /// file) or says why it could not.
    pub(super) fn read_exec(&mut self, t: Token) {
        let Some(x) = self.execs.get_mut(&t) else {
            return;
        };
        let status = x.pending.check();
        let (id, pid) = (x.pm_id, x.pending.pid);
        match status {
            ExecStatus::Waiting => {}
            ExecStatus::Running => {
                self.unwatch_exec(pid);
                self.step(
                    id,
                    Input::Proc {
                        pid,
                        event: Event::Execd,
                    },
                );
            }
            ExecStatus::Failed(err) => {
                // It still runs (to its exit) in what it was given.
                if let Some(h) = x.pending.held.take() {
                    self.held.push(h);
                }
                self.unwatch_exec(pid);
                let f = Fault::from(err);
                self.log(&format!("app {id}: {f}"));
                if let Some(e) = self.table.get_mut(id) {
                    e.rare_mut().spawn_error = Some(f);
                }
                self.step(
                    id,
                    Input::Proc {
                        pid,
                        event: Event::ExecFailed,
                    },
                );
            }
        }
    }

    /// The child `pid` was reaped: what it was given in the daemon's memory
    /// (`spawn::Held`) is free.
    fn release_held(&mut self, pid: i32) {
        for x in self.execs.values_mut().filter(|x| x.pending.pid == pid) {
            x.pending.ended();
        }
        if let Some(i) = self.held.iter().position(|h| h.pid() == pid) {
            self.held.swap_remove(i).release();
        }
    }

    /// Stop watching the exec status of `pid`.
    fn unwatch_exec(&mut self, pid: i32) {
        let Some(t) = self
            .execs
            .iter()
            .find(|(_, x)| x.pending.pid == pid)
            .map(|(t, _)| *t)
        else {
            return;
        };
        if let Some(x) = self.execs.remove(&t) {
            let fd = x.pending.status.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    /// Reap children that ended, after a SIGCHLD (at most `EXITS_PER_WAKE`:
    /// a crash storm must leave requests and signals their turn; the rest
    /// wait for the next wake, which comes at once, as zombies whose pids
    /// cannot be reused) and feed the exits to their machines; then, in
    /// every wake, the groups of reaped leaders that emptied (the last of a
    /// group need not be the daemon's child, nor its end signalled).
    pub(super) fn handle_exits(&mut self) {
        let exits = match std::mem::take(&mut self.reap_due) {
            true => {
                let (exits, more) = reaper::reap_some(EXITS_PER_WAKE);
                self.reap_due = more;
                exits
            }
            false => Vec::new(),
        };
        for &(pid, exit) in &exits {
            if self.spawner.as_ref().is_some_and(|s| s.pid() == pid) {
                // What it was asked is resolved through it (its slots).
                self.finish_spawns();
                if let Some(s) = self.spawner.take() {
                    s.reaped();
                }
                let how = match exit {
                    Exit::Code(c) => format!("with status {c}"),
                    Exit::Signal(s) => format!("by signal {s}"),
                };
                self.log(&format!(
                    "the spawner (pid {pid}) ended {how}: the daemon makes the apps' processes itself from now on"
                ));
                continue;
            }
            // An orphan of an app, reaped as a subreaper must: nothing else.
            let Some(id) = self.table.app_of(pid) else {
                continue;
            };
            // Its last output is logged and its pipes closed now (their
            // writer is dead), not after a backlog of other events.
            let pipes: Vec<Token> = self
                .pipes
                .iter()
                .filter(|(_, p)| p.pid == pid)
                .map(|(t, _)| *t)
                .collect();
            for t in pipes {
                self.read_pipe(t);
            }
            // Its last words on the channel before its death is acted on.
            let link = self
                .table
                .get(id)
                .and_then(|e| e.links.iter().find(|l| l.pid == pid))
                .map(|l| l.token);
            if let Some(t) = link {
                self.service_channel(t);
            }
            // Reaped before its exec status was read: the pipe, closed for
            // good now, says how the exec went.
            if let Some(t) = self
                .execs
                .iter()
                .find(|(_, x)| x.pending.pid == pid)
                .map(|(t, _)| *t)
            {
                self.read_exec(t);
            }
            let treekill = self.table.get(id).is_some_and(|e| e.app.spec.treekill);
            let group_alive = treekill && self.group_alive(pid);
            let event = Event::Exited { exit, group_alive };
            self.step(id, Input::Proc { pid, event });
        }
        for &(pid, _) in &exits {
            self.release_held(pid);
        }
        for (id, pid) in self.table.lingering() {
            if !self.group_alive(pid) {
                let event = Event::GroupEmpty;
                self.step(id, Input::Proc { pid, event });
            }
        }
    }

    /// Whether anything of process `pid` is left: its process group, or
    /// its cgroup (where a `setsid` does not take a process out).
    fn group_alive(&mut self, pid: i32) -> bool {
        if sys::group_alive(pid) {
            return true;
        }
        let Some(cg) = self.proc_cgroups.get(pid) else {
            return false;
        };
        let alive = cgroup::populated(&cg);
        // Its release, next in this wake, need not read it again.
        if !alive {
            self.emptied = Some(pid);
        }
        alive
    }

    /// The cgroup of app `id`'s main process, if it has one.
    pub(super) fn cgroup_of(&self, id: u32) -> Option<std::path::PathBuf> {
        let pid = self.table.get(id)?.m().pid()?;
        self.proc_cgroups.get(pid)
    }

    /// Whether the pid files and the journal may wait (they are written at
    /// the end of a wake that says no): from a wake that forked, while a
    /// child has not exec'd yet, for `PUT_OFF_MAX` at the most, so that the
    /// children have the CPU for their exec first. Never while a pid file
    /// due is of a process that has exec'd: no answer that an app is
    /// online goes out before its pid file is written.
    pub(super) fn bookkeeping_can_wait(&mut self) -> bool {
        let now = self.now();
        if self.forked && self.put_off.is_none() {
            let at = now + PUT_OFF_MAX;
            self.put_off = Some(at);
            self.timers.arm(at, Timer::PutOff);
        }
        let Some(at) = self.put_off else {
            return false;
        };
        let pending = |pid: i32| self.execs.values().any(|x| x.pending.pid == pid);
        now < at
            && !self.execs.is_empty()
            && self.pid_files_due.iter().all(|&id| {
                self.table
                    .get(id)
                    .and_then(|e| e.m().pid())
                    .is_some_and(pending)
            })
    }
}

/// Open fds past which a child is started by the spawner rather than
/// cloned here (`fork_child`). A fork's or clone's child gets a copy of
/// every fd of its parent's, and its exec closes those marked close-on-exec
/// one by one: 0.1 to 0.3 µs each here (a C loop, 0 / 200 / 2000 pipes and
/// sockets open: vfork → exec of a static program 694 / 712 / 851 µs at
/// best, 857 / 906 / 1318 µs on average), against the spawner's round trip
/// of about 300 µs. With 1000 apps (2013 fds) a cloned restart was 0.8 ms
/// slower than the spawner's.
const SHARED_FDS_MAX: usize = 512;

/// Whether a child is cloned into the daemon's memory (`spawn_shared`)
/// rather than taken from the spawner: not if it was `sent` to the
/// spawner, nor if the spawner is free and the daemon has more than
/// `SHARED_FDS_MAX` fds open (`fds`).
fn clone_here(sent: bool, spawner_free: bool, fds: usize) -> bool {
    !(sent || spawner_free && fds > SHARED_FDS_MAX)
}

/// Why a child's fd (`what`) could not be watched.
fn reg_fail(what: &str, err: std::io::Error) -> Fault {
    Fault::system(format!("cannot watch the {what} with the poller: {err}"))
}

/// A child on its way: `spawn_begin` made it all, `spawn_end` forks it or
/// reads the spawner's answer.
pub(super) struct Begun {
    id: u32,
    role: Role,
    cmd: Command,
    /// The request sent to the spawner, if one was.
    sent: Option<Sent>,
    registered: Vec<(Token, Registered)>,
    cg: Option<std::path::PathBuf>,
    stdin_w: Option<OwnedFd>,
    worker: u32,
    cwd: std::path::PathBuf,
    owner: Option<(u32, u32)>,
    /// Why it cannot be forked (undone by `spawn_end`).
    failure: Option<Fault>,
}

/// What was registered with the poller for a child about to be forked.
enum Registered {
    Pipe(Stream, Receiver),
    Channel(UnixStream),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_cloned_here_unless_sent_or_the_daemon_has_many_fds() {
        let max = SHARED_FDS_MAX;
        for (sent, spawner_free, fds, here) in [
            (false, true, 0, true),
            (false, true, max, true),
            (false, true, max + 1, false),
            // No spawner to take it (gone, or busy with a batch): here,
            // which beats the daemon's own fork at any size.
            (false, false, max + 1, true),
            (false, false, 0, true),
            // Its request is at the spawner already.
            (true, true, 0, false),
            (true, false, 0, false),
        ] {
            assert_eq!(
                clone_here(sent, spawner_free, fds),
                here,
                "sent {sent}, spawner free {spawner_free}, {fds} fds"
            );
        }
    }
}
