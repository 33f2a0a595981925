//! The `corral` binary: command line, daemon and client in one. Errors are
//! handled once, here: every verb returns its exit status.

mod cli;
mod monit;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The daemon (and the runtime, which runs it) writes to apps' pipes.
    if !matches!(args.first().map(String::as_str), Some("daemon" | "runtime")) {
        // A command line whose output is cut off (`corral jlist | head`)
        // ends quietly, as other tools do, instead of panicking on EPIPE.
        // The daemon keeps Rust's default (SIGPIPE ignored, EPIPE handled):
        // an app that closed its stdin must not kill it.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let code = cli::run(&args);
    std::process::exit(code);
}
