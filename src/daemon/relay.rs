//! The relay: the apps' stdout/stderr pipes to their log files and to
//! `log:out`/`log:err` events, and every event to the bus subscribers
//! (`process:event` included, with its line in the daemon's log). Reads at
//! most `READS_PER_WAKE` chunks of a pipe per wake so one chatty app cannot
//! starve the loop. Never changes an app's state.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;

use mio::Token;
use mio::unix::pipe::Receiver;
use serde_json::{Map, Value, json};

use crate::bus;
use crate::options;
use crate::state::Exit;
use crate::sys;

use super::{Daemon, wall_ms};

/// Reads of one output pipe in one wake, before the others get a turn.
const READS_PER_WAKE: usize = 16;
/// Bytes read from a pipe per call.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Out,
    Err,
}

/// One output pipe of one process of an app.
pub(crate) struct Pipe {
    pub pm_id: u32,
    /// The process writing into it.
    pub pid: i32,
    pub stream: Stream,
    pub rx: Receiver,
}

impl Daemon {
    /// Read an app's output, at most `READS_PER_WAKE` chunks: an app that
    /// writes without pause must not keep the loop from everything else.
    /// A pipe left with data is read again in the next wake (`busy_pipes`).
    pub(super) fn read_pipe(&mut self, t: Token) {
        // Kept while output flows; an idle daemon does not hold it (it is
        // freed at the next trim, `Timer::Trim`).
        // Read into its spare room: no page of it is touched but those a
        // read fills (an end of file touches none).
        let mut buf = std::mem::take(&mut self.scratch);
        if buf.capacity() < READ_CHUNK {
            buf = Vec::with_capacity(READ_CHUNK);
            self.trim = true;
        }
        let mut closed = false;
        let mut reads = 0;
        loop {
            if reads == READS_PER_WAKE {
                if !self.busy_pipes.contains(&t) {
                    self.busy_pipes.push(t);
                }
                break;
            }
            reads += 1;
            let Some(pipe) = self.pipes.get_mut(&t) else {
                break;
            };
            let n = match sys::read_into_spare(pipe.rx.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            };
            let (id, stream) = (pipe.pm_id, pipe.stream);
            let chunk = buf.get(..n).unwrap_or_default();
            let failed = self.table.get_mut(id).and_then(|e| {
                let lf = match stream {
                    Stream::Out => &mut e.out,
                    Stream::Err => &mut e.err,
                };
                lf.write_chunk(chunk, wall_ms() as i64)
                    .err()
                    .map(|err| format!("cannot write {}: {err}", lf.path().display()))
            });
            if let Some(msg) = failed {
                self.log(&msg);
            }
            if let Some(c) = self.console.as_mut()
                && let Some(e) = self.table.get(id)
            {
                c.relay(id, &e.app.spec.name, stream, chunk);
            }
            if self.subscribers > 0 {
                self.publish_lines(id, stream, chunk);
            }
        }
        self.scratch = buf;
        if closed && let Some(mut pipe) = self.pipes.remove(&t) {
            let _ = self.poll.registry().deregister(&mut pipe.rx);
            // A partial line kept back (JSON, the combined file) goes out.
            let failed = self.table.get_mut(pipe.pm_id).and_then(|e| {
                let lf = match pipe.stream {
                    Stream::Out => &mut e.out,
                    Stream::Err => &mut e.err,
                };
                lf.finish(wall_ms() as i64)
                    .err()
                    .map(|err| format!("cannot write {}: {err}", lf.path().display()))
            });
            if let Some(msg) = failed {
                self.log(&msg);
            }
            self.close_idle_logs(pipe.pm_id);
        }
    }

    /// Reopen every log file (logrotate renamed them); how many files.
    pub(super) fn reopen_logs(&mut self) -> usize {
        let mut files = BTreeSet::new();
        let mut failed = Vec::new();
        for (_, e) in self.table.iter_mut() {
            for lf in [&mut e.out, &mut e.err] {
                match lf.reopen() {
                    Ok(true) => {
                        files.extend(lf.paths());
                    }
                    Ok(false) => {}
                    Err(err) => {
                        failed.push(format!("cannot reopen {}: {err}", lf.path().display()))
                    }
                }
            }
        }
        for f in failed {
            self.log(&f);
        }
        files.len()
    }

    /// The seed's `reloadLogs`: every log file renamed to the next free
    /// `<name>-<out|err>-<N>.log` and a fresh one opened; how many files.
    pub(super) fn rotate_logs_numbered(&mut self) -> usize {
        let mut renamed = BTreeSet::new();
        let mut failed = Vec::new();
        for (_, e) in self.table.iter_mut() {
            for lf in [&mut e.out, &mut e.err] {
                if let Err(err) = lf.rotate_numbered(&mut renamed) {
                    failed.push(format!("cannot rotate {}: {err}", lf.path().display()));
                }
            }
        }
        for f in failed {
            self.log(&f);
        }
        renamed.len()
    }

    /// `process.name/pm_id/pid/namespace` of bus events.
    pub(super) fn process_ref(&self, id: u32) -> Value {
        match self.table.get(id) {
            Some(e) => json!({
                "name": e.app.spec.name,
                "pm_id": id,
                "pid": e.m().pid().unwrap_or(e.last_pid),
                "namespace": e.app.spec.namespace,
            }),
            None => Value::Null,
        }
    }

    /// A `process:event` (and its line in the daemon's log).
    pub(super) fn emit(&mut self, id: u32, what: &'static str) {
        // The event's data is made only for a bus that has subscribers.
        let publish = self.subscribers > 0;
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        let mut data = Map::new();
        if publish {
            data.insert("event".into(), json!(what));
            data.insert("at".into(), json!(wall_ms()));
            // PM2's `manually`: the events a request caused, up to the
            // app's next online, stop or delete.
            data.insert("manually".into(), json!(e.manual));
        }
        if matches!(what, "online" | "stop" | "delete" | "restart overlimit") {
            e.manual = false;
        }
        let mut words = what.to_string();
        let mut add = |k: &str, v: Value| {
            if publish {
                data.insert(k.into(), v);
            }
        };
        match (what, e.m().last_exit()) {
            ("exit", Some(Exit::Code(c))) => {
                add("code", json!(c));
                add("signal", Value::Null);
                words = format!("exit code {c}");
            }
            ("exit", Some(Exit::Signal(sig))) => {
                let name = options::signal_name(sig);
                add("code", Value::Null);
                add("signal", json!(name));
                words = format!("exit by {name}");
            }
            ("restart" | "start", _) => {
                if let Some(r) = e.clear_rare(|r| r.restart_reason.take()) {
                    words = format!("{what} ({r})");
                    add("reason", json!(r));
                }
            }
            ("online", _) => {
                if let Some(w) = e.clear_rare(|r| r.online_warning.take()) {
                    words = format!("online ({w})");
                    add("warning", json!(w));
                }
            }
            ("restart overlimit", _) => {
                if let Some(r) = &e.rare().spawn_error {
                    words = format!("errored ({r})");
                    add("reason", json!(r.to_string()));
                }
            }
            _ => {}
        }
        let line = format!("app {} ({id}): {words}", e.app.spec.name);
        self.log(&line);
        if publish {
            data.insert("process".into(), self.process_ref(id));
            self.publish("process:event", Value::Object(data));
        }
    }

    /// Queue an event for every subscriber that wants it.
    pub(super) fn publish(&mut self, event: &str, data: Value) {
        if self.subscribers == 0 {
            return;
        }
        let line = bus::line_of(event, data);
        let mut tokens = Vec::new();
        for (t, c) in self.conns.iter_mut() {
            if let Some(sub) = c.sub.as_mut()
                && sub.filter.wants(event)
            {
                sub.offer(&mut c.wbuf, &line);
                tokens.push(*t);
            }
        }
        for t in tokens {
            self.flush_conn(t);
        }
    }

    /// Whole lines of an app's output, as `log:out` / `log:err` events.
    fn publish_lines(&mut self, id: u32, stream: Stream, chunk: &[u8]) {
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        let partial = match stream {
            Stream::Out => &mut e.line_out,
            Stream::Err => &mut e.line_err,
        };
        partial.extend_from_slice(chunk);
        let cut = match partial.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            // A line longer than a bus event may be goes out in pieces.
            None if partial.len() > bus::MAX_LINE => partial.len(),
            None => return,
        };
        // All of it (the usual case): taken, so an app's partial line keeps
        // no room between chunks.
        let whole: Vec<u8> = match cut == partial.len() {
            true => std::mem::take(partial),
            false => partial.drain(..cut).collect(),
        };
        let event = match stream {
            Stream::Out => "log:out",
            Stream::Err => "log:err",
        };
        // Subscribers whose queues are full only count what they miss: no
        // need to build events nobody can take.
        let room = self.conns.values().any(|c| {
            c.sub
                .as_ref()
                .is_some_and(|s| s.filter.wants(event) && c.wbuf.len() < bus::MAX_QUEUE / 2)
        });
        if !room {
            let lines = whole.split_inclusive(|&b| b == b'\n').count() as u64;
            for c in self.conns.values_mut() {
                if let Some(sub) = c.sub.as_mut()
                    && sub.filter.wants(event)
                {
                    sub.dropped += lines;
                }
            }
            return;
        }
        let process = self.process_ref(id);
        let at = wall_ms();
        let lines = whole.split_inclusive(|&b| b == b'\n');
        for piece in lines.flat_map(|l| bus::pieces(l, bus::MAX_LINE)) {
            let data = json!({
                "process": process,
                "data": String::from_utf8_lossy(piece),
                "at": at,
            });
            self.publish(event, data);
        }
    }
}
