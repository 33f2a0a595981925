//! `corral update`: the daemon replaced by the binary now on disk without
//! stopping any app. At the end of the wake that asked for it, the daemon
//! writes its journal, then a hand-over file (0600, in the home) with the
//! table — each app's options as given and what resolving them found
//! (cwd, program, interpreter, user: `Handed`), its machine and counters,
//! what is at its default left out — and the numbers of
//! every fd it keeps: the pid file's lock, the control socket, the notify
//! socket, each app's output pipes, IPC channels and stdin pipes, exec
//! status pipes, `listen` sockets, and the clients' connections. Those
//! alone lose close-on-exec; then it `execve`s its binary with
//! `daemon --no-daemon --handover FILE` and its own flags. The new image
//! (same pid: the apps stay its children) takes every fd back, rebuilds
//! the table (each app's options parsed again, nothing looked up again),
//! re-arms the machines' deadlines and answers the requester.
//! If `execve` fails, nothing was lost: close-on-exec is set again and the
//! requester is told why. Every client connection carries over (a
//! `Client` goes on using its own); bus subscribers stay subscribed and
//! get `daemon:update`.
//!
//! With 1000 apps the hand-over file is some 650 kB and the whole of it,
//! from the request to the new image's answer, takes 25–35 ms: a third
//! of it JSON (written, then read), half the new image's table. The file
//! of an older image (each app as the journal has it) is still read; an
//! older binary cannot read this one's.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use mio::unix::pipe::Receiver;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::{App, Found, Given, Slot};
use crate::channel::{Channel, ChannelState};
use crate::journal;
use crate::options::parse_app;
use crate::protocol::{self, ErrorCode, WireError};
use crate::spawn::Pending;
use crate::state::{Machine, Wanted};
use crate::users::Credentials;

use super::links::Link;
use super::persist::saved_entry;
use super::recover::env_index;
use super::relay::{Pipe, Stream};
use super::requests::unopened_logs;
use super::supervise::Exec;
use super::table::Rare;
use super::*;

/// A connection's token in the hand-over file (its old number, mapped to a
/// new one by the new image).
pub(crate) mod token {
    use mio::Token;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Token, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.0 as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
        Ok(Token(u64::deserialize(d)? as usize))
    }
}

/// A client connection: idle, waiting on a parked request or a reload,
/// or subscribed to the bus.
#[derive(Serialize, Deserialize)]
pub(super) struct ConnState {
    token: usize,
    fd: RawFd,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    #[serde(default)]
    waiting: bool,
    #[serde(default)]
    read_closed: bool,
    /// A bus subscriber's filter.
    #[serde(default)]
    sub: Option<crate::bus::Subscription>,
}

/// The hand-over file's name in the home.
pub(super) const FILE: &str = "handover.json";

/// One app as the old image hands it over. What is at its default is
/// left out (most apps have no partial line, no cron, no pipe).
#[derive(Serialize, Deserialize)]
pub(super) struct AppState {
    /// The app as it was resolved (`Handed`). An image before it wrote
    /// `journal` instead: resolved again by the new image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app: Option<Handed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    journal: Option<journal::App>,
    machine: Machine,
    #[serde(default)]
    pm_uptime: u64,
    #[serde(default)]
    monit: crate::protocol::Monit,
    #[serde(default)]
    last_pid: i32,
    #[serde(default, skip_serializing_if = "is_false")]
    manual: bool,
    /// Brought back from the journal, waiting for its old processes to go.
    #[serde(default, skip_serializing_if = "is_false")]
    recovering: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    stop_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notify_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    starttimes: Vec<(i32, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron_fired: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watch_at: Option<u64>,
    /// Partial lines of stdout and stderr (for `log:*` events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    line_out: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    line_err: Vec<u8>,
    /// Output pipes: the writer's pid, stderr or not, the read end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pipes: Vec<(i32, bool, RawFd)>,
    /// IPC channels: pid, socket, Node worker id, message counter, what
    /// is half read or written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    links: Vec<(i32, RawFd, u32, u64, ChannelState)>,
    /// Stdin pipes' write ends, by pid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stdins: Vec<(i32, RawFd)>,
}

/// An app as the old image resolved it: its options as given (parsed
/// again by the new image, so an option the new version reads otherwise
/// takes effect) and what resolving them looked up (`app::Found`: taken
/// as it is, so the new image runs exactly what the old one did and
/// looks nothing up again).
#[derive(Serialize, Deserialize)]
pub(super) struct Handed {
    pm_id: u32,
    name: String,
    options: Given,
    instance: u32,
    instances: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    cluster: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env_name: Option<String>,
    /// An index in `State::envs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_env: Option<usize>,
    #[serde(default)]
    created_at: u64,
    cwd: String,
    exec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interpreter: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    shell: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    creds: Option<Credentials>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Handed {
    /// App `pm_id` of the table as handed over; `None` if one of its
    /// paths is not UTF-8 (then it goes as the journal has it, and is
    /// resolved again).
    fn of(
        pm_id: u32,
        a: &App,
        envs: &mut Vec<Rc<BTreeMap<String, String>>>,
        created_at: u64,
    ) -> Option<Handed> {
        let text = |p: &Path| p.to_str().map(str::to_string);
        Some(Handed {
            pm_id,
            name: a.spec.name.clone(),
            options: a.options.clone(),
            instance: a.slot.instance,
            instances: a.slot.count,
            cluster: a.slot.cluster,
            env_name: a.env_name().map(str::to_string),
            base_env: a.base_env.as_ref().map(|env| env_index(envs, env)),
            created_at,
            cwd: text(&a.cwd)?,
            exec: text(&a.exec_path)?,
            interpreter: match &a.interpreter {
                Some(i) => Some(text(i)?),
                None => None,
            },
            shell: a.shell,
            creds: a.creds.as_deref().cloned(),
        })
    }
}

/// A child not yet known to have exec'd.
#[derive(Serialize, Deserialize)]
pub(super) struct ExecState {
    pm_id: u32,
    pid: i32,
    status: RawFd,
    path: String,
    cwd: String,
}

/// Everything the new image needs. What a later version added has a
/// default, so the hand-over of an older image is still read.
#[derive(Serialize, Deserialize)]
pub(crate) struct State {
    /// The old image's monotonic clock (ms since it started): the machines'
    /// deadlines are on it, so the new image goes on with it.
    now: u64,
    #[serde(default)]
    uptime_ms: u64,
    pub lock: RawFd,
    pub listener: RawFd,
    #[serde(default)]
    pub notify: Option<(RawFd, PathBuf)>,
    #[serde(default)]
    detached: bool,
    #[serde(default)]
    next_worker: u32,
    #[serde(default)]
    cgroup_next: u64,
    #[serde(default)]
    envs: Vec<BTreeMap<String, String>>,
    apps: Vec<AppState>,
    #[serde(default)]
    listeners: Vec<(String, Vec<(listen::Addr, RawFd)>)>,
    #[serde(default)]
    proc_cgroups: Vec<(i32, PathBuf)>,
    #[serde(default)]
    execs: Vec<ExecState>,
    /// Node cluster mode: the shared sockets, the workers leaving.
    #[serde(default)]
    cluster: (Vec<crate::cluster::SharedState>, Vec<u32>),
    /// Requests waiting for apps to settle, rolling reloads, and their
    /// connections.
    #[serde(default)]
    pending: Vec<super::requests::Pending>,
    #[serde(default)]
    reloads: Vec<Reload>,
    #[serde(default)]
    conns: Vec<ConnState>,
    /// Processes of a crashed daemon still being stopped (recovery).
    #[serde(default)]
    orphans: Vec<super::recover::Orphan>,
    /// The connection of `corral update` and its request id.
    #[serde(default)]
    requester: Option<(usize, Value)>,
    /// When the old image read the `update_daemon` request (wall ms).
    #[serde(default)]
    began: u64,
}

/// Read (and remove) the hand-over file.
pub(crate) fn read_state(path: &Path) -> Result<State, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the hand-over file {}: {e}", path.display()))?;
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text)
        .map_err(|e| format!("the hand-over file {} is not valid: {e}", path.display()))
}

/// The binary to replace the daemon with: `CORRAL_DAEMON_BIN` when the
/// daemon was started with it, else the one it runs (`/proc/self/exe`,
/// whose name ends in " (deleted)" once a new build replaced the file).
fn binary() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("CORRAL_DAEMON_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(b));
    }
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let s = exe.to_string_lossy();
    Some(match s.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

impl Daemon {
    /// `update_daemon` from `t`: checked now, carried out at the end of
    /// the wake (`hand_over`).
    pub(super) fn ask_update(&mut self, t: Token, id: Value) -> Result<(), WireError> {
        if self.console.is_some() || self.lifeline {
            return Err(WireError::new(
                ErrorCode::Internal,
                "this daemon cannot be updated in place (runtime or connect_no_daemon)",
            ));
        }
        if self.stopping_all {
            return Err(WireError::new(
                ErrorCode::Internal,
                "the daemon is stopping",
            ));
        }
        if self.update_to.is_some() {
            return Err(WireError::new(
                ErrorCode::Internal,
                "an update is already under way",
            ));
        }
        self.park(t);
        self.update_to = Some((t, id, wall_ms()));
        Ok(())
    }

    /// Replace this image by the binary on disk, handing everything over.
    /// Returns only if that failed (the requester is told).
    pub(super) fn hand_over(&mut self) {
        // `took_ms` counts from when the request was read.
        let Some((t, req_id, began)) = self.update_to.take() else {
            return;
        };
        let fail = |d: &mut Daemon, why: String| {
            d.log(&format!("update: {why}; this daemon goes on"));
            d.answer(
                t,
                protocol::err_line(&req_id, &WireError::new(ErrorCode::Internal, why.clone())),
            );
        };
        // A kill came in the same wake: stopping goes first.
        if self.stopping_all {
            return fail(self, "the daemon is stopping".into());
        }
        let Some(bin) = binary() else {
            return fail(self, "cannot tell which binary to run".into());
        };
        let Ok(cbin) = std::ffi::CString::new(bin.as_os_str().as_encoded_bytes()) else {
            return fail(self, format!("bad binary path {}", bin.display()));
        };
        // The journal up to date first (it is unless this wake changed the
        // table): if the new image does not come up, the next daemon
        // recovers the apps from it.
        if self.table.take_dirty() {
            self.write_journal(false);
        }
        let (state, fds) = self.export(t, &req_id, began);
        // Sized for the whole state at once (some 700 bytes an app).
        let mut text = Vec::with_capacity(4096 + 1024 * state.apps.len());
        let text = serde_json::to_writer(&mut text, &state).map(|()| text);
        // What was taken out for the state is back, should this image go on.
        self.pending = state.pending;
        self.reloads = state.reloads;
        self.orphans = state.orphans;
        for c in state.conns {
            if let Some(conn) = self.conns.get_mut(&Token(c.token)) {
                conn.sub = c.sub;
            }
        }
        let text = match text {
            Ok(t) => t,
            Err(e) => return fail(self, format!("cannot write the hand-over state: {e}")),
        };
        let path = self.home.dir.join(FILE);
        if let Err(e) = sys::write_atomic_mode(&path, &text, false, Some(0o600)) {
            return fail(self, format!("cannot write {}: {e}", path.display()));
        }
        let mut args: Vec<String> = vec![
            bin.to_string_lossy().into_owned(),
            "daemon".into(),
            "--no-daemon".into(),
            "--handover".into(),
            path.to_string_lossy().into_owned(),
            "--sample-interval".into(),
            format!("{}ms", self.sample_interval),
            "--log-retain".into(),
            self.log_defaults.1.to_string(),
        ];
        if let Some(max) = self.log_defaults.0 {
            args.push("--max-log-size".into());
            args.push(max.to_string());
        }
        for u in self.allow_uid.clone() {
            args.push("--allow-uid".into());
            args.push(u.to_string());
        }
        for g in self.allow_gid.clone() {
            args.push("--allow-gid".into());
            args.push(g.to_string());
        }
        let cargs: Vec<std::ffi::CString> = args
            .iter()
            .filter_map(|a| std::ffi::CString::new(a.as_bytes()).ok())
            .collect();
        let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        // What is queued for the apps' channels goes now, as far as it can.
        for (_, e) in self.table.iter_mut() {
            for l in e.links.iter_mut() {
                let _ = l.ch.flush();
            }
        }
        self.publish(
            "daemon:update",
            json!({ "pid": std::process::id(), "at": wall_ms() }),
        );
        self.flush_all();
        self.log(&format!(
            "update: handing over {} apps to {}",
            self.table.len(),
            bin.display()
        ));
        let mut kept = Vec::new();
        for fd in &fds {
            if sys::keep_across_exec(*fd, true).is_ok() {
                kept.push(*fd);
            }
        }
        // Caught signals wait for the new image's handlers (the default
        // action of SIGTERM would kill the daemon in between).
        sys::block_signals(&CAUGHT, true);
        // SAFETY: `cbin` and `argv` are NUL-terminated C strings and a
        // null-terminated array that outlive the call; the environment is
        // the process's own. On success this does not return.
        unsafe { libc::execv(cbin.as_ptr(), argv.as_ptr()) };
        let err = std::io::Error::last_os_error();
        sys::block_signals(&CAUGHT, false);
        for fd in kept {
            let _ = sys::keep_across_exec(fd, false);
        }
        let _ = std::fs::remove_file(&path);
        fail(self, format!("cannot run {}: {err}", bin.display()));
    }

    /// The state to hand over, and the fds it names.
    fn export(&mut self, t: Token, req_id: &Value, began: u64) -> (State, Vec<RawFd>) {
        let mut fds = vec![self._lock.as_raw_fd(), self.listener.as_raw_fd()];
        let notify = self.notify.as_ref().map(|n| {
            fds.push(n.sock.as_raw_fd());
            (n.sock.as_raw_fd(), n.path.clone())
        });
        let mut envs: Vec<Rc<BTreeMap<String, String>>> = Vec::new();
        let mut apps = Vec::new();
        let mut pipes_of: HashMap<u32, Vec<(i32, bool, RawFd)>> = HashMap::new();
        for p in self.pipes.values() {
            pipes_of.entry(p.pm_id).or_default().push((
                p.pid,
                matches!(p.stream, Stream::Err),
                p.rx.as_raw_fd(),
            ));
        }
        for (id, e) in self.table.iter() {
            let m = e.m();
            // Being deleted: left behind, as in the journal.
            if m.wanted() == Wanted::Gone {
                continue;
            }
            let (app, journal) = match Handed::of(id, &e.app, &mut envs, e.created_at) {
                Some(h) => (Some(h), None),
                None => {
                    let Some(saved) = saved_entry(id, e) else {
                        continue;
                    };
                    let j = journal::App {
                        saved,
                        restart_time: m.restart_time(),
                        unstable_restarts: m.unstable_restarts(),
                        created_at: e.created_at,
                        base_env: e.app.base_env.as_ref().map(|env| env_index(&mut envs, env)),
                        processes: Vec::new(),
                    };
                    (None, Some(j))
                }
            };
            let pipes = pipes_of.remove(&id).unwrap_or_default();
            let links: Vec<(i32, RawFd, u32, u64, ChannelState)> = e
                .links
                .iter()
                .map(|l| (l.pid, l.ch.sock.as_raw_fd(), l.worker, l.seq, l.ch.export()))
                .collect();
            let stdins: Vec<(i32, RawFd)> =
                e.stdins.iter().map(|(p, w)| (*p, w.as_raw_fd())).collect();
            fds.extend(pipes.iter().map(|p| p.2));
            for l in &links {
                fds.push(l.1);
                fds.extend(l.4.fds());
            }
            fds.extend(stdins.iter().map(|s| s.1));
            apps.push(AppState {
                app,
                journal,
                machine: m.clone(),
                pm_uptime: e.pm_uptime,
                monit: e.monit.clone(),
                line_out: e.line_out.clone(),
                line_err: e.line_err.clone(),
                last_pid: e.last_pid,
                manual: e.manual,
                recovering: e.recovering,
                stop_requested: e.stop_requested,
                restart_reason: e.rare().restart_reason.clone(),
                notify_status: e.rare().notify_status.clone(),
                node_version: e.rare().node_version.clone(),
                starttimes: e.starttimes.clone(),
                cron_at: e.rare().cron_at,
                cron_fired: e.rare().cron_fired,
                watch_at: e.rare().watch_at,
                pipes,
                links,
                stdins,
            });
        }
        let listeners: Vec<(String, Vec<(listen::Addr, RawFd)>)> = self
            .listeners
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.iter()
                        .map(|(a, fd)| (a.clone(), fd.as_raw_fd()))
                        .collect(),
                )
            })
            .collect();
        for (_, v) in &listeners {
            fds.extend(v.iter().map(|(_, fd)| *fd));
        }
        let execs: Vec<ExecState> = self
            .execs
            .values()
            .map(|x| ExecState {
                pm_id: x.pm_id,
                pid: x.pending.pid,
                status: x.pending.status.as_raw_fd(),
                path: x.pending.path.clone(),
                cwd: x.pending.cwd.clone(),
            })
            .collect();
        fds.extend(execs.iter().map(|x| x.status));
        let conns: Vec<ConnState> = self
            .conns
            .iter_mut()
            .map(|(w, c)| ConnState {
                token: w.0,
                fd: c.sock.as_raw_fd(),
                rbuf: c.rbuf.clone(),
                wbuf: c.wbuf.clone(),
                waiting: c.waiting,
                read_closed: c.read_closed,
                sub: c.sub.take(),
            })
            .collect();
        fds.extend(conns.iter().map(|c| c.fd));
        let cluster = self.cluster.export();
        fds.extend(cluster.0.iter().map(|s| s.fd));
        let requester = self.conns.contains_key(&t).then(|| (t.0, req_id.clone()));
        let state = State {
            now: self.now(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            lock: self._lock.as_raw_fd(),
            listener: self.listener.as_raw_fd(),
            notify,
            detached: self.detached,
            next_worker: self.next_worker,
            cgroup_next: self.cgroups.as_ref().map_or(0, |c| c.next()),
            envs: envs.iter().map(|e| (**e).clone()).collect(),
            apps,
            listeners,
            proc_cgroups: self.proc_cgroups.all(),
            execs,
            cluster,
            pending: std::mem::take(&mut self.pending),
            reloads: std::mem::take(&mut self.reloads),
            conns,
            orphans: std::mem::take(&mut self.orphans),
            requester,
            began,
        };
        (state, fds)
    }

    /// The new image: take over what the old one handed over.
    pub(super) fn adopt(&mut self, s: State) {
        let now = Instant::now();
        self.clock = now.checked_sub(Duration::from_millis(s.now)).unwrap_or(now);
        self.started = now
            .checked_sub(Duration::from_millis(s.uptime_ms))
            .unwrap_or(now);
        self.detached = s.detached;
        self.next_worker = s.next_worker;
        if let Some(c) = self.cgroups.as_mut() {
            c.set_next(s.cgroup_next);
        }
        for (pid, dir) in s.proc_cgroups {
            self.proc_cgroups.insert(pid, dir);
        }
        for (key, socks) in s.listeners {
            let socks = socks
                .into_iter()
                // SAFETY: the old image handed this fd over; nothing else
                // in this image owns it.
                .map(|(a, fd)| (a, unsafe { OwnedFd::from_raw_fd(fd) }))
                .collect();
            self.listeners.insert(key, socks);
        }
        let (shared, leaving) = s.cluster;
        let shared = shared
            .into_iter()
            .map(|x| {
                // SAFETY: handed over by the old image, owned here alone.
                let fd = unsafe { OwnedFd::from_raw_fd(x.fd) };
                (x, fd)
            })
            .collect();
        self.cluster.import(shared, leaving);
        let envs: Vec<Rc<BTreeMap<String, String>>> = s.envs.into_iter().map(Rc::new).collect();
        let mut count = 0;
        let mut lost = Vec::new();
        crate::app::with_program_cache(|| {
            for a in s.apps {
                let (name, pm_id) = match (&a.app, &a.journal) {
                    (Some(h), _) => (h.name.clone(), h.pm_id),
                    (None, Some(j)) => (j.saved.name.clone(), j.saved.pm_id),
                    (None, None) => ("?".into(), 0),
                };
                let pids = a.machine.pids();
                match self.adopt_app(a, &envs) {
                    Ok(()) => count += 1,
                    Err(e) => {
                        // Nothing runs unsupervised: its processes (this
                        // daemon's children, reaped as any) are killed.
                        for &pid in &pids {
                            sys::send(pid, sys::Signal::KILL, true);
                        }
                        self.log(&format!(
                            "update: {name} ({pm_id}) could not be taken over, its processes {pids:?} killed: {}",
                            e.message
                        ));
                        lost.push(format!("{name} ({pm_id}): {}", e.message));
                    }
                }
            }
        });
        for x in s.execs {
            // SAFETY: handed over by the old image, owned here alone.
            let status = unsafe { OwnedFd::from_raw_fd(x.status) };
            let t = self.token();
            let fd = status.as_raw_fd();
            if self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), t, Interest::READABLE)
                .is_ok()
            {
                self.execs.insert(
                    t,
                    Exec {
                        pm_id: x.pm_id,
                        pending: Pending {
                            pid: x.pid,
                            status,
                            path: x.path,
                            cwd: x.cwd,
                            held: None,
                        },
                    },
                );
            }
        }
        let mut tokens = HashMap::new();
        for c in s.conns {
            // SAFETY: a client connection handed over; owned here alone.
            let sock = unsafe { StdStream::from_raw_fd(c.fd) };
            let _ = sock.set_nonblocking(true);
            let mut sock = UnixStream::from_std(sock);
            let t = self.token();
            if self
                .poll
                .registry()
                .register(&mut sock, t, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            tokens.insert(c.token, t);
            if c.sub.is_some() {
                self.subscribers += 1;
            }
            self.conns.insert(
                t,
                Conn {
                    sock,
                    rbuf: c.rbuf,
                    wbuf: c.wbuf,
                    skipping: false,
                    waiting: c.waiting,
                    read_closed: c.read_closed,
                    sub: c.sub,
                    reserve: false,
                    deadline: None,
                },
            );
        }
        let remap = |t: Token| tokens.get(&t.0).copied().unwrap_or(NOBODY);
        for mut p in s.pending {
            p.conn = remap(p.conn);
            self.pending.push(p);
        }
        for mut r in s.reloads {
            r.conn = remap(r.conn);
            self.reloads.push(r);
        }
        self.orphans = s.orphans;
        if !self.orphans.is_empty() {
            let at = self.now();
            self.timers.arm(at, Timer::Orphans);
        }
        // Children that ended during the exec: reaped in the first wake.
        self.reap_due = true;
        let took = wall_ms().saturating_sub(s.began);
        self.log(&format!(
            "update: daemon {} took over {count} apps in {took} ms",
            env!("CARGO_PKG_VERSION")
        ));
        if let Some((old, id)) = s.requester
            && let Some(&t) = tokens.get(&old)
        {
            let warnings: Vec<String> = lost
                .iter()
                .map(|l| format!("not taken over, its processes killed: {l}"))
                .collect();
            let line = protocol::ok_line(
                &id,
                json!({
                    "updated": true,
                    "pid": std::process::id(),
                    "version": env!("CARGO_PKG_VERSION"),
                    "apps": count,
                    "took_ms": took,
                })
                .to_string(),
                &warnings,
            );
            self.answer(t, line);
        }
    }

    /// An app as the old image resolved it: its options parsed again,
    /// what was looked up taken as it is.
    fn resolve_handed(
        &self,
        h: Handed,
        base_env: Option<Rc<BTreeMap<String, String>>>,
    ) -> Result<App, WireError> {
        let mut spec = parse_app(&h.options.value())
            .map_err(|err| WireError::new(ErrorCode::InvalidOption, err.to_string()))?
            .spec;
        // Its name as the table knew it, even if derived from the script.
        spec.name = h.name;
        let slot = Slot {
            pm_id: h.pm_id,
            instance: h.instance,
            count: h.instances.max(1),
            cluster: h.cluster,
        };
        let found = Found {
            cwd: PathBuf::from(h.cwd),
            exec_path: PathBuf::from(h.exec),
            interpreter: h.interpreter.map(PathBuf::from),
            shell: h.shell,
            creds: h.creds,
        };
        App::from_found(
            spec, h.options, slot, &self.home, base_env, h.env_name, found,
        )
    }

    /// One app of the old image back in the table, its fds registered.
    fn adopt_app(
        &mut self,
        a: AppState,
        envs: &[Rc<BTreeMap<String, String>>],
    ) -> Result<(), WireError> {
        // Every fd owned at once, so none leaks whatever fails below.
        // SAFETY (all three): handed over by the old image; owned here alone.
        let pipes: Vec<(i32, bool, OwnedFd)> = a
            .pipes
            .iter()
            .map(|&(p, err, fd)| (p, err, unsafe { OwnedFd::from_raw_fd(fd) }))
            .collect();
        // SAFETY: as above.
        let links: Vec<(i32, StdStream, u32, u64, ChannelState)> = a
            .links
            .into_iter()
            .map(|(p, fd, w, seq, st)| (p, unsafe { StdStream::from_raw_fd(fd) }, w, seq, st))
            .collect();
        // SAFETY: as above.
        let stdins: Vec<(i32, OwnedFd)> = a
            .stdins
            .iter()
            .map(|&(p, fd)| (p, unsafe { OwnedFd::from_raw_fd(fd) }))
            .collect();
        let (id, created_at, app) = match (a.app, a.journal) {
            (Some(h), _) => {
                let base_env = h.base_env.and_then(|i| envs.get(i)).cloned();
                (h.pm_id, h.created_at, self.resolve_handed(h, base_env)?)
            }
            (None, Some(j)) => {
                let base_env = j.base_env.and_then(|i| envs.get(i)).cloned();
                let id = j.saved.pm_id;
                (
                    id,
                    j.created_at,
                    self.resolve_saved(id, j.saved, base_env)?.0,
                )
            }
            (None, None) => return Err(internal("the hand-over names no app")),
        };
        let logs = unopened_logs(&app, &self.home, self.log_defaults)?;
        self.install(id, false, app, logs, false)?;
        let wanted = a.machine.wanted();
        let deadlines = a.machine.deadlines();
        self.table.adopt(id, a.machine);
        let (cwd, owner) = match self.table.get_mut(id) {
            Some(entry) => {
                entry.created_at = created_at;
                entry.pm_uptime = a.pm_uptime;
                entry.monit = a.monit;
                entry.line_out = a.line_out;
                entry.line_err = a.line_err;
                entry.last_pid = a.last_pid;
                entry.manual = a.manual;
                entry.recovering = a.recovering;
                entry.stop_requested = a.stop_requested;
                entry.set_rare(Rare {
                    restart_reason: a.restart_reason,
                    notify_status: a.notify_status,
                    node_version: a.node_version,
                    cron_at: a.cron_at,
                    cron_fired: a.cron_fired,
                    watch_at: a.watch_at,
                    ..Rare::default()
                });
                entry.starttimes = a.starttimes;
                entry.stdins = stdins;
                (
                    entry.app.cwd.clone(),
                    entry
                        .app
                        .creds
                        .as_ref()
                        .and_then(|c| c.uid.map(|u| (u, c.gid))),
                )
            }
            None => return Err(internal("vanished")),
        };
        for (pid, at) in deadlines {
            let timer = match pid {
                Some(pid) => Timer::Proc(id, pid),
                None => Timer::App(id),
            };
            self.timers.arm(at, timer);
        }
        if let Some(at) = a.cron_at {
            self.timers.arm(at, Timer::Cron(id));
        }
        if let Some(at) = a.watch_at {
            self.timers.arm(at, Timer::Watch(id));
        }
        for (pid, err, fd) in pipes {
            let mut rx = Receiver::from(fd);
            let t = self.token();
            self.poll
                .registry()
                .register(&mut rx, t, Interest::READABLE)
                .map_err(|e| internal(&format!("cannot watch an output pipe: {e}")))?;
            let stream = if err { Stream::Err } else { Stream::Out };
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
        for (pid, sock, worker, seq, st) in links {
            // Already non-blocking: the flag is the open file's, which
            // execve keeps.
            let mut sock = UnixStream::from_std(sock);
            let t = self.token();
            self.poll
                .registry()
                .register(&mut sock, t, Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| internal(&format!("cannot watch an IPC channel: {e}")))?;
            self.channels.insert(t, (id, pid));
            if worker > 0 {
                self.cluster.register(worker, &cwd, owner);
            }
            if let Some(entry) = self.table.get_mut(id) {
                entry.links.push(Link {
                    pid,
                    token: t,
                    ch: Channel::import(sock, st),
                    worker,
                    seq,
                });
            }
        }
        if wanted == Wanted::Up
            && let Err(e) = self.watch_app(id)
        {
            self.log(&format!("update: app {id}: {}", e.message));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One app as the image before `Handed` wrote it (the journal's form,
    /// every field written).
    const OLDER: &str = r#"{"journal":{"name":"s0","pm_id":0,"namespace":"default","instance":0,"instances":1,"wanted":"online","options":{"args":["100000"],"cwd":"/tmp","error_file":"/dev/null","interpreter":"none","name":"s0","out_file":"/dev/null","script":"/bin/sleep"},"restart_time":0,"unstable_restarts":0,"created_at":1796293834289,"base_env":0,"processes":[]},"machine":{"wanted":"Up","restart_time":0,"unstable_restarts":0,"crashes":0,"last_exit":null,"prev_restart_delay":0,"rest":"Stopped","main":{"pid":1431,"since":105,"group":true,"launch":"Now","phase":"Online"},"candidate":null,"must_signal":false,"graceful":false,"drains":[],"forget_when_quiet":false},"pm_uptime":1796293834289,"monit":{"memory":1622016,"cpu":0.0},"last_pid":1431,"manual":false,"recovering":false,"stop_requested":false,"restart_reason":null,"notify_status":null,"node_version":null,"starttimes":[[1431,1051365]],"cron_at":null,"cron_fired":null,"watch_at":null,"line_out":[],"line_err":[],"pipes":[],"links":[[1431,16,0,0,{"rbuf":[],"skipping":false,"closed":false,"queue":[],"unacked":null}]],"stdins":[[1431,13]]}"#;

    #[test]
    fn an_app_of_an_older_image_is_still_read() {
        let a: AppState = serde_json::from_str(OLDER).unwrap();
        assert!(a.app.is_none());
        let j = a.journal.as_ref().unwrap();
        assert_eq!(
            (j.saved.name.as_str(), j.saved.pm_id, j.base_env),
            ("s0", 0, Some(0))
        );
        assert_eq!(a.machine.wanted(), Wanted::Up);
        assert_eq!(a.machine.pids(), vec![1431]);
        assert_eq!(a.links.len(), 1);
        assert_eq!(a.stdins, vec![(1431, 13)]);
        assert_eq!(a.starttimes, vec![(1431, 1051365)]);
    }

    #[test]
    fn an_app_goes_resolved_and_only_what_is_not_default() {
        let older: AppState = serde_json::from_str(OLDER).unwrap();
        let options = json!({"script": "/bin/sleep", "args": ["1"], "name": "s0"});
        let a = AppState {
            app: Some(Handed {
                pm_id: 7,
                name: "s0".into(),
                options: Given::new(&options),
                instance: 1,
                instances: 2,
                cluster: false,
                env_name: Some("production".into()),
                base_env: None,
                created_at: 5,
                cwd: "/srv".into(),
                exec: "/bin/sleep".into(),
                interpreter: None,
                shell: false,
                creds: None,
            }),
            journal: None,
            ..older
        };
        let text = serde_json::to_string(&a).unwrap();
        for left_out in [
            "journal",
            "\"shell\"",
            "\"cluster\"",
            "base_env",
            "recovering",
            "restart_reason",
            "line_out",
            "pipes",
            "candidate",
            "drains",
            "unacked",
        ] {
            assert!(!text.contains(left_out), "{left_out} in {text}");
        }
        // The options go as they were given, not re-encoded as a string.
        assert!(
            text.contains(r#""options":{"args":["1"],"name":"s0","script":"/bin/sleep"}"#),
            "{text}"
        );
        let back: AppState = serde_json::from_str(&text).unwrap();
        let h = back.app.unwrap();
        assert_eq!(h.options.value(), options);
        assert_eq!(
            (
                h.pm_id,
                h.instance,
                h.instances,
                h.env_name.as_deref(),
                h.cwd.as_str()
            ),
            (7, 1, 2, Some("production"), "/srv")
        );
        assert_eq!(back.machine, a.machine);
        assert_eq!(back.links.len(), 1);
    }
}
