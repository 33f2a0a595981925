//! PM2's first programmatic example, in Rust: connect (launching the daemon
//! if none runs), start `api.js` as a cluster of 4 instances, each restarted
//! when it passes 100 MB, then disconnect. The daemon and the app keep
//! running; `corral delete api` removes them.
//!
//! Run it in a directory holding `api.js`:
//!
//! ```text
//! cargo run --example seed
//! ```
//!
//! The daemon is the `corral` binary: `$CORRAL_BIN` if set, else `corral`
//! on `PATH` (see `Client::connect`). The JavaScript it mirrors:
//!
//! ```text
//! pm2.connect(function(err) {
//!   if (err) { console.error(err); process.exit(2) }
//!   pm2.start({ script: 'api.js', name: 'api', exec_mode: 'cluster',
//!               instances: 4, max_memory_restart: '100M' },
//!     function(err, apps) { pm2.disconnect(); if (err) throw err })
//! })
//! ```

use corral::Client;
use corral::client::{ExecMode, StartOptions};

fn main() {
    let mut client = match Client::connect() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    let started = client.start(&StartOptions {
        name: Some("api".into()),
        exec_mode: Some(ExecMode::Cluster),
        instances: Some(4),
        max_memory_restart: Some(100 * 1024 * 1024), // '100M'
        ..StartOptions::script("api.js")
    });
    client.disconnect();
    match started {
        Ok(apps) => println!("started {} instances of api", apps.len()),
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1);
        }
    }
}
