//! systemd's readiness protocol (`sd_notify`), offered to every app: a
//! datagram socket in the home whose path apps get as `NOTIFY_SOCKET`. A
//! datagram is `KEY=VALUE` lines (`READY=1`, `STATUS=…`); the kernel tells
//! which process sent it (`SO_PASSCRED`), and the daemon finds the app
//! whose process group that process belongs to.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use mio::net::UnixDatagram;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt::PassCred,
};

/// The largest datagram read; sd_notify messages are a few lines.
pub const MAX_DATAGRAM: usize = 4096;

/// The bound socket.
pub struct Notify {
    pub sock: UnixDatagram,
    pub path: PathBuf,
}

/// One datagram: the sender's pid and its `KEY=VALUE` pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub pid: i32,
    pub pairs: Vec<(String, String)>,
}

/// `KEY=VALUE` lines; lines without `=` are ignored, as systemd does.
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Notify {
    /// Bind `path` (replacing a stale socket file).
    pub fn bind(path: &Path) -> io::Result<Notify> {
        let _ = std::fs::remove_file(path);
        let sock = std::os::unix::net::UnixDatagram::bind(path)?;
        sock.set_nonblocking(true)?;
        setsockopt(&sock, PassCred, &true).map_err(io::Error::from)?;
        Ok(Notify {
            sock: UnixDatagram::from_std(sock),
            path: path.to_path_buf(),
        })
    }

    /// Every datagram waiting; those without credentials are dropped.
    pub fn recv_all(&self) -> Vec<Note> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!(UnixCredentials);
            let msg = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            let pid = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
            });
            let len = msg.bytes;
            if let Some(pid) = pid {
                let text = String::from_utf8_lossy(buf.get(..len).unwrap_or_default()).into_owned();
                out.push(Note {
                    pid,
                    pairs: parse(&text),
                });
            }
        }
        out
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_notify_lines() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("READY=1", &[("READY", "1")]),
            (
                "READY=1\nSTATUS=serving 3 clients\n",
                &[("READY", "1"), ("STATUS", "serving 3 clients")],
            ),
            ("garbage\nSTATUS=a=b", &[("STATUS", "a=b")]),
            ("", &[]),
        ];
        for (text, want) in cases {
            let got = parse(text);
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn knows_who_sent_a_datagram() {
        let dir = std::env::temp_dir().join(format!("corral-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        let n = Notify::bind(&path).unwrap();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        let notes = n.recv_all();
        assert_eq!(
            notes,
            vec![Note {
                pid: std::process::id() as i32,
                pairs: vec![("READY".into(), "1".into()), ("STATUS".into(), "up".into())],
            }]
        );
        drop(n);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
