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
    let f = fields(text.as_bytes())?;
    Some(Stat {
        pid: f.pid,
        comm: String::from_utf8_lossy(f.comm).into_owned(),
        state: char::from(f.state),
        ppid: f.ppid,
        pgrp: f.pgrp,
        session: f.session,
        utime: f.utime,
        stime: f.stime,
        starttime: f.starttime,
        rss_pages: f.rss_pages,
    })
}

/// What a sample needs of a process: [`parse_stat`]'s fields, read in
/// place (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub pgrp: i32,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    pub starttime: u64,
    pub rss_pages: i64,
}

/// [`parse_stat`] for a sample, on the bytes as read.
pub fn parse_usage(text: &[u8]) -> Option<Usage> {
    let f = fields(text)?;
    Some(Usage {
        pgrp: f.pgrp,
        ticks: f.utime.saturating_add(f.stime),
        starttime: f.starttime,
        rss_pages: f.rss_pages,
    })
}

/// A number field of a stat line.
fn num<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

/// The fields of a stat line, `comm` borrowed.
struct Fields<'a> {
    pid: i32,
    comm: &'a [u8],
    state: u8,
    ppid: i32,
    pgrp: i32,
    session: i32,
    utime: u64,
    stime: u64,
    starttime: u64,
    rss_pages: i64,
}

fn fields(text: &[u8]) -> Option<Fields<'_>> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = num(text.get(..open)?)?;
    let comm = text.get(open + 1..close)?;
    // Fields after comm, numbered from 0 here = field 3 (state) in proc(5).
    let mut rest = text
        .get(close + 1..)?
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = match rest.next()? {
        [state] => *state,
        _ => return None,
    };
    let ppid = num(rest.next()?)?;
    let pgrp = num(rest.next()?)?;
    let session = num(rest.next()?)?;
    // Skip tty_nr tpgid flags minflt cminflt majflt cmajflt (fields 7-13).
    let mut rest = rest.skip(7);
    let utime = num(rest.next()?)?;
    let stime = num(rest.next()?)?;
    // Skip cutime cstime priority nice num_threads itrealvalue (fields 16-21).
    let mut rest = rest.skip(6);
    let starttime = num(rest.next()?)?;
    let _vsize = rest.next()?;
    let rss_pages = num(rest.next()?)?;
    Some(Fields {
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

/// Where a process's arguments are in its memory (`arg_start`, `arg_end`:
/// fields 48 and 49 of its stat line, Linux 3.5+).
pub fn arg_area(text: &[u8]) -> Option<(usize, usize)> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut rest = text
        .get(close + 1..)?
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .skip(45);
    let start = num(rest.next()?)?;
    let end = num(rest.next()?)?;
    (start > 0 && end > start).then_some((start, end))
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

/// Every process's [`Usage`], by pid: one pass over `/proc`, each stat file
/// opened relative to `/proc` (no walk from `/` for each) and read into one
/// stack buffer, nothing allocated per process. A process that vanishes
/// meanwhile is left out. Nothing if `/proc` cannot be read.
pub fn each_usage(mut f: impl FnMut(i32, Usage)) {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    // One fd to list, one to open through (the listing borrows its own).
    let (Ok(mut dir), Ok(proc_fd)) = (
        nix::dir::Dir::open("/proc", dir_flags, Mode::empty()),
        nix::fcntl::open("/proc", dir_flags, Mode::empty()),
    ) else {
        return;
    };
    let mut buf = [0u8; STAT_BUF];
    // "<pid>/stat": at most 10 digits and 5 bytes.
    let mut path = [0u8; 16];
    for entry in dir.iter().flatten() {
        let name = entry.file_name().to_bytes();
        if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Some(pid) = num::<i32>(name) else {
            continue;
        };
        let len = name.len() + 5;
        let Some(p) = path.get_mut(..len) else {
            continue;
        };
        let (digits, tail) = p.split_at_mut(name.len());
        digits.copy_from_slice(name);
        tail.copy_from_slice(b"/stat");
        let Ok(fd) = nix::fcntl::openat(
            &proc_fd,
            &*p,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let mut len = 0;
        while let Some(room) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
            match nix::unistd::read(&fd, room) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    // The line is whole: no second read to see the end.
                    if buf.get(len.wrapping_sub(1)) == Some(&b'\n') {
                        break;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    len = 0;
                    break;
                }
            }
        }
        if let Some(u) = buf.get(..len).and_then(parse_usage) {
            f(pid, u);
        }
    }
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

    /// The argument area, from a real line; none from a line cut short
    /// (a kernel before 3.5) or one that makes no sense. (The line is from
    /// a 64-bit machine: its addresses do not fit in a 32-bit usize.)
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_argument_area_is_fields_48_and_49() {
        assert_eq!(
            arg_area(CAT.as_bytes()),
            Some((140720476019421, 140720476019441))
        );
        assert_eq!(arg_area(WEIRD.as_bytes()), None);
        assert_eq!(arg_area(b"1 (x) S 1 1 1"), None);
        let reversed = CAT.replace("140720476019421 140720476019441", "9 8");
        assert_eq!(arg_area(reversed.as_bytes()), None);
    }

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
            // The sample's reading of the same line agrees.
            let usage = want.as_ref().map(|w| Usage {
                pgrp: w.pgrp,
                ticks: w.utime.saturating_add(w.stime),
                starttime: w.starttime,
                rss_pages: w.rss_pages,
            });
            assert_eq!(parse_usage(text.as_bytes()), usage, "text {text:?}");
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
    fn every_process_is_read_in_one_pass() {
        let me = std::process::id() as i32;
        let mut seen = Vec::new();
        each_usage(|pid, u| seen.push((pid, u)));
        let own = read_stat(me).unwrap().unwrap();
        let mine = seen.iter().find(|(pid, _)| *pid == me).map(|(_, u)| *u);
        assert_eq!(
            mine.map(|u| (u.pgrp, u.starttime)),
            Some((own.pgrp, own.starttime))
        );
        assert!(seen.iter().any(|(pid, _)| *pid == 1), "pid 1 is read");
        assert!(seen.len() > 2, "{seen:?}");
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
