//! `corral monit`: a live dashboard of every app (status, cpu, memory,
//! restarts) and the last log lines of the selected one, drawn with plain
//! ANSI escapes on the alternate screen. Keys: up/down (or k/j) select,
//! q (or Ctrl-C) quits. The terminal is put back as it was on every way
//! out: a key, SIGINT/SIGTERM/SIGHUP, a lost daemon.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use corral::client::{Client, Paths};
use corral::protocol::{Description, Status};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, SetArg, Termios};

use crate::cli::{colour_on, status_colour};

/// How often the screen is redrawn without a key (ms).
const REFRESH_MS: u16 = 1000;

/// The terminal in raw mode on the alternate screen; put back on drop.
struct Screen {
    saved: Termios,
}

impl Screen {
    fn enter() -> Result<Screen, String> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| format!("cannot read the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // Keep output processing: "\n" still returns the carriage.
        raw.output_flags = saved.output_flags;
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| format!("cannot set up the terminal: {e}"))?;
        print!("\x1b[?1049h\x1b[?25l");
        let _ = std::io::stdout().flush();
        Ok(Screen { saved })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[0m\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The terminal's rows and columns.
fn size() -> (usize, usize) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we own; fd 1 stays open.
    let r = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    match r == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
        true => (ws.ws_row as usize, ws.ws_col as usize),
        false => (24, 80),
    }
}

pub fn cmd_monit(args: &[String]) -> i32 {
    if let Some(a) = args.first() {
        eprintln!("corral: monit takes no argument (got `{a}`)");
        return 2;
    }
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        eprintln!("corral: monit needs a terminal (use `corral jlist` from programs)");
        return 2;
    }
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("corral: {e}");
            return 3;
        }
    };
    let mut c = match Client::connect_with(&paths, true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corral: {e}");
            return 3;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("corral: cannot handle signal {sig}: {e}");
            return 1;
        }
    }
    let screen = match Screen::enter() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("corral: {e}");
            return 1;
        }
    };
    let result = run(&mut c, &stop);
    drop(screen);
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("corral: {e}");
            3
        }
    }
}

/// Draw, wait for a key or the refresh, until asked to stop.
fn run(c: &mut Client, stop: &AtomicBool) -> Result<(), String> {
    let mut selected = 0usize;
    let colour = colour_on();
    loop {
        let apps = c.list().map_err(|e| e.to_string())?;
        selected = selected.min(apps.len().saturating_sub(1));
        let frame = draw(&apps, selected, size(), colour);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
        drop(out);
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let stdin = std::io::stdin();
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(REFRESH_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("cannot wait for the terminal: {e}")),
        }
        let mut buf = [0u8; 64];
        let n = stdin.lock().read(&mut buf).unwrap_or(0);
        if n == 0 {
            return Ok(());
        }
        let keys = buf.get(..n).unwrap_or_default();
        match keys {
            [b'q' | b'Q' | 3 | 4, ..] => return Ok(()),
            [0x1b, b'[', b'A', ..] | [b'k', ..] => selected = selected.saturating_sub(1),
            [0x1b, b'[', b'B', ..] | [b'j', ..] => {
                selected = (selected + 1).min(apps.len().saturating_sub(1))
            }
            _ => {}
        }
    }
}

/// `n` bytes as `12.3 MB`.
fn bytes(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units.get(u).unwrap_or(&"B"))
}

/// `s` cut to `w` characters.
fn cut(s: &str, w: usize) -> String {
    s.chars().take(w).collect()
}

/// One frame: the app list, then the selected app's last log lines.
fn draw(
    apps: &[Description],
    selected: usize,
    (rows, cols): (usize, usize),
    colour: bool,
) -> String {
    let paint = |code: &str, s: &str| match colour {
        true => format!("\x1b[{code}m{s}\x1b[0m"),
        false => s.to_string(),
    };
    let mut lines: Vec<String> = Vec::new();
    lines.push(paint(
        "1",
        &cut(
            &format!(
                "corral monit — {} apps — up/down select, q quits",
                apps.len()
            ),
            cols,
        ),
    ));
    lines.push(cut(
        &format!(
            "  {:>4} {:<20} {:<16} {:>7} {:>10} {:>8}",
            "id", "name", "status", "cpu", "memory", "restarts"
        ),
        cols,
    ));
    // Half the screen at most for the list.
    let list_rows = (rows / 2).max(3);
    let first = selected.saturating_sub(list_rows.saturating_sub(1));
    for (i, d) in apps.iter().enumerate().skip(first).take(list_rows) {
        let e = &d.pm2_env;
        let online = e.status == Status::Online;
        let marker = if i == selected { ">" } else { " " };
        let status = format!("{:<16}", e.status.as_str());
        let row = format!(
            "{marker} {:>4} {:<20} {} {:>7} {:>10} {:>8}",
            d.pm_id,
            cut(&d.name, 20),
            paint(status_colour(e.status.as_str()), &status),
            if online {
                format!("{}%", d.monit.cpu)
            } else {
                "-".into()
            },
            if online {
                bytes(d.monit.memory)
            } else {
                "-".into()
            },
            e.restart_time,
        );
        lines.push(match i == selected {
            true => paint("7", &row),
            false => row,
        });
    }
    if apps.is_empty() {
        lines.push("  (no apps; start one with: corral start <script>)".into());
    }
    lines.push(String::new());
    if let Some(d) = apps.get(selected) {
        let e = &d.pm2_env;
        lines.push(paint(
            "1",
            &cut(&format!("{} ({}) logs:", d.name, d.pm_id), cols),
        ));
        let room = rows.saturating_sub(lines.len() + 1);
        let mut tail: Vec<String> = Vec::new();
        let mut files = vec![e.pm_out_log_path.clone()];
        if e.pm_err_log_path != e.pm_out_log_path {
            files.push(e.pm_err_log_path.clone());
        }
        for f in files {
            if f == "/dev/null" {
                continue;
            }
            if let Ok(l) = corral::__private::last_lines(Path::new(&f), room) {
                tail.extend(l);
            }
        }
        let skip = tail.len().saturating_sub(room);
        for l in tail.iter().skip(skip) {
            lines.push(cut(&l.replace(|c: char| c.is_control(), " "), cols));
        }
    }
    let mut frame = String::from("\x1b[H\x1b[2J");
    for l in lines.iter().take(rows) {
        frame.push_str(l);
        frame.push_str("\r\n");
    }
    frame
}
