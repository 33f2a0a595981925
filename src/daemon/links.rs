//! The daemon's side of the apps' IPC channels and of the sd_notify socket:
//! reading them, answering Node's cluster protocol on the same link, turning
//! readiness into machine inputs and other messages into bus events, asking
//! a process to stop by message. A channel belongs to one process (by pid),
//! whatever its role; it is closed when the process closes it or is
//! released. Never spawns or signals.

use mio::Token;
use serde_json::{Value, json};

use crate::bus;
use crate::channel::{Channel, Message};
use crate::cluster::{Cluster, WorkerEvent};
use crate::process::Event;
use crate::procfs;
use crate::state::{Input, Role};

use super::{Daemon, wall_ms};

/// The daemon's end of one process's channel, with its cluster identity.
pub(crate) struct Link {
    pub pid: i32,
    pub token: Token,
    pub ch: Channel,
    /// `NODE_UNIQUE_ID` of a Node cluster worker, 0 otherwise.
    pub worker: u32,
    /// Our message counter towards that worker.
    pub seq: u64,
}

impl Daemon {
    /// Read a channel: the cluster protocol is answered on the spot, the
    /// rest goes to the process's machine or the bus.
    pub(super) fn service_channel(&mut self, t: Token) {
        let Some(&(id, pid)) = self.channels.get(t) else {
            return;
        };
        // With wait_ready only the app's own "ready" counts, as in PM2 (a
        // worker's `listening` does otherwise).
        let wait_ready = self
            .table
            .get(id)
            .is_some_and(|e| e.app.spec.rare().wait_ready);
        let Some(link) = self.table.get_mut(id).and_then(|e| e.link_mut(pid)) else {
            return;
        };
        let _ = link.ch.flush();
        let inbound = link.ch.read();
        let mut ready = false;
        let mut said_ready = false;
        let mut errors = Vec::new();
        let mut others = Vec::new();
        for msg in inbound.messages {
            match msg {
                Message::Internal(v) if link.worker > 0 && Cluster::is_cluster_message(&v) => {
                    let (outs, ev) = self.cluster.handle(link.worker, &v, &mut link.seq);
                    for out in outs {
                        let sent = match out.fd {
                            Some(fd) => link.ch.send_handle(&out.msg, fd),
                            None => link.ch.send(&out.msg),
                        };
                        if let Err(e) = sent {
                            errors.push(e);
                        }
                    }
                    ready |= ev == Some(WorkerEvent::Listening) && !wait_ready;
                }
                Message::Ready => said_ready = true,
                other => others.push(other),
            }
        }
        for w in inbound.warnings {
            self.log(&format!("app {id}: channel: {w}"));
        }
        for e in errors {
            self.log(&format!("app {id}: cluster: {e}"));
        }
        if ready || said_ready {
            self.ready(id, pid, said_ready);
        }
        for msg in others {
            self.on_message(id, msg);
        }
        if inbound.closed {
            // The process closed its end: it runs on without a channel (a
            // draining Node worker is on its way out).
            self.drop_link(id, pid);
        }
    }

    /// Process `pid` of app `id` is ready: it `said` "ready" on its channel
    /// (a `process:msg` for the bus, once), or listened, or notified. A
    /// draining process's readiness means nothing any more.
    fn ready(&mut self, id: u32, pid: i32, said: bool) {
        let role = self.table.get(id).and_then(|e| e.m().role_of(pid));
        if role == Some(Role::Drain) || role.is_none() {
            return;
        }
        self.step(
            id,
            Input::Proc {
                pid,
                event: Event::Ready,
            },
        );
        if said {
            let data = json!({"process": self.process_ref(id), "raw": "ready", "at": wall_ms()});
            self.publish("process:msg", data);
        }
    }

    fn on_message(&mut self, id: u32, msg: Message) {
        let at = wall_ms();
        match msg {
            // The cluster protocol (and handle acks, which the channel
            // keeps for itself): never bus events.
            Message::Internal(_) | Message::Ready => {}
            Message::NodeVersion(v) => {
                if let Some(e) = self.table.get_mut(id) {
                    e.rare_mut().node_version = Some(v);
                }
            }
            // An app may not speak as the daemon: its messages named like
            // the daemon's own events go out as process:msg.
            Message::Typed { kind, data } if !bus::RESERVED.contains(&kind.as_str()) => {
                let data = json!({"process": self.process_ref(id), "data": data, "at": at});
                self.publish(&kind, data);
            }
            Message::Typed { kind, data } => {
                let raw = json!({"type": kind, "data": data});
                let data = json!({"process": self.process_ref(id), "raw": raw, "at": at});
                self.publish("process:msg", data);
            }
            Message::Raw(raw) => {
                let data = json!({"process": self.process_ref(id), "raw": raw, "at": at});
                self.publish("process:msg", data);
            }
        }
    }

    /// Ask process `pid` to stop by message: `shutdown`, and the cluster
    /// `disconnect` if it is a Node worker. Whether anything was sent.
    pub(super) fn ask(&mut self, id: u32, pid: i32, shutdown: bool, disconnect: bool) -> bool {
        let Some(l) = self.table.get_mut(id).and_then(|e| e.link_mut(pid)) else {
            return false;
        };
        let mut asked = false;
        if shutdown {
            asked |= l.ch.send(&json!("shutdown")).is_ok();
        }
        if disconnect && l.worker > 0 {
            let msg = Cluster::disconnect(&mut l.seq);
            asked |= l.ch.send(&msg).is_ok();
        }
        asked
    }

    /// Send one message to app `id`'s main process.
    pub(super) fn send_to_main(&mut self, id: u32, msg: &Value) -> Result<(), String> {
        let e = self.table.get_mut(id).ok_or("no such app")?;
        let pid = e.m().pid().ok_or("not running")?;
        let l = e
            .link_mut(pid)
            .filter(|l| l.ch.is_open())
            .ok_or("no open IPC channel")?;
        l.ch.send(msg)
    }

    /// Close process `pid`'s channel, if it has one.
    pub(super) fn drop_link(&mut self, id: u32, pid: i32) {
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        let Some(i) = e.links.iter().position(|l| l.pid == pid) else {
            return;
        };
        let mut link = e.links.swap_remove(i);
        let _ = self.poll.registry().deregister(&mut link.ch.sock);
        self.channels.remove(link.token);
        if link.worker > 0 {
            self.cluster.forget(link.worker);
        }
    }

    /// sd_notify datagrams: `READY=1` and `STATUS=`, from any process of a
    /// process's group.
    pub(super) fn read_notify(&mut self) {
        let Some(n) = &self.notify else {
            return;
        };
        for note in n.recv_all() {
            let pgrp = procfs::read_stat(note.pid).ok().flatten().map(|st| st.pgrp);
            // Each process leads its group: the sender or its group names it.
            let mut found = [Some(note.pid), pgrp]
                .into_iter()
                .flatten()
                .find_map(|pid| self.table.app_of(pid).map(|id| (id, pid)));
            // A sender that exited at once (systemd-notify) cannot be
            // looked up: MAINPID= names the process instead.
            if found.is_none() {
                found = note
                    .pairs
                    .iter()
                    .find(|(k, _)| k == "MAINPID")
                    .and_then(|(_, v)| v.parse().ok())
                    .and_then(|pid| self.table.app_of(pid).map(|id| (id, pid)));
            }
            let Some((id, pid)) = found else {
                continue;
            };
            for (k, v) in note.pairs {
                match k.as_str() {
                    "READY" if v == "1" => self.ready(id, pid, false),
                    "STATUS" => {
                        let main = self.table.get(id).and_then(|e| e.m().role_of(pid));
                        if let (Some(Role::Main), Some(e)) = (main, self.table.get_mut(id)) {
                            e.rare_mut().notify_status = Some(v);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
