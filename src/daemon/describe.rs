//! A process of the table as PM2's description (`jlist`'s shape), and lists
//! of them as JSON text serialized once into a buffer sized up front. Reads
//! the table; changes nothing.

use serde_json::{Map, json};

use crate::options::{self, Watch};
use crate::protocol::{Description, Monit, Pm2Env, Status};
use crate::state::Exit;

use super::{DEFAULT_IGNORE_WATCH, Daemon};

/// About the size of one description as JSON, to size buffers (a bit
/// more than a plain app's, so that the buffer seldom grows).
const DESCRIPTION_BYTES: usize = 1536;

impl Daemon {
    /// The descriptions of `ids` as JSON text: each serialized as soon as
    /// it is made, into one buffer sized up front.
    pub(super) fn describe_all(&self, ids: &[u32]) -> String {
        let mut out = Vec::with_capacity(ids.len() * DESCRIPTION_BYTES + 2);
        out.push(b'[');
        for d in ids.iter().filter_map(|id| self.describe(*id)) {
            if out.len() > 1 {
                out.push(b',');
            }
            if serde_json::to_writer(&mut out, &d).is_err() {
                return "[]".to_string();
            }
        }
        out.push(b']');
        String::from_utf8(out).unwrap_or_else(|_| "[]".to_string())
    }

    /// The description of app `id`, with its last sample.
    pub(super) fn describe(&self, id: u32) -> Option<Description> {
        let e = self.table.get(id)?;
        let m = e.m();
        let pid = m.pid().unwrap_or(0);
        let monit = match m.status() {
            Status::Online | Status::Launching => e.monit.clone(),
            _ => Monit::default(),
        };
        let a = &e.app;
        let (exit_code, exit_signal) = match m.last_exit() {
            Some(Exit::Code(c)) => (Some(c), None),
            Some(Exit::Signal(s)) => (None, Some(options::signal_name(s))),
            None => (None, None),
        };
        Some(Description {
            pid,
            name: a.spec.name.clone(),
            pm_id: id,
            monit,
            pm2_env: Pm2Env {
                name: a.spec.name.clone(),
                pm_id: id,
                namespace: a.spec.namespace.clone(),
                status: m.status(),
                pm_exec_path: a.shown_exec_path(),
                pm_cwd: a.cwd.display().to_string(),
                exec_interpreter: a.interpreter_name(),
                node_args: a.spec.interpreter_args.clone(),
                args: a.spec.args.clone(),
                exec_mode: if a.slot.cluster {
                    "cluster_mode"
                } else {
                    "fork_mode"
                }
                .into(),
                instances: a.slot.count,
                instance_var: a.spec.instance_var.clone(),
                node_app_instance: a.slot.instance,
                pm_out_log_path: a.out_path.display().to_string(),
                pm_err_log_path: a.err_path.display().to_string(),
                pm_pid_path: a.pid_path.display().to_string(),
                pm_log_path: a.log_path.as_ref().map(|p| p.display().to_string()),
                log_type: match a.spec.log_type {
                    options::LogType::Json => Some("json".into()),
                    options::LogType::Text => None,
                },
                max_log_size: a
                    .spec
                    .max_log_size
                    .or(self.log_defaults.0)
                    .filter(|&n| n > 0),
                log_retain: a.spec.log_retain.unwrap_or(self.log_defaults.1),
                pm_uptime: e.pm_uptime,
                created_at: e.created_at,
                restart_time: m.restart_time(),
                unstable_restarts: m.unstable_restarts(),
                exit_code,
                exit_signal,
                autorestart: a.spec.autorestart,
                watch: match &a.spec.watch {
                    Watch::Off => json!(false),
                    Watch::Cwd => json!(true),
                    Watch::Paths(paths) => json!(paths),
                },
                ignore_watch: a.spec.ignore_watch.clone().unwrap_or_else(|| {
                    DEFAULT_IGNORE_WATCH.iter().map(|s| s.to_string()).collect()
                }),
                watch_delay: a.spec.watch_delay,
                max_memory_restart: a.spec.max_memory_restart,
                exp_backoff_restart_delay: a.spec.exp_backoff_restart_delay,
                prev_restart_delay: a
                    .spec
                    .exp_backoff_restart_delay
                    .map(|_| m.prev_restart_delay()),
                cron_restart: a.spec.cron_restart.clone(),
                log_lines_dropped: e.out.dropped() + e.err.dropped(),
                cgroup: self.cgroup_of(id).map(|p| p.display().to_string()),
                wait_ready: a.spec.wait_ready,
                listen_timeout: a.spec.listen_timeout,
                shutdown_with_message: a.spec.shutdown_with_message,
                ipc: a.spec.ipc,
                stdin: a.spec.stdin,
                notify_status: e.notify_status.clone(),
                node_version: e.node_version.clone(),
                env: a.shown_env(),
                min_uptime: a.spec.min_uptime,
                max_restarts: a.spec.max_restarts,
                kill_timeout: a.spec.kill_timeout,
                kill_signal: a.kill_signal_name(),
                restart_delay: a.spec.restart_delay,
                stop_exit_codes: a.spec.stop_exit_codes.clone(),
                treekill: a.spec.treekill,
                log_date_format: a.spec.log_date_format.clone(),
                merge_logs: a.spec.merge_logs,
                uid: a.spec.uid.clone(),
                gid: a.spec.gid.clone(),
                autostart: a.spec.autostart,
                version: "N/A".into(),
                axm_actions: Vec::new(),
                axm_monitor: Map::new(),
                axm_options: Map::new(),
                axm_dynamic: Map::new(),
            },
        })
    }
}

/// Descriptions as JSON text, in a buffer sized once.
pub(super) fn to_json(list: &[Description]) -> String {
    let mut out = Vec::with_capacity(list.len() * DESCRIPTION_BYTES + 2);
    match serde_json::to_writer(&mut out, list) {
        Ok(()) => String::from_utf8(out).unwrap_or_else(|_| "[]".to_string()),
        Err(_) => "[]".to_string(),
    }
}
