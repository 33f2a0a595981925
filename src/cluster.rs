//! Cluster mode: the daemon's part as the Node cluster *primary*, spoken on
//! each worker's IPC channel (Node's cluster protocol: the man page's CLUSTER MODE AND RELOAD). This module owns the
//! listening sockets of cluster-mode apps: one per Node server key, bound once
//! and handed to every worker that asks (the "shared handle" style), and closed
//! when no worker holds it any more. It decides what to answer to each
//! `{"cmd":"NODE_CLUSTER",…}` message; sending the answers (and the fd that
//! rides on the same `sendmsg`) is the channel's job. `NODE_HANDLE_ACK` /
//! `NODE_HANDLE_NACK` are the channel's business too, not this module's.
//!
//! Decisions worth knowing:
//! - UDP (`addressType` `"udp4"`/`"udp6"`) and `listen({fd})` are refused with
//!   `errno: -ENOTSUP`, so the app gets a `bind ENOTSUP` error instead of
//!   waiting forever for an answer.
//! - A unix socket file this module bound is unlinked when its socket closes,
//!   as libuv does for the pipe Node's primary bound — but only if the path
//!   still names the very socket we bound (same device and inode). A file that
//!   is already there is not removed first: the bind fails with `EADDRINUSE`,
//!   as in Node.
//! - Keys are global, like PM2's (one primary for every app): two cluster apps
//!   that listen on the same key share one socket.
//! - An error reply echoes the worker's own `data` (Node does the same; an
//!   https worker reads `data.ticketKeys` before it looks at `errno`).
//! - The daemon binds for the app, possibly as root: for a worker registered
//!   with a non-root owner, ports below `ip_unprivileged_port_start` are
//!   refused with `-EACCES` and socket files are chowned to that owner.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr, sockopt};
use serde_json::{Value, json};

use crate::sys::syscall;

/// The backlog used when the app asks for none (Node's own default).
pub const DEFAULT_BACKLOG: i32 = 511;
/// The largest backlog passed to `listen` (the kernel caps it anyway).
pub const MAX_BACKLOG: i32 = libc::SOMAXCONN;
/// Node's `TCPConstants.UV_TCP_IPV6ONLY` bit in a queryServer's `flags`.
const FLAG_IPV6_ONLY: u64 = 1;
/// The errno (made negative on the wire) for servers this module cannot share.
const UNSUPPORTED: Errno = Errno::ENOTSUP;
/// The first port an unprivileged user may bind, when procfs does not say.
const DEFAULT_UNPRIVILEGED_PORT_START: u16 = 1024;
/// Where the kernel says which ports are privileged.
const UNPRIVILEGED_PORT_START_FILE: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
/// The largest TCP port.
const MAX_PORT: i64 = 65535;

/// What the daemon must send to a worker: a JSON line, possibly with an fd
/// riding on the same `sendmsg` (SCM_RIGHTS).
#[derive(Debug)]
pub struct Outbound {
    pub msg: Value,
    /// Borrowed from the `Cluster`: valid only until the next `handle` or
    /// `forget` call (which may close it). A channel that cannot send at once
    /// must copy it before then (`Channel::send_handle` does).
    pub fd: Option<RawFd>,
}

impl Outbound {
    /// A close-on-exec copy of the fd, to look at the socket.
    #[cfg(test)]
    pub fn dup_fd(&self) -> Result<Option<OwnedFd>, String> {
        let Some(fd) = self.fd else {
            return Ok(None);
        };
        // SAFETY: `fd` is one of the Cluster's open sockets; the caller uses
        // this before any call that could close it (see `Outbound::fd`).
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        borrowed
            .try_clone_to_owned()
            .map(Some)
            .map_err(|e| format!("cannot duplicate listening socket fd {fd}: {e}"))
    }
}

/// One shared socket as a daemon hands it to its new image.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SharedState {
    pub id: String,
    pub key: String,
    pub fd: RawFd,
    pub data: Value,
    pub holders: Vec<u32>,
    /// The socket file it bound: path, device, inode.
    pub path: Option<(PathBuf, u64, u64)>,
}

/// What a worker's message means for the app's state.
#[derive(Debug, PartialEq)]
pub enum WorkerEvent {
    /// The worker booted (`act:"online"`).
    Online,
    /// A server of the worker is listening (`act:"listening"`): ready.
    Listening,
    /// The worker asked to leave (`cluster.worker.disconnect()`/`.kill()`).
    ExitedAfterDisconnect,
}

/// Where a socket file was bound, to unlink it only while it is still ours.
#[derive(Debug)]
struct BoundPath {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundPath {
    fn record(path: &Path) -> Option<BoundPath> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(BoundPath {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for BoundPath {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            // Nothing to report to: the socket is gone either way.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One listening socket and the workers holding it.
#[derive(Debug)]
struct Shared {
    /// Node's key, as the workers know it.
    key: String,
    /// Declared before `path` so the socket closes before its file goes.
    fd: OwnedFd,
    /// The first worker's non-empty `data`, echoed to every worker.
    data: Value,
    holders: BTreeSet<u32>,
    #[allow(dead_code)] // held for its Drop
    path: Option<BoundPath>,
}

/// What the daemon knows about one worker.
#[derive(Debug, Default)]
struct Worker {
    cwd: Option<PathBuf>,
    owner: Option<(u32, u32)>,
    /// It sent `exitedAfterDisconnect`: its queryServers are ignored, as Node's.
    leaving: bool,
}

/// One address to try binding a TCP server to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TcpCandidate {
    pub addr: SocketAddr,
    /// The value set for IPV6_V6ONLY (IPv6 only).
    pub v6only: bool,
}

/// A unix socket name.
#[derive(Clone, Debug, PartialEq)]
enum UnixName {
    Path(PathBuf),
    /// Linux's abstract namespace (a name starting with NUL), without the NUL.
    Abstract(Vec<u8>),
}

/// What a queryServer asks to be bound.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    /// Addresses to try in order; the first that binds wins.
    Tcp(Vec<TcpCandidate>),
    Unix(UnixName),
}

/// The listening sockets of cluster-mode apps, bound once per key and shared
/// by the workers that asked.
///
/// Workers are named by a `u32` the caller picks. `pm_id` works as long as one
/// pm_id never names two live processes at once; if a rolling reload runs the
/// old and the new process under one pm_id, pass a per-process serial instead,
/// or the old one's `close` releases the new one's hold.
#[derive(Debug, Default)]
pub struct Cluster {
    /// By internal id: the key, plus the resolved path for unix sockets.
    shared: HashMap<String, Shared>,
    workers: HashMap<u32, Worker>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Whether a channel message belongs to the cluster protocol
    /// (`{"cmd":"NODE_CLUSTER",…}`). `NODE_HANDLE_ACK`/`NACK` are not: they
    /// are the channel's business.
    pub fn is_cluster_message(v: &Value) -> bool {
        v.get("cmd").and_then(Value::as_str) == Some("NODE_CLUSTER")
    }

    /// Tell the module about a worker before it starts: its working directory
    /// (relative unix socket paths are bound there, since the daemon's own
    /// cwd is not the app's) and, if it runs as another user, that user's
    /// `(uid, gid)` (socket files are chowned to it, and ports below
    /// `ip_unprivileged_port_start` are refused with `-EACCES` for non-root).
    /// Optional: without it, relative paths are refused with `-EINVAL`.
    pub fn register(&mut self, worker: u32, cwd: &Path, owner: Option<(u32, u32)>) {
        let w = self.workers.entry(worker).or_default();
        w.cwd = Some(cwd.to_path_buf());
        w.owner = owner;
    }

    /// Handle one NODE_CLUSTER message from `worker`: the replies to send, in
    /// order, and what it means. `seq` is the daemon's message counter towards
    /// this worker; it is incremented for every message produced.
    pub fn handle(
        &mut self,
        worker: u32,
        msg: &Value,
        seq: &mut u64,
    ) -> (Vec<Outbound>, Option<WorkerEvent>) {
        if !Cluster::is_cluster_message(msg) {
            return (Vec::new(), None);
        }
        match msg.get("act").and_then(Value::as_str) {
            Some("online") => (Vec::new(), Some(WorkerEvent::Online)),
            Some("listening") => (Vec::new(), Some(WorkerEvent::Listening)),
            Some("queryServer") => (self.query_server(worker, msg, seq), None),
            Some("close") => {
                if let Some(key) = msg.get("key").and_then(Value::as_str) {
                    self.release(worker, Some(key));
                }
                (Vec::new(), None)
            }
            Some("exitedAfterDisconnect") => {
                self.workers.entry(worker).or_default().leaving = true;
                let reply = json!({
                    "cmd": "NODE_CLUSTER",
                    "ack": their_seq(msg),
                    "seq": next(seq),
                });
                (
                    vec![Outbound {
                        msg: reply,
                        fd: None,
                    }],
                    Some(WorkerEvent::ExitedAfterDisconnect),
                )
            }
            _ => (Vec::new(), None),
        }
    }

    /// The graceful-drain message for a rolling reload or a stop.
    pub fn disconnect(seq: &mut u64) -> Value {
        json!({"cmd": "NODE_CLUSTER", "act": "disconnect", "seq": next(seq)})
    }

    /// `worker` is gone (exited): release every key it held, closing the
    /// sockets nobody holds, and forget what `register` said about it.
    pub fn forget(&mut self, worker: u32) {
        self.release(worker, None);
        self.workers.remove(&worker);
    }

    /// What a new image of the daemon needs (`corral update`): each shared
    /// socket with its fd number (kept open here) and each worker that is
    /// leaving. Where and as whom workers run is registered again from the
    /// apps.
    pub fn export(&self) -> (Vec<SharedState>, Vec<u32>) {
        let shared = self
            .shared
            .iter()
            .map(|(id, s)| SharedState {
                id: id.clone(),
                key: s.key.clone(),
                fd: s.fd.as_raw_fd(),
                data: s.data.clone(),
                holders: s.holders.iter().copied().collect(),
                path: s.path.as_ref().map(|p| (p.path.clone(), p.dev, p.ino)),
            })
            .collect();
        let leaving = self
            .workers
            .iter()
            .filter(|(_, w)| w.leaving)
            .map(|(id, _)| *id)
            .collect();
        (shared, leaving)
    }

    /// Take back what `export` gave, in the new image; `fd` is each
    /// socket's fd, now owned here.
    pub fn import(&mut self, shared: Vec<(SharedState, OwnedFd)>, leaving: Vec<u32>) {
        for (s, fd) in shared {
            self.shared.insert(
                s.id,
                Shared {
                    key: s.key,
                    fd,
                    data: s.data,
                    holders: s.holders.into_iter().collect(),
                    path: s.path.map(|(path, dev, ino)| BoundPath { path, dev, ino }),
                },
            );
        }
        for w in leaving {
            self.workers.entry(w).or_default().leaving = true;
        }
    }

    /// How many sockets are open.
    #[cfg(test)]
    pub fn open_sockets(&self) -> usize {
        self.shared.len()
    }

    fn query_server(&mut self, worker: u32, msg: &Value, seq: &mut u64) -> Vec<Outbound> {
        let info = self.workers.get(&worker);
        if info.is_some_and(|w| w.leaving) {
            return Vec::new();
        }
        let cwd = info.and_then(|w| w.cwd.clone());
        let owner = info.and_then(|w| w.owner);
        let key = node_key(msg);
        let reply = match self.acquire(worker, &key, msg, cwd.as_deref(), owner) {
            Ok((fd, data)) => Outbound {
                msg: json!({
                    "cmd": "NODE_HANDLE",
                    "type": "net.Native",
                    "msg": {
                        "cmd": "NODE_CLUSTER",
                        "errno": 0,
                        "key": key,
                        "ack": their_seq(msg),
                        "data": data,
                        "seq": next(seq),
                    },
                }),
                fd: Some(fd),
            },
            // Node echoes the data even on an error, and https workers read
            // `data.ticketKeys` before they look at errno: never send null
            // when the worker sent something.
            Err(errno) => Outbound {
                msg: json!({
                    "cmd": "NODE_CLUSTER",
                    "errno": -(errno as i32),
                    "key": key,
                    "ack": their_seq(msg),
                    "data": msg.get("data").cloned().unwrap_or(Value::Null),
                    "seq": next(seq),
                }),
                fd: None,
            },
        };
        vec![reply]
    }

    /// The socket for `key` (bound now if nobody holds it), held by `worker`.
    fn acquire(
        &mut self,
        worker: u32,
        key: &str,
        msg: &Value,
        cwd: Option<&Path>,
        owner: Option<(u32, u32)>,
    ) -> Result<(RawFd, Value), Errno> {
        let target = target(msg, cwd)?;
        if let Some((uid, _)) = owner {
            check_privilege(&target, uid, unprivileged_port_start())?;
        }
        let id = match &target {
            Target::Unix(UnixName::Path(p)) => format!("{key}\n{}", p.display()),
            _ => key.to_string(),
        };
        let data = msg.get("data").cloned().unwrap_or(Value::Null);
        if let Some(shared) = self.shared.get_mut(&id) {
            if is_falsy(&shared.data) {
                shared.data = data;
            }
            shared.holders.insert(worker);
            return Ok((shared.fd.as_raw_fd(), shared.data.clone()));
        }
        let (fd, path) = bind_target(&target, backlog(msg), owner)?;
        let raw = fd.as_raw_fd();
        self.shared.insert(
            id,
            Shared {
                key: key.to_string(),
                fd,
                data: data.clone(),
                holders: BTreeSet::from([worker]),
                path,
            },
        );
        Ok((raw, data))
    }

    /// Drop `worker`'s hold on `key` (every key if None); close what nobody holds.
    fn release(&mut self, worker: u32, key: Option<&str>) {
        self.shared.retain(|_, shared| {
            if key.is_none_or(|k| k == shared.key) {
                shared.holders.remove(&worker);
            }
            !shared.holders.is_empty()
        });
    }
}

/// The daemon's next `seq` towards a worker.
fn next(seq: &mut u64) -> u64 {
    let s = *seq;
    *seq += 1;
    s
}

/// The `ack` for a message: its `seq`, as sent.
fn their_seq(msg: &Value) -> Value {
    msg.get("seq").cloned().unwrap_or(Value::Null)
}

/// Node's key: `${address}:${port}:${addressType}:${fd}:${index}`.
fn node_key(msg: &Value) -> String {
    ["address", "port", "addressType", "fd", "index"]
        .iter()
        .map(|field| js_string(msg.get(*field)))
        .collect::<Vec<_>>()
        .join(":")
}

/// What JavaScript's template literals print for a JSON value (None is a
/// missing field: `undefined`).
fn js_string(v: Option<&Value>) -> String {
    match v {
        None => "undefined".to_string(),
        Some(Value::Null) => "null".to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                other => js_string(Some(other)),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(_)) => "[object Object]".to_string(),
    }
}

/// JavaScript's falsiness, for "the first worker's data".
fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// The backlog to listen with: the app's, or Node's default for 0/none.
fn backlog(msg: &Value) -> i32 {
    match msg.get("backlog").and_then(Value::as_i64) {
        Some(b) if b > 0 => i32::try_from(b.min(i64::from(MAX_BACKLOG))).unwrap_or(MAX_BACKLOG),
        _ => DEFAULT_BACKLOG,
    }
}

/// The addresses Node's primary tries for a TCP server: `::` (dual stack
/// unless ipv6Only) then `0.0.0.0` for no address, else the address itself.
pub fn tcp_candidates(
    address: Option<&str>,
    port: u16,
    ipv6_only: bool,
) -> Result<Vec<TcpCandidate>, Errno> {
    match address {
        None | Some("") => Ok(vec![
            TcpCandidate {
                addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
                v6only: ipv6_only,
            },
            TcpCandidate {
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                v6only: false,
            },
        ]),
        Some(text) => {
            let ip: IpAddr = text.parse().map_err(|_| Errno::EINVAL)?;
            Ok(vec![TcpCandidate {
                addr: SocketAddr::new(ip, port),
                v6only: ip.is_ipv6() && ipv6_only,
            }])
        }
    }
}

/// What a queryServer asks for, or the errno to refuse it with.
fn target(msg: &Value, cwd: Option<&Path>) -> Result<Target, Errno> {
    if msg
        .get("fd")
        .and_then(Value::as_i64)
        .is_some_and(|fd| fd >= 0)
    {
        // listen({fd}): a number in the worker's fd table, not ours.
        return Err(UNSUPPORTED);
    }
    let address = msg.get("address");
    match msg.get("addressType") {
        Some(Value::String(t)) if t == "udp4" || t == "udp6" => Err(UNSUPPORTED),
        Some(t) if t.as_i64() == Some(-1) => {
            let Some(Value::String(path)) = address else {
                return Err(Errno::EINVAL);
            };
            unix_name(path, cwd).map(Target::Unix)
        }
        Some(t) if t.as_i64() == Some(4) || t.as_i64() == Some(6) => {
            let port = msg
                .get("port")
                .and_then(Value::as_i64)
                .filter(|p| (0..=MAX_PORT).contains(p))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(Errno::EINVAL)?;
            let address = match address {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(_) => return Err(Errno::EINVAL),
            };
            let flags = msg.get("flags").and_then(Value::as_u64).unwrap_or(0);
            tcp_candidates(address, port, flags & FLAG_IPV6_ONLY != 0).map(Target::Tcp)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// A unix socket name: abstract, absolute, or relative to the worker's cwd.
fn unix_name(path: &str, cwd: Option<&Path>) -> Result<UnixName, Errno> {
    if let Some(name) = path.strip_prefix('\0') {
        return Ok(UnixName::Abstract(name.as_bytes().to_vec()));
    }
    if path.is_empty() {
        return Err(Errno::EINVAL);
    }
    let p = Path::new(path);
    if p.is_absolute() {
        Ok(UnixName::Path(p.to_path_buf()))
    } else {
        cwd.map(|c| UnixName::Path(c.join(p))).ok_or(Errno::EINVAL)
    }
}

/// The first port a non-root user may bind.
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string(UNPRIVILEGED_PORT_START_FILE)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_UNPRIVILEGED_PORT_START)
}

/// Refuse what the worker's user could not bind itself: a privileged port.
fn check_privilege(target: &Target, uid: u32, first_free: u16) -> Result<(), Errno> {
    if uid == 0 {
        return Ok(());
    }
    match target {
        Target::Tcp(candidates)
            if candidates
                .iter()
                .any(|c| c.addr.port() != 0 && c.addr.port() < first_free) =>
        {
            Err(Errno::EACCES)
        }
        _ => Ok(()),
    }
}

/// Bind and listen: a non-blocking, close-on-exec listening socket.
fn bind_target(
    target: &Target,
    backlog: i32,
    owner: Option<(u32, u32)>,
) -> Result<(OwnedFd, Option<BoundPath>), Errno> {
    let backlog = Backlog::new(backlog).unwrap_or(Backlog::MAXCONN);
    match target {
        Target::Tcp(candidates) => {
            let mut last = Errno::EINVAL;
            for candidate in candidates {
                match bind_tcp(candidate, backlog) {
                    Ok(fd) => return Ok((fd, None)),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        Target::Unix(name) => bind_unix(name, backlog, owner),
    }
}

fn new_socket(family: AddressFamily) -> Result<OwnedFd, Errno> {
    socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
}

fn bind_tcp(candidate: &TcpCandidate, backlog: Backlog) -> Result<OwnedFd, Errno> {
    let family = match candidate.addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = new_socket(family)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if candidate.addr.is_ipv6() {
        set_int_option(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            libc::c_int::from(candidate.v6only),
        )?;
    }
    bind_inet(&fd, candidate.addr)?;
    socket::listen(&fd.as_fd(), backlog)?;
    Ok(fd)
}

/// `setsockopt` for an int option (nix's typed options for IP need its
/// "net" feature, which this crate does not enable).
fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> Result<(), Errno> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket; the pointer is to a live c_int whose
    // size is passed along.
    unsafe {
        syscall!(setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            len,
        ))
    }
    .map(drop)
}

/// `bind` an IPv4 or IPv6 socket address.
fn bind_inet(fd: &OwnedFd, addr: SocketAddr) -> Result<(), Errno> {
    match addr {
        SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: `sa` is a complete sockaddr_in that outlives the call,
            // and `len` is its size.
            unsafe {
                syscall!(bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    len,
                ))
            }
        }
        SocketAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            // SAFETY: `sa` is a complete sockaddr_in6 that outlives the call,
            // and `len` is its size.
            unsafe {
                syscall!(bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in6).cast(),
                    len,
                ))
            }
        }
    }
    .map(drop)
}

fn bind_unix(
    name: &UnixName,
    backlog: Backlog,
    owner: Option<(u32, u32)>,
) -> Result<(OwnedFd, Option<BoundPath>), Errno> {
    let fd = new_socket(AddressFamily::Unix)?;
    let path = match name {
        UnixName::Abstract(bytes) => {
            socket::bind(fd.as_raw_fd(), &UnixAddr::new_abstract(bytes)?)?;
            None
        }
        UnixName::Path(path) => {
            socket::bind(fd.as_raw_fd(), &UnixAddr::new(path.as_os_str().as_bytes())?)?;
            let bound = BoundPath::record(path);
            if let Some((uid, gid)) = owner {
                // On failure `bound` drops and unlinks the file we made.
                nix::unistd::chown(
                    path.as_path(),
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                )?;
            }
            bound
        }
    };
    socket::listen(&fd.as_fd(), backlog)?;
    Ok((fd, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{FdFlag, OFlag};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::FileTypeExt;

    fn query(fields: Value) -> Value {
        let mut m = json!({"cmd": "NODE_CLUSTER", "act": "queryServer"});
        if let (Some(obj), Some(extra)) = (m.as_object_mut(), fields.as_object()) {
            obj.extend(extra.clone());
        }
        m
    }

    fn local(port: u16, seq: u64) -> Value {
        query(
            json!({"index": 0, "data": null, "address": "127.0.0.1", "port": port,
                     "addressType": 4, "flags": 0, "backlog": 0, "seq": seq}),
        )
    }

    /// (device, inode) of an open fd (their widths differ between 32- and
    /// 64-bit targets).
    fn identity(fd: RawFd) -> (nix::libc::dev_t, nix::libc::ino_t) {
        // SAFETY: the test holds the Cluster that owns `fd` open meanwhile.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let st = nix::sys::stat::fstat(borrowed).unwrap();
        (st.st_dev, st.st_ino)
    }

    /// The file status flags and fd flags of `fd`, or None if it is closed.
    fn flags(fd: RawFd) -> Option<(OFlag, FdFlag)> {
        // SAFETY: fcntl with F_GETFL/F_GETFD reads flags only; a closed fd
        // yields -1 (EBADF).
        let (fl, fdfl) = unsafe {
            (
                libc::fcntl(fd, libc::F_GETFL),
                libc::fcntl(fd, libc::F_GETFD),
            )
        };
        (fl >= 0 && fdfl >= 0).then(|| {
            (
                OFlag::from_bits_truncate(fl),
                FdFlag::from_bits_truncate(fdfl),
            )
        })
    }

    fn inner(out: &Outbound) -> &Value {
        out.msg.get("msg").unwrap_or(&out.msg)
    }

    fn port_of(out: &Outbound) -> u16 {
        let copy = out.dup_fd().unwrap().unwrap();
        TcpListener::from(copy).local_addr().unwrap().port()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("corral-cluster-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn keys_are_nodes() {
        let cases = [
            (
                json!({"index":0,"data":null,"address":null,"port":3000,"addressType":4,"backlog":0,"seq":1}),
                "null:3000:4:undefined:0",
            ),
            (
                json!({"index":0,"address":"127.0.0.1","port":3000,"addressType":4,"flags":0}),
                "127.0.0.1:3000:4:undefined:0",
            ),
            (
                json!({"index":1,"address":"::1","port":0,"addressType":6}),
                "::1:0:6:undefined:1",
            ),
            (
                json!({"index":0,"address":"/tmp/app.sock","port":-1,"addressType":-1}),
                "/tmp/app.sock:-1:-1:undefined:0",
            ),
            (
                json!({"index":0,"address":"0.0.0.0","port":4000,"addressType":"udp4","fd":-1,"flags":0}),
                "0.0.0.0:4000:udp4:-1:0",
            ),
            (
                json!({}),
                "undefined:undefined:undefined:undefined:undefined",
            ),
            (
                json!({"address":null,"port":3000.0,"addressType":4,"fd":null,"index":0}),
                "null:3000:4:null:0",
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(node_key(&msg), want, "{msg}");
        }
    }

    #[test]
    fn values_print_as_in_javascript() {
        let cases = [
            (None, "undefined"),
            (Some(json!(null)), "null"),
            (Some(json!(true)), "true"),
            (Some(json!(-1)), "-1"),
            (Some(json!(1.5)), "1.5"),
            (Some(json!("x")), "x"),
            (Some(json!([1, null, "a"])), "1,,a"),
            (Some(json!({"a": 1})), "[object Object]"),
        ];
        for (v, want) in cases {
            assert_eq!(js_string(v.as_ref()), want, "{v:?}");
        }
    }

    #[test]
    fn bind_candidates() {
        let v6 = |p, only| TcpCandidate {
            addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), p),
            v6only: only,
        };
        let v4 = |ip: [u8; 4], p| TcpCandidate {
            addr: SocketAddr::from((ip, p)),
            v6only: false,
        };
        type Case<'a> = (Option<&'a str>, u16, bool, Result<Vec<TcpCandidate>, Errno>);
        let cases: Vec<Case> = vec![
            (
                None,
                3000,
                false,
                Ok(vec![v6(3000, false), v4([0; 4], 3000)]),
            ),
            (Some(""), 0, false, Ok(vec![v6(0, false), v4([0; 4], 0)])),
            (None, 80, true, Ok(vec![v6(80, true), v4([0; 4], 80)])),
            (
                Some("127.0.0.1"),
                3000,
                false,
                Ok(vec![v4([127, 0, 0, 1], 3000)]),
            ),
            (
                Some("127.0.0.1"),
                3000,
                true,
                Ok(vec![v4([127, 0, 0, 1], 3000)]),
            ),
            (
                Some("::1"),
                9,
                true,
                Ok(vec![TcpCandidate {
                    addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9),
                    v6only: true,
                }]),
            ),
            (Some("localhost"), 1, false, Err(Errno::EINVAL)),
        ];
        for (address, port, only, want) in cases {
            assert_eq!(tcp_candidates(address, port, only), want, "{address:?}");
        }
    }

    #[test]
    fn targets_and_refusals() {
        let cwd = Path::new("/srv/app");
        let tcp1 = Target::Tcp(vec![TcpCandidate {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            v6only: false,
        }]);
        let cases: Vec<(Value, Option<&Path>, Result<Target, Errno>)> = vec![
            (
                json!({"address":"127.0.0.1","port":3000,"addressType":4}),
                None,
                Ok(tcp1),
            ),
            (
                json!({"address":"0.0.0.0","port":4000,"addressType":"udp4","fd":-1}),
                None,
                Err(Errno::ENOTSUP),
            ),
            (
                json!({"address":"::","port":4000,"addressType":"udp6"}),
                None,
                Err(Errno::ENOTSUP),
            ),
            (
                json!({"address":null,"port":null,"addressType":null,"fd":3}),
                None,
                Err(Errno::ENOTSUP),
            ),
            (
                json!({"address":"127.0.0.1","port":70000,"addressType":4}),
                None,
                Err(Errno::EINVAL),
            ),
            (
                json!({"address":"127.0.0.1","port":-1,"addressType":4}),
                None,
                Err(Errno::EINVAL),
            ),
            (
                json!({"address":"127.0.0.1","addressType":4}),
                None,
                Err(Errno::EINVAL),
            ),
            (
                json!({"address":"127.0.0.1","port":1,"addressType":5}),
                None,
                Err(Errno::EINVAL),
            ),
            (
                json!({"address":"/run/a.sock","port":-1,"addressType":-1}),
                None,
                Ok(Target::Unix(UnixName::Path("/run/a.sock".into()))),
            ),
            (
                json!({"address":"a.sock","port":-1,"addressType":-1}),
                Some(cwd),
                Ok(Target::Unix(UnixName::Path("/srv/app/a.sock".into()))),
            ),
            (
                json!({"address":"a.sock","port":-1,"addressType":-1}),
                None,
                Err(Errno::EINVAL),
            ),
            (
                json!({"address":"\u{0}name","port":-1,"addressType":-1}),
                None,
                Ok(Target::Unix(UnixName::Abstract(b"name".to_vec()))),
            ),
            (
                json!({"address":null,"port":-1,"addressType":-1}),
                None,
                Err(Errno::EINVAL),
            ),
        ];
        for (msg, cwd, want) in cases {
            assert_eq!(target(&msg, cwd), want, "{msg}");
        }
    }

    #[test]
    fn privileged_ports_are_refused_to_other_users() {
        let at = |port| {
            Target::Tcp(vec![TcpCandidate {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                v6only: false,
            }])
        };
        let unix = Target::Unix(UnixName::Path("/x".into()));
        let cases = [
            (at(80), 1000, Ok(())),
            (at(80), 0, Ok(())),
            (at(80), 1000, Err(Errno::EACCES)),
            (at(0), 1000, Ok(())),
            (at(1024), 1000, Ok(())),
            (unix, 1000, Ok(())),
        ];
        let starts = [80, 1024, 1024, 1024, 1024, 1024];
        for ((t, uid, want), start) in cases.into_iter().zip(starts) {
            assert_eq!(check_privilege(&t, uid, start), want, "{t:?} uid {uid}");
        }
    }

    #[test]
    fn backlogs() {
        let cases = [
            (json!({"backlog": 0}), DEFAULT_BACKLOG),
            (json!({}), DEFAULT_BACKLOG),
            (json!({"backlog": -3}), DEFAULT_BACKLOG),
            (json!({"backlog": 64}), 64),
            (json!({"backlog": 10_000_000_000_i64}), MAX_BACKLOG),
        ];
        for (msg, want) in cases {
            assert_eq!(backlog(&msg), want, "{msg}");
        }
    }

    #[test]
    fn message_kinds() {
        let cases = [
            (
                json!({"cmd": "NODE_CLUSTER", "act": "online", "seq": 0}),
                true,
            ),
            (json!({"cmd": "NODE_HANDLE_ACK"}), false),
            (json!({"cmd": "NODE_HANDLE_NACK"}), false),
            (json!({"type": "process:msg", "data": 1}), false),
            (json!("NODE_CLUSTER"), false),
        ];
        for (v, want) in cases {
            assert_eq!(Cluster::is_cluster_message(&v), want, "{v}");
        }
        let mut seq = 4;
        assert_eq!(
            Cluster::disconnect(&mut seq),
            json!({"cmd": "NODE_CLUSTER", "act": "disconnect", "seq": 4})
        );
        assert_eq!(seq, 5);
    }

    #[test]
    fn acts_without_replies() {
        let cases = [
            (
                json!({"cmd":"NODE_CLUSTER","act":"online","seq":0}),
                Some(WorkerEvent::Online),
            ),
            (
                json!({"cmd":"NODE_CLUSTER","act":"listening","index":0,"address":null,"port":3000,"addressType":4,"seq":2}),
                Some(WorkerEvent::Listening),
            ),
            (json!({"cmd":"NODE_CLUSTER","act":"whatever","seq":3}), None),
            (
                json!({"cmd":"NODE_CLUSTER","ack":1,"accepted":true,"seq":3}),
                None,
            ),
            (
                json!({"cmd":"NODE_CLUSTER","act":"close","key":"nope","seq":4}),
                None,
            ),
            (json!({"cmd":"NODE_HANDLE_ACK"}), None),
            (json!({"act":"queryServer","seq":1}), None),
        ];
        let mut cluster = Cluster::new();
        for (msg, want) in cases {
            let mut seq = 0;
            let (out, event) = cluster.handle(1, &msg, &mut seq);
            assert!(out.is_empty(), "{msg}");
            assert_eq!(event, want, "{msg}");
            assert_eq!(seq, 0, "{msg}");
        }
        assert_eq!(cluster.open_sockets(), 0);
    }

    #[test]
    fn two_workers_share_one_socket() {
        let mut cluster = Cluster::new();
        let (mut seq1, mut seq2) = (0, 0);
        let mut q1 = local(0, 1);
        q1["data"] = json!({"ticketKeys": "ab".repeat(48)});
        let (out1, ev) = cluster.handle(1, &q1, &mut seq1);
        assert_eq!(ev, None);
        assert_eq!(out1.len(), 1);
        let mut q2 = local(0, 5);
        q2["data"] = json!({"ticketKeys": "cd".repeat(48)});
        let (out2, _) = cluster.handle(2, &q2, &mut seq2);
        assert_eq!(out2.len(), 1);
        assert_eq!((seq1, seq2), (1, 1));
        assert_eq!(cluster.open_sockets(), 1);

        let key = "127.0.0.1:0:4:undefined:0";
        for (out, ack) in [(&out1[0], 1), (&out2[0], 5)] {
            assert_eq!(out.msg["cmd"], "NODE_HANDLE");
            assert_eq!(out.msg["type"], "net.Native");
            let m = inner(out);
            assert_eq!(m["cmd"], "NODE_CLUSTER");
            assert_eq!(m["errno"], 0);
            assert_eq!(m["key"], key);
            assert_eq!(m["ack"], ack);
            assert_eq!(m["seq"], 0);
            assert_eq!(m["data"], q1["data"], "the first worker's data is echoed");
        }
        let (fd1, fd2) = (out1[0].fd.unwrap(), out2[0].fd.unwrap());
        assert_eq!(identity(fd1), identity(fd2));
        let port = port_of(&out1[0]);
        assert_ne!(port, 0);
        assert_eq!(port_of(&out2[0]), port);
        let (fl, fdfl) = flags(fd1).unwrap();
        assert!(fl.contains(OFlag::O_NONBLOCK));
        assert!(fdfl.contains(FdFlag::FD_CLOEXEC));

        // It listens: a client connects and the (dup'ed) fd accepts.
        let copy = out1[0].dup_fd().unwrap().unwrap();
        assert!(
            flags(copy.as_raw_fd())
                .unwrap()
                .1
                .contains(FdFlag::FD_CLOEXEC)
        );
        let listener = TcpListener::from(copy);
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut accepted = None;
        for _ in 0..200 {
            match listener.accept() {
                Ok(c) => {
                    accepted = Some(c);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert!(accepted.is_some());
        drop(listener);

        // Closing by one keeps it; by both closes it.
        let close = json!({"cmd":"NODE_CLUSTER","act":"close","key":key,"seq":2});
        let (out, ev) = cluster.handle(1, &close, &mut seq1);
        assert!(out.is_empty() && ev.is_none());
        assert_eq!(cluster.open_sockets(), 1);
        cluster.handle(3, &close, &mut seq1); // not a holder: no effect
        assert_eq!(cluster.open_sockets(), 1);
        cluster.handle(2, &close, &mut seq2);
        assert_eq!(cluster.open_sockets(), 0);
        assert_eq!(flags(fd1), None, "the socket is closed");
    }

    #[test]
    fn a_bind_error_is_a_negative_errno_without_fd() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut cluster = Cluster::new();
        let mut seq = 3;
        let mut q = local(port, 1);
        q["data"] = json!({"ticketKeys": "00"});
        let (out, ev) = cluster.handle(1, &q, &mut seq);
        assert_eq!(ev, None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].fd, None);
        assert_eq!(
            out[0].msg,
            json!({"cmd":"NODE_CLUSTER","errno":-(Errno::EADDRINUSE as i32),
                   "key":format!("127.0.0.1:{port}:4:undefined:0"),"ack":1,
                   "data":{"ticketKeys":"00"},"seq":3})
        );
        assert_eq!(seq, 4);
        assert_eq!(cluster.open_sockets(), 0);

        // UDP is refused the same way.
        let udp = query(
            json!({"address":"127.0.0.1","port":0,"addressType":"udp4","fd":-1,
                               "index":0,"data":null,"seq":2}),
        );
        let (out, _) = cluster.handle(1, &udp, &mut seq);
        assert_eq!(out[0].msg["errno"], -(Errno::ENOTSUP as i32));
        assert_eq!(out[0].msg["ack"], 2);
        assert_eq!(out[0].fd, None);
        drop(taken);
    }

    #[test]
    fn forget_releases_every_key() {
        let mut cluster = Cluster::new();
        let mut seq = 0;
        let mut a = local(0, 1);
        let mut b = local(0, 2);
        a["index"] = json!(0);
        b["index"] = json!(1);
        for m in [&a, &b] {
            let (out, _) = cluster.handle(7, m, &mut seq);
            assert!(out[0].fd.is_some(), "{}", out[0].msg);
        }
        cluster.handle(8, &a, &mut seq);
        assert_eq!(cluster.open_sockets(), 2);
        cluster.forget(7);
        assert_eq!(cluster.open_sockets(), 1);
        cluster.forget(8);
        assert_eq!(cluster.open_sockets(), 0);
        cluster.forget(9);
    }

    #[test]
    fn exited_after_disconnect_is_acked() {
        let mut cluster = Cluster::new();
        let mut seq = 2;
        let msg = json!({"cmd":"NODE_CLUSTER","act":"exitedAfterDisconnect","seq":4});
        let (out, ev) = cluster.handle(1, &msg, &mut seq);
        assert_eq!(ev, Some(WorkerEvent::ExitedAfterDisconnect));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].msg, json!({"cmd":"NODE_CLUSTER","ack":4,"seq":2}));
        assert_eq!(out[0].fd, None);
        assert_eq!(seq, 3);
        // A leaving worker's queryServer is ignored, as Node's primary does.
        let (out, _) = cluster.handle(1, &local(0, 5), &mut seq);
        assert!(out.is_empty());
        assert_eq!(cluster.open_sockets(), 0);
        cluster.forget(1);
        let (out, _) = cluster.handle(1, &local(0, 0), &mut seq);
        assert!(out[0].fd.is_some());
    }

    #[test]
    fn unix_sockets_are_bound_and_unlinked_when_ours() {
        let dir = temp_dir("unix");
        let mut cluster = Cluster::new();
        cluster.register(1, &dir, None);
        cluster.register(2, &dir, None);
        let q = |seq| {
            query(json!({"index":0,"data":null,"address":"app.sock","port":-1,
                         "addressType":-1,"backlog":0,"seq":seq}))
        };
        let path = dir.join("app.sock");
        let mut seq = 0;
        let (out1, _) = cluster.handle(1, &q(1), &mut seq);
        let (out2, _) = cluster.handle(2, &q(1), &mut seq);
        assert_eq!(inner(&out1[0])["key"], "app.sock:-1:-1:undefined:0");
        let (fd1, fd2) = (out1[0].fd.unwrap(), out2[0].fd.unwrap());
        assert_eq!(identity(fd1), identity(fd2));
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();

        cluster.forget(1);
        assert!(path.exists());
        cluster.forget(2);
        assert!(!path.exists(), "our socket file is removed with the socket");

        // A file already there: EADDRINUSE, and it is left alone.
        std::fs::write(&path, b"not ours").unwrap();
        cluster.register(1, &dir, None);
        let (out, _) = cluster.handle(1, &q(2), &mut seq);
        assert_eq!(out[0].msg["errno"], -(Errno::EADDRINUSE as i32));
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();

        // Replaced after binding: the new file is left alone.
        let (out, _) = cluster.handle(1, &q(3), &mut seq);
        assert!(out[0].fd.is_some());
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        cluster.forget(1);
        assert!(path.exists());

        // Without a cwd a relative path is refused.
        let (out, _) = cluster.handle(5, &q(4), &mut seq);
        assert_eq!(out[0].msg["errno"], -(Errno::EINVAL as i32));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_privileged_port_is_refused_to_a_user() {
        let mut cluster = Cluster::new();
        cluster.register(1, Path::new("/"), Some((65534, 65534)));
        let mut seq = 0;
        let (out, _) = cluster.handle(1, &local(1, 1), &mut seq);
        if unprivileged_port_start() > 1 {
            assert_eq!(out[0].msg["errno"], -(Errno::EACCES as i32));
        }
        cluster.forget(1);
        assert_eq!(cluster.open_sockets(), 0);
    }
}
