//! A process of the table as PM2's description (`jlist`'s shape), written
//! as JSON text straight into the answer's buffer from the table's own
//! data: no intermediate struct, no copy of a field, no allocation per
//! field. The order and shape are `protocol::Description`'s (the clients'
//! type), which [`Daemon::describe`] parses back; the integration tests
//! hold the two to each other and to PM2's shape. Reads the table; changes
//! nothing (a `list` is sent on its connection as it is written).

use mio::Token;
use serde_json::Value;

use crate::jsonw::{array, boolean, int, opt_string, opt_uint, path, string, strings, uint};
use crate::options::{self, LogType, Watch};
use crate::protocol::{self, Description, Status};
use crate::state::Exit;

use super::{DEFAULT_IGNORE_WATCH, Daemon};

/// About the size of one description as JSON, to size buffers (a bit
/// more than a plain app's, so that the buffer seldom grows).
const DESCRIPTION_BYTES: usize = 1536;

/// How much of a list is written before it is sent on (while the socket
/// takes it).
const SEND_CHUNK: usize = 64 * 1024;

/// `,"key":`, the literal built at compile time.
macro_rules! key {
    ($out:expr, $k:literal) => {
        $out.extend_from_slice(concat!(",\"", $k, "\":").as_bytes())
    };
}

impl Daemon {
    /// The descriptions of `ids` (those still in the table) as one JSON
    /// array.
    pub(super) fn describe_all(&self, ids: &[u32]) -> String {
        self.describe_or(ids, |_| None)
    }

    /// The descriptions of `ids` as one JSON array: each from the table,
    /// or else as `gone` kept it (an id in neither is left out).
    pub(super) fn describe_or<'a>(
        &self,
        ids: &[u32],
        gone: impl Fn(u32) -> Option<&'a Description>,
    ) -> String {
        // Sized once, with room for the answer's head (`ok_line`).
        let mut out = Vec::with_capacity(ids.len() * DESCRIPTION_BYTES + 64);
        out.push(b'[');
        for &id in ids {
            let mark = out.len();
            if mark > 1 {
                out.push(b',');
            }
            let written = self.write_description(id, &mut out)
                || gone(id).is_some_and(|d| serde_json::to_writer(&mut out, d).is_ok());
            if !written {
                out.truncate(mark);
            }
        }
        out.push(b']');
        // Every piece written is UTF-8 (str, escaped by serde_json, or
        // ASCII): this check does not fail.
        String::from_utf8(out).unwrap_or_else(|_| "[]".to_string())
    }

    /// The description of app `id`, with its last sample, as the clients
    /// read it.
    #[inline(never)]
    pub(super) fn describe(&self, id: u32) -> Option<Description> {
        let mut out = Vec::with_capacity(DESCRIPTION_BYTES);
        if !self.write_description(id, &mut out) {
            return None;
        }
        // From text, as the clients read it (one parser in the binary).
        serde_json::from_str(std::str::from_utf8(&out).ok()?).ok()
    }

    /// Answer a `list` on connection `t`: every app, read now (`monit`),
    /// written into the answer's line and sent as it is written (the
    /// client passes the first descriptions on while the daemon writes the
    /// next), what the socket does not take yet queued as any answer.
    pub(super) fn answer_list(&mut self, t: Token, req_id: &Value) {
        let ids = self.table.ids();
        self.sample_apps(&ids, crate::poll::MIN_GAP);
        // Sent as it comes only behind nothing: answers keep their order.
        let mut flowing = self.flush_conn_now(t);
        let mut out = Vec::with_capacity(ids.len() * DESCRIPTION_BYTES + 64);
        out.extend_from_slice(protocol::ok_head(req_id).as_bytes());
        out.push(b'[');
        let mut sent = 0;
        let mut any = false;
        for &id in &ids {
            let mark = out.len();
            if any {
                out.push(b',');
            }
            match self.write_description(id, &mut out) {
                true => any = true,
                false => out.truncate(mark),
            }
            if flowing && out.len() - sent >= SEND_CHUNK {
                let n = self.send_now(t, out.get(sent..).unwrap_or_default());
                flowing = sent + n == out.len();
                sent += n;
                if flowing {
                    // All sent: the same pages take the next chunk.
                    out.clear();
                    sent = 0;
                }
            }
        }
        out.extend_from_slice(b"]}\n");
        out.drain(..sent);
        self.reply_bytes(t, out);
    }

    /// Append the description of app `id` to `out`; false (nothing
    /// written) if there is no such app.
    fn write_description(&self, id: u32, out: &mut Vec<u8>) -> bool {
        let Some(e) = self.table.get(id) else {
            return false;
        };
        let m = e.m();
        let a = &e.app;
        let s = &a.spec;
        let status = m.status();
        out.extend_from_slice(b"{\"pid\":");
        int(out, m.pid().unwrap_or(0).into());
        key!(out, "name");
        string(out, &s.name);
        key!(out, "pm_id");
        uint(out, id.into());
        // What a sample read, while it runs.
        let (memory, cpu) = match status {
            Status::Online | Status::Launching => (e.monit.memory, e.monit.cpu),
            _ => (0, 0.0),
        };
        key!(out, "monit");
        out.extend_from_slice(b"{\"memory\":");
        uint(out, memory);
        key!(out, "cpu");
        let _ = serde_json::to_writer(&mut *out, &cpu);
        out.push(b'}');

        key!(out, "pm2_env");
        out.extend_from_slice(b"{\"name\":");
        string(out, &s.name);
        key!(out, "pm_id");
        uint(out, id.into());
        key!(out, "namespace");
        string(out, &s.namespace);
        key!(out, "status");
        string(out, status.as_str());
        key!(out, "pm_exec_path");
        string(out, &a.shown_exec_path());
        key!(out, "pm_cwd");
        path(out, &a.cwd);
        key!(out, "exec_interpreter");
        string(out, &a.interpreter_name());
        key!(out, "node_args");
        strings(out, s.rare().interpreter_args.iter().map(String::as_str));
        key!(out, "args");
        strings(out, s.args.iter().map(String::as_str));
        key!(out, "exec_mode");
        string(
            out,
            if a.slot.cluster {
                "cluster_mode"
            } else {
                "fork_mode"
            },
        );
        key!(out, "instances");
        uint(out, a.slot.count.into());
        key!(out, "instance_var");
        string(out, &s.instance_var);
        key!(out, "NODE_APP_INSTANCE");
        uint(out, a.slot.instance.into());
        key!(out, "pm_out_log_path");
        path(out, &a.out_path);
        key!(out, "pm_err_log_path");
        path(out, &a.err_path);
        key!(out, "pm_pid_path");
        path(out, &a.pid_path(&self.home));
        if let Some(p) = a.log_path() {
            key!(out, "pm_log_path");
            path(out, p);
        }
        if s.rare().log_type == LogType::Json {
            key!(out, "log_type");
            string(out, "json");
        }
        if let Some(n) = s
            .rare()
            .max_log_size
            .or(self.log_defaults.0)
            .filter(|&n| n > 0)
        {
            key!(out, "max_log_size");
            uint(out, n);
        }
        key!(out, "log_retain");
        uint(
            out,
            s.rare().log_retain.unwrap_or(self.log_defaults.1).into(),
        );
        key!(out, "pm_uptime");
        uint(out, e.pm_uptime);
        key!(out, "created_at");
        uint(out, e.created_at);
        key!(out, "restart_time");
        uint(out, m.restart_time().into());
        key!(out, "unstable_restarts");
        uint(out, m.unstable_restarts().into());
        let (exit_code, exit_signal) = match m.last_exit() {
            Some(Exit::Code(c)) => (Some(c), None),
            Some(Exit::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        key!(out, "exit_code");
        match exit_code {
            Some(c) => int(out, c.into()),
            None => out.extend_from_slice(b"null"),
        }
        key!(out, "exit_signal");
        match exit_signal {
            Some(sig) => signal(out, sig),
            None => out.extend_from_slice(b"null"),
        }
        key!(out, "autorestart");
        boolean(out, s.autorestart);
        key!(out, "watch");
        match &s.rare().watch {
            Watch::Off => boolean(out, false),
            Watch::Cwd => boolean(out, true),
            Watch::Paths(paths) => strings(out, paths.iter().map(String::as_str)),
        }
        key!(out, "env");
        out.push(b'{');
        for (i, (k, v)) in a.shown_env_pairs().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, k);
            out.push(b':');
            string(out, v);
        }
        out.push(b'}');
        key!(out, "min_uptime");
        uint(out, s.rare().min_uptime);
        key!(out, "max_restarts");
        uint(out, s.rare().max_restarts.into());
        key!(out, "kill_timeout");
        uint(out, s.rare().kill_timeout);
        key!(out, "kill_signal");
        signal(out, s.rare().kill_signal.number());
        key!(out, "restart_delay");
        uint(out, s.rare().restart_delay);
        key!(out, "stop_exit_codes");
        array(out, s.rare().stop_exit_codes.iter(), |out, c| {
            int(out, (*c).into())
        });
        key!(out, "treekill");
        boolean(out, s.treekill);
        key!(out, "log_date_format");
        opt_string(out, s.rare().log_date_format.as_deref());
        key!(out, "merge_logs");
        boolean(out, s.rare().merge_logs);
        key!(out, "uid");
        opt_string(out, s.rare().uid.as_deref());
        key!(out, "gid");
        opt_string(out, s.rare().gid.as_deref());
        key!(out, "ignore_watch");
        match &s.rare().ignore_watch {
            Some(names) => strings(out, names.iter().map(String::as_str)),
            None => strings(out, DEFAULT_IGNORE_WATCH.iter().copied()),
        }
        key!(out, "watch_delay");
        uint(out, s.rare().watch_delay);
        key!(out, "max_memory_restart");
        opt_uint(out, s.rare().max_memory_restart);
        key!(out, "exp_backoff_restart_delay");
        opt_uint(out, s.rare().exp_backoff_restart_delay);
        if s.rare().exp_backoff_restart_delay.is_some() {
            key!(out, "prev_restart_delay");
            uint(out, m.prev_restart_delay());
        }
        key!(out, "cron_restart");
        opt_string(out, s.rare().cron_restart.as_deref());
        key!(out, "log_lines_dropped");
        uint(out, e.out.dropped() + e.err.dropped());
        key!(out, "cgroup");
        match self.cgroup_of(id) {
            Some(p) => path(out, &p),
            None => out.extend_from_slice(b"null"),
        }
        key!(out, "wait_ready");
        boolean(out, s.rare().wait_ready);
        key!(out, "listen_timeout");
        uint(out, s.rare().listen_timeout);
        key!(out, "shutdown_with_message");
        boolean(out, s.rare().shutdown_with_message);
        key!(out, "ipc");
        boolean(out, s.ipc);
        key!(out, "stdin");
        boolean(out, s.stdin);
        if let Some(n) = &e.rare().notify_status {
            key!(out, "notify_status");
            string(out, n);
        }
        if let Some(v) = &e.rare().node_version {
            key!(out, "node_version");
            string(out, v);
        }
        key!(out, "autostart");
        boolean(out, s.autostart);
        // PM2's keys that corral has nothing for (see `Pm2Env`).
        out.extend_from_slice(
            b",\"version\":\"N/A\",\"axm_actions\":[],\"axm_monitor\":{},\
              \"axm_options\":{},\"axm_dynamic\":{}}}",
        );
        true
    }
}

/// A signal's name (`"SIGINT"`), `"SIG<n>"` for an unnamed one.
fn signal(out: &mut Vec<u8>, n: i32) {
    out.extend_from_slice(b"\"SIG");
    match options::signal_short_name(n) {
        Some(name) => out.extend_from_slice(name.as_bytes()),
        None => int(out, n.into()),
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        for (n, want) in [
            (2, "\"SIGINT\""),
            (9, "\"SIGKILL\""),
            (15, "\"SIGTERM\""),
            (99, "\"SIG99\""),
        ] {
            let mut out = Vec::new();
            signal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), want);
            assert_eq!(format!("\"{}\"", options::signal_name(n)), want);
        }
    }
}
