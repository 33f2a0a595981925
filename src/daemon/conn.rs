//! Client connections: accept with the peer's credentials checked, line
//! framing (capped at `protocol::MAX_LINE`), the output buffer, and closing.
//! A connection whose request waits (`waiting`) is not read until it is
//! answered; a subscriber's connection carries events only. What a request
//! does is `requests.rs`'s; this module never touches the process table.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;

use mio::net::UnixStream;
use mio::{Interest, Token};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use serde_json::Value;

use crate::bus::Subscription;
use crate::protocol::{self, ErrorCode, WireError};
use crate::sys;

use super::Daemon;

/// Most connections served at once; more are refused.
pub(crate) const MAX_CONNS: usize = 256;

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
}

impl Daemon {
    pub(super) fn accept_all(&mut self) {
        loop {
            let (mut sock, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.log(&format!("accept failed: {e}"));
                    return;
                }
            };
            let peer = getsockopt(&sock.as_fd(), PeerCredentials);
            let who = peer.as_ref().ok().map(|c| (c.uid(), c.gid()));
            let peer_ok = who.is_some_and(|(uid, gid)| self.allowed(uid, gid));
            let refusal = match (peer_ok, self.conns.len() >= MAX_CONNS) {
                (false, _) => Some(WireError::new(ErrorCode::BadRequest, self.refusal(who))),
                (true, true) => Some(WireError::new(
                    ErrorCode::Internal,
                    format!("too many connections (at most {MAX_CONNS})"),
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
                },
            );
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

    /// Answer every complete line, read more, flush; close when done.
    pub(super) fn service_conn(&mut self, t: Token) {
        let mut buf = [0u8; 8192];
        loop {
            while let Some(line) = self.next_line(t) {
                if self.conns.get(&t).is_some_and(|c| c.sub.is_some()) {
                    // A subscriber's connection carries events only.
                    continue;
                }
                self.handle_line(t, &line);
            }
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
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
        self.flush_conn(t);
    }

    /// The next complete line, or an error answered for an overlong one.
    fn next_line(&mut self, t: Token) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&t)?;
        if c.waiting {
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
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        while !c.wbuf.is_empty() {
            match c.sock.write(&c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(t);
                    return;
                }
            }
        }
        if c.read_closed && !c.waiting {
            self.drop_conn(t);
        }
    }

    fn drop_conn(&mut self, t: Token) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.sock);
            if c.sub.is_some() {
                self.subscribers -= 1;
            }
        }
    }

    /// Queue an answer line on connection `t`.
    pub(super) fn reply(&mut self, t: Token, line: String) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.wbuf.extend_from_slice(line.as_bytes());
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
    /// would be if it had gone).
    pub(super) fn flush_all(&mut self) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            if let Some(c) = self.conns.get_mut(&t) {
                c.read_closed = true;
                c.waiting = false;
            }
            self.flush_conn(t);
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
