//! corral: a process manager with PM2's interface, as one small synchronous
//! binary. The library holds the daemon, the wire protocol and `Client`, the
//! programmatic API the command line is built on.

pub mod app;
pub mod client;
pub mod daemon;
pub mod logs;
pub mod options;
pub mod procfs;
pub mod protocol;
pub mod reaper;
pub mod spawn;
pub mod state;
pub mod timefmt;
pub mod users;

pub use client::{Client, Error};
