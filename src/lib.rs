//! corral: a process manager with PM2's interface, as one small synchronous
//! binary. The library holds the daemon, the wire protocol and `Client`, the
//! programmatic API the command line is built on.

pub mod app;
pub mod bus;
pub mod channel;
pub mod client;
pub mod cluster;
pub mod cron;
pub mod daemon;
pub mod listen;
pub mod logs;
pub mod notify;
pub mod options;
pub mod poll;
pub mod procfs;
pub mod protocol;
pub mod reaper;
pub mod spawn;
pub mod startup;
pub mod state;
pub mod timefmt;
pub mod users;
pub mod watch;

pub use client::{Client, Error};
