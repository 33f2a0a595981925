//! Client connections: accept with the peer's credentials checked, line
//! framing (capped at `protocol::MAX_LINE`), the output buffer, and closing.
//! A connection whose request waits (`waiting`) is not read until it is
//! answered; a subscriber's connection carries events only. What a request
//! does is `requests.rs`'s; this module never touches the process table.
//!
//! No client can starve the others: requests are not read from a client
//! whose unread answers pass `MAX_UNREAD` (dinit's `OUTBUF_LIMIT`); a line
//! must be complete within `LINE_TIMEOUT_MS` of its first byte; past
//! `MAX_CONNS`, `RESERVED_CONNS` more are accepted for a quick request
//! (not a bus subscription) and closed when idle; when the daemon is out
//! of file descriptors it stops accepting for `ACCEPT_BACKOFF_MS` instead
//! of spinning, and the waiting clients are answered later.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;

use mio::net::UnixStream;
use mio::{Interest, Token};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use serde_json::Value;

use crate::bus::Subscription;
use crate::protocol::{self, ErrorCode, WireError};
use crate::sys;

use super::{Daemon, Timer};

/// Most connections served at once for any request.
pub(crate) const MAX_CONNS: usize = 256;
/// Connections accepted past `MAX_CONNS`, for a quick request (`ping`,
/// `list`, `kill`...) when idle clients hold the others; more are refused.
pub(crate) const RESERVED_CONNS: usize = 16;
/// Bytes of answers a client may leave unread before the daemon stops
/// reading its requests (one answer may pass it).
pub(crate) const MAX_UNREAD: usize = 256 * 1024;
/// A request line must be complete this long after its first byte came.
pub(crate) const LINE_TIMEOUT_MS: u64 = 5_000;
/// A reserve connection with nothing to do is closed after this long.
pub(crate) const RESERVE_IDLE_MS: u64 = 5_000;
/// How long accepting pauses when the daemon is out of file descriptors.
pub(crate) const ACCEPT_BACKOFF_MS: u64 = 100;
/// An answer buffer larger than this (bytes) is freed, and the heap
/// trimmed, as soon as it is sent.
const BIG_BUFFER: usize = 64 * 1024;

/// One client.
pub(crate) struct Conn {
    pub sock: UnixStream,
    pub rbuf: Vec<u8>,
    pub wbuf: Vec<u8>,
    /// Discarding the rest of a line that was too long.
    pub skipping: bool,
    /// A request on this connection waits for apps to settle.
    pub waiting: bool,
    pub read_closed: bool,
    /// A subscriber of the bus: no more requests, events only.
    pub sub: Option<Subscription>,
    /// Accepted past `MAX_CONNS`: quick requests only, closed when idle.
    pub reserve: bool,
    /// When the partial line in `rbuf` (or the idle reserve connection)
    /// times out.
    pub deadline: Option<u64>,
}

impl Daemon {
    pub(super) fn accept_all(&mut self) {
        if self.accept_paused {
            return;
        }
        loop {
            let (mut sock, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of fds (or memory): the client waits in the
                    // backlog; try again soon, without spinning meanwhile.
                    if !self.accept_failing {
                        self.log(&format!(
                            "accept failed: {e}; trying again every {ACCEPT_BACKOFF_MS} ms"
                        ));
                    }
                    self.accept_failing = true;
                    self.accept_paused = true;
                    let at = self.now() + ACCEPT_BACKOFF_MS;
                    self.timers.arm(at, Timer::Accept);
                    return;
                }
            };
            if std::mem::take(&mut self.accept_failing) {
                self.log("accepting connections again");
            }
            let peer = getsockopt(&sock.as_fd(), PeerCredentials);
            let who = peer.as_ref().ok().map(|c| (c.uid(), c.gid()));
            let peer_ok = who.is_some_and(|(uid, gid)| self.allowed(uid, gid));
            if peer_ok && self.conns.len() >= MAX_CONNS + RESERVED_CONNS {
                // Only when it is really so: clients that hung up go first.
                self.drop_hung_up_conns();
            }
            let live = self.conns.len();
            let refusal = match (peer_ok, live >= MAX_CONNS + RESERVED_CONNS) {
                (false, _) => Some(WireError::new(ErrorCode::BadRequest, self.refusal(who))),
                (true, true) => Some(WireError::new(
                    ErrorCode::Internal,
                    format!(
                        "too many connections ({MAX_CONNS} clients and {RESERVED_CONNS} \
                         in reserve are connected)"
                    ),
                )),
                (true, false) => None,
            };
            if let Some(e) = refusal {
                let _ = sock.write_all(protocol::err_line(&Value::Null, &e).as_bytes());
                continue;
            }
            let t = self.token();
            if self
                .poll
                .registry()
                .register(&mut sock, t, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let reserve = live >= MAX_CONNS;
            self.conns.insert(
                t,
                Conn {
                    sock,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    skipping: false,
                    waiting: false,
                    read_closed: false,
                    sub: None,
                    reserve,
                    deadline: None,
                },
            );
            if reserve {
                self.set_deadline(t, RESERVE_IDLE_MS);
            }
        }
    }

    /// Whether a peer with this uid and effective gid is obeyed: the
    /// daemon's own user (root for a root daemon), and those allowed by
    /// `--allow-uid` and `--allow-gid`.
    fn allowed(&self, uid: u32, gid: u32) -> bool {
        uid == sys::euid() || self.allow_uid.contains(&uid) || self.allow_gid.contains(&gid)
    }

    /// What a peer that is not allowed is told.
    fn refusal(&self, who: Option<(u32, u32)>) -> String {
        let me = sys::euid();
        match who {
            Some((uid, gid)) => format!(
                "connection from uid {uid} (gid {gid}) refused: this daemon obeys uid {me} \
                 and those it was started to allow (corral daemon --allow-uid {uid})"
            ),
            None => "connection refused: the peer's credentials cannot be read".to_string(),
        }
    }

    /// The end of the fd backoff: accept again.
    pub(super) fn resume_accepting(&mut self) {
        self.accept_paused = false;
        self.accept_all();
    }

    /// Close the connections whose client has hung up (it will never read
    /// an answer), however busy they are: one `poll` over all of them.
    fn drop_hung_up_conns(&mut self) {
        let (tokens, mut fds): (Vec<Token>, Vec<PollFd>) = self
            .conns
            .iter()
            .map(|(t, c)| (*t, PollFd::new(c.sock.as_fd(), PollFlags::empty())))
            .unzip();
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return;
        }
        let hung_up: Vec<Token> = tokens
            .into_iter()
            .zip(fds.iter().map(|f| f.revents()))
            .filter(|(_, r)| {
                r.is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
            })
            .map(|(t, _)| t)
            .collect();
        drop(fds);
        for t in hung_up {
            self.drop_conn(t);
        }
    }

    /// Connection `t` times out `ms` from now unless it moves on.
    fn set_deadline(&mut self, t: Token, ms: u64) {
        let at = self.now() + ms;
        if let Some(c) = self.conns.get_mut(&t) {
            if let Some(old) = c.deadline.replace(at) {
                self.timers.disarm(old, Timer::Conn(t));
            }
            self.timers.arm(at, Timer::Conn(t));
        }
    }

    /// Connection `t`'s deadline `at` is due: a line left half-written, or
    /// a reserve connection left idle, is closed.
    pub(super) fn conn_deadline(&mut self, t: Token, at: u64) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if c.deadline != Some(at) {
            return;
        }
        c.deadline = None;
        if c.waiting || c.wbuf.len() >= MAX_UNREAD {
            // Its request is in hand, or it is the one not reading: not
            // a stalled line. Look again later.
            let ms = if c.reserve {
                RESERVE_IDLE_MS
            } else {
                LINE_TIMEOUT_MS
            };
            return self.set_deadline(t, ms);
        }
        if !c.rbuf.is_empty() || c.skipping {
            let e = WireError::new(
                ErrorCode::BadRequest,
                format!("request line not completed within {LINE_TIMEOUT_MS} ms"),
            );
            c.wbuf
                .extend_from_slice(protocol::err_line(&Value::Null, &e).as_bytes());
        }
        // A last try to say why, then closed whether it reads or not.
        let _ = c.sock.write(&c.wbuf);
        self.drop_conn(t);
    }

    /// Answer every complete line, read more, flush; close when done. Stops
    /// reading while the client leaves `MAX_UNREAD` bytes of answers
    /// unread: its socket becoming writable brings it back here.
    pub(super) fn service_conn(&mut self, t: Token) {
        let mut buf = [0u8; 8192];
        let mut took_line = false;
        loop {
            while let Some(line) = self.next_line(t) {
                took_line = true;
                if self.conns.get(&t).is_some_and(|c| c.sub.is_some()) {
                    // A subscriber's connection carries events only.
                    continue;
                }
                self.handle_line(t, &line);
            }
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            if c.wbuf.len() >= MAX_UNREAD {
                if !self.write_some(t) {
                    return;
                }
                match self.conns.get(&t) {
                    // The client reads: answer its next lines.
                    Some(c) if c.wbuf.len() < MAX_UNREAD => continue,
                    // It does not: its socket is full, and becoming
                    // writable brings it back here.
                    Some(_) => break,
                    None => return,
                }
            }
            if c.waiting || c.read_closed {
                break;
            }
            match c.sock.read(&mut buf) {
                Ok(0) => c.read_closed = true,
                Ok(n) => c.rbuf.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(t);
                    return;
                }
            }
        }
        self.watch_partial_line(t, took_line);
        self.flush_conn(t);
    }

    /// Time a half-written line from its first byte; a reserve connection
    /// from its last request.
    fn watch_partial_line(&mut self, t: Token, took_line: bool) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let partial = !c.rbuf.is_empty() || c.skipping;
        match (partial, c.reserve) {
            (true, _) if took_line || c.deadline.is_none() => self.set_deadline(t, LINE_TIMEOUT_MS),
            (true, _) => {}
            (false, true) if took_line || c.deadline.is_none() => {
                self.set_deadline(t, RESERVE_IDLE_MS)
            }
            (false, true) => {}
            (false, false) => {
                // An idle daemon does not wake up for a line now complete.
                if let Some(old) = c.deadline.take() {
                    self.timers.disarm(old, Timer::Conn(t));
                }
            }
        }
    }

    /// Write what the socket takes of `t`'s answers; false if the
    /// connection was dropped.
    fn write_some(&mut self, t: Token) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return false;
        };
        while !c.wbuf.is_empty() {
            match c.sock.write(&c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(t);
                    return false;
                }
            }
        }
        // A large answer sent (a list): its buffer goes back to the
        // kernel at the end of this wake, not when the client hangs up.
        if c.wbuf.capacity() > BIG_BUFFER {
            c.wbuf = Vec::new();
            self.trim = true;
        }
        true
    }

    /// The next complete line, or an error answered for an overlong one.
    fn next_line(&mut self, t: Token) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&t)?;
        if c.waiting || c.wbuf.len() >= MAX_UNREAD {
            return None;
        }
        loop {
            match c.rbuf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line: Vec<u8> = c.rbuf.drain(..=i).collect();
                    line.pop();
                    if c.skipping {
                        c.skipping = false;
                        continue;
                    }
                    if line.len() > protocol::MAX_LINE {
                        c.wbuf.extend_from_slice(too_long().as_bytes());
                        continue;
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(line);
                }
                None if c.rbuf.len() > protocol::MAX_LINE => {
                    c.rbuf.clear();
                    if !c.skipping {
                        c.skipping = true;
                        c.wbuf.extend_from_slice(too_long().as_bytes());
                    }
                    return None;
                }
                None if c.read_closed && !c.rbuf.is_empty() && !c.skipping => {
                    // A last line without its newline.
                    return Some(std::mem::take(&mut c.rbuf));
                }
                None => return None,
            }
        }
    }

    pub(super) fn flush_conn(&mut self, t: Token) {
        if !self.write_some(t) {
            return;
        }
        let Some(c) = self.conns.get(&t) else {
            return;
        };
        // Lines held back by `MAX_UNREAD` are still to be answered.
        let lines_left = c.rbuf.contains(&b'\n') || (!c.rbuf.is_empty() && !c.skipping);
        if c.wbuf.is_empty() && c.read_closed && !c.waiting && !lines_left {
            self.drop_conn(t);
        }
    }

    fn drop_conn(&mut self, t: Token) {
        if let Some(mut c) = self.conns.remove(&t) {
            self.trim |= c.wbuf.capacity() > BIG_BUFFER;
            let _ = self.poll.registry().deregister(&mut c.sock);
            if let Some(at) = c.deadline {
                self.timers.disarm(at, Timer::Conn(t));
            }
            if c.sub.is_some() {
                self.subscribers -= 1;
            }
        }
    }

    /// Queue an answer line on connection `t`.
    pub(super) fn reply(&mut self, t: Token, line: String) {
        self.reply_bytes(t, line.into_bytes());
    }

    /// [`Daemon::reply`] with the line as bytes.
    pub(super) fn reply_bytes(&mut self, t: Token, line: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(&t) {
            if c.wbuf.is_empty() {
                // A large answer is not copied once more.
                c.wbuf = line;
            } else {
                c.wbuf.extend_from_slice(&line);
            }
        }
    }

    /// Write `t`'s queued answers now; whether nothing is left queued.
    pub(super) fn flush_conn_now(&mut self, t: Token) -> bool {
        self.write_some(t) && self.conns.get(&t).is_some_and(|c| c.wbuf.is_empty())
    }

    /// Write what the socket of `t` takes of `bytes` now, without waiting;
    /// how much (an error is found again by the next write of the queue).
    pub(super) fn send_now(&mut self, t: Token, bytes: &[u8]) -> usize {
        let Some(c) = self.conns.get_mut(&t) else {
            return 0;
        };
        loop {
            match c.sock.write(bytes) {
                Ok(n) => return n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return 0,
            }
        }
    }

    /// Answer a parked request on `t` and read its next ones.
    pub(super) fn answer(&mut self, t: Token, line: String) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.waiting = false;
            c.wbuf.extend_from_slice(line.as_bytes());
        }
        self.service_conn(t);
    }

    /// Park connection `t`: its request is answered later.
    pub(super) fn park(&mut self, t: Token) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.waiting = true;
        }
    }

    /// Before exiting: give every reply a last chance to be written, without
    /// blocking on a client that does not read (its answer is lost, as it
    /// would be if it had gone). The connections stay open until the
    /// process exits, after its socket and pid file are removed: a client
    /// of `kill` that reads to the end (`Client::kill_daemon`) returns when
    /// the daemon is gone, and its next command finds no socket left to
    /// reach the dying daemon through.
    pub(super) fn flush_all(&mut self) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            self.write_some(t);
        }
    }
}

fn too_long() -> String {
    protocol::err_line(
        &Value::Null,
        &WireError::new(
            ErrorCode::BadRequest,
            format!("request line longer than {} bytes", protocol::MAX_LINE),
        ),
    )
}
