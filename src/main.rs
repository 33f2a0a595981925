//! The `corral` binary: command line, daemon and client in one. Errors are
//! handled once, here: every verb returns its exit status.
//!
//! The entry point is the C library's `main`, not Rust's: Rust's start-up
//! links code corral does not need (its stack-overflow handler, which
//! reads the main thread's stack bounds, and an alternate signal stack per
//! process). What of that start-up corral needs is done here: closed
//! standard fds point at /dev/null, SIGPIPE is set, the arguments are read
//! from `argv`.

#![cfg_attr(not(test), no_main)]

mod cli;
mod monit;

#[cfg(not(test))]
use std::ffi::{CStr, c_char, c_int};

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    open_closed_stdio();
    let args: Vec<String> = (1..usize::try_from(argc).unwrap_or(0))
        // SAFETY: the C library passes `argc` pointers in `argv`.
        .filter_map(|i| unsafe { argv.add(i).as_ref() })
        .filter(|p| !p.is_null())
        // SAFETY: each is a NUL-terminated string that lives as long as
        // the process.
        .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        .collect();
    let sigpipe = match args.first().map(String::as_str) {
        // The daemon (and the runtime, which runs it) writes to apps'
        // pipes: SIGPIPE ignored, EPIPE handled (Rust's default): an app
        // that closed its stdin must not kill it.
        Some("daemon" | "runtime") => libc::SIG_IGN,
        // A command line whose output is cut off (`corral jlist | head`)
        // ends quietly, as other tools do, instead of panicking on EPIPE.
        _ => libc::SIG_DFL,
    };
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, sigpipe);
    }
    let code = cli::run(&args);
    // Flushes stdout, then exits.
    std::process::exit(code);
}

/// Point each of fds 0, 1 and 2 that is closed at /dev/null, so that a
/// file opened later never takes its number (as Rust's start-up does).
#[cfg(not(test))]
fn open_closed_stdio() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the flags of the fd number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: open with a NUL-terminated path; it takes the lowest
            // free number, the one just found closed. Not close-on-exec:
            // a standard fd, passed on as the others are. Without
            // /dev/null (a chroot without /dev) a file opened later would
            // take the number: exit, as Rust's start-up aborts then.
            if unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } == -1 {
                // SAFETY: ends the process; nothing is set up yet.
                unsafe { libc::_exit(127) };
            }
        }
    }
}

/// Under `cargo test` the test harness has the entry point; this keeps
/// what the real one reaches in use.
#[cfg(test)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cli::run(&args));
}
