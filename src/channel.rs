//! An app's IPC channel: the daemon's end of a Unix socket pair whose other
//! end the app has as `NODE_CHANNEL_FD` — what Node's `process.send` and
//! `process.on('message')` speak: one JSON document a line, both ways
//! (Node's channel format: the man page's IPC CHANNEL). Reads are framed into messages; writes are queued,
//! bounded, and never block the loop.
//!
//! Handles (Node's cluster protocol: the man page's CLUSTER MODE AND RELOAD): [`Channel::send_handle`] queues a line that
//! must carry a descriptor. It is written with one `sendmsg` that carries the
//! line and the fd as SCM_RIGHTS, one handle per `sendmsg`. Then nothing more
//! is written to the app until it answers `{"cmd":"NODE_HANDLE_ACK"}`; plain
//! [`Channel::send`]s queue behind it, in order. On `{"cmd":"NODE_HANDLE_NACK"}`
//! the same line and fd are sent again, up to [`MAX_HANDLE_RETRIES`] times
//! (Node's rule: the NACK after the last retransmission drops the handle with
//! a warning, and the queue moves on). Both answers are consumed by the
//! channel: they never show up in [`Inbound::messages`].

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mio::net::UnixStream;
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
use serde_json::Value;

/// The longest line accepted from an app; a longer one is discarded.
pub const MAX_MESSAGE: usize = 1 << 20;
/// The most bytes queued towards an app that does not read.
pub const MAX_QUEUE: usize = 4 << 20;
/// How many times a handle the app NACKs is sent again before it is dropped.
pub const MAX_HANDLE_RETRIES: u32 = 3;
/// A message whose `cmd` starts with this (and is longer) is Node's own.
pub const INTERNAL_PREFIX: &str = "NODE_";
/// The app got the handle just sent.
pub const HANDLE_ACK: &str = "NODE_HANDLE_ACK";
/// The app got the handle's line without its fd: send both again.
pub const HANDLE_NACK: &str = "NODE_HANDLE_NACK";

/// What an app said on its channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// `"ready"` (PM2's `wait_ready`).
    Ready,
    /// `{"node_version": …}`, what PM2's container sends first.
    NodeVersion(String),
    /// `{"type": T, "data": D}`: bus event T.
    Typed { kind: String, data: Value },
    /// An object whose `cmd` is Node's own (see [`is_internal`]), such as
    /// `NODE_CLUSTER`: never a bus event. `NODE_HANDLE_ACK` and
    /// `NODE_HANDLE_NACK` do not come out of [`Channel::read`] at all.
    Internal(Value),
    /// Anything else: bus event `process:msg`.
    Raw(Value),
}

/// Whether `v` is one of Node's internal messages: an object whose `cmd` is
/// a string that starts with `NODE_` and is longer than that prefix.
pub fn is_internal(v: &Value) -> bool {
    internal_cmd(v).is_some()
}

/// The `cmd` of an internal message.
fn internal_cmd(v: &Value) -> Option<&str> {
    let cmd = v.get("cmd")?.as_str()?;
    (cmd.len() > INTERNAL_PREFIX.len() && cmd.starts_with(INTERNAL_PREFIX)).then_some(cmd)
}

/// Sort one decoded line into a `Message`, as PM2 does.
pub fn classify(v: Value) -> Message {
    if v == "ready" {
        return Message::Ready;
    }
    if is_internal(&v) {
        return Message::Internal(v);
    }
    if let Some(obj) = v.as_object() {
        if let (Some(Value::String(kind)), Some(data)) = (obj.get("type"), obj.get("data")) {
            return Message::Typed {
                kind: kind.clone(),
                data: data.clone(),
            };
        }
        if let Some(Value::String(version)) = obj.get("node_version") {
            return Message::NodeVersion(version.clone());
        }
    }
    Message::Raw(v)
}

/// What one read of the channel brought.
#[derive(Debug, Default)]
pub struct Inbound {
    pub messages: Vec<Message>,
    /// Problems worth a line in the daemon's log (a malformed line…).
    pub warnings: Vec<String>,
    /// The app closed its end (or died).
    pub closed: bool,
}

/// One line queued towards the app, and the descriptor it carries.
struct Outgoing {
    line: Vec<u8>,
    /// How much of `line` is written.
    written: usize,
    /// Rides as SCM_RIGHTS on the `sendmsg` that writes the line's first
    /// byte. Should the socket take only part of the line, the rest goes out
    /// by plain writes: the fd is already attached to the first part, which
    /// is where Node's reader looks for it.
    fd: Option<OwnedFd>,
    /// Retransmissions so far (handles only).
    retries: u32,
}

/// The daemon's end of one app's channel.
pub struct Channel {
    pub sock: UnixStream,
    rbuf: Vec<u8>,
    /// Discarding the rest of a line that was too long.
    skipping: bool,
    /// What is still to be written, in order.
    queue: VecDeque<Outgoing>,
    /// Unwritten bytes in `queue`, bounded by `MAX_QUEUE`.
    queued: usize,
    /// The handle written last, kept until the app ACKs it (and to send
    /// again on NACK). While it is here nothing else is written.
    /// Boxed: most channels never carry a handle.
    unacked: Option<Box<Outgoing>>,
    open: bool,
}

/// A channel's state as the daemon hands it to its new image (`corral
/// update`): input not yet a whole line, output not yet written, the handle
/// waiting for its ACK; the fds riding on messages by number (kept open
/// across `execve`).
/// What is at its default is left out (most channels are idle).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ChannelState {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rbuf: Vec<u8>,
    #[serde(skip_serializing_if = "is_false")]
    skipping: bool,
    #[serde(skip_serializing_if = "is_false")]
    closed: bool,
    /// Each queued line: its bytes, how much is written, its fd, retries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    queue: Vec<(Vec<u8>, usize, Option<RawFd>, u32)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unacked: Option<(Vec<u8>, Option<RawFd>, u32)>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ChannelState {
    /// The fds its messages carry.
    pub fn fds(&self) -> Vec<RawFd> {
        self.queue
            .iter()
            .filter_map(|q| q.2)
            .chain(self.unacked.as_ref().and_then(|u| u.1))
            .collect()
    }
}

impl Channel {
    pub fn new(sock: UnixStream) -> Channel {
        Channel {
            sock,
            rbuf: Vec::new(),
            skipping: false,
            queue: VecDeque::new(),
            queued: 0,
            unacked: None,
            open: true,
        }
    }

    /// Its state, to hand to a new image of the daemon.
    pub fn export(&self) -> ChannelState {
        ChannelState {
            rbuf: self.rbuf.clone(),
            skipping: self.skipping,
            closed: !self.open,
            queue: self
                .queue
                .iter()
                .map(|o| {
                    (
                        o.line.clone(),
                        o.written,
                        o.fd.as_ref().map(|f| f.as_raw_fd()),
                        o.retries,
                    )
                })
                .collect(),
            unacked: self.unacked.as_ref().map(|o| {
                (
                    o.line.clone(),
                    o.fd.as_ref().map(|f| f.as_raw_fd()),
                    o.retries,
                )
            }),
        }
    }

    /// A channel on `sock` that goes on from `st` (handed over by the
    /// previous image, whose fds are now this process's).
    pub fn import(sock: UnixStream, st: ChannelState) -> Channel {
        // SAFETY: every fd in the state was handed over with it and is
        // owned here alone.
        let own = |fd: Option<RawFd>| fd.map(|f| unsafe { OwnedFd::from_raw_fd(f) });
        let queue: VecDeque<Outgoing> = st
            .queue
            .into_iter()
            .map(|(line, written, fd, retries)| Outgoing {
                line,
                written,
                fd: own(fd),
                retries,
            })
            .collect();
        let queued = queue
            .iter()
            .map(|o| o.line.len().saturating_sub(o.written))
            .sum();
        Channel {
            sock,
            rbuf: st.rbuf,
            skipping: st.skipping,
            queue,
            queued,
            unacked: st.unacked.map(|(line, fd, retries)| {
                Box::new(Outgoing {
                    written: line.len(),
                    line,
                    fd: own(fd),
                    retries,
                })
            }),
            open: !st.closed,
        }
    }

    /// Whether a handle was written and the app has not ACKed it yet (so
    /// everything else waits).
    #[cfg(test)]
    pub fn awaiting_handle_ack(&self) -> bool {
        self.unacked.is_some()
    }

    /// Bytes queued and not yet written (bounded by `MAX_QUEUE`).
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Read until the socket would block; the messages of every whole line.
    pub fn read(&mut self) -> Inbound {
        let mut inbound = Inbound::default();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    self.open = false;
                    inbound.closed = true;
                    break;
                }
                Ok(n) => self.take(buf.get(..n).unwrap_or_default(), &mut inbound),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.open = false;
                    inbound.closed = true;
                    break;
                }
            }
        }
        // An ACK (or NACK) may have released what was queued behind a handle.
        if self.open
            && self.unacked.is_none()
            && !self.queue.is_empty()
            && let Err(e) = self.flush()
        {
            inbound
                .warnings
                .push(format!("cannot write to the channel: {e}"));
            inbound.closed = true;
        }
        inbound
    }

    /// Frame `bytes` into lines and decode them.
    fn take(&mut self, bytes: &[u8], inbound: &mut Inbound) {
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let whole = piece.ends_with(b"\n");
            if !self.skipping {
                self.rbuf.extend_from_slice(piece);
            }
            if self.rbuf.len() > MAX_MESSAGE + 1 {
                self.rbuf.clear();
                self.skipping = true;
                inbound.warnings.push(format!(
                    "a message longer than {MAX_MESSAGE} bytes was dropped"
                ));
            }
            if !whole {
                continue;
            }
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            let line = std::mem::take(&mut self.rbuf);
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(text) {
                Ok(v) => match internal_cmd(&v) {
                    Some(HANDLE_ACK) => self.handle_acked(),
                    Some(HANDLE_NACK) => self.handle_nacked(inbound),
                    _ => inbound.messages.push(classify(v)),
                },
                Err(e) => inbound
                    .warnings
                    .push(format!("a malformed message was dropped: {e}")),
            }
        }
    }

    /// The app has the handle: the queue moves on.
    fn handle_acked(&mut self) {
        // Dropping it closes our copy of the fd. An ACK with no handle
        // pending is ignored.
        self.unacked = None;
    }

    /// The app got the handle's line without its fd: send both again, first
    /// in the queue, or give up after `MAX_HANDLE_RETRIES`. A NACK with no
    /// handle pending is ignored.
    fn handle_nacked(&mut self, inbound: &mut Inbound) {
        let Some(mut handle) = self.unacked.take() else {
            return;
        };
        if handle.retries >= MAX_HANDLE_RETRIES {
            inbound.warnings.push(format!(
                "a handle did not reach the app after {} retransmissions and was dropped",
                handle.retries
            ));
            return;
        }
        handle.retries += 1;
        handle.written = 0;
        // Already admitted once: a retransmission is not held to MAX_QUEUE.
        self.queued += handle.line.len();
        self.queue.push_front(*handle);
    }

    /// Queue one message (one JSON line) and write what the socket takes.
    pub fn send(&mut self, v: &Value) -> Result<(), String> {
        self.enqueue(v, None)
    }

    /// Queue one message that must carry `fd` (a `NODE_HANDLE` envelope) and
    /// write what the socket may take. `fd` is duplicated (close-on-exec)
    /// now, so the caller may close theirs; the copy is closed once the app
    /// ACKs it or it is dropped. Nothing queued after it is written until the
    /// app ACKs it.
    pub fn send_handle(&mut self, v: &Value, fd: RawFd) -> Result<(), String> {
        self.enqueue(v, Some(fd))
    }

    fn enqueue(&mut self, v: &Value, fd: Option<RawFd>) -> Result<(), String> {
        if !self.open {
            return Err("the app closed its channel".to_string());
        }
        let mut line = serde_json::to_vec(v).map_err(|e| format!("cannot encode: {e}"))?;
        line.push(b'\n');
        if self.queued + line.len() > MAX_QUEUE {
            return Err(format!(
                "the app does not read its channel ({} bytes queued)",
                self.queued
            ));
        }
        let fd = fd.map(dup_cloexec).transpose()?;
        self.queued += line.len();
        self.queue.push_back(Outgoing {
            line,
            written: 0,
            fd,
            retries: 0,
        });
        self.flush()
            .map_err(|e| format!("cannot write to the channel: {e}"))
    }

    /// Write what is queued until the socket would block or a handle waits
    /// for its ACK.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.unacked.is_none() {
            let Some(next) = self.queue.front_mut() else {
                break;
            };
            let rest = next.line.get(next.written..).unwrap_or_default();
            let wrote = match &next.fd {
                Some(fd) if next.written == 0 => send_with_fd(&self.sock, rest, fd),
                _ => self.sock.write(rest),
            };
            match wrote {
                Ok(n) => {
                    next.written += n;
                    self.queued -= n;
                    if next.written == next.line.len()
                        && let Some(done) = self.queue.pop_front()
                        && done.fd.is_some()
                    {
                        self.unacked = Some(Box::new(done));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.open = false;
                    self.queue.clear();
                    self.queued = 0;
                    self.unacked = None;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// A close-on-exec copy of `fd`, ours to keep.
fn dup_cloexec(fd: RawFd) -> Result<OwnedFd, String> {
    crate::sys::dup_cloexec(fd, 0).map_err(|e| format!("cannot duplicate fd {fd}: {}", e.desc()))
}

/// One `sendmsg`: `bytes` with `fd` as SCM_RIGHTS.
fn send_with_fd(sock: &UnixStream, bytes: &[u8], fd: &OwnedFd) -> io::Result<usize> {
    let fds = [fd.as_raw_fd()];
    sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_messages_like_pm2() {
        let cases = [
            (json!("ready"), Message::Ready),
            (
                json!({"node_version": "20.20.2"}),
                Message::NodeVersion("20.20.2".into()),
            ),
            (
                json!({"type": "process:msg", "data": {"success": true}}),
                Message::Typed {
                    kind: "process:msg".into(),
                    data: json!({"success": true}),
                },
            ),
            (json!({"type": "x"}), Message::Raw(json!({"type": "x"}))),
            (
                json!({"type": 3, "data": 1}),
                Message::Raw(json!({"type": 3, "data": 1})),
            ),
            (json!(42), Message::Raw(json!(42))),
            (json!("hello"), Message::Raw(json!("hello"))),
            (
                json!({"cmd": "NODE_CLUSTER", "act": "online", "seq": 0}),
                Message::Internal(json!({"cmd": "NODE_CLUSTER", "act": "online", "seq": 0})),
            ),
            (
                json!({"cmd": "NODE_HANDLE_ACK"}),
                Message::Internal(json!({"cmd": "NODE_HANDLE_ACK"})),
            ),
            // Internal wins over `type`/`data`, as in Node.
            (
                json!({"cmd": "NODE_X", "type": "t", "data": 1}),
                Message::Internal(json!({"cmd": "NODE_X", "type": "t", "data": 1})),
            ),
            // Not internal: the prefix alone, another prefix, a non-string.
            (json!({"cmd": "NODE"}), Message::Raw(json!({"cmd": "NODE"}))),
            (
                json!({"cmd": "NODE_"}),
                Message::Raw(json!({"cmd": "NODE_"})),
            ),
            (
                json!({"cmd": "NODEX_Y"}),
                Message::Raw(json!({"cmd": "NODEX_Y"})),
            ),
            (
                json!({"cmd": "node_cluster"}),
                Message::Raw(json!({"cmd": "node_cluster"})),
            ),
            (json!({"cmd": 5}), Message::Raw(json!({"cmd": 5}))),
            (json!(["NODE_X"]), Message::Raw(json!(["NODE_X"]))),
        ];
        for (v, want) in cases {
            assert_eq!(classify(v.clone()), want, "{v}");
        }
    }

    fn pair() -> (Channel, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Channel::new(UnixStream::from_std(a)), b)
    }

    #[test]
    fn frames_lines_across_reads_and_drops_bad_ones() {
        let (mut ch, mut app) = pair();
        app.write_all(b"\"ready\"\n{\"type\":\"t\",\"da").unwrap();
        let first = ch.read();
        assert_eq!(first.messages, vec![Message::Ready]);
        app.write_all(b"ta\":1}\nnot json\n\n").unwrap();
        let second = ch.read();
        assert_eq!(
            second.messages,
            vec![Message::Typed {
                kind: "t".into(),
                data: json!(1)
            }]
        );
        assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
        drop(app);
        assert!(ch.read().closed);
        assert!(!ch.is_open());
        assert!(ch.send(&json!("x")).is_err());
    }

    #[test]
    fn an_overlong_line_is_dropped_whole() {
        let (mut ch, mut app) = pair();
        let writer = std::thread::spawn(move || {
            let big = vec![b'x'; MAX_MESSAGE + 10];
            app.write_all(&big).unwrap();
            app.write_all(b"\n\"ready\"\n").unwrap();
        });
        let mut got = Inbound::default();
        while got.messages.is_empty() {
            let r = ch.read();
            got.messages.extend(r.messages);
            got.warnings.extend(r.warnings);
        }
        writer.join().unwrap();
        assert_eq!(got.messages, vec![Message::Ready]);
        assert_eq!(got.warnings.len(), 1);
    }

    #[test]
    fn writes_queue_when_the_app_does_not_read() {
        let (mut ch, app) = pair();
        let chunk = json!("y".repeat(64 * 1024));
        let mut sent = 0;
        while ch.send(&chunk).is_ok() {
            sent += 1;
            assert!(sent < 1000, "the queue is not bounded");
        }
        assert!(sent > 1);
        drop(app);
    }

    // ---- handles ----------------------------------------------------------

    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use std::io::IoSliceMut;
    use std::os::unix::net::UnixStream as StdUnixStream;

    /// What the app's end has received so far without blocking: the bytes
    /// and the fds that came with them.
    fn drain(app: &StdUnixStream) -> (Vec<u8>, Vec<OwnedFd>) {
        let mut bytes = Vec::new();
        let mut fds = Vec::new();
        while let Some((b, f)) = recv_once(app, MsgFlags::MSG_DONTWAIT) {
            bytes.extend(b);
            fds.extend(f);
        }
        (bytes, fds)
    }

    /// One recvmsg; None at EOF or when it would block.
    fn recv_once(app: &StdUnixStream, flags: MsgFlags) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<UnixAddr>(
            app.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            flags | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EAGAIN) => return None,
            Err(e) => panic!("recvmsg: {e}"),
        };
        let n = msg.bytes;
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel just installed these fds for us.
                fds.extend(
                    got.into_iter()
                        .map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }),
                );
            }
        }
        assert!(!msg.flags.contains(MsgFlags::MSG_CTRUNC));
        (n > 0).then(|| (buf[..n].to_vec(), fds))
    }

    fn line(v: &Value) -> Vec<u8> {
        let mut l = serde_json::to_vec(v).unwrap();
        l.push(b'\n');
        l
    }

    fn say(app: &StdUnixStream, text: &str) {
        (&*app).write_all(text.as_bytes()).unwrap();
    }

    /// A socket pair to pass one end of: proof that the fd arrived is that
    /// bytes written to the received fd come out of the other end.
    fn passable() -> (StdUnixStream, StdUnixStream) {
        StdUnixStream::pair().unwrap()
    }

    fn assert_is(received: OwnedFd, other: &StdUnixStream) {
        let mut received = StdUnixStream::from(received);
        received.write_all(b"!").unwrap();
        let mut got = [0u8; 1];
        (&*other).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"!");
    }

    fn handle_msg(seq: u64) -> Value {
        json!({"cmd": "NODE_HANDLE", "type": "net.Native",
               "msg": {"cmd": "NODE_CLUSTER", "act": "newconn", "key": "k", "seq": seq}})
    }

    #[test]
    fn a_handle_rides_its_line_and_holds_the_queue_until_acked() {
        let (mut ch, app) = pair();
        let (mine, other) = passable();
        let first = handle_msg(0);
        ch.send_handle(&first, mine.as_raw_fd()).unwrap();
        drop(mine); // the channel keeps its own copy
        let plain = json!({"cmd": "NODE_CLUSTER", "ack": 1, "seq": 1});
        ch.send(&plain).unwrap();
        let second = handle_msg(2);
        let (mine2, other2) = passable();
        ch.send_handle(&second, mine2.as_raw_fd()).unwrap();
        drop(mine2);
        assert!(ch.awaiting_handle_ack());

        let (bytes, mut fds) = drain(&app);
        assert_eq!(bytes, line(&first));
        assert_eq!(fds.len(), 1);
        assert_is(fds.remove(0), &other);
        // Nothing else until the ACK.
        assert_eq!(drain(&app).0, b"");

        say(&app, "{\"cmd\":\"NODE_HANDLE_ACK\"}\n\"ready\"\n");
        let inbound = ch.read();
        assert_eq!(
            inbound.messages,
            vec![Message::Ready],
            "the ACK is consumed"
        );
        assert!(inbound.warnings.is_empty(), "{:?}", inbound.warnings);

        // The ACK released the plain line and the next handle, which now
        // holds the queue in turn.
        let (bytes, mut fds) = drain(&app);
        assert_eq!(bytes, [line(&plain), line(&second)].concat());
        assert_eq!(fds.len(), 1);
        assert_is(fds.remove(0), &other2);
        assert!(ch.awaiting_handle_ack());
        ch.send(&plain).unwrap();
        assert_eq!(drain(&app).0, b"");
        say(&app, "{\"cmd\":\"NODE_HANDLE_ACK\"}\n");
        assert!(ch.read().messages.is_empty());
        assert_eq!(drain(&app).0, line(&plain));
        assert!(!ch.awaiting_handle_ack());
        assert_eq!(ch.queued_bytes(), 0);
    }

    /// `corral update`: a channel with half a line read, a handle waiting
    /// for its ACK and a line queued behind it goes on in the new image
    /// (here: the same process, the old channel's fds left open as execve
    /// leaves them).
    #[test]
    fn a_handed_over_channel_goes_on_where_it_was() {
        let (mut ch, app) = pair();
        let (mine, other) = passable();
        let handle = handle_msg(0);
        ch.send_handle(&handle, mine.as_raw_fd()).unwrap();
        drop(mine);
        let plain = json!({"cmd": "NODE_CLUSTER", "ack": 1, "seq": 1});
        ch.send(&plain).unwrap();
        let (bytes, mut fds) = drain(&app);
        assert_eq!(bytes, line(&handle));
        assert_is(fds.remove(0), &other);
        say(&app, "{\"type\":\"process:msg\",");
        assert!(ch.read().messages.is_empty());

        let st = ch.export();
        assert_eq!(st.fds().len(), 1, "the handle's fd: {st:?}");
        let text = serde_json::to_string(&st).unwrap();
        let sock_fd = ch.sock.as_raw_fd();
        std::mem::forget(ch);
        // SAFETY: the forgotten channel's socket, owned here from now on.
        let sock = unsafe { std::os::unix::net::UnixStream::from_raw_fd(sock_fd) };
        let mut ch = Channel::import(
            UnixStream::from_std(sock),
            serde_json::from_str(&text).unwrap(),
        );
        assert!(ch.awaiting_handle_ack());
        assert_eq!(ch.queued_bytes(), line(&plain).len());

        say(&app, "\"data\":1}\n{\"cmd\":\"NODE_HANDLE_ACK\"}\n");
        let inbound = ch.read();
        assert_eq!(
            inbound.messages,
            vec![Message::Typed {
                kind: "process:msg".into(),
                data: json!(1)
            }],
            "the half line is whole now"
        );
        assert!(!ch.awaiting_handle_ack());
        assert_eq!(drain(&app).0, line(&plain), "the ACK released the queue");
    }

    #[test]
    fn a_nacked_handle_is_sent_again_then_dropped() {
        let (mut ch, app) = pair();
        let (mine, other) = passable();
        let handle = handle_msg(0);
        ch.send_handle(&handle, mine.as_raw_fd()).unwrap();
        drop(mine);
        let after = json!({"cmd": "NODE_CLUSTER", "act": "disconnect", "seq": 1});
        ch.send(&after).unwrap();

        let (bytes, fds) = drain(&app);
        assert_eq!((bytes, fds.len()), (line(&handle), 1));
        // Each NACK up to the limit brings the same line and fd again.
        for retry in 1..=MAX_HANDLE_RETRIES {
            say(&app, "{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
            let inbound = ch.read();
            assert!(inbound.messages.is_empty(), "retry {retry}");
            assert!(inbound.warnings.is_empty(), "retry {retry}");
            let (bytes, mut fds) = drain(&app);
            assert_eq!(bytes, line(&handle), "retry {retry}");
            assert_eq!(fds.len(), 1, "retry {retry}");
            assert_is(fds.remove(0), &other);
        }
        // One more: dropped, with a warning, and the queue moves on.
        say(&app, "{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
        let inbound = ch.read();
        assert!(inbound.messages.is_empty());
        assert_eq!(inbound.warnings.len(), 1, "{:?}", inbound.warnings);
        assert!(!inbound.closed);
        let (bytes, fds) = drain(&app);
        assert_eq!((bytes, fds.len()), (line(&after), 0));
        assert!(!ch.awaiting_handle_ack());
        // Stray answers are consumed and change nothing.
        say(
            &app,
            "{\"cmd\":\"NODE_HANDLE_ACK\"}\n{\"cmd\":\"NODE_HANDLE_NACK\"}\n",
        );
        let inbound = ch.read();
        assert!(inbound.messages.is_empty() && inbound.warnings.is_empty());
        assert_eq!(drain(&app).0, b"");
    }

    #[test]
    fn a_handle_line_the_socket_takes_in_parts_carries_one_fd() {
        let (mut ch, app) = pair();
        let (mine, other) = passable();
        // Far more than a socket buffer: the first sendmsg takes a part.
        let handle = json!({"cmd": "NODE_HANDLE", "type": "net.Native",
                            "msg": {"cmd": "NODE_CLUSTER", "data": "z".repeat(MAX_QUEUE / 2)}});
        let want = line(&handle);
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut fds = Vec::new();
            while bytes.len() < want.len() {
                let (b, f) = recv_once(&app, MsgFlags::empty()).unwrap();
                bytes.extend(b);
                fds.extend(f);
            }
            assert_eq!(bytes, want);
            fds
        });
        ch.send_handle(&handle, mine.as_raw_fd()).unwrap();
        drop(mine);
        while ch.queued_bytes() > 0 {
            ch.flush().unwrap();
        }
        let mut fds = reader.join().unwrap();
        assert_eq!(fds.len(), 1);
        assert_is(fds.remove(0), &other);
        assert!(ch.awaiting_handle_ack());
    }

    #[test]
    fn handles_count_against_the_queue_and_need_an_open_channel() {
        let (mut ch, app) = pair();
        let (mine, _other) = passable();
        let big = json!("y".repeat(MAX_QUEUE));
        assert!(ch.send_handle(&big, mine.as_raw_fd()).is_err());
        assert_eq!(ch.queued_bytes(), 0);
        assert!(ch.send_handle(&json!({}), -1).is_err(), "a bad fd");
        drop(app);
        assert!(ch.read().closed);
        assert!(ch.send_handle(&json!({}), mine.as_raw_fd()).is_err());
    }

    #[test]
    fn the_fd_copy_is_close_on_exec() {
        let (mine, _other) = passable();
        let copy = dup_cloexec(mine.as_raw_fd()).unwrap();
        assert_ne!(copy.as_raw_fd(), mine.as_raw_fd());
        // SAFETY: F_GETFD on an fd we own reads no memory.
        let flags = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
