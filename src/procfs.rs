//! Linux `/proc` access for process monitoring: the pure parser of `/proc/<pid>/stat`,
//! the `sysconf` units needed to interpret it, and a thin reader of one process's stat
//! (the scan of every process is `poll.rs`'s).

use std::io;

/// The fields of `/proc/<pid>/stat` that we need (see proc(5) for their meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// Executable name as the kernel reports it (at most 15 bytes, may contain spaces and
    /// parentheses), without the surrounding parentheses.
    pub comm: String,
    /// `R`, `S`, `D`, `Z`, `T`, `t`, `X`, `I`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// User-mode CPU time, in clock ticks (see [`clock_ticks_per_sec`]).
    pub utime: u64,
    /// Kernel-mode CPU time, in clock ticks.
    pub stime: u64,
    /// Start time after system boot, in clock ticks.
    pub starttime: u64,
    /// Resident set size, in pages (see [`page_size`]).
    pub rss_pages: i64,
}

/// Parses the text of `/proc/<pid>/stat`. `comm` is taken between the first `(` and the
/// LAST `)`, because it may itself contain spaces and parentheses. `None` if malformed or
/// truncated (fewer than the 24 leading fields we read).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    // Fields after comm, numbered from 0 here = field 3 (state) in proc(5).
    let mut rest = text[close + 1..].split_ascii_whitespace();
    let mut state_chars = rest.next()?.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    let session = rest.next()?.parse().ok()?;
    // Skip tty_nr tpgid flags minflt cminflt majflt cmajflt (fields 7-13).
    let mut rest = rest.skip(7);
    let utime = rest.next()?.parse().ok()?;
    let stime = rest.next()?.parse().ok()?;
    // Skip cutime cstime priority nice num_threads itrealvalue (fields 16-21).
    let mut rest = rest.skip(6);
    let starttime = rest.next()?.parse().ok()?;
    let _vsize = rest.next()?;
    let rss_pages = rest.next()?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
        session,
        utime,
        stime,
        starttime,
        rss_pages,
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `utime`/`stime`/`starttime`;
/// 100 if unavailable.
pub fn clock_ticks_per_sec() -> u64 {
    sysconf_or(libc::_SC_CLK_TCK, 100)
}

/// Page size in bytes (`sysconf(_SC_PAGESIZE)`), the unit of `rss_pages`; 4096 if unavailable.
pub fn page_size() -> u64 {
    sysconf_or(libc::_SC_PAGESIZE, 4096)
}

fn sysconf_or(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf only reads its integer argument and returns a value; no memory is shared.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(fallback)
}

/// Longer than any /proc/<pid>/stat line (52 numbers and a 16-byte comm).
const STAT_BUF: usize = 1024;

/// Reads and parses `/proc/<pid>/stat`. A pid that does not exist (or vanished while being
/// read) gives `Ok(None)`; other I/O errors and unparsable contents give `Err`.
pub fn read_stat(pid: i32) -> io::Result<Option<Stat>> {
    // One open, one or two reads into a stack buffer, one close: a stat
    // line is a few hundred bytes, and `fs::read` would probe its size.
    let mut f = match std::fs::File::open(format!("/proc/{pid}/stat")) {
        Ok(f) => f,
        Err(e) if is_vanished(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = [0u8; STAT_BUF];
    let mut len = 0;
    while len < buf.len() {
        match io::Read::read(&mut f, buf.get_mut(len..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                // The line is whole: no second read to see the end.
                if buf.get(len.wrapping_sub(1)) == Some(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_vanished(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(buf.get(..len).unwrap_or_default());
    parse_stat(&text).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed /proc/{pid}/stat: {text:?}"),
        )
    })
}

fn is_vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/self/stat` line (from `cat`), and the same shape with odd comms.
    const CAT: &str = "2850 (cat) R 2839 2839 2282 0 -1 4194304 97 0 0 0 0 0 0 0 20 0 1 0 \
        18088 3133440 378 18446744073709551615 94664924733440 94664924753321 140720476015616 \
        0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 94664924769328 94664924770944 94665846419456 \
        140720476019421 140720476019441 140720476019441 140720476020715 0\n";
    const WEIRD: &str = "77 (my (weird) app) S 1 77 77 0 -1 4194560 10 0 0 0 123 45 0 0 20 0 \
        3 0 999999 12345678 -1 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
    const SPACEY: &str = "4194304 ( ) ) Z 4194303 -5 0 0 -1 0 0 0 0 0 18446744073709551615 0 \
        0 0 20 0 1 0 1 0 0";

    fn stat(
        pid: i32,
        comm: &str,
        state: char,
        ids: (i32, i32, i32),
        times: (u64, u64, u64),
        rss: i64,
    ) -> Stat {
        Stat {
            pid,
            comm: comm.to_owned(),
            state,
            ppid: ids.0,
            pgrp: ids.1,
            session: ids.2,
            utime: times.0,
            stime: times.1,
            starttime: times.2,
            rss_pages: rss,
        }
    }

    #[test]
    fn parses_stat() {
        let cases: &[(&str, Option<Stat>)] = &[
            (
                CAT,
                Some(stat(
                    2850,
                    "cat",
                    'R',
                    (2839, 2839, 2282),
                    (0, 0, 18088),
                    378,
                )),
            ),
            (
                WEIRD,
                Some(stat(
                    77,
                    "my (weird) app",
                    'S',
                    (1, 77, 77),
                    (123, 45, 999999),
                    -1,
                )),
            ),
            (
                SPACEY,
                Some(stat(
                    4194304,
                    " ) ",
                    'Z',
                    (4194303, -5, 0),
                    (u64::MAX, 0, 1),
                    0,
                )),
            ),
            // Exactly the 24 fields we read is enough.
            (
                "1 (a) S 0 1 1 0 0 0 0 0 0 0 5 6 0 0 0 0 0 0 7 0 8",
                Some(stat(1, "a", 'S', (0, 1, 1), (5, 6, 7), 8)),
            ),
            // Truncated: rss missing, everything after comm missing, comm unterminated.
            ("1 (a) S 0 1 1 0 0 0 0 0 0 0 5 6 0 0 0 0 0 0 7 0", None),
            ("1 (a)", None),
            ("1 (a", None),
            ("", None),
            ("abc (a) S 0 1 1 0 0 0 0 0 0 0 5 6 0 0 0 0 0 0 7 0 8", None),
            ("1 (a) SS 0 1 1 0 0 0 0 0 0 0 5 6 0 0 0 0 0 0 7 0 8", None),
            ("1 (a) S x 1 1 0 0 0 0 0 0 0 5 6 0 0 0 0 0 0 7 0 8", None),
            ("1 )a( S 0 1 1 0 0 0 0 0 0 0 5 6 0 0 0 0 0 0 7 0 8", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_stat(text), *want, "text {text:?}");
        }
    }

    #[test]
    fn sysconf_units_are_sane() {
        let cases: &[(u64, u64, u64)] = &[
            (clock_ticks_per_sec(), 1, 10_000),
            (page_size(), 4096, 1 << 24),
        ];
        for (v, lo, hi) in cases {
            assert!((*lo..=*hi).contains(v), "{v} not in {lo}..={hi}");
        }
    }

    #[test]
    fn reads_live_processes() {
        let me = std::process::id() as i32;
        let own = read_stat(me).unwrap().unwrap();
        assert_eq!(own.pid, me);
        assert!(own.rss_pages > 0);

        // pid_max is at most 2^22, so these never exist.
        let cases: &[i32] = &[1 << 30, -1, 0];
        for pid in cases {
            assert_eq!(read_stat(*pid).unwrap(), None, "pid {pid}");
        }
    }
}
