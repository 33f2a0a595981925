//! An app's IPC channel: the daemon's end of a Unix socket pair whose other
//! end the app has as `NODE_CHANNEL_FD` — what Node's `process.send` and
//! `process.on('message')` speak: one JSON document a line, both ways
//! (NODE-IPC.md part A). Reads are framed into messages; writes are queued,
//! bounded, and never block the loop.

use std::io::{self, ErrorKind, Read, Write};

use mio::net::UnixStream;
use serde_json::Value;

/// The longest line accepted from an app; a longer one is discarded.
pub const MAX_MESSAGE: usize = 1 << 20;
/// The most bytes queued towards an app that does not read.
pub const MAX_QUEUE: usize = 4 << 20;

/// What an app said on its channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// `"ready"` (PM2's `wait_ready`).
    Ready,
    /// `{"node_version": …}`, what PM2's container sends first.
    NodeVersion(String),
    /// `{"type": T, "data": D}`: bus event T.
    Typed { kind: String, data: Value },
    /// Anything else: bus event `process:msg`.
    Raw(Value),
}

/// Sort one decoded line into a `Message`, as PM2 does.
pub fn classify(v: Value) -> Message {
    if v == "ready" {
        return Message::Ready;
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

/// The daemon's end of one app's channel.
pub struct Channel {
    pub sock: UnixStream,
    rbuf: Vec<u8>,
    /// Discarding the rest of a line that was too long.
    skipping: bool,
    wbuf: Vec<u8>,
    open: bool,
}

impl Channel {
    pub fn new(sock: UnixStream) -> Channel {
        Channel {
            sock,
            rbuf: Vec::new(),
            skipping: false,
            wbuf: Vec::new(),
            open: true,
        }
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
                Ok(n) => self.take(&buf[..n], &mut inbound),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.open = false;
                    inbound.closed = true;
                    break;
                }
            }
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
                Ok(v) => inbound.messages.push(classify(v)),
                Err(e) => inbound
                    .warnings
                    .push(format!("a malformed message was dropped: {e}")),
            }
        }
    }

    /// Queue one message (one JSON line) and write what the socket takes.
    pub fn send(&mut self, v: &Value) -> Result<(), String> {
        if !self.open {
            return Err("the app closed its channel".to_string());
        }
        let mut line = serde_json::to_vec(v).map_err(|e| format!("cannot encode: {e}"))?;
        line.push(b'\n');
        if self.wbuf.len() + line.len() > MAX_QUEUE {
            return Err(format!(
                "the app does not read its channel ({} bytes queued)",
                self.wbuf.len()
            ));
        }
        self.wbuf.extend_from_slice(&line);
        self.flush()
            .map_err(|e| format!("cannot write to the channel: {e}"))
    }

    /// Write what is queued until the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.sock.write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.open = false;
                    self.wbuf.clear();
                    return Err(e);
                }
            }
        }
        Ok(())
    }
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
}
