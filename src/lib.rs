//! corral: a process manager with PM2's interface, as one small synchronous
//! binary. This library is its programmatic API: [`Client`] speaks to the
//! daemon over its control socket (launching one when none answers), and
//! [`protocol`] holds the types it answers with.
//!
//! The calls are PM2's, with Rust names: `connect`, `start`, `stop`,
//! `restart`, `reload`, `graceful_reload`, `delete`, `describe`, `list`,
//! `flush`, `reload_logs`, `launch_bus`, `send_signal_to_process_name`,
//! `send_data_to_process_id`, `dump`, `resurrect`, `startup`,
//! `kill_daemon`, `disconnect`.
//!
//! PM2's first example — a cluster of 4 with a memory limit — reads:
//!
//! ```no_run
//! use corral::Client;
//! use corral::client::{ExecMode, StartOptions};
//!
//! let mut client = match Client::connect() {
//!     Ok(c) => c,
//!     Err(e) => {
//!         eprintln!("{e}");
//!         std::process::exit(2);
//!     }
//! };
//! let started = client.start(&StartOptions {
//!     name: Some("api".into()),
//!     exec_mode: Some(ExecMode::Cluster),
//!     instances: Some(4),
//!     max_memory_restart: Some(100 * 1024 * 1024), // PM2's '100M'
//!     ..StartOptions::script("api.js")
//! });
//! client.disconnect();
//! let apps = started?;
//! assert_eq!(apps.len(), 4);
//! # Ok::<(), corral::Error>(())
//! ```
//!
//! A target is a name, a `pm_id` or `"all"`, given as is:
//!
//! ```
//! use corral::protocol::Target;
//!
//! assert_eq!(Target::from("api"), Target::Name("api".into()));
//! assert_eq!(Target::from(3), Target::Id(3));
//! assert_eq!(Target::from("3"), Target::Id(3)); // as PM2 reads "3"
//! assert_eq!(Target::from("all"), Target::All);
//! ```
//!
//! The binary is the same package; everything else in it (the daemon, the
//! option parser, the log writer) is private and may change at any time.

#![warn(missing_docs)]

mod app;
mod bus;
mod cgroup;
mod channel;
pub mod client;
mod cluster;
mod config_file;
mod cron;
#[cfg(test)]
mod fuzz;
// Private; its `run` and `Config` are the binary's, through `__private`.
#[allow(missing_docs)]
mod daemon;
mod dump;
mod journal;
mod jsonw;
mod listen;
mod logs;
mod mini_yaml;
mod notify;
mod options;
mod poll;
mod process;
mod procfs;
pub mod protocol;
mod rawsys;
mod reaper;
mod regex;
mod relaxed_json;
mod rotate;
mod spawn;
mod spawner;
// Private; the binary's `startup` verb reaches it through `__private`.
#[allow(missing_docs)]
mod startup;
mod state;
mod sys;
mod timefmt;
mod timers;
mod users;
mod vecmap;
mod watch;

pub use client::{Client, Error};

/// What the `corral` binary uses of the crate besides the client: not part
/// of the library's API, and free to change with every release.
#[doc(hidden)]
pub mod __private {
    pub use crate::daemon::{Config, ExitWith, Runtime, run};
    pub use crate::logs::last_lines;
    pub use crate::options::{edit_distance, parse_duration, parse_size};
    pub use crate::poll::{DEFAULT_INTERVAL, MIN_INTERVAL};
    pub use crate::regex::Regex;
    pub use crate::rotate::DEFAULT_RETAIN;
    pub use crate::sys::{dup_cloexec, utf8_env};
    pub use crate::users::{lookup, parse_passwd};
    /// Boot units (`corral startup`).
    pub mod startup {
        pub use crate::startup::*;
    }
    pub use crate::timefmt::{Format, local_tm, utc_tm};
}
