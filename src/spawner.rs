//! The spawner: a small process the daemon forks once, first thing, to
//! fork its children for it: those of a bulk start (the daemon makes the
//! next child's fds while the spawner forks), and every one where the
//! daemon cannot clone them into its own memory (`spawn::spawn_shared`:
//! another architecture, or a kernel or seccomp filter that refuses).
//!
//! Why: `fork` copies the forker's page tables and write-protects every
//! page it has written, so the forker then takes a fault on its next write
//! to each of them. The daemon writes all over its heap in every wake:
//! forking it cost it 150–350 µs per child and as much again in faults (a
//! third of its CPU in a bulk start, and most of what a restart costs above
//! a bare waitpid → fork → exec loop). The spawner is the daemon as it was
//! before it read anything and writes almost nothing: its fork is cheap,
//! and nothing faults in the daemon.
//!
//! How: the daemon sends the child's `spawn::Command` on a `SOCK_SEQPACKET`
//! pair (strings as bytes, fds as `SCM_RIGHTS`) and waits for the answer:
//! the pid (> 0), a fork error (-errno), or 0, "cannot fork for you here"
//! (clone3 and the older clone both refused), after which the daemon
//! makes its children itself. The
//! child is made with `CLONE_PARENT`: it is the daemon's child exactly as
//! if the daemon had forked it (its parent, its reaper, SIGCHLD to it), and
//! with `CLONE_PARENT_SETTID` its pid is written to a page shared with the
//! daemon before the spawner learns it, so a spawner killed between the two
//! never leaves the daemon with a child it does not know (`Spawner::spawn`).
//! A command too large for one message (a huge environment, more fds than
//! one message carries) is forked by the daemon.
//!
//! The spawner has every signal at its default and none blocked (so its
//! children have nothing to undo before `execve`), a session of its own
//! (no terminal's signals reach it), /dev/null as stdio and no other fd but
//! its socket, and ends with the daemon: `PR_SET_PDEATHSIG`, and end of
//! file on its socket, which is close-on-exec, so also when `corral update`
//! execs a new image (which starts its own). Only with glibc, as
//! `spawn::fork_into`'s clone3.

use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, socketpair,
};

use crate::spawn::{self, Cgroup, Command, Forker, Pending, SpawnError, Step};

/// The most fds one request carries (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;

/// How long the daemon waits for an answer before it ends the spawner (a
/// stopped or stuck one must not stop the daemon): far more than a fork
/// takes, even under memory pressure.
const PATIENCE_SECS: u8 = 2;

/// The spawner's answer to a request it could not read: the daemon forks
/// that one itself.
const UNREADABLE: i32 = i32::MIN;

/// Entries of the shared page: requests that may be in flight at once.
const SLOTS: u32 = 1024;

/// The most requests the daemon has sent and not read the answer of
/// (`Spawner::send`): enough to keep both busy, far from filling either
/// socket buffer (a spawner blocked on its answers while the daemon blocks
/// on a request would wait forever) or the slots.
pub const IN_FLIGHT_MAX: usize = 16;

/// The daemon's handle on its spawner.
pub struct Spawner {
    sock: OwnedFd,
    pid: i32,
    slots: Slots,
    /// The slot of the next request.
    next: u32,
    /// The slots of the requests sent and not answered yet, oldest first.
    waiting: std::collections::VecDeque<u32>,
    /// No new request goes to it (gone, or cannot fork here); those in
    /// flight are still answered.
    refused: Option<String>,
    /// Its end of file was read, or it was reaped: it is gone.
    ended: bool,
}

/// A request sent, its answer not read yet (`Spawner::receive`).
pub struct Sent {
    slot: u32,
    status: OwnedFd,
}

/// Why the daemon must fork a child itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Fallback {
    /// This one does not fit in one request.
    TooBig,
    /// The spawner is gone or cannot fork here: from now on.
    Gone(String),
}

/// Entry `slot` (`< SLOTS`, else the last) of the page at `page`.
fn at(page: *mut i32, slot: u32) -> *mut i32 {
    // SAFETY: SLOTS entries of 4 bytes lie within the page.
    unsafe { page.add(slot.min(SLOTS - 1) as usize) }
}

/// One page shared by the daemon and the spawner, where the kernel writes
/// the pid of each child the spawner makes, at the request's slot.
struct Slots(*mut i32);

impl Slots {
    fn new() -> Option<Slots> {
        // SAFETY: a new anonymous shared mapping, unmapped once by this
        // handle; the spawner's copy of the pointer (`serve`) is its own
        // mapping of the same page, which it never unmaps.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then(|| Slots(p.cast()))
    }

    fn at(&self, slot: u32) -> *mut i32 {
        at(self.0, slot)
    }

    fn get(&self, slot: u32) -> i32 {
        // SAFETY: the mapping lives as long as `self`; the kernel writes it
        // from the spawner, so it is read as volatile.
        unsafe { std::ptr::read_volatile(self.at(slot)) }
    }

    fn clear(&self, slot: u32) {
        // SAFETY: as `get`.
        unsafe { std::ptr::write_volatile(self.at(slot), 0) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Its socket closes with this handle, which ends it; a spawner
        // stuck somewhere is ended by force. Its exit is reaped as any
        // unknown child's.
        if !self.ended {
            crate::sys::send(self.pid, crate::sys::Signal::KILL, false);
        }
    }
}

impl Spawner {
    /// Fork the spawner; None where there is none to have (not glibc, or
    /// no fork), and the daemon forks its children itself. Call while the
    /// process is single-threaded and small: before the daemon reads
    /// anything.
    pub fn start() -> Option<Spawner> {
        if !cfg!(target_env = "gnu") {
            return None;
        }
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ok()?;
        let slots = Slots::new()?;
        let daemon = std::process::id() as i32;
        // Every signal blocked across the fork, so none runs a handler of
        // the daemon's in the spawner before it has reset them.
        let old = crate::rawsys::set_mask(u64::MAX);
        // SAFETY: the daemon has one thread, so the child may do anything
        // (it allocates): no lock is held by a thread that does not exist.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(ours);
            serve(theirs, slots.0, daemon)
        }
        crate::rawsys::set_mask(old);
        if pid <= 0 {
            return None;
        }
        // Both ways: an answer, and room for a request (a spawner that
        // reads none fills the socket's buffer with the requests in flight).
        // SAFETY: setsockopt with a live timeval of its size.
        unsafe {
            let patience = libc::timeval {
                tv_sec: PATIENCE_SECS.into(),
                tv_usec: 0,
            };
            for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
                libc::setsockopt(
                    ours.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&patience as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
        }
        Some(Spawner {
            sock: ours,
            pid,
            slots,
            next: 0,
            waiting: std::collections::VecDeque::new(),
            refused: None,
            ended: false,
        })
    }

    /// The daemon reaped it: its pid is no longer its own, so it is never
    /// signalled again.
    pub fn reaped(mut self) {
        self.ended = true;
    }

    /// Its pid (a child of the daemon).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Why it takes no more requests, once it does not and none is in
    /// flight: the daemon then lets it go.
    pub fn done(&self) -> Option<&str> {
        self.waiting
            .is_empty()
            .then_some(self.refused.as_deref())
            .flatten()
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    /// Fork `cmd`'s child through the spawner: what `spawn::spawn_child`
    /// says, or why the daemon must fork it itself (and then no child of
    /// it exists).
    pub fn spawn(&mut self, cmd: &Command) -> Result<Result<Pending, SpawnError>, Fallback> {
        match self.send(cmd)? {
            Ok(sent) => self.receive(sent, cmd),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Ask for `cmd`'s child without waiting for the answer, which
    /// `receive` reads (answers come in the order of the requests): the
    /// daemon prepares its next child while the spawner forks this one.
    pub fn send(&mut self, cmd: &Command) -> Result<Result<Sent, SpawnError>, Fallback> {
        if let Some(why) = &self.refused {
            return Err(Fallback::Gone(why.clone()));
        }
        let (status_r, status_w) = match spawn::status_pipe() {
            Ok(p) => p,
            Err(e) => return Ok(Err(spawn::fail(Step::Exec, e, &cmd.path))),
        };
        let slot = self.next;
        let (buf, fds) = encode(cmd, &status_w, slot);
        if fds.len() > MAX_FDS {
            return Err(Fallback::TooBig);
        }
        self.slots.clear(slot);
        let iov = [IoSlice::new(&buf)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        loop {
            match sendmsg::<UnixAddr>(
                self.sock.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::EMSGSIZE | Errno::ENOBUFS | Errno::ETOOMANYREFS) => {
                    return Err(Fallback::TooBig);
                }
                // No room in PATIENCE_SECS: it reads nothing. Ended; those
                // in flight read its end of file, then their slots.
                Err(Errno::EAGAIN) => {
                    crate::sys::send(self.pid, crate::sys::Signal::KILL, false);
                    let why = "took no request in 2 s (ended)".to_string();
                    self.refused = Some(why.clone());
                    return Err(Fallback::Gone(why));
                }
                Err(e) => {
                    let why = format!("cannot be asked: {}", e.desc());
                    self.refused = Some(why.clone());
                    return Err(Fallback::Gone(why));
                }
            }
        }
        // Only the child's copy may keep the pipe open.
        drop(status_w);
        self.next = (slot + 1) % SLOTS;
        self.waiting.push_back(slot);
        Ok(Ok(Sent {
            slot,
            status: status_r,
        }))
    }

    /// The answer to `sent`, the oldest request in flight.
    pub fn receive(
        &mut self,
        sent: Sent,
        cmd: &Command,
    ) -> Result<Result<Pending, SpawnError>, Fallback> {
        self.waiting.retain(|s| *s != sent.slot);
        let answer = match self.ended {
            true => None,
            false => self.answer(),
        };
        let Some(answer) = answer else {
            // Ended without answering: a child it made is at the slot.
            self.ended = true;
            self.refused.get_or_insert_with(|| "ended".into());
            return match self.slots.get(sent.slot) {
                pid if pid > 0 => Ok(Ok(spawn::pending(cmd, pid, sent.status))),
                _ => Err(Fallback::Gone("ended".into())),
            };
        };
        match answer {
            pid if pid > 0 => Ok(Ok(spawn::pending(cmd, pid, sent.status))),
            0 => {
                let why = "cannot fork here (clone3 refused)";
                self.refused.get_or_insert_with(|| why.into());
                Err(Fallback::Gone(why.into()))
            }
            UNREADABLE => Err(Fallback::TooBig),
            e => Ok(Err(spawn::fail(Step::Exec, Errno::from_raw(-e), &cmd.path))),
        }
    }

    /// The next answer; None once the spawner has ended (after
    /// `PATIENCE_SECS` without one, it is ended here).
    fn answer(&mut self) -> Option<i32> {
        let mut answer = [0u8; 4];
        let mut killed = false;
        loop {
            // SAFETY: reading into a live stack buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    answer.as_mut_ptr().cast(),
                    answer.len(),
                    0,
                )
            };
            match (n, Errno::last()) {
                (4, _) if !killed => return Some(i32::from_ne_bytes(answer)),
                // Answered as it was ended: the answer stands, the spawner
                // takes no more (those in flight read their answers, or its
                // end of file and then their slots).
                (4, _) => {
                    self.refused.get_or_insert_with(|| "ended".into());
                    return Some(i32::from_ne_bytes(answer));
                }
                (n, _) if n >= 0 => return None,
                (_, Errno::EINTR) => continue,
                // No answer in PATIENCE_SECS: end it, then wait for the end
                // of file its death brings (once more at most).
                (_, Errno::EAGAIN) if !killed => {
                    killed = true;
                    crate::sys::send(self.pid, crate::sys::Signal::KILL, false);
                }
                _ => return None,
            }
        }
    }
}

/// The spawner's life: set itself apart, then fork what it is asked to
/// until its socket closes.
fn serve(sock: OwnedFd, slots: *mut i32, daemon: i32) -> ! {
    // SAFETY: plain calls on this process's own state.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The daemon died before that took effect.
        if libc::getppid() != daemon {
            libc::_exit(0);
        }
        crate::rawsys::default_signals();
        crate::rawsys::set_mask(0);
        libc::setsid();
        libc::prctl(libc::PR_SET_NAME, c"corral-spawner".as_ptr());
    }
    let sock = set_apart(sock);
    retitle();
    let mut buf = vec![0u8; 4096];
    loop {
        let (cmd, keep, status, slot) = match receive(&sock, &mut buf) {
            Ok(Some((len, fds))) => match buf.get(..len).and_then(|b| decode(b, fds)) {
                Some(c) => c,
                None => {
                    answer(&sock, UNREADABLE);
                    continue;
                }
            },
            Ok(None) => break,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        };
        let r = spawn::fork_exec(
            &cmd,
            &status,
            Forker::Spawner {
                slot: at(slots, slot),
                sock: sock.as_raw_fd(),
            },
        );
        // The status pipe goes before the answer: the daemon counts on the
        // child alone holding it. The rest after: freeing the command
        // writes to heap pages the child still shares until its exec (a
        // copy-on-write fault each), and the daemon waits for the answer.
        drop(status);
        answer(
            &sock,
            match r {
                Ok(pid) => pid,
                Err(Errno::ENOSYS | Errno::EPERM | Errno::EINVAL | Errno::E2BIG) => 0,
                Err(e) => -(e as i32),
            },
        );
        drop((cmd, keep));
    }
    // SAFETY: ends this process without running anything of the daemon's.
    unsafe { libc::_exit(0) }
}

/// Answer the daemon; an answer that cannot be sent ends the spawner (the
/// daemon then reads the end of file and the slot, not a silence).
fn answer(sock: &OwnedFd, v: i32) {
    let b = v.to_ne_bytes();
    loop {
        // SAFETY: sending a live stack buffer.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                b.as_ptr().cast(),
                b.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        match n {
            4 => return,
            _ if n < 0 && Errno::last() == Errno::EINTR => continue,
            // SAFETY: ends this process without running anything of the
            // daemon's.
            _ => unsafe { libc::_exit(0) },
        }
    }
}

/// Stdio on /dev/null (the daemon's may be a pipe a CLI waits on to end),
/// the socket at fd 3, every other fd closed. The socket.
fn set_apart(sock: OwnedFd) -> OwnedFd {
    // SAFETY: plain fd calls on this process's own fds; fd 3 is owned by
    // the returned handle alone after the dup2 and the closing above it.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        if sock.as_raw_fd() == 3 {
            std::mem::forget(sock);
        } else {
            if libc::dup3(sock.as_raw_fd(), 3, libc::O_CLOEXEC) < 0 {
                libc::_exit(0);
            }
            // The original is closed below with every other fd.
            std::mem::forget(sock);
        }
        if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
            // Kernels before 5.9.
            for fd in crate::sys::open_fds(4) {
                libc::close(fd);
            }
        }
        OwnedFd::from_raw_fd(3)
    }
}

/// What `ps` shows for the spawner: "corral-spawner", written over the
/// daemon's arguments (its copy of them; nothing reads them again here).
fn retitle() {
    let mut stat = [0u8; 1024];
    // SAFETY: reading a /proc file of this process into a stack buffer.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        let n = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
        libc::close(fd);
        n
    };
    let text = stat
        .get(..usize::try_from(n).unwrap_or(0))
        .unwrap_or_default();
    let Some((start, end)) = crate::procfs::arg_area(text) else {
        return;
    };
    let title = b"corral-spawner";
    if end - start <= title.len() || end - start > 1 << 20 {
        return;
    }
    // SAFETY: [arg_start, arg_end) is this process's own argument area,
    // writable stack memory the kernel reports for it; nothing here reads
    // the arguments again.
    unsafe {
        let p = start as *mut u8;
        std::ptr::copy_nonoverlapping(title.as_ptr(), p, title.len());
        std::ptr::write_bytes(p.add(title.len()), 0, end - start - title.len());
    }
}

/// One request: its length and fds (close-on-exec); None at end of file.
fn receive(sock: &OwnedFd, buf: &mut Vec<u8>) -> Result<Option<(usize, Vec<OwnedFd>)>, Errno> {
    // Its size first, so any request fits.
    let mut probe = [0u8; 1];
    // SAFETY: peeking into a live one-byte buffer; MSG_TRUNC makes the
    // kernel return the whole datagram's length.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            probe.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_TRUNC,
        )
    };
    match n {
        0 => return Ok(None),
        n if n < 0 => return Err(Errno::last()),
        n if n as usize > buf.len() => buf.resize(n as usize, 0),
        _ => {}
    }
    // Room for MAX_FDS fds in one SCM_RIGHTS message, aligned for cmsghdr.
    let mut space = [0u64; (MAX_FDS * 4 + 64) / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space) as _;
    // SAFETY: every pointer in `msg` is to a live buffer of the length
    // given; the kernel writes no more than that.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(Errno::last());
    }
    let truncated = msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0;
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just
    // filled, within msg_controllen; each SCM_RIGHTS payload is an array
    // of fds it installed in this process, read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let len = n as usize;
    if len == 0 {
        return Ok(None);
    }
    // Some of it lost (no room for its fds here): unreadable, refused by
    // `decode` for want of fds.
    if truncated {
        fds.clear();
    }
    Ok(Some((len, fds)))
}

const CREDS: u8 = 1;
const UID: u8 = 2;
const CHANNEL: u8 = 4;
const CGROUP: u8 = 8;
const LISTEN_PID: u8 = 16;

/// `cmd` as one request whose child's pid goes to `slot`, and the fds that
/// go with it in this order: stdin, stdout, stderr, the listening sockets,
/// the channel, the cgroup's directory, the status pipe's write end.
fn encode(cmd: &Command, status: &OwnedFd, slot: u32) -> (Vec<u8>, Vec<RawFd>) {
    let mut b = Vec::with_capacity(
        256 + cmd
            .envp
            .iter()
            .chain(&cmd.argv)
            .map(|s| s.as_bytes().len() + 1)
            .sum::<usize>(),
    );
    let mut flags = 0;
    let (uid, gid, groups) = match &cmd.creds {
        Some((uid, gid, groups)) => {
            flags |= CREDS;
            if uid.is_some() {
                flags |= UID;
            }
            (uid.unwrap_or(0), *gid, groups.as_slice())
        }
        None => (0, 0, &[][..]),
    };
    if cmd.channel.is_some() {
        flags |= CHANNEL;
    }
    if cmd.cgroup.is_some() {
        flags |= CGROUP;
    }
    if cmd.listen_pid_env.is_some() {
        flags |= LISTEN_PID;
    }
    b.push(flags);
    let numbers = [
        slot,
        uid,
        gid,
        groups.len() as u32,
        cmd.listen.len() as u32,
        cmd.listen_pid_env.unwrap_or(0) as u32,
        cmd.argv.len() as u32,
        cmd.envp.len() as u32,
    ];
    for n in numbers.iter().chain(groups) {
        b.extend_from_slice(&n.to_ne_bytes());
    }
    let procs = cmd.cgroup.as_ref().map(|c| &c.procs);
    let strings = [&cmd.path, &cmd.cwd]
        .into_iter()
        .chain(procs)
        .chain(&cmd.argv)
        .chain(&cmd.envp);
    for s in strings {
        b.extend_from_slice(s.as_bytes_with_nul());
    }
    let mut fds = vec![
        cmd.stdin.as_raw_fd(),
        cmd.stdout.as_raw_fd(),
        cmd.stderr.as_raw_fd(),
    ];
    fds.extend(&cmd.listen);
    fds.extend(cmd.channel.as_ref().map(|c| c.as_raw_fd()));
    fds.extend(cmd.cgroup.as_ref().map(|c| c.dir.as_raw_fd()));
    fds.push(status.as_raw_fd());
    (b, fds)
}

/// What `encode` made: the command, the listening sockets it names (owned
/// here: closed with it), the status pipe's write end, and the slot.
fn decode(b: &[u8], fds: Vec<OwnedFd>) -> Option<(Command, Vec<OwnedFd>, OwnedFd, u32)> {
    let (&flags, mut rest) = b.split_first()?;
    let mut number = || -> Option<u32> {
        let (n, r) = rest.split_first_chunk::<4>()?;
        rest = r;
        Some(u32::from_ne_bytes(*n))
    };
    let [slot, uid, gid, n_groups, n_listen, listen_pid, argc, envc] = [(); 8].map(|_| number());
    let slot = slot.filter(|s| *s < SLOTS)?;
    let groups: Vec<u32> = (0..n_groups?).map(|_| number()).collect::<Option<_>>()?;
    let mut strings = rest
        .split_inclusive(|c| *c == 0)
        .map(|s| CString::from_vec_with_nul(s.to_vec()).ok());
    let mut string = || strings.next().flatten();
    let path = string()?;
    let cwd = string()?;
    let procs = match flags & CGROUP {
        0 => None,
        _ => Some(string()?),
    };
    let argv: Vec<CString> = (0..argc?).map(|_| string()).collect::<Option<_>>()?;
    let envp: Vec<CString> = (0..envc?).map(|_| string()).collect::<Option<_>>()?;
    if string().is_some() {
        return None;
    }
    let n_listen = n_listen? as usize;
    let want = 3 + n_listen + usize::from(flags & CHANNEL != 0) + usize::from(procs.is_some()) + 1;
    if fds.len() != want {
        return None;
    }
    let mut fds = fds.into_iter();
    let mut fd = || fds.next();
    let (stdin, stdout, stderr) = (fd()?, fd()?, fd()?);
    let keep: Vec<OwnedFd> = (0..n_listen).map(|_| fd()).collect::<Option<_>>()?;
    let channel = match flags & CHANNEL {
        0 => None,
        _ => Some(fd()?),
    };
    let cgroup = match procs {
        Some(procs) => Some(Cgroup { dir: fd()?, procs }),
        None => None,
    };
    let status = fd()?;
    // The child writes its pid into this entry, in place: it must be the
    // placeholder, with its room.
    let listen_pid_env = match flags & LISTEN_PID {
        0 => None,
        _ => {
            let i = listen_pid? as usize;
            let entry = envp.get(i)?;
            if entry.as_bytes() != spawn::LISTEN_PID_PLACEHOLDER.as_bytes() {
                return None;
            }
            Some(i)
        }
    };
    let creds = match flags & CREDS {
        0 => None,
        _ => Some(((flags & UID != 0).then_some(uid?), gid?, groups)),
    };
    let cmd = Command {
        path,
        argv,
        envp,
        cwd,
        creds,
        stdin,
        stdout,
        stderr,
        listen: keep.iter().map(|f| f.as_raw_fd()).collect(),
        channel,
        listen_pid_env,
        cgroup,
    };
    Some((cmd, keep, status, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").unwrap())
    }

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn command(
        creds: Option<(Option<u32>, u32, Vec<u32>)>,
        listen: usize,
        more: bool,
    ) -> (Command, Vec<OwnedFd>) {
        let held: Vec<OwnedFd> = (0..listen).map(|_| fd()).collect();
        let cmd = Command {
            path: c("/bin/app"),
            argv: vec![c("app"), c(""), c("--flag=ü")],
            envp: match more {
                true => vec![c("A=1"), c(spawn::LISTEN_PID_PLACEHOLDER)],
                false => vec![],
            },
            cwd: c("/srv/app dir"),
            creds,
            stdin: fd(),
            stdout: fd(),
            stderr: fd(),
            listen: held.iter().map(|f| f.as_raw_fd()).collect(),
            channel: more.then(fd),
            listen_pid_env: more.then_some(1),
            cgroup: more.then(|| Cgroup {
                dir: fd(),
                procs: c("/sys/fs/cgroup/x/cgroup.procs"),
            }),
        };
        (cmd, held)
    }

    /// Every field goes over as it was; an fd goes over as the same file.
    #[test]
    fn a_command_goes_over_whole() {
        let cases = [
            command(None, 0, false),
            command(Some((None, 7, vec![])), 0, false),
            command(Some((Some(1000), 100, vec![4, 27, 100])), 2, true),
            command(Some((Some(0), 0, vec![0])), 0, true),
        ];
        for (cmd, _held) in &cases {
            let status = fd();
            let (buf, raw) = encode(cmd, &status, 17);
            let dups: Vec<OwnedFd> = raw
                .iter()
                .map(|f| crate::sys::dup_cloexec(*f, 0).unwrap())
                .collect();
            let (got, keep, st, slot) = decode(&buf, dups).expect("decodes");
            assert_eq!(slot, 17);
            assert_eq!(got.path, cmd.path);
            assert_eq!(got.argv, cmd.argv);
            assert_eq!(got.envp, cmd.envp);
            assert_eq!(got.cwd, cmd.cwd);
            assert_eq!(got.creds, cmd.creds);
            assert_eq!(got.listen_pid_env, cmd.listen_pid_env);
            assert_eq!(got.listen.len(), cmd.listen.len());
            assert_eq!(keep.len(), cmd.listen.len());
            assert_eq!(got.channel.is_some(), cmd.channel.is_some());
            assert_eq!(
                got.cgroup.as_ref().map(|c| &c.procs),
                cmd.cgroup.as_ref().map(|c| &c.procs)
            );
            assert!(st.as_raw_fd() >= 0);
        }
    }

    /// A request cut short, with a string too many, or with fds missing
    /// or extra, is refused, not half read.
    #[test]
    fn a_broken_request_is_refused() {
        let (cmd, _held) = command(Some((Some(1), 2, vec![3])), 1, true);
        let status = fd();
        let (buf, raw) = encode(&cmd, &status, 0);
        let dups = |n: usize| -> Vec<OwnedFd> {
            raw.iter()
                .take(n)
                .map(|f| crate::sys::dup_cloexec(*f, 0).unwrap())
                .collect()
        };
        assert!(decode(&buf, dups(raw.len())).is_some());
        assert!(decode(&buf, dups(raw.len() - 1)).is_none());
        let mut extra = dups(raw.len());
        extra.push(fd());
        assert!(decode(&buf, extra).is_none());
        for cut in [0, 1, 10, buf.len() - 1] {
            assert!(
                decode(&buf[..cut], dups(raw.len())).is_none(),
                "cut at {cut}"
            );
        }
        let mut more = buf.clone();
        more.extend_from_slice(b"X=1\0");
        assert!(decode(&more, dups(raw.len())).is_none());
        // The entry the child writes its pid into must be the placeholder.
        let (mut cmd, _held) = command(None, 1, true);
        cmd.listen_pid_env = Some(0);
        let (buf, raw) = encode(&cmd, &status, 0);
        let dups: Vec<OwnedFd> = raw
            .iter()
            .map(|f| crate::sys::dup_cloexec(*f, 0).unwrap())
            .collect();
        assert!(decode(&buf, dups).is_none());
        // A slot outside the shared page is refused.
        let (cmd, _held) = command(None, 0, false);
        for (slot, ok) in [(SLOTS - 1, true), (SLOTS, false), (u32::MAX, false)] {
            let (buf, raw) = encode(&cmd, &status, slot);
            let dups: Vec<OwnedFd> = raw
                .iter()
                .map(|f| crate::sys::dup_cloexec(*f, 0).unwrap())
                .collect();
            assert_eq!(decode(&buf, dups).is_some(), ok, "slot {slot}");
        }
    }
}
