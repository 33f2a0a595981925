//! The integration tests: one binary that runs the real `corral` executable
//! against a fresh temporary `CORRAL_HOME` per test. Topics live in
//! `tests/integration/`; shared helpers in `tests/util/`.

// Tests fail by panicking: unwrap, expect and indexing are how they say so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod util;

#[path = "integration/bench_smoke.rs"]
mod bench_smoke;
#[path = "integration/boot.rs"]
mod boot;
#[path = "integration/client_api.rs"]
mod client_api;
#[path = "integration/cluster.rs"]
mod cluster;
#[path = "integration/config_files.rs"]
mod config_files;
#[path = "integration/ipc.rs"]
mod ipc;
#[path = "integration/lifecycle.rs"]
mod lifecycle;
#[path = "integration/load.rs"]
mod load;
#[path = "integration/logs.rs"]
mod logs;
#[path = "integration/node_client.rs"]
mod node_client;
#[path = "integration/options.rs"]
mod options;
#[path = "integration/persistence.rs"]
mod persistence;
#[path = "integration/pm2_cli.rs"]
mod pm2_cli;
#[path = "integration/recovery.rs"]
mod recovery;
#[path = "integration/resources.rs"]
mod resources;
#[path = "integration/robustness.rs"]
mod robustness;
#[path = "integration/runtime.rs"]
mod runtime;
#[path = "integration/security.rs"]
mod security;
#[path = "integration/supervision.rs"]
mod supervision;
#[path = "integration/update.rs"]
mod update;
