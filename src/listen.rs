//! Socket activation for any language (the `listen` option): corral binds
//! the addresses once and hands the listening sockets to every instance of
//! the app as fds 3, 4, … with `LISTEN_FDS`, `LISTEN_PID` and
//! `LISTEN_FDNAMES` (systemd's protocol). The sockets outlive restarts and
//! reloads, so connections wait in the backlog instead of being refused.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// One address of `listen`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Addr {
    /// `"tcp:8080"` or `"8080"`: every address, IPv6 and IPv4.
    AnyPort(u16),
    /// `"127.0.0.1:8080"`, `"[::1]:8080"`.
    Ip(SocketAddr),
    /// `"unix:/run/app.sock"`.
    Unix(PathBuf),
}

/// Read one address; the error names it.
pub fn parse(s: &str) -> Result<Addr, String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{s}`: {p} is not a port (0-65535)"))
    };
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("`{s}`: a unix socket needs an absolute path"));
        }
        return Ok(Addr::Unix(PathBuf::from(path)));
    }
    if let Some(p) = s.strip_prefix("tcp:") {
        return match p.parse::<SocketAddr>() {
            Ok(a) => Ok(Addr::Ip(a)),
            Err(_) => port(p).map(Addr::AnyPort),
        };
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Addr::Ip(a));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        return port(s).map(Addr::AnyPort);
    }
    Err(format!(
        "`{s}`: expected \"tcp:PORT\", \"HOST:PORT\", \"[V6]:PORT\" or \"unix:/PATH\""
    ))
}

impl Addr {
    /// The name given in `LISTEN_FDNAMES` (no `:`, which separates names).
    pub fn fd_name(&self) -> String {
        let raw = match self {
            Addr::AnyPort(p) => format!("tcp-{p}"),
            Addr::Ip(a) => format!("tcp-{a}"),
            Addr::Unix(p) => format!("unix-{}", p.display()),
        };
        raw.chars()
            .map(|c| if c == ':' { '_' } else { c })
            .collect()
    }

    /// Bind and listen (close-on-exec, blocking, as systemd passes them).
    pub fn bind(&self) -> Result<OwnedFd, String> {
        let fail = |e: std::io::Error| format!("cannot listen on {}: {e}", self.display());
        match self {
            Addr::AnyPort(p) => {
                // Dual stack where IPv6 exists, IPv4 otherwise. Addresses,
                // not strings: a string would link the C library's
                // resolver (getaddrinfo) into the binary.
                let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, *p))
                    .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, *p)))
                    .map_err(fail)?;
                Ok(OwnedFd::from(l))
            }
            Addr::Ip(a) => Ok(OwnedFd::from(TcpListener::bind(a).map_err(fail)?)),
            Addr::Unix(path) => {
                // A socket file left by an earlier run is replaced; any
                // other file is not.
                use std::os::unix::fs::FileTypeExt;
                if let Ok(m) = std::fs::symlink_metadata(path)
                    && m.file_type().is_socket()
                {
                    let _ = std::fs::remove_file(path);
                }
                Ok(OwnedFd::from(UnixListener::bind(path).map_err(fail)?))
            }
        }
    }

    pub fn display(&self) -> String {
        match self {
            Addr::AnyPort(p) => format!("tcp:{p}"),
            Addr::Ip(a) => a.to_string(),
            Addr::Unix(p) => format!("unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_from_a_table() {
        let ok: &[(&str, Addr)] = &[
            ("tcp:8080", Addr::AnyPort(8080)),
            ("8080", Addr::AnyPort(8080)),
            (
                "127.0.0.1:8080",
                Addr::Ip("127.0.0.1:8080".parse().unwrap()),
            ),
            (
                "tcp:127.0.0.1:81",
                Addr::Ip("127.0.0.1:81".parse().unwrap()),
            ),
            ("[::1]:8080", Addr::Ip("[::1]:8080".parse().unwrap())),
            ("unix:/run/a.sock", Addr::Unix("/run/a.sock".into())),
        ];
        for (s, want) in ok {
            assert_eq!(parse(s).as_ref(), Ok(want), "{s}");
        }
        for bad in [
            "",
            "tcp:",
            "tcp:99999",
            "localhost:80",
            "unix:rel.sock",
            "http://x",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert_eq!(
            Addr::Ip("[::1]:80".parse().unwrap()).fd_name(),
            "tcp-[__1]_80"
        );
    }

    #[test]
    fn binds_loopback_once() {
        let a = Addr::Ip("127.0.0.1:0".parse().unwrap());
        let fd = a.bind().unwrap();
        let l = TcpListener::from(fd);
        let port = l.local_addr().unwrap().port();
        let again = Addr::Ip(format!("127.0.0.1:{port}").parse().unwrap());
        let e = again.bind().unwrap_err();
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
