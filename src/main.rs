//! The `corral` binary: command line, daemon and client in one. Errors are
//! handled once, here: every verb returns its exit status.

mod cli;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = cli::run(&args);
    std::process::exit(code);
}
